//! Loading the eBPF programs, attaching uprobes at a section's probe points, and reading the
//! maps back.

#[cfg(test)]
mod ebpf_frames;
pub mod kernel_features;
pub mod multi_link;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::Duration,
};

use aya::{
    maps::{Array, HashMap, MapData},
    programs::{
        uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeLink, UProbeScope},
        RawTracePoint, UProbe,
    },
    Ebpf, EbpfLoader,
};
use rseq_common::{
    cause::UPDATE_BEFORE_FIXUP_GLOBAL,
    cause::{PositionKey, POSITIONS_MAP},
    counters::{CountKey, Counters, COUNTS_MAP},
    health::{Health, HEALTH_MAP},
    mode::{Mode, MODE_GLOBAL},
    state::{DL_PENDING_MAP, HEARTBEAT_MAP, TRACED_MAP},
    window::{Slot, WINDOW_MAP},
    Cookie, Event,
};
use tracing::{debug, warn};

use crate::{
    snapshot::counts::Snapshot,
    error::AttachError,
    bpf::multi_link::{MultiLink, MultiProgram},
    catalog::probe_plan::{Guard, ProbePlan},
    elf::{image::ElfImage, CriticalSection},
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

/// Probes of one file in one scope, attached together as one multi link.
struct ProbeGroup {
    path: PathBuf,
    scope: UProbeScope,
    offsets: Vec<u64>,
    cookies: Vec<u64>,
}

/// Attached probes of one group.
enum Links {
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
    _links: Vec<Links>,
}

/// What one entry probe hit costs the traced thread, at most (REFERENCE §3: 9.5 to 10.5 µs for
/// a trap and single step, about 0.5 µs for an optimized nop, on a 2-vCPU VM); sampled mode
/// budgets with these, so it errs on the cheap side of the budget on faster machines.
pub const TRAP_HIT_COST: Duration = Duration::from_micros(10);
pub const NOP_HIT_COST: Duration = Duration::from_micros(1);

/// The loaded eBPF programs and their maps. Dropping it detaches every probe.
pub struct Tracer {
    ebpf: Ebpf,
    probes: usize,
    pub mode: Mode,
    /// The uprobe program loaded for multi links; `None` on kernels without them.
    multi: Option<MultiProgram>,
    /// Probes attached for the whole session.
    links: Vec<Links>,
    /// Sampled mode: the entry probes, attached only for windows.
    sample_groups: Vec<ProbeGroup>,
    /// The entry probes while a window is open.
    window: Option<DetachOnDrop>,
    /// Whether the `rseq_ip_fixup` tracepoint is attached, so kernel restarts are counted.
    pub restarts_counted: bool,
    /// Whether the scheduler and signal tracepoints are attached, so restarts have causes.
    pub causes_counted: bool,
}

impl Tracer {
    pub fn load(mode: Mode) -> Result<Self, AttachError> {
        preflight()?;
        if crate::bpf::kernel_features::emulated_by_qemu_tcg_smp() {
            warn!("this machine is QEMU's TCG emulator with several CPUs: in its multi-threaded mode, uprobes on different instructions can crash the traced program (a QEMU fault, docs/kernels.md); run QEMU with -accel tcg,thread=single, or KVM");
        }
        let mut ebpf = EbpfLoader::new()
            .override_global(MODE_GLOBAL, &(mode as u8), true)
            .override_global(
                UPDATE_BEFORE_FIXUP_GLOBAL,
                &(crate::bpf::kernel_features::rseq_update_before_fixup() as u8),
                true,
            )
            .map_max_entries(COUNTS_MAP, COUNTS_CAPACITY)
            .load(EBPF_OBJECT)?;
        uprobe(&mut ebpf)?.load()?;
        dl_program(&mut ebpf)?.load()?;
        let multi = match MultiProgram::load(&ebpf, EBPF_OBJECT, UPROBE_PROGRAM) {
            Ok(m) => Some(m),
            Err(e) => {
                warn!("one uprobe link per probe (slow to detach): {e}");
                None
            }
        };
        let restarts_counted = match attach_restart_tracepoint(&mut ebpf) {
            Ok(()) => true,
            Err(e) => {
                warn!("kernel restarts will not be counted: the rseq_ip_fixup tracepoint is unavailable ({e})");
                false
            }
        };
        let causes_counted = restarts_counted
            && match attach_cause_tracepoints(&mut ebpf) {
                Ok(()) => true,
                Err(e) => {
                    warn!("kernel restarts will all have cause `other`: the scheduler and signal tracepoints are unavailable ({e})");
                    false
                }
            };
        Ok(Tracer {
            ebpf,
            causes_counted,
            probes: 0,
            mode,
            multi,
            links: Vec::new(),
            sample_groups: Vec::new(),
            window: None,
            restarts_counted,
        })
    }

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
                let to = if self.mode == Mode::Sampled && event == Event::Entry {
                    &mut sampled
                } else {
                    &mut always
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
        Ok(())
    }

    fn attach_group(&mut self, g: &ProbeGroup) -> Result<Links, AttachError> {
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

    /// Sampled mode: attaches every entry probe; [`Tracer::open_gate`] then starts counting, so
    /// that entries, aborts and cancels are counted over the same time. Returns the number of entry probes attached;
    /// groups whose process or file is gone are dropped.
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
        self.set_window(Slot::Open, 1)
    }

    /// Sampled mode: closes the gate and hands back the entry probes, detached when dropped.
    pub fn close_window(&mut self) -> Result<Option<DetachOnDrop>, AttachError> {
        self.set_window(Slot::Open, 0)?;
        Ok(self.window.take())
    }

    /// Entry probe hits let through by open windows so far (all sections): what they cost.
    pub fn window_hits(&self) -> Result<u64, AttachError> {
        let window: Array<&MapData, u64> = Array::try_from(
            self.ebpf
                .map(WINDOW_MAP)
                .ok_or(AttachError::Missing("WINDOW map"))?,
        )?;
        Ok(window.get(&(Slot::Hits as u32), 0)?)
    }

    /// Number of entry probes sampled mode attaches per window.
    pub fn sample_points(&self) -> usize {
        self.sample_groups.iter().map(|g| g.offsets.len()).sum()
    }

    fn set_window(&mut self, slot: Slot, value: u64) -> Result<(), AttachError> {
        let mut window: Array<_, u64> = Array::try_from(
            self.ebpf
                .map_mut(WINDOW_MAP)
                .ok_or(AttachError::Missing("WINDOW map"))?,
        )?;
        window.set(slot as u32, value, 0)?;
        Ok(())
    }

    /// Stops `pid` at every change of its loaded objects until [`Tracer::take_dl_pending`]
    /// reports it, so libraries it loads later are probed before they run. `loader` is the
    /// dynamic loader (ld.so) as mapped or named by the process.
    pub fn attach_dl_hook(&mut self, loader: &Path, pid: u32) -> Result<(), AttachError> {
        let pid = std::num::NonZeroU32::new(pid).ok_or(AttachError::Missing("pid"))?;
        // Fresh before the hook can fire, or the first loads would not be held.
        self.heartbeat()?;
        dl_program(&mut self.ebpf)?.attach(DL_HOOK, loader, UProbeScope::OneProcess(pid))?;
        Ok(())
    }

    /// Tells the eBPF side (and the hold watchdog) that the loop that releases holds is alive.
    pub fn heartbeat(&mut self) -> Result<(), AttachError> {
        let mut beat: Array<_, u64> = Array::try_from(
            self.ebpf
                .map_mut(HEARTBEAT_MAP)
                .ok_or(AttachError::Missing("HEARTBEAT map"))?,
        )?;
        beat.set(0, crate::session::hold_watchdog::monotonic_ns(), 0)?;
        Ok(())
    }

    /// The kernel's ids of the maps the hold watchdog needs: (DL_PENDING, HEARTBEAT).
    pub fn hold_map_ids(&self) -> Result<(u32, u32), AttachError> {
        let id = |name: &'static str| -> Result<u32, AttachError> {
            match self.ebpf.map(name) {
                Some(aya::maps::Map::HashMap(d) | aya::maps::Map::Array(d)) => Ok(d.info()?.id()),
                _ => Err(AttachError::Missing(name)),
            }
        };
        Ok((id(DL_PENDING_MAP)?, id(HEARTBEAT_MAP)?))
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
        let positions: HashMap<&MapData, PositionKey, u64> = HashMap::try_from(
            self.ebpf
                .map(POSITIONS_MAP)
                .ok_or(AttachError::Missing("POSITIONS map"))?,
        )?;
        let positions = positions.iter().filter_map(Result::ok).collect();
        Ok(Snapshot {
            counts: map,
            health,
            processes,
            positions,
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
    attach_raw_tracepoint(ebpf, RESTART_PROGRAM, "rseq_ip_fixup")
}

/// The tracepoints that tell restart causes apart: (program, tracepoint).
const CAUSE_TRACEPOINTS: [(&str, &str); 3] = [
    ("rseq_update", "rseq_update"),
    ("rseq_sched_switch", "sched_switch"),
    ("rseq_signal_deliver", "signal_deliver"),
];

fn attach_cause_tracepoints(ebpf: &mut Ebpf) -> Result<(), AttachError> {
    for (program, tracepoint) in CAUSE_TRACEPOINTS {
        attach_raw_tracepoint(ebpf, program, tracepoint)?;
    }
    Ok(())
}

fn attach_raw_tracepoint(
    ebpf: &mut Ebpf,
    program: &'static str,
    tracepoint: &str,
) -> Result<(), AttachError> {
    let program: &mut RawTracePoint = ebpf
        .program_mut(program)
        .ok_or(AttachError::Missing(program))?
        .try_into()?;
    program.load()?;
    program.attach(tracepoint)?;
    Ok(())
}

/// Turns the usual causes of a load failure into a message that says what to do.
fn preflight() -> Result<(), AttachError> {
    if !rustix::process::geteuid().is_root() {
        return Err(AttachError::NotRoot);
    }
    if !Path::new("/sys/bus/event_source/devices/uprobe").exists() {
        return Err(AttachError::NoUprobes);
    }
    if let Some(missing) = crate::bpf::kernel_features::first_missing() {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map_or_else(|_| "unknown release".to_owned(), |s| s.trim().to_owned());
        return Err(AttachError::KernelTooOld {
            release,
            what: missing.what(),
            since: missing.since(),
        });
    }
    Ok(())
}
