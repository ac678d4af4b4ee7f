//! The second promise: the traced program runs as it would untraced, and that includes never
//! being left stopped. rseq-trace stops a traced process at each library load until the new
//! library is probed (the hold); whatever happens to rseq-trace meanwhile, the process must go
//! on, and a process someone else stopped must stay stopped.

mod support;

use std::{
    fs, thread,
    time::{Duration, Instant},
};

use support::{kill, trace_bin, Tracer, Workload};

/// The workload's sections in a library it loads with dlopen once its gate opens.
fn dlopen_after_gate() -> Workload {
    let lib = trace_bin().with_file_name("librseq_workload_sections.so");
    let lib = fs::canonicalize(lib).unwrap().display().to_string();
    Workload::start(
        &[
            "--threads",
            "2",
            "--iterations",
            "2000",
            "--sections-lib",
            &lib,
            "--dlopen-after-gate",
        ],
        &[],
    )
}

/// [`dlopen_after_gate`], with rseq-trace attached to it.
fn traced_before_its_library_load() -> (Workload, Tracer) {
    support::require_root();
    let workload = dlopen_after_gate();
    let tracer = Tracer::attach(workload.pid, &[]);
    (workload, tracer)
}

/// The process's state letter in /proc (`T`: stopped).
fn state(pid: u32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit(") ").next()?.chars().next()
}

/// Waits up to `limit` for `pid`'s state to satisfy `ok`; returns how long it took.
fn wait_state(pid: u32, limit: Duration, ok: impl Fn(Option<char>) -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if ok(state(pid)) {
            return Some(start.elapsed());
        }
        thread::sleep(Duration::from_millis(5));
    }
    None
}

/// rseq-trace frozen (SIGSTOP) just before the workload loads its library, then `then` done to
/// it: the workload, held or not, must finish on its own while rseq-trace cannot help.
fn frozen_agent_then(then: i32) {
    let (workload, mut tracer) = traced_before_its_library_load();
    let pid = workload.pid;
    let agent = tracer.child.id();
    kill(agent, libc::SIGSTOP);
    let mut since = Instant::now();
    workload.release();
    // Held at the library load, if the agent's heartbeat was still fresh.
    let held = wait_state(pid, Duration::from_millis(400), |s| s == Some('T')).is_some();
    if then != 0 {
        kill(agent, then);
        since = Instant::now();
    }
    wait_state(pid, Duration::from_secs(20), |s| s != Some('T'))
        .expect("the workload stays stopped");
    eprintln!(
        "held: {held}; going on {} ms after rseq-trace was {}",
        since.elapsed().as_millis(),
        if then == libc::SIGKILL {
            "killed"
        } else {
            "frozen"
        }
    );
    let truth = workload.finish();
    assert_eq!(truth["invariant_ok"], true, "{truth}");
    if then != libc::SIGKILL {
        kill(agent, libc::SIGCONT);
        tracer.finish();
    } else {
        let _ = tracer.child.wait();
    }
}

#[test]
fn a_held_process_goes_on_when_rseq_trace_is_killed() {
    frozen_agent_then(libc::SIGKILL);
}

#[test]
fn a_held_process_goes_on_while_rseq_trace_is_frozen() {
    frozen_agent_then(0);
}

#[test]
fn a_process_its_user_stopped_stays_stopped_after_rseq_trace_exits() {
    let (workload, mut tracer) = traced_before_its_library_load();
    let pid = workload.pid;
    kill(pid, libc::SIGSTOP);
    wait_state(pid, Duration::from_secs(5), |s| s == Some('T')).expect("SIGSTOP took effect");
    kill(tracer.child.id(), libc::SIGKILL);
    let _ = tracer.child.wait();
    // The watchdog sees the agent gone within 50 ms; give it ten times that.
    thread::sleep(Duration::from_millis(500));
    assert_eq!(
        state(pid),
        Some('T'),
        "rseq-trace continued a process it did not stop"
    );
    kill(pid, libc::SIGCONT);
    workload.release();
    let truth = workload.finish();
    assert_eq!(truth["invariant_ok"], true, "{truth}");
}
