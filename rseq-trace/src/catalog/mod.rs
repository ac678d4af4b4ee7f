//! The catalog: every critical section found in the traced files, with its key, name, probe
//! plan, and (computed once, on first need) its instructions and their source lines. Files are
//! added as the traced processes map them; a section, once in, is never changed, so views can
//! hold any version of the catalog while the session extends the next one.

pub mod probe_plan;

use std::{
    collections::HashMap,
    fs, io,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, OnceLock},
};

use tracing::warn;

use self::probe_plan::{ProbePlan, Refusal};
use crate::{
    elf::{
        self, disasm,
        image::ElfImage,
        symbols::{self, Symbolizer},
        CriticalSection,
    },
    error::TableError,
};

/// The identity of a file, whatever path reaches it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId {
    /// Device of the file system holding it.
    pub dev: u64,
    /// Inode number on that device.
    pub ino: u64,
}

impl FileId {
    /// The identity of the file at `path`.
    pub fn of(path: &Path) -> io::Result<Self> {
        let m = fs::metadata(path)?;
        Ok(FileId {
            dev: m.dev(),
            ino: m.ino(),
        })
    }
}

/// A critical section as rseq-trace knows it.
#[derive(Debug)]
pub struct Section {
    /// Index in the counter map and in the cookies of its probes.
    pub id: u32,
    /// The file it is in, as the traced process (or the user) names it.
    pub object: String,
    /// Its addresses, as the tables describe them.
    pub cs: CriticalSection,
    /// `function+0xoffset` of start_ip, or the bare address without symbols.
    pub name: String,
    /// The marker key, or the name when no marker table names a group.
    pub key: String,
    /// The probes, or why the section is not traced.
    pub plan: Result<ProbePlan, Refusal>,
    /// The file it is in.
    pub file: FileId,
    /// Its instructions, from start_ip up to post_commit_ip, computed on first need.
    lines: OnceLock<Vec<Line>>,
}

/// One instruction of a section, as the position histogram shows it.
#[derive(Clone, Debug)]
struct Line {
    offset: u32,
    instruction: String,
    source: Option<String>,
}

/// One ELF file whose tables were read.
pub struct CatalogObject {
    /// The file's contents.
    pub image: ElfImage,
    /// Where the file was read from (for DWARF).
    open_path: PathBuf,
    /// Its DWARF reader, opened on first need (a lookup at a time).
    symbolizer: OnceLock<Mutex<Symbolizer>>,
    /// Its sections as the tables describe them.
    pub found: Vec<CriticalSection>,
    /// Catalog ids of its sections, in `found` order.
    pub ids: Vec<u32>,
}

/// Every section of every file read so far. Cloning is cheap (sections and files are shared).
#[derive(Clone, Default)]
pub struct Catalog {
    sections: Vec<Arc<Section>>,
    objects: HashMap<FileId, Arc<CatalogObject>>,
}

impl Catalog {
    /// Every section, by id.
    pub fn sections(&self) -> impl ExactSizeIterator<Item = &Section> {
        self.sections.iter().map(|s| &**s)
    }

    /// The section with this id (the counter maps' `section`).
    pub fn section(&self, id: u32) -> Option<&Section> {
        self.sections.get(id as usize).map(|s| &**s)
    }

    /// Number of sections.
    pub fn len(&self) -> usize {
        self.sections.len()
    }

    /// Whether no file with sections was read.
    pub fn is_empty(&self) -> bool {
        self.sections.is_empty()
    }

    /// A file already read.
    pub fn object(&self, file: FileId) -> Option<&CatalogObject> {
        self.objects.get(&file).map(|o| &**o)
    }

    /// Reads a file's tables and plans its probes, once; `Ok(false)` when it has no sections.
    pub fn add_file(
        &mut self,
        id: FileId,
        open_path: &Path,
        shown: &str,
    ) -> Result<bool, TableError> {
        if let Some(o) = self.objects.get(&id) {
            return Ok(!o.found.is_empty());
        }
        let image = ElfImage::open(open_path)?;
        let elf::Discovery {
            sections: found,
            warnings,
        } = elf::discover(&image);
        for w in &warnings {
            warn!("{shown}: {} (at {:#x})", w.message, w.at);
        }
        let guard = probe_plan::Guard::new(&found);
        let mut ids = Vec::with_capacity(found.len());
        for cs in &found {
            let section = new_section(&image, cs, &guard, shown, id, self.sections.len() as u32);
            ids.push(section.id);
            self.sections.push(Arc::new(section));
        }
        let has = !found.is_empty();
        let object = CatalogObject {
            image,
            open_path: open_path.to_owned(),
            symbolizer: OnceLock::new(),
            found,
            ids,
        };
        self.objects.insert(id, Arc::new(object));
        Ok(has)
    }

    /// The instruction at `offset` from the start of `section`, and its source line.
    pub fn describe_position(&self, section: u32, offset: u32) -> (String, Option<String>) {
        let Some(s) = self.section(section) else {
            return ("?".into(), None);
        };
        let Some(object) = self.object(s.file) else {
            return ("?".into(), None);
        };
        let lines = s.lines.get_or_init(|| object.lines(&s.cs));
        match lines.binary_search_by_key(&offset, |l| l.offset) {
            Ok(i) => (lines[i].instruction.clone(), lines[i].source.clone()),
            // Not where decoding from start_ip put an instruction: decoded on its own.
            Err(_) => {
                let addr = s.cs.start_ip + u64::from(offset);
                (
                    disasm::instruction_at(&object.image, addr),
                    object.source(addr),
                )
            }
        }
    }
}

impl CatalogObject {
    /// The file:line of a link-time address, when the file has DWARF.
    fn source(&self, addr: u64) -> Option<String> {
        let symbolizer = self
            .symbolizer
            .get_or_init(|| Mutex::new(Symbolizer::new(&self.open_path)));
        let symbolizer = symbolizer.lock().ok()?;
        symbolizer.locate(addr).map(|l| l.location)
    }

    /// Every instruction of a section, decoded from its start.
    fn lines(&self, cs: &CriticalSection) -> Vec<Line> {
        disasm::instructions(&self.image, cs.start_ip, cs.post_commit_ip)
            .into_iter()
            .map(|(addr, instruction)| Line {
                offset: (addr - cs.start_ip) as u32,
                instruction,
                source: self.source(addr),
            })
            .collect()
    }
}

/// A section of a file just read, with its name, key and plan.
fn new_section(
    image: &ElfImage,
    cs: &CriticalSection,
    guard: &probe_plan::Guard,
    shown: &str,
    file: FileId,
    id: u32,
) -> Section {
    let name = symbols::function_offset(image, cs.start_ip);
    let plan = probe_plan::plan(image, cs, guard);
    match &plan {
        Err(reason) => warn!("{shown}: section {name} not traced: {reason}"),
        Ok(_) if !cs.exits_known => warn!(
            "{shown}: section {name}: its table lists no exit points, so early exits are not seen and count as commits"
        ),
        Ok(_) => {}
    }
    Section {
        id,
        object: shown.to_owned(),
        key: cs.key.clone().unwrap_or_else(|| name.clone()),
        name,
        cs: cs.clone(),
        plan,
        file,
        lines: OnceLock::new(),
    }
}
