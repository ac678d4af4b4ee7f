//! Counts of attempts ([`Tally`]): the commits derived from the counters, and their causes.

use rseq_common::{
    cause::Cause,
    counters::{Counter, Counters},
};
use serde::Serialize;

use crate::sampling::estimate::Estimate;

/// Counts of attempts: of one section or key, on one CPU (the CPU attempts entered on), or in
/// total. In JSON, entries and commits are `null` where the mode does not count them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
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
    /// Sampled mode: aborts and cancels while a window was open (the extrapolation's reference).
    #[serde(skip)]
    pub window_aborts: u64,
    /// Sampled mode: cancels while a window was open.
    #[serde(skip)]
    pub window_cancels: u64,
    /// Sampled mode: `entries` and `commits` are then estimates; this says how good.
    pub estimate: Option<Estimate>,
    /// Aborts mode: entries (and so commits) were not counted; the zeros above mean nothing.
    pub entries_unknown: bool,
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
                cpu_mismatch: aborts.saturating_sub(c.get(Counter::KernelRestarts)),
            },
            window_aborts: c.get(Counter::WindowAborts),
            window_cancels: c.get(Counter::WindowCancels),
            estimate: None,
            entries_unknown: false,
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
                estimate: None,
                ..*self
            },
        }
    }

    /// Aborts per entered attempt: `None` where entries are unknown (not counted, only a lower
    /// bound, or none at all). An estimate's ratio carries the tally's `estimate` mark.
    pub fn abort_ratio(&self) -> Option<f64> {
        let bound_only = self.estimate.is_some_and(|e| e.uncertainty.is_none());
        if self.entries_unknown || bound_only || self.entries == 0 {
            None
        } else {
            Some(self.aborts as f64 / self.entries as f64)
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
            estimate: None,
            entries_unknown: self.entries_unknown,
        }
    }
}

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
    /// Aborts the section's own CPU-mismatch branch took: all but the kernel's restarts.
    pub cpu_mismatch: u64,
}

impl AbortCauses {
    /// (name, count) of each cause, in a fixed order.
    pub fn named(&self) -> [(&'static str, u64); 6] {
        [
            (Cause::Preemption.name(), self.preemption),
            (Cause::Migration.name(), self.migration),
            (Cause::Signal.name(), self.signal),
            (Cause::Other.name(), self.other),
            (Cause::Probe.name(), self.probe),
            ("cpu_mismatch", self.cpu_mismatch),
        ]
    }

    fn add(&mut self, o: &AbortCauses) {
        self.preemption += o.preemption;
        self.migration += o.migration;
        self.signal += o.signal;
        self.other += o.other;
        self.probe += o.probe;
        self.cpu_mismatch += o.cpu_mismatch;
    }

    fn since(&self, e: &AbortCauses) -> AbortCauses {
        AbortCauses {
            preemption: self.preemption.saturating_sub(e.preemption),
            migration: self.migration.saturating_sub(e.migration),
            signal: self.signal.saturating_sub(e.signal),
            other: self.other.saturating_sub(e.other),
            probe: self.probe.saturating_sub(e.probe),
            cpu_mismatch: self.cpu_mismatch.saturating_sub(e.cpu_mismatch),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counters(e: u64, a: u64, c: u64, k: u64) -> Counters {
        Counters([e, a, c, k, 0, 0, k, 0, 0, 0, 0])
    }

    #[test]
    fn commits_are_what_is_left() {
        let t = Tally::from_counters(&counters(10, 3, 2, 1));
        assert_eq!(
            (t.entries, t.commits, t.aborts, t.cancels, t.kernel_restarts),
            (10, 5, 3, 2, 1)
        );
        assert!((t.abort_ratio().unwrap() - 0.3).abs() < 1e-12);
    }

    #[test]
    fn never_negative() {
        assert_eq!(Tally::from_counters(&counters(1, 3, 0, 0)).commits, 0);
        assert_eq!(Tally::default().abort_ratio(), None);
        let uncounted = Tally {
            entries_unknown: true,
            ..Tally::from_counters(&counters(10, 3, 0, 0))
        };
        assert_eq!(uncounted.abort_ratio(), None);
        let json = serde_json::to_value(uncounted).unwrap();
        assert!(
            json["entries"].is_null() && json["commits"].is_null(),
            "{json}"
        );
        assert_eq!(json["aborts"], 3);
    }
}
