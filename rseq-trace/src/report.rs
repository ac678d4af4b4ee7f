//! The end-of-session summary: one row per section, as a table for people or JSON for scripts.

use std::{collections::BTreeMap, fmt::Write as _};

use rseq_common::health::Health;
use serde::Serialize;

use crate::{
    counts::{Snapshot, Tally},
    probe_points::ProbePlan,
    session::Session,
};

#[derive(Debug, Serialize)]
pub struct Report {
    pub pid: u32,
    pub comm: String,
    pub exe: String,
    pub sections: Vec<SectionReport>,
    /// Events the eBPF side could not attribute, by cause (all zero in a clean run).
    pub health: BTreeMap<&'static str, u64>,
}

#[derive(Debug, Serialize)]
pub struct SectionReport {
    pub name: String,
    pub start_ip: u64,
    pub post_commit_ip: u64,
    pub abort_ip: u64,
    pub exits: Vec<u64>,
    /// Where the probes are, or `null` with `refused` saying why there are none.
    pub probes: Option<ProbePlan>,
    pub refused: Option<String>,
    #[serde(flatten)]
    pub total: Tally,
    pub abort_ratio: f64,
    /// Per CPU the attempts entered on; CPUs with no entries are left out.
    pub per_cpu: BTreeMap<u32, Tally>,
}

impl Report {
    pub fn new(session: &Session, snapshot: &Snapshot) -> Self {
        let sections = session
            .sections
            .iter()
            .map(|s| {
                let id = s.id as usize;
                let total = snapshot.total(id);
                SectionReport {
                    name: s.name.clone(),
                    start_ip: s.cs.start_ip,
                    post_commit_ip: s.cs.post_commit_ip,
                    abort_ip: s.cs.abort_ip,
                    exits: s.cs.exits.clone(),
                    probes: s.plan.as_ref().ok().cloned(),
                    refused: s.plan.as_ref().err().cloned(),
                    abort_ratio: total.abort_ratio(),
                    total,
                    per_cpu: snapshot.sections[id]
                        .iter()
                        .enumerate()
                        .filter(|(_, t)| t.entries > 0)
                        .map(|(cpu, t)| (cpu as u32, *t))
                        .collect(),
                }
            })
            .collect();
        Report {
            pid: session.target.pid,
            comm: session.target.comm.clone(),
            exe: session.target.exe_name.clone(),
            sections,
            health: Health::ALL
                .iter()
                .map(|h| (h.name(), snapshot.health[*h as usize]))
                .collect(),
        }
    }

    /// The human table.
    pub fn to_table(&self) -> String {
        let width = self
            .sections
            .iter()
            .map(|s| s.name.len())
            .max()
            .unwrap_or(0)
            .max("SECTION".len());
        let mut out = String::new();
        let _ = writeln!(
            out,
            "rseq critical sections of pid {} ({}, {})",
            self.pid, self.comm, self.exe
        );
        let _ = writeln!(
            out,
            "{:<width$}  {:>12}  {:>12}  {:>10}  {:>10}  {:>7}",
            "SECTION", "ENTRIES", "COMMITS", "ABORTS", "CANCELS", "ABORT%"
        );
        for s in &self.sections {
            if let Some(why) = &s.refused {
                let _ = writeln!(out, "{:<width$}  not traced: {why}", s.name);
                continue;
            }
            let t = &s.total;
            let _ = writeln!(
                out,
                "{:<width$}  {:>12}  {:>12}  {:>10}  {:>10}  {:>6.2}%",
                s.name,
                t.entries,
                t.commits,
                t.aborts,
                t.cancels,
                100.0 * s.abort_ratio
            );
        }
        let lost: u64 = self.health.values().sum();
        if lost > 0 {
            let _ = writeln!(out, "unattributed events: {:?}", self.health);
        }
        out
    }
}
