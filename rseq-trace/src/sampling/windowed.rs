//! The sections whose exit probes the sampler moved into the windows, by kind: what a counter
//! set of theirs holds is then a sample, not a total.

use std::collections::BTreeSet;

use rseq_common::counters::Counters;

use crate::{bpf::exits::ExitKind, snapshot::counts::Tally};

/// Sections whose aborts, and sections whose cancels, are counted in the windows only.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WindowedExits {
    /// Sections whose abort probes are attached only for the windows.
    pub aborts: BTreeSet<u32>,
    /// Sections whose cancel probes are attached only for the windows.
    pub cancels: BTreeSet<u32>,
}

impl WindowedExits {
    /// Notes that the `kind` probes of `sections` are now attached only for the windows.
    pub fn add(&mut self, kind: ExitKind, sections: impl IntoIterator<Item = u32>) {
        match kind {
            ExitKind::Abort => self.aborts.extend(sections),
            ExitKind::Cancel => self.cancels.extend(sections),
        }
    }

    /// Whether `section`'s `kind` probes are attached only for the windows.
    pub fn contains(&self, kind: ExitKind, section: u32) -> bool {
        match kind {
            ExitKind::Abort => self.aborts.contains(&section),
            ExitKind::Cancel => self.cancels.contains(&section),
        }
    }

    /// Section `section`'s counter set as what it is: its windowed exits as the sample they are.
    pub fn tally(&self, section: u32, c: &Counters) -> Tally {
        let mut t = Tally::from_counters(c);
        if self.cancels.contains(&section) {
            t = t.with_cancels_sampled();
        }
        if self.aborts.contains(&section) {
            t = t.with_aborts_sampled();
        }
        t
    }
}
