//! The summary of a tracing run: per section, per key, per CPU and per process, as a table for
//! people or JSON for scripts.

use std::{collections::BTreeMap, time::Duration};

use rseq_common::{health::Health, mode::Mode};
use serde::Serialize;

use crate::{
    catalog::probe_plan::ProbePlan,
    catalog::Catalog,
    output::positions::{self, Position},
    sampling::SamplingStats,
    snapshot::counts::Tally,
    snapshot::Snapshot,
};

/// The summary of a tracing run, as the table and the JSON output show it.
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
    /// Per key, its sections and counts, in key order.
    pub keys: Vec<KeyReport>,
    /// All keys together, per CPU the attempts entered on.
    pub per_cpu: BTreeMap<u32, Tally>,
    /// Per section, its addresses, probes and counts, in catalog order.
    pub sections: Vec<SectionReport>,
    /// Per traced process, its counts in total and per key.
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
    /// The marker key, or the section's name when no marker table names a group.
    pub key: String,
    /// The names of the key's sections.
    pub sections: Vec<String>,
    /// The counts of all the key's sections together.
    #[serde(flatten)]
    pub total: Tally,
    /// Per CPU the attempts entered on; CPUs with no entries are left out.
    pub per_cpu: BTreeMap<u32, Tally>,
    /// Where the kernel interrupted the key's sections, most restarts first (at most
    /// [`TOP_POSITIONS`]).
    pub positions: Vec<Position>,
}

/// Bars of a key's position histogram kept in the report.
pub const TOP_POSITIONS: usize = 10;

/// One critical section: where it is, how it is probed, and what it counted.
#[derive(Debug, Serialize)]
pub struct SectionReport {
    /// `function+0xoffset` of start_ip, or the bare address without symbols.
    pub name: String,
    /// The key the section is counted under.
    pub key: String,
    /// The file it is in, as the traced process (or the user) names it.
    pub object: String,
    /// The section's first instruction.
    pub start_ip: u64,
    /// The first instruction after the commit.
    pub post_commit_ip: u64,
    /// The abort handler, where the kernel sends an interrupted attempt.
    pub abort_ip: u64,
    /// Exit points other than commit and abort (cancels).
    pub exits: Vec<u64>,
    /// Where the probes are, or `null` with `refused` saying why there are none.
    pub probes: Option<ProbePlan>,
    /// Why the section is not probed, or `null` when it is.
    pub refused: Option<String>,
    /// The kind of refusal, a stable label (`no_entry_store`, `probe_in_section`, `other`).
    pub refusal: Option<&'static str>,
    /// The section's counts.
    #[serde(flatten)]
    pub total: Tally,
    /// Per CPU the attempts entered on; CPUs with no entries are left out.
    pub per_cpu: BTreeMap<u32, Tally>,
}

/// One traced process and what its attempts counted.
#[derive(Debug, Serialize)]
pub struct ProcessReport {
    /// The process id (its tgid).
    pub pid: u32,
    /// Its command name, or `?` when its name was not seen.
    pub comm: String,
    /// The process's counts over all keys.
    #[serde(flatten)]
    pub total: Tally,
    /// The process's counts per key.
    pub per_key: BTreeMap<String, Tally>,
}

impl Report {
    /// The report of one snapshot, named by the catalog.
    pub fn new(catalog: &Catalog, snapshot: &Snapshot, elapsed: Duration) -> Self {
        let status = &snapshot.status;
        let mode = status.mode;
        let mut groups = Groups::new(catalog, snapshot);
        let keys = key_reports(catalog, &mut groups, &snapshot.positions);
        let sections = section_reports(catalog, &mut groups);
        let processes = groups
            .per_process
            .iter()
            .map(|(pid, total)| ProcessReport {
                pid: *pid,
                comm: status
                    .processes
                    .get(pid)
                    .cloned()
                    .unwrap_or_else(|| "?".into()),
                total: *total,
                per_key: groups.per_process_key.remove(pid).unwrap_or_default(),
            })
            .collect();
        Report {
            mode,
            seconds: elapsed.as_secs_f64(),
            kernel_restarts_counted: status.restarts_counted,
            restart_causes_counted: status.causes_counted,
            warnings: probe_warnings(keys.iter()),
            keys,
            per_cpu: finish(snapshot.group_by(|k| Some(k.cpu)), mode),
            sections,
            processes,
            health: Health::ALL
                .iter()
                .map(|h| (h.name(), snapshot.health[*h as usize]))
                .collect(),
            sampling: (mode == Mode::Sampled).then_some(status.sampling),
        }
    }
}

/// The tallies regrouped once each (linear in the counter sets), then taken whole per key,
/// section or process, rather than filtered out of the flat map for each of them.
struct Groups {
    mode: Mode,
    per_key: BTreeMap<String, Tally>,
    per_key_cpu: BTreeMap<String, BTreeMap<u32, Tally>>,
    per_section: BTreeMap<u32, Tally>,
    per_section_cpu: BTreeMap<u32, BTreeMap<u32, Tally>>,
    per_process: BTreeMap<u32, Tally>,
    per_process_key: BTreeMap<u32, BTreeMap<String, Tally>>,
}

impl Groups {
    fn new(catalog: &Catalog, snapshot: &Snapshot) -> Self {
        let mode = snapshot.status.mode;
        let key_of = |section: u32| catalog.section(section).map(|s| s.key.clone());
        let by_key_cpu = snapshot.group_by(|k| key_of(k.section).map(|key| (key, k.cpu)));
        let by_process_key = snapshot.group_by(|k| key_of(k.section).map(|key| (k.tgid, key)));
        Groups {
            mode,
            // Per key, the windows one by one widen the ratio's bounds where they spread.
            per_key: snapshot
                .group_by(|k| key_of(k.section))
                .into_iter()
                .map(|(key, t)| {
                    let moments = snapshot.status.moments.get(&key);
                    let t = t.with_ratio(mode, moments);
                    (key, t)
                })
                .collect(),
            per_key_cpu: nest(finish(by_key_cpu, mode), Tally::seen),
            per_section: finish(snapshot.group_by(|k| Some(k.section)), mode),
            per_section_cpu: nest(
                finish(snapshot.group_by(|k| Some((k.section, k.cpu))), mode),
                Tally::seen,
            ),
            per_process: finish(snapshot.group_by(|k| Some(k.tgid)), mode),
            per_process_key: nest(finish(by_process_key, mode), |_| true),
        }
    }

    /// A group's total, or an empty tally as the mode makes it.
    fn total<G: Ord>(&self, of: &BTreeMap<G, Tally>, group: &G) -> Tally {
        of.get(group)
            .copied()
            .unwrap_or_else(|| Tally::default().with_ratio(self.mode, None))
    }
}

/// One report per key, in key order, with its sections, CPUs and hottest positions.
fn key_reports(
    catalog: &Catalog,
    groups: &mut Groups,
    positions: &BTreeMap<rseq_common::cause::PositionKey, u64>,
) -> Vec<KeyReport> {
    let mut bars = position_bars(catalog, positions);
    let mut keys: BTreeMap<String, KeyReport> = BTreeMap::new();
    for s in catalog.sections() {
        if let Some(k) = keys.get_mut(&s.key) {
            k.sections.push(s.name.clone());
            continue;
        }
        let total = groups.total(&groups.per_key, &s.key);
        let report = KeyReport {
            key: s.key.clone(),
            sections: vec![s.name.clone()],
            total,
            per_cpu: groups.per_key_cpu.remove(&s.key).unwrap_or_default(),
            positions: positions::hottest(bars.remove(&s.key).unwrap_or_default(), TOP_POSITIONS),
        };
        keys.insert(s.key.clone(), report);
    }
    keys.into_values().collect()
}

/// Every position's bar, per key, named by instruction and source line.
fn position_bars(
    catalog: &Catalog,
    positions: &BTreeMap<rseq_common::cause::PositionKey, u64>,
) -> BTreeMap<String, Vec<Position>> {
    let mut bars: BTreeMap<String, Vec<Position>> = BTreeMap::new();
    for ((section, offset), restarts) in positions::by_section_offset(positions) {
        let Some(s) = catalog.section(section) else {
            continue;
        };
        let (instruction, source) = catalog.describe_position(section, offset);
        bars.entry(s.key.clone()).or_default().push(Position {
            section: s.name.clone(),
            offset,
            restarts,
            instruction,
            source,
        });
    }
    bars
}

/// One report per section, in catalog order.
fn section_reports(catalog: &Catalog, groups: &mut Groups) -> Vec<SectionReport> {
    catalog
        .sections()
        .map(|s| {
            let total = groups.total(&groups.per_section, &s.id);
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
                total,
                per_cpu: groups.per_section_cpu.remove(&s.id).unwrap_or_default(),
            }
        })
        .collect()
}

/// Tallies as the mode makes them ([`Tally::with_ratio`]), each from its own sums.
fn finish<G: Ord>(groups: BTreeMap<G, Tally>, mode: Mode) -> BTreeMap<G, Tally> {
    groups
        .into_iter()
        .map(|(g, t)| (g, t.with_ratio(mode, None)))
        .collect()
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
