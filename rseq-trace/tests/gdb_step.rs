//! The gdb extension (`rseq-trace gdb`), in Debian's gdb in batch mode, against the workload's
//! own counts. Without it, stepping from a section's entry makes the section abort (every ptrace
//! stop does); with it, `stepi`, `next` and `step` get through each section, and the program
//! counts the commit, or the cancel where the section leaves by an exit point.

mod support;

use std::process::Command;

use serde_json::Value;
use support::{count, trace_bin, workload_bin};

/// What gdb printed, and the workload's own report (the JSON line it prints at exit).
struct Session {
    out: String,
    truth: Value,
}

impl Session {
    fn section(&self, name: &str) -> &Value {
        &self.truth["sections"][name]
    }

    fn assert_said(&self, text: &str) {
        assert!(
            self.out.contains(text),
            "gdb did not say {text:?}:\n{}",
            self.out
        );
    }

    /// A line that begins with `start` and ends with `end`.
    fn assert_line(&self, start: &str, end: &str) {
        assert!(
            self.out
                .lines()
                .any(|l| l.starts_with(start) && l.ends_with(end)),
            "gdb said no line {start:?}...{end:?}:\n{}",
            self.out
        );
    }
}

/// Runs the workload with `args` under gdb with `commands`: through `rseq-trace gdb` when
/// `extension`, else plain gdb. `cpu0`: pinned to CPU 0 (one per-CPU stack for every push).
fn debug(extension: bool, cpu0: bool, args: &[&str], commands: &[&str]) -> Session {
    let workload = workload_bin().display().to_string();
    let mut program = vec![workload.as_str()];
    if !args.contains(&"--threads") {
        program.extend(["--threads", "1"]);
    }
    program.extend_from_slice(args);
    debug_program(extension, cpu0, &program, commands, "{\"pid\"")
}

/// Runs `program` (and its arguments) under gdb; its report is the line that begins with
/// `report`.
fn debug_program(
    extension: bool,
    cpu0: bool,
    program: &[&str],
    commands: &[&str],
    report: &str,
) -> Session {
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", if cpu0 { "0" } else { "0-1023" }]);
    if extension {
        cmd.arg(trace_bin()).args(["gdb", "--batch"]);
        for c in commands {
            cmd.args(["--ex", c]);
        }
        cmd.arg("--");
    } else {
        cmd.args(["gdb", "-q", "-batch", "-nx"]);
        for c in commands {
            cmd.args(["-ex", c]);
        }
        cmd.arg("--args");
    }
    cmd.args(program);
    let out = cmd.output().expect("cannot run gdb (apt install gdb)");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    // Its line may follow gdb's own output on the same line of the shared pipe.
    let truth = text
        .lines()
        .find_map(|l| l.find(report).map(|i| &l[i..]))
        // And gdb's may follow it.
        .and_then(|l| {
            serde_json::Deserializer::from_str(l)
                .into_iter::<Value>()
                .next()?
                .ok()
        })
        .unwrap_or_else(|| panic!("the program printed no report under gdb:\n{text}"));
    Session { out: text, truth }
}

/// gdb is a test tool like gcc: `scripts/bootstrap.sh` installs it, so its absence fails.
fn require_gdb() {
    assert!(
        Command::new("gdb").arg("--version").output().is_ok(),
        "gdb is not installed: run scripts/bootstrap.sh (or apt install gdb)"
    );
}

#[test]
fn without_the_extension_stepping_aborts_the_section() {
    require_gdb();
    let s = debug(
        false,
        false,
        &["--iterations", "3"],
        &[
            "break rseq_workload_counter_add",
            "run",
            "next",
            "delete",
            "continue",
        ],
    );
    let counter = s.section("counter_add");
    assert_eq!(count(counter, "aborts"), 1, "{counter}");
    assert_eq!(count(counter, "commits"), 2, "{counter}");
}

#[test]
fn stepi_steps_over_every_section_and_it_commits() {
    require_gdb();
    // Iteration 1 adds and pushes, iteration 2 adds and pops: four stops, each stepped
    // instruction by instruction past its section.
    let mut commands = vec![
        "break rseq_workload_counter_add",
        "break rseq_workload_list_push",
        "break rseq_workload_list_pop",
        "run",
    ];
    for _ in 0..4 {
        commands.extend(["stepi"; 8]);
        commands.push("continue");
    }
    let s = debug(
        true,
        true,
        &["--iterations", "2", "--burst", "1"],
        &commands,
    );
    s.assert_said("rseq: stepped over rseq_key_workload_counter (committed)");
    s.assert_said("rseq: stepped over rseq_key_workload_list_push (committed)");
    // list_pop has no marker table: its key is its function+offset, which the build decides.
    s.assert_line(
        "rseq: stepped over rseq_workload_list_pop+0x",
        " (committed)",
    );
    for name in ["counter_add", "list_push", "list_pop"] {
        let t = s.section(name);
        assert_eq!(count(t, "aborts"), 0, "{name}: {t}");
        assert_eq!(count(t, "commits"), count(t, "entries"), "{name}: {t}");
    }
    assert_eq!(count(s.section("counter_add"), "commits"), 2);
}

#[test]
fn next_and_step_go_on_past_the_section() {
    require_gdb();
    let s = debug(
        true,
        true,
        &["--iterations", "3"],
        &[
            "break rseq_workload_counter_add",
            "break rseq_workload_list_push",
            "run",
            "next",
            "continue",
            "step",
            "delete",
            "continue",
        ],
    );
    s.assert_said("rseq: stepped over rseq_key_workload_counter (committed)");
    s.assert_said("rseq: stepped over rseq_key_workload_list_push (committed)");
    for name in ["counter_add", "list_push"] {
        let t = s.section(name);
        assert_eq!(count(t, "aborts"), 0, "{name}: {t}");
        assert_eq!(count(t, "commits"), 3, "{name}: {t}");
    }
}

#[test]
fn cancels_are_reported_as_cancels() {
    require_gdb();
    // One CPU's stack holds 8 items: pushes 9-12 leave by the exit point. Stop at the 10th.
    let s = debug(
        true,
        true,
        &["--iterations", "12", "--burst", "100"],
        &[
            "break rseq_workload_list_push",
            "ignore 1 9",
            "run",
            "next",
            "delete",
            "continue",
        ],
    );
    s.assert_said("rseq: stepped over rseq_key_workload_list_push (cancelled at 0x");
    let push = s.section("list_push");
    assert_eq!(count(push, "cancels"), 4, "{push}");
    assert_eq!(count(push, "aborts"), 0, "{push}");
}

#[test]
fn a_section_that_fails_its_own_check_is_reported_aborted() {
    require_gdb();
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        eprintln!("skipped: --mismatch-every needs two CPUs");
        return;
    }
    // Pinned: a thread stopped by gdb may resume on another CPU, which the deliberate
    // mismatch would then match.
    let s = debug(
        true,
        true,
        &["--iterations", "1", "--mismatch-every", "1"],
        &[
            "break rseq_workload_counter_add",
            "run",
            "next",
            "delete",
            "continue",
        ],
    );
    s.assert_said("rseq: stepped over rseq_key_workload_counter (aborted: ");
    assert_eq!(count(s.section("counter_add"), "aborts"), 1);
}

#[test]
fn info_rseq_and_a_breakpoint_inside_a_section() {
    require_gdb();
    let s = debug(
        true,
        false,
        &["--iterations", "1"],
        &[
            "break rseq_workload_counter_add",
            "run",
            "info rseq",
            "info rseq rseq_key_workload_list_push",
            // Two bytes past start_ip, as the extension relocated it.
            "python gdb.execute(f\"break *{CATALOG.of_key('rseq_key_workload_counter')[0].start + 2:#x}\")",
            "delete",
            "continue",
        ],
    );
    for key in ["rseq_key_workload_counter", "rseq_key_workload_list_push"] {
        s.assert_said(&format!("\n{key}\n"));
    }
    s.assert_said("\nrseq_workload_list_pop+0x");
    s.assert_said("tables: __rseq_cs, __rseq_markers");
    s.assert_said("is inside critical section rseq_key_workload_counter");
    s.assert_said("every hit makes the section abort");
}

#[test]
fn print_script_names_a_file_gdb_can_source() {
    let out = Command::new(trace_bin())
        .args(["gdb", "--print-script"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let path = String::from_utf8(out.stdout).unwrap();
    let text = std::fs::read_to_string(path.trim()).unwrap();
    assert!(text.contains("class InfoRseq"), "{path}");
    assert!(text.contains(&trace_bin().display().to_string()), "{path}");
}

#[test]
fn sections_of_a_library_loaded_with_dlopen_are_stepped_over() {
    require_gdb();
    let lib = trace_bin().with_file_name("librseq_workload_sections.so");
    let lib = std::fs::canonicalize(&lib)
        .unwrap_or_else(|e| panic!("{}: {e}; run `cargo build` first", lib.display()));
    let lib = lib.display().to_string();
    let s = debug(
        true,
        true,
        &["--iterations", "3", "--sections-lib", &lib],
        &[
            "set breakpoint pending on",
            "break rseq_workload_counter_add",
            "run",
            "next",
            "delete",
            "continue",
        ],
    );
    assert_eq!(s.truth["sections_from"], lib.as_str(), "{}", s.truth);
    s.assert_said("rseq: stepped over rseq_key_workload_counter (committed)");
    let counter = s.section("counter_add");
    assert_eq!(count(counter, "aborts"), 0, "{counter}");
    assert_eq!(count(counter, "commits"), 3, "{counter}");
}

/// The librseq-shaped fixture retries every section until it commits: stepped, its loop never
/// ends (each stepped attempt aborts); stepped over, the first attempt commits.
#[test]
fn librseq_style_retry_loops_commit_when_stepped_over() {
    require_gdb();
    let fx = support::fixtures::librseq_param()
        .path
        .display()
        .to_string();
    for (test, section) in [("inc", "px_inc"), ("retry", "px_retry_inc")] {
        let program = [fx.as_str(), "-t", "1", "-r", "1", "-T", test];
        let brk = format!("break {section}");
        let mut without = vec![brk.as_str(), "run"];
        without.extend(["stepi"; 300]);
        without.extend(["delete", "continue"]);
        let s = debug_program(false, true, &program, &without, "{\"threads\"");
        let t = &s.truth["sections"][section];
        // Each stepped attempt aborted: 300 steps are 10-30 attempts of a few instructions.
        assert!(
            count(t, "aborts") >= 5,
            "{section} stepped without the extension: {t}"
        );
        let with = [brk.as_str(), "run", "next", "next", "delete", "continue"];
        let s = debug_program(true, true, &program, &with, "{\"threads\"");
        s.assert_line(&format!("rseq: stepped over {section}"), " (committed)");
        let t = &s.truth["sections"][section];
        assert_eq!(count(t, "aborts"), 0, "{section} stepped over: {t}");
        assert_eq!(count(t, "attempts"), 1, "{section} stepped over: {t}");
    }
}

#[test]
fn set_rseq_step_off_steps_as_plain_gdb_does() {
    require_gdb();
    let s = debug(
        true,
        true,
        &["--iterations", "3"],
        &[
            "set rseq-step off",
            "show rseq-step",
            "break rseq_workload_counter_add",
            "run",
            "next",
            "delete",
            "continue",
        ],
    );
    s.assert_said("Stepping over rseq critical sections is off.");
    assert!(!s.out.contains("rseq: stepped over"), "{}", s.out);
    assert_eq!(count(s.section("counter_add"), "aborts"), 1);
}

#[test]
fn until_and_nexti_step_over_and_info_rseq_takes_an_address() {
    require_gdb();
    // `set scheduler-locking step`: the other threads stay stopped while the thread steps
    // (and run while the extension lets it through the section).
    let s = debug(
        true,
        true,
        &["--iterations", "2"],
        &[
            "set scheduler-locking step",
            "break rseq_workload_counter_add",
            "run",
            "until",
            "continue",
            "nexti",
            "nexti",
            "nexti",
            "nexti",
            "info rseq $pc",
            "delete",
            "continue",
        ],
    );
    let stepped = s
        .out
        .matches("rseq: stepped over rseq_key_workload_counter (committed)")
        .count();
    assert_eq!(stepped, 2, "{}", s.out);
    let counter = s.section("counter_add");
    assert_eq!(count(counter, "aborts"), 0, "{counter}");
    assert_eq!(count(counter, "commits"), 2, "{counter}");
}

#[test]
fn other_threads_running_meanwhile_do_not_stop_the_step_over() {
    require_gdb();
    // Two workers on one CPU, the other one running free while the first steps: it passes the
    // entry breakpoints (they are the stepped thread's only) and the exit breakpoints.
    let s = debug(
        true,
        true,
        &["--threads", "2", "--iterations", "20000"],
        &[
            "break rseq_workload_counter_add",
            "run",
            "delete",
            "next",
            "next",
            "continue",
        ],
    );
    s.assert_said("rseq: stepped over rseq_key_workload_counter (");
    assert_eq!(s.truth["invariant_ok"], true, "{}", s.truth);
    assert!(!s.out.contains("Traceback"), "{}", s.out);
}

#[test]
fn attaching_to_a_running_process_steps_over_its_sections() {
    require_gdb();
    let mut child = Command::new(workload_bin())
        .args(["--threads", "1", "--duration", "4"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let pid = child.id().to_string();
    let out = Command::new(trace_bin())
        .args(["gdb", "--batch", "--pid", &pid])
        .args([
            "--ex",
            "break rseq_workload_counter_add",
            "--ex",
            "continue",
        ])
        .args(["--ex", "next", "--ex", "delete", "--ex", "detach"])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "the workload failed after gdb detached: {status}"
    );
    // Running free through the section, the thread may be preempted in it: committed or
    // aborted, it came out.
    assert!(
        text.contains("rseq: stepped over rseq_key_workload_counter ("),
        "{text}"
    );
    assert!(!text.contains("Traceback"), "{text}");
}

/// A marker key over two sections with five exits between them: each stop at either section's
/// entry comes out at one of the key's exits, as the program counts it (the first cap of the
/// CPU's value commits, the next one cancels).
#[test]
fn a_marker_key_over_two_sections_comes_out_at_its_exits() {
    require_gdb();
    let fx = support::fixtures::marker_key().path.display().to_string();
    let report = "{\"sections\"";
    let without = ["break fx_pair_add", "run", "next", "delete", "continue"];
    let s = debug_program(false, true, &[fx.as_str(), "2"], &without, report);
    let add = &s.truth["sections"]["fx_pair_add"];
    assert!(
        count(add, "aborts") >= 1,
        "stepped without the extension: {add}"
    );
    let mut with = vec!["break fx_pair_add", "break fx_pair_cap", "run"];
    for _ in 0..4 {
        with.extend(["next", "continue"]);
    }
    let s = debug_program(true, true, &[fx.as_str(), "2"], &with, report);
    let said = |how: &str| {
        s.out
            .lines()
            .filter(|l| l.starts_with("rseq: stepped over rseq_key_fx_pair (") && l.contains(how))
            .count()
    };
    assert_eq!(said("(committed)"), 3, "{}", s.out);
    assert_eq!(said("(cancelled at 0x"), 1, "{}", s.out);
    let (add, cap) = (
        &s.truth["sections"]["fx_pair_add"],
        &s.truth["sections"]["fx_pair_cap"],
    );
    assert_eq!(
        count(add, "aborts") + count(cap, "aborts"),
        0,
        "{}",
        s.truth
    );
    assert_eq!(count(cap, "cancels"), 1, "{}", s.truth);
}
