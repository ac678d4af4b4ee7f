//! Naming code addresses the way their authors think of them: `function+offset` from the symbol
//! table, and, where DWARF is present, file:line with the chain of inlined calls (librseq inlines
//! every operation, so the call site is what tells sections apart).

use std::path::Path;

use serde::Serialize;

use crate::elf::image::ElfImage;

/// `function+0xoffset`, demangled, or the bare address when no symbol covers it.
pub fn function_offset(image: &ElfImage, addr: u64) -> String {
    match image.function_at(addr) {
        Some((start, f)) => format!("{:#}+{:#x}", rustc_demangle::demangle(f), addr - start),
        None => format!("{addr:#x}"),
    }
}

/// Where an address comes from in the source.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SourceLocation {
    /// file:line of the address itself (innermost frame).
    pub location: String,
    /// The inlined calls, innermost first: `function (file:line)`, ending with the function
    /// that contains the code out of line.
    pub inlined: Vec<String>,
}

/// A DWARF reader for one file; without debug information every lookup answers `None`.
pub struct Symbolizer(Option<addr2line::Loader>);

impl Symbolizer {
    /// The DWARF reader of the file at `path`, or one that finds nothing if it has none.
    pub fn new(path: &Path) -> Self {
        Symbolizer(addr2line::Loader::new(path).ok())
    }

    /// The source location and inline chain of a link-time address.
    pub fn locate(&self, addr: u64) -> Option<SourceLocation> {
        let loader = self.0.as_ref()?;
        let mut frames = loader.find_frames(addr).ok()?;
        let mut chain = Vec::new();
        let mut first = None;
        while let Ok(Some(frame)) = frames.next() {
            let at = frame.location.as_ref().map(|l| {
                format!(
                    "{}:{}",
                    l.file.unwrap_or("?"),
                    l.line.map_or_else(|| "?".to_owned(), |n| n.to_string())
                )
            });
            if first.is_none() {
                first = at.clone();
            }
            let name = frame
                .function
                .as_ref()
                .and_then(|f| f.demangle().ok().map(|n| n.into_owned()))
                .unwrap_or_else(|| "?".to_owned());
            chain.push(match at {
                Some(at) => format!("{name} ({at})"),
                None => name,
            });
        }
        Some(SourceLocation {
            location: first?,
            inlined: chain,
        })
    }
}
