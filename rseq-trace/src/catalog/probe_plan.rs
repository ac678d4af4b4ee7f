//! Where rseq-trace may place probes for a critical section, and the guard that keeps every
//! probe out of [start_ip, post_commit_ip) (REFERENCE §5: a probe there silently corrupts the
//! traced program's per-CPU data).

use iced_x86::{Decoder, DecoderOptions, FlowControl, Instruction, Mnemonic, OpKind};
use serde::Serialize;

use crate::{
    elf::{
        image::{Arch, ElfImage},
        markers, CriticalSection,
    },
    error::AttachError,
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
    /// What the entry probe sits on: `start_marker`, `address_load` (the instruction that loads
    /// the descriptor's address, proven to run right before the store every time) or
    /// `descriptor_store` (where that cannot be proven). A probe on the store traps with the
    /// section already armed, so a signal or preemption then pending aborts it: the load, one
    /// instruction earlier, changes nothing the program meets.
    pub entry_on: &'static str,
}

/// Why a section gets no probes. [`Refusal::label`] is the stable name `list --json`, the
/// summary's JSON and the metrics' `reason` label use; the message says what was found.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// x86-64: the instruction that ends at start_ip is known, and it stores no pointer.
    #[error("the instruction before start_ip {start_ip:#x} is `{insn}`, not the store of the descriptor address")]
    NotTheStore {
        /// The section's first instruction.
        start_ip: u64,
        /// The instruction found before it, disassembled.
        insn: String,
    },
    /// x86-64, without a symbol: no pointer store of any length ends at start_ip.
    #[error("no store of the descriptor address ends at start_ip {start_ip:#x}")]
    NoStore {
        /// The section's first instruction.
        start_ip: u64,
    },
    /// x86-64, without a symbol: pointer stores of more than one length end at start_ip.
    #[error("the instruction before start_ip {start_ip:#x} is ambiguous without a symbol")]
    AmbiguousStore {
        /// The section's first instruction.
        start_ip: u64,
    },
    /// aarch64: the four bytes before start_ip cannot be read from the file.
    #[error("cannot read the instruction before start_ip {start_ip:#x}")]
    Unreadable {
        /// The section's first instruction.
        start_ip: u64,
    },
    /// aarch64: the instruction before start_ip is not a 64-bit `str`.
    #[error("the instruction before start_ip {start_ip:#x} ({word:#010x}) is not a 64-bit str")]
    NotAStr {
        /// The section's first instruction.
        start_ip: u64,
        /// The instruction word found before it.
        word: u32,
    },
    /// A probe point lies inside a critical section (this one or another).
    #[error(
        "refusing to probe {addr:#x}: it lies inside the critical section at {start:#x}..{end:#x}"
    )]
    InsideSection {
        /// The probe point refused.
        addr: u64,
        /// The start_ip of the section it lies in.
        start: u64,
        /// The post_commit_ip of that section.
        end: u64,
    },
    /// A probe point lies outside the file's executable code.
    #[error("probe point {addr:#x} is not in executable code")]
    NotCode {
        /// The probe point refused.
        addr: u64,
    },
}

impl Refusal {
    /// Every label, in a fixed order.
    pub const LABELS: [&'static str; 3] = ["no_entry_store", "probe_in_section", "other"];

    /// The stable name of the kind of refusal.
    pub fn label(&self) -> &'static str {
        match self {
            Refusal::NotTheStore { .. }
            | Refusal::NoStore { .. }
            | Refusal::AmbiguousStore { .. }
            | Refusal::Unreadable { .. }
            | Refusal::NotAStr { .. } => "no_entry_store",
            Refusal::InsideSection { .. } => "probe_in_section",
            Refusal::NotCode { .. } => "other",
        }
    }
}

impl ProbePlan {
    /// Whether the entry probe sits on the descriptor store, whose trap returns with the section
    /// armed: restarts at start_ip are then the probe's own (cause `probe`).
    pub fn entry_arms(&self) -> bool {
        self.entry_on == "descriptor_store"
    }

    /// Every address this plan probes.
    pub fn addresses(&self) -> impl Iterator<Item = u64> + '_ {
        [self.entry, self.abort]
            .into_iter()
            .chain(self.cancels.iter().copied())
    }
}

/// Plans the probes of `cs`, or says why it cannot be traced safely.
pub fn plan(image: &ElfImage, cs: &CriticalSection, guard: &Guard) -> Result<ProbePlan, Refusal> {
    let plan = match marker_plan(image.arch, cs) {
        Some(plan) => plan,
        None => {
            let store = match image.arch {
                Arch::X86_64 => x86_64_store_before(image, cs.start_ip)?,
                Arch::Aarch64 => aarch64_store_before(image, cs.start_ip)?,
            };
            let load = match image.arch {
                Arch::X86_64 => address_load_before(image, store, cs.abort_ip),
                Arch::Aarch64 => None,
            };
            ProbePlan {
                entry: load.unwrap_or(store),
                abort: cs.abort_ip,
                cancels: cs.exits.clone(),
                on_markers: false,
                entry_on: if load.is_some() {
                    "address_load"
                } else {
                    "descriptor_store"
                },
            }
        }
    };
    for addr in plan.addresses() {
        if let Some((start, end)) = guard.containing(addr) {
            return Err(Refusal::InsideSection { addr, start, end });
        }
        if !image.is_code(addr) {
            return Err(Refusal::NotCode { addr });
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
        entry_on: "start_marker",
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
    /// The guard over `all`, the critical sections of one file.
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
        match self.containing(addr) {
            Some((start, end)) => Err(AttachError::InsideSection { addr, start, end }),
            None => Ok(()),
        }
    }

    /// The [start_ip, post_commit_ip) of a section that holds `addr`, if any.
    pub fn containing(&self, addr: u64) -> Option<(u64, u64)> {
        let candidates = self.ranges.partition_point(|r| r.0 <= addr);
        for i in (0..candidates).rev() {
            if self.max_end[i] <= addr {
                break;
            }
            let (start, end, _) = self.ranges[i];
            if addr < end {
                return Some((start, end));
            }
        }
        None
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
fn x86_64_store_before(image: &ElfImage, start_ip: u64) -> Result<u64, Refusal> {
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
fn address_load_before(image: &ElfImage, store: u64, abort_ip: u64) -> Option<u64> {
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
fn aarch64_store_before(image: &ElfImage, start_ip: u64) -> Result<u64, Refusal> {
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
    fn every_refusal_has_one_of_the_stable_labels() {
        let all = [
            Refusal::NotTheStore {
                start_ip: 0x10,
                insn: "nop".into(),
            },
            Refusal::NoStore { start_ip: 0x10 },
            Refusal::AmbiguousStore { start_ip: 0x10 },
            Refusal::Unreadable { start_ip: 0 },
            Refusal::NotAStr {
                start_ip: 0x10,
                word: 0,
            },
            Refusal::InsideSection {
                addr: 0x10,
                start: 0,
                end: 0x20,
            },
            Refusal::NotCode { addr: 0x10 },
        ];
        for r in &all {
            assert!(Refusal::LABELS.contains(&r.label()), "{r}");
        }
        assert_eq!(all[1].label(), "no_entry_store");
        assert_eq!(all[5].label(), "probe_in_section");
        assert_eq!(
            all[5].to_string(),
            "refusing to probe 0x10: it lies inside the critical section at 0x0..0x20"
        );
        assert_eq!(all[6].label(), "other");
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
