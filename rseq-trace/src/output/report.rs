//! The summary of a tracing run: per section, per key, per CPU and per process, as a table for
//! people or JSON for scripts.

use std::{collections::BTreeMap, fmt::Write as _, time::Duration};

use rseq_common::{health::Health, mode::Mode};
use serde::Serialize;

use crate::{
    snapshot::counts::Snapshot,
    snapshot::counts::Tally,
    session::Session,
    output::positions::{self, Position},
    catalog::probe_plan::ProbePlan,
    sampling::SamplingStats,
};

#[derive(Debug, Serialize)]
pub struct Report {
    /// `exact`; `aborts` (entries and commits not counted: `null`, and so is `abort_ratio`); or
    /// `sampled` (entries and commits are estimates, each tally carrying an `estimate` object).
    #[serde(serialize_with = "mode_name")]
    pub mode: Mode,
    /// Seconds the probes were attached.
    pub seconds: f64,
    /// Whether kernel restarts were counted (the rseq_ip_fixup tracepoint was available).
    pub kernel_restarts_counted: bool,
    /// Whether restarts have causes (the scheduler and signal tracepoints were available).
    pub restart_causes_counted: bool,
    pub keys: Vec<KeyReport>,
    /// All keys together, per CPU the attempts entered on.
    pub per_cpu: BTreeMap<u32, Tally>,
    pub sections: Vec<SectionReport>,
    pub processes: Vec<ProcessReport>,
    /// Events the eBPF side could not attribute, by cause (all zero in a clean run).
    pub health: BTreeMap<&'static str, u64>,
    /// Sampled mode: the windows and what they cost.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sampling: Option<SamplingStats>,
    /// Findings about the tracing itself that change what the counts mean, one sentence each
    /// (aborts made by our own probes).
    pub warnings: Vec<String>,
}

/// A key: the group a marker table names, or a single section.
#[derive(Debug, Serialize)]
pub struct KeyReport {
    pub key: String,
    pub sections: Vec<String>,
    #[serde(flatten)]
    pub total: Tally,
    /// `null` where entries are unknown ([`Tally::abort_ratio`]).
    pub abort_ratio: Option<f64>,
    /// Per CPU the attempts entered on; CPUs with no entries are left out.
    pub per_cpu: BTreeMap<u32, Tally>,
    /// Where the kernel interrupted the key's sections, most restarts first (at most
    /// [`TOP_POSITIONS`]).
    pub positions: Vec<Position>,
}

/// Bars of a key's position histogram kept in the report.
pub const TOP_POSITIONS: usize = 10;

#[derive(Debug, Serialize)]
pub struct SectionReport {
    pub name: String,
    pub key: String,
    pub object: String,
    pub start_ip: u64,
    pub post_commit_ip: u64,
    pub abort_ip: u64,
    pub exits: Vec<u64>,
    /// Where the probes are, or `null` with `refused` saying why there are none.
    pub probes: Option<ProbePlan>,
    pub refused: Option<String>,
    /// The kind of refusal, a stable label (`no_entry_store`, `probe_in_section`, `other`).
    pub refusal: Option<&'static str>,
    #[serde(flatten)]
    pub total: Tally,
    pub abort_ratio: Option<f64>,
    pub per_cpu: BTreeMap<u32, Tally>,
}

#[derive(Debug, Serialize)]
pub struct ProcessReport {
    pub pid: u32,
    pub comm: String,
    #[serde(flatten)]
    pub total: Tally,
    pub per_key: BTreeMap<String, Tally>,
}

impl Report {
    pub fn new(engine: &Session, snapshot: &Snapshot, elapsed: Duration) -> Self {
        let key_of = |section: u32| engine.sections.get(section as usize).map(|s| s.key.clone());
        let mode = engine.mode();
        let sampled = mode == Mode::Sampled;
        let per_key = finish(snapshot.group_by(|k| key_of(k.section)), mode);
        // Each regrouped once (linear in the counter sets), then taken whole per key, section
        // or process, rather than filtered out of the flat map for each of them.
        let mut per_key_cpu = nest(
            finish(
                snapshot.group_by(|k| key_of(k.section).map(|key| (key, k.cpu))),
                mode,
            ),
            Tally::seen,
        );
        let per_section = finish(snapshot.group_by(|k| Some(k.section)), mode);
        let mut per_section_cpu = nest(
            finish(snapshot.group_by(|k| Some((k.section, k.cpu))), mode),
            Tally::seen,
        );
        let per_process = finish(snapshot.group_by(|k| Some(k.tgid)), mode);
        let mut per_process_key = nest(
            finish(
                snapshot.group_by(|k| key_of(k.section).map(|key| (k.tgid, key))),
                mode,
            ),
            |_| true,
        );

        let mut bars: BTreeMap<String, Vec<Position>> = BTreeMap::new();
        for ((section, offset), restarts) in positions::by_section_offset(&snapshot.positions) {
            let Some(s) = engine.sections.get(section as usize) else {
                continue;
            };
            let (instruction, source) = engine.describe_position(section, offset);
            bars.entry(s.key.clone()).or_default().push(Position {
                section: s.name.clone(),
                offset,
                restarts,
                instruction,
                source,
            });
        }
        let mut keys: BTreeMap<String, KeyReport> = BTreeMap::new();
        for s in &engine.sections {
            let total = per_key
                .get(&s.key)
                .copied()
                .unwrap_or_else(|| as_counted(Tally::default(), mode));
            keys.entry(s.key.clone())
                .or_insert_with(|| KeyReport {
                    key: s.key.clone(),
                    sections: vec![],
                    abort_ratio: total.abort_ratio(),
                    total,
                    per_cpu: per_key_cpu.remove(&s.key).unwrap_or_default(),
                    positions: positions::hottest(
                        bars.remove(&s.key).unwrap_or_default(),
                        TOP_POSITIONS,
                    ),
                })
                .sections
                .push(s.name.clone());
        }
        let sections = engine
            .sections
            .iter()
            .map(|s| {
                let total = per_section
                    .get(&s.id)
                    .copied()
                    .unwrap_or_else(|| as_counted(Tally::default(), mode));
                SectionReport {
                    name: s.name.clone(),
                    key: s.key.clone(),
                    object: s.object.clone(),
                    start_ip: s.cs.start_ip,
                    post_commit_ip: s.cs.post_commit_ip,
                    abort_ip: s.cs.abort_ip,
                    exits: s.cs.exits.clone(),
                    probes: s.plan.as_ref().ok().cloned(),
                    refused: s.plan.as_ref().err().map(ToString::to_string),
                    refusal: s.plan.as_ref().err().map(|r| r.label()),
                    abort_ratio: total.abort_ratio(),
                    total,
                    per_cpu: per_section_cpu.remove(&s.id).unwrap_or_default(),
                }
            })
            .collect();
        let processes = per_process
            .iter()
            .map(|(pid, total)| ProcessReport {
                pid: *pid,
                comm: engine
                    .processes
                    .get(pid)
                    .cloned()
                    .unwrap_or_else(|| "?".into()),
                total: *total,
                per_key: per_process_key.remove(pid).unwrap_or_default(),
            })
            .collect();
        Report {
            mode: engine.mode(),
            seconds: elapsed.as_secs_f64(),
            kernel_restarts_counted: engine.restarts_counted(),
            restart_causes_counted: engine.causes_counted(),
            warnings: probe_warnings(keys.values()),
            keys: keys.into_values().collect(),
            per_cpu: finish(snapshot.group_by(|k| Some(k.cpu)), mode),
            sections,
            processes,
            health: Health::ALL
                .iter()
                .map(|h| (h.name(), snapshot.health[*h as usize]))
                .collect(),
            sampling: sampled.then_some(engine.sampling),
        }
    }

    /// The warnings, one line each, for the end of the summary.
    fn warnings_text(&self) -> String {
        self.warnings
            .iter()
            .map(|w| format!("warning: {w}\n"))
            .collect()
    }

    /// The human summary: one row per key, then the processes.
    pub fn to_table(&self) -> String {
        let width = self
            .keys
            .iter()
            .map(|k| k.key.len())
            .max()
            .unwrap_or(0)
            .max(3);
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<width$}  {:>12}  {:>12}  {:>10}  {:>10}  {:>10}  {:>7}",
            "KEY", "ENTRIES", "COMMITS", "ABORTS", "KERNEL", "CANCELS", "ABORT%"
        );
        let counted = self.mode != Mode::Aborts;
        for k in &self.keys {
            let t = &k.total;
            let (entries, commits) = if counted {
                (shown(t.entries, t), shown(t.commits, t))
            } else {
                ("-".into(), "-".into())
            };
            let ratio = percent(k.abort_ratio, t);
            let _ = writeln!(
                out,
                "{:<width$}  {:>12}  {:>12}  {:>10}  {:>10}  {:>10}  {:>7}",
                k.key, entries, commits, t.aborts, t.kernel_restarts, t.cancels, ratio
            );
        }
        if !counted {
            let _ = writeln!(out, "(mode aborts: entries and commits are not counted)");
        }
        if let Some(s) = &self.sampling {
            let _ = writeln!(
                out,
                "(mode sampled: ~ marks estimates, ± is {} standard errors; {} windows, {:.2} s open, probe cost about {:.2}% of the traced threads' CPU time, budget {}%)",
                crate::sampling::estimate::SIGMAS,
                s.windows,
                s.window_seconds,
                100.0 * s.probe_cost_seconds / s.traced_cpu_seconds.max(1e-9),
                s.budget_percent
            );
        }
        if self.kernel_restarts_counted {
            let _ = writeln!(out, "\nwhy and where they aborted:");
            for k in &self.keys {
                let causes: Vec<String> = k
                    .total
                    .abort_causes
                    .named()
                    .iter()
                    .filter(|(_, n)| *n > 0)
                    .map(|(name, n)| format!("{name} {n}"))
                    .collect();
                if causes.is_empty() {
                    continue;
                }
                let _ = writeln!(out, "{:<width$}  {}", k.key, causes.join(", "));
                if let Some(p) = k.positions.first() {
                    let _ = writeln!(out, "{:<width$}  hottest: {}", "", describe(p));
                }
            }
        }
        out.push_str(&self.warnings_text());
        for s in self.sections.iter().filter(|s| s.refused.is_some()) {
            let _ = writeln!(
                out,
                "{}: not traced: {}",
                s.name,
                s.refused.as_deref().unwrap_or("")
            );
        }
        if self.processes.len() > 1 {
            let _ = writeln!(
                out,
                "\n{:>8}  {:<16}  {:>12}  {:>12}  {:>10}  {:>10}",
                "PID", "COMM", "ENTRIES", "COMMITS", "ABORTS", "CANCELS"
            );
            for p in &self.processes {
                let _ = writeln!(
                    out,
                    "{:>8}  {:<16}  {:>12}  {:>12}  {:>10}  {:>10}",
                    p.pid,
                    p.comm,
                    shown(p.total.entries, &p.total),
                    shown(p.total.commits, &p.total),
                    p.total.aborts,
                    p.total.cancels
                );
            }
        }
        let lost: u64 = self.health.values().sum();
        if lost > 0 {
            let _ = writeln!(out, "unattributed events: {:?}", self.health);
        }
        if !self.kernel_restarts_counted {
            let _ = writeln!(
                out,
                "(KERNEL: not counted, the rseq_ip_fixup tracepoint is unavailable)"
            );
        }
        out
    }
}

/// Tallies as the mode makes them (a sampled run's each extrapolated from its own sums): entries marked unknown in aborts mode, extrapolated in
/// sampled mode, as counted in exact mode.
fn finish<G: Ord>(groups: BTreeMap<G, Tally>, mode: Mode) -> BTreeMap<G, Tally> {
    groups
        .into_iter()
        .map(|(g, t)| (g, as_counted(t, mode)))
        .collect()
}

/// One tally as the mode makes it (see [`finish`]).
fn as_counted(t: Tally, mode: Mode) -> Tally {
    match mode {
        Mode::Exact => t,
        Mode::Aborts => Tally {
            entries_unknown: true,
            ..t
        },
        Mode::Sampled => crate::sampling::estimate::extrapolate(&t),
    }
}

/// An abort ratio in percent, `~` when it rests on estimated entries, `-` where entries are
/// unknown.
pub fn percent(ratio: Option<f64>, t: &Tally) -> String {
    match (ratio, t.estimate) {
        (None, _) => "-".into(),
        (Some(r), None) => format!("{:.2}%", 100.0 * r),
        (Some(r), Some(_)) => format!("~{:.2}%", 100.0 * r),
    }
}

/// An entries or commits figure, marked `~N±U` when it is an estimate.
pub fn shown(value: u64, t: &Tally) -> String {
    match t.estimate {
        None => value.to_string(),
        Some(e) => match e.uncertainty {
            Some(u) => format!("~{value}±{u}"),
            None => format!(">={value}"),
        },
    }
}

/// "`sub rcx,1` at start+0xe (file.rs:88) of f+0x3b, 57 restarts".
pub fn describe(p: &Position) -> String {
    format!("{} of {}, {} restarts", p.place(), p.section, p.restarts)
}

/// One warning per key some of whose aborts our own entry probe made ([`Cause::Probe`]).
///
/// [`Cause::Probe`]: rseq_common::cause::Cause::Probe
fn probe_warnings<'a>(keys: impl Iterator<Item = &'a KeyReport>) -> Vec<String> {
    keys.filter(|k| k.total.abort_causes.probe > 0)
        .map(|k| {
            format!(
                "{} of the {} aborts of {} were made by rseq-trace's own entry probe: a trap on \
                 the descriptor store returns to start_ip with the section armed (cause `probe`; \
                 untraced they would not happen; `--mode aborts` puts no probe there)",
                k.total.abort_causes.probe, k.total.aborts, k.key
            )
        })
        .collect()
}

/// A [`Mode`] in JSON: its name.
fn mode_name<S: serde::Serializer>(mode: &Mode, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(mode.name())
}

/// `(a, b) -> tally` as `a -> (b -> tally)`, keeping the tallies `keep` accepts: one pass.
fn nest<A: Ord, B: Ord>(
    flat: BTreeMap<(A, B), Tally>,
    keep: fn(&Tally) -> bool,
) -> BTreeMap<A, BTreeMap<B, Tally>> {
    let mut out: BTreeMap<A, BTreeMap<B, Tally>> = BTreeMap::new();
    for ((a, b), t) in flat {
        if keep(&t) {
            out.entry(a).or_default().insert(b, t);
        }
    }
    out
}
