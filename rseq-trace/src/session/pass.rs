//! One pass of the poll loop: release held processes, pick up new mappings, notice processes
//! that started or exited, then publish. An exited process's counter sets leave the maps only
//! after its final counts were published, so a reader that reads the maps first and the status
//! second always finds them in one place or the other (see [`crate::snapshot`]).

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use rseq_common::counters::CountKey;
use tracing::info;

use super::{procfs, Session, Status};
use crate::error::SessionError;

/// How often followed processes' mappings are re-read besides the loader hook.
const RESCAN_PERIOD: Duration = Duration::from_secs(1);
/// How often the traced-process map is walked for new and exited processes.
const PROCESS_SCAN_PERIOD: Duration = Duration::from_millis(250);

impl Session {
    /// A pass: follow the targets, hand the new status to `publish`, then drop the counter
    /// sets of processes whose final counts it carries.
    pub fn pass(&mut self, publish: impl FnOnce(Status)) -> Result<(), SessionError> {
        self.refresh()?;
        self.poll_gap.pass(Instant::now());
        publish(self.status());
        for (pid, keys) in std::mem::take(&mut self.to_forget) {
            self.tracer.maps.forget_process(pid, &keys);
        }
        Ok(())
    }

    /// The last pass, including the walk for new and exited processes: before a summary.
    pub fn final_pass(&mut self, publish: impl FnOnce(Status)) -> Result<(), SessionError> {
        self.last_process_scan = None;
        self.pass(publish)
    }

    /// Whether every process the session follows has exited and nothing system-wide is
    /// traced: then the counts are final.
    pub fn done(&self) -> bool {
        !self.open_ended && self.followed.iter().all(|p| !procfs::is_alive(*p))
    }

    /// What the views may know of the session now.
    pub fn status(&self) -> Status {
        Status {
            catalog: self.catalog.clone(),
            mode: self.tracer.mode,
            restarts_counted: self.tracer.restarts_counted,
            causes_counted: self.tracer.causes_counted,
            probes: self.tracer.probes(),
            processes: self.processes.clone(),
            exited: self.exited.clone(),
            finished: self.finished.clone(),
            sampling: self.sampling,
            moments: self.moments.clone(),
            windowed: self.windowed.clone(),
            poll_gap: self.poll_gap,
            done: self.done(),
        }
    }

    /// Follows changes of the targets: holds to release, new mappings of followed processes,
    /// and (every [`PROCESS_SCAN_PERIOD`]) processes that started or exited.
    fn refresh(&mut self) -> Result<(), SessionError> {
        self.release_dl_pending()?;
        // The loader hook catches dlopen and exec as they happen; this slower rescan is the
        // safety net for what it cannot see (a static executable exec'd, say).
        if self.last_rescan.elapsed() >= RESCAN_PERIOD {
            self.last_rescan = Instant::now();
            for pid in self.followed.clone() {
                if procfs::is_alive(pid) {
                    self.rescan(pid)?;
                }
            }
        }
        // New and exited processes need no 50 ms reaction (their counts wait in the maps):
        // walking the traced-process map less often keeps the idle agent cheap.
        if self
            .last_process_scan
            .is_some_and(|t| t.elapsed() < PROCESS_SCAN_PERIOD)
        {
            return Ok(());
        }
        self.last_process_scan = Some(Instant::now());
        let seen = self.tracer.maps.traced_processes();
        for pid in &seen {
            if !self.processes.contains_key(pid) {
                let comm = procfs::comm(*pid).unwrap_or_else(|| "?".to_owned());
                info!("tracing pid {pid} ({comm})");
                Arc::make_mut(&mut self.processes).insert(*pid, comm);
            }
        }
        let gone: Vec<u32> = seen
            .iter()
            .chain(&self.followed)
            .filter(|p| !self.exited.contains(p) && !procfs::is_alive(**p))
            .copied()
            .collect();
        if !gone.is_empty() {
            self.keep_final_counts(&gone)?;
        }
        Ok(())
    }

    /// Keeps the final counts of processes that exited, to publish before they leave the maps.
    fn keep_final_counts(&mut self, gone: &[u32]) -> Result<(), SessionError> {
        let counts = self.tracer.maps.counts()?;
        for &pid in gone {
            Arc::make_mut(&mut self.exited).insert(pid);
            let keys: Vec<CountKey> = counts.keys().filter(|k| k.tgid == pid).copied().collect();
            let finished = Arc::make_mut(&mut self.finished);
            for k in &keys {
                finished.insert(*k, counts[k]);
            }
            self.to_forget.push((pid, keys));
        }
        Ok(())
    }
}
