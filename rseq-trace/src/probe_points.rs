//! Where rseq-trace may place probes for a critical section, and the guard that keeps every
//! probe out of [start_ip, post_commit_ip) (REFERENCE §5: a probe there silently corrupts the
//! traced program's per-CPU data).

use iced_x86::{Decoder, DecoderOptions, Instruction, Mnemonic, OpKind};
use serde::Serialize;

use crate::{
    error::AttachError,
    table::{
        elf::{Arch, ElfImage},
        markers, CriticalSection,
    },
};

/// The probe points of one section, all outside every section.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProbePlan {
    /// Where attempts are counted: the section's START marker (a 5-byte nop the kernel turns
    /// into a call, about 20 times cheaper than a trap) or else the store of the descriptor
    /// address into `rseq->rseq_cs`, ending at start_ip. Every attempt passes it exactly once,
    /// and a preemption right after it aborts correctly.
    pub entry: u64,
    /// abort_ip, or the ABORT marker right after it: the kernel's restart target and the
    /// section's own CPU-mismatch branch.
    pub abort: u64,
    /// Exit points (or their cancel markers): each counts a cancel.
    pub cancels: Vec<u64>,
    /// Whether the probes sit on marker nops (the cheap kind).
    pub on_markers: bool,
}

impl ProbePlan {
    /// Every address this plan probes.
    pub fn addresses(&self) -> impl Iterator<Item = u64> + '_ {
        [self.entry, self.abort]
            .into_iter()
            .chain(self.cancels.iter().copied())
    }
}

/// Plans the probes of `cs`, or says why it cannot be traced safely.
pub fn plan(image: &ElfImage, cs: &CriticalSection, guard: &Guard) -> Result<ProbePlan, String> {
    let plan = match marker_plan(image.arch, cs) {
        Some(plan) => plan,
        None => ProbePlan {
            entry: match image.arch {
                Arch::X86_64 => x86_64_store_before(image, cs.start_ip)?,
                Arch::Aarch64 => aarch64_store_before(image, cs.start_ip)?,
            },
            abort: cs.abort_ip,
            cancels: cs.exits.clone(),
            on_markers: false,
        },
    };
    for addr in plan.addresses() {
        guard.check(addr).map_err(|e| e.to_string())?;
        if !image.is_code(addr) {
            return Err(format!("probe point {addr:#x} is not in executable code"));
        }
    }
    Ok(plan)
}

/// The probes on the section's markers, when the markers cover every point to probe: START
/// (straight-line code to the descriptor store, by the marker contract), ABORT after RSEQ_SIG,
/// and a cancel marker at every exit. Mixing marker and non-marker points would be fine for
/// counting, but all-or-nothing keeps a plan's cost easy to state.
fn marker_plan(arch: Arch, cs: &CriticalSection) -> Option<ProbePlan> {
    let m = &cs.markers;
    let cancels = cs
        .exits
        .iter()
        .map(|exit| {
            m.cancels
                .iter()
                .copied()
                .find(|ip| *ip == exit + markers::probe_offset(arch))
        })
        .collect::<Option<Vec<u64>>>()?;
    Some(ProbePlan {
        entry: m.start?,
        abort: m.abort?,
        cancels,
        on_markers: true,
    })
}

/// The guard: refuses any address inside any critical section of a file. Built once per file,
/// so checking every probe of 10,000 sections stays cheap.
pub struct Guard {
    /// (start_ip, post_commit_ip, index in the sections given), by start_ip.
    ranges: Vec<(u64, u64, usize)>,
    /// Largest end among `ranges[..=i]`: a search can stop once it is at or below the address.
    max_end: Vec<u64>,
}

impl Guard {
    pub fn new(all: &[CriticalSection]) -> Self {
        let mut ranges: Vec<(u64, u64, usize)> = all
            .iter()
            .enumerate()
            .map(|(i, cs)| (cs.start_ip, cs.post_commit_ip, i))
            .collect();
        ranges.sort_unstable();
        let max_end = ranges
            .iter()
            .scan(0, |m, r| {
                *m = (*m).max(r.1);
                Some(*m)
            })
            .collect();
        Guard { ranges, max_end }
    }

    /// `Err` when `addr` lies in [start_ip, post_commit_ip) of a section.
    pub fn check(&self, addr: u64) -> Result<(), AttachError> {
        let candidates = self.ranges.partition_point(|r| r.0 <= addr);
        for i in (0..candidates).rev() {
            if self.max_end[i] <= addr {
                break;
            }
            let (start, end, _) = self.ranges[i];
            if addr < end {
                return Err(AttachError::InsideSection { addr, start, end });
            }
        }
        Ok(())
    }
}

/// [`Guard::check`] for a one-off address.
pub fn check_outside(addr: u64, all: &[CriticalSection]) -> Result<(), AttachError> {
    Guard::new(all).check(addr)
}

/// Longest x86-64 instruction.
const MAX_INSN: u64 = 15;

/// The `mov m64, r64` that ends exactly at start_ip. Decoded forward from the enclosing
/// function's start when a symbol gives it (instruction boundaries are then certain), otherwise
/// by trying each length that could end there.
fn x86_64_store_before(image: &ElfImage, start_ip: u64) -> Result<u64, String> {
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
                    Err(format!(
                        "the instruction before start_ip {start_ip:#x} is `{insn}`, not the store of the descriptor address"
                    ))
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
        [] => Err(format!(
            "no store of the descriptor address ends at start_ip {start_ip:#x}"
        )),
        _ => Err(format!(
            "the instruction before start_ip {start_ip:#x} is ambiguous without a symbol"
        )),
    }
}

/// `mov qword ptr [mem], r64`: how librseq stores the descriptor address into `rseq_cs`.
fn is_pointer_store(insn: &Instruction) -> bool {
    insn.mnemonic() == Mnemonic::Mov
        && insn.op0_kind() == OpKind::Memory
        && insn.op1_kind() == OpKind::Register
        && insn.op1_register().size() == 8
}

/// aarch64: the `str x, [x, #imm]` just before start_ip (instructions are 4 bytes).
fn aarch64_store_before(image: &ElfImage, start_ip: u64) -> Result<u64, String> {
    let at = start_ip.checked_sub(4).ok_or("start_ip is 0")?;
    let word = image
        .read_u32(at)
        .ok_or_else(|| format!("cannot read the instruction before start_ip {start_ip:#x}"))?;
    // STR (immediate, unsigned offset), 64-bit: 1111 1001 00 imm12 Rn Rt.
    if word & 0xffc0_0000 == 0xf900_0000 {
        Ok(at)
    } else {
        Err(format!(
            "the instruction before start_ip {start_ip:#x} ({word:#010x}) is not a 64-bit str"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cs(start: u64, end: u64) -> CriticalSection {
        CriticalSection {
            descriptor: 0,
            start_ip: start,
            post_commit_ip: end,
            abort_ip: end + 100,
            ..Default::default()
        }
    }

    #[test]
    fn guard_handles_overlapping_and_unsorted_sections() {
        // A long section covering a short one, given out of order.
        let all = [cs(0x3000, 0x3004), cs(0x1000, 0x2000), cs(0x1100, 0x1108)];
        let guard = Guard::new(&all);
        for addr in [0x1000, 0x1104, 0x1200, 0x1fff, 0x3003] {
            assert!(guard.check(addr).is_err(), "{addr:#x}");
        }
        for addr in [0xfff, 0x2000, 0x2fff, 0x3004] {
            assert!(guard.check(addr).is_ok(), "{addr:#x}");
        }
    }

    #[test]
    fn guard_refuses_every_address_inside_and_allows_the_edges() {
        let all = [cs(0x1000, 0x1010), cs(0x2000, 0x2004)];
        for addr in [0x1000, 0x1008, 0x100f, 0x2000, 0x2003] {
            assert!(check_outside(addr, &all).is_err(), "{addr:#x}");
        }
        for addr in [0xfff, 0x1010, 0x1fff, 0x2004] {
            assert!(check_outside(addr, &all).is_ok(), "{addr:#x}");
        }
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
