//! Discovering a program's rseq critical sections from the tables in its ELF file, whichever
//! formats describe them, merged into one description per section.

pub mod image;
pub mod librseq;
pub mod markers;
pub mod symbols;
pub mod disasm;

use serde::Serialize;

use self::{
    image::{Arch, ElfImage},
    markers::{Marker, MarkerKind},
};

/// One rseq critical section, in link-time addresses.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CriticalSection {
    /// Address of its `struct rseq_cs` descriptor.
    pub descriptor: u64,
    pub start_ip: u64,
    /// start_ip + post_commit_offset: the first instruction after the commit.
    pub post_commit_ip: u64,
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
    pub start: Option<u64>,
    pub finish: Option<u64>,
    pub abort: Option<u64>,
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
    pub at: u64,
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
    pub sections: Vec<CriticalSection>,
    pub warnings: Vec<TableWarning>,
}

/// Reads every table format of `image` and merges what they say about the same section.
pub fn discover(image: &ElfImage) -> Discovery {
    let (mut sections, mut warnings) = librseq::read(image);
    let (markers, marker_warnings) = markers::read(image);
    warnings.extend(marker_warnings);
    merge_markers(image, &mut sections, &markers, &mut warnings);
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

/// Gives each marker to the section it describes (docs/marker-table.md, "Keys and merging").
fn merge_markers(
    image: &ElfImage,
    sections: &mut [CriticalSection],
    markers: &[Marker],
    warnings: &mut Vec<TableWarning>,
) {
    let arch = image.arch;
    let mut warn = |at: u64, message: String| warnings.push(TableWarning { at, message });
    for m in markers {
        if let Some(s) = sections
            .iter()
            .find(|s| s.contains(m.ip) || s.contains(m.code_start(arch)))
        {
            warn(
                m.ip,
                format!(
                    "{:?} marker of {} lies inside the section at {:#x}; ignored",
                    m.kind,
                    m.group(),
                    s.start_ip
                ),
            );
        }
    }
    let outside = |m: &&Marker| {
        !sections
            .iter()
            .any(|s| s.contains(m.ip) || s.contains(m.code_start(arch)))
    };
    let markers: Vec<&Marker> = markers.iter().filter(outside).collect();
    for m in markers.iter().filter(|m| m.kind == MarkerKind::Start) {
        let same_function = |s: &CriticalSection| {
            image.function_at(s.start_ip).map(|f| f.0) == image.function_at(m.ip).map(|f| f.0)
        };
        match sections.iter_mut().find(|s| s.start_ip > m.ip) {
            Some(s) if same_function(s) => {
                s.markers.start = Some(m.ip);
                claim(s, m, &mut warn);
            }
            _ => warn(
                m.ip,
                format!(
                    "START marker of {} has no critical section after it",
                    m.group()
                ),
            ),
        }
    }
    for m in markers.iter().filter(|m| m.kind == MarkerKind::Finish) {
        let at = m.code_start(arch);
        match sections.iter_mut().find(|s| s.post_commit_ip == at) {
            Some(s) => {
                s.markers.finish = Some(m.ip);
                s.exits_known = true;
                claim(s, m, &mut warn);
            }
            None => warn(
                m.ip,
                format!("FINISH marker of {} is at no post_commit_ip", m.group()),
            ),
        }
    }
    for m in markers.iter().filter(|m| m.kind == MarkerKind::Abort) {
        let at = m.code_start(arch);
        if image.read_u32(at.wrapping_sub(4)) == Some(rseq_sig(arch)) {
            // At an abort handler: a kernel restart point of every section aborting there.
            let mut any = false;
            for s in sections.iter_mut().filter(|s| s.abort_ip == at) {
                s.markers.abort = Some(m.ip);
                claim(s, m, &mut warn);
                any = true;
            }
            if !any {
                warn(
                    m.ip,
                    format!(
                        "ABORT marker of {} follows RSEQ_SIG but is no section's abort_ip",
                        m.group()
                    ),
                );
            }
            continue;
        }
        // Anywhere else: a cancel of the section that lists this exit, or of the only section
        // of its key.
        let listed = sections.iter().position(|s| s.exits.contains(&at));
        let of_key: Vec<usize> = (0..sections.len())
            .filter(|i| {
                sections[*i].key.as_deref() == m.key_name.as_deref() && m.key_name.is_some()
            })
            .collect();
        match (listed, of_key.as_slice()) {
            (Some(i), _) | (None, &[i]) => {
                let s = &mut sections[i];
                s.markers.cancels.push(m.ip);
                if !s.exits.contains(&at) {
                    s.exits.push(at);
                    s.exits.sort_unstable();
                }
                claim(s, m, &mut warn);
            }
            _ => warn(
                m.ip,
                format!("cancel marker of {} matches no single section", m.group()),
            ),
        }
    }
}

/// Records the marker's key on the section, warning when two keys claim it.
fn claim(s: &mut CriticalSection, m: &Marker, warn: &mut impl FnMut(u64, String)) {
    let group = m.group();
    match &s.key {
        None => s.key = Some(group),
        Some(k) if *k == group => {}
        Some(k) => warn(
            m.ip,
            format!(
                "section at {:#x} is claimed by keys {k} and {group}",
                s.start_ip
            ),
        ),
    }
    if !s.sources.contains(&markers::SECTION) {
        s.sources.push(markers::SECTION);
    }
}
