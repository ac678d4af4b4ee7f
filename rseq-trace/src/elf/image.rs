//! An ELF file as rseq tables see it: link-time addresses, with dynamic relocations applied.

use std::{collections::HashMap, fs, path::Path};

use object::{
    elf, Architecture, Object, ObjectSection, ObjectSegment, ObjectSymbol, RelocationFlags,
    SymbolKind,
};

use crate::error::TableError;

/// The architectures whose rseq ABI rseq-trace knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Arch {
    /// x86-64 (`EM_X86_64`).
    X86_64,
    /// 64-bit Arm (`EM_AARCH64`).
    Aarch64,
}

/// (address, size, file range if the section has file content).
type SectionInfo = (u64, u64, Option<(u64, u64)>);

/// A loaded ELF image, addressed by link-time virtual address.
///
/// Descriptors in PIE executables and shared objects carry `R_*_RELATIVE` relocations. GNU ld
/// also writes the link-time value into the file, lld (without `-z pack-relative-relocs`) does
/// not, so a pointer is read from the relocation's addend when there is one.
pub struct ElfImage {
    /// The architecture the file is built for.
    pub arch: Arch,
    data: Vec<u8>,
    /// Link-time address of a relocated word -> its addend (the link-time value it points to).
    relative: HashMap<u64, u64>,
    /// (vaddr, filesz, file offset, executable) of each PT_LOAD segment.
    segments: Vec<(u64, u64, u64, bool)>,
    /// Named sections: name -> (address, size, file range if the section has file content).
    sections: HashMap<String, SectionInfo>,
    /// Function symbols sorted by address: (address, size, name).
    functions: Vec<(u64, u64, String)>,
    /// Every named symbol by address (data objects too: marker keys are 1-byte objects).
    names: HashMap<u64, String>,
    /// Whether the file has a static symbol table (`strip` removes it).
    pub has_symtab: bool,
}

impl ElfImage {
    /// Reads and parses the ELF file at `path`.
    pub fn open(path: &Path) -> Result<Self, TableError> {
        let data = fs::read(path).map_err(|source| TableError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, data)
    }

    /// Parses `data`, the contents of the file at `path` (which errors name).
    pub fn parse(path: &Path, data: Vec<u8>) -> Result<Self, TableError> {
        let not_elf = |reason: String| TableError::NotElf {
            path: path.to_owned(),
            reason,
        };
        let file = object::File::parse(&*data).map_err(|e| not_elf(e.to_string()))?;
        if file.format() != object::BinaryFormat::Elf {
            return Err(not_elf(format!("{:?} format", file.format())));
        }
        let arch = match file.architecture() {
            Architecture::X86_64 => Arch::X86_64,
            Architecture::Aarch64 => Arch::Aarch64,
            other => {
                return Err(TableError::UnsupportedArch {
                    path: path.to_owned(),
                    arch: format!("{other:?}"),
                })
            }
        };
        let relative = relative_relocations(&file, arch);
        let segments = file
            .segments()
            .map(|s| {
                let (off, size) = s.file_range();
                let exec = matches!(s.flags(), object::SegmentFlags::Elf { p_flags, .. } if p_flags.0 & elf::PF_X.0 != 0);
                (s.address(), size, off, exec)
            })
            .collect();
        let sections = file
            .sections()
            .filter_map(|s| {
                let range = s.file_range();
                Some((s.name().ok()?.to_owned(), (s.address(), s.size(), range)))
            })
            .collect();
        let has_symtab = file.symbol_table().is_some();
        let names = symbol_names(&file);
        let functions = functions(&file);
        drop(file);
        Ok(ElfImage {
            arch,
            data,
            relative,
            segments,
            sections,
            functions,
            names,
            has_symtab,
        })
    }

    /// Address and size of a section, by name.
    /// Only sections with file content no larger than the file: a malformed header cannot make
    /// a reader walk more than the file holds.
    pub fn section(&self, name: &str) -> Option<(u64, u64)> {
        match self.sections.get(name) {
            Some((a, s, Some((_, len)))) if *s == *len && *len <= self.data.len() as u64 => {
                Some((*a, *s))
            }
            _ => None,
        }
    }

    /// The file content of a section, by name: the only way to read a non-loadable section
    /// such as `__rseq_markers`, which no segment covers.
    pub fn section_data(&self, name: &str) -> Option<&[u8]> {
        let (_, _, range) = self.sections.get(name)?;
        let (off, size) = (*range)?;
        self.data
            .get(usize::try_from(off).ok()?..usize::try_from(off.checked_add(size)?).ok()?)
    }

    /// The program interpreter (`PT_INTERP`, e.g. ld-linux), from the `.interp` section.
    pub fn interpreter(&self) -> Option<String> {
        let data = self.section_data(".interp")?;
        let end = data.iter().position(|b| *b == 0).unwrap_or(data.len());
        std::str::from_utf8(&data[..end]).ok().map(str::to_owned)
    }

    /// The name of the symbol defined exactly at `addr`, if any.
    pub fn symbol_at(&self, addr: u64) -> Option<&str> {
        self.names.get(&addr).map(String::as_str)
    }

    /// File offset of a link-time address inside a loadable segment's file-backed part.
    pub fn file_offset(&self, vaddr: u64) -> Option<u64> {
        self.segments
            .iter()
            .find(|(a, size, _, _)| vaddr >= *a && vaddr - a < *size)
            .and_then(|(a, _, off, _)| (vaddr - a).checked_add(*off))
    }

    /// The link-time address of file offset 0 (segments map their file ranges at a constant
    /// distance from their addresses): a process that maps the file at offset 0 at address B
    /// has relocated it by B minus this. 0 for position-independent files.
    pub fn load_vaddr(&self) -> u64 {
        self.segments
            .iter()
            .map(|(a, _, off, _)| a.saturating_sub(*off))
            .min()
            .unwrap_or(0)
    }

    /// Whether `vaddr` lies in an executable segment.
    pub fn is_code(&self, vaddr: u64) -> bool {
        self.segments
            .iter()
            .any(|(a, size, _, x)| *x && vaddr >= *a && vaddr - a < *size)
    }

    /// `len` bytes of file content at a link-time address.
    pub fn bytes(&self, vaddr: u64, len: usize) -> Option<&[u8]> {
        let off = usize::try_from(self.file_offset(vaddr)?).ok()?;
        let end = off.checked_add(len)?;
        // The whole range must be in the same segment's file-backed part.
        if len == 0 {
            return Some(&[]);
        }
        if self.file_offset(vaddr.checked_add(len as u64 - 1)?)? as usize != end - 1 {
            return None;
        }
        self.data.get(off..end)
    }

    /// Up to `max` bytes of file content at a link-time address: fewer where its segment's
    /// file-backed part ends first (code read ahead of a point, such as an abort handler at
    /// the end of the text segment).
    pub fn bytes_up_to(&self, vaddr: u64, max: usize) -> Option<&[u8]> {
        let (a, size, _, _) = self
            .segments
            .iter()
            .find(|(a, size, _, _)| vaddr >= *a && vaddr - a < *size)?;
        // `a + size` may overflow in a malformed file; `vaddr - a < size` is known.
        let left = usize::try_from(size - (vaddr - a)).unwrap_or(usize::MAX);
        self.bytes(vaddr, max.min(left))
    }

    /// A 32-bit word (never relocated), such as RSEQ_SIG or an aarch64 instruction.
    pub fn read_u32(&self, vaddr: u64) -> Option<u32> {
        Some(u32::from_le_bytes(self.bytes(vaddr, 4)?.try_into().ok()?))
    }

    /// A pointer-sized word, relocated to its link-time value.
    pub fn read_ptr(&self, vaddr: u64) -> Option<u64> {
        if let Some(v) = self.relative.get(&vaddr) {
            return Some(*v);
        }
        Some(u64::from_le_bytes(self.bytes(vaddr, 8)?.try_into().ok()?))
    }

    /// A constant word (never relocated), such as post_commit_offset.
    pub fn read_u64(&self, vaddr: u64) -> Option<u64> {
        Some(u64::from_le_bytes(self.bytes(vaddr, 8)?.try_into().ok()?))
    }

    /// [start, end) of the function symbol containing `vaddr`, when its size is known.
    pub fn function_range(&self, vaddr: u64) -> Option<(u64, u64)> {
        let i = self.functions.partition_point(|f| f.0 <= vaddr);
        let (start, size, _) = self.functions.get(i.checked_sub(1)?)?;
        let end = start
            .checked_add(*size)
            .filter(|e| *size > 0 && vaddr < *e)?;
        Some((*start, end))
    }

    /// (start address, name) of the function symbol containing `vaddr`; one of unknown size
    /// reaches up to the next function.
    pub fn function_at(&self, vaddr: u64) -> Option<(u64, &str)> {
        let i = self.functions.partition_point(|f| f.0 <= vaddr);
        let (start, size, name) = self.functions.get(i.checked_sub(1)?)?;
        let inside = *size == 0 || start.checked_add(*size).is_none_or(|end| vaddr < end);
        inside.then_some((*start, name.as_str()))
    }
}

/// R_*_RELATIVE relocations of a position-independent file: address -> addend.
fn relative_relocations(file: &object::File<'_>, arch: Arch) -> HashMap<u64, u64> {
    let relative_type = match arch {
        Arch::X86_64 => elf::R_X86_64_RELATIVE,
        Arch::Aarch64 => elf::R_AARCH64_RELATIVE,
    };
    let mut relative = HashMap::new();
    if let Some(relocs) = file.dynamic_relocations() {
        for (at, r) in relocs {
            if r.flags()
                == (RelocationFlags::Elf {
                    r_type: relative_type,
                })
            {
                relative.insert(at, r.addend() as u64);
            }
        }
    }
    relative
}

/// The first name of every address a symbol names (static and dynamic symbols).
fn symbol_names(file: &object::File<'_>) -> HashMap<u64, String> {
    let mut names = HashMap::new();
    for s in file.symbols().chain(file.dynamic_symbols()) {
        if let (Ok(name), true) = (s.name(), s.address() != 0) {
            if !name.is_empty() && s.kind() != SymbolKind::Section && s.kind() != SymbolKind::File {
                names.entry(s.address()).or_insert_with(|| name.to_owned());
            }
        }
    }
    names
}

/// Function symbols as (start, size, name), by start, one per start.
fn functions(file: &object::File<'_>) -> Vec<(u64, u64, String)> {
    let mut functions: Vec<_> = file
        .symbols()
        .chain(file.dynamic_symbols())
        .filter(|s| s.kind() == SymbolKind::Text && s.address() != 0)
        .filter_map(|s| Some((s.address(), s.size(), s.name().ok()?.to_owned())))
        .collect();
    functions.sort();
    functions.dedup_by_key(|f| f.0);
    functions
}
