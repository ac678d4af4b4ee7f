//! What the session publishes after each pass: everything a view needs besides the counter
//! values, each part shared (not copied) while it does not change.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use rseq_common::{
    counters::{CountKey, Counters},
    mode::Mode,
};

use super::poll_gap::PollGap;
use crate::{
    catalog::Catalog,
    sampling::{ratio::WindowMoments, SamplingStats, WindowedExits},
};

/// The session as the views see it.
#[derive(Clone)]
pub struct Status {
    /// Every section known so far.
    pub catalog: Arc<Catalog>,
    /// What the probes count.
    pub mode: Mode,
    /// Whether kernel restarts are counted (the rseq_ip_fixup tracepoint is attached).
    pub restarts_counted: bool,
    /// Whether restarts have causes (the scheduler and signal tracepoints are attached).
    pub causes_counted: bool,
    /// Uprobes attached for the whole session.
    pub probes: usize,
    /// Name of every process seen, kept after it exits.
    pub processes: Arc<BTreeMap<u32, String>>,
    /// Processes that exited (their counts are final).
    pub exited: Arc<BTreeSet<u32>>,
    /// The final counts of the processes that exited (they leave the maps).
    pub finished: Arc<BTreeMap<CountKey, Counters>>,
    /// What sampled mode's windows did so far.
    pub sampling: SamplingStats,
    /// Sampled mode: per key, its entries and aborts window by window.
    pub moments: Arc<BTreeMap<String, WindowMoments>>,
    /// Sampled mode: sections whose aborts or cancels are counted in the windows only
    /// (estimated).
    pub windowed: Arc<WindowedExits>,
    /// How late the poll loop has run.
    pub poll_gap: PollGap,
    /// Whether every traced process exited (and nothing system-wide is traced).
    pub done: bool,
}

impl Default for Status {
    fn default() -> Self {
        Status {
            catalog: Arc::default(),
            mode: Mode::Exact,
            restarts_counted: false,
            causes_counted: false,
            probes: 0,
            processes: Arc::default(),
            exited: Arc::default(),
            finished: Arc::default(),
            sampling: SamplingStats::default(),
            moments: Arc::default(),
            windowed: Arc::default(),
            poll_gap: PollGap::default(),
            done: false,
        }
    }
}
