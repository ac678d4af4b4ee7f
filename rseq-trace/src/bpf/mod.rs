//! The eBPF side: loading the programs (after checking what the kernel offers), attaching the
//! uprobes and tracepoints, and the maps they count in.

pub mod calibrate;
#[cfg(test)]
mod ebpf_frames;
pub mod exits;
pub mod kernel_features;
mod links;
pub mod maps;
pub mod multi_link;

pub use links::DetachOnDrop;

use std::path::Path;

use aya::{
    programs::{uprobe::UProbeScope, RawTracePoint, UProbe},
    Ebpf, EbpfLoader,
};
use rseq_common::{
    cause::UPDATE_BEFORE_FIXUP_GLOBAL,
    counters::COUNTS_MAP,
    mode::{Mode, MODE_GLOBAL},
};
use tracing::warn;

use self::{
    maps::{MapIds, Maps},
    multi_link::MultiProgram,
};
use crate::error::AttachError;

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
    /// What the programs count: exact, aborts only, or sampled.
    pub mode: Mode,
    /// The uprobe program loaded for multi links; `None` on kernels without them.
    multi: Option<MultiProgram>,
    /// Probes attached for the whole session.
    links: Vec<links::Links>,
    /// The maps, to write and read.
    pub maps: Maps,
    /// Their ids, for readers of their own.
    pub map_ids: MapIds,
    /// Sampled mode: the entry probes (and the cancel probes moved there), attached only for
    /// windows.
    sample_groups: Vec<links::ProbeGroup>,
    /// Sampled mode: the abort and cancel probes, per file and kind.
    exit_groups: Vec<exits::ExitGroup>,
    /// The entry probes while a window is open.
    window: Option<DetachOnDrop>,
    /// Whether the `rseq_ip_fixup` tracepoint is attached, so kernel restarts are counted.
    pub restarts_counted: bool,
    /// Whether the scheduler and signal tracepoints are attached, so restarts have causes.
    pub causes_counted: bool,
}

impl Tracer {
    /// Loads the programs for `mode` and attaches the tracepoints; uprobes come later, per file.
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
        let map_ids = MapIds::of(&ebpf)?;
        let maps = Maps::open(map_ids)?;
        Ok(Tracer {
            maps,
            map_ids,
            ebpf,
            causes_counted,
            probes: 0,
            mode,
            multi,
            links: Vec::new(),
            sample_groups: Vec::new(),
            exit_groups: Vec::new(),
            window: None,
            restarts_counted,
        })
    }

    /// Stops `pid` at every change of its loaded objects until [`Tracer::take_dl_pending`]
    /// reports it, so libraries it loads later are probed before they run. `loader` is the
    /// dynamic loader (ld.so) as mapped or named by the process.
    pub fn attach_dl_hook(&mut self, loader: &Path, pid: u32) -> Result<(), AttachError> {
        let pid = std::num::NonZeroU32::new(pid).ok_or(AttachError::Missing("pid"))?;
        // Fresh before the hook can fire, or the first loads would not be held.
        self.maps.heartbeat()?;
        dl_program(&mut self.ebpf)?.attach(DL_HOOK, loader, UProbeScope::OneProcess(pid))?;
        Ok(())
    }

    /// Number of probes attached so far.
    pub fn probes(&self) -> usize {
        self.probes
    }
}

pub(crate) fn uprobe(ebpf: &mut Ebpf) -> Result<&mut UProbe, AttachError> {
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
