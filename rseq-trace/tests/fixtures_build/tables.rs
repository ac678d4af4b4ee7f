//! The fixtures' rseq tables, read field by field as their format lays them out, and the code
//! around each section: the descriptor store, the abort handler, the DWARF inline chain.

use std::{collections::BTreeMap, process::Command};

use iced_x86::{Decoder, DecoderOptions, Mnemonic, OpKind, Register};
use object::{Object, ObjectSection};

use super::{
    elf::{u32_at, u64_at, Elf, Source},
    fixtures::Fixture,
};

#[derive(Debug)]
pub(crate) struct Section {
    pub(crate) desc: u64,
    pub(crate) start: u64,
    pub(crate) post_commit: u64,
    pub(crate) abort: u64,
    pub(crate) start_source: Source,
    pub(crate) exits: Vec<u64>,
}

/// Reads the fixture's tables the way its format lays them out, checking every field.
pub(crate) fn read_tables(fx: &Fixture, elf: &Elf) -> (Vec<Section>, BTreeMap<Source, usize>) {
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
    let mut sections = read_descriptors(fx, elf, table_name, &mut note);
    check_pointer_array(fx, elf, &sections, &mut note);
    read_exit_points(fx, elf, &mut sections, &mut note);
    (sections, sources)
}

/// The descriptors of the table section, each field checked.
fn read_descriptors(
    fx: &Fixture,
    elf: &Elf,
    table_name: &str,
    note: &mut impl FnMut(Source),
) -> Vec<Section> {
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
    sections
}

/// `__rseq_cs_ptr_array`, when present, points at every descriptor and nothing else.
fn check_pointer_array(
    fx: &Fixture,
    elf: &Elf,
    sections: &[Section],
    note: &mut impl FnMut(Source),
) {
    let Some(ptrs) = elf.file.section_by_name("__rseq_cs_ptr_array") else {
        return;
    };
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

/// `__rseq_exit_point_array`, when present: each exit given to its section, outside it.
fn read_exit_points(
    fx: &Fixture,
    elf: &Elf,
    sections: &mut [Section],
    note: &mut impl FnMut(Source),
) {
    let Some(exits) = elf.file.section_by_name("__rseq_exit_point_array") else {
        return;
    };
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

/// The instructions that end exactly at start_ip store the descriptor's address into
/// `rseq->rseq_cs`, in the shape this format uses.
pub(crate) fn check_descriptor_store(fx: &Fixture, elf: &Elf, sec: &Section) {
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
pub(crate) fn check_abort(fx: &Fixture, elf: &Elf, sec: &Section, owner: &str) {
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
pub(crate) fn inline_chain(fx: &Fixture, addr: u64) -> Vec<String> {
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
