//! Giving each marker of the marker table to the section it describes
//! (docs/marker-table.md, "Keys and merging").

use super::{
    image::ElfImage,
    markers::{self, Marker, MarkerKind},
    rseq_sig, CriticalSection, TableWarning,
};

/// Collects warnings with their address.
type Warn<'a> = dyn FnMut(u64, String) + 'a;

/// Gives each marker to its section: START before start_ip, FINISH at post_commit_ip, ABORT at
/// an abort handler or at an exit (a cancel). Markers inside a section are ignored.
pub(super) fn merge_markers(
    image: &ElfImage,
    sections: &mut [CriticalSection],
    markers: &[Marker],
    warnings: &mut Vec<TableWarning>,
) {
    let arch = image.arch;
    let mut warn = |at: u64, message: String| warnings.push(TableWarning { at, message });
    let mut outside = Vec::with_capacity(markers.len());
    for m in markers {
        match sections
            .iter()
            .find(|s| s.contains(m.ip) || s.contains(m.code_start(arch)))
        {
            Some(s) => warn(
                m.ip,
                format!(
                    "{:?} marker of {} lies inside the section at {:#x}; ignored",
                    m.kind,
                    m.group(),
                    s.start_ip
                ),
            ),
            None => outside.push(m),
        }
    }
    // In kind order, so an ABORT at an exit sees the exits every table listed.
    for kind in [MarkerKind::Start, MarkerKind::Finish, MarkerKind::Abort] {
        for m in outside.iter().filter(|m| m.kind == kind) {
            match kind {
                MarkerKind::Start => merge_start(image, sections, m, &mut warn),
                MarkerKind::Finish => merge_finish(image, sections, m, &mut warn),
                MarkerKind::Abort => merge_abort(image, sections, m, &mut warn),
            }
        }
    }
}

/// A START marker: the next section, when it is in the same function.
fn merge_start(image: &ElfImage, sections: &mut [CriticalSection], m: &Marker, warn: &mut Warn) {
    let same_function = |s: &CriticalSection| {
        image.function_at(s.start_ip).map(|f| f.0) == image.function_at(m.ip).map(|f| f.0)
    };
    match sections.iter_mut().find(|s| s.start_ip > m.ip) {
        Some(s) if same_function(s) => {
            s.markers.start = Some(m.ip);
            claim(s, m, warn);
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

/// A FINISH marker: the section whose post_commit_ip it is at.
fn merge_finish(image: &ElfImage, sections: &mut [CriticalSection], m: &Marker, warn: &mut Warn) {
    let at = m.code_start(image.arch);
    match sections.iter_mut().find(|s| s.post_commit_ip == at) {
        Some(s) => {
            s.markers.finish = Some(m.ip);
            s.exits_known = true;
            claim(s, m, warn);
        }
        None => warn(
            m.ip,
            format!("FINISH marker of {} is at no post_commit_ip", m.group()),
        ),
    }
}

/// An ABORT marker: after RSEQ_SIG, every section aborting there; anywhere else, a cancel of
/// the section that lists this exit, or of the only section of its key.
fn merge_abort(image: &ElfImage, sections: &mut [CriticalSection], m: &Marker, warn: &mut Warn) {
    let arch = image.arch;
    let at = m.code_start(arch);
    if image.read_u32(at.wrapping_sub(4)) == Some(rseq_sig(arch)) {
        let mut any = false;
        for s in sections.iter_mut().filter(|s| s.abort_ip == at) {
            s.markers.abort = Some(m.ip);
            claim(s, m, warn);
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
        return;
    }
    let listed = sections.iter().position(|s| s.exits.contains(&at));
    let of_key: Vec<usize> = (0..sections.len())
        .filter(|i| sections[*i].key.as_deref() == m.key_name.as_deref() && m.key_name.is_some())
        .collect();
    match (listed, of_key.as_slice()) {
        (Some(i), _) | (None, &[i]) => {
            let s = &mut sections[i];
            s.markers.cancels.push(m.ip);
            if !s.exits.contains(&at) {
                s.exits.push(at);
                s.exits.sort_unstable();
            }
            claim(s, m, warn);
        }
        _ => warn(
            m.ip,
            format!("cancel marker of {} matches no single section", m.group()),
        ),
    }
}

/// Records the marker's key on the section, warning when two keys claim it.
fn claim(s: &mut CriticalSection, m: &Marker, warn: &mut Warn) {
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
