//! Shared helpers of the integration tests: start the real workload at its gate, run the real
//! rseq-trace binary against it, and read what the kernel itself says is attached.
#![allow(dead_code)]

pub(crate) mod fixtures;
pub(crate) mod kernel_links;
pub(crate) mod prometheus;

use std::{
    io::{BufRead, BufReader, Read},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread,
    time::Duration,
};

use std::collections::BTreeMap;

use serde_json::Value;

/// The rseq-trace binary cargo built for these tests.
pub(crate) fn trace_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_rseq-trace"))
}

/// The rseq-workload binary, built beside rseq-trace (`cargo build` builds both).
pub(crate) fn workload_bin() -> PathBuf {
    let bin = trace_bin().with_file_name("rseq-workload");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --all-targets` before `cargo test` (scripts/test.sh does)",
        bin.display()
    );
    bin
}

/// Reads a child's stderr on a thread, handing over lines, so a test can wait for one.
pub(crate) struct Lines {
    rx: mpsc::Receiver<String>,
    pub seen: Vec<String>,
}

impl Lines {
    pub(crate) fn new(r: impl Read + Send + 'static) -> Self {
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(r).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Lines { rx, seen: vec![] }
    }

    /// Waits (at most 60 s) for a line containing `needle` and returns it.
    pub(crate) fn wait_for(&mut self, needle: &str) -> String {
        loop {
            match self.rx.recv_timeout(Duration::from_secs(60)) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(e) => panic!("no line with {needle:?} ({e}); saw: {:#?}", self.seen),
            }
        }
    }

    /// Everything else the child wrote, once it has exited.
    pub(crate) fn rest(mut self) -> Vec<String> {
        self.seen.extend(self.rx.iter());
        self.seen
    }
}

/// The workload, started with `--gate`: it has done nothing yet.
pub(crate) struct Workload {
    pub child: Child,
    pub pid: u32,
    pub stderr: Lines,
}

impl Workload {
    pub(crate) fn start(args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(workload_bin())
            .arg("--gate")
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start rseq-workload");
        let mut stderr = Lines::new(child.stderr.take().unwrap());
        let ready = stderr.wait_for("READY");
        let pid: u32 = ready.split_whitespace().nth(1).unwrap().parse().unwrap();
        assert_eq!(pid, child.id());
        Workload { child, pid, stderr }
    }

    /// Opens the gate.
    pub(crate) fn release(&self) {
        // SAFETY: kill with a valid signal number.
        assert_eq!(unsafe { libc::kill(self.pid as i32, libc::SIGUSR2) }, 0);
    }

    /// Waits for the exit and returns the ground-truth JSON; panics if the workload failed.
    pub(crate) fn finish(self) -> Value {
        finish_json(self.child, self.stderr, "rseq-workload")
    }
}

/// A running `rseq-trace --pid PID --json`, attached (its "attached" line was seen).
pub(crate) struct Tracer {
    pub child: Child,
    pub stderr: Lines,
}

impl Tracer {
    pub(crate) fn attach(pid: u32, extra: &[&str]) -> Self {
        Self::attach_many(&[pid], extra)
    }

    /// One rseq-trace following several processes.
    pub(crate) fn attach_many(pids: &[u32], extra: &[&str]) -> Self {
        require_root();
        let mut child = Command::new(trace_bin())
            .args(
                pids.iter()
                    .flat_map(|p| ["--pid".to_owned(), p.to_string()]),
            )
            .arg("--json")
            .args(exact_unless_given(extra))
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start rseq-trace");
        let mut stderr = Lines::new(child.stderr.take().unwrap());
        stderr.wait_for("attached");
        Tracer { child, stderr }
    }

    /// Waits for rseq-trace to exit and returns its JSON summary.
    pub(crate) fn finish(self) -> Value {
        finish_json(self.child, self.stderr, "rseq-trace")
    }
}

/// `--mode exact` unless `args` choose a mode: the tests compare every count with ground truth,
/// and the production default (`aborts`) counts no entries.
pub(crate) fn exact_unless_given(args: &[&str]) -> &'static [&'static str] {
    if args.contains(&"--mode") {
        &[]
    } else {
        &["--mode", "exact"]
    }
}

/// `rseq-trace run --json --output FILE OPTIONS -- ARGS` (`--mode exact` unless OPTIONS choose a
/// mode): (the command's stdout JSON, rseq-trace's summary).
pub(crate) fn run_traced(options: &[&str], args: &[String]) -> (Value, Value) {
    require_root();
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let summary = std::env::temp_dir().join(format!(
        "rseq-trace-run-{}-{}.json",
        std::process::id(),
        RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let mut out = Command::new(trace_bin());
    out.args(["run", "--json", "--output", summary.to_str().unwrap()])
        .args(exact_unless_given(options))
        .args(options)
        .arg("--")
        .args(args);
    let out = succeeded(&mut out);
    let truth: Value = serde_json::from_slice(&out.stdout).unwrap();
    let traced: Value = serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    std::fs::remove_file(&summary).unwrap();
    (truth, traced)
}

/// `rseq-trace run --mode aborts --interval 0.5 -- rseq-workload ARGS` with stdout not a
/// terminal: the plain-text live view and the summary table, once the workload exited.
pub(crate) fn live_view_text(args: &[&str]) -> String {
    require_root();
    let mut cmd = Command::new(trace_bin());
    cmd.args(["run", "--mode", "aborts", "--interval", "0.5", "--"])
        .arg(workload_bin())
        .args(args);
    String::from_utf8_lossy(&succeeded(&mut cmd).stdout).into_owned()
}

/// Runs `cmd` to completion; panics with its stderr unless it succeeded.
fn succeeded(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The workload and its arguments, as [`run_traced`] takes a command.
pub(crate) fn workload_command(args: &[&str]) -> Vec<String> {
    std::iter::once(workload_bin().display().to_string())
        .chain(args.iter().map(|a| a.to_string()))
        .collect()
}

/// Waits for a child that prints one JSON object on stdout; panics with its stderr if it failed.
fn finish_json(mut child: Child, stderr: Lines, what: &str) -> Value {
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let status = child.wait().unwrap();
    let err = stderr.rest();
    assert!(
        status.success(),
        "{what} failed: {status}; stderr: {err:#?}"
    );
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{what} JSON {e}: {out}"))
}

/// Workload arguments that provoke every outcome: in-section delay (preemption aborts), yields
/// between reading the CPU and entering (CPU-mismatch aborts), deliberate CPU mismatches (aborts
/// whatever the timing), signals (kernel restarts) and
/// bursts past the stack capacity (cancels).
pub(crate) fn provoking(threads: &'static str, iterations: &'static str) -> Vec<&'static str> {
    provoking_for(threads, "--iterations", iterations)
}

/// [`provoking`] with another run length: `--iterations N` or `--duration SECS`.
pub(crate) fn provoking_for(
    threads: &'static str,
    limit: &'static str,
    value: &'static str,
) -> Vec<&'static str> {
    vec![
        "--threads",
        threads,
        limit,
        value,
        "--delay",
        "300",
        "--yield-every",
        "16",
        "--signal-every",
        "64",
        // Own CPU-mismatch aborts on any machine, however busy or slow.
        "--mismatch-every",
        "97",
    ]
}

/// Runs rseq-trace with `args` to completion: (exit code, stdout, stderr).
pub(crate) fn run_trace(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(trace_bin()).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Fails the test at once, saying how to run it, unless it runs as root: every kernel test
/// loads eBPF programs and attaches uprobes.
pub(crate) fn require_root() {
    assert!(
        is_root(),
        "this test loads eBPF programs and attaches uprobes: run it as root \
         (sudo bash scripts/test.sh runs every test)"
    );
}

/// Whether the test runs as root; the tests that load eBPF need it.
pub(crate) fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

pub(crate) fn count(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or_else(|| panic!("no {key} in {v}"))
}

/// Compares every section's counts, in total and per CPU, and returns the totals of aborts and
/// cancels so the caller can check that the run provoked them.
pub(crate) fn assert_exact(truth: &Value, traced: &Value) -> (u64, u64) {
    // The sections of the file the workload ran them from: its executable or a library.
    let object = match truth["sections_from"].as_str() {
        Some(lib) if lib != "executable" => lib.to_owned(),
        _ => std::fs::canonicalize(workload_bin())
            .unwrap()
            .display()
            .to_string(),
    };
    let traced_sections: Vec<&Value> = traced["sections"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["object"].as_str() == Some(object.as_str()))
        .collect();
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
    // Every entry, abort and cancel was attributed. (`restart_unclaimed` only says a kernel
    // restart was counted as a plain abort; it leaves the four counts above exact.)
    assert!(
        health
            .iter()
            .filter(|(k, _)| k.as_str() != "restart_unclaimed")
            .all(|(_, v)| v == 0),
        "unattributed events: {health:?}"
    );
    (aborts, cancels)
}

/// Compares one process's per-key counts in a multi-process summary with that process's own
/// ground truth (every workload key holds one section).
pub(crate) fn assert_process_exact(truth: &Value, traced: &Value) {
    let pid = truth["pid"].as_u64().unwrap();
    let process = traced["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pid"].as_u64() == Some(pid))
        .unwrap_or_else(|| panic!("pid {pid} missing from {:#}", traced["processes"]));
    for (kind, t) in truth["sections"].as_object().unwrap() {
        let function = t["function"].as_str().unwrap();
        let section = traced["sections"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"].as_str().unwrap().split('+').next() == Some(function))
            .unwrap_or_else(|| panic!("no section in {function}"));
        let key = section["key"].as_str().unwrap();
        let got = &process["per_key"][key];
        for k in ["entries", "commits", "aborts", "cancels"] {
            assert_eq!(
                count(got, k),
                count(t, k),
                "pid {pid} {kind} {k}: traced vs ground truth"
            );
        }
        assert!(count(got, "kernel_restarts") <= count(got, "aborts"));
    }
}

/// Sends `signal` to `pid`.
pub(crate) fn kill(pid: u32, signal: i32) {
    // SAFETY: kill takes any pid and signal number and touches no memory of ours.
    let rc = unsafe { libc::kill(pid as i32, signal) };
    assert_eq!(rc, 0, "kill({pid}, {signal})");
}
