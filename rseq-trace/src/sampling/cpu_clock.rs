//! The traced processes' CPU time, what the budget is a share of.

use std::collections::BTreeMap;

use crate::session::procfs;

/// CPU time of the traced processes, read from /proc between calls.
#[derive(Default)]
pub(super) struct CpuClock {
    last: BTreeMap<u32, f64>,
}

impl CpuClock {
    /// CPU seconds the processes used since the last call (a process seen for the first time
    /// counts from now).
    pub(super) fn advance(&mut self, pids: &[u32]) -> f64 {
        let mut used = 0.0;
        let mut now = BTreeMap::new();
        for pid in pids {
            if let Some(t) = procfs::cpu_seconds(*pid) {
                used += self
                    .last
                    .get(pid)
                    .map_or(0.0, |before| (t - before).max(0.0));
                now.insert(*pid, t);
            }
        }
        self.last = now;
        used
    }
}
