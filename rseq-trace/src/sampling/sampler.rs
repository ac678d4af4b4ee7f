//! Sampled mode's windows, stepped by the session's poll loop: every [`CONTROL_PERIOD`] the
//! budget earns the traced threads' CPU time; when it pays for a window the entry probes are
//! attached, counted after [`SETTLE`], closed after the window, and detached on a thread of
//! their own (detaching waits for the kernel's uprobe grace period), after which the window's
//! probe hits are spent from the budget.

use std::{
    thread::JoinHandle,
    time::{Duration, Instant},
};

use tracing::{debug, warn};

use super::{cpu_clock::CpuClock, Budget, CONTROL_PERIOD, SETTLE};
use crate::{
    bpf::{DetachOnDrop, NOP_HIT_COST, TRAP_HIT_COST},
    session::Session,
};

/// How often a detaching window is looked at.
const DETACH_CHECK: Duration = Duration::from_millis(2);

/// Where the current window is.
enum Phase {
    /// No window: the next budget check at `next`.
    Idle { next: Instant },
    /// Probes attached, gate still closed until `gate_at` (the attach's own faults pass).
    Settling { window: Window, gate_at: Instant },
    /// Counting until `close_at`.
    Open { window: Window, close_at: Instant },
    /// Gate closed; the probes are being detached.
    Detaching {
        window: Window,
        open: Duration,
        detach: JoinHandle<()>,
    },
}

/// One window's bookkeeping.
struct Window {
    len: Duration,
    opened_at: Instant,
    hits_before: u64,
    /// Sampled entries so far on (marker nops, trapping instructions).
    kinds_before: (u64, u64),
}

/// The windows' controller.
pub struct Sampler {
    percent: f64,
    budget: Budget,
    clock: CpuClock,
    cpu_rate: f64,
    last: Instant,
    phase: Option<Phase>,
}

impl Sampler {
    /// `percent` of the traced threads' CPU time may go to the entry probes.
    pub fn new(percent: f64) -> Self {
        Sampler {
            percent,
            budget: Budget::new(percent),
            clock: CpuClock::default(),
            cpu_rate: 0.0,
            last: Instant::now(),
            phase: Some(Phase::Idle {
                next: Instant::now() + CONTROL_PERIOD,
            }),
        }
    }

    /// Does what is due at `now`; returns when it next needs a step.
    pub fn step(&mut self, session: &mut Session, now: Instant) -> Instant {
        let phase = self.phase.take().unwrap_or(Phase::Idle { next: now });
        let phase = match phase {
            Phase::Idle { next } if now >= next => self.control(session, now),
            Phase::Settling { window, gate_at } if now >= gate_at => {
                if let Err(e) = session.tracer_mut().open_gate() {
                    warn!("sampling window not opened: {e}");
                }
                let close_at = Instant::now() + window.len;
                Phase::Open { window, close_at }
            }
            Phase::Open { window, close_at } if now >= close_at => close(session, window),
            Phase::Detaching {
                window,
                open,
                detach,
            } if detach.is_finished() => {
                let _ = detach.join();
                self.account(session, &window, open);
                Phase::Idle {
                    next: (window.opened_at + CONTROL_PERIOD).max(now),
                }
            }
            other => other,
        };
        let wake = match &phase {
            Phase::Idle { next } => *next,
            Phase::Settling { gate_at, .. } => *gate_at,
            Phase::Open { close_at, .. } => *close_at,
            Phase::Detaching { .. } => now + DETACH_CHECK,
        };
        self.phase = Some(phase);
        wake
    }

    /// Ends the current window, if any, before the session's last pass.
    pub fn stop(&mut self, session: &mut Session) {
        match self.phase.take() {
            Some(Phase::Settling { window, .. } | Phase::Open { window, .. }) => {
                if let Phase::Detaching { detach, .. } = close(session, window) {
                    let _ = detach.join();
                }
            }
            Some(Phase::Detaching { detach, .. }) => {
                let _ = detach.join();
            }
            _ => {}
        }
    }

    /// The budget check: earn the CPU time used, open a window if the credit pays for one.
    fn control(&mut self, session: &mut Session, now: Instant) -> Phase {
        let idle = Phase::Idle {
            next: now + CONTROL_PERIOD,
        };
        let used = self.clock.advance(&session.live_processes());
        let secs = self.last.elapsed().as_secs_f64().max(1e-3);
        self.last = now;
        // Smoothed (clock ticks are coarse), but never below the latest reading, so the
        // worst case assumed before the first window is not an underestimate.
        self.cpu_rate = (0.8 * self.cpu_rate + 0.2 * used / secs).max(used / secs);
        self.budget.earn(used, self.cpu_rate);
        session.sampling.budget_percent = self.percent;
        session.sampling.traced_cpu_seconds += used;
        let Some(len) = self.budget.next_window(self.cpu_rate) else {
            return idle;
        };
        if session.tracer_mut().sample_points() == 0 {
            return idle;
        }
        let kinds_before = entries_by_kind(session);
        let tracer = session.tracer_mut();
        let hits_before = tracer.maps.window_hits().unwrap_or(0);
        // Attaching rewrites the traced program's code pages (and the first hit of a nop probe
        // rewrites it again): a thread that faults on them inside a section aborts it. Those
        // aborts are the tracer's doing, not the program's, so the window counts after them.
        match tracer.open_window() {
            Ok(_) => Phase::Settling {
                window: Window {
                    len,
                    opened_at: Instant::now(),
                    hits_before,
                    kinds_before,
                },
                gate_at: Instant::now() + SETTLE,
            },
            Err(e) => {
                warn!("sampling window not opened: {e}");
                idle
            }
        }
    }

    /// A window's probes are detached: spend what its hits cost.
    fn account(&mut self, session: &mut Session, window: &Window, open: Duration) {
        // Every hit while attached counts as cost, the gate's too (the probes trap either way).
        let hits = session
            .tracer_mut()
            .maps
            .window_hits()
            .unwrap_or(0)
            .saturating_sub(window.hits_before);
        // Entries counted per kind of probe (marker nop or trap) weigh the hits by their cost.
        let (nops, traps) = entries_by_kind(session);
        let nops = nops.saturating_sub(window.kinds_before.0);
        let traps = traps.saturating_sub(window.kinds_before.1);
        let trap_share = if nops + traps > 0 {
            traps as f64 / (nops + traps) as f64
        } else {
            1.0
        };
        let per_hit = trap_share * TRAP_HIT_COST.as_secs_f64()
            + (1.0 - trap_share) * NOP_HIT_COST.as_secs_f64();
        let cost = hits as f64 * per_hit;
        self.budget.spend(open, cost);
        debug!("window {open:?}: {hits} entry hits, about {cost:.4} CPU s");
        let stats = &mut session.sampling;
        stats.windows += 1;
        stats.window_seconds += open.as_secs_f64();
        stats.probe_cost_seconds += cost;
    }
}

/// Closes the gate and detaches the window's probes on a thread of their own.
fn close(session: &mut Session, window: Window) -> Phase {
    let probes: Option<DetachOnDrop> = match session.tracer_mut().close_window() {
        Ok(p) => p,
        Err(e) => {
            warn!("sampling window not closed cleanly: {e}");
            None
        }
    };
    let open = window.opened_at.elapsed();
    let detach = std::thread::spawn(move || drop(probes));
    Phase::Detaching {
        window,
        open,
        detach,
    }
}

/// Sampled entries so far on marker nops and on trapping instructions.
fn entries_by_kind(session: &mut Session) -> (u64, u64) {
    let Ok(counts) = session.tracer_mut().maps.counts() else {
        return (0, 0);
    };
    let catalog = session.catalog();
    let (mut nops, mut traps) = (0, 0);
    for (k, c) in &counts {
        let on_markers = catalog
            .section(k.section)
            .and_then(|s| s.plan.as_ref().ok())
            .is_some_and(|p| p.on_markers);
        let entries = c.get(rseq_common::counters::Counter::Entries);
        if on_markers {
            nops += entries;
        } else {
            traps += entries;
        }
    }
    (nops, traps)
}
