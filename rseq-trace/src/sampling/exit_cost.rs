//! What the cancel probes attached for the whole session cost, checked every [`CHECK_PERIOD`]:
//! each cancel counted is a probe hit, a nop on a marker or a trap. A file whose cancels cost
//! more than half the budget has them moved into the windows ([`Tracer::sample_cancels`]);
//! what the others cost is charged to the budget, so the windows shrink accordingly.
//!
//! [`Tracer::sample_cancels`]: crate::bpf::Tracer::sample_cancels

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};

use rseq_common::counters::{CountKey, Counter, Counters};
use tracing::info;

use super::Budget;
use crate::{bpf::calibrate::HitCosts, catalog::Catalog, session::Session};

/// How often the cancel probes' cost is looked at.
pub(super) const CHECK_PERIOD: Duration = Duration::from_secs(1);
/// The share of the budget cancels attached for the whole session may take.
const SHARE: f64 = 0.5;

/// The cancels counted per section at the last check.
#[derive(Default)]
pub(super) struct ExitCost {
    seen: BTreeMap<u32, u64>,
    last: Option<Instant>,
}

impl ExitCost {
    /// Charges the continuous cancel probes' cost since the last check to `budget`, and moves
    /// those of any file over its share into the windows. `cpu_rate`: the traced threads' CPU
    /// seconds per second.
    pub(super) fn check(
        &mut self,
        session: &mut Session,
        budget: &mut Budget,
        costs: &HitCosts,
        cpu_rate: f64,
        now: Instant,
    ) {
        if self.last.is_some_and(|t| now < t + CHECK_PERIOD) {
            return;
        }
        let first = self.last.is_none();
        let secs = self.last.map_or(0.0, |t| (now - t).as_secs_f64());
        self.last = Some(now);
        let Ok(counts) = session.tracer_mut().maps.counts() else {
            return;
        };
        let now_seen = cancels_per_section(&counts);
        if first {
            // What was counted before is no rate yet (and was paid before any window).
            self.seen = now_seen;
            return;
        }
        let groups: Vec<(usize, Vec<u32>)> = session
            .tracer_mut()
            .continuous_cancels()
            .map(|(i, s)| (i, s.to_vec()))
            .collect();
        let limit = SHARE * budget.fraction() * cpu_rate;
        let mut charged = 0.0;
        for (index, sections) in groups {
            let cost = cost_since(session.catalog(), costs, &sections, &self.seen, &now_seen);
            charged += cost;
            if secs > 0.0 && cost / secs > limit {
                move_into_windows(session, index, cost / secs / cpu_rate.max(1e-9));
            }
        }
        budget.charge(charged, cpu_rate);
        self.seen = now_seen;
    }
}

/// Cancels counted so far per section (all processes and CPUs).
fn cancels_per_section(counts: &BTreeMap<CountKey, Counters>) -> BTreeMap<u32, u64> {
    let mut out = BTreeMap::new();
    for (k, c) in counts {
        *out.entry(k.section).or_default() += c.get(Counter::Cancels);
    }
    out
}

/// What the cancels of `sections` counted between the two readings cost, in CPU seconds.
fn cost_since(
    catalog: &Catalog,
    costs: &HitCosts,
    sections: &[u32],
    before: &BTreeMap<u32, u64>,
    after: &BTreeMap<u32, u64>,
) -> f64 {
    sections
        .iter()
        .map(|s| {
            let hits = after
                .get(s)
                .copied()
                .unwrap_or(0)
                .saturating_sub(before.get(s).copied().unwrap_or(0));
            hits as f64 * per_hit(catalog, costs, *s)
        })
        .sum()
}

/// What one cancel probe hit of section `s` costs: a nop where its cancel probes sit on nops,
/// else a trap.
pub(super) fn per_hit(catalog: &Catalog, costs: &HitCosts, s: u32) -> f64 {
    let on_nops = catalog
        .section(s)
        .and_then(|s| s.plan.as_ref().ok())
        .is_some_and(|p| p.cancels_on_nops);
    if on_nops {
        costs.nop.as_secs_f64()
    } else {
        costs.trap.as_secs_f64()
    }
}

/// Moves a file's cancel probes into the windows; their old links are detached on a thread.
fn move_into_windows(session: &mut Session, index: usize, share: f64) {
    let Some((sections, probes)) = session.tracer_mut().sample_cancels(index) else {
        return;
    };
    info!(
        "cancels of {} sections cost {:.1}% of the traced threads' CPU time: counting them in the sampling windows from now on (estimated)",
        sections.len(),
        100.0 * share
    );
    Arc::make_mut(&mut session.windowed_cancels).extend(sections);
    std::thread::spawn(move || drop(probes));
}
