//! Counts of attempts ([`Tally`]): the commits derived from the counters, and their causes.

use rseq_common::{
    cause::Cause,
    counters::{Counter, Counters},
};
use serde::Serialize;

use crate::sampling::{
    estimate::Estimate,
    ratio::{RatioBounds, WindowMoments},
};
use rseq_common::mode::Mode;

/// Counts of attempts: of one section or key, on one CPU (the CPU attempts entered on), or in
/// total. In JSON, entries and commits are `null` where the mode does not count them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
#[serde(into = "TallyJson")]
pub struct Tally {
    /// Attempts entered: the entry probe fired.
    pub entries: u64,
    /// Attempts committed: the entries less the aborts and cancels.
    pub commits: u64,
    /// Attempts that reached the abort handler, by a kernel restart or the section's own branch.
    pub aborts: u64,
    /// Attempts left by an exit point other than the commit.
    pub cancels: u64,
    /// The part of `aborts` the kernel caused (preemption, migration, signal); the rest is the
    /// section's own CPU-mismatch branch.
    pub kernel_restarts: u64,
    /// `kernel_restarts` by cause, and the section's own CPU-mismatch aborts.
    pub abort_causes: AbortCauses,
    /// Sampled mode: aborts while a window was open, except those our own entry probe made
    /// (the ratio's numerator, and with `window_cancels` the extrapolation's reference).
    #[serde(skip)]
    pub window_aborts: u64,
    /// Sampled mode: the part of `window_aborts` of sections whose abort probes were moved into
    /// the windows (their cost called for it); `aborts` then holds only the other sections'
    /// aborts (and those our own probes made) until the tally is extrapolated.
    #[serde(skip)]
    pub sampled_aborts: u64,
    /// Sampled mode: what the abort probes moved into the windows saw, by cause (our own
    /// probe's restarts left out): how the estimated aborts divide.
    #[serde(skip)]
    pub sampled_causes: AbortCauses,
    /// Whether `aborts`, `kernel_restarts` and `abort_causes` are estimates (some of their
    /// sections' aborts were sampled).
    pub aborts_estimated: bool,
    /// Sampled mode: cancels while a window was open, of sections whose cancels are counted
    /// all the time.
    #[serde(skip)]
    pub window_cancels: u64,
    /// Sampled mode: cancels while a window was open, of sections whose cancel probes were
    /// moved into the windows (their cost called for it); `cancels` then holds only the
    /// other sections' cancels until the tally is extrapolated, and is an estimate after.
    #[serde(skip)]
    pub sampled_cancels: u64,
    /// Whether `cancels` is an estimate (some of its sections' cancels were sampled).
    pub cancels_estimated: bool,
    /// Sampled mode: `entries` and `commits` are then estimates; this says how good.
    pub estimate: Option<Estimate>,
    /// Aborts mode: entries (and so commits) were not counted; the zeros above mean nothing.
    pub entries_unknown: bool,
    /// The abort ratio and its bounds, once the mode's view of the tally is made
    /// ([`Tally::with_ratio`]); `None` where entries are unknown.
    pub ratio: Option<RatioBounds>,
}

/// A [`Tally`] as scripts read it: what was not counted is `null`, never 0.
#[derive(Serialize)]
struct TallyJson {
    entries: Option<u64>,
    commits: Option<u64>,
    aborts: u64,
    cancels: u64,
    kernel_restarts: u64,
    abort_causes: AbortCauses,
    #[serde(skip_serializing_if = "Option::is_none")]
    estimate: Option<Estimate>,
    /// Present (true) when `aborts` (and its causes) is an estimate: some abort probes were
    /// sampled.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    aborts_estimated: bool,
    /// Present (true) when that estimate is only a lower bound, as for cancels.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    aborts_lower_bound: bool,
    /// Present (true) when `cancels` is an estimate: some cancel probes were sampled.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    cancels_estimated: bool,
    /// Present (true) when that estimate is only a lower bound: the windows' own cancels, with
    /// no estimate of the entries to scale them by yet.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    cancels_lower_bound: bool,
    /// Aborts per entry, or `null` where entries are unknown.
    abort_ratio: Option<f64>,
    /// `[low, high]` at 95% confidence (both equal to the ratio when it was counted exactly).
    abort_ratio_bounds: Option<[f64; 2]>,
    /// Sampled mode: `[low, high]` of the estimated entries and commits (± the estimate's
    /// uncertainty); absent when they are counted, `null` while they are only a lower bound.
    #[serde(skip_serializing_if = "Option::is_none")]
    entries_bounds: Option<Option<[u64; 2]>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    commits_bounds: Option<Option<[u64; 2]>>,
}

impl From<Tally> for TallyJson {
    fn from(t: Tally) -> Self {
        let known = |v: u64| (!t.entries_unknown).then_some(v);
        TallyJson {
            entries: known(t.entries),
            commits: known(t.commits),
            aborts: t.aborts,
            cancels: t.cancels,
            kernel_restarts: t.kernel_restarts,
            abort_causes: t.abort_causes,
            estimate: t.estimate,
            aborts_estimated: t.aborts_estimated,
            aborts_lower_bound: t.aborts_lower_bound(),
            cancels_estimated: t.cancels_estimated,
            cancels_lower_bound: t.cancels_lower_bound(),
            abort_ratio: t.ratio.map(|r| r.ratio),
            abort_ratio_bounds: t.ratio.map(|r| [r.low, r.high]),
            entries_bounds: t.estimate.map(|e| e.entries_bounds(t.entries)),
            commits_bounds: t.estimate.map(|e| e.commits_bounds(t.commits)),
        }
    }
}

impl Tally {
    /// Every entered attempt ends in exactly one commit, abort or cancel, so commits are what is
    /// left. While the target runs this includes attempts still in flight (at most one per
    /// thread); once it has exited the figure is exact.
    pub fn from_counters(c: &Counters) -> Self {
        let entries = c.get(Counter::Entries);
        let aborts = c.get(Counter::Aborts);
        let cancels = c.get(Counter::Cancels);
        Tally {
            entries,
            commits: entries.saturating_sub(aborts).saturating_sub(cancels),
            aborts,
            cancels,
            kernel_restarts: c.get(Counter::KernelRestarts),
            abort_causes: AbortCauses {
                preemption: c.get(Counter::RestartPreemption),
                migration: c.get(Counter::RestartMigration),
                signal: c.get(Counter::RestartSignal),
                other: c.get(Counter::RestartOther),
                probe: c.get(Counter::RestartProbe),
                probe_move: c.get(Counter::ProbeMoves),
                cpu_mismatch: aborts
                    .saturating_sub(c.get(Counter::KernelRestarts))
                    .saturating_sub(c.get(Counter::ProbeMoves)),
            },
            window_aborts: c.get(Counter::WindowAborts),
            window_cancels: c.get(Counter::WindowCancels),
            sampled_aborts: 0,
            sampled_causes: AbortCauses::default(),
            aborts_estimated: false,
            sampled_cancels: 0,
            cancels_estimated: false,
            estimate: None,
            entries_unknown: false,
            ratio: None,
        }
    }

    /// Adds raw counts (estimates are made from sums, never summed).
    pub fn add(&mut self, o: &Tally) {
        self.entries += o.entries;
        self.commits += o.commits;
        self.aborts += o.aborts;
        self.cancels += o.cancels;
        self.kernel_restarts += o.kernel_restarts;
        self.abort_causes.add(&o.abort_causes);
        self.window_aborts += o.window_aborts;
        self.window_cancels += o.window_cancels;
        self.sampled_aborts += o.sampled_aborts;
        self.sampled_causes.add(&o.sampled_causes);
        self.aborts_estimated |= o.aborts_estimated;
        self.sampled_cancels += o.sampled_cancels;
        self.cancels_estimated |= o.cancels_estimated;
        self.entries_unknown |= o.entries_unknown;
    }

    /// Whether anything was counted (entries are not, in aborts mode).
    pub fn seen(&self) -> bool {
        self.entries > 0 || self.aborts > 0 || self.cancels > 0
    }

    /// The counts as read from the maps, before any extrapolation.
    pub fn raw(&self) -> Tally {
        match self.estimate {
            None => *self,
            Some(e) => Tally {
                entries: e.sampled_entries,
                commits: 0,
                aborts: e.counted.aborts,
                cancels: e.counted.cancels,
                kernel_restarts: e.counted.kernel_restarts,
                abort_causes: e.counted.abort_causes,
                estimate: None,
                ..*self
            },
        }
    }

    /// Aborts per entered attempt: `None` where entries are unknown (not counted, or none at
    /// all). In sampled mode it is the windows' own ratio (their aborts over their entries), so
    /// it needs no extrapolation.
    pub fn abort_ratio(&self) -> Option<f64> {
        self.ratio.map(|r| r.ratio)
    }

    /// Whether `cancels` is an estimate that is only a lower bound (no entries estimate yet).
    pub fn cancels_lower_bound(&self) -> bool {
        self.cancels_estimated && self.estimate.is_some_and(|e| e.uncertainty.is_none())
    }

    /// Whether `aborts` is an estimate that is only a lower bound (no entries estimate yet).
    pub fn aborts_lower_bound(&self) -> bool {
        self.aborts_estimated && self.estimate.is_some_and(|e| e.uncertainty.is_none())
    }

    /// A counter set of a section whose abort probes are attached only in windows: its aborts
    /// count as the sample they are (the windows' own, `sampled_aborts`), not as a total.
    /// Those our own entry probe made stay as counted: they happen only in windows.
    pub fn with_aborts_sampled(self) -> Tally {
        let (probe, probe_move) = (self.abort_causes.probe, self.abort_causes.probe_move);
        Tally {
            aborts: probe + probe_move,
            kernel_restarts: probe,
            abort_causes: AbortCauses {
                probe,
                probe_move,
                ..AbortCauses::default()
            },
            commits: self
                .entries
                .saturating_sub(probe + probe_move)
                .saturating_sub(self.cancels),
            sampled_aborts: self.window_aborts,
            sampled_causes: AbortCauses {
                probe: 0,
                probe_move: 0,
                ..self.abort_causes
            },
            aborts_estimated: true,
            ..self
        }
    }

    /// A counter set of a section whose cancel probes are attached only in windows: its cancels
    /// count as the sample they are, not as a total.
    pub fn with_cancels_sampled(self) -> Tally {
        Tally {
            cancels: 0,
            window_cancels: 0,
            sampled_cancels: self.window_cancels,
            cancels_estimated: true,
            commits: self.entries.saturating_sub(self.aborts),
            ..self
        }
    }

    /// The tally as `mode` makes it: entries marked unknown in aborts mode, extrapolated in
    /// sampled mode (from this tally's own sums), as counted in exact mode; with its ratio and
    /// bounds (`moments`: the key's windows one by one, when known).
    pub fn with_ratio(self, mode: Mode, moments: Option<&WindowMoments>) -> Tally {
        match mode {
            Mode::Exact => Tally {
                ratio: RatioBounds::exact(self.aborts, self.entries),
                ..self
            },
            Mode::Aborts => Tally {
                entries_unknown: true,
                ratio: None,
                ..self
            },
            Mode::Sampled => Tally {
                ratio: RatioBounds::sampled(self.window_aborts, self.entries, moments),
                ..crate::sampling::estimate::extrapolate(&self)
            },
        }
    }

    /// This tally minus an earlier one of the same counters (for rates).
    pub fn since(&self, earlier: &Tally) -> Tally {
        Tally {
            entries: self.entries.saturating_sub(earlier.entries),
            commits: self.commits.saturating_sub(earlier.commits),
            aborts: self.aborts.saturating_sub(earlier.aborts),
            cancels: self.cancels.saturating_sub(earlier.cancels),
            kernel_restarts: self.kernel_restarts.saturating_sub(earlier.kernel_restarts),
            abort_causes: self.abort_causes.since(&earlier.abort_causes),
            window_aborts: self.window_aborts.saturating_sub(earlier.window_aborts),
            window_cancels: self.window_cancels.saturating_sub(earlier.window_cancels),
            sampled_aborts: self.sampled_aborts.saturating_sub(earlier.sampled_aborts),
            sampled_causes: self.sampled_causes.since(&earlier.sampled_causes),
            aborts_estimated: self.aborts_estimated,
            sampled_cancels: self.sampled_cancels.saturating_sub(earlier.sampled_cancels),
            cancels_estimated: self.cancels_estimated,
            estimate: None,
            entries_unknown: self.entries_unknown,
            ratio: None,
        }
    }
}

/// The name of [`AbortCauses::probe_move`] in every output.
pub const PROBE_MOVE: &str = "probe_move";

/// Why attempts aborted: the kernel's restarts by cause (`rseq_ip_fixup` plus the scheduler and
/// signal tracepoints), and the section's own CPU-mismatch branch (the other aborts).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct AbortCauses {
    /// Restarts after the thread was preempted.
    pub preemption: u64,
    /// Restarts after the thread was moved to another CPU.
    pub migration: u64,
    /// Restarts to deliver a signal.
    pub signal: u64,
    /// A restart with none of the above seen (a blocking fault, a membarrier request).
    pub other: u64,
    /// Restarts rseq-trace's own entry probe made: a trap on the descriptor store returned to
    /// start_ip with the section armed. Untraced, these attempts would not have aborted.
    pub probe: u64,
    /// Aborts by the section's own CPU check after rseq-trace's entry probe: the scheduler
    /// moved the thread to another CPU during the probe's trip through the kernel, between
    /// the program's read of its CPU and the section. Untraced, almost none of these happen
    /// (the few instructions there are rarely preempted); counted in exact mode and in
    /// sampled mode's windows.
    pub probe_move: u64,
    /// Aborts the section's own CPU-mismatch branch took: all but the kernel's restarts and
    /// `probe_move`.
    pub cpu_mismatch: u64,
}

impl AbortCauses {
    /// (name, count) of each cause, in a fixed order.
    pub fn named(&self) -> [(&'static str, u64); 7] {
        [
            (Cause::Preemption.name(), self.preemption),
            (Cause::Migration.name(), self.migration),
            (Cause::Signal.name(), self.signal),
            (Cause::Other.name(), self.other),
            (Cause::Probe.name(), self.probe),
            (PROBE_MOVE, self.probe_move),
            ("cpu_mismatch", self.cpu_mismatch),
        ]
    }

    fn add(&mut self, o: &AbortCauses) {
        self.preemption += o.preemption;
        self.migration += o.migration;
        self.signal += o.signal;
        self.other += o.other;
        self.probe += o.probe;
        self.probe_move += o.probe_move;
        self.cpu_mismatch += o.cpu_mismatch;
    }

    fn since(&self, e: &AbortCauses) -> AbortCauses {
        AbortCauses {
            preemption: self.preemption.saturating_sub(e.preemption),
            migration: self.migration.saturating_sub(e.migration),
            signal: self.signal.saturating_sub(e.signal),
            other: self.other.saturating_sub(e.other),
            probe: self.probe.saturating_sub(e.probe),
            probe_move: self.probe_move.saturating_sub(e.probe_move),
            cpu_mismatch: self.cpu_mismatch.saturating_sub(e.cpu_mismatch),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counters(e: u64, a: u64, c: u64, k: u64) -> Counters {
        Counters([e, a, c, k, 0, 0, k, 0, 0, 0, 0, 0])
    }

    #[test]
    fn commits_are_what_is_left() {
        let t = Tally::from_counters(&counters(10, 3, 2, 1));
        assert_eq!(
            (t.entries, t.commits, t.aborts, t.cancels, t.kernel_restarts),
            (10, 5, 3, 2, 1)
        );
        let exact = t.with_ratio(Mode::Exact, None);
        assert!((exact.abort_ratio().unwrap() - 0.3).abs() < 1e-12);
        assert!(exact.ratio.unwrap().is_exact());
    }

    #[test]
    fn never_negative() {
        assert_eq!(Tally::from_counters(&counters(1, 3, 0, 0)).commits, 0);
        assert_eq!(Tally::default().abort_ratio(), None);
        let uncounted = Tally::from_counters(&counters(10, 3, 0, 0)).with_ratio(Mode::Aborts, None);
        assert_eq!(uncounted.abort_ratio(), None);
        let json = serde_json::to_value(uncounted).unwrap();
        assert!(
            json["entries"].is_null() && json["commits"].is_null(),
            "{json}"
        );
        assert!(json["abort_ratio"].is_null() && json["abort_ratio_bounds"].is_null());
        assert_eq!(json["aborts"], 3);
    }

    #[test]
    fn sampled_ratio_is_the_windows_own() {
        // 1,000 entries seen in windows, 10 aborts among them; 500 aborts in all.
        let raw = Tally {
            entries: 1000,
            aborts: 500,
            window_aborts: 10,
            ..Tally::default()
        };
        let t = raw.with_ratio(Mode::Sampled, None);
        let r = t.ratio.unwrap();
        assert!(
            (r.ratio - 0.01).abs() < 1e-12 && r.low < 0.01 && 0.01 < r.high,
            "{r:?}"
        );
        let json = serde_json::to_value(t).unwrap();
        assert_eq!(json["abort_ratio_bounds"].as_array().unwrap().len(), 2);
        assert!(json["estimate"].is_object());
    }
}
