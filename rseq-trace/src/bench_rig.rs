//! A small rig for benchmarks: load rseq-trace's own eBPF object and attach one named program,
//! with a cookie, at a file offset in one process, through a uprobe multi link (as the agent
//! does) or a perf-event link (as aya and bpftrace do).
//!
//! [`crate::bpf::Tracer`] only attaches `rseq_event` at the probe points of parsed critical
//! sections; measuring what one probe hit costs needs the same object attached at an arbitrary
//! instruction, and the empty program `rseq_empty` next to it as the floor. This module exists
//! for `examples/probe_cost.rs` and is not part of the tracing path.

use std::{
    collections::{HashMap as StdHashMap, HashSet},
    num::NonZeroU32,
    path::Path,
};

use aya::{
    maps::HashMap,
    programs::{
        uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeScope},
        UProbe,
    },
    Ebpf, EbpfLoader,
};
use object::{Object as _, ObjectSymbol as _};
use rseq_common::{
    counters::{CountKey, Counter, Counters, COUNTS_MAP},
    mode::{Mode, MODE_GLOBAL},
    state::TRACED_MAP,
};

use crate::{
    bpf::multi_link::{MultiLink, MultiProgram},
    bpf::EBPF_OBJECT,
    elf::image::ElfImage,
    error::{AttachError, TableError},
};

/// Counter sets the rig's map holds: one benchmark process on a few CPUs needs a handful, and
/// the map must not fill up, or `rseq_event` would take its (slower) health-counting path.
const COUNTS_CAPACITY: u32 = 4096;

/// How a probe is attached. The kernel runs the program from a different handler for each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkKind {
    /// A `BPF_TRACE_UPROBE_MULTI` link, as the agent attaches every probe.
    Multi,
    /// A perf-event link (one uprobe perf event per probe), as aya 0.14 and bpftrace attach.
    Perf,
}

/// The eBPF object, loaded in exact mode (where an Entry event does all its work). Dropping it
/// detaches every probe.
pub struct Rig {
    ebpf: Ebpf,
    /// Programs loaded by aya, for perf-event links.
    loaded: HashSet<String>,
    /// Programs loaded a second time with the multi attach type.
    multi: StdHashMap<String, MultiProgram>,
    links: Vec<MultiLink>,
}

impl Rig {
    /// Loads the eBPF object in exact mode, with nothing attached yet.
    pub fn load() -> Result<Self, AttachError> {
        let ebpf = EbpfLoader::new()
            .override_global(MODE_GLOBAL, &(Mode::Exact as u8), true)
            .map_max_entries(COUNTS_MAP, COUNTS_CAPACITY)
            .load(EBPF_OBJECT)?;
        Ok(Rig {
            ebpf,
            loaded: HashSet::new(),
            multi: StdHashMap::new(),
            links: Vec::new(),
        })
    }

    /// Attaches the uprobe program `program` (e.g. `rseq_event`, `rseq_empty`) at `offset` in
    /// the file `path`, in process `pid` only, with BPF cookie `cookie`.
    pub fn attach(
        &mut self,
        program: &str,
        link: LinkKind,
        path: &Path,
        offset: u64,
        cookie: u64,
        pid: u32,
    ) -> Result<(), AttachError> {
        if link == LinkKind::Multi {
            if !self.multi.contains_key(program) {
                let loaded = MultiProgram::load(&self.ebpf, EBPF_OBJECT, program)?;
                self.multi.insert(program.to_owned(), loaded);
            }
            let link = self.multi[program]
                .attach(path, &[offset], &[cookie], Some(pid))
                .map_err(|e| AttachError::Multi(format!("attaching {program}: {e}")))?;
            self.links.push(link);
            return Ok(());
        }
        let pid = NonZeroU32::new(pid).ok_or(AttachError::Missing("pid"))?;
        let uprobe: &mut UProbe = self
            .ebpf
            .program_mut(program)
            .ok_or(AttachError::Missing("program of that name"))?
            .try_into()?;
        if self.loaded.insert(program.to_owned()) {
            uprobe.load()?;
        }
        let point = UProbeAttachPoint {
            location: UProbeAttachLocation::AbsoluteOffset(offset),
            cookie: Some(cookie),
        };
        uprobe.attach(point, path, UProbeScope::OneProcess(pid))?;
        Ok(())
    }

    /// Marks `tgid` traced, as the agent does for `--pid`, so `rseq_event` takes the path it
    /// takes in a real session.
    pub fn trace_process(&mut self, tgid: u32) -> Result<(), AttachError> {
        let mut traced: HashMap<_, u32, u8> = HashMap::try_from(
            self.ebpf
                .map_mut(TRACED_MAP)
                .ok_or(AttachError::Missing("TRACED map"))?,
        )?;
        traced.insert(tgid, 1, 0)?;
        Ok(())
    }

    /// Entries counted so far, over every process, section and CPU: proof that `rseq_event`
    /// fired once per call and counted each hit.
    pub fn entries(&self) -> Result<u64, AttachError> {
        let counts: HashMap<_, CountKey, Counters> = HashMap::try_from(
            self.ebpf
                .map(COUNTS_MAP)
                .ok_or(AttachError::Missing("COUNTS map"))?,
        )?;
        let mut total = 0;
        for entry in counts.iter() {
            total += entry?.1.get(Counter::Entries);
        }
        Ok(total)
    }
}

/// File offset of the symbol `name` in the ELF file at `path` (what a uprobe is attached at).
pub fn symbol_file_offset(path: &Path, name: &str) -> Result<Option<u64>, TableError> {
    let data = std::fs::read(path).map_err(|source| TableError::Io {
        path: path.to_owned(),
        source,
    })?;
    let addr = object::File::parse(&*data)
        .map_err(|e| TableError::NotElf {
            path: path.to_owned(),
            reason: e.to_string(),
        })?
        .symbols()
        .find(|s| s.name() == Ok(name))
        .map(|s| s.address());
    let image = ElfImage::parse(path, data)?;
    Ok(addr.and_then(|a| image.file_offset(a)))
}
