//! Loading the eBPF program and attaching it as uprobes at a section's probe points.

use std::{num::NonZeroU32, path::Path};

use aya::{
    maps::Array,
    programs::{
        uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeScope},
        UProbe,
    },
    Ebpf, EbpfLoader,
};
use rseq_common::{
    counters::{counter_index, map_len, COUNTS_MAP, SECTION_CAPACITY_GLOBAL},
    health::{Health, HEALTH_MAP},
    Cookie, Event,
};

use crate::{
    counts::{Snapshot, Tally},
    error::AttachError,
    probe_points::{check_outside, ProbePlan},
    table::{elf::ElfImage, CriticalSection},
};

/// The eBPF object built from `rseq-trace-ebpf` by build.rs.
static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/rseq-trace-ebpf"));
const PROGRAM: &str = "rseq_event";

/// The loaded eBPF program and its maps. Dropping it detaches every probe.
pub struct Tracer {
    ebpf: Ebpf,
    cpus: u32,
    capacity: u32,
    probes: usize,
}

impl Tracer {
    /// Loads the program with its counter map sized for `capacity` sections on every possible CPU.
    pub fn load(capacity: u32) -> Result<Self, AttachError> {
        preflight()?;
        let cpus =
            aya::util::nr_cpus().map_err(|(p, e)| AttachError::Cpus(format!("{p}: {e}")))? as u32;
        let capacity = capacity.max(1);
        let len = map_len(cpus, capacity).ok_or(AttachError::TooManySections {
            sections: capacity as usize,
            cpus,
        })?;
        let mut ebpf = EbpfLoader::new()
            .override_global(SECTION_CAPACITY_GLOBAL, &capacity, true)
            .map_max_entries(COUNTS_MAP, len)
            .load(EBPF_OBJECT)?;
        program(&mut ebpf)?.load()?;
        Ok(Tracer {
            ebpf,
            cpus,
            capacity,
            probes: 0,
        })
    }

    /// Attaches the probes of section `id` in the file at `path` (as mapped by `pid`). Every
    /// address passes the inside-a-section guard here, right before the kernel sees it.
    pub fn attach(
        &mut self,
        path: &Path,
        pid: u32,
        image: &ElfImage,
        id: u32,
        plan: &ProbePlan,
        all: &[CriticalSection],
    ) -> Result<(), AttachError> {
        let points = [(plan.entry, Event::Entry), (plan.abort, Event::Abort)]
            .into_iter()
            .chain(plan.cancels.iter().map(|a| (*a, Event::Cancel)));
        let scope = match NonZeroU32::new(pid) {
            Some(pid) => UProbeScope::OneProcess(pid),
            None => UProbeScope::AllProcesses,
        };
        for (addr, event) in points {
            check_outside(addr, all)?;
            let offset = image
                .file_offset(addr)
                .ok_or_else(|| AttachError::NotMapped {
                    addr,
                    path: path.to_owned(),
                })?;
            let point = UProbeAttachPoint {
                location: UProbeAttachLocation::AbsoluteOffset(offset),
                cookie: Some(Cookie::new(id, event).encode()),
            };
            program(&mut self.ebpf)?.attach(point, path, scope)?;
            self.probes += 1;
        }
        Ok(())
    }

    /// Number of probes attached so far.
    pub fn probes(&self) -> usize {
        self.probes
    }

    /// Reads every counter of the first `sections` sections.
    pub fn snapshot(&self, sections: u32) -> Result<Snapshot, AttachError> {
        let counts: Array<_, u64> = Array::try_from(
            self.ebpf
                .map(COUNTS_MAP)
                .ok_or(AttachError::Missing("COUNTS map"))?,
        )?;
        let mut snapshot = Snapshot::new(sections.min(self.capacity) as usize, self.cpus as usize);
        for (s, per_cpu) in snapshot.sections.iter_mut().enumerate() {
            for (cpu, tally) in per_cpu.iter_mut().enumerate() {
                let mut v = [0u64; Event::COUNT];
                for e in Event::ALL {
                    let i = counter_index(cpu as u32, s as u32, e, self.capacity)
                        .ok_or(AttachError::Missing("counter slot"))?;
                    v[e as usize] = counts.get(&i, 0)?;
                }
                *tally = Tally::from_events(v);
            }
        }
        let health: Array<_, u64> = Array::try_from(
            self.ebpf
                .map(HEALTH_MAP)
                .ok_or(AttachError::Missing("HEALTH map"))?,
        )?;
        for h in Health::ALL {
            snapshot.health[h as usize] = health.get(&(h as u32), 0)?;
        }
        Ok(snapshot)
    }
}

fn program(ebpf: &mut Ebpf) -> Result<&mut UProbe, AttachError> {
    Ok(ebpf
        .program_mut(PROGRAM)
        .ok_or(AttachError::Missing("rseq_event program"))?
        .try_into()?)
}

/// Turns the usual causes of a load failure into a message that says what to do.
fn preflight() -> Result<(), AttachError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(AttachError::NotRoot);
    }
    if !Path::new("/sys/bus/event_source/devices/uprobe").exists() {
        return Err(AttachError::NoUprobes);
    }
    Ok(())
}
