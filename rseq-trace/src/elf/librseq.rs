//! librseq and kernel-selftest tables: `__rseq_cs` descriptors, `__rseq_cs_ptr_array` and
//! `__rseq_exit_point_array` (see REFERENCE §4 and librseq's `rseq-x86.h`).

use std::collections::BTreeMap;

use super::{image::ElfImage, CriticalSection, TableWarning};

const DESCRIPTOR_SIZE: u64 = 32;
/// librseq's and tcmalloc's section name, and the older one.
const DESCRIPTOR_SECTIONS: [&str; 2] = ["__rseq_cs", "__rseq_table"];
const EXIT_POINT_SIZE: u64 = 16;

/// All critical sections the librseq tables of `image` describe, sorted by start_ip, plus a
/// warning for each entry that had to be skipped.
pub fn read(image: &ElfImage) -> (Vec<CriticalSection>, Vec<TableWarning>) {
    let mut warnings = Vec::new();
    let mut descriptors: Vec<u64> = Vec::new();
    if let Some((addr, size)) = image.section("__rseq_cs_ptr_array") {
        for at in (addr..addr.saturating_add(size)).step_by(8) {
            match image.read_ptr(at) {
                Some(d) if d != 0 => descriptors.push(d),
                _ => warnings.push(warn(at, "unreadable descriptor pointer")),
            }
        }
    }
    // Without a pointer array (or with one that missed some), walk the descriptor sections.
    let mut source_of = Vec::new();
    for name in DESCRIPTOR_SECTIONS {
        if let Some((addr, size)) = image.section(name) {
            descriptors
                .extend((addr..addr.saturating_add(size - size % DESCRIPTOR_SIZE)).step_by(32));
            source_of.push((addr, addr.saturating_add(size), name));
        }
    }
    descriptors.sort_unstable();
    descriptors.dedup();
    let source = |d: u64| {
        source_of
            .iter()
            .find(|(a, e, _)| d >= *a && d < *e)
            .map_or("__rseq_cs_ptr_array", |(_, _, n)| *n)
    };

    let mut exits: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    let exit_table = image.section("__rseq_exit_point_array");
    if let Some((addr, size)) = exit_table {
        for at in (addr..addr.saturating_add(size - size % EXIT_POINT_SIZE)).step_by(16) {
            match (
                image.read_ptr(at),
                at.checked_add(8).and_then(|a| image.read_ptr(a)),
            ) {
                (Some(start), Some(exit)) => exits.entry(start).or_default().push(exit),
                _ => warnings.push(warn(at, "unreadable exit point")),
            }
        }
    }

    let mut sections = Vec::new();
    for d in descriptors {
        match descriptor(image, d) {
            Ok(Some(mut cs)) => {
                cs.sources.push(source(d));
                cs.exits_known = exit_table.is_some();
                cs.exits = exits.remove(&cs.start_ip).unwrap_or_default();
                cs.exits.sort_unstable();
                cs.exits.dedup();
                sections.push(cs);
            }
            Ok(None) => {}
            Err(message) => warnings.push(TableWarning { at: d, message }),
        }
    }
    sections.sort_by_key(|s| s.start_ip);
    sections.dedup_by_key(|s| s.start_ip);
    for (start, _) in exits {
        warnings.push(warn(
            start,
            "exit point for a start_ip that no descriptor has",
        ));
    }
    (sections, warnings)
}

/// One descriptor; `Ok(None)` for an all-zero slot (alignment padding).
fn descriptor(image: &ElfImage, d: u64) -> Result<Option<CriticalSection>, String> {
    let field = |offset: u64| d.checked_add(offset).ok_or("descriptor outside the file");
    let version = image.read_u32(d).ok_or("descriptor outside the file")?;
    let flags = image
        .read_u32(field(4)?)
        .ok_or("descriptor outside the file")?;
    let start_ip = image.read_ptr(field(8)?).ok_or("unreadable start_ip")?;
    let post_commit_offset = image
        .read_u64(field(16)?)
        .ok_or("unreadable post_commit_offset")?;
    let abort_ip = image.read_ptr(field(24)?).ok_or("unreadable abort_ip")?;
    if version == 0 && flags == 0 && start_ip == 0 && post_commit_offset == 0 && abort_ip == 0 {
        return Ok(None);
    }
    if version != 0 {
        return Err(format!("unknown descriptor version {version}"));
    }
    let post_commit_ip = start_ip
        .checked_add(post_commit_offset)
        .ok_or("post_commit_offset overflows")?;
    if !image.is_code(start_ip) || !image.is_code(abort_ip) {
        return Err(format!(
            "start_ip {start_ip:#x} or abort_ip {abort_ip:#x} is not in executable code"
        ));
    }
    if abort_ip >= start_ip && abort_ip < post_commit_ip {
        return Err(format!("abort_ip {abort_ip:#x} is inside its own section"));
    }
    Ok(Some(CriticalSection {
        descriptor: d,
        start_ip,
        post_commit_ip,
        abort_ip,
        ..Default::default()
    }))
}

fn warn(at: u64, message: &str) -> TableWarning {
    TableWarning {
        at,
        message: message.to_owned(),
    }
}
