//! Ground truth: what the workload itself observed, per section and per CPU, merged
//! over threads, checked against the per-CPU data, and printed as the JSON a tracer's
//! counts are compared with.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::sections::{Outcome, RuntimeDescriptor, Section};

/// Counts for one section in one thread (or merged over threads).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct SectionTruth {
    /// Calls into the section function.
    pub entries: u64,
    /// Calls that ran the commit store.
    pub commits: u64,
    /// Calls that left through abort_ip.
    pub aborts: u64,
    /// Calls that left through the exit point.
    pub cancels: u64,
    /// Aborts after which the thread was on another CPU than the one its section checked
    /// (deliberate mismatches left out): the kernel's migration restarts and the section's
    /// own check after a move, whoever made it.
    pub moved_aborts: u64,
    /// Commits indexed by the CPU passed to the section.
    pub commits_per_cpu: Vec<u64>,
}

impl SectionTruth {
    fn new(ncpus: usize) -> Self {
        SectionTruth {
            commits_per_cpu: vec![0; ncpus],
            ..Self::default()
        }
    }

    fn record(&mut self, cpu: u32, outcome: Outcome) {
        self.entries += 1;
        match outcome {
            Outcome::Committed => {
                self.commits += 1;
                if let Some(c) = self.commits_per_cpu.get_mut(cpu as usize) {
                    *c += 1;
                }
            }
            Outcome::Aborted => self.aborts += 1,
            Outcome::Cancelled => self.cancels += 1,
        }
    }

    fn merge(&mut self, other: &SectionTruth) {
        self.entries += other.entries;
        self.commits += other.commits;
        self.aborts += other.aborts;
        self.cancels += other.cancels;
        self.moved_aborts += other.moved_aborts;
        if self.commits_per_cpu.len() < other.commits_per_cpu.len() {
            self.commits_per_cpu.resize(other.commits_per_cpu.len(), 0);
        }
        for (a, b) in self.commits_per_cpu.iter_mut().zip(&other.commits_per_cpu) {
            *a += b;
        }
    }

    fn commits_on(&self, cpu: usize) -> u64 {
        self.commits_per_cpu.get(cpu).copied().unwrap_or(0)
    }
}

/// Everything one worker counted (or the merge of all workers).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Truth {
    /// Indexed by `Section as usize`.
    pub sections: [SectionTruth; 3],
    /// Wrapping sum of the items whose push committed.
    pub pushed_sum: u64,
    /// Wrapping sum of the items whose pop committed.
    pub popped_sum: u64,
    /// Loop iterations run.
    pub iterations: u64,
    /// `--steady-after`: loop iterations run before the steady part began.
    pub iterations_before_steady: u64,
    /// CPU nanoseconds the loop used, and of them before the steady part began.
    pub cpu_ns: u64,
    pub cpu_ns_before_steady: u64,
    /// SIGUSR1 sent with tgkill that the kernel accepted.
    pub signals_sent: u64,
    /// Time-slice extensions the kernel granted (`--slice-extension`).
    pub slice_grants: u64,
}

impl Truth {
    /// Empty counts for `ncpus` CPUs.
    pub(crate) fn new(ncpus: usize) -> Self {
        Truth {
            sections: [
                SectionTruth::new(ncpus),
                SectionTruth::new(ncpus),
                SectionTruth::new(ncpus),
            ],
            pushed_sum: 0,
            popped_sum: 0,
            iterations: 0,
            iterations_before_steady: 0,
            cpu_ns: 0,
            cpu_ns_before_steady: 0,
            signals_sent: 0,
            slice_grants: 0,
        }
    }

    /// Records one call into `section` for `cpu`.
    pub(crate) fn record(&mut self, section: Section, cpu: u32, outcome: Outcome) {
        self.sections[section as usize].record(cpu, outcome);
    }

    /// One more abort of `section` after which the thread found itself on another CPU than
    /// the one the section checked.
    pub(crate) fn record_moved(&mut self, section: Section) {
        self.sections[section as usize].moved_aborts += 1;
    }

    /// Counts for one section.
    pub(crate) fn section(&self, section: Section) -> &SectionTruth {
        &self.sections[section as usize]
    }

    /// Adds another thread's counts to these.
    pub(crate) fn merge(&mut self, other: &Truth) {
        for (a, b) in self.sections.iter_mut().zip(&other.sections) {
            a.merge(b);
        }
        self.pushed_sum = self.pushed_sum.wrapping_add(other.pushed_sum);
        self.popped_sum = self.popped_sum.wrapping_add(other.popped_sum);
        self.iterations += other.iterations;
        self.iterations_before_steady += other.iterations_before_steady;
        self.cpu_ns += other.cpu_ns;
        self.cpu_ns_before_steady += other.cpu_ns_before_steady;
        self.signals_sent += other.signals_sent;
        self.slice_grants += other.slice_grants;
    }
}

/// Compares the merged truth with the final per-CPU data and returns every violation,
/// one line each. Empty means the sections never lost or duplicated an update.
///
/// `stacks[cpu]` is `None` when that stack's `len` is out of range.
pub(crate) fn check_invariants(
    truth: &Truth,
    counters: &[u64],
    stacks: &[Option<Vec<u64>>],
) -> Vec<String> {
    let mut problems = Vec::new();
    for s in Section::ALL {
        let t = truth.section(s);
        if t.entries != t.commits + t.aborts + t.cancels {
            problems.push(format!(
                "{}: entries {} != commits {} + aborts {} + cancels {}",
                s.key(),
                t.entries,
                t.commits,
                t.aborts,
                t.cancels
            ));
        }
    }
    let add = truth.section(Section::CounterAdd);
    for (cpu, &value) in counters.iter().enumerate() {
        if value != add.commits_on(cpu) {
            problems.push(format!(
                "cpu {cpu}: counter is {value} but counter_add committed {} times there",
                add.commits_on(cpu)
            ));
        }
    }
    let push = truth.section(Section::ListPush);
    let pop = truth.section(Section::ListPop);
    let mut held_sum = 0u64;
    for (cpu, stack) in stacks.iter().enumerate() {
        let Some(items) = stack else {
            problems.push(format!("cpu {cpu}: stack length is out of range"));
            continue;
        };
        held_sum = items.iter().fold(held_sum, |a, &v| a.wrapping_add(v));
        let expected = i128::from(push.commits_on(cpu)) - i128::from(pop.commits_on(cpu));
        if items.len() as i128 != expected {
            problems.push(format!(
                "cpu {cpu}: stack holds {} items but push commits - pop commits there = {expected}",
                items.len()
            ));
        }
    }
    let expected_sum = truth.pushed_sum.wrapping_sub(truth.popped_sum);
    if held_sum != expected_sum {
        problems.push(format!(
            "stacks hold items summing to {held_sum} but pushed - popped = {expected_sum}"
        ));
    }
    problems
}

/// One section in the report.
#[derive(Serialize)]
pub(crate) struct SectionReport {
    function: &'static str,
    entries: u64,
    commits: u64,
    aborts: u64,
    cancels: u64,
    moved_aborts: u64,
    /// Only CPUs with commits; serde_json writes the integer keys as strings.
    commits_per_cpu: BTreeMap<usize, u64>,
}

impl SectionReport {
    fn new(section: Section, t: &SectionTruth) -> Self {
        SectionReport {
            function: section.function(),
            entries: t.entries,
            commits: t.commits,
            aborts: t.aborts,
            cancels: t.cancels,
            moved_aborts: t.moved_aborts,
            commits_per_cpu: t
                .commits_per_cpu
                .iter()
                .enumerate()
                .filter(|(_, &n)| n > 0)
                .map(|(cpu, &n)| (cpu, n))
                .collect(),
        }
    }
}

/// The three sections, in a fixed order.
#[derive(Serialize)]
pub(crate) struct SectionsReport {
    counter_add: SectionReport,
    list_push: SectionReport,
    list_pop: SectionReport,
}

/// The one JSON object printed on stdout at exit.
#[derive(Serialize)]
pub(crate) struct Report {
    /// Process id (what a tracer attaches to).
    pub pid: u32,
    /// Worker threads.
    pub threads: usize,
    /// Per-section ground truth.
    pub sections: SectionsReport,
    /// SIGUSR1 handled by the workers' handler.
    pub signals_received: u64,
    /// Of those, the ones that interrupted a section, which the kernel restarted: the handler
    /// saw the section's abort_ip as the interrupted pc.
    pub signal_restarts: u64,
    /// Whether every invariant held.
    pub invariant_ok: bool,
    /// SIGUSR1 sent (accepted by tgkill).
    pub signals_sent: u64,
    /// Time-slice extensions the kernel granted (`--slice-extension`).
    pub slice_grants: u64,
    /// `--migrate-every-ms`: worker affinity changes (`sched_setaffinity`) that
    /// succeeded; 0 without the option. Each pinned a worker to a single CPU, different
    /// from the one the previous change pinned it to; how many caught a worker inside a
    /// section is for the tracer to tell (kernel restarts with cause "migration").
    pub migrations_requested: u64,
    /// Loop iterations summed over all threads.
    pub total_iterations: u64,
    /// Wall time of the worker phase (after the gate).
    pub elapsed_secs: f64,
    /// `--steady-after`: iterations summed over all threads since the steady part began, and
    /// its wall time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub steady_iterations: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub steady_secs: Option<f64>,
    /// CPU seconds the workers' loops used (their threads' own clocks), in all and in the
    /// steady part: iterations per CPU second is what a tracer's probes take from the traced
    /// threads, whatever else the machine runs.
    pub cpu_secs: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub steady_cpu_secs: Option<f64>,
    /// Per-CPU slots allocated.
    pub possible_cpus: usize,
    /// "glibc", "own" (32 bytes) or "own-extended" (the kernel's feature size).
    pub rseq_registration: &'static str,
    /// The length the rseq area was registered with (over 32: the V2 ABI on Linux 7.1+).
    pub rseq_len: u32,
    /// `--dlopen-after-gate`: seconds the library load took (a tracer's hold included).
    pub library_load_secs: Option<f64>,
    /// "executable" (the built-in sections) or the file of the `--sections-lib` library
    /// the sections ran from.
    pub sections_from: String,
    /// The critical sections at their run-time addresses.
    pub descriptors: Vec<RuntimeDescriptor>,
}

impl SectionsReport {
    /// Builds the per-section part of the report from merged truth.
    pub(crate) fn new(truth: &Truth) -> Self {
        SectionsReport {
            counter_add: SectionReport::new(
                Section::CounterAdd,
                truth.section(Section::CounterAdd),
            ),
            list_push: SectionReport::new(Section::ListPush, truth.section(Section::ListPush)),
            list_pop: SectionReport::new(Section::ListPop, truth.section(Section::ListPop)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Truth {
        let mut t = Truth::new(2);
        t.record(Section::CounterAdd, 1, Outcome::Committed);
        t.record(Section::CounterAdd, 0, Outcome::Aborted);
        t.record(Section::ListPush, 1, Outcome::Committed);
        t.pushed_sum = 7;
        t.record(Section::ListPush, 1, Outcome::Cancelled);
        t
    }

    #[test]
    fn consistent_state_passes() {
        let t = sample();
        assert!(check_invariants(&t, &[0, 1], &[Some(vec![]), Some(vec![7])]).is_empty());
    }

    #[test]
    fn violations_are_reported() {
        let t = sample();
        let p = check_invariants(&t, &[1, 1], &[Some(vec![]), Some(vec![8])]);
        assert_eq!(p.len(), 2, "{p:?}");
        let p = check_invariants(&t, &[0, 1], &[None, Some(vec![7])]);
        assert_eq!(p.len(), 1, "{p:?}");
    }

    #[test]
    fn merge_and_json_shape() {
        let mut a = sample();
        a.merge(&sample());
        assert_eq!(a.section(Section::ListPush).entries, 4);
        assert_eq!(a.pushed_sum, 14);
        let r = Report {
            pid: 1,
            threads: 2,
            sections: SectionsReport::new(&a),
            signals_received: 0,
            signal_restarts: 0,
            invariant_ok: true,
            signals_sent: 0,
            slice_grants: 0,
            migrations_requested: 0,
            total_iterations: 0,
            elapsed_secs: 0.0,
            steady_iterations: None,
            steady_secs: None,
            cpu_secs: 0.0,
            steady_cpu_secs: None,
            possible_cpus: 2,
            rseq_registration: "glibc",
            rseq_len: 32,
            library_load_secs: None,
            sections_from: "executable".to_string(),
            descriptors: vec![],
        };
        let v: serde_json::Value = serde_json::to_value(&r).unwrap();
        let add = &v["sections"]["counter_add"];
        assert_eq!(add["function"], "rseq_workload_counter_add");
        assert_eq!(v["sections_from"], "executable");
        assert_eq!(add["commits_per_cpu"], serde_json::json!({"1": 2}));
        assert_eq!(
            v["sections"]["list_pop"]["commits_per_cpu"],
            serde_json::json!({})
        );
    }
}
