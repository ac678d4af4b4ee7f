//! The default mode's abort ratio against the workload's own count of its attempts: in each
//! scenario (rare or frequent aborts, rare or frequent cancels) and at 1 and 8 threads, every
//! key gets a ratio with 95% bounds, and the true ratio lies within them.
//!
//! Bounds at 95% miss the truth in about one run of twenty by design. A scenario whose bounds
//! miss it is run once more and must then hold; the first miss is printed, so a statistically
//! unlucky run shows in the log rather than failing CI.

mod support;

use serde_json::Value;
use support::{count, run_traced, workload_command};

/// The workload's options for each scenario: `--mismatch-every N` makes one attempt in N
/// abort (the section's own CPU check), whatever the machine's load; `--burst N` alternates N
/// pushes and N pops on 8-slot stacks (4: cancels only when threads share a CPU's stack; 64:
/// most push and pop steps cancel).
const SCENARIOS: [(&str, &[&str]); 4] = [
    ("rare aborts", &["--mismatch-every", "5000", "--burst", "4"]),
    (
        "frequent aborts",
        &["--mismatch-every", "20", "--burst", "4"],
    ),
    ("rare cancels", &["--mismatch-every", "200", "--burst", "4"]),
    (
        "frequent cancels",
        &["--mismatch-every", "200", "--burst", "64"],
    ),
];

/// One key of the traced run: the program's own aborts and entries, the reported ratio and
/// its bounds.
struct KeyRatio {
    key: String,
    aborts: u64,
    entries: u64,
    ratio: f64,
    bounds: [f64; 2],
}

/// Per key of the traced run, the truth beside what was reported.
fn ratios(truth: &Value, traced: &Value) -> Vec<KeyRatio> {
    let truth_sections: Vec<&Value> = truth["sections"].as_object().unwrap().values().collect();
    let mut out = Vec::new();
    for key in traced["keys"].as_array().unwrap() {
        let (mut aborts, mut entries) = (0, 0);
        for name in key["sections"].as_array().unwrap() {
            let name = name.as_str().unwrap();
            let t = truth_sections
                .iter()
                .find(|t| name.starts_with(t["function"].as_str().unwrap()))
                .unwrap_or_else(|| panic!("no ground truth for {name}: {truth}"));
            aborts += count(t, "aborts");
            entries += count(t, "entries");
        }
        let name = key["key"].as_str().unwrap().to_owned();
        let ratio = key["abort_ratio"]
            .as_f64()
            .unwrap_or_else(|| panic!("{name}: no abort ratio in the default mode: {key}"));
        let b = &key["abort_ratio_bounds"];
        let bounds = [b[0].as_f64().unwrap(), b[1].as_f64().unwrap()];
        out.push(KeyRatio {
            key: name,
            aborts,
            entries,
            ratio,
            bounds,
        });
    }
    out
}

/// Iterations per CPU the threads can use: about 6 CPU seconds of this debug build, so about 6
/// s of wall time on any machine that is not busy (the windows' statistics were tuned on runs
/// of 6 s, and 8 threads on 2 CPUs given only 6 CPU seconds in all buy as few as 1 window).
const ITERATIONS_PER_CPU: u64 = 60_000_000;

/// Runs one scenario in the default mode (no `--mode`); `Err` lists the keys whose bounds
/// missed the truth. The workload runs a number of iterations, not a time: the budget is a
/// share of the traced threads' CPU time, so a run of fixed work buys the same windows on a
/// busy machine (where it takes longer) as on an idle one, while a run of fixed duration
/// starved of CPU by a neighbour would buy a few.
fn attempt(threads: &str, args: &[&str]) -> Result<(), String> {
    let threads_n: u64 = threads.parse().unwrap();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
    let per_thread = (ITERATIONS_PER_CPU * cpus.min(threads_n) / threads_n).to_string();
    let mut workload = vec!["--threads", threads, "--iterations", &per_thread];
    workload.extend_from_slice(args);
    let (truth, traced) = run_traced(&["--mode", "sampled"], &workload_command(&workload));
    assert_eq!(traced["mode"], "sampled");
    eprintln!("  sampling: {}", traced["sampling"]);
    let mut missed = Vec::new();
    for KeyRatio {
        key,
        aborts,
        entries,
        ratio,
        bounds: [low, high],
    } in ratios(&truth, &traced)
    {
        let truth = aborts as f64 / entries as f64;
        eprintln!(
            "  {key}: true {truth:.6} ({aborts} of {entries}), reported {ratio:.6} [{low:.6}, {high:.6}], {}",
            traced_key_counts(&traced, &key)
        );
        assert!(low <= ratio && ratio <= high, "{key}: bounds out of order");
        if !(low <= truth && truth <= high) {
            missed.push(format!(
                "{key}: true {truth:.6} outside [{low:.6}, {high:.6}]"
            ));
        }
    }
    if missed.is_empty() {
        Ok(())
    } else {
        Err(missed.join("; "))
    }
}

/// What rseq-trace reported of `key` as a whole (not per CPU or position), for the log.
fn traced_key_counts(traced: &Value, key: &str) -> String {
    let mut k = traced["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["key"] == key)
        .cloned()
        .unwrap();
    for detail in ["per_cpu", "positions", "sections"] {
        k.as_object_mut().unwrap().remove(detail);
    }
    k.to_string()
}

fn scenario(threads: &str, which: usize) {
    support::require_root();
    let (name, args) = SCENARIOS[which];
    eprintln!("{name}, {threads} threads:");
    if let Err(first) = attempt(threads, args) {
        eprintln!("{name}, {threads} threads: missed once ({first}); running it again");
        if let Err(again) = attempt(threads, args) {
            panic!("{name}, {threads} threads: the bounds missed the truth twice: {first}; then {again}");
        }
    }
}

#[test]
fn rare_aborts_1_thread() {
    scenario("1", 0);
}

#[test]
fn rare_aborts_8_threads() {
    scenario("8", 0);
}

#[test]
fn frequent_aborts_1_thread() {
    scenario("1", 1);
}

#[test]
fn frequent_aborts_8_threads() {
    scenario("8", 1);
}

#[test]
fn rare_cancels_1_thread() {
    scenario("1", 2);
}

#[test]
fn rare_cancels_8_threads() {
    scenario("8", 2);
}

#[test]
fn frequent_cancels_1_thread() {
    scenario("1", 3);
}

#[test]
fn frequent_cancels_8_threads() {
    scenario("8", 3);
}
