//! Sampled mode's windows: when to attach the entry probes and for how long, so that what they
//! cost the traced threads stays within a budget (a percentage of those threads' CPU time).
//!
//! A token bucket: the traced threads' CPU time earns credit (budget x CPU seconds); a window
//! opens when the credit pays for at least [`MIN_WINDOW`] at the cost rate of the last windows
//! (probe hits x cost per hit, per second of window), and its cost is spent afterwards. Before
//! the first window nothing is known, so the worst case is assumed: every CPU second the traced
//! threads use during a window is probe cost.

pub mod estimate;

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde::Serialize;
use tracing::{debug, warn};

use crate::{
    bpf::{NOP_HIT_COST, TRAP_HIT_COST},
    session::Session,
    session::procfs,
};

/// Shortest window worth attaching the probes for.
pub const MIN_WINDOW: Duration = Duration::from_millis(5);
/// Longest window: a burst of probe cost is bounded even with saved-up credit.
pub const MAX_WINDOW: Duration = Duration::from_millis(50);
/// Between attaching a window's probes and counting.
const SETTLE: Duration = Duration::from_millis(2);
/// How often the budget is checked.
const CONTROL_PERIOD: Duration = Duration::from_millis(100);
/// Credit saved up beyond this many seconds of budget is dropped, so an idle period does not
/// pay for a long burst later.
const CREDIT_HORIZON_SECS: f64 = 10.0;

/// The token bucket.
#[derive(Clone, Debug)]
pub struct Budget {
    fraction: f64,
    /// CPU seconds the probes may still spend.
    credit: f64,
    /// Probe cost (CPU seconds) per second of window, from the windows so far.
    cost_rate: Option<f64>,
}

impl Budget {
    /// `percent` of the traced threads' CPU time may go to the probes.
    pub fn new(percent: f64) -> Self {
        Budget {
            fraction: percent / 100.0,
            credit: 0.0,
            cost_rate: None,
        }
    }

    /// The traced threads used `cpu_seconds` since the last call, at `cpu_rate` CPU seconds per
    /// second.
    pub fn earn(&mut self, cpu_seconds: f64, cpu_rate: f64) {
        let cap = self.fraction * cpu_rate.max(0.0) * CREDIT_HORIZON_SECS;
        self.credit = (self.credit + self.fraction * cpu_seconds.max(0.0)).min(cap.max(0.0));
    }

    /// The next window's length, or `None` while the credit does not pay for one.
    pub fn next_window(&self, cpu_rate: f64) -> Option<Duration> {
        let rate = self.cost_rate.unwrap_or(cpu_rate);
        if self.credit <= 0.0 {
            return None;
        }
        // Windows that cost nothing so far (no entry hit: the threads were idle, or slow to
        // reach a section) are as long as allowed: sampling must never stop for good.
        let len = if rate > 0.0 {
            (self.credit / rate).min(MAX_WINDOW.as_secs_f64())
        } else {
            MAX_WINDOW.as_secs_f64()
        };
        let len = Duration::from_secs_f64(len);
        (len >= MIN_WINDOW).then_some(len)
    }

    /// A window of `len` cost the traced threads `cost_seconds` of CPU.
    pub fn spend(&mut self, len: Duration, cost_seconds: f64) {
        self.credit -= cost_seconds;
        let rate = cost_seconds / len.as_secs_f64().max(1e-9);
        // Smoothed, but quick to learn that windows got more expensive.
        self.cost_rate = Some(match self.cost_rate {
            Some(old) if rate < old => 0.5 * old + 0.5 * rate,
            _ => rate,
        });
    }
}

/// What sampling did, for the summary and the metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct SamplingStats {
    /// The budget, in percent of the traced threads' CPU time.
    pub budget_percent: f64,
    pub windows: u64,
    /// Seconds the windows were open.
    pub window_seconds: f64,
    /// Estimated CPU seconds the entry probes cost the traced threads.
    pub probe_cost_seconds: f64,
    /// CPU seconds the traced threads used meanwhile.
    pub traced_cpu_seconds: f64,
}

/// CPU time of the traced processes, read from /proc between calls.
#[derive(Default)]
struct CpuClock {
    last: BTreeMap<u32, f64>,
}

impl CpuClock {
    /// CPU seconds the processes used since the last call (a process seen for the first time
    /// counts from now).
    fn advance(&mut self, pids: &[u32]) -> f64 {
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

/// Runs the windows until the task is dropped.
pub async fn run(shared: Arc<Mutex<Session>>, percent: f64) {
    let mut budget = Budget::new(percent);
    let mut clock = CpuClock::default();
    let mut cpu_rate = 0.0;
    let mut last = Instant::now();
    let mut tick = tokio::time::interval(CONTROL_PERIOD);
    let mut kinds_before = (0, 0);
    loop {
        tick.tick().await;
        let opened = {
            let Ok(mut engine) = shared.lock() else {
                return;
            };
            let used = clock.advance(&engine.live_processes());
            let secs = last.elapsed().as_secs_f64().max(1e-3);
            last = Instant::now();
            // Smoothed (clock ticks are coarse), but never below the latest reading, so the
            // worst case assumed before the first window is not an underestimate.
            cpu_rate = (0.8 * cpu_rate + 0.2 * used / secs).max(used / secs);
            budget.earn(used, cpu_rate);
            engine.sampling.budget_percent = percent;
            engine.sampling.traced_cpu_seconds += used;
            let points = engine.tracer_mut().sample_points();
            match budget.next_window(cpu_rate) {
                Some(len) if points > 0 => {
                    kinds_before = entries_by_kind(&engine);
                    let tracer = engine.tracer_mut();
                    let hits = tracer.window_hits().unwrap_or(0);
                    match tracer.open_window() {
                        Ok(_) => Some((len, hits, Instant::now())),
                        Err(e) => {
                            warn!("sampling window not opened: {e}");
                            None
                        }
                    }
                }
                _ => None,
            }
        };
        let Some((len, hits_before, opened_at)) = opened else {
            continue;
        };
        // Attaching rewrites the traced program's code pages (and the first hit of a nop probe
        // rewrites it again): a thread that faults on them inside a section aborts it. Those
        // aborts are the tracer's doing, not the program's, so the window counts after them.
        tokio::time::sleep(SETTLE).await;
        match shared.lock() {
            Ok(mut engine) => {
                if let Err(e) = engine.tracer_mut().open_gate() {
                    warn!("sampling window not opened: {e}");
                }
            }
            Err(_) => return,
        }
        tokio::time::sleep(len).await;
        let Some((probes, open)) = close(&shared, opened_at) else {
            return;
        };
        // Detaching waits for the kernel's grace period; the breakpoints are gone at its start.
        let detached = tokio::task::spawn_blocking(move || drop(probes)).await;
        let Ok(mut engine) = shared.lock() else {
            return;
        };
        // Every hit while attached counts as cost, the gate's too (the probes trap either way).
        let hits = engine
            .tracer_mut()
            .window_hits()
            .unwrap_or(0)
            .saturating_sub(hits_before);
        // Entries counted per kind of probe (marker nop or trap) weigh the hits by their cost.
        let (nops, traps) = entries_by_kind(&engine);
        let (nops, traps) = (
            nops.saturating_sub(kinds_before.0),
            traps.saturating_sub(kinds_before.1),
        );
        let trap_share = if nops + traps > 0 {
            traps as f64 / (nops + traps) as f64
        } else {
            1.0
        };
        let per_hit = trap_share * TRAP_HIT_COST.as_secs_f64()
            + (1.0 - trap_share) * NOP_HIT_COST.as_secs_f64();
        let cost = hits as f64 * per_hit;
        budget.spend(open, cost);
        debug!(
            "window {open:?}: {hits} entry hits, about {cost:.4} CPU s (detached: {})",
            detached.is_ok()
        );
        let stats = &mut engine.sampling;
        stats.windows += 1;
        stats.window_seconds += open.as_secs_f64();
        stats.probe_cost_seconds += cost;
    }
}

/// Sampled entries so far on marker nops and on trapping instructions.
fn entries_by_kind(engine: &Session) -> (u64, u64) {
    let Ok(snapshot) = engine.snapshot() else {
        return (0, 0);
    };
    let on_markers = |section: u32| {
        engine
            .sections
            .get(section as usize)
            .and_then(|s| s.plan.as_ref().ok())
            .is_some_and(|p| p.on_markers)
    };
    let by_kind = snapshot.group_by(|k| Some(on_markers(k.section)));
    let entries = |kind| by_kind.get(&kind).map_or(0, |t| t.entries);
    (entries(true), entries(false))
}

/// Closes the window: its probes (to drop without the lock) and how long it was open.
#[allow(clippy::type_complexity)]
fn close(
    shared: &Mutex<Session>,
    opened_at: Instant,
) -> Option<(Option<crate::bpf::DetachOnDrop>, Duration)> {
    let mut engine = shared.lock().ok()?;
    let probes = match engine.tracer_mut().close_window() {
        Ok(p) => p,
        Err(e) => {
            warn!("sampling window not closed cleanly: {e}");
            None
        }
    };
    Some((probes, opened_at.elapsed()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_window_assumes_the_worst() {
        // Two busy threads, 1% budget: after 1 s, 20 ms of credit at a cost rate of 2 CPU s/s.
        let mut b = Budget::new(1.0);
        b.earn(2.0, 2.0);
        assert_eq!(b.next_window(2.0), Some(Duration::from_millis(10)));
    }

    #[test]
    fn no_window_before_the_credit_pays_for_one() {
        let mut b = Budget::new(1.0);
        b.earn(0.2, 2.0);
        assert_eq!(b.next_window(2.0), None);
        assert_eq!(Budget::new(1.0).next_window(0.0), None);
    }

    #[test]
    fn spending_over_budget_waits_and_cheap_windows_grow() {
        let mut b = Budget::new(1.0);
        b.earn(2.0, 2.0);
        // That window cost 0.04 s: twice the credit; the next needs 2 s more of earning.
        b.spend(Duration::from_millis(10), 0.04);
        b.earn(2.0, 2.0);
        assert_eq!(b.next_window(2.0), None);
        b.earn(2.0, 2.0);
        assert!(b.next_window(2.0).is_some());
        // Windows that cost little get long, up to the cap.
        let mut cheap = Budget::new(1.0);
        cheap.earn(2.0, 2.0);
        cheap.spend(Duration::from_millis(10), 0.0001);
        cheap.earn(20.0, 2.0);
        assert_eq!(cheap.next_window(2.0), Some(MAX_WINDOW));
    }

    #[test]
    fn a_window_without_hits_does_not_stop_sampling() {
        let mut b = Budget::new(1.0);
        b.earn(1.0, 1.0);
        let len = b.next_window(1.0).expect("a first window");
        b.spend(len, 0.0);
        b.earn(0.1, 1.0);
        assert_eq!(b.next_window(1.0), Some(MAX_WINDOW));
    }

    #[test]
    fn credit_does_not_pile_up() {
        let mut b = Budget::new(1.0);
        for _ in 0..1000 {
            b.earn(2.0, 2.0);
        }
        assert!(b.credit <= 0.01 * 2.0 * CREDIT_HORIZON_SECS + 1e-9);
    }
}
