//! The marker table of the original rseq design (`__rseq_markers`, see docs/marker-table.md):
//! START, FINISH and ABORT points grouped by a key whose symbol names the group.

use super::{
    image::{Arch, ElfImage},
    TableWarning,
};

/// The ELF section that holds the marker table.
pub const SECTION: &str = "__rseq_markers";
const RECORD_SIZE: usize = 24;
const VERSION: u16 = 1;

/// What a marker says about the code at its address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MarkerKind {
    /// Before the store of the descriptor address: every attempt passes it once.
    Start,
    /// At post_commit_ip, on the commit path only.
    Finish,
    /// At an abort handler (right after RSEQ_SIG), or at any other exit, where it means a cancel.
    Abort,
}

/// One record of the marker table.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Marker {
    /// The probe point: the 5-byte nop (x86-64) or `nop` (aarch64).
    pub ip: u64,
    /// Address of the key object.
    pub key: u64,
    /// The key object's symbol: the group's name.
    pub key_name: Option<String>,
    /// What the marker says about the code at `ip`.
    pub kind: MarkerKind,
}

/// Distance from a marker's code to its probe point (the nop): the x86-64 marker moves `rsp`
/// below the red zone (`lea rsp, [rsp-128]`, 5 bytes) before its nop; aarch64 has only the
/// `nop`.
pub fn probe_offset(arch: Arch) -> u64 {
    match arch {
        Arch::X86_64 => 5,
        Arch::Aarch64 => 0,
    }
}

impl Marker {
    /// Where the marker's code begins (see [`probe_offset`]).
    pub fn code_start(&self, arch: Arch) -> u64 {
        self.ip.wrapping_sub(probe_offset(arch))
    }

    /// The group's name, or the key's address when its symbol is gone (a stripped file).
    pub fn group(&self) -> String {
        self.key_name
            .clone()
            .unwrap_or_else(|| format!("key@{:#x}", self.key))
    }
}

/// Every well-formed record of the marker table, plus a warning for each one skipped.
pub fn read(image: &ElfImage) -> (Vec<Marker>, Vec<TableWarning>) {
    let mut markers = Vec::new();
    let mut warnings = Vec::new();
    let Some(data) = image.section_data(SECTION) else {
        return (markers, warnings);
    };
    if data.len() % RECORD_SIZE != 0 {
        warnings.push(TableWarning {
            at: 0,
            message: format!(
                "{SECTION} is {} bytes, not a whole number of records",
                data.len()
            ),
        });
    }
    for (i, rec) in data.chunks_exact(RECORD_SIZE).enumerate() {
        let u64_at = |o: usize| u64::from_le_bytes(rec[o..o + 8].try_into().unwrap_or_default());
        let u16_at = |o: usize| u16::from_le_bytes(rec[o..o + 2].try_into().unwrap_or_default());
        let (ip, key, kind, version) = (u64_at(0), u64_at(8), u16_at(16), u16_at(18));
        let warn = |message: String| TableWarning {
            at: (i * RECORD_SIZE) as u64,
            message: format!("{SECTION} record {i}: {message}"),
        };
        if ip == 0 || key == 0 {
            continue; // its function was garbage-collected by the linker
        }
        if version != VERSION {
            warnings.push(warn(format!("unknown version {version}")));
            continue;
        }
        let kind = match kind {
            1 => MarkerKind::Start,
            2 => MarkerKind::Finish,
            3 => MarkerKind::Abort,
            other => {
                warnings.push(warn(format!("unknown type {other}")));
                continue;
            }
        };
        if !image.is_code(ip) {
            warnings.push(warn(format!("ip {ip:#x} is not in executable code")));
            continue;
        }
        markers.push(Marker {
            ip,
            key,
            key_name: image.symbol_at(key).map(str::to_owned),
            kind,
        });
    }
    markers.sort_by_key(|m| m.ip);
    (markers, warnings)
}
