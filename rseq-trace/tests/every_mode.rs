//! Every mode on the kernel it runs on (the kernel matrix runs this in each supported kernel):
//! two threads, yields and signals, the traced program must exit as it would untraced and each
//! section's counts must equal the program's own, per section (an event credited to the wrong
//! section fails here even when the totals agree) and with no attribution failure in `health`.

mod support;

use serde_json::Value;
use support::{assert_exact, count, live_view_text, run_traced, workload_bin, workload_command};

/// The run of the kernels issue: `rseq-trace run --mode MODE -- rseq-workload --threads 2
/// --duration 2 --yield-every 50 --signal-every 200`; `run_traced` fails if the workload did not
/// exit successfully (a crash of the traced program is a failure of the tracer).
fn traced_run(mode: &str) -> (Value, Value) {
    support::require_root();
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

/// Aborts and cancels, which every mode counts exactly, section by section. In sampled mode a
/// section's aborts or cancels may be counted in the windows only, when their probes cost more
/// than the budget allows: they are then marked (`aborts_estimated`, `cancels_estimated`) and
/// checked as the estimate they are.
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
        for what in ["aborts", "cancels"] {
            assert_exit_count(
                &format!("{function} {what}"),
                matching[0],
                what,
                count(t, what),
            );
        }
    }
}

/// One section's `what` (aborts or cancels) against the program's own count `real`: equal, or
/// covered by the estimate's uncertainty, or at most it when it is a lower bound.
fn assert_exit_count(name: &str, s: &Value, what: &str, real: u64) {
    let n = count(s, what);
    if s[format!("{what}_lower_bound")] == true {
        eprintln!("{name}: >={n} (sampled, no estimate yet), truth {real}");
        assert!(n <= real, "{name}: >={n}, truth {real}");
    } else if s[format!("{what}_estimated")] == true {
        let u = count(&s["estimate"], &format!("{what}_uncertainty"));
        eprintln!("{name}: ~{n} ± {u} (sampled), truth {real}");
        assert!(n.abs_diff(real) <= u, "{name}: ~{n} ± {u}, truth {real}");
    } else {
        assert_eq!(n, real, "{name}: traced vs ground truth");
    }
}

/// Every tally of the summary (keys, sections, their CPUs, the processes, all CPUs).
fn tallies(traced: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for list in ["keys", "sections"] {
        for t in traced[list].as_array().unwrap() {
            out.push(t);
            out.extend(t["per_cpu"].as_object().unwrap().values());
        }
    }
    out.extend(traced["per_cpu"].as_object().unwrap().values());
    out
}

/// What the mode does not count is `null`, what it estimates is marked, and the ratio is a
/// number, with its bounds, exactly where entries were seen: every attempt in exact mode (the
/// bounds are then the ratio itself), the windows' attempts in sampled mode.
fn assert_marked(mode: &str, traced: &Value) {
    for t in tallies(traced) {
        let (ratio, bounds) = (&t["abort_ratio"], &t["abort_ratio_bounds"]);
        match mode {
            "aborts" => {
                assert!(t["entries"].is_null() && t["commits"].is_null(), "{t}");
                assert!(ratio.is_null() && bounds.is_null(), "{t}");
            }
            "exact" => {
                assert!(t["entries"].is_u64() && t["commits"].is_u64(), "{t}");
                assert!(t["estimate"].is_null(), "{t}");
                if count(t, "entries") > 0 {
                    let r = ratio.as_f64().unwrap_or_else(|| panic!("no ratio: {t}"));
                    assert_eq!(bounds, &serde_json::json!([r, r]), "{t}");
                } else {
                    assert!(ratio.is_null() && bounds.is_null(), "{t}");
                }
            }
            _ => {
                assert!(
                    t["estimate"].is_object(),
                    "entries not marked as estimated: {t}"
                );
                if count(&t["estimate"], "sampled_entries") > 0 {
                    let r = ratio.as_f64().unwrap_or_else(|| panic!("no ratio: {t}"));
                    let (low, high) = (bounds[0].as_f64().unwrap(), bounds[1].as_f64().unwrap());
                    assert!(low <= r && r <= high && high <= 1.0, "{t}");
                    assert!(high > low, "sampled bounds with no width: {t}");
                } else {
                    assert!(ratio.is_null() && bounds.is_null(), "{t}");
                }
            }
        }
    }
}

#[test]
fn exact_mode_counts_each_section_exactly_and_the_program_runs_unharmed() {
    let (truth, traced) = traced_run("exact");
    assert_exact(&truth, &traced);
    assert_aborts_and_cancels_exact(&truth, &traced);
    assert_marked("exact", &traced);
}

#[test]
fn aborts_mode_counts_each_section_exactly_and_the_program_runs_unharmed() {
    let (truth, traced) = traced_run("aborts");
    assert_aborts_and_cancels_exact(&truth, &traced);
    assert_marked("aborts", &traced);
}

#[test]
fn sampled_mode_counts_each_section_exactly_and_the_program_runs_unharmed() {
    let (truth, traced) = traced_run("sampled");
    assert_aborts_and_cancels_exact(&truth, &traced);
    assert_marked("sampled", &traced);
}

/// The same for people: in aborts mode the summary and the live view show `-` for entries,
/// commits, their rates and the ratio, never a 0 beside non-zero aborts.
#[test]
fn aborts_mode_shows_what_it_does_not_count_as_a_dash() {
    support::require_root();
    let text = live_view_text(&[
        "--threads",
        "2",
        "--duration",
        "1.2",
        "--mismatch-every",
        "50",
    ]);
    let key_lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("rseq_key_") || l.starts_with("rseq_workload_"))
        // Not the causes below the summary ("KEY  preemption 2, signal 15", "hottest: ...").
        .filter(|l| !l.contains(',') && l.split_whitespace().count() >= 7)
        .collect();
    assert!(key_lines.len() >= 6, "live view and summary rows: {text}");
    for line in key_lines {
        let f: Vec<&str> = line.split_whitespace().collect();
        // KEY ENTRIES COMMITS ... ABORT%: live view (ABORT% is the 7th field) and summary (7th).
        assert_eq!((f[1], f[2], f[6]), ("-", "-", "-"), "{line}");
    }
    let cpus = text
        .lines()
        .find(|l| l.starts_with("cpu0 "))
        .expect("per-CPU line");
    assert!(cpus.starts_with("cpu0 - entries/s"), "{cpus}");
}
