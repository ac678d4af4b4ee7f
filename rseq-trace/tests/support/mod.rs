//! Shared helpers of the integration tests: start the real workload at its gate, run the real
//! rseq-trace binary against it, and read what the kernel itself says is attached.
#![allow(dead_code)]

pub mod fixtures;
pub mod kernel_links;

use std::{
    io::{BufRead, BufReader, Read},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread,
    time::Duration,
};

use serde_json::Value;

/// The rseq-trace binary cargo built for these tests.
pub fn trace_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_rseq-trace"))
}

/// The rseq-workload binary, built beside rseq-trace (`cargo build` builds both).
pub fn workload_bin() -> PathBuf {
    let bin = trace_bin().with_file_name("rseq-workload");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --all-targets` before `cargo test` (scripts/test.sh does)",
        bin.display()
    );
    bin
}

/// Reads a child's stderr on a thread, handing over lines, so a test can wait for one.
pub struct Lines {
    rx: mpsc::Receiver<String>,
    pub seen: Vec<String>,
}

impl Lines {
    pub fn new(r: impl Read + Send + 'static) -> Self {
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
    pub fn wait_for(&mut self, needle: &str) -> String {
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
    pub fn rest(mut self) -> Vec<String> {
        self.seen.extend(self.rx.iter());
        self.seen
    }
}

/// The workload, started with `--gate`: it has done nothing yet.
pub struct Workload {
    pub child: Child,
    pub pid: u32,
    pub stderr: Lines,
}

impl Workload {
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> Self {
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
    pub fn release(&self) {
        // SAFETY: kill with a valid signal number.
        assert_eq!(unsafe { libc::kill(self.pid as i32, libc::SIGUSR2) }, 0);
    }

    /// Waits for the exit and returns the ground-truth JSON; panics if the workload failed.
    pub fn finish(mut self) -> Value {
        let mut out = String::new();
        self.child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        let status = self.child.wait().unwrap();
        let err = self.stderr.rest();
        assert!(
            status.success(),
            "rseq-workload failed: {status}; stderr: {err:#?}"
        );
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("workload JSON {e}: {out}"))
    }
}

/// A running `rseq-trace --pid PID --json`, attached (its "attached" line was seen).
pub struct Tracer {
    pub child: Child,
    pub stderr: Lines,
}

impl Tracer {
    pub fn attach(pid: u32, extra: &[&str]) -> Self {
        let mut child = Command::new(trace_bin())
            .args(["--pid", &pid.to_string(), "--json"])
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
    pub fn finish(mut self) -> Value {
        let mut out = String::new();
        self.child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        let status = self.child.wait().unwrap();
        let err = self.stderr.rest();
        assert!(
            status.success(),
            "rseq-trace failed: {status}; stderr: {err:#?}"
        );
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("rseq-trace JSON {e}: {out}"))
    }
}

/// Runs rseq-trace with `args` to completion: (exit code, stdout, stderr).
pub fn run_trace(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(trace_bin()).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Whether the test runs as root; the tests that load eBPF need it.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}
