//! The hold watchdog. The library hook stops a traced process (SIGSTOP) at each change of its
//! loaded objects until the agent has probed them; if the agent then dies (SIGKILL, the OOM
//! killer, a crash) or stops answering (frozen, overloaded), nothing would ever continue it. So
//! a process of its own, this binary run again, watches the agent: once the agent is gone, or
//! its heartbeat is older than [`HOLD_FRESH_NS`] (when the eBPF side also stops holding), it
//! continues every process the hook stopped, and exits once the agent is gone and its
//! heartbeat stale, when no new hold can be made. It holds no probe and no program, only the
//! two maps, opened by id, so it never keeps a probe attached.
//!
//! It continues only processes the hook stopped (those in `DL_PENDING`): a process stopped by
//! its user or a debugger is never continued.

use std::{
    io,
    process::{Child, Command, Stdio},
    time::Duration,
};

use aya::maps::{Array, HashMap, Map, MapData, MapError};
use rseq_common::state::HOLD_FRESH_NS;

/// The hidden subcommand the watchdog runs as.
pub const SUBCOMMAND: &str = "hold-watchdog";
/// How often it looks.
const PERIOD: Duration = Duration::from_millis(50);

/// `CLOCK_MONOTONIC` in nanoseconds: the clock of `bpf_ktime_get_ns`.
pub fn monotonic_ns() -> u64 {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

/// Starts the watchdog of this agent, given the ids of the loader-stop and heartbeat maps.
pub fn spawn(pending_map: u32, heartbeat_map: u32) -> io::Result<Child> {
    Command::new("/proc/self/exe")
        .args([
            SUBCOMMAND.to_owned(),
            std::process::id().to_string(),
            pending_map.to_string(),
            heartbeat_map.to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
}

/// The watchdog's loop: returns once agent `agent` is gone, its heartbeat stale and every hold
/// released.
pub fn run(agent: u32, pending_map: u32, heartbeat_map: u32) -> Result<(), MapError> {
    let mut pending: HashMap<MapData, u32, u8> =
        HashMap::try_from(Map::HashMap(MapData::from_id(pending_map)?))?;
    let heartbeat: Array<MapData, u64> =
        Array::try_from(Map::Array(MapData::from_id(heartbeat_map)?))?;
    loop {
        // Reparented: the agent is gone.
        let gone =
            rustix::process::getppid().is_none_or(|p| p.as_raw_nonzero().get() as u32 != agent);
        let stale = heartbeat.get(&0, 0).map_or(true, |beat| {
            monotonic_ns().saturating_sub(beat) >= HOLD_FRESH_NS
        });
        if gone || stale {
            let held: Vec<u32> = pending.keys().filter_map(Result::ok).collect();
            for pid in held {
                // Out of the map first: the agent, if it wakes up, will not continue it twice.
                if pending.remove(&pid).is_ok() {
                    tracing::warn!(
                        "continuing pid {pid}, held at a library load: the agent is {}",
                        if gone { "gone" } else { "not responding" }
                    );
                    // Only a process the hook stopped (a vanished one needs nothing).
                    let _ = crate::session::procfs::send_signal(pid, rustix::process::Signal::CONT);
                }
            }
        }
        // Gone is not enough to stop watching: the first of the agent's threads to exit
        // reparents this process while the others may still hold the loader hook's link open,
        // and the process just continued may reach the loader's next change in that gap. Only
        // once the heartbeat is stale too can no new hold be made (the hook holds only while it
        // is fresh), so the sweep just done was the last one needed.
        if gone && stale {
            return Ok(());
        }
        std::thread::sleep(PERIOD);
    }
}
