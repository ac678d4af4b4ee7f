//! The promise users trust most: rseq-trace's counts equal what the traced program counted
//! itself, per section and per CPU, nothing lost. Real workload, real kernel, real uprobes.

mod support;

use std::collections::BTreeMap;

use serde_json::Value;
use support::{is_root, Tracer, Workload};

/// Gated workload, traced from before its first section to after its exit.
fn traced_run(args: &[&str], env: &[(&str, &str)]) -> (Value, Value) {
    let workload = Workload::start(args, env);
    let tracer = Tracer::attach(workload.pid, &[]);
    workload.release();
    let truth = workload.finish();
    let traced = tracer.finish(); // rseq-trace stops by itself when the workload exits
    (truth, traced)
}

fn count(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or_else(|| panic!("no {key} in {v}"))
}

/// Compares every section's counts, in total and per CPU, and returns the totals of aborts and
/// cancels so the caller can check that the run provoked them.
fn assert_exact(truth: &Value, traced: &Value) -> (u64, u64) {
    let traced_sections = traced["sections"].as_array().unwrap();
    let truth_sections = truth["sections"].as_object().unwrap();
    assert_eq!(
        traced_sections.len(),
        truth_sections.len(),
        "sections: {traced}"
    );
    let (mut aborts, mut cancels) = (0, 0);
    for (kind, t) in truth_sections {
        let function = t["function"].as_str().unwrap();
        let s = traced_sections
            .iter()
            .find(|s| s["name"].as_str().unwrap().split('+').next() == Some(function))
            .unwrap_or_else(|| panic!("rseq-trace has no section in {function}: {traced}"));
        assert!(s["refused"].is_null(), "{function} refused: {s}");
        for key in ["entries", "commits", "aborts", "cancels"] {
            assert_eq!(
                count(s, key),
                count(t, key),
                "{kind} ({function}) {key}: traced vs ground truth"
            );
        }
        let truth_cpu: BTreeMap<String, u64> = t["commits_per_cpu"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(cpu, n)| (cpu.clone(), n.as_u64().unwrap()))
            .filter(|(_, n)| *n > 0)
            .collect();
        let traced_cpu: BTreeMap<String, u64> = s["per_cpu"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(cpu, c)| (cpu.clone(), count(c, "commits")))
            .filter(|(_, n)| *n > 0)
            .collect();
        assert_eq!(
            traced_cpu, truth_cpu,
            "{kind} commits per CPU: traced vs ground truth"
        );
        aborts += count(t, "aborts");
        cancels += count(t, "cancels");
    }
    let health = traced["health"].as_object().unwrap();
    assert!(
        health.values().all(|v| v == 0),
        "unattributed events: {health:?}"
    );
    (aborts, cancels)
}

#[test]
fn counts_equal_ground_truth_with_glibc_rseq_area() {
    if !is_root() {
        panic!("the integration tests load eBPF programs: run them as root (scripts/test.sh)");
    }
    let (truth, traced) = traced_run(
        &[
            "--threads",
            "3",
            "--iterations",
            "6000",
            "--delay",
            "300",
            "--yield-every",
            "16",
            "--signal-every",
            "64",
        ],
        &[],
    );
    let (aborts, cancels) = assert_exact(&truth, &traced);
    assert!(aborts > 0, "the run provoked no abort: {truth}");
    assert!(cancels > 0, "the run provoked no cancel: {truth}");
    eprintln!("exact over {aborts} aborts and {cancels} cancels");
}

#[test]
fn counts_equal_ground_truth_with_own_rseq_registration() {
    if !is_root() {
        panic!("the integration tests load eBPF programs: run them as root (scripts/test.sh)");
    }
    let (truth, traced) = traced_run(
        &[
            "--threads",
            "2",
            "--iterations",
            "6000",
            "--delay",
            "300",
            "--yield-every",
            "16",
            "--signal-every",
            "64",
        ],
        &[("GLIBC_TUNABLES", "glibc.pthread.rseq=0")],
    );
    let (aborts, cancels) = assert_exact(&truth, &traced);
    assert!(
        aborts > 0 && cancels > 0,
        "aborts {aborts}, cancels {cancels}: {truth}"
    );
}
