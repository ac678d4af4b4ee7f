//! Every mode on the kernel it runs on (the kernel matrix runs this in each supported kernel):
//! two threads, yields and signals, the traced program must exit as it would untraced and each
//! section's counts must equal the program's own, per section (an event credited to the wrong
//! section fails here even when the totals agree) and with no attribution failure in `health`.

mod support;

use serde_json::Value;
use support::{assert_exact, count, is_root, run_traced, workload_bin, workload_command};

/// The run of the kernels issue: `rseq-trace run --mode MODE -- rseq-workload --threads 2
/// --duration 2 --yield-every 50 --signal-every 200`; `run_traced` fails if the workload did not
/// exit successfully (a crash of the traced program is a failure of the tracer).
fn traced_run(mode: &str) -> (Value, Value) {
    assert!(
        is_root(),
        "the integration tests load eBPF programs: run them as root (scripts/test.sh)"
    );
    let args = [
        "--threads",
        "2",
        "--duration",
        "2",
        "--yield-every",
        "50",
        "--signal-every",
        "200",
    ];
    let (truth, traced) = run_traced(&["--mode", mode], &workload_command(&args));
    assert_eq!(traced["mode"], mode);
    let health = &traced["health"];
    for (what, n) in health.as_object().expect("health") {
        assert_eq!(n.as_u64(), Some(0), "health {what}: {health}");
    }
    (truth, traced)
}

/// Aborts and cancels, which every mode counts exactly, section by section.
fn assert_aborts_and_cancels_exact(truth: &Value, traced: &Value) {
    let exe = std::fs::canonicalize(workload_bin()).unwrap();
    let exe = exe.to_str().unwrap();
    for t in truth["sections"].as_object().unwrap().values() {
        let function = t["function"].as_str().unwrap();
        let matching: Vec<&Value> = traced["sections"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["object"] == exe && s["name"].as_str().unwrap().starts_with(function))
            .collect();
        assert_eq!(matching.len(), 1, "{function}: {traced}");
        let s = matching[0];
        for key in ["aborts", "cancels"] {
            assert_eq!(
                count(s, key),
                count(t, key),
                "{function} {key}: traced vs ground truth"
            );
        }
    }
}

#[test]
fn exact_mode_counts_each_section_exactly_and_the_program_runs_unharmed() {
    let (truth, traced) = traced_run("exact");
    assert_exact(&truth, &traced);
    assert_aborts_and_cancels_exact(&truth, &traced);
}

#[test]
fn aborts_mode_counts_each_section_exactly_and_the_program_runs_unharmed() {
    let (truth, traced) = traced_run("aborts");
    assert_aborts_and_cancels_exact(&truth, &traced);
}

#[test]
fn sampled_mode_counts_each_section_exactly_and_the_program_runs_unharmed() {
    let (truth, traced) = traced_run("sampled");
    assert_aborts_and_cancels_exact(&truth, &traced);
}
