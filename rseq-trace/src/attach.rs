//! Loading the eBPF programs, attaching uprobes at a section's probe points, and reading the
//! maps back.

use std::{collections::BTreeMap, path::Path};

use aya::{
    maps::{Array, HashMap, MapData},
    programs::{
        uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeScope},
        RawTracePoint, UProbe,
    },
    Ebpf, EbpfLoader,
};
use rseq_common::{
    counters::{CountKey, Counters, COUNTS_MAP},
    health::{Health, HEALTH_MAP},
    mode::{Mode, MODE_GLOBAL},
    state::{DL_PENDING_MAP, TRACED_MAP},
    Cookie, Event,
};
use tracing::warn;

use crate::{
    counts::Snapshot,
    error::AttachError,
    probe_points::{check_outside, ProbePlan},
    table::{elf::ElfImage, CriticalSection},
};

/// The eBPF object built from `rseq-trace-ebpf` by build.rs.
pub(crate) static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/rseq-trace-ebpf"));
const UPROBE_PROGRAM: &str = "rseq_event";
const RESTART_PROGRAM: &str = "rseq_ip_fixup";
const DL_PROGRAM: &str = "rseq_dl_change";
/// The dynamic loader's hook for debuggers, called whenever its list of objects changes.
const DL_HOOK: &str = "_dl_debug_state";
/// Counter sets (process x section x CPU) the map can hold; allocated on demand.
const COUNTS_CAPACITY: u32 = 1 << 18;

/// The loaded eBPF programs and their maps. Dropping it detaches every probe.
pub struct Tracer {
    ebpf: Ebpf,
    probes: usize,
    pub mode: Mode,
    /// Whether the `rseq_ip_fixup` tracepoint is attached, so kernel restarts are counted.
    pub restarts_counted: bool,
}

impl Tracer {
    pub fn load(mode: Mode) -> Result<Self, AttachError> {
        preflight()?;
        let mut ebpf = EbpfLoader::new()
            .override_global(MODE_GLOBAL, &(mode as u8), true)
            .map_max_entries(COUNTS_MAP, COUNTS_CAPACITY)
            .load(EBPF_OBJECT)?;
        uprobe(&mut ebpf)?.load()?;
        dl_program(&mut ebpf)?.load()?;
        let restarts_counted = match attach_restart_tracepoint(&mut ebpf) {
            Ok(()) => true,
            Err(e) => {
                warn!("kernel restarts will not be counted: the rseq_ip_fixup tracepoint is unavailable ({e})");
                false
            }
        };
        Ok(Tracer {
            ebpf,
            probes: 0,
            mode,
            restarts_counted,
        })
    }

    /// Attaches the probes of section `id` in the file at `path`. Every address passes the
    /// inside-a-section guard here, right before the kernel sees it.
    pub fn attach(
        &mut self,
        path: &Path,
        scope: UProbeScope,
        image: &ElfImage,
        id: u32,
        plan: &ProbePlan,
        all: &[CriticalSection],
    ) -> Result<(), AttachError> {
        let entry = (self.mode == Mode::Exact).then_some((plan.entry, Event::Entry));
        let points = entry
            .into_iter()
            .chain([(plan.abort, Event::Abort)])
            .chain(plan.cancels.iter().map(|a| (*a, Event::Cancel)));
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
            uprobe(&mut self.ebpf)?.attach(point, path, scope)?;
            self.probes += 1;
        }
        Ok(())
    }

    /// Stops `pid` at every change of its loaded objects until [`Tracer::take_dl_pending`]
    /// reports it, so libraries it loads later are probed before they run. `loader` is the
    /// dynamic loader (ld.so) as mapped or named by the process.
    pub fn attach_dl_hook(&mut self, loader: &Path, pid: u32) -> Result<(), AttachError> {
        let pid = std::num::NonZeroU32::new(pid).ok_or(AttachError::Missing("pid"))?;
        dl_program(&mut self.ebpf)?.attach(DL_HOOK, loader, UProbeScope::OneProcess(pid))?;
        Ok(())
    }

    /// Processes stopped by the library hook since the last call; they are cleared from the map
    /// (the caller continues them).
    pub fn take_dl_pending(&mut self) -> Result<Vec<u32>, AttachError> {
        let mut pending: HashMap<_, u32, u8> = HashMap::try_from(
            self.ebpf
                .map_mut(DL_PENDING_MAP)
                .ok_or(AttachError::Missing("DL_PENDING map"))?,
        )?;
        let pids: Vec<u32> = pending.keys().filter_map(Result::ok).collect();
        for p in &pids {
            let _ = pending.remove(p);
        }
        Ok(pids)
    }

    /// Number of probes attached so far.
    pub fn probes(&self) -> usize {
        self.probes
    }

    /// Marks a process as traced, so the tracepoint counts its kernel restarts from the start.
    pub fn trace_process(&mut self, tgid: u32) -> Result<(), AttachError> {
        let mut traced: HashMap<_, u32, u8> = HashMap::try_from(
            self.ebpf
                .map_mut(TRACED_MAP)
                .ok_or(AttachError::Missing("TRACED map"))?,
        )?;
        traced.insert(tgid, 1, 0)?;
        Ok(())
    }

    /// Every counter, the health counters, and the processes the probes have seen.
    pub fn snapshot(&self) -> Result<Snapshot, AttachError> {
        let counts: HashMap<&MapData, CountKey, Counters> = HashMap::try_from(
            self.ebpf
                .map(COUNTS_MAP)
                .ok_or(AttachError::Missing("COUNTS map"))?,
        )?;
        let mut map = BTreeMap::new();
        for entry in counts.iter() {
            let (k, v) = entry?;
            map.insert(k, v);
        }
        let health_map: Array<_, u64> = Array::try_from(
            self.ebpf
                .map(HEALTH_MAP)
                .ok_or(AttachError::Missing("HEALTH map"))?,
        )?;
        let mut health = [0; Health::COUNT as usize];
        for h in Health::ALL {
            health[h as usize] = health_map.get(&(h as u32), 0)?;
        }
        let traced: HashMap<&MapData, u32, u8> = HashMap::try_from(
            self.ebpf
                .map(TRACED_MAP)
                .ok_or(AttachError::Missing("TRACED map"))?,
        )?;
        let processes = traced.keys().filter_map(Result::ok).collect();
        Ok(Snapshot {
            counts: map,
            health,
            processes,
        })
    }

    /// The processes the probes have seen (or that were registered), without reading counters.
    pub fn traced_processes(&self) -> Result<Vec<u32>, AttachError> {
        let traced: HashMap<&MapData, u32, u8> = HashMap::try_from(
            self.ebpf
                .map(TRACED_MAP)
                .ok_or(AttachError::Missing("TRACED map"))?,
        )?;
        Ok(traced.keys().filter_map(Result::ok).collect())
    }

    /// Drops a process that exited from the maps (its counts are kept by the caller).
    pub fn forget_process(&mut self, tgid: u32, keys: &[CountKey]) -> Result<(), AttachError> {
        let mut counts: HashMap<_, CountKey, Counters> = HashMap::try_from(
            self.ebpf
                .map_mut(COUNTS_MAP)
                .ok_or(AttachError::Missing("COUNTS map"))?,
        )?;
        for k in keys.iter().filter(|k| k.tgid == tgid) {
            let _ = counts.remove(k);
        }
        let mut traced: HashMap<_, u32, u8> = HashMap::try_from(
            self.ebpf
                .map_mut(TRACED_MAP)
                .ok_or(AttachError::Missing("TRACED map"))?,
        )?;
        let _ = traced.remove(&tgid);
        Ok(())
    }
}

fn uprobe(ebpf: &mut Ebpf) -> Result<&mut UProbe, AttachError> {
    Ok(ebpf
        .program_mut(UPROBE_PROGRAM)
        .ok_or(AttachError::Missing("rseq_event program"))?
        .try_into()?)
}

fn dl_program(ebpf: &mut Ebpf) -> Result<&mut UProbe, AttachError> {
    Ok(ebpf
        .program_mut(DL_PROGRAM)
        .ok_or(AttachError::Missing("rseq_dl_change program"))?
        .try_into()?)
}

fn attach_restart_tracepoint(ebpf: &mut Ebpf) -> Result<(), AttachError> {
    let program: &mut RawTracePoint = ebpf
        .program_mut(RESTART_PROGRAM)
        .ok_or(AttachError::Missing("rseq_ip_fixup program"))?
        .try_into()?;
    program.load()?;
    program.attach("rseq_ip_fixup")?;
    Ok(())
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
