//! Attaching uprobes at a section's probe points, one multi link per file and scope (one link
//! per probe on kernels without multi links), and sampled mode's entry probes, attached only
//! for its windows.

use std::path::{Path, PathBuf};

use aya::programs::uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeLink, UProbeScope};
use rseq_common::{mode::Mode, Cookie, Event};
use tracing::debug;

use super::{exits::ExitKind, multi_link::MultiLink, uprobe, Tracer};
use crate::{
    catalog::probe_plan::{Guard, ProbePlan},
    elf::{image::ElfImage, CriticalSection},
    error::AttachError,
};

/// Probes of one file in one scope, attached together as one multi link.
#[derive(Clone)]
pub(super) struct ProbeGroup {
    pub(super) path: PathBuf,
    pub(super) scope: UProbeScope,
    pub(super) offsets: Vec<u64>,
    pub(super) cookies: Vec<u64>,
}

/// Attached probes of one group.
pub(super) enum Links {
    Multi {
        _link: MultiLink,
    },
    /// Without multi links (Linux before 6.6): one perf-event link per probe.
    Perf {
        _links: Vec<UProbeLink>,
    },
}

/// Probes that are detached when this is dropped. Detaching waits for the kernel's uprobe grace
/// period (the breakpoints are gone before that), so sampled mode drops it without holding the
/// engine.
pub struct DetachOnDrop {
    pub(super) _links: Vec<Links>,
}

impl Drop for DetachOnDrop {
    /// Drops the links at once, each on a thread. A link removes its breakpoints and then
    /// waits for the grace period; dropped one after the other, the last link's probes would
    /// go on trapping through every other link's wait (~100 ms each here): a window's cancel
    /// probes, linked after its entry probes, cost three times as much as those so.
    fn drop(&mut self) {
        let links = std::mem::take(&mut self._links);
        if links.len() < 2 {
            return;
        }
        std::thread::scope(|s| {
            for link in links {
                let detach = std::thread::Builder::new().name("rseq-detach".into());
                // Without a thread the link is dropped here, with the closure.
                let _ = detach.spawn_scoped(s, move || drop(link));
            }
        });
    }
}

impl Tracer {
    /// Attaches the probes of `sections` (id and plan) of the file at `path`, as one link.
    /// Every address passes the inside-a-section guard here, right before the kernel sees it.
    pub fn attach_object(
        &mut self,
        path: &Path,
        scope: UProbeScope,
        image: &ElfImage,
        sections: &[(u32, &ProbePlan)],
        all: &[CriticalSection],
    ) -> Result<(), AttachError> {
        let group = || ProbeGroup {
            path: path.to_owned(),
            scope,
            offsets: Vec::new(),
            cookies: Vec::new(),
        };
        let mut always = group();
        let mut sampled = group();
        // Sampled mode: aborts and cancels attached for the whole session, until their cost
        // calls for windows (`bpf::exits`), with the sections they belong to.
        let mut aborts = (group(), Vec::new());
        let mut cancels = (group(), Vec::new());
        let guard = Guard::new(all);
        for (id, plan) in sections {
            let entry = (self.mode != Mode::Aborts).then_some((plan.entry, Event::Entry));
            let points = entry
                .into_iter()
                .chain([(plan.abort, Event::Abort)])
                .chain(plan.cancels.iter().map(|a| (*a, Event::Cancel)));
            for (addr, event) in points {
                guard.check(addr)?;
                let offset = image
                    .file_offset(addr)
                    .ok_or_else(|| AttachError::NotMapped {
                        addr,
                        path: path.to_owned(),
                    })?;
                let exits = match event {
                    Event::Abort => &mut aborts,
                    _ => &mut cancels,
                };
                let to = match (self.mode, event) {
                    (Mode::Sampled, Event::Entry) => &mut sampled,
                    (Mode::Sampled, _) => {
                        if exits.1.last() != Some(id) {
                            exits.1.push(*id);
                        }
                        &mut exits.0
                    }
                    _ => &mut always,
                };
                to.offsets.push(offset);
                let arms = self.mode != Mode::Aborts && plan.entry_arms();
                to.cookies
                    .push(Cookie::new(*id, event).entry_arming(arms).encode());
            }
        }
        if !always.offsets.is_empty() {
            let links = self.attach_group(&always)?;
            self.links.push(links);
            self.probes += always.offsets.len();
        }
        if !sampled.offsets.is_empty() {
            self.sample_groups.push(sampled);
        }
        for (kind, (g, ids)) in [(ExitKind::Abort, aborts), (ExitKind::Cancel, cancels)] {
            if !g.offsets.is_empty() {
                self.attach_exits(kind, g, ids)?;
            }
        }
        Ok(())
    }

    pub(super) fn attach_group(&mut self, g: &ProbeGroup) -> Result<Links, AttachError> {
        if let Some(multi) = &self.multi {
            let pid = match g.scope {
                UProbeScope::OneProcess(pid) => Some(pid.get()),
                _ => None,
            };
            return multi
                .attach(&g.path, &g.offsets, &g.cookies, pid)
                .map(|l| Links::Multi { _link: l })
                .map_err(|source| AttachError::Link {
                    path: g.path.clone(),
                    source,
                });
        }
        let program = uprobe(&mut self.ebpf)?;
        let mut links = Vec::with_capacity(g.offsets.len());
        for (offset, cookie) in g.offsets.iter().zip(&g.cookies) {
            let point = UProbeAttachPoint {
                location: UProbeAttachLocation::AbsoluteOffset(*offset),
                cookie: Some(*cookie),
            };
            let id = program.attach(point, &g.path, g.scope)?;
            links.push(program.take_link(id)?);
        }
        Ok(Links::Perf { _links: links })
    }

    /// Sampled mode: attaches every entry probe (and the exit probes moved into the windows);
    /// [`Tracer::open_gate`] then starts counting, so that entries, aborts and cancels are
    /// counted over the same time. Returns the number of probes attached; groups whose process
    /// or file is gone are dropped.
    pub fn open_window(&mut self) -> Result<usize, AttachError> {
        let groups = std::mem::take(&mut self.sample_groups);
        let mut links = Vec::with_capacity(groups.len());
        let mut attached = 0;
        for g in groups {
            match self.attach_group(&g) {
                Ok(l) => {
                    links.push(l);
                    attached += g.offsets.len();
                    self.sample_groups.push(g);
                }
                Err(e) => debug!("sample points in {} dropped: {e}", g.path.display()),
            }
        }
        self.window = Some(DetachOnDrop { _links: links });
        Ok(attached)
    }

    /// Sampled mode: starts counting, once the probes of [`Tracer::open_window`] are settled.
    pub fn open_gate(&mut self) -> Result<(), AttachError> {
        self.maps.set_gate(true)
    }

    /// Sampled mode: closes the gate and hands back the entry probes, detached when dropped.
    pub fn close_window(&mut self) -> Result<Option<DetachOnDrop>, AttachError> {
        self.maps.set_gate(false)?;
        Ok(self.window.take())
    }

    /// Number of probes sampled mode attaches per window: the entry probes, and the exit
    /// probes moved into the windows.
    pub fn sample_points(&self) -> usize {
        self.sample_groups.iter().map(|g| g.offsets.len()).sum()
    }

    /// Attaches `rseq_event` at `offsets` of the file at `path`, in process `pid` only, with
    /// `cookies`: probes for a measurement, detached when the result is dropped.
    pub fn attach_probes(
        &mut self,
        path: &Path,
        pid: u32,
        offsets: &[u64],
        cookies: &[u64],
    ) -> Result<DetachOnDrop, AttachError> {
        let pid = std::num::NonZeroU32::new(pid).ok_or(AttachError::Missing("pid"))?;
        let group = ProbeGroup {
            path: path.to_owned(),
            scope: UProbeScope::OneProcess(pid),
            offsets: offsets.to_vec(),
            cookies: cookies.to_vec(),
        };
        let links = self.attach_group(&group)?;
        Ok(DetachOnDrop {
            _links: vec![links],
        })
    }
}
