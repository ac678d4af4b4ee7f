//! The fixture ELF files, read with `object` plus the few raw fields it does not expose
//! (dynamic flags, RELR, `.comment`).

use std::collections::{HashMap, HashSet};

use object::{Object, ObjectSection, ObjectSymbol, SymbolKind};

use super::fixtures::Fixture;

pub(crate) const R_X86_64_RELATIVE: u32 = 8;
pub(crate) const R_AARCH64_RELATIVE: u32 = 1027;
pub(crate) const DT_FLAGS_1: u64 = 0x6fff_fffb;
pub(crate) const DF_1_PIE: u64 = 0x0800_0000;
pub(crate) const ET_EXEC: u16 = 2;
pub(crate) const ET_DYN: u16 = 3;

/// Where a pointer-sized table field gets its run-time value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Source {
    /// No dynamic relocation: the value in the file is final (non-PIE executable).
    File,
    /// An `R_*_RELATIVE` in `.rela.dyn`: load bias + addend.
    Rela,
    /// Covered by `.relr.dyn`: load bias + the value in the file.
    Relr,
}

pub(crate) struct Elf<'a> {
    pub(crate) file: object::File<'a>,
    data: &'a [u8],
    /// `.rela.dyn`: offset -> (type, addend).
    pub(crate) rela: HashMap<u64, (u32, i64)>,
    pub(crate) relr: HashSet<u64>,
    relative: u32,
}

pub(crate) fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes(b[o..o + 2].try_into().unwrap())
}
pub(crate) fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}
pub(crate) fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}

impl<'a> Elf<'a> {
    pub(crate) fn parse(data: &'a [u8], arch: &str) -> Self {
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

    pub(crate) fn e_type(&self) -> u16 {
        u16_at(self.data, 16)
    }

    pub(crate) fn dynamic_flags_1(&self) -> u64 {
        let Some(s) = self.file.section_by_name(".dynamic") else {
            return 0;
        };
        s.data()
            .unwrap()
            .chunks_exact(16)
            .find(|e| u64_at(e, 0) == DT_FLAGS_1)
            .map_or(0, |e| u64_at(e, 8))
    }

    pub(crate) fn comment(&self) -> String {
        self.file
            .section_by_name(".comment")
            .map(|s| String::from_utf8_lossy(s.data().unwrap()).replace('\0', " | "))
            .unwrap_or_default()
    }

    /// Bytes in the file at virtual address `addr` (from the section holding it).
    pub(crate) fn bytes(&self, addr: u64, len: usize) -> &'a [u8] {
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

    pub(crate) fn section_name_at(&self, addr: u64) -> String {
        self.file
            .sections()
            .find(|s| s.address() <= addr && addr < s.address() + s.size() && s.address() != 0)
            .and_then(|s| s.name().ok().map(String::from))
            .unwrap_or_default()
    }

    pub(crate) fn function_at(&self, addr: u64) -> Option<(String, u64)> {
        self.file
            .symbols()
            .filter(|s| s.kind() == SymbolKind::Text && s.size() > 0)
            .find(|s| s.address() <= addr && addr < s.address() + s.size())
            .map(|s| (s.name().unwrap().to_string(), s.address()))
    }

    /// Resolves a pointer-sized table field and checks that the value is where this link mode
    /// puts it. Returns the link-time value and where it comes from.
    pub(crate) fn pointer(&self, fx: &Fixture, at: u64, what: &str) -> (u64, Source) {
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
