//! Sampled mode's windows: when to attach the entry probes and for how long, so that what they
//! cost the traced threads stays within a budget (a percentage of those threads' CPU time).
//!
//! A token bucket: the traced threads' CPU time earns credit (nine tenths of budget x CPU
//! seconds, the last tenth held back for windows that cost more than planned); a window opens
//! when the credit pays for at least [`MIN_WINDOW`] and its tail at the cost rate of the last
//! windows (probe hits x cost per hit, per second of probes attached), and its cost is spent
//! afterwards. The tail is the time after a window closes in which its probes are still hit,
//! until the kernel has removed their breakpoints; it is measured from the hits. Before the
//! first window nothing is known, so the worst case is assumed: every CPU second the traced
//! threads use during a window and its tail is probe cost.

mod budget;
mod cpu_clock;
pub mod estimate;
mod exit_cost;
pub mod ratio;
pub mod sampler;
mod windowed;

use std::time::Duration;

use serde::Serialize;

pub use self::{budget::Budget, windowed::WindowedExits};
use crate::bpf::calibrate::HitCosts;

/// Shortest window worth attaching the probes for.
pub const MIN_WINDOW: Duration = Duration::from_millis(5);
/// Longest window: a burst of probe cost is bounded even with saved-up credit.
pub const MAX_WINDOW: Duration = Duration::from_millis(50);
/// Between attaching a window's probes and counting.
pub(crate) const SETTLE: Duration = Duration::from_millis(2);
/// How often the budget is checked.
pub(crate) const CONTROL_PERIOD: Duration = Duration::from_millis(100);
/// Credit saved up beyond this many seconds of budget is dropped, so an idle period does not
/// pay for a long burst later.
pub(crate) const CREDIT_HORIZON_SECS: f64 = 10.0;

/// How sampled mode may spend: the budget, and whether aborts and cancels must stay exact.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SamplingOptions {
    /// The share of the traced threads' CPU time the windows may cost, in percent.
    pub budget_percent: f64,
    /// Keep the abort and cancel probes attached for the whole run, whatever they cost
    /// (outside the budget): aborts and cancels stay exact.
    pub exact_exits: bool,
}

/// What sampling did, for the summary and the metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct SamplingStats {
    /// The budget, in percent of the traced threads' CPU time.
    pub budget_percent: f64,
    /// How many windows were opened.
    pub windows: u64,
    /// Seconds the windows were open.
    pub window_seconds: f64,
    /// Estimated CPU seconds the entry probes cost the traced threads.
    pub probe_cost_seconds: f64,
    /// CPU seconds the traced threads used meanwhile.
    pub traced_cpu_seconds: f64,
    /// What one probe hit costs the traced thread here, as measured at start-up.
    pub hit_costs: Option<HitCosts>,
}
