//! One tracing session of one process: discover its sections, plan and attach the probes, and
//! read the counts. Dropping the session detaches every probe.

use tracing::{info, warn};

use crate::{
    attach::Tracer,
    counts::Snapshot,
    error::SessionError,
    probe_points::{self, ProbePlan},
    table::{self, elf::ElfImage, CriticalSection},
    target::Target,
};

/// A critical section as the session knows it.
#[derive(Clone, Debug)]
pub struct Section {
    /// Index in the counter map and in the cookies of its probes.
    pub id: u32,
    pub cs: CriticalSection,
    /// `function+0xoffset` of start_ip, or the bare address without symbols.
    pub name: String,
    /// The probes, or why the section is not traced.
    pub plan: Result<ProbePlan, String>,
}

pub struct Session {
    pub target: Target,
    pub sections: Vec<Section>,
    tracer: Tracer,
}

impl Session {
    /// Reads the tables of `pid`'s executable and attaches probes to every section that can be
    /// probed safely. Sections that cannot are kept, with the reason, and logged.
    pub fn start(pid: u32) -> Result<Self, SessionError> {
        let target = Target::from_pid(pid)?;
        let image = ElfImage::open(&target.exe_link)?;
        let table::Discovery {
            sections: found,
            warnings,
        } = table::discover(&image);
        for w in &warnings {
            warn!(
                "{}: table entry at {:#x} skipped: {}",
                target.exe_name, w.at, w.message
            );
        }
        if found.is_empty() {
            return Err(SessionError::NoSections {
                exe: target.exe_name,
                pid,
            });
        }
        let sections: Vec<Section> = found
            .iter()
            .enumerate()
            .map(|(id, cs)| Section {
                id: id as u32,
                cs: cs.clone(),
                name: crate::symbolize::function_offset(&image, cs.start_ip),
                plan: probe_points::plan(&image, cs, &found),
            })
            .collect();
        for s in &sections {
            if let Err(reason) = &s.plan {
                warn!("section {} not traced: {reason}", s.name);
            } else if !s.cs.exits_known {
                warn!(
                    "section {}: its table lists no exit points, so early exits are not seen and count as commits",
                    s.name
                );
            }
        }
        if sections.iter().all(|s| s.plan.is_err()) {
            return Err(SessionError::NothingSafe {
                exe: target.exe_name,
                count: sections.len(),
                reason: sections[0].plan.clone().err().unwrap_or_default(),
            });
        }
        let mut tracer = Tracer::load(sections.len() as u32)?;
        for s in &sections {
            if let Ok(plan) = &s.plan {
                tracer.attach(&target.probe_path, pid, &image, s.id, plan, &found)?;
            }
        }
        info!(
            "attached {} probes to {} sections of pid {} ({})",
            tracer.probes(),
            sections.iter().filter(|s| s.plan.is_ok()).count(),
            pid,
            target.exe_name
        );
        Ok(Session {
            target,
            sections,
            tracer,
        })
    }

    /// The current counts of every section.
    pub fn snapshot(&self) -> Result<Snapshot, SessionError> {
        Ok(self.tracer.snapshot(self.sections.len() as u32)?)
    }
}
