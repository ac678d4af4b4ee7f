//! Aborts our entry probe makes without any kernel restart: the program reads its CPU, our
//! probe takes the thread through the kernel, the scheduler moves it there, and the section's
//! own CPU check fails. rseq-trace counts them as `probe_move` (exact mode, and sampled mode's
//! windows, whose abort ratio leaves them out). The ground truth is the workload's own count of
//! the aborts after which it was on another CPU than the one its section checked
//! (`moved_aborts`): those are the kernel's `migration` restarts plus every own-check abort
//! after a move, ours or not.

mod support;

use serde_json::Value;
use support::{count, run_traced, workload_command};

/// The workload's section whose function `name` (`function+0xoffset`) starts with.
fn truth_of<'a>(truth: &'a Value, name: &str) -> &'a Value {
    truth["sections"]
        .as_object()
        .unwrap()
        .values()
        .find(|t| name.starts_with(t["function"].as_str().unwrap()))
        .unwrap_or_else(|| panic!("no ground truth for {name}: {truth}"))
}

#[test]
fn aborts_after_a_move_during_the_entry_probe_are_reported_as_probe_move() {
    support::require_root();
    // Four threads per CPU, so that the scheduler moves them; no deliberate CPU mismatch, so
    // every own-check abort follows a move.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = (4 * cpus).to_string();
    let workload = workload_command(&["--threads", &threads, "--duration", "2"]);
    let (truth, traced) = run_traced(&["--mode", "exact"], &workload);
    let mut moves = 0;
    for s in traced["sections"].as_array().unwrap() {
        let name = s["name"].as_str().unwrap();
        let own = truth_of(&truth, name);
        let c = &s["abort_causes"];
        let kernel: u64 = ["preemption", "migration", "signal", "other", "probe"]
            .iter()
            .map(|n| count(c, n))
            .sum();
        let (probe_move, migration) = (count(c, "probe_move"), count(c, "migration"));
        eprintln!(
            "{name}: aborts {} (the program's {}), probe_move {probe_move}, migration {migration}, cpu_mismatch {}; the program saw {} aborts after a move",
            count(s, "aborts"),
            count(own, "aborts"),
            count(c, "cpu_mismatch"),
            count(own, "moved_aborts"),
        );
        assert_eq!(count(s, "aborts"), count(own, "aborts"), "{name}: {s}");
        assert_eq!(
            kernel + probe_move + count(c, "cpu_mismatch"),
            count(s, "aborts"),
            "{name}: the causes do not add up: {s}"
        );
        // Every abort called a move (the kernel's or after our probe) left the thread on
        // another CPU than its section checked: the program saw at least that many.
        assert!(
            probe_move + migration <= count(own, "moved_aborts"),
            "{name}: {probe_move} probe_move + {migration} migration, but the program saw only {} aborts after a move: {s}",
            count(own, "moved_aborts")
        );
        moves += probe_move;
    }
    eprintln!("probe_move in all: {moves}");
}
