//! `--sections-lib`: the sections run from `librseq_workload_sections.so`, mapped before
//! the gate or (`--dlopen-after-gate`) only after it, with the same ground truth and
//! with descriptors inside the library's mapping.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, Stdio};
use std::time::{Duration, Instant};

use object::{Object, ObjectSection, ObjectSymbol};

const LIB: &str = "librseq_workload_sections.so";
const FUNCTIONS: [&str; 3] = [
    "rseq_workload_counter_add",
    "rseq_workload_list_push",
    "rseq_workload_list_pop",
];

fn workload() -> &'static str {
    env!("CARGO_BIN_EXE_rseq-workload")
}

/// The library built by this same `cargo test`: next to the test executable
/// (`target/<profile>/deps/`), else next to the workload (`target/<profile>/`).
fn library() -> PathBuf {
    let beside_test = std::env::current_exe()
        .expect("current_exe")
        .with_file_name(LIB);
    let beside_bin = Path::new(workload()).with_file_name(LIB);
    let lib = if beside_test.exists() {
        beside_test
    } else {
        beside_bin
    };
    std::fs::canonicalize(&lib).unwrap_or_else(|e| panic!("{}: {e}", lib.display()))
}

fn stress() -> [&'static str; 10] {
    [
        "--threads",
        "2",
        "--delay",
        "100",
        "--yield-every",
        "16",
        "--signal-every",
        "64",
        "--iterations",
        "20000",
    ]
}

/// Runs the workload to completion; returns (exit code, stdout JSON or Null, stderr).
fn run(args: &[&str]) -> (i32, serde_json::Value, String) {
    let out = Command::new(workload())
        .args(args)
        .output()
        .expect("run rseq-workload");
    let json = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (
        out.status.code().unwrap_or(-1),
        json,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A workload started with `--gate`, stopped at its `READY` line.
struct Gated {
    child: Child,
    stderr: BufReader<ChildStderr>,
    pid: i32,
}

impl Gated {
    fn start(args: &[&str]) -> Self {
        let mut child = Command::new(workload())
            .arg("--gate")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start rseq-workload");
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        stderr.read_line(&mut line).expect("READY line");
        let pid = line
            .strip_prefix("READY ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("expected READY <pid>, got {line:?}"));
        Gated { child, stderr, pid }
    }

    /// The library's mappings in the workload: (start, end, file offset).
    fn library_maps(&self, lib: &Path) -> Vec<(u64, u64, u64)> {
        let maps = std::fs::read_to_string(format!("/proc/{}/maps", self.pid)).unwrap();
        maps.lines()
            .filter(|l| l.ends_with(&*lib.to_string_lossy()))
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                let (a, b) = f[0].split_once('-').unwrap();
                let hex = |s: &str| u64::from_str_radix(s, 16).unwrap();
                (hex(a), hex(b), hex(f[2]))
            })
            .collect()
    }

    fn open_gate(&self) {
        // SAFETY: kill has no memory-safety preconditions; the pid is our own child.
        assert_eq!(unsafe { libc::kill(self.pid, libc::SIGUSR2) }, 0);
    }

    fn finish(mut self) -> serde_json::Value {
        let mut out = String::new();
        self.child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        let mut err = String::new();
        self.stderr.read_to_string(&mut err).unwrap();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "workload failed: {status}: {err}");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
    }
}

/// Checks the ground truth and that every descriptor lies in the library, at the right
/// place: start_ip inside the (file) symbol of its function, abort_ip in `__rseq_failure`,
/// given the load base from `/proc/PID/maps`.
fn check_library_run(r: &serde_json::Value, lib: &Path, base: u64) {
    assert_eq!(r["invariant_ok"], true, "{r}");
    assert_eq!(r["sections_from"], lib.to_string_lossy().as_ref(), "{r}");
    for (key, function) in [
        ("counter_add", FUNCTIONS[0]),
        ("list_push", FUNCTIONS[1]),
        ("list_pop", FUNCTIONS[2]),
    ] {
        let s = &r["sections"][key];
        assert_eq!(s["function"], function);
        assert!(s["entries"].as_u64().unwrap() > 0, "{s}");
    }
    let data = std::fs::read(lib).unwrap();
    let file = object::File::parse(&*data).unwrap();
    let failure = file.section_by_name("__rseq_failure").unwrap();
    let failure = failure.address()..failure.address() + failure.size();
    let descriptors = r["descriptors"].as_array().unwrap();
    assert_eq!(descriptors.len(), 3, "{r}");
    for d in descriptors {
        let function = d["function"].as_str().unwrap();
        let sym = file
            .dynamic_symbols()
            .find(|s| s.name() == Ok(function))
            .unwrap_or_else(|| panic!("{function} not exported"));
        let at = |k: &str| d[k].as_u64().unwrap() - base;
        let body = sym.address()..sym.address() + sym.size();
        assert!(body.contains(&at("start_ip")), "{function}: {d}");
        assert!(body.contains(&at("post_commit_ip")), "{function}: {d}");
        assert!(failure.contains(&at("abort_ip")), "{function}: {d}");
        for e in d["exit_ips"].as_array().unwrap() {
            assert!(
                body.contains(&(e.as_u64().unwrap() - base)),
                "{function}: {d}"
            );
        }
        // The library reports its own delay loop too, as offsets inside its section.
        let off = |k: &str| d[k].as_u64().unwrap_or_else(|| panic!("no {k}: {d}"));
        let (begin, end) = (off("delay_loop_begin_offset"), off("delay_loop_end_offset"));
        assert!(
            0 < begin && begin < end && end < at("post_commit_ip") - at("start_ip"),
            "{function}: {d}"
        );
    }
}

#[test]
fn library_has_tables_and_exports() {
    let data = std::fs::read(library()).unwrap();
    let file = object::File::parse(&*data).unwrap();
    for name in [
        "__rseq_cs",
        "__rseq_cs_ptr_array",
        "__rseq_exit_point_array",
        "__rseq_failure",
        "__rseq_markers",
    ] {
        let s = file
            .section_by_name(name)
            .unwrap_or_else(|| panic!("no {name}"));
        assert!(s.size() > 0, "{name} is empty");
    }
    // 3 descriptors of 32 bytes, 3 pointers, 2 exit points of 16 bytes, 7 marker records.
    let size = |n: &str| file.section_by_name(n).unwrap().size();
    assert_eq!(size("__rseq_cs"), 96);
    assert_eq!(size("__rseq_cs_ptr_array"), 24);
    assert_eq!(size("__rseq_exit_point_array"), 32);
    assert_eq!(size("__rseq_markers"), 7 * 24);
    for name in FUNCTIONS
        .iter()
        .chain(&["rseq_workload_sections_descriptors"])
    {
        assert!(
            file.dynamic_symbols()
                .any(|s| s.name() == Ok(name) && s.is_definition() && s.is_global()),
            "{name} is not exported"
        );
    }
}

#[test]
fn built_in_sections_are_the_executables() {
    let (code, r, err) = run(&stress());
    assert_eq!(code, 0, "{err}");
    assert_eq!(r["sections_from"], "executable");
    assert_eq!(r["descriptors"].as_array().unwrap().len(), 3);
}

#[test]
fn library_loaded_before_the_gate() {
    let lib = library();
    let lib_arg = lib.to_str().unwrap();
    let mut args = vec!["--sections-lib", lib_arg];
    args.extend(stress());
    let w = Gated::start(&args);
    let maps = w.library_maps(&lib);
    let base = maps
        .iter()
        .find(|m| m.2 == 0)
        .unwrap_or_else(|| panic!("library not mapped before the gate: {maps:x?}"))
        .0;
    w.open_gate();
    let r = w.finish();
    check_library_run(&r, &lib, base);
}

#[test]
fn library_loaded_after_the_gate() {
    let lib = library();
    let lib_arg = lib.to_str().unwrap();
    let mut args = vec!["--sections-lib", lib_arg, "--dlopen-after-gate"];
    args.extend(stress());
    // Run long enough to see the mapping while the workers run.
    args.extend(["--duration", "0.5"]);
    let w = Gated::start(&args);
    assert_eq!(w.library_maps(&lib), [], "library mapped before the gate");
    w.open_gate();
    let deadline = Instant::now() + Duration::from_secs(10);
    let base = loop {
        if let Some(m) = w.library_maps(&lib).iter().find(|m| m.2 == 0) {
            break m.0;
        }
        assert!(
            Instant::now() < deadline,
            "library not mapped after the gate"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    let r = w.finish();
    check_library_run(&r, &lib, base);
}

#[test]
fn bad_libraries_are_setup_errors() {
    let (code, _, err) = run(&[
        "--sections-lib",
        "/nonexistent/librseq_workload_sections.so",
    ]);
    assert_eq!(code, 2);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("cannot load sections library"), "{err}");
    // A real shared library without the sections.
    let (code, _, err) = run(&["--sections-lib", "libc.so.6"]);
    assert_eq!(code, 2);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("rseq_workload_counter_add"), "{err}");
    // --dlopen-after-gate needs --sections-lib.
    let (code, _, _) = run(&["--dlopen-after-gate"]);
    assert_eq!(code, 2);
}
