//! The tracing engine against real processes: many threads, several processes, system-wide
//! `--binary` tracing of processes started later, `run -- CMD`, and no probe left behind however
//! rseq-trace ends.

mod support;

use std::{
    fs,
    process::{Command, Stdio},
    thread,
    time::Duration,
};

use serde_json::Value;
use support::{
    assert_exact, assert_process_exact, count, kernel_links, kill, provoking, run_traced,
    trace_bin, workload_bin, workload_command, Lines, Tracer, Workload,
};

fn probes_on_workload() -> usize {
    let exe = fs::canonicalize(workload_bin()).unwrap();
    kernel_links::uprobes()
        .into_iter()
        .filter(|u| u.file == exe.to_str().unwrap())
        .count()
}

#[test]
fn eight_threads_on_two_cpus_with_yields_and_signals() {
    let workload = Workload::start(&provoking("8", "3000"), &[]);
    let tracer = Tracer::attach(workload.pid, &[]);
    workload.release();
    let truth = workload.finish();
    let traced = tracer.finish();
    let (aborts, cancels) = assert_exact(&truth, &traced);
    assert!(aborts > 0 && cancels > 0);
    // The kernel's share of the aborts is counted by the tracepoint, never more than all aborts.
    assert_eq!(traced["kernel_restarts_counted"], true);
    let restarts: u64 = traced["sections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| count(s, "kernel_restarts"))
        .sum();
    assert!(
        restarts <= aborts,
        "kernel restarts {restarts}, aborts {aborts}"
    );
    // Whether a signal lands inside a section is timing; the workload sees each one that does
    // (its handler finds abort_ip as the interrupted pc), and each is a kernel restart.
    if count(&truth, "signal_restarts") > 0 {
        assert!(restarts > 0, "no kernel restart counted: {truth}");
    }
}

#[test]
fn several_pids_at_once_counted_per_process() {
    let a = Workload::start(&provoking("2", "3000"), &[]);
    let b = Workload::start(&provoking("3", "2000"), &[]);
    let tracer = Tracer::attach_many(&[a.pid, b.pid], &[]);
    a.release();
    b.release();
    let (ta, tb) = (a.finish(), b.finish());
    let traced = tracer.finish();
    assert_process_exact(&ta, &traced);
    assert_process_exact(&tb, &traced);
}

#[test]
fn binary_mode_counts_processes_started_after_it() {
    let exe = workload_bin();
    let mut trace = Command::new(trace_bin())
        .args([
            "--binary",
            exe.to_str().unwrap(),
            "--json",
            "--mode",
            "exact",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut log = Lines::new(trace.stderr.take().unwrap());
    log.wait_for("attached");
    let a = Workload::start(&provoking("2", "3000"), &[]);
    let b = Workload::start(&provoking("2", "2000"), &[]);
    a.release();
    b.release();
    let (ta, tb) = (a.finish(), b.finish());
    kill(trace.id(), libc::SIGTERM);
    let out = trace.wait_with_output().unwrap();
    assert!(out.status.success(), "{:#?}", log.rest());
    let traced: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_process_exact(&ta, &traced);
    assert_process_exact(&tb, &traced);
    assert_eq!(
        probes_on_workload(),
        0,
        "probes left after rseq-trace ended"
    );
}

#[test]
fn run_starts_the_command_traced_and_passes_its_exit_code_on() {
    let mut cmd = vec![workload_bin().display().to_string()];
    cmd.extend(provoking("2", "3000").iter().map(|a| a.to_string()));
    let (truth, traced) = run_exact(&cmd);
    assert_exact(&truth, &traced);

    let status = Command::new(trace_bin())
        .args(["run", "--quiet", "--", "sh", "-c", "exit 7"])
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(7));
}

#[test]
fn no_probe_left_and_target_unharmed_however_rseq_trace_ends() {
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGKILL] {
        let workload = Workload::start(
            &["--threads", "2", "--duration", "2", "--delay", "100"],
            &[],
        );
        let tracer = Tracer::attach(workload.pid, &["--quiet"]);
        workload.release();
        thread::sleep(Duration::from_millis(300));
        assert!(probes_on_workload() > 0);
        kill(tracer.child.id(), signal);
        let mut child = tracer.child;
        let status = child.wait().unwrap();
        if signal != libc::SIGKILL {
            assert!(
                status.success(),
                "rseq-trace after signal {signal}: {status}"
            );
        }
        // The kernel drops the links with rseq-trace's file descriptors, even after SIGKILL.
        for _ in 0..100 {
            if probes_on_workload() == 0 {
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(probes_on_workload(), 0, "probes left after signal {signal}");
        let truth = workload.finish(); // exits 0 with its invariant intact
        assert_eq!(truth["invariant_ok"], true);
    }
}

/// `rseq-trace run --mode exact --json ... -- ARGS`: (the command's stdout JSON, the summary).
fn run_exact(args: &[String]) -> (Value, Value) {
    run_traced(&[], args)
}

/// The workload's sections built into a shared library (`librseq_workload_sections.so`).
fn sections_lib() -> String {
    let lib = trace_bin().with_file_name("librseq_workload_sections.so");
    fs::canonicalize(&lib)
        .unwrap_or_else(|e| panic!("{}: {e}; run `cargo build` first", lib.display()))
        .display()
        .to_string()
}

#[test]
fn sections_in_a_shared_library() {
    let lib = sections_lib();
    let mut a = provoking("2", "3000");
    a.extend(["--sections-lib", lib.as_str()]);
    let workload = Workload::start(&a, &[]);
    let tracer = Tracer::attach(workload.pid, &[]);
    workload.release();
    let truth = workload.finish();
    assert_eq!(truth["sections_from"], lib.as_str());
    let traced = tracer.finish();
    let (aborts, cancels) = assert_exact(&truth, &traced);
    assert!(aborts > 0 && cancels > 0);
}

#[test]
fn a_library_loaded_with_dlopen_after_attach() {
    let lib = sections_lib();
    let mut a = provoking("2", "3000");
    a.extend(["--sections-lib", lib.as_str(), "--dlopen-after-gate"]);
    let workload = Workload::start(&a, &[]);
    let maps = fs::read_to_string(format!("/proc/{}/maps", workload.pid)).unwrap();
    assert!(
        !maps.contains(&lib),
        "the library is mapped before the gate"
    );
    let tracer = Tracer::attach(workload.pid, &[]);
    workload.release();
    let truth = workload.finish();
    let traced = tracer.finish();
    let (aborts, cancels) = assert_exact(&truth, &traced);
    assert!(aborts > 0 && cancels > 0);
}

#[test]
fn follows_exec_into_a_program_with_sections() {
    // `sh` has no tables; the program it execs into does, and is probed before its main runs.
    let script = format!(
        "exec {} {}",
        workload_bin().display(),
        provoking("2", "3000").join(" ")
    );
    let (truth, traced) = run_exact(&["sh".into(), "-c".into(), script]);
    let (aborts, cancels) = assert_exact(&truth, &traced);
    assert!(aborts > 0 && cancels > 0);
}

#[test]
fn aborts_mode_counts_aborts_and_cancels_exactly_without_entry_probes() {
    let (truth, traced) = run_traced(
        &["--mode", "aborts"],
        &workload_command(&provoking("2", "3000")),
    );
    assert_eq!(traced["mode"], "aborts");
    let exe = fs::canonicalize(workload_bin())
        .unwrap()
        .display()
        .to_string();
    let (mut aborts, mut cancels) = (0, 0);
    for t in truth["sections"].as_object().unwrap().values() {
        let function = t["function"].as_str().unwrap();
        let s = traced["sections"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| {
                s["object"] == exe.as_str() && s["name"].as_str().unwrap().starts_with(function)
            })
            .unwrap();
        assert_eq!(count(s, "aborts"), count(t, "aborts"), "{function} aborts");
        assert_eq!(
            count(s, "cancels"),
            count(t, "cancels"),
            "{function} cancels"
        );
        // Not counted is not zero: entries, commits and the ratio are unknown.
        for field in ["entries", "commits", "abort_ratio"] {
            assert!(s[field].is_null(), "{function} {field} in aborts mode: {s}");
        }
        assert!(s["probes"]["entry"].is_u64());
        aborts += count(t, "aborts");
        cancels += count(t, "cancels");
    }
    assert!(aborts > 0 && cancels > 0, "{truth}");
}

/// Sampled mode: entries and commits are estimates whose reported uncertainty covers the
/// workload's own count; aborts and cancels stay exact. The workload's aborts come from
/// preemption (4 threads on the CPUs, a delay inside the sections) and its cancels from its
/// stacks' state: both independent of how fast the probes let it run, which is what the
/// extrapolation assumes (docs/BENCHMARKS.md).
#[test]
fn sampled_mode_estimates_cover_the_truth_and_aborts_stay_exact() {
    // Two threads on the two CPUs: each CPU's stacks mostly serve one thread, so whether a push
    // or pop cancels depends on that thread's own steps, not on how fast the others progress
    // (which the entry probes change inside windows: the estimate's assumption, see
    // `estimate.rs`). With 4 threads the 7.2 VM once saw list_pop's commits 1.75% off, outside
    // the ± 1.67%. `--exact-exits` keeps the frequent cancels' probes attached all along (by
    // default they would be moved into the windows, see `every_mode`), so that they stay the
    // exact references entries are extrapolated from. The budget is generous (20%) because the
    // windows' probe cost is now measured: in a TCG VM a trap costs far more than here, and a
    // small budget there buys too few windows for an uncertainty under a quarter.
    let args = workload_command(&["--threads", "2", "--delay", "50", "--duration", "8"]);
    let (truth, traced) = run_traced(
        &["--mode", "sampled", "--budget", "20", "--exact-exits"],
        &args,
    );
    assert_eq!(traced["mode"], "sampled");
    let sampling = &traced["sampling"];
    assert!(count(sampling, "windows") >= 3, "{sampling}");
    let mut estimated = 0;
    for t in truth["sections"].as_object().unwrap().values() {
        let function = t["function"].as_str().unwrap();
        let s = traced["sections"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"].as_str().unwrap().starts_with(function))
            .unwrap();
        assert_eq!(count(s, "aborts"), count(t, "aborts"), "{function} aborts");
        assert_eq!(
            count(s, "cancels"),
            count(t, "cancels"),
            "{function} cancels"
        );
        let estimate = &s["estimate"];
        assert!(
            estimate.is_object(),
            "{function}: entries not marked as an estimate: {s}"
        );
        let sampled = count(estimate, "sampled_entries");
        assert!(
            sampled > 0 && sampled < count(t, "entries"),
            "{function}: {estimate}"
        );
        match estimate["uncertainty"].as_u64() {
            Some(_) => {
                // ± the entries' uncertainty, and the estimated cancels' where there are any.
                let (est, real) = (count(s, "commits"), count(t, "commits"));
                let b = &s["commits_bounds"];
                let (low, high) = (b[0].as_u64().unwrap(), b[1].as_u64().unwrap());
                let u = (high - low) / 2;
                eprintln!("{function}: commits ~{est} ± {u}, truth {real}");
                assert!(
                    low <= real && real <= high,
                    "{function}: commits ~{est} in [{low}, {high}], truth {real}"
                );
                assert!(u * 4 < real, "{function}: ± {u} says little about {real}");
                estimated += 1;
            }
            // No abort or cancel seen in a window: entries are only a lower bound.
            None => assert!(count(s, "entries") <= count(t, "entries")),
        }
    }
    // list_push and list_pop cancel often: those two are always extrapolated.
    assert!(estimated >= 2, "{traced}");
}
