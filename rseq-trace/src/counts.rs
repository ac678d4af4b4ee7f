//! Counter values read from the eBPF maps, and the commits derived from them.

use rseq_common::{health::Health, Event};
use serde::Serialize;

/// One section's counts on one CPU (the CPU its attempts entered on).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    pub entries: u64,
    pub commits: u64,
    pub aborts: u64,
    pub cancels: u64,
}

impl Tally {
    /// Every entered attempt ends in exactly one commit, abort or cancel, so commits are what is
    /// left. While the target runs this includes attempts still in flight (at most one per
    /// thread); once it has exited the figure is exact.
    pub fn from_events(v: [u64; Event::COUNT]) -> Self {
        let (entries, aborts, cancels) = (
            v[Event::Entry as usize],
            v[Event::Abort as usize],
            v[Event::Cancel as usize],
        );
        Tally {
            entries,
            commits: entries.saturating_sub(aborts).saturating_sub(cancels),
            aborts,
            cancels,
        }
    }

    pub fn add(&mut self, o: &Tally) {
        self.entries += o.entries;
        self.commits += o.commits;
        self.aborts += o.aborts;
        self.cancels += o.cancels;
    }

    /// Aborts per entered attempt; 0 when nothing was entered.
    pub fn abort_ratio(&self) -> f64 {
        if self.entries == 0 {
            0.0
        } else {
            self.aborts as f64 / self.entries as f64
        }
    }
}

/// All counters at one moment: `sections[section][cpu]`, plus the health counters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub sections: Vec<Vec<Tally>>,
    pub health: [u64; Health::COUNT as usize],
}

impl Snapshot {
    pub fn new(sections: usize, cpus: usize) -> Self {
        Snapshot {
            sections: vec![vec![Tally::default(); cpus]; sections],
            health: [0; Health::COUNT as usize],
        }
    }

    /// A section's counts summed over CPUs.
    pub fn total(&self, section: usize) -> Tally {
        let mut t = Tally::default();
        for c in &self.sections[section] {
            t.add(c);
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_are_what_is_left() {
        let t = Tally::from_events([10, 3, 2]);
        assert_eq!((t.entries, t.commits, t.aborts, t.cancels), (10, 5, 3, 2));
        assert!((t.abort_ratio() - 0.3).abs() < 1e-12);
    }

    #[test]
    fn never_negative() {
        assert_eq!(Tally::from_events([1, 3, 0]).commits, 0);
        assert_eq!(Tally::default().abort_ratio(), 0.0);
    }
}
