//! The ELF fixtures build from source, and each has the property it exists for: the link mode
//! (GNU ld / lld, exec / PIE / shared, RELA / RELR), where the tables' pointer values live in the
//! file, the table format, the descriptor store before every start_ip, the abort signature, the
//! functions that own the sections, and the DWARF inline chain. The x86-64 executables run.

#[path = "support/fixtures.rs"]
mod fixtures;

#[path = "fixtures_build/elf.rs"]
mod elf;
#[path = "fixtures_build/tables.rs"]
mod tables;

use std::{process::Command, time::Instant};

use elf::{u64_at, Elf, Source, DF_1_PIE, ET_DYN, ET_EXEC};
use fixtures::{Expected, Fixture};
use object::{Object, ObjectSection};
use tables::{check_abort, check_descriptor_store, inline_chain, read_tables, Section};

fn check_fixture(fx: &Fixture) -> String {
    let data = std::fs::read(&fx.path).unwrap();
    let elf = Elf::parse(&data, fx.arch);
    let mut report = String::new();

    // Architecture, linker, link mode.
    let arch = match elf.file.architecture() {
        object::Architecture::X86_64 => "x86_64",
        object::Architecture::Aarch64 => "aarch64",
        other => panic!("{}: architecture {other:?}", fx.name),
    };
    assert_eq!(arch, fx.arch, "{}", fx.name);
    let comment = elf.comment();
    assert_eq!(
        comment.contains("LLD"),
        fx.linker == "lld",
        "{}: .comment says {comment:?}",
        fx.name
    );
    let pie = elf.dynamic_flags_1() & DF_1_PIE != 0;
    match fx.kind {
        "exec" => assert_eq!(elf.e_type(), ET_EXEC, "{}", fx.name),
        "pie" => assert!(elf.e_type() == ET_DYN && pie, "{}: not a PIE", fx.name),
        "shared" => assert!(elf.e_type() == ET_DYN && !pie, "{}: not a DSO", fx.name),
        other => unreachable!("{other}"),
    }
    let has_relr = elf.file.section_by_name(".relr.dyn").is_some();
    assert_eq!(has_relr, fx.relr, "{}: .relr.dyn present", fx.name);

    let (sections, sources) = read_tables(fx, &elf);
    if fx.relr {
        // The descriptors (aligned 32) are packed into .relr.dyn; the pointer and exit-point
        // arrays (alignment 1, as librseq emits them) stay R_*_RELATIVE in .rela.dyn, because
        // both linkers pack only relocations in sections aligned to at least 2. A reader must
        // handle both kinds in one file (and, with lld, zeros in the file for the RELA ones).
        assert!(
            sections.iter().all(|s| s.start_source == Source::Relr),
            "{}: start_ip not in .relr.dyn",
            fx.name
        );
        assert!(
            sources.get(&Source::Rela).is_some_and(|&n| n > 0),
            "{}: expected the arrays' pointers in .rela.dyn",
            fx.name
        );
    }

    // Owners and exit points, as the tables say.
    let mut got = vec![];
    for sec in &sections {
        let (line, found) = check_section(fx, &elf, sec);
        report.push_str(&line);
        got.push(found);
    }
    got.sort();
    assert_eq!(got, fx.expected, "{}: sections found vs expected", fx.name);
    format!(
        "{} ({}): {} sections, pointer fields by source {:?}\n{report}",
        fx.name,
        comment.trim_matches(|c| c == ' ' || c == '|'),
        sections.len(),
        sources
    )
}

/// One section: its owner holds all of it, its store, abort handler, exits and inline chain;
/// returns its line of the report and what it is, for the comparison with the expected list.
fn check_section(fx: &Fixture, elf: &Elf, sec: &Section) -> (String, Expected) {
    let (owner, _) = elf
        .function_at(sec.start)
        .unwrap_or_else(|| panic!("{}: no function holds {:#x}", fx.name, sec.start));
    assert_eq!(
        elf.function_at(sec.post_commit - 1).map(|f| f.0).as_deref(),
        Some(owner.as_str()),
        "{}: section runs out of {owner}",
        fx.name
    );
    check_descriptor_store(fx, elf, sec);
    check_abort(fx, elf, sec, &owner);
    let exits: Vec<String> = sec
        .exits
        .iter()
        .map(|&e| {
            let f = elf.function_at(e).map(|f| f.0).unwrap_or_default();
            assert_eq!(f, owner, "{}: exit_ip {e:#x} outside {owner}", fx.name);
            if e == sec.post_commit {
                format!("{e:#x}=post_commit_ip")
            } else {
                format!("{e:#x}")
            }
        })
        .collect();
    let chain = inline_chain(fx, sec.start);
    assert_eq!(
        chain.last(),
        Some(&owner),
        "{}: DWARF chain {chain:?}",
        fx.name
    );
    if fx.format != "tcmalloc" {
        assert!(
            chain.len() >= 2,
            "{}: no inlined operation: {chain:?}",
            fx.name
        );
    }
    let line = format!(
        "    {owner}: start {:#x} post_commit {:#x} abort {:#x} ({}) exits [{}] dwarf {}",
        sec.start,
        sec.post_commit,
        sec.abort,
        elf.section_name_at(sec.abort),
        exits.join(", "),
        chain.join(" <- ")
    ) + "\n";
    let found = Expected {
        function: fx
            .expected
            .iter()
            .find(|e| e.function == owner)
            .map_or("<unexpected>", |e| e.function),
        exits: sec.exits.len(),
    };
    (line, found)
}

#[test]
fn every_fixture_has_its_link_mode_and_tables() {
    let t = Instant::now();
    let all = fixtures::all();
    eprintln!(
        "built or reused {} fixtures in {:?}",
        all.len(),
        t.elapsed()
    );
    assert_eq!(all.len(), 12);
    let mut names: Vec<&str> = all.iter().map(|f| f.name.as_str()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), all.len(), "duplicate fixture names");
    for fx in all {
        eprintln!("{}", check_fixture(fx));
    }
}

#[test]
fn the_link_modes_differ_where_they_should() {
    // lld RELA: zero in the file at start_ip; GNU ld: the link-time value; RELR: packed.
    for name in [
        "librseq-x86_64-lld-pie",
        "librseq-x86_64-lld-shared",
        "librseq-x86_64-gnu-pie",
        "librseq-x86_64-gnu-shared",
        "librseq-x86_64-lld-pie-relr",
        "librseq-x86_64-gnu-pie-relr",
        "librseq-x86_64-gnu-exec",
        "librseq-x86_64-lld-exec",
        "librseq-aarch64-gnu-pie",
    ] {
        let fx = fixtures::get(name);
        let data = std::fs::read(&fx.path).unwrap();
        let elf = Elf::parse(&data, fx.arch);
        let cs = elf.file.section_by_name("__rseq_cs").unwrap();
        let start_field = cs.address() + 8;
        let in_file = u64_at(elf.bytes(start_field, 8), 0);
        let rela = elf.rela.get(&start_field).map(|r| r.1 as u64);
        let relr = elf.relr.contains(&start_field);
        match (fx.linker, fx.kind, fx.relr) {
            (_, "exec", _) => assert!(in_file != 0 && rela.is_none() && !relr, "{name}"),
            ("lld", _, false) => assert!(in_file == 0 && rela.is_some_and(|a| a != 0), "{name}"),
            (_, _, true) => assert!(in_file != 0 && rela.is_none() && relr, "{name}"),
            // GNU ld
            _ => assert!(in_file != 0 && rela == Some(in_file), "{name}"),
        }
    }
}

#[test]
fn runnable_fixtures_run() {
    let runnable: Vec<&Fixture> = fixtures::all().iter().filter(|f| f.runnable).collect();
    assert_eq!(runnable.len(), 8);
    for fx in runnable {
        let out = Command::new(&fx.path).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{} exited {}: {stdout}{}",
            fx.name,
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let prefix = format!("{}_{}: iterations=5000 ", fx.format, fx.arch);
        assert_eq!(stdout.lines().count(), 1, "{}: {stdout}", fx.name);
        assert!(stdout.starts_with(&prefix), "{}: {stdout}", fx.name);
    }
    // Without glibc's rseq area the programs register their own (rseq_table needs no re-exec).
    for fx in fixtures::all().iter().filter(|f| f.runnable) {
        let out = Command::new(&fx.path)
            .arg("300")
            .env("GLIBC_TUNABLES", "glibc.pthread.rseq=0")
            .output()
            .unwrap();
        assert!(out.status.success(), "{} without glibc rseq", fx.name);
    }
}
