//! Sampled mode's windows, stepped by the session's poll loop: every [`CONTROL_PERIOD`] the
//! budget earns the traced threads' CPU time; when it pays for a window the entry probes are
//! attached, counted after [`SETTLE`], closed after the window, and detached on a thread of
//! their own (detaching waits for the kernel's uprobe grace period), after which the window's
//! probe hits are spent from the budget.

use std::{
    collections::BTreeMap,
    sync::Arc,
    thread::JoinHandle,
    time::{Duration, Instant},
};

use rseq_common::counters::Counter;

use tracing::{debug, warn};

use super::{
    cpu_clock::CpuClock,
    exit_cost::{self, ExitCost},
    Budget, SamplingOptions, CONTROL_PERIOD, SETTLE,
};
use crate::{
    bpf::{calibrate::HitCosts, exits::ExitKind, DetachOnDrop},
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
    /// When its probes were attached (attaching waits for a grace period before the
    /// breakpoints go in, so not before).
    opened_at: Instant,
    hits_before: u64,
    /// Entry hits when it closed (the probes go on being hit until detached).
    hits_at_close: u64,
    /// The counters when the window opened.
    before: Reading,
}

/// What the windows' counters held at one moment.
#[derive(Default)]
struct Reading {
    /// Sampled entries so far on marker nops and on trapping instructions.
    nops: u64,
    traps: u64,
    /// Per key, sampled entries and window aborts so far.
    by_key: BTreeMap<String, (u64, u64)>,
    /// CPU seconds the aborts and cancels of sections counted in windows only have cost so far.
    windowed_exit_cost: f64,
}

/// The windows' controller.
pub struct Sampler {
    percent: f64,
    /// `--exact-exits`: the abort and cancel probes stay attached, outside the budget.
    exact_exits: bool,
    /// What a probe hit costs here, by kind.
    costs: HitCosts,
    budget: Budget,
    clock: CpuClock,
    cpu_rate: f64,
    last: Instant,
    phase: Option<Phase>,
    /// The cancel probes attached for the whole session, and what they cost.
    exits: ExitCost,
}

impl Sampler {
    /// The windows may cost the traced threads what `options` says, each hit costing what
    /// `costs` says.
    pub fn new(options: SamplingOptions, costs: HitCosts) -> Self {
        let percent = options.budget_percent;
        Sampler {
            percent,
            exact_exits: options.exact_exits,
            costs,
            budget: Budget::new(percent),
            clock: CpuClock::default(),
            cpu_rate: 0.0,
            last: Instant::now(),
            phase: Some(Phase::Idle {
                next: Instant::now() + CONTROL_PERIOD,
            }),
            exits: ExitCost::default(),
        }
    }

    /// Does what is due at `now`; returns when it next needs a step.
    pub fn step(&mut self, session: &mut Session, now: Instant) -> Instant {
        // Looked at on every step (it says when it is due), not only at budget checks: the
        // first looks come sooner than the first budget check.
        if !self.exact_exits {
            self.exits
                .check(session, &mut self.budget, &self.costs, self.cpu_rate, now);
        }
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
        session.sampling.hit_costs = Some(self.costs);
        session.sampling.traced_cpu_seconds += used;
        let Some(len) = self.budget.next_window(self.cpu_rate) else {
            return idle;
        };
        debug!(
            "a window of {len:?} planned at {:.2} CPU s/s of traced threads",
            self.cpu_rate
        );
        if session.tracer_mut().sample_points() == 0 {
            return idle;
        }
        let before = read_windows(session, &self.costs);
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
                    hits_at_close: hits_before,
                    before,
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
        let after = read_windows(session, &self.costs);
        let nops = after.nops.saturating_sub(window.before.nops);
        let traps = after.traps.saturating_sub(window.before.traps);
        record_moments(session, &window.before, &after);
        let trap_share = if nops + traps > 0 {
            traps as f64 / (nops + traps) as f64
        } else {
            1.0
        };
        let per_hit = trap_share * self.costs.trap.as_secs_f64()
            + (1.0 - trap_share) * self.costs.nop.as_secs_f64();
        // The exit probes moved into the windows cost too.
        let cost = hits as f64 * per_hit
            + (after.windowed_exit_cost - window.before.windowed_exit_cost).max(0.0);
        let tail = tail(window, open, hits);
        self.budget.spend(window.len, open, tail, cost);
        debug!("window {open:?} (tail {tail:?}): {hits} entry hits, about {cost:.4} CPU s");
        let stats = &mut session.sampling;
        stats.windows += 1;
        stats.window_seconds += open.as_secs_f64();
        stats.probe_cost_seconds += cost;
    }
}

/// How long the window's probes went on being hit after it closed, at its rate while open;
/// `None` without a hit while open. `hits`: all of them, from attach to detach.
fn tail(window: &Window, open: Duration, hits: u64) -> Option<Duration> {
    let during = window.hits_at_close.saturating_sub(window.hits_before);
    let after = hits.saturating_sub(during);
    (during > 0).then(|| open.mul_f64(after as f64 / during as f64))
}

/// Closes the gate and detaches the window's probes on a thread of their own.
fn close(session: &mut Session, mut window: Window) -> Phase {
    window.hits_at_close = session
        .tracer_mut()
        .maps
        .window_hits()
        .unwrap_or(window.hits_before);
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

/// The windows' counters now: entries by kind of probe, and per key entries and aborts.
fn read_windows(session: &mut Session, costs: &HitCosts) -> Reading {
    let Ok(counts) = session.tracer_mut().maps.counts() else {
        return Reading::default();
    };
    let catalog = session.catalog();
    let windowed = &session.windowed;
    let mut reading = Reading::default();
    for (k, c) in &counts {
        let Some(section) = catalog.section(k.section) else {
            continue;
        };
        let on_markers = section.plan.as_ref().is_ok_and(|p| p.on_markers);
        let entries = c.get(Counter::Entries);
        if on_markers {
            reading.nops += entries;
        } else {
            reading.traps += entries;
        }
        let key = reading.by_key.entry(section.key.clone()).or_default();
        key.0 += entries;
        key.1 += c.get(Counter::WindowAborts);
        for kind in ExitKind::ALL {
            if windowed.contains(kind, k.section) {
                reading.windowed_exit_cost += c.get(kind.counter()) as f64
                    * exit_cost::per_hit(catalog, costs, kind, k.section);
            }
        }
    }
    reading
}

/// Adds one window's entries and aborts of each key to the session's moments.
fn record_moments(session: &mut Session, before: &Reading, after: &Reading) {
    let moments = Arc::make_mut(&mut session.moments);
    for (key, (entries, aborts)) in &after.by_key {
        let (e0, a0) = before.by_key.get(key).copied().unwrap_or_default();
        let (e, a) = (entries.saturating_sub(e0), aborts.saturating_sub(a0));
        if e > 0 {
            moments.entry(key.clone()).or_default().add(e, a);
        }
    }
}
