//! `rseq-trace list`: every critical section of a file or process, named as its author thinks of
//! it, with the probe points rseq-trace would use or the reason it refuses the section.

use std::{fmt::Write as _, path::Path};

use serde::Serialize;

use crate::{
    catalog::probe_plan::{self, ProbePlan},
    elf::symbols::{self, SourceLocation, Symbolizer},
    elf::{self, image::Arch, image::ElfImage, CriticalSection, TableWarning},
    error::{SessionError, TableError},
    session::procfs,
};

/// One ELF file's listing: its critical sections and what was wrong with its tables.
#[derive(Debug, Serialize)]
pub struct ObjectListing {
    /// The file, as the user or the process names it.
    pub path: String,
    /// The architecture the file is built for.
    pub arch: Arch,
    /// No static symbol table: functions are named from dynamic symbols only, if at all.
    pub stripped: bool,
    /// The link-time address of file offset 0: a process that maps the file's offset 0 at B
    /// runs its sections at their addresses plus B minus this (the gdb extension relocates so).
    pub load_vaddr: u64,
    /// Its critical sections, by start_ip.
    pub sections: Vec<ListedSection>,
    /// What is wrong with single table entries, each with where it is.
    pub warnings: Vec<TableWarning>,
}

/// One critical section as `list` shows it.
#[derive(Debug, Serialize)]
pub struct ListedSection {
    /// `function+0xoffset` of start_ip.
    pub name: String,
    /// Its `key` is the marker key when there is one, else the name: what counts group by.
    #[serde(flatten)]
    pub section: CriticalSection,
    /// file:line of start_ip and its inline chain, where DWARF is present.
    pub source: Option<SourceLocation>,
    /// Where the probes would go, or `null` with `refused` saying why there are none.
    pub probes: Option<ProbePlan>,
    /// Why it has no probes, for people.
    pub refused: Option<String>,
    /// The kind of refusal, a stable label ([`probe_plan::Refusal::label`]).
    pub refusal: Option<&'static str>,
}

/// Lists one ELF file. `shown` is the name to print (the path as the user or the process knows it).
pub fn list_file(path: &Path, shown: &str) -> Result<ObjectListing, TableError> {
    let image = ElfImage::open(path)?;
    let elf::Discovery { sections, warnings } = elf::discover(&image);
    let symbolizer = Symbolizer::new(path);
    let guard = probe_plan::Guard::new(&sections);
    let listed = sections
        .iter()
        .map(|cs| {
            let plan = probe_plan::plan(&image, cs, &guard);
            let name = symbols::function_offset(&image, cs.start_ip);
            let mut section = cs.clone();
            section.key.get_or_insert_with(|| name.clone());
            ListedSection {
                name,
                section,
                source: symbolizer.locate(cs.start_ip),
                probes: plan.as_ref().ok().cloned(),
                refused: plan.as_ref().err().map(ToString::to_string),
                refusal: plan.as_ref().err().map(probe_plan::Refusal::label),
            }
        })
        .collect();
    Ok(ObjectListing {
        path: shown.to_owned(),
        arch: image.arch,
        stripped: !image.has_symtab,
        load_vaddr: image.load_vaddr(),
        sections: listed,
        warnings,
    })
}

/// Lists the file at `path`, refusing one that has no tables at all.
pub fn list_path(path: &Path) -> Result<Vec<ObjectListing>, SessionError> {
    let listing = list_file(path, &path.display().to_string())?;
    if listing.sections.is_empty() && listing.warnings.is_empty() {
        return Err(SessionError::NoTables {
            path: path.display().to_string(),
        });
    }
    Ok(vec![listing])
}

/// Lists every mapped object of `pid` that has tables: the executable and its shared libraries.
pub fn list_pid(pid: u32) -> Result<Vec<ObjectListing>, SessionError> {
    let mut objects = Vec::new();
    for o in procfs::mapped_objects(pid)? {
        match list_file(&o.open_path, &o.shown) {
            Ok(l) if !l.sections.is_empty() || !l.warnings.is_empty() => objects.push(l),
            Ok(_) => {}
            Err(e) => tracing::debug!("{}: {e}", o.shown),
        }
    }
    if objects.is_empty() {
        return Err(SessionError::NoTables {
            path: format!("any object mapped by pid {pid}"),
        });
    }
    Ok(objects)
}

/// The human table.
pub fn to_table(objects: &[ObjectListing]) -> String {
    let mut out = String::new();
    let hex = |v: &[u64]| {
        v.iter()
            .map(|a| format!("{a:#x}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    for o in objects {
        let _ = writeln!(
            out,
            "{} ({:?}{}): {} critical sections",
            o.path,
            o.arch,
            if o.stripped {
                ", stripped: named by address"
            } else {
                ""
            },
            o.sections.len()
        );
        for s in &o.sections {
            let cs = &s.section;
            let _ = writeln!(
                out,
                "  {}  key={}  start={:#x} commit={:#x} abort={:#x} exits={}  [{}]",
                s.name,
                cs.key.as_deref().unwrap_or("-"),
                cs.start_ip,
                cs.post_commit_ip,
                cs.abort_ip,
                cs.exits.len(),
                cs.sources.join("+")
            );
            if let Some(src) = &s.source {
                let _ = writeln!(out, "      at {}", src.location);
                for frame in src.inlined.iter().skip(1) {
                    let _ = writeln!(out, "      inlined into {frame}");
                }
            }
            match (&s.probes, &s.refused) {
                (Some(p), _) => {
                    let _ = writeln!(
                        out,
                        "      probes: entry={:#x} abort={:#x} cancel=[{}] commit=derived{}",
                        p.entry,
                        p.abort,
                        hex(&p.cancels),
                        if cs.exits_known {
                            ""
                        } else {
                            " (no exit table: early exits are not seen and count as commits)"
                        }
                    );
                }
                (None, Some(why)) => {
                    let _ = writeln!(out, "      refused: {why}");
                }
                (None, None) => {}
            }
        }
        for w in &o.warnings {
            let _ = writeln!(out, "  warning: {} (at {:#x})", w.message, w.at);
        }
    }
    out
}
