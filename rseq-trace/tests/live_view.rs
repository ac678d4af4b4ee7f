//! The live view on a real terminal (a pseudo-terminal from util-linux's `script`): it takes the
//! alternate screen, draws every key with its sparkline and the per-CPU bars, and gives the
//! terminal back (alternate screen left, cursor shown) before the summary is printed; `q` ends
//! tracing. Without a terminal the plain text view is tested in `every_mode`.

mod support;

use std::{
    io::Write,
    process::{Command, Stdio},
    thread,
    time::Duration,
};

use support::{trace_bin, workload_bin};

const ENTER: &str = "\x1b[?1049h";
const LEAVE: &str = "\x1b[?1049l";
const SHOW_CURSOR: &str = "\x1b[?25h";

/// Runs `rseq-trace ARGS` in a pseudo-terminal of 200x50, typing `keys` after `after`; returns
/// everything written to the terminal.
fn on_a_terminal(args: &[String], keys: &str, after: Duration) -> String {
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
        .stderr(Stdio::piped())
        .spawn()
        .expect("script (Debian package bsdutils)");
    let mut stdin = script.stdin.take().unwrap();
    thread::sleep(after);
    let _ = stdin.write_all(keys.as_bytes());
    let _ = stdin.flush();
    let out = script.wait_with_output().unwrap();
    drop(stdin);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
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
    let out = on_a_terminal(&args, "", Duration::ZERO);
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
        after.contains("COMMITS") && after.contains("tracing pid"),
        "{after:?}"
    );
}

#[test]
fn q_ends_tracing_and_restores_the_terminal() {
    support::require_root();
    let args = run_args(
        &["--mode", "aborts", "--duration", "60"],
        &["--threads", "1", "--duration", "3"],
    );
    let out = on_a_terminal(&args, "q", Duration::from_millis(1500));
    let leave = out.rfind(LEAVE).unwrap_or_else(|| panic!("{out:?}"));
    assert!(out[leave..].contains("quit from the live view"), "{out:?}");
}
