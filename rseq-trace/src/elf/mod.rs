//! Discovering a program's rseq critical sections from the tables in its ELF file, whichever
//! formats describe them, merged into one description per section.

pub mod disasm;
pub mod image;
pub mod librseq;
pub mod markers;
mod merge;
pub mod symbols;

use serde::Serialize;

use self::image::{Arch, ElfImage};

/// One rseq critical section, in link-time addresses.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CriticalSection {
    /// Address of its `struct rseq_cs` descriptor.
    pub descriptor: u64,
    /// The section's first instruction.
    pub start_ip: u64,
    /// start_ip + post_commit_offset: the first instruction after the commit.
    pub post_commit_ip: u64,
    /// The abort handler (right after RSEQ_SIG), where the kernel sends an interrupted attempt.
    pub abort_ip: u64,
    /// Exit points other than commit and abort (cancels), from `__rseq_exit_point_array` or
    /// from ABORT markers away from the abort handler.
    pub exits: Vec<u64>,
    /// Whether some table lists this section's exits (an exit point array, or markers). Without
    /// one (tcmalloc), early exits are invisible and would be taken for commits.
    pub exits_known: bool,
    /// The group name from the marker table, when one describes this section.
    pub key: Option<String>,
    /// Probe points of the marker table (5-byte nops), when present.
    pub markers: SectionMarkers,
    /// The ELF sections this description was read from.
    pub sources: Vec<&'static str>,
}

/// The marker probe points of one section.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SectionMarkers {
    /// The START marker's nop, before start_ip.
    pub start: Option<u64>,
    /// The FINISH marker's nop, at post_commit_ip.
    pub finish: Option<u64>,
    /// The ABORT marker's nop, at abort_ip.
    pub abort: Option<u64>,
    /// The nops of the ABORT markers at the section's exits (its cancels).
    pub cancels: Vec<u64>,
}

impl CriticalSection {
    /// Whether `ip` is inside [start_ip, post_commit_ip): where no probe may ever go.
    pub fn contains(&self, ip: u64) -> bool {
        ip >= self.start_ip && ip < self.post_commit_ip
    }
}

/// Something wrong with one table entry; the rest of the table is still used.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TableWarning {
    /// The entry's address, or for a marker record its offset in the marker table.
    pub at: u64,
    /// What is wrong, in one sentence.
    pub message: String,
}

/// The 4-byte signature the kernel checks before every abort handler (RSEQ_SIG).
pub const fn rseq_sig(arch: Arch) -> u32 {
    match arch {
        Arch::X86_64 => 0x5305_3053,
        // `brk #0x45e0`, in little-endian instruction order.
        Arch::Aarch64 => 0xd428_bc00,
    }
}

/// Whether the signature precedes `abort_ip`. The kernel kills a thread whose abort handler
/// lacks it, so its absence means a malformed table.
pub fn has_signature(image: &ElfImage, abort_ip: u64) -> bool {
    image.read_u32(abort_ip.wrapping_sub(4)) == Some(rseq_sig(image.arch))
}

/// Everything the tables of one ELF file say.
#[derive(Debug, Default)]
pub struct Discovery {
    /// The critical sections, one each however many tables list it, by start_ip.
    pub sections: Vec<CriticalSection>,
    /// What is wrong with single table entries, each with where it is.
    pub warnings: Vec<TableWarning>,
}

/// Reads every table format of `image` and merges what they say about the same section.
pub fn discover(image: &ElfImage) -> Discovery {
    let (mut sections, mut warnings) = librseq::read(image);
    let (markers, marker_warnings) = markers::read(image);
    warnings.extend(marker_warnings);
    merge::merge_markers(image, &mut sections, &markers, &mut warnings);
    for s in &sections {
        if !has_signature(image, s.abort_ip) {
            warnings.push(TableWarning {
                at: s.abort_ip,
                message: format!(
                    "abort_ip {:#x} of the section at {:#x} is not preceded by RSEQ_SIG",
                    s.abort_ip, s.start_ip
                ),
            });
        }
    }
    for pair in sections.windows(2) {
        if pair[1].start_ip < pair[0].post_commit_ip {
            warnings.push(TableWarning {
                at: pair[1].start_ip,
                message: format!(
                    "sections at {:#x} and {:#x} overlap",
                    pair[0].start_ip, pair[1].start_ip
                ),
            });
        }
    }
    Discovery { sections, warnings }
}
