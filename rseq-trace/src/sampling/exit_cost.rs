//! What the exit probes attached for the whole session cost, checked every [`CHECK_PERIOD`]:
//! each abort or cancel counted is a probe hit, a nop (a marker's, or one the code has there)
//! or a trap. A file whose aborts or cancels cost more than half the budget has those probes
//! moved into the windows ([`Tracer::sample_exits`]); what the others cost is charged to the
//! budget, so the windows shrink accordingly.
//!
//! [`Tracer::sample_exits`]: crate::bpf::Tracer::sample_exits

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};

use rseq_common::counters::{CountKey, Counters};
use tracing::info;

use super::Budget;
use crate::{
    bpf::{calibrate::HitCosts, exits::ExitKind},
    catalog::Catalog,
    session::Session,
};

/// How often the exit probes' cost is looked at.
pub(super) const CHECK_PERIOD: Duration = Duration::from_secs(1);
/// The first looks, sooner: frequent exits cost the most before they are moved (frequent
/// cancels' probes take ~94% of the threads' time). At 250 ms after the first reading they
/// took 1.7-1.9% of 8 s runs' CPU time, at 100 ms 1.7%, most of it waiting for the traced
/// threads' CPU rate, which /proc tells only from the sampler's second reading on. Until then
/// a probe group is moved when it costs more than its share of every online CPU's time.
const FIRST_CHECK: Duration = Duration::from_millis(50);
/// The share of the budget exits attached for the whole session may take, per file and kind.
const SHARE: f64 = 0.5;

/// Hits so far per (kind, section), all processes and CPUs.
type Hits = BTreeMap<(ExitKind, u32), u64>;

/// The exits counted per section at the last check.
#[derive(Default)]
pub(super) struct ExitCost {
    seen: Hits,
    last: Option<Instant>,
    /// Whether a cost was charged yet (the traced threads' CPU rate known).
    checked: bool,
}

impl ExitCost {
    /// Charges the continuous exit probes' cost since the last check to `budget`, and moves
    /// those of any file and kind over its share into the windows. `cpu_rate`: the traced
    /// threads' CPU seconds per second, 0 while unknown.
    pub(super) fn check(
        &mut self,
        session: &mut Session,
        budget: &mut Budget,
        costs: &HitCosts,
        cpu_rate: f64,
        now: Instant,
    ) {
        let period = if self.checked {
            CHECK_PERIOD
        } else {
            FIRST_CHECK
        };
        if self.last.is_some_and(|t| now < t + period) {
            return;
        }
        let last = self.last.replace(now);
        let Ok(counts) = session.tracer_mut().maps.counts() else {
            return;
        };
        let now_seen = hits_per_section(&counts);
        let before = std::mem::replace(&mut self.seen, now_seen);
        // What was counted before the first reading is no rate yet (and was paid before any
        // window).
        let Some(last) = last else {
            return;
        };
        let secs = (now - last).as_secs_f64();
        let known = cpu_rate > 0.0;
        let rate = if known { cpu_rate } else { most_cpu_rate() };
        let limit = SHARE * budget.fraction() * rate;
        let groups: Vec<(usize, ExitKind, Vec<u32>)> = session
            .tracer_mut()
            .continuous_exits()
            .map(|(i, k, s)| (i, k, s.to_vec()))
            .collect();
        let mut charged = 0.0;
        for (index, kind, sections) in groups {
            let cost = cost_since(
                session.catalog(),
                costs,
                kind,
                &sections,
                &before,
                &self.seen,
            );
            charged += cost;
            if secs > 0.0 && cost / secs > limit {
                move_into_windows(session, index, cost / secs / rate.max(1e-9), !known);
            }
        }
        // Before the rate is known the cost is not charged: it was paid before any window.
        if known {
            self.checked = true;
            budget.charge(charged, cpu_rate);
        }
    }
}

/// The most CPU seconds per second the traced threads can use: every online CPU's.
fn most_cpu_rate() -> f64 {
    aya::util::online_cpus()
        .map(|c| c.len())
        .or_else(|_| std::thread::available_parallelism().map(|n| n.get()))
        .unwrap_or(1) as f64
}

/// Aborts and cancels counted so far per section.
fn hits_per_section(counts: &BTreeMap<CountKey, Counters>) -> Hits {
    let mut out = Hits::new();
    for (k, c) in counts {
        for kind in ExitKind::ALL {
            *out.entry((kind, k.section)).or_default() += c.get(kind.counter());
        }
    }
    out
}

/// What the `kind` exits of `sections` counted between the two readings cost, in CPU seconds.
fn cost_since(
    catalog: &Catalog,
    costs: &HitCosts,
    kind: ExitKind,
    sections: &[u32],
    before: &Hits,
    after: &Hits,
) -> f64 {
    sections
        .iter()
        .map(|s| {
            let hits = |m: &Hits| m.get(&(kind, *s)).copied().unwrap_or(0);
            hits(after).saturating_sub(hits(before)) as f64 * per_hit(catalog, costs, kind, *s)
        })
        .sum()
}

/// What one `kind` probe hit of section `s` costs: a nop where those probes sit on nops, else
/// a trap.
pub(super) fn per_hit(catalog: &Catalog, costs: &HitCosts, kind: ExitKind, s: u32) -> f64 {
    let on_nops = catalog
        .section(s)
        .and_then(|s| s.plan.as_ref().ok())
        .is_some_and(|p| match kind {
            ExitKind::Abort => p.abort_on_nop,
            ExitKind::Cancel => p.cancels_on_nops,
        });
    if on_nops {
        costs.nop.as_secs_f64()
    } else {
        costs.trap.as_secs_f64()
    }
}

/// Moves a file's exit probes of one kind into the windows; their old links are detached on a
/// thread.
/// `share` of the traced threads' CPU time, or `at_least` that while their rate is unknown.
fn move_into_windows(session: &mut Session, index: usize, share: f64, at_least: bool) {
    let Some((kind, sections, probes)) = session.tracer_mut().sample_exits(index) else {
        return;
    };
    info!(
        "{} of {} sections cost {}{:.1}% of the traced threads' CPU time: counting them in the sampling windows from now on (estimated)",
        kind.plural(),
        sections.len(),
        if at_least { "at least " } else { "" },
        100.0 * share
    );
    Arc::make_mut(&mut session.windowed).add(kind, sections);
    std::thread::spawn(move || drop(probes));
}
