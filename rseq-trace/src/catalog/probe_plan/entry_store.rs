//! Finding the instruction that arms a section: the store of its descriptor's address into the
//! rseq area right before start_ip, and, on x86-64, the load of that address before it, where
//! the decoder proves that nothing reaches the store without passing the load.

use iced_x86::{Decoder, DecoderOptions, FlowControl, Instruction, Mnemonic, OpKind};

use super::Refusal;
use crate::elf::image::ElfImage;

/// Longest x86-64 instruction.
const MAX_INSN: u64 = 15;

/// The `mov m64, r64` that ends exactly at start_ip. Decoded forward from the enclosing
/// function's start when a symbol gives it (instruction boundaries are then certain), otherwise
/// by trying each length that could end there.
pub(super) fn x86_64_store_before(image: &ElfImage, start_ip: u64) -> Result<u64, Refusal> {
    if let Some((fstart, _)) = start_ip.checked_sub(1).and_then(|ip| image.function_at(ip)) {
        if let Some(bytes) = image.bytes(fstart, (start_ip - fstart) as usize) {
            let mut decoder = Decoder::with_ip(64, bytes, fstart, DecoderOptions::NONE);
            let mut last = None;
            for insn in &mut decoder {
                last = Some(insn);
            }
            if let Some(insn) = last.filter(|i| i.next_ip() == start_ip && !i.is_invalid()) {
                return if is_pointer_store(&insn) {
                    Ok(insn.ip())
                } else {
                    Err(Refusal::NotTheStore {
                        start_ip,
                        insn: insn.to_string(),
                    })
                };
            }
        }
    }
    let mut found = Vec::new();
    for len in 1..=MAX_INSN {
        let Some(at) = start_ip.checked_sub(len) else {
            break;
        };
        let Some(bytes) = image.bytes(at, len as usize) else {
            continue;
        };
        let insn = Decoder::with_ip(64, bytes, at, DecoderOptions::NONE).decode();
        if !insn.is_invalid() && insn.len() as u64 == len && is_pointer_store(&insn) {
            found.push(at);
        }
    }
    match found.as_slice() {
        [at] => Ok(*at),
        [] => Err(Refusal::NoStore { start_ip }),
        _ => Err(Refusal::AmbiguousStore { start_ip }),
    }
}

/// How far after abort_ip the abort handler is read for branches back to the store.
const ABORT_HANDLER_BYTES: usize = 64;

/// The instruction right before the descriptor store at `store`, when it provably runs before
/// the store every time: it loads the stored register (`lea` or `mov`), and no branch can reach
/// the store without it (no direct branch of the function or of the abort handler targets the
/// store; no indirect jump in the function, whose target nobody can prove). Needs the
/// function's bounds from its symbol.
pub(super) fn address_load_before(image: &ElfImage, store: u64, abort_ip: u64) -> Option<u64> {
    let (fstart, fend) = image.function_range(store)?;
    let code = image.bytes(fstart, (fend - fstart) as usize)?;
    let insns: Vec<Instruction> = Decoder::with_ip(64, code, fstart, DecoderOptions::NONE)
        .into_iter()
        .collect();
    // A handler that cannot be read proves nothing: the probe stays on the store.
    let b = image.bytes_up_to(abort_ip, ABORT_HANDLER_BYTES)?;
    let mut handler = Vec::new();
    for i in Decoder::with_ip(64, b, abort_ip, DecoderOptions::NONE) {
        handler.push(i);
        let ends = matches!(
            i.flow_control(),
            FlowControl::UnconditionalBranch | FlowControl::Return
        );
        if ends {
            break;
        }
    }
    load_before(&insns, &handler, store)
}

/// [`address_load_before`] over decoded instructions: the function's and the abort handler's.
fn load_before(insns: &[Instruction], handler: &[Instruction], store: u64) -> Option<u64> {
    let at = insns.iter().position(|i| i.ip() == store)?;
    let (prev, stored) = (insns.get(at.checked_sub(1)?)?, insns[at].op1_register());
    let loads = matches!(prev.mnemonic(), Mnemonic::Lea | Mnemonic::Mov)
        && prev.op0_kind() == OpKind::Register
        && prev.op0_register() == stored
        && prev.next_ip() == store;
    let reaches_store = |i: &Instruction| match i.flow_control() {
        FlowControl::IndirectBranch => true,
        FlowControl::UnconditionalBranch | FlowControl::ConditionalBranch | FlowControl::Call => {
            i.near_branch_target() == store
        }
        _ => false,
    };
    let provable = loads
        && !insns.iter().any(|i| i.is_invalid() || reaches_store(i))
        && !handler.iter().any(reaches_store);
    provable.then(|| prev.ip())
}

/// `mov qword ptr [mem], r64`: how librseq stores the descriptor address into `rseq_cs`.
fn is_pointer_store(insn: &Instruction) -> bool {
    insn.mnemonic() == Mnemonic::Mov
        && insn.op0_kind() == OpKind::Memory
        && insn.op1_kind() == OpKind::Register
        && insn.op1_register().size() == 8
}

/// aarch64: the `str x, [x, #imm]` just before start_ip (instructions are 4 bytes).
pub(super) fn aarch64_store_before(image: &ElfImage, start_ip: u64) -> Result<u64, Refusal> {
    let unreadable = Refusal::Unreadable { start_ip };
    let at = start_ip.checked_sub(4).ok_or(unreadable.clone())?;
    let word = image.read_u32(at).ok_or(unreadable)?;
    // STR (immediate, unsigned offset), 64-bit: 1111 1001 00 imm12 Rn Rt.
    if word & 0xffc0_0000 == 0xf900_0000 {
        Ok(at)
    } else {
        Err(Refusal::NotAStr { start_ip, word })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(bytes: &[u8], ip: u64) -> Vec<Instruction> {
        Decoder::with_ip(64, bytes, ip, DecoderOptions::NONE)
            .into_iter()
            .collect()
    }

    #[test]
    fn the_address_load_is_probed_only_where_nothing_jumps_to_the_store() {
        // lea rax,[rip+0x10]; mov [rdi+8],rax (the store, at 0x1007); then the end of the path.
        let (lea, store) = ([0x48, 0x8d, 0x05, 0x10, 0, 0, 0], [0x48, 0x89, 0x47, 0x08]);
        let ret = decode(&[&lea[..], &store, &[0xc3]].concat(), 0x1000);
        assert_eq!(load_before(&ret, &[], 0x1007), Some(0x1000));
        // jmp back to the store (at 0x100c, rel8 -7): a path that skips the load.
        let back = decode(&[&lea[..], &store, &[0xc3, 0xeb, 0xf9]].concat(), 0x1000);
        assert_eq!(load_before(&back, &[], 0x1007), None);
        // An indirect jump anywhere in the function: unprovable.
        let indirect = decode(&[&lea[..], &store, &[0xff, 0xe0]].concat(), 0x1000);
        assert_eq!(load_before(&indirect, &[], 0x1007), None);
        // The abort handler jumping back to the store (jmp rel32 from 0x2000 to 0x1007).
        let handler = decode(&[0xe9, 0x02, 0xf0, 0xff, 0xff], 0x2000);
        assert_eq!(load_before(&ret, &handler, 0x1007), None);
        // The instruction before the store loads another register (rcx).
        let other = decode(
            &[&[0x48, 0x8d, 0x0d, 0x10, 0, 0, 0][..], &store, &[0xc3]].concat(),
            0x1000,
        );
        assert_eq!(load_before(&other, &[], 0x1007), None);
    }

    #[test]
    fn recognises_the_librseq_store() {
        // mov qword ptr [rcx+8], rax
        let insn =
            Decoder::with_ip(64, &[0x48, 0x89, 0x41, 0x08], 0, DecoderOptions::NONE).decode();
        assert!(is_pointer_store(&insn));
        // mov eax, dword ptr [rcx+8]
        let insn = Decoder::with_ip(64, &[0x8b, 0x41, 0x08], 0, DecoderOptions::NONE).decode();
        assert!(!is_pointer_store(&insn));
    }
}
