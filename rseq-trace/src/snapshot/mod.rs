//! Snapshots: the counter values at one moment, with the session's status of that moment.
//!
//! A [`Reader`] has map handles of its own and never touches the session. It reads the maps
//! first and the status second; the session publishes an exited process's final counts before
//! it drops them from the maps, so each process's counts are found in one of the two, and the
//! final counts replace whatever the maps still held of them.

pub mod counts;

use std::{collections::BTreeMap, collections::BTreeSet, sync::Arc};

use rseq_common::{
    cause::PositionKey,
    counters::{CountKey, Counters},
    health::Health,
};
use tokio::sync::watch;

use self::counts::Tally;
use crate::{
    bpf::maps::{MapValues, Maps},
    catalog::Catalog,
    error::AttachError,
    session::Status,
};

/// Every counter at one moment, exited processes' final counts included.
#[derive(Clone, Default)]
pub struct Snapshot {
    /// Per (process, section, CPU).
    pub counts: BTreeMap<CountKey, Counters>,
    /// Events the eBPF side could not attribute, by [`Health`].
    pub health: [u64; Health::COUNT as usize],
    /// Processes the probes have seen (or the session registered).
    pub processes: Vec<u32>,
    /// Kernel restarts per (process, section, interrupted offset).
    pub positions: BTreeMap<PositionKey, u64>,
    /// The session as it was just after the maps were read.
    pub status: Arc<Status>,
}

impl Snapshot {
    /// The values read, with the final counts of exited processes in place of what the maps
    /// still held of them.
    pub fn new(values: MapValues, status: Arc<Status>) -> Self {
        let mut counts = values.counts;
        let finished: BTreeSet<u32> = status.finished.keys().map(|k| k.tgid).collect();
        counts.retain(|k, _| !finished.contains(&k.tgid));
        counts.extend(status.finished.iter().map(|(k, c)| (*k, *c)));
        Snapshot {
            counts,
            health: values.health,
            processes: values.processes,
            positions: values.positions,
            status,
        }
    }

    /// Sums the tallies of the counter sets `group` maps to `Some(g)`.
    pub fn group_by<G: Ord>(
        &self,
        mut group: impl FnMut(&CountKey) -> Option<G>,
    ) -> BTreeMap<G, Tally> {
        let windowed = &self.status.windowed;
        let mut out: BTreeMap<G, Tally> = BTreeMap::new();
        for (k, c) in &self.counts {
            if let Some(g) = group(k) {
                let t = windowed.tally(k.section, c);
                out.entry(g).or_default().add(&t);
            }
        }
        out
    }
}

/// Takes snapshots for the views, apart from the session.
pub struct Reader {
    maps: Maps,
    status: watch::Receiver<Arc<Status>>,
}

impl Reader {
    /// A reader over `maps`, following the session's published status.
    pub fn new(maps: Maps, status: watch::Receiver<Arc<Status>>) -> Self {
        Reader { maps, status }
    }

    /// The counters now, and the catalog that names their sections.
    pub fn take(&self) -> Result<(Arc<Catalog>, Snapshot), AttachError> {
        let values = self.maps.read()?;
        // After the read, never before (see the module documentation).
        let status = self.status.borrow().clone();
        Ok((status.catalog.clone(), Snapshot::new(values, status)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counters(e: u64, a: u64, c: u64, k: u64) -> Counters {
        Counters([e, a, c, k, 0, 0, k, 0, 0, 0, 0, 0])
    }

    fn key(tgid: u32, section: u32, cpu: u32) -> CountKey {
        CountKey {
            tgid,
            section,
            cpu,
            _pad: 0,
        }
    }

    #[test]
    fn groups_sum_per_key() {
        let mut s = Snapshot::default();
        s.counts.insert(key(1, 0, 0), counters(5, 1, 0, 1));
        s.counts.insert(key(1, 0, 1), counters(3, 0, 1, 0));
        s.counts.insert(key(2, 1, 0), counters(7, 2, 2, 1));
        let per_cpu = s.group_by(|k| (k.section == 0).then_some(k.cpu));
        assert_eq!(per_cpu[&0].commits, 4);
        assert_eq!(per_cpu[&1].commits, 2);
        let per_process = s.group_by(|k| Some(k.tgid));
        assert_eq!(per_process[&2].entries, 7);
    }

    #[test]
    fn final_counts_replace_what_the_maps_still_hold() {
        let mut values = MapValues::default();
        // Process 1 exited: its counter sets partly gone from the maps, partly still there.
        values.counts.insert(key(1, 0, 1), counters(3, 0, 1, 0));
        values.counts.insert(key(2, 1, 0), counters(7, 2, 2, 1));
        let status = Status {
            finished: Arc::new(BTreeMap::from([
                (key(1, 0, 0), counters(5, 1, 0, 1)),
                (key(1, 0, 1), counters(4, 0, 1, 0)),
            ])),
            ..Status::default()
        };
        let s = Snapshot::new(values, Arc::new(status));
        let per_process = s.group_by(|k| Some(k.tgid));
        assert_eq!(per_process[&1].entries, 9);
        assert_eq!(per_process[&2].entries, 7);
    }
}
