//! Where rseq-trace may place probes for a critical section: on its markers, or on the
//! instruction that arms it; never inside a section ([`Guard`]).

mod entry_store;
mod guard;

use self::entry_store::{aarch64_store_before, address_load_before, x86_64_store_before};
pub use self::guard::Guard;

use serde::Serialize;

use crate::elf::{
    image::{Arch, ElfImage},
    markers, CriticalSection,
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
    /// Whether every cancel probe sits on a nop (a marker's, or one the code has at its exit):
    /// what a cancel costs the traced thread.
    pub cancels_on_nops: bool,
    /// Whether the abort probe sits on a nop: what an abort costs the traced thread.
    pub abort_on_nop: bool,
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
    let mut plan = match marker_plan(image.arch, cs) {
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
                cancels_on_nops: false,
                abort_on_nop: false,
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
    plan.cancels_on_nops = plan.cancels.iter().all(|a| is_nop(image, *a));
    plan.abort_on_nop = is_nop(image, plan.abort);
    Ok(plan)
}

/// Whether the instruction at `addr` is the nop a probe is cheap on: the 5-byte nop on
/// x86-64, `nop` on aarch64.
fn is_nop(image: &ElfImage, addr: u64) -> bool {
    match image.arch {
        Arch::X86_64 => image.bytes(addr, 5) == Some(&[0x0f, 0x1f, 0x44, 0x00, 0x00][..]),
        Arch::Aarch64 => image.read_u32(addr) == Some(0xd503_201f),
    }
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
        cancels_on_nops: true,
        abort_on_nop: true,
        entry_on: "start_marker",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
