//! The live view on a real terminal (a pseudo-terminal from util-linux's `script`): it takes the
//! alternate screen, draws every key with its sparkline and the per-CPU bars, and gives the
//! terminal back (alternate screen left, cursor shown) before the summary is printed; `q` ends
//! tracing. Without a terminal the plain text view is tested in `every_mode`.

mod support;

use std::{
    io::{Read, Write},
    process::{Child, ChildStdin, Command, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use support::{trace_bin, workload_bin, Workload};

const ENTER: &str = "\x1b[?1049h";
const LEAVE: &str = "\x1b[?1049l";
const SHOW_CURSOR: &str = "\x1b[?25h";

/// `rseq-trace ARGS` in a pseudo-terminal of 200x50, its output collected as it comes.
struct OnATerminal {
    script: Child,
    stdin: ChildStdin,
    out: Arc<Mutex<Vec<u8>>>,
    reader: thread::JoinHandle<()>,
}

impl OnATerminal {
    fn start(args: &[String]) -> Self {
        let command = std::iter::once(trace_bin().display().to_string())
            .chain(args.iter().cloned())
            .map(|a| format!("'{a}'"))
            .collect::<Vec<_>>()
            .join(" ");
        let mut script = Command::new("script")
            .args(["-q", "-f", "-e", "-c"])
            .arg(format!("stty cols 200 rows 50; {command}"))
            .arg("/dev/null")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("script (Debian package bsdutils)");
        let stdin = script.stdin.take().unwrap();
        let mut stdout = script.stdout.take().unwrap();
        let out = Arc::new(Mutex::new(Vec::new()));
        let sink = out.clone();
        let reader = thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = stdout.read(&mut buf) {
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        OnATerminal {
            script,
            stdin,
            out,
            reader,
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.out.lock().unwrap()).into_owned()
    }

    /// Waits until the terminal has shown `needle` (not for a time: a busy machine is slow).
    fn wait_for(&self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.text().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "{needle:?} never shown: {:?}",
                self.text()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn type_keys(&mut self, keys: &str) {
        self.stdin.write_all(keys.as_bytes()).unwrap();
        self.stdin.flush().unwrap();
    }

    /// Waits for rseq-trace to exit successfully; everything it wrote to the terminal.
    fn finish(mut self) -> String {
        let status = self.script.wait().unwrap();
        let out = self.out.clone();
        self.reader.join().unwrap();
        let out = String::from_utf8_lossy(&out.lock().unwrap()).into_owned();
        assert!(status.success(), "{status}: {out:?}");
        out
    }
}

fn run_args(extra: &[&str], workload: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = ["run", "--interval", "0.3"].map(String::from).to_vec();
    args.extend(extra.iter().map(|a| a.to_string()));
    args.push("--".into());
    args.push(workload_bin().display().to_string());
    args.extend(workload.iter().map(|a| a.to_string()));
    args
}

#[test]
fn the_live_view_draws_on_the_alternate_screen_and_gives_the_terminal_back() {
    support::require_root();
    let args = run_args(
        &["--mode", "exact"],
        &[
            "--threads",
            "2",
            "--duration",
            "2",
            "--mismatch-every",
            "50",
        ],
    );
    let out = OnATerminal::start(&args).finish();
    let (enter, leave) = (out.find(ENTER), out.rfind(LEAVE));
    let (Some(enter), Some(leave)) = (enter, leave) else {
        panic!("no alternate screen entered and left: {out:?}");
    };
    assert!(enter < leave, "{out:?}");
    let screen = &out[enter..leave];
    // ratatui moves the cursor between words: look for single words.
    for needle in [
        "ENTRY/s",
        "TREND",
        "aborts/s",
        "rseq_key_workload_counter",
        "↳",
    ] {
        assert!(screen.contains(needle), "{needle} not drawn: {screen:?}");
    }
    let bars = (0..64).any(|c| screen.contains(&format!("cpu{c}\x1b")));
    assert!(bars, "no per-CPU bar labelled: {screen:?}");
    let after = &out[leave..];
    assert!(
        after.contains(SHOW_CURSOR),
        "cursor not shown again: {after:?}"
    );
    // The summary comes after the terminal is given back, and the log lines kept meanwhile.
    assert!(
        after.contains("COMMITS") && after.contains("the traced processes exited"),
        "{after:?}"
    );
}

#[test]
fn q_ends_tracing_and_restores_the_terminal() {
    support::require_root();
    let workload = Workload::start(&["--threads", "1", "--duration", "60"], &[]);
    let args: Vec<String> = ["--mode", "aborts", "--interval", "0.3", "--pid"]
        .iter()
        .map(|a| a.to_string())
        .chain([workload.pid.to_string()])
        .collect();
    let mut term = OnATerminal::start(&args);
    term.wait_for(ENTER);
    workload.release();
    term.wait_for("rseq_key_workload_counter");
    term.type_keys("q");
    let out = term.finish();
    let leave = out.rfind(LEAVE).unwrap_or_else(|| panic!("{out:?}"));
    assert!(out[leave..].contains("quit from the live view"), "{out:?}");
    // The traced program went on unharmed, and ends as asked.
    support::kill(workload.pid, libc::SIGTERM);
    let truth = workload.finish();
    assert_eq!(truth["invariant_ok"], true, "{truth}");
}
