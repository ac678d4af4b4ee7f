//! Bad input gets one clear line that says what to do and a non-zero exit, never a panic.

mod support;

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    process::{Command, Stdio},
};

use support::{run_trace, trace_bin, Workload};

fn assert_one_line_error(code: i32, stderr: &str, needle: &str) {
    assert_ne!(code, 0, "stderr: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {stderr}");
    assert!(lines[0].starts_with("rseq-trace: "), "{stderr}");
    assert!(
        lines[0].contains(needle),
        "expected {needle:?} in: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn a_pid_that_does_not_exist() {
    // Above the kernel's largest pid_max, so it can never name a process.
    let (code, _, err) = run_trace(&["--pid", "4194305"]);
    assert_one_line_error(code, &err, "no process with pid 4194305");
}

#[test]
fn a_process_without_rseq_tables() {
    let mut sleep = Command::new("sleep").arg("30").spawn().unwrap();
    let (code, _, err) = run_trace(&["--pid", &sleep.id().to_string()]);
    sleep.kill().unwrap();
    sleep.wait().unwrap();
    assert_one_line_error(code, &err, "has no rseq critical sections");
}

#[test]
fn without_privileges() {
    // Root drops to user nobody (setpriv) to see what an unprivileged user sees.
    support::require_root();
    // A copy that user nobody can execute wherever the checkout lives.
    let dir = std::env::temp_dir().join(format!("rseq-trace-nobody-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    let bin = dir.join("rseq-trace");
    fs::copy(trace_bin(), &bin).unwrap();
    fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).unwrap();

    let workload = Workload::start(&["--iterations", "10"], &[]);
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&bin)
        .args(["--pid", &workload.pid.to_string()])
        .stderr(Stdio::piped())
        .output()
        .expect("setpriv (util-linux) runs rseq-trace as nobody");
    workload.release();
    workload.finish();
    fs::remove_dir_all(&dir).unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_one_line_error(out.status.code().unwrap_or(-1), &err, "as root");
}
