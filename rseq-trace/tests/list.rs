//! `rseq-trace list`: every format and link mode gives the right sections, names and probe
//! points; malformed input gives warnings or one clear line, never a panic.

mod support;

use std::{fs, path::Path, process::Command};

use object::{Object, ObjectSection};
use serde_json::Value;
use support::{run_trace, workload_bin, Workload};

fn list_json(args: &[&str]) -> Value {
    let mut all = vec!["list", "--json"];
    all.extend_from_slice(args);
    let (code, out, err) = run_trace(&all);
    assert_eq!(code, 0, "rseq-trace list {args:?} failed: {err}");
    assert!(!err.contains("panicked"), "{err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn section<'a>(object: &'a Value, function: &str) -> &'a Value {
    object["sections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"].as_str().unwrap().split('+').next() == Some(function))
        .unwrap_or_else(|| panic!("no section in {function}: {object:#}"))
}

fn temp_copy(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("rseq-trace-list-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    fs::copy(workload_bin(), &path).unwrap();
    path
}

#[test]
fn workload_sections_with_names_probes_and_merged_marker_keys() {
    let objects = list_json(&[workload_bin().to_str().unwrap()]);
    let o = &objects[0];
    assert_eq!(o["sections"].as_array().unwrap().len(), 3, "{o:#}");
    assert_eq!(o["arch"], "x86_64");
    for (function, exits) in [
        ("rseq_workload_counter_add", 0),
        ("rseq_workload_list_push", 1),
        ("rseq_workload_list_pop", 1),
    ] {
        let s = section(o, function);
        assert!(s["refused"].is_null(), "{s:#}");
        let probes = &s["probes"];
        assert_eq!(probes["cancels"].as_array().unwrap().len(), exits);
        let (entry, start, abort) = (
            probes["entry"].as_u64().unwrap(),
            s["start_ip"].as_u64().unwrap(),
            s["abort_ip"].as_u64().unwrap(),
        );
        // Marked sections (all but list_pop) are probed on their marker nops: START before the
        // descriptor store, ABORT right after abort_ip (the x86-64 marker's nop is at +5).
        let marked = function != "rseq_workload_list_pop";
        assert_eq!(probes["on_markers"], marked, "{s:#}");
        if marked {
            assert_eq!(Some(entry), s["markers"]["start"].as_u64(), "{s:#}");
            assert!(
                entry < start && start - entry <= 48,
                "entry {entry:#x} start {start:#x}"
            );
            assert_eq!(probes["abort"].as_u64(), Some(abort + 5));
            assert_eq!(probes["cancels"], s["markers"]["cancels"], "{s:#}");
        } else {
            assert_eq!(probes["abort"].as_u64(), Some(abort));
            // On the `lea` that loads the descriptor's address, not on the store: a trap there
            // would arm the section during the trap (nothing in the function jumps to the
            // store, so the load runs before it every time).
            assert_eq!(probes["entry_on"], "address_load", "{s:#}");
            assert!(
                entry < start && start - entry <= 30,
                "entry {entry:#x} start {start:#x}"
            );
        }
        let location = s["source"]["location"].as_str().unwrap();
        assert!(
            location.contains("rseq-workload/src/sections/x86_64.rs:"),
            "{location}"
        );
    }
    // The marker table and the librseq tables describe the same sections: one section, one key.
    for (function, key) in [
        ("rseq_workload_counter_add", "rseq_key_workload_counter"),
        ("rseq_workload_list_push", "rseq_key_workload_list_push"),
    ] {
        let s = section(o, function);
        assert_eq!(s["key"], key, "{s:#}");
        let sources = s["sources"].as_array().unwrap();
        assert!(sources.contains(&Value::from("__rseq_cs")), "{s:#}");
        assert!(sources.contains(&Value::from("__rseq_markers")), "{s:#}");
        assert!(s["markers"]["start"].as_u64().unwrap() < s["start_ip"].as_u64().unwrap());
        assert!(s["markers"]["abort"].is_u64() && s["markers"]["finish"].is_u64());
    }
    let push = section(o, "rseq_workload_list_push");
    assert_eq!(push["markers"]["cancels"].as_array().unwrap().len(), 1);
    let pop = section(o, "rseq_workload_list_pop");
    assert_eq!(
        pop["key"], pop["name"],
        "a section without markers is its own key"
    );
    assert!(o["warnings"].as_array().unwrap().is_empty(), "{o:#}");
}

#[test]
fn a_running_process_lists_its_executable() {
    let workload = Workload::start(&["--iterations", "10"], &[]);
    let objects = list_json(&["--pid", &workload.pid.to_string()]);
    workload.release();
    workload.finish();
    let objects = objects.as_array().unwrap();
    assert_eq!(
        objects.len(),
        1,
        "only the executable has tables: {objects:#?}"
    );
    let exe = fs::canonicalize(workload_bin()).unwrap();
    assert_eq!(objects[0]["path"], exe.to_str().unwrap());
}

#[test]
fn a_stripped_binary_is_listed_by_address() {
    let path = temp_copy("stripped");
    assert!(Command::new("strip").arg(&path).status().unwrap().success());
    let objects = list_json(&[path.to_str().unwrap()]);
    let o = &objects[0];
    assert_eq!(o["stripped"], true);
    assert_eq!(o["sections"].as_array().unwrap().len(), 3);
    fs::remove_file(path).unwrap();
}

#[test]
fn not_an_elf_file_and_no_tables_get_one_line() {
    for (path, needle) in [
        ("/etc/hostname", "is not an ELF file"),
        ("/bin/true", "no rseq tables in /bin/true"),
        ("/no/such/file", "cannot read /no/such/file"),
    ] {
        let (code, _, err) = run_trace(&["list", path]);
        assert_eq!(code, 1, "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(needle), "{needle:?} not in {err}");
    }
}

/// File offset of a link-time address, read with `object` independently of rseq-trace.
fn file_offset(data: &[u8], vaddr: u64) -> usize {
    let file = object::File::parse(data).unwrap();
    let s = file
        .sections()
        .find(|s| vaddr >= s.address() && vaddr < s.address() + s.size())
        .unwrap();
    (vaddr - s.address() + s.file_range().unwrap().0) as usize
}

#[test]
fn malformed_tables_give_per_section_warnings() {
    let objects = list_json(&[workload_bin().to_str().unwrap()]);
    let pop = section(&objects[0], "rseq_workload_list_pop").clone();
    let add = section(&objects[0], "rseq_workload_counter_add").clone();
    let path = temp_copy("malformed");
    let mut data = fs::read(&path).unwrap();
    // 1. Remove list_pop's RSEQ_SIG.
    let sig = file_offset(&data, pop["abort_ip"].as_u64().unwrap() - 4);
    data[sig..sig + 4].copy_from_slice(&[0, 0, 0, 0]);
    // 2. Make counter_add's descriptor (the lowest) claim a section 64 KiB long: it now overlaps
    //    the others, and their probe points fall inside it.
    let desc = file_offset(&data, add["descriptor"].as_u64().unwrap());
    data[desc + 16..desc + 24].copy_from_slice(&0x10000u64.to_le_bytes());
    fs::write(&path, &data).unwrap();
    let objects = list_json(&[path.to_str().unwrap()]);
    let warnings = objects[0]["warnings"].to_string();
    assert!(warnings.contains("not preceded by RSEQ_SIG"), "{warnings}");
    assert!(warnings.contains("overlap"), "{warnings}");
    let refused = objects[0]["sections"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| !s["refused"].is_null() && s["refusal"] == "probe_in_section")
        .count();
    assert!(
        refused >= 1,
        "a probe point inside another section must be refused: {objects:#}"
    );

    // 3. Truncated files: never a panic, whatever is left.
    for keep in [64, 4096, data.len() / 2, data.len() - 1] {
        fs::write(&path, &data[..keep]).unwrap();
        let (_, _, err) = run_trace(&["list", path.to_str().unwrap()]);
        assert!(!err.contains("panicked"), "{keep} bytes: {err}");
        assert!(err.lines().count() <= 1, "{keep} bytes: {err}");
    }
    fs::remove_file(&path).unwrap();
    let _ = Path::new(&path).parent().map(fs::remove_dir);
}

/// Every format and link mode: the same sections, exits and names as the fixture's source says,
/// each with safe probe points, read by rseq-trace from the file as built.
#[test]
fn every_fixture_format_and_link_mode() {
    for f in support::fixtures::all() {
        let objects = list_json(&[f.path.to_str().unwrap()]);
        let o = &objects[0];
        let mut found: Vec<(String, usize)> = o["sections"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                let name = s["name"].as_str().unwrap();
                let function = name.split('+').next().unwrap().to_owned();
                assert!(s["refused"].is_null(), "{}: {name} refused: {s:#}", f.name);
                let probes = &s["probes"];
                assert_eq!(probes["abort"], s["abort_ip"], "{}: {name}", f.name);
                let (entry, start) = (
                    probes["entry"].as_u64().unwrap(),
                    s["start_ip"].as_u64().unwrap(),
                );
                // The store ends at start_ip; the load of the address may come right before it.
                let max = match (f.arch, probes["entry_on"].as_str()) {
                    ("aarch64", _) => 4,
                    (_, Some("address_load")) => 30,
                    _ => 15,
                };
                assert!(entry < start && start - entry <= max, "{}: {name}", f.name);
                assert!(
                    s["source"]["location"].as_str().is_some(),
                    "{}: {name} has no file:line",
                    f.name
                );
                (function, s["exits"].as_array().unwrap().len())
            })
            .collect();
        found.sort();
        let mut expected: Vec<(String, usize)> = f
            .expected
            .iter()
            .map(|e| (e.function.to_owned(), e.exits))
            .collect();
        expected.sort();
        assert_eq!(found, expected, "{}: sections (function, exits)", f.name);
        assert_eq!(o["arch"], f.arch, "{}", f.name);
        assert!(
            o["warnings"].as_array().unwrap().is_empty(),
            "{}: {:#}",
            f.name,
            o["warnings"]
        );
        if f.format == "librseq" {
            // librseq inlines every operation: the inline chain names the call site's function.
            let s = section(o, "fx_counter_add");
            let chain = s["source"]["inlined"].to_string();
            assert!(chain.contains("fx_counter_add"), "{}: {chain}", f.name);
        }
    }
}

/// A descriptor pointer that points nowhere, and a section whose entry has no descriptor store
/// (so no safe entry probe exists), in the GNU ld non-PIE fixture, where values live in the file.
#[test]
fn bad_pointers_and_missing_entry_store() {
    let f = support::fixtures::get("librseq-x86_64-gnu-exec");
    let objects = list_json(&[f.path.to_str().unwrap()]);
    let first = &objects[0]["sections"][0];
    let second = &objects[0]["sections"][1];
    let mut data = fs::read(&f.path).unwrap();
    let file = object::File::parse(&*data).unwrap();
    let ptrs = file.section_by_name("__rseq_cs_ptr_array").unwrap();
    let ptr_at = ptrs.file_range().unwrap().0 as usize;
    drop(file);
    // 1. The first pointer now points outside every section.
    data[ptr_at..ptr_at + 8].copy_from_slice(&0x7fff_dead_0000u64.to_le_bytes());
    // 2. The 4-byte store before the second section's start_ip becomes nops.
    let entry = second["probes"]["entry"].as_u64().unwrap();
    let start = second["start_ip"].as_u64().unwrap();
    let at = file_offset(&data, entry);
    for b in &mut data[at..at + (start - entry) as usize] {
        *b = 0x90;
    }
    let path = std::env::temp_dir().join(format!("rseq-trace-bad-{}", std::process::id()));
    fs::write(&path, &data).unwrap();
    let objects = list_json(&[path.to_str().unwrap()]);
    fs::remove_file(&path).unwrap();
    let o = &objects[0];
    assert!(
        o["warnings"].to_string().contains("outside the file"),
        "{:#}",
        o["warnings"]
    );
    // The section the bad pointer named is still found through __rseq_cs itself.
    let sections = o["sections"].as_array().unwrap();
    assert!(sections.iter().any(|s| s["start_ip"] == first["start_ip"]));
    let broken = sections
        .iter()
        .find(|s| s["start_ip"] == second["start_ip"])
        .unwrap();
    let why = broken["refused"].as_str().expect("refused");
    assert!(
        why.contains("not the store") || why.contains("no store"),
        "{why}"
    );
    assert_eq!(broken["refusal"], "no_entry_store", "{broken:#}");
}

/// `list --pid` finds tables in shared libraries, not only in the executable.
#[test]
fn a_process_lists_its_shared_libraries() {
    let f = support::fixtures::get("librseq-x86_64-gnu-shared");
    let mut sleep = Command::new("sleep")
        .arg("30")
        .env("LD_PRELOAD", &f.path)
        .spawn()
        .unwrap();
    // Wait until the loader has mapped the library.
    let maps = format!("/proc/{}/maps", sleep.id());
    for _ in 0..200 {
        if fs::read_to_string(&maps)
            .unwrap_or_default()
            .contains("librseq-x86_64-gnu-shared")
        {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let objects = list_json(&["--pid", &sleep.id().to_string()]);
    sleep.kill().unwrap();
    sleep.wait().unwrap();
    let objects = objects.as_array().unwrap();
    assert_eq!(objects.len(), 1, "{objects:#?}");
    assert!(objects[0]["path"]
        .as_str()
        .unwrap()
        .ends_with("librseq-x86_64-gnu-shared"));
    assert_eq!(
        objects[0]["sections"].as_array().unwrap().len(),
        f.expected.len()
    );
}
