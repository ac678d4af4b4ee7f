//! The ELF fixtures build from source, and each has the property it exists for: the link mode
//! (GNU ld / lld, exec / PIE / shared, RELA / RELR), where the tables' pointer values live in the
//! file, the table format, the descriptor store before every start_ip, the abort signature, the
//! functions that own the sections, and the DWARF inline chain. The x86-64 executables run.

#[path = "support/fixtures.rs"]
mod fixtures;

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    fmt::Write as _,
    process::Command,
    time::Instant,
};

use fixtures::{Expected, Fixture};
use iced_x86::{Decoder, DecoderOptions, Mnemonic, OpKind, Register};
use object::{Object, ObjectSection, ObjectSymbol, SymbolKind};

const R_X86_64_RELATIVE: u32 = 8;
const R_AARCH64_RELATIVE: u32 = 1027;
const DT_FLAGS_1: u64 = 0x6fff_fffb;
const DF_1_PIE: u64 = 0x0800_0000;
const ET_EXEC: u16 = 2;
const ET_DYN: u16 = 3;

/// Where a pointer-sized table field gets its run-time value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Source {
    /// No dynamic relocation: the value in the file is final (non-PIE executable).
    File,
    /// An `R_*_RELATIVE` in `.rela.dyn`: load bias + addend.
    Rela,
    /// Covered by `.relr.dyn`: load bias + the value in the file.
    Relr,
}

struct Elf<'a> {
    file: object::File<'a>,
    data: &'a [u8],
    /// `.rela.dyn`: offset -> (type, addend).
    rela: HashMap<u64, (u32, i64)>,
    relr: HashSet<u64>,
    relative: u32,
}

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes(b[o..o + 2].try_into().unwrap())
}
fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}

impl<'a> Elf<'a> {
    fn parse(data: &'a [u8], arch: &str) -> Self {
        let file = object::File::parse(data).expect("parse ELF");
        let mut rela = HashMap::new();
        if let Some(s) = file.section_by_name(".rela.dyn") {
            for e in s.data().unwrap().chunks_exact(24) {
                let info = u64_at(e, 8);
                rela.insert(u64_at(e, 0), (info as u32, u64_at(e, 16) as i64));
            }
        }
        let mut relr = HashSet::new();
        if let Some(s) = file.section_by_name(".relr.dyn") {
            let mut next = 0u64;
            for e in s.data().unwrap().chunks_exact(8) {
                let e = u64_at(e, 0);
                if e & 1 == 0 {
                    relr.insert(e);
                    next = e + 8;
                } else {
                    for bit in 1..64 {
                        if e >> bit & 1 == 1 {
                            relr.insert(next + (bit - 1) * 8);
                        }
                    }
                    next += 63 * 8;
                }
            }
        }
        let relative = if arch == "aarch64" {
            R_AARCH64_RELATIVE
        } else {
            R_X86_64_RELATIVE
        };
        Elf {
            file,
            data,
            rela,
            relr,
            relative,
        }
    }

    fn e_type(&self) -> u16 {
        u16_at(self.data, 16)
    }

    fn dynamic_flags_1(&self) -> u64 {
        let Some(s) = self.file.section_by_name(".dynamic") else {
            return 0;
        };
        s.data()
            .unwrap()
            .chunks_exact(16)
            .find(|e| u64_at(e, 0) == DT_FLAGS_1)
            .map_or(0, |e| u64_at(e, 8))
    }

    fn comment(&self) -> String {
        self.file
            .section_by_name(".comment")
            .map(|s| String::from_utf8_lossy(s.data().unwrap()).replace('\0', " | "))
            .unwrap_or_default()
    }

    /// Bytes in the file at virtual address `addr` (from the section holding it).
    fn bytes(&self, addr: u64, len: usize) -> &'a [u8] {
        for s in self.file.sections() {
            let (start, size) = (s.address(), s.size());
            if start <= addr && addr + len as u64 <= start + size {
                let d = s.data().unwrap();
                if d.is_empty() {
                    continue; // NOBITS
                }
                let o = (addr - start) as usize;
                return &d[o..o + len];
            }
        }
        panic!("no section holds {addr:#x}..+{len}");
    }

    fn section_name_at(&self, addr: u64) -> String {
        self.file
            .sections()
            .find(|s| s.address() <= addr && addr < s.address() + s.size() && s.address() != 0)
            .and_then(|s| s.name().ok().map(String::from))
            .unwrap_or_default()
    }

    fn function_at(&self, addr: u64) -> Option<(String, u64)> {
        self.file
            .symbols()
            .filter(|s| s.kind() == SymbolKind::Text && s.size() > 0)
            .find(|s| s.address() <= addr && addr < s.address() + s.size())
            .map(|s| (s.name().unwrap().to_string(), s.address()))
    }

    /// Resolves a pointer-sized table field and checks that the value is where this link mode
    /// puts it. Returns the link-time value and where it comes from.
    fn pointer(&self, fx: &Fixture, at: u64, what: &str) -> (u64, Source) {
        let in_file = u64_at(self.bytes(at, 8), 0);
        let rela = self.rela.get(&at);
        let in_relr = self.relr.contains(&at);
        let ctx = format!("{}: {what} at {at:#x}", fx.name);
        if fx.kind == "exec" {
            assert!(rela.is_none() && !in_relr, "{ctx}: relocated in an ET_EXEC");
            assert_ne!(in_file, 0, "{ctx}: zero in a non-PIE executable");
            return (in_file, Source::File);
        }
        if in_relr {
            assert!(
                fx.relr,
                "{ctx}: in .relr.dyn without -z pack-relative-relocs"
            );
            assert!(rela.is_none(), "{ctx}: in both .relr.dyn and .rela.dyn");
            assert_ne!(in_file, 0, "{ctx}: RELR with a zero addend in the file");
            return (in_file, Source::Relr);
        }
        let &(ty, addend) = rela.unwrap_or_else(|| panic!("{ctx}: no dynamic relocation"));
        assert_eq!(ty, self.relative, "{ctx}: relocation type {ty}");
        assert!(addend > 0, "{ctx}: addend {addend}");
        match fx.linker {
            // GNU ld also writes the link-time value into the file.
            "gnu" => assert_eq!(in_file, addend as u64, "{ctx}: GNU ld file value"),
            // lld (without --apply-dynamic-relocs) leaves zero: the value is only the addend.
            "lld" => assert_eq!(in_file, 0, "{ctx}: lld RELA must leave zero in the file"),
            other => unreachable!("{other}"),
        }
        (addend as u64, Source::Rela)
    }
}

#[derive(Debug)]
struct Section {
    desc: u64,
    start: u64,
    post_commit: u64,
    abort: u64,
    start_source: Source,
    exits: Vec<u64>,
}

/// Reads the fixture's tables the way its format lays them out, checking every field.
fn read_tables(fx: &Fixture, elf: &Elf) -> (Vec<Section>, BTreeMap<Source, usize>) {
    let mut sources = BTreeMap::new();
    let mut note = |s: Source| *sources.entry(s).or_insert(0) += 1;
    let table_name = if fx.format == "rseq_table" {
        "__rseq_table"
    } else {
        "__rseq_cs"
    };
    for (name, present) in [
        ("__rseq_cs", fx.format != "rseq_table"),
        ("__rseq_table", fx.format == "rseq_table"),
        ("__rseq_cs_ptr_array", fx.format != "rseq_table"),
        ("__rseq_exit_point_array", fx.format == "librseq"),
    ] {
        assert_eq!(
            elf.file.section_by_name(name).is_some(),
            present,
            "{}: section {name} present",
            fx.name
        );
    }
    let table = elf.file.section_by_name(table_name).unwrap();
    assert_eq!(table.align(), 32, "{}: {table_name} alignment", fx.name);
    assert_eq!(table.size() % 32, 0, "{}: {table_name} size", fx.name);
    let mut sections = vec![];
    for i in 0..table.size() / 32 {
        let desc = table.address() + 32 * i;
        let head = elf.bytes(desc, 8);
        assert_eq!(
            (u32_at(head, 0), u32_at(head, 4)),
            (0, 0),
            "{}: version/flags",
            fx.name
        );
        let (start, start_source) = elf.pointer(fx, desc + 8, "start_ip");
        note(start_source);
        assert!(
            !elf.rela.contains_key(&(desc + 16)) && !elf.relr.contains(&(desc + 16)),
            "{}: post_commit_offset relocated",
            fx.name
        );
        let pco = u64_at(elf.bytes(desc + 16, 8), 0);
        assert!(
            pco > 0 && pco < 256,
            "{}: post_commit_offset {pco}",
            fx.name
        );
        let (abort, s) = elf.pointer(fx, desc + 24, "abort_ip");
        note(s);
        assert!(
            abort < start || abort >= start + pco,
            "{}: abort_ip inside the section",
            fx.name
        );
        sections.push(Section {
            desc,
            start,
            post_commit: start + pco,
            abort,
            start_source,
            exits: vec![],
        });
    }
    if let Some(ptrs) = elf.file.section_by_name("__rseq_cs_ptr_array") {
        let mut seen: Vec<u64> = (0..ptrs.size() / 8)
            .map(|i| {
                let (p, s) = elf.pointer(fx, ptrs.address() + 8 * i, "__rseq_cs_ptr_array entry");
                note(s);
                p
            })
            .collect();
        seen.sort();
        let mut descs: Vec<u64> = sections.iter().map(|s| s.desc).collect();
        descs.sort();
        assert_eq!(seen, descs, "{}: pointer array vs descriptors", fx.name);
    }
    if let Some(exits) = elf.file.section_by_name("__rseq_exit_point_array") {
        assert_eq!(exits.size() % 16, 0);
        for i in 0..exits.size() / 16 {
            let at = exits.address() + 16 * i;
            let (start, s1) = elf.pointer(fx, at, "exit start_ip");
            let (exit, s2) = elf.pointer(fx, at + 8, "exit_ip");
            note(s1);
            note(s2);
            let sec = sections
                .iter_mut()
                .find(|s| s.start == start)
                .unwrap_or_else(|| panic!("{}: exit point for unknown start {start:#x}", fx.name));
            assert!(
                exit < sec.start || exit >= sec.post_commit,
                "{}: exit_ip inside the section",
                fx.name
            );
            sec.exits.push(exit);
        }
    }
    (sections, sources)
}

/// The instructions that end exactly at start_ip store the descriptor's address into
/// `rseq->rseq_cs`, in the shape this format uses.
fn check_descriptor_store(fx: &Fixture, elf: &Elf, sec: &Section) {
    let ctx = format!("{}: store before start_ip {:#x}", fx.name, sec.start);
    if fx.arch == "aarch64" {
        let w = |o: u64| u32_at(elf.bytes(sec.start - o, 4), 0);
        let (adrp, add, str_) = (w(12), w(8), w(4));
        assert_eq!(adrp & 0x9f00_0000, 0x9000_0000, "{ctx}: adrp {adrp:#x}");
        assert_eq!(add & 0xffc0_0000, 0x9100_0000, "{ctx}: add {add:#x}");
        // str x<t>, [x<n>, #8]: 64-bit STR (unsigned offset), imm12 = 8 / 8.
        assert_eq!(str_ & 0xffc0_0000, 0xf900_0000, "{ctx}: str {str_:#x}");
        assert_eq!(str_ >> 10 & 0xfff, 1, "{ctx}: str offset");
        let rd = adrp & 0x1f;
        assert_eq!(
            (add & 0x1f, add >> 5 & 0x1f, str_ & 0x1f),
            (rd, rd, rd),
            "{ctx}: regs"
        );
        let imm = ((adrp >> 5 & 0x7ffff) << 2 | (adrp >> 29 & 3)) as i64;
        let imm = (imm << 43) >> 31; // sign-extend 21 bits, then << 12
        let page = ((sec.start - 12) & !0xfff).wrapping_add(imm as u64);
        let target = page + u64::from(add >> 10 & 0xfff);
        assert_eq!(target, sec.desc, "{ctx}: adrp/add target");
        return;
    }
    let code = elf.bytes(sec.start - 24, 24);
    for back in 1..=24usize {
        let ip = sec.start - back as u64;
        let mut d = Decoder::with_ip(64, &code[24 - back..], ip, DecoderOptions::NONE);
        let instrs: Vec<_> = d.iter().collect();
        if instrs.len() < 2 || instrs.last().unwrap().next_ip() != sec.start {
            continue;
        }
        if instrs.iter().any(|i| i.is_invalid()) {
            continue;
        }
        let (lea, mov) = (&instrs[instrs.len() - 2], &instrs[instrs.len() - 1]);
        if lea.mnemonic() != Mnemonic::Lea
            || lea.op0_register() != Register::RAX
            || !lea.is_ip_rel_memory_operand()
            || lea.ip_rel_memory_address() != sec.desc
        {
            continue;
        }
        assert_eq!(mov.mnemonic(), Mnemonic::Mov, "{ctx}");
        assert_eq!(mov.op0_kind(), OpKind::Memory, "{ctx}");
        assert_eq!(mov.op1_register(), Register::RAX, "{ctx}");
        match fx.format {
            // movq %rax, %fs:8(%reg)
            "librseq" => {
                assert_eq!(mov.memory_segment(), Register::FS, "{ctx}");
                assert_ne!(mov.memory_base(), Register::None, "{ctx}");
                assert_eq!(mov.memory_displacement64(), 8, "{ctx}");
            }
            // mov %rax, 8(%reg), %reg = thread pointer + __rseq_offset
            "tcmalloc" => {
                assert_eq!(mov.memory_segment(), Register::DS, "{ctx}");
                assert_ne!(mov.memory_base(), Register::None, "{ctx}");
                assert_eq!(mov.memory_displacement64(), 8, "{ctx}");
            }
            // movq %rax, %fs:__rseq_abi@tpoff+8
            "rseq_table" => {
                assert_eq!(mov.memory_segment(), Register::FS, "{ctx}");
                assert_eq!(mov.memory_base(), Register::None, "{ctx}");
            }
            other => unreachable!("{other}"),
        }
        return;
    }
    panic!("{ctx}: no `lea desc(%rip), %rax; mov %rax, <rseq_cs>` ends at start_ip");
}

/// The abort signature sits right before abort_ip, in the place this format puts the handler.
fn check_abort(fx: &Fixture, elf: &Elf, sec: &Section, owner: &str) {
    let ctx = format!("{}: abort_ip {:#x} of {owner}", fx.name, sec.abort);
    let where_ = elf.section_name_at(sec.abort);
    match (fx.arch, fx.format) {
        ("x86_64", "librseq") => {
            // ud1 0x53053053(%rip), %edi
            assert_eq!(
                elf.bytes(sec.abort - 7, 7),
                [0x0f, 0xb9, 0x3d, 0x53, 0x30, 0x05, 0x53],
                "{ctx}"
            );
            assert_eq!(where_, "__rseq_failure", "{ctx}");
        }
        ("x86_64", "rseq_table") => {
            // nopl 0x53053053(%rip)
            assert_eq!(
                elf.bytes(sec.abort - 7, 7),
                [0x0f, 0x1f, 0x05, 0x53, 0x30, 0x05, 0x53],
                "{ctx}"
            );
            assert_eq!(where_, "__rseq_failure", "{ctx}");
        }
        ("x86_64", "tcmalloc") => {
            assert_eq!(u32_at(elf.bytes(sec.abort - 4, 4), 0), 0x5305_3053, "{ctx}");
            assert_eq!(where_, ".text", "{ctx}");
            let (name, addr) = elf.function_at(sec.abort).expect("trampoline symbol");
            assert_eq!(addr, sec.abort, "{ctx}: trampoline starts at abort_ip");
            assert!(
                name.starts_with(&format!("{owner}_trampoline")),
                "{ctx}: {name}"
            );
            // Its only instruction jumps back into the owner, before start_ip.
            let mut d = Decoder::with_ip(64, elf.bytes(sec.abort, 5), sec.abort, 0);
            let jmp = d.decode();
            assert_eq!(jmp.mnemonic(), Mnemonic::Jmp, "{ctx}");
            let back = jmp.near_branch_target();
            assert!(back < sec.start, "{ctx}: trampoline target {back:#x}");
            assert_eq!(elf.function_at(back).map(|f| f.0).as_deref(), Some(owner));
        }
        ("aarch64", "librseq") => {
            assert_eq!(u32_at(elf.bytes(sec.abort - 4, 4), 0), 0xd428_bc00, "{ctx}");
            if owner == "fx_two_exits" {
                assert_eq!(where_, "__rseq_failure", "{ctx}");
            } else {
                // rseq-arm64.h: inline after the commit, `3: b 222f; .inst sig; 4: b abort`.
                assert_eq!(where_, ".text", "{ctx}");
                assert_eq!(sec.abort, sec.post_commit + 8, "{ctx}");
                let b = u32_at(elf.bytes(sec.post_commit, 4), 0);
                assert_eq!(b, 0x1400_0003, "{ctx}: post_commit_ip is `b 222f`");
            }
        }
        other => unreachable!("{other:?}"),
    }
}

/// `addr2line -i` shows the always-inline operation inside its caller (librseq-style sources).
fn inline_chain(fx: &Fixture, addr: u64) -> Vec<String> {
    let tool = if fx.arch == "aarch64" {
        "aarch64-linux-gnu-addr2line"
    } else {
        "addr2line"
    };
    let out = Command::new(tool)
        .args(["-f", "-i", "-e"])
        .arg(&fx.path)
        .arg(format!("{addr:#x}"))
        .output()
        .unwrap_or_else(|e| panic!("{tool} (binutils): {e}"));
    assert!(out.status.success(), "{tool} failed");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .step_by(2)
        .map(String::from)
        .collect()
}

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
        let (owner, _) = elf
            .function_at(sec.start)
            .unwrap_or_else(|| panic!("{}: no function holds {:#x}", fx.name, sec.start));
        assert_eq!(
            elf.function_at(sec.post_commit - 1).map(|f| f.0).as_deref(),
            Some(owner.as_str()),
            "{}: section runs out of {owner}",
            fx.name
        );
        check_descriptor_store(fx, &elf, sec);
        check_abort(fx, &elf, sec, &owner);
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
        let _ = writeln!(
            report,
            "    {owner}: start {:#x} post_commit {:#x} abort {:#x} ({}) exits [{}] dwarf {}",
            sec.start,
            sec.post_commit,
            sec.abort,
            elf.section_name_at(sec.abort),
            exits.join(", "),
            chain.join(" <- ")
        );
        got.push(Expected {
            function: fx
                .expected
                .iter()
                .find(|e| e.function == owner)
                .map_or("<unexpected>", |e| e.function),
            exits: sec.exits.len(),
        });
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
