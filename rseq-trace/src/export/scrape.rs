//! What a scrape takes from the engine while it holds the engine's lock: the counter values,
//! summed into one [`Tally`] per label set, and the few figures the health metrics show. Building
//! the metric families and encoding them (most of a scrape's time: 0.7 s at 10,000 sections in
//! exact mode) happens after the lock is released, so the poll loop, which continues processes
//! held at library loads, waits only for the map read.

use std::{collections::BTreeMap, time::Duration};

use rseq_common::{health::Health, mode::Mode};

use crate::{snapshot::counts::Tally, session::Session, error::SessionError, sampling::SamplingStats};

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
    pub mode: Mode,
    /// Label values (in [`ProcessLabels::names`] order) -> their counts.
    pub series: BTreeMap<Vec<String>, Tally>,
    pub health: [u64; Health::COUNT as usize],
    pub probes: usize,
    pub traced_sections: usize,
    /// The reason label of every section not traced.
    pub skipped: Vec<&'static str>,
    pub restarts_counted: bool,
    pub sampling: SamplingStats,
    pub poll_gap_max: Duration,
}

impl ScrapeView {
    /// Reads the maps and copies what the metrics need.
    pub fn read(
        engine: &Session,
        labels: ProcessLabels,
        per_cpu: bool,
    ) -> Result<ScrapeView, SessionError> {
        let snapshot = engine.snapshot()?;
        let mut series: BTreeMap<Vec<String>, Tally> = BTreeMap::new();
        for (k, c) in &snapshot.counts {
            let Some(section) = engine.sections.get(k.section as usize) else {
                continue;
            };
            let mut values = match labels {
                ProcessLabels::Pid => {
                    if engine.has_exited(k.tgid) {
                        continue;
                    }
                    let comm = engine.processes.get(&k.tgid).cloned().unwrap_or_default();
                    vec![comm, k.tgid.to_string(), section.key.clone()]
                }
                ProcessLabels::Binary => vec![section.object.clone(), section.key.clone()],
            };
            if per_cpu {
                values.push(k.cpu.to_string());
            }
            series
                .entry(values)
                .or_default()
                .add(&Tally::from_counters(c));
        }
        let skipped: Vec<&'static str> = engine
            .sections
            .iter()
            .filter_map(|s| s.plan.as_ref().err())
            .map(|why| why.label())
            .collect();
        Ok(ScrapeView {
            mode: engine.mode(),
            series,
            health: snapshot.health,
            probes: engine.probes(),
            traced_sections: engine.sections.len() - skipped.len(),
            skipped,
            restarts_counted: engine.restarts_counted(),
            sampling: engine.sampling,
            poll_gap_max: engine.poll_gap.max(),
        })
    }
}
