//! What a scrape exports, taken from one snapshot: the counter values summed into one
//! [`Tally`] per label set, and the few figures the health metrics show.

use std::{collections::BTreeMap, time::Duration};

use rseq_common::{health::Health, mode::Mode};

use crate::{
    catalog::Catalog,
    sampling::SamplingStats,
    snapshot::{counts::Tally, Snapshot},
};

/// How processes appear in the labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcessLabels {
    /// `comm` and `pid`; a process that exits drops its series.
    Pid,
    /// `binary`: the traced file, summed over every process running it (exited ones included,
    /// so counters never go down).
    Binary,
}

impl ProcessLabels {
    /// The label names of a series, `cpu` last when per CPU.
    pub fn names(self, per_cpu: bool) -> Vec<&'static str> {
        let mut names = match self {
            ProcessLabels::Pid => vec!["comm", "pid", "key"],
            ProcessLabels::Binary => vec!["binary", "key"],
        };
        if per_cpu {
            names.push("cpu");
        }
        names
    }
}

/// One scrape's copy of everything it exports.
#[derive(Debug)]
pub struct ScrapeView {
    /// The tracing mode, which decides what the counts mean.
    pub mode: Mode,
    /// Label values (in [`ProcessLabels::names`] order) -> their counts.
    pub series: BTreeMap<Vec<String>, Tally>,
    /// Sampled mode: the same, with the cancels of sections whose cancel probes are attached
    /// only in windows taken as the sample they are (what the estimates are made from).
    pub sampled: BTreeMap<Vec<String>, Tally>,
    /// Events the eBPF side could not attribute, indexed by [`Health`].
    pub health: [u64; Health::COUNT as usize],
    /// Uprobes attached.
    pub probes: usize,
    /// Critical sections with probes.
    pub traced_sections: usize,
    /// The reason label of every section not traced.
    pub skipped: Vec<&'static str>,
    /// Whether the rseq_ip_fixup tracepoint is attached, so kernel restarts are counted.
    pub restarts_counted: bool,
    /// Sampled mode: the windows and what they cost.
    pub sampling: SamplingStats,
    /// Longest time between two passes of the tracer's poll loop since start.
    pub poll_gap_max: Duration,
}

impl ScrapeView {
    /// Reads the maps and copies what the metrics need.
    pub fn new(
        catalog: &Catalog,
        snapshot: &Snapshot,
        labels: ProcessLabels,
        per_cpu: bool,
    ) -> ScrapeView {
        let status = &snapshot.status;
        let mut series: BTreeMap<Vec<String>, Tally> = BTreeMap::new();
        let mut sampled: BTreeMap<Vec<String>, Tally> = BTreeMap::new();
        for (k, c) in &snapshot.counts {
            let Some(section) = catalog.section(k.section) else {
                continue;
            };
            let mut values = match labels {
                ProcessLabels::Pid => {
                    if status.exited.contains(&k.tgid) {
                        continue;
                    }
                    let comm = status.processes.get(&k.tgid).cloned().unwrap_or_default();
                    vec![comm, k.tgid.to_string(), section.key.clone()]
                }
                ProcessLabels::Binary => vec![section.object.clone(), section.key.clone()],
            };
            if per_cpu {
                values.push(k.cpu.to_string());
            }
            let t = Tally::from_counters(c);
            if status.mode == rseq_common::mode::Mode::Sampled {
                let s = status.windowed.tally(k.section, c);
                sampled.entry(values.clone()).or_default().add(&s);
            }
            series.entry(values).or_default().add(&t);
        }
        let skipped: Vec<&'static str> = catalog
            .sections()
            .filter_map(|s| s.plan.as_ref().err())
            .map(|why| why.label())
            .collect();
        ScrapeView {
            mode: status.mode,
            series,
            sampled,
            health: snapshot.health,
            probes: status.probes,
            traced_sections: catalog.len() - skipped.len(),
            skipped,
            restarts_counted: status.restarts_counted,
            sampling: status.sampling,
            poll_gap_max: status.poll_gap.max(),
        }
    }
}
