//! Per-thread state the eBPF side keeps between probes.

/// Name of the open-attempt LRU hash map: (tid, section) -> CPU the attempt entered on.
///
/// Keyed by (thread, section) rather than by thread alone, so that a section entered by a signal
/// handler while another section's abort is pending does not overwrite the interrupted one.
pub const OPEN_MAP: &str = "OPEN";
/// Capacity of the open-attempt map. Committed attempts are never closed explicitly (commits are
/// not probed), so stale keys accumulate up to threads x sections; LRU eviction drops those first.
pub const OPEN_MAP_CAPACITY: u32 = 1 << 16;

/// Key of the open-attempt map.
#[inline(always)]
pub const fn open_key(tid: u32, section: u32) -> u64 {
    ((tid as u64) << 32) | section as u64
}

/// Name of the pending-restart LRU map: tid -> [`crate::cause::Restart`] (where the kernel
/// just sent the thread, where it interrupted it, and why).
/// Set by the `rseq_ip_fixup` raw tracepoint, consumed by the abort probe that runs next.
pub const RESTART_MAP: &str = "RESTART";
pub const RESTART_MAP_CAPACITY: u32 = 1 << 14;

/// Name of the traced-process map: tgid -> 1. The agent fills it for `--pid` targets; entry
/// probes add processes they see (system-wide `--binary` tracing), which is how the agent
/// learns of processes started after it.
pub const TRACED_MAP: &str = "TRACED";
pub const TRACED_MAP_CAPACITY: u32 = 1 << 14;

/// Name of the map of processes stopped at a library-list change: tgid -> 1. The uprobe on the
/// dynamic loader's `_dl_debug_state` sets it and stops the process (SIGSTOP) before any code
/// of a newly mapped library runs; the agent attaches to the new objects, clears it and sends
/// SIGCONT. That is what makes counts exact for libraries loaded with dlopen.
pub const DL_PENDING_MAP: &str = "DL_PENDING";
/// Capacity of the loader-stop map: processes stopped at the same moment. Small on purpose: the
/// agent walks it every poll, and a hash map walk visits every bucket.
pub const DL_PENDING_CAPACITY: u32 = 1 << 10;

/// Name of the agent's heartbeat (a one-entry array): `CLOCK_MONOTONIC` nanoseconds, the clock
/// of `bpf_ktime_get_ns`, written by the agent's poll loop, the loop that releases holds.
pub const HEARTBEAT_MAP: &str = "HEARTBEAT";
/// A process is held at a library load only while the heartbeat is younger than this, and the
/// hold watchdog (a process of its own, which outlives the agent) continues every held process
/// once it is older, or once the agent is gone: no hold lasts much longer, whatever happens to
/// the agent.
pub const HOLD_FRESH_NS: u64 = 500_000_000;
