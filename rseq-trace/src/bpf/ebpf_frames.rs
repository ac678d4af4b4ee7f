//! The embedded eBPF object keeps every function's stack frame under 64 bytes, as the verifier
//! counts it: rounded up to 16 bytes (`round_up_stack_depth` with the JIT), so 49 bytes already
//! count as 64. From that size on, kernels with BPF private stacks (6.14+) run a tracing
//! program on a per-CPU stack instead of the task's; where uprobe programs can be preempted
//! (7.x), another thread's run of the same program on that CPU then overwrites the first one's
//! locals, and events land on the wrong section (measured on 7.2 and 7.3: a few in every
//! 100,000; `docs/kernels.md`). This reads the instructions of the object cargo built, as the
//! kernel will see them.

use std::collections::HashMap;

use object::{Object, ObjectSection, ObjectSymbol, SymbolKind};

/// The kernel's `BPF_PRIV_STACK_MIN_SIZE`.
const PRIVATE_STACK_FROM: i64 = 64;

/// A frame as the verifier sizes it for a JIT-compiled program: rounded up to 16 bytes.
fn as_verified(depth: i64) -> i64 {
    (depth + 15) / 16 * 16
}

/// Deepest stack offset each function of the object touches, by name.
fn frames(elf: &[u8]) -> HashMap<String, i64> {
    let file = object::File::parse(elf).expect("the embedded eBPF object is an ELF file");
    let mut out = HashMap::new();
    for sym in file.symbols() {
        if sym.kind() != SymbolKind::Text || sym.size() == 0 {
            continue;
        }
        let Some(index) = sym.section_index() else {
            continue;
        };
        let section = file.section_by_index(index).unwrap();
        let data = section.data().unwrap();
        let start = sym.address() as usize;
        let code = &data[start..start + sym.size() as usize];
        out.insert(sym.name().unwrap().to_owned(), deepest(code));
    }
    out
}

/// Deepest `r10 - N` a function's instructions load, store or take the address of.
fn deepest(code: &[u8]) -> i64 {
    let mut depth = 0;
    let mut copies_of_r10 = [false; 11];
    for insn in code.chunks_exact(8) {
        let (op, dst, src) = (insn[0], insn[1] & 0xf, insn[1] >> 4);
        let off = i16::from_le_bytes([insn[2], insn[3]]) as i64;
        let imm = i32::from_le_bytes([insn[4], insn[5], insn[6], insn[7]]) as i64;
        let base = match op & 0x07 {
            0x01 => Some(src),        // LDX
            0x02 | 0x03 => Some(dst), // ST, STX
            _ => None,
        };
        if base == Some(10) && off < 0 {
            depth = depth.max(-off);
        }
        match op {
            // rX = r10, then rX += -N: a pointer into the frame for a helper.
            0xbf if (dst as usize) < copies_of_r10.len() => copies_of_r10[dst as usize] = src == 10,
            0x07 if copies_of_r10.get(dst as usize) == Some(&true) && imm < 0 => {
                depth = depth.max(-imm)
            }
            _ if (dst as usize) < copies_of_r10.len() && op & 0x07 >= 0x04 => {
                copies_of_r10[dst as usize] = false
            }
            _ => {}
        }
    }
    depth
}

#[test]
fn every_function_of_the_ebpf_object_stays_under_the_private_stack_size() {
    let frames = frames(crate::bpf::EBPF_OBJECT);
    if frames.is_empty() {
        eprintln!("skipped: built without the eBPF object (AYA_BUILD_SKIP)");
        return;
    }
    eprintln!("deepest stack offset per function: {frames:?}");
    assert!(frames.contains_key("rseq_event"), "{frames:?}");
    let big: Vec<_> = frames
        .iter()
        .filter(|(_, d)| as_verified(**d) >= PRIVATE_STACK_FROM)
        .collect();
    assert!(
        big.is_empty(),
        "frames of 64 bytes or more once rounded up to 16: {big:?} (all: {frames:?})"
    );
}

#[test]
fn the_scan_sees_stores_loads_and_frame_pointers() {
    // *(u64 *)(r10 -72) = r1; r1 = *(u32 *)(r10 -4); r2 = r10; r2 += -96
    let code = [
        [0x7b, 0x1a, 0xb8, 0xff, 0, 0, 0, 0],
        [0x61, 0xa1, 0xfc, 0xff, 0, 0, 0, 0],
        [0xbf, 0xa2, 0, 0, 0, 0, 0, 0],
        [0x07, 0x02, 0, 0, 0xa0, 0xff, 0xff, 0xff],
    ]
    .concat();
    assert_eq!(deepest(&code[..16]), 72);
    assert_eq!(deepest(&code), 96);
}

#[test]
fn frames_are_sized_as_the_verifier_rounds_them() {
    // The 56-byte `count_restart` that the 7.2 flake came from counts as 64.
    assert_eq!(as_verified(56), 64);
    assert_eq!(as_verified(48), 48);
    assert_eq!(as_verified(49), 64);
}
