//! Why and where sections restart: each provoked cause (signals only, yields only, CPU-affinity
//! migrations) must be reported, against the program's own count where it has one (signals),
//! no cause that was not provoked may appear, and the kernel must be seen interrupting the
//! sections inside their delay loop, where they spend their time. Aborts mode: no probe on the
//! hot path to change what the program does.

mod support;

use std::process::Command;

use serde_json::Value;
use support::{count, live_view_text, run_traced, workload_bin, workload_command};

/// Two threads signalling each other, long sections: signal restarts only.
// A delay loop long enough to hold most of each section's time even under QEMU's TCG, where
// memory accesses cost far more than the loop's two instructions and interrupts are taken only
// at translation-block boundaries (with 300, the 6.1 VM once saw 4 of list_pop's 7 restarts on
// a load after the loop).
const SIGNALS_ONLY: &[&str] = &[
    "--delay",
    "3000",
    "--duration",
    "2",
    "--threads",
    "2",
    "--signal-every",
    "50",
];

/// `rseq-trace run --mode aborts -- rseq-workload --delay 300 --duration 2 ARGS` (ARGS may set
/// another delay): (ground truth, summary).
fn traced(args: &[&str]) -> (Value, Value) {
    support::require_root();
    let delay = if args.contains(&"--delay") {
        &[][..]
    } else {
        &["--delay", "300"][..]
    };
    let workload = [delay, &["--duration", "2"], args].concat();
    let (truth, traced) = run_traced(&["--mode", "aborts"], &workload_command(&workload));
    assert_eq!(traced["restart_causes_counted"], true, "{traced}");
    (truth, traced)
}

/// The causes of all keys together, by name.
fn causes(traced: &Value) -> Vec<(String, u64)> {
    let names = [
        "preemption",
        "migration",
        "signal",
        "other",
        "probe",
        "probe_move",
        "cpu_mismatch",
    ];
    names
        .iter()
        .map(|n| {
            let total = traced["keys"]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| count(&k["abort_causes"], n))
                .sum();
            (n.to_string(), total)
        })
        .collect()
}

/// One cause's total, printing them all once.
fn cause(all: &[(String, u64)], name: &str) -> u64 {
    all.iter().find(|(n, _)| n == name).unwrap().1
}

fn causes_printed(traced: &Value) -> Vec<(String, u64)> {
    let all = causes(traced);
    eprintln!("abort causes: {all:?}");
    all
}

/// Kernel restarts by cause add up, and aborts equal the workload's own count.
fn assert_consistent(truth: &Value, traced: &Value) {
    for k in traced["keys"].as_array().unwrap() {
        let c = &k["abort_causes"];
        let kernel: u64 = ["preemption", "migration", "signal", "other", "probe"]
            .iter()
            .map(|n| count(c, n))
            .sum();
        assert_eq!(kernel, count(k, "kernel_restarts"), "{k}");
        assert_eq!(
            kernel + count(c, "probe_move") + count(c, "cpu_mismatch"),
            count(k, "aborts"),
            "{k}"
        );
        // Aborts mode has no entry probe that could move a thread.
        assert_eq!(count(c, "probe_move"), 0, "{k}");
    }
    let aborts = |v: &Value, list: &str| -> u64 {
        let items: Vec<&Value> = match &v[list] {
            Value::Array(a) => a.iter().collect(),
            Value::Object(o) => o.values().collect(),
            _ => panic!("no {list}"),
        };
        items.iter().map(|s| count(s, "aborts")).sum()
    };
    assert_eq!(aborts(traced, "sections"), aborts(truth, "sections"));
}

/// Signal restarts, against the program's own count of them.
fn assert_signal_restarts(truth: &Value, traced: &Value) {
    assert!(count(truth, "signals_received") > 0, "{truth}");
    assert_consistent(truth, traced);
    // Ground truth: the workload's handler saw abort_ip as the interrupted pc in that many
    // attempts (the kernel moves the pc there before it builds the frame). Every restart
    // rseq-trace calls `signal` is one of them. The handler cannot tell the rest apart: a
    // thread already sent to abort_ip (by a preemption noticed first on the same return to user
    // space, by a migration, or by its own CPU check) and signalled before it ran on. So the
    // program's count lies between rseq-trace's signal restarts and all the aborts it counted.
    let all = causes_printed(traced);
    let signal = cause(&all, "signal");
    let aborts: u64 = all.iter().map(|(_, n)| n).sum();
    let seen = count(truth, "signal_restarts");
    eprintln!("the program saw {seen} signal restarts");
    assert!(signal > 0, "{all:?}");
    // A signal explains a restart that follows its delivery within 2 ms (the fixup of a signal
    // restart happens in the delivery itself): one delivered outside any section just before a
    // preemption restart is taken for its cause. Seen once in the 7.3 VM: 74 against 73.
    assert!(
        signal <= seen + seen / 50 + 2,
        "{signal} signal restarts, but the program saw {seen}"
    );
    assert!(
        seen <= aborts,
        "the program saw {seen} signal restarts, rseq-trace counted {aborts} aborts: {all:?}"
    );
}

#[test]
fn signals_only_are_reported_as_signal_and_interrupt_the_delay_loop() {
    // A long delay loop (5000 spins). QEMU without KVM takes interrupts only between its
    // translated blocks, and a block that ends just after the loop takes more than its share
    // of time: the 6.1 VM once put 12 of a key's 22 restarts there at 300 spins, and the 6.12
    // VM 52 of 69 at 1000 spins (17 in the loop).
    let (truth, traced) = traced(&["--threads", "2", "--signal-every", "50", "--delay", "5000"]);
    assert_signal_restarts(&truth, &traced);

    // Position: every section's hottest interrupted offset lies in its delay loop, shown as the
    // instruction there and its source line.
    for d in truth["descriptors"].as_array().unwrap() {
        let function = d["function"].as_str().unwrap();
        let (begin, end) = (
            count(d, "delay_loop_begin_offset"),
            count(d, "delay_loop_end_offset"),
        );
        let key = traced["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| {
                k["sections"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|s| s.as_str().unwrap().starts_with(function))
            })
            .unwrap_or_else(|| panic!("no key for {function}"));
        // Where the section spends its time takes most restarts (a single bar may not, when
        // a slow machine gives few).
        let positions: Vec<&Value> = key["positions"].as_array().unwrap().iter().collect();
        let (inside, outside): (Vec<&Value>, Vec<&Value>) = positions
            .iter()
            .partition(|p| (begin..end).contains(&count(p, "offset")));
        let sum = |v: &[&Value]| v.iter().map(|p| count(p, "restarts")).sum::<u64>();
        assert!(
            sum(&inside) >= sum(&outside),
            "{function}: more restarts outside the delay loop [{begin:#x}, {end:#x}): {key}"
        );
        let top = inside[0];
        let offset = count(top, "offset");
        eprintln!(
            "{function}: hottest in the loop start+{offset:#x} `{}` ({}), {} restarts; delay loop [{begin:#x}, {end:#x})",
            top["instruction"], top["source"], top["restarts"]
        );
        let instruction = top["instruction"].as_str().unwrap();
        assert!(
            instruction.starts_with("sub")
                || instruction.starts_with("j")
                || instruction.starts_with(".inst"),
            "{function}: {instruction}"
        );
        assert!(
            top["source"]
                .as_str()
                .is_some_and(|s| s.contains("sections")),
            "{top}"
        );
    }
}

/// `env GLIBC_TUNABLES=glibc.pthread.rseq=0 rseq-workload --extended-rseq ARGS`: the workload
/// registering its own area with the kernel's feature size, as glibc 2.40+ does.
fn extended_abi_command(args: &[&str]) -> Vec<String> {
    let workload = workload_bin();
    ["env", "GLIBC_TUNABLES=glibc.pthread.rseq=0"]
        .into_iter()
        .map(str::to_owned)
        .chain([workload.display().to_string(), "--extended-rseq".into()])
        .chain(args.iter().map(|a| a.to_string()))
        .collect()
}

/// The same under the ABI glibc 2.40+ selects (an area of the kernel's feature size: V2 on
/// Linux 7.1+, where `rseq_update` fires only when the IDs change and before the fixup).
#[test]
fn signals_are_reported_as_signal_with_the_kernels_extended_rseq_abi() {
    support::require_root();
    let command = extended_abi_command(SIGNALS_ONLY);
    let (truth, traced) = run_traced(&["--mode", "aborts"], &command);
    eprintln!("registered with {} bytes", truth["rseq_len"]);
    assert_signal_restarts(&truth, &traced);
}

/// The time-slice extension (Linux 7.0+): threads that ask for it over every iteration get
/// grants instead of some preemptions, and give the CPU back with `rseq_slice_yield`. A grant
/// restarts nothing: the aborts still equal the program's own count, and the signal restarts its
/// own count of them, with grants and yields going on all the time.
#[test]
fn time_slice_grants_and_yields_are_not_restarts() {
    support::require_root();
    let args = [
        "--slice-extension",
        "--delay",
        "300",
        "--threads",
        "4",
        "--signal-every",
        "50",
    ];
    let probe = extended_abi_command(&[&args[..], &["--duration", "0.2"]].concat());
    let probe = Command::new(&probe[0]).args(&probe[1..]).output().unwrap();
    let err = String::from_utf8_lossy(&probe.stderr);
    if err.contains("no time-slice extension") {
        eprintln!("skipped: {}", err.trim());
        return;
    }
    let command = extended_abi_command(&[&args[..], &["--duration", "2"]].concat());
    let (truth, traced) = run_traced(&["--mode", "aborts"], &command);
    let grants = count(&truth, "slice_grants");
    eprintln!("{grants} time-slice extensions granted");
    assert!(grants > 0, "the kernel granted no extension: {truth}");
    assert_signal_restarts(&truth, &traced);
}

#[test]
fn yields_only_are_reported_as_preemption() {
    // Four threads on the CPUs: a yield hands the CPU to a thread preempted inside a section.
    let (truth, traced) = traced(&["--threads", "4", "--yield-every", "10"]);
    assert_consistent(&truth, &traced);
    let all = causes_printed(&traced);
    assert!(cause(&all, "preemption") > 0, "{all:?}");
    // No signal was sent: none may be reported, however busy the machine.
    assert_eq!(cause(&all, "signal"), 0);
}

#[test]
fn affinity_changes_are_reported_as_migration() {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpus < 2 {
        eprintln!("skipped: migrations need at least 2 CPUs, this machine has {cpus}");
        return;
    }
    // One worker, so the controller thread that moves it runs on a free CPU and preempts nothing.
    // Long sections (a 3,000-spin delay), so most moves catch the worker inside one.
    let (truth, traced) = traced(&[
        "--threads",
        "1",
        "--migrate-every-ms",
        "2",
        "--delay",
        "3000",
    ]);
    assert!(count(&truth, "migrations_requested") > 0);
    assert_consistent(&truth, &traced);
    // How many moves caught the worker inside a section depends on timing; that some did and
    // were told apart from everything else, and that nothing was called a signal, does not.
    let all = causes_printed(&traced);
    assert!(cause(&all, "migration") > 0, "{all:?}");
    assert_eq!(cause(&all, "signal"), 0);
}

#[test]
fn live_view_shows_the_causes_and_the_hottest_position() {
    support::require_root();
    let text = live_view_text(SIGNALS_ONLY);
    let line = text
        .lines()
        .find(|l| l.starts_with("↳ rseq_key_workload_counter: signal"))
        .unwrap_or_else(|| panic!("no cause line in the live view: {text}"));
    assert!(line.contains("hottest `"), "{line}");
    assert!(text.contains("why and where they aborted:"), "{text}");
}
