//! `--migrate-every-ms`: the controller moves the workers between CPUs while the ground
//! truth stays exact, and a process confined to one CPU is refused in one line.

use std::os::unix::process::CommandExt;
use std::process::Command;

fn workload() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rseq-workload"))
}

/// The number of CPUs this test process may run on (the workload inherits the mask).
fn allowed_cpus() -> usize {
    // SAFETY: a zeroed cpu_set_t is an empty set that sched_getaffinity fills; CPU_COUNT
    // only reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        assert_eq!(
            libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set),
            0
        );
        libc::CPU_COUNT(&set) as usize
    }
}

fn json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}; stderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[test]
fn workers_are_moved_and_counts_stay_exact() {
    if allowed_cpus() < 2 {
        eprintln!("skipped: needs 2 CPUs");
        return;
    }
    let out = workload()
        .args([
            "--migrate-every-ms",
            "5",
            "--delay",
            "200",
            "--threads",
            "2",
        ])
        .args(["--duration", "0.5"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let r = json(&out);
    assert_eq!(r["invariant_ok"], true, "{r}");
    // 0.5 s at one round per 5 ms, two workers: about 200; only require that it ran.
    let moved = r["migrations_requested"].as_u64().unwrap();
    assert!(moved >= 10, "{r}");
    let aborts: u64 = ["counter_add", "list_push", "list_pop"]
        .iter()
        .map(|k| r["sections"][k]["aborts"].as_u64().unwrap())
        .sum();
    assert!(aborts > 0, "{r}");
}

#[test]
fn without_the_option_nothing_is_moved() {
    let out = workload().args(["--iterations", "1000"]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(json(&out)["migrations_requested"], 0);
}

#[test]
fn one_cpu_is_a_setup_error() {
    let mut cmd = workload();
    cmd.args(["--migrate-every-ms", "5", "--iterations", "10"]);
    // SAFETY: between fork and exec this only calls sched_getaffinity and
    // sched_setaffinity (async-signal-safe system calls) on a local set.
    unsafe {
        cmd.pre_exec(|| {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            let size = std::mem::size_of::<libc::cpu_set_t>();
            if libc::sched_getaffinity(0, size, &mut set) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let first = (0..libc::CPU_SETSIZE as usize)
                .find(|&c| libc::CPU_ISSET(c, &set))
                .unwrap_or(0);
            libc::CPU_ZERO(&mut set);
            libc::CPU_SET(first, &mut set);
            if libc::sched_setaffinity(0, size, &set) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("--migrate-every-ms needs at least 2 CPUs"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
}
