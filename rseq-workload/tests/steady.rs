//! `--steady-after`: the run's last part is reported on its own, for benchmarks that leave a
//! tracer's start-up out.

use std::process::Command;

fn run(args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_rseq-workload"))
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn the_steady_part_is_the_runs_tail() {
    let r = run(&[
        "--threads",
        "2",
        "--duration",
        "0.6",
        "--steady-after",
        "0.2",
    ]);
    let (all, steady) = (
        r["total_iterations"].as_u64().unwrap(),
        r["steady_iterations"].as_u64().unwrap(),
    );
    let (elapsed, secs) = (
        r["elapsed_secs"].as_f64().unwrap(),
        r["steady_secs"].as_f64().unwrap(),
    );
    assert!(0 < steady && steady < all, "{r}");
    assert!(0.0 < secs && secs < elapsed, "{r}");
    // The tail is about two thirds of the run: well over a third, well under all of it.
    assert!(secs > elapsed / 3.0 && secs < elapsed * 0.9, "{r}");
}

#[test]
fn without_it_there_is_no_steady_part() {
    let r = run(&["--threads", "1", "--duration", "0.1"]);
    assert!(r.get("steady_iterations").is_none(), "{r}");
}

#[test]
fn it_needs_a_duration() {
    let out = Command::new(env!("CARGO_BIN_EXE_rseq-workload"))
        .args(["--steady-after", "1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}
