//! The tracing session: which processes and files are traced, their critical sections, the
//! probes attached to them, and the counts read back. It follows the targets as they change:
//! libraries mapped later, exec, processes that exit or (system-wide) start.

pub mod hold_watchdog;
pub mod poll_gap;
pub mod procfs;
pub mod spawn;

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    num::NonZeroU32,
    path::{Path, PathBuf},
    sync::OnceLock,
    time::{Duration, Instant},
};

use aya::programs::uprobe::UProbeScope;
use rseq_common::{
    counters::{CountKey, Counters},
    mode::Mode,
};
use tracing::{info, warn};

use crate::{
    bpf::Tracer,
    snapshot::counts::Snapshot,
    error::{SessionError, TableError, TargetError},
    catalog::probe_plan::{self, ProbePlan},
    sampling::SamplingStats,
    elf::symbols::{self, Symbolizer},
    elf::{self, image::ElfImage, CriticalSection},
    session::procfs::{FileId, Target},
};

/// What to trace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetSpec {
    /// One running process: every object it maps with tables, now and later.
    Pid(u32),
    /// Every process running this executable or library, including ones started later.
    Binary(PathBuf),
    /// A child stopped just before it execs `exe` (`rseq-trace run`).
    Command { pid: u32, exe: PathBuf },
}

/// A critical section as the session knows it.
#[derive(Clone, Debug)]
pub struct Section {
    /// Index in the counter map and in the cookies of its probes.
    pub id: u32,
    /// The file it is in, as the traced process (or the user) names it.
    pub object: String,
    pub cs: CriticalSection,
    /// `function+0xoffset` of start_ip, or the bare address without symbols.
    pub name: String,
    /// The marker key, or the name when no marker table names a group.
    pub key: String,
    /// The probes, or why the section is not traced.
    pub plan: Result<ProbePlan, probe_plan::Refusal>,
    /// The file it is in.
    file: FileId,
}

/// One ELF file whose tables were read.
struct LoadedObject {
    image: ElfImage,
    /// Where the file was read from (for DWARF), and its reader once needed.
    open_path: PathBuf,
    symbolizer: OnceLock<Symbolizer>,
    found: Vec<CriticalSection>,
    /// Global ids of its sections, in `found` order.
    ids: Vec<u32>,
}

pub struct Session {
    tracer: Tracer,
    pub sections: Vec<Section>,
    objects: HashMap<FileId, LoadedObject>,
    /// (file, pid) pairs with probes; pid `None` means all processes.
    attached: HashSet<(FileId, Option<u32>)>,
    /// Files traced in every process (`--binary`).
    everywhere: HashSet<FileId>,
    /// Files read once and found to have no tables (or unreadable ones).
    no_tables: HashSet<FileId>,
    /// Processes whose dynamic loader is hooked.
    hooked: HashSet<u32>,
    /// Processes followed by pid, still alive.
    followed: Vec<u32>,
    /// Whether the session runs until stopped (system-wide targets) or until its processes exit.
    open_ended: bool,
    /// Name of every process seen, kept after it exits.
    pub processes: BTreeMap<u32, String>,
    /// Final counts of processes that exited and were removed from the maps.
    finished: BTreeMap<CountKey, Counters>,
    exited: HashSet<u32>,
    last_rescan: Instant,
    /// When the traced-process map was last walked; `None` forces a walk.
    last_process_scan: Option<Instant>,
    /// What sampled mode's windows did so far.
    pub sampling: SamplingStats,
    /// Continues held processes if this agent dies or stops answering (`hold_watchdog`).
    watchdog: Option<std::process::Child>,
    /// How late the agent's poll loop has run (set by the loop, read by the exporter).
    pub poll_gap: crate::session::poll_gap::PollGap,
}

/// How often followed processes' mappings are re-read besides the loader hook.
const RESCAN_PERIOD: Duration = Duration::from_secs(1);
/// How often the traced-process map is walked for new and exited processes.
const PROCESS_SCAN_PERIOD: Duration = Duration::from_millis(250);

impl Session {
    pub fn start(specs: &[TargetSpec], mode: Mode) -> Result<Self, SessionError> {
        // Check the targets before loading anything, so a typo gets its own message.
        for spec in specs {
            if let TargetSpec::Pid(pid) = spec {
                Target::from_pid(*pid)?;
            }
        }
        let mut session = Session {
            watchdog: None,
            poll_gap: Default::default(),
            tracer: Tracer::load(mode)?,
            sections: Vec::new(),
            objects: HashMap::new(),
            attached: HashSet::new(),
            everywhere: HashSet::new(),
            no_tables: HashSet::new(),
            hooked: HashSet::new(),
            followed: Vec::new(),
            open_ended: false,
            processes: BTreeMap::new(),
            finished: BTreeMap::new(),
            exited: HashSet::new(),
            last_rescan: Instant::now(),
            last_process_scan: None,
            sampling: SamplingStats::default(),
        };
        session.watchdog = Some(session.start_watchdog()?);
        // System-wide files first, so a process also named by pid is not probed twice.
        for spec in specs {
            if let TargetSpec::Binary(path) = spec {
                session.open_ended = true;
                let shown = path.display().to_string();
                let id = FileId::of(path).map_err(|source| TableError::Io {
                    path: path.clone(),
                    source,
                })?;
                if !session.load(id, path, &shown)? {
                    return Err(SessionError::NoTables { path: shown });
                }
                session.everywhere.insert(id);
                session.attach(id, path, None)?;
            }
        }
        for spec in specs {
            match spec {
                TargetSpec::Pid(pid) => {
                    session.follow(*pid)?;
                    let has_tables = session
                        .attached
                        .iter()
                        .any(|(f, p)| *p == Some(*pid) || session.everywhere.contains(f));
                    if !has_tables {
                        let exe = Target::from_pid(*pid)?.exe_name;
                        return Err(SessionError::NoSections { exe, pid: *pid });
                    }
                }
                TargetSpec::Command { pid, exe } => {
                    let id = FileId::of(exe).map_err(|source| TableError::Io {
                        path: exe.clone(),
                        source,
                    })?;
                    session.tracer.trace_process(*pid)?;
                    session.followed.push(*pid);
                    match session.load(id, exe, &exe.display().to_string()) {
                        Ok(true) if !session.everywhere.contains(&id) => {
                            session.attach(id, exe, Some(*pid))?
                        }
                        Ok(_) => {}
                        // A script: its interpreter is found once it runs.
                        Err(e) => warn!("{e}"),
                    }
                    // Its libraries are mapped after exec: hold it at each loader change.
                    let loader = session.objects.get(&id).and_then(|o| o.image.interpreter());
                    if let Some(loader) = loader {
                        session.hook_loader(Path::new(&loader), *pid);
                    }
                }
                TargetSpec::Binary(_) => {}
            }
        }
        if !session.sections.is_empty() && session.sections.iter().all(|s| s.plan.is_err()) {
            let reason = session
                .sections
                .first()
                .and_then(|s| s.plan.as_ref().err().map(ToString::to_string))
                .unwrap_or_default();
            return Err(SessionError::NothingSafe {
                exe: session
                    .sections
                    .first()
                    .map(|s| s.object.clone())
                    .unwrap_or_default(),
                count: session.sections.len(),
                reason,
            });
        }
        info!(
            "attached {} probes to {} sections{}",
            session.tracer.probes(),
            session.sections.iter().filter(|s| s.plan.is_ok()).count(),
            if session.tracer.restarts_counted {
                ", counting kernel restarts"
            } else {
                ""
            }
        );
        // Attaching can take long on a slow machine: the first holds must not be skipped.
        session.tracer.heartbeat()?;
        Ok(session)
    }

    /// Attaches to every object `pid` maps that has tables, and keeps following it.
    fn follow(&mut self, pid: u32) -> Result<(), SessionError> {
        self.tracer.trace_process(pid)?;
        if let Some(comm) = procfs::comm(pid) {
            self.processes.insert(pid, comm);
        }
        if !self.followed.contains(&pid) {
            self.followed.push(pid);
        }
        self.rescan(pid)
    }

    /// Holds `pid` at every change of its loaded objects (dlopen) until they are attached.
    fn hook_loader(&mut self, loader: &Path, pid: u32) {
        if !self.hooked.insert(pid) {
            return;
        }
        match self.tracer.attach_dl_hook(loader, pid) {
            Ok(()) => {}
            // A static executable has no loader and loads nothing later.
            Err(e) => warn!(
                "libraries pid {pid} loads later may miss their first events: cannot hook {}: {e}",
                loader.display()
            ),
        }
    }

    /// Starts the process that continues held processes should this agent die or stop
    /// answering, before any hold can be taken.
    fn start_watchdog(&self) -> Result<std::process::Child, SessionError> {
        let (pending, heartbeat) = self.tracer.hold_map_ids()?;
        crate::session::hold_watchdog::spawn(pending, heartbeat).map_err(SessionError::Watchdog)
    }

    /// Attaches to what the processes stopped at a loader change mapped, then continues them.
    fn release_dl_pending(&mut self) -> Result<(), SessionError> {
        // This loop is what releases holds: while it runs, holds may be taken.
        self.tracer.heartbeat()?;
        for pid in self.tracer.take_dl_pending()? {
            tracing::debug!("pid {pid} changed its loaded objects: rescanning before it goes on");
            self.tracer.heartbeat()?;
            let result = self.rescan(pid);
            // Continuing a process this session stopped (a vanished one needs nothing).
            let _ = procfs::send_signal(pid, rustix::process::Signal::CONT);
            result?;
        }
        Ok(())
    }

    /// Loads and attaches the objects `pid` maps that are new since the last look: libraries
    /// loaded with dlopen, or a new executable after exec.
    fn rescan(&mut self, pid: u32) -> Result<(), SessionError> {
        let objects = match procfs::mapped_objects(pid) {
            Ok(o) => o,
            Err(TargetError::NoSuchProcess { .. }) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        if !self.hooked.contains(&pid) {
            if let Some(loader) = objects.iter().find(|o| is_loader(&o.shown)) {
                let path = loader.probe_path.clone();
                self.hook_loader(&path, pid);
            }
        }
        for o in objects {
            if self.attached.contains(&(o.id, Some(pid)))
                || self.everywhere.contains(&o.id)
                || self.no_tables.contains(&o.id)
            {
                continue;
            }
            match self.load(o.id, &o.open_path, &o.shown) {
                Ok(true) => self.attach(o.id, &o.probe_path, Some(pid))?,
                Ok(false) => {
                    self.no_tables.insert(o.id);
                }
                Err(e) => {
                    warn!("{}: {e}", o.shown);
                    self.no_tables.insert(o.id);
                }
            }
        }
        Ok(())
    }

    /// Reads a file's tables once; `Ok(false)` when it has no critical sections.
    fn load(&mut self, id: FileId, open_path: &Path, shown: &str) -> Result<bool, SessionError> {
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
        let mut ids = Vec::new();
        let guard = probe_plan::Guard::new(&found);
        for cs in &found {
            let (file, id) = (id, self.sections.len() as u32);
            let name = symbols::function_offset(&image, cs.start_ip);
            let plan = probe_plan::plan(&image, cs, &guard);
            match &plan {
                Err(reason) => warn!("{shown}: section {name} not traced: {reason}"),
                Ok(_) if !cs.exits_known => warn!(
                    "{shown}: section {name}: its table lists no exit points, so early exits are not seen and count as commits"
                ),
                Ok(_) => {}
            }
            self.sections.push(Section {
                id,
                object: shown.to_owned(),
                key: cs.key.clone().unwrap_or_else(|| name.clone()),
                name,
                cs: cs.clone(),
                plan,
                file,
            });
            ids.push(id);
        }
        let has = !found.is_empty();
        self.objects.insert(
            id,
            LoadedObject {
                image,
                open_path: open_path.to_owned(),
                symbolizer: OnceLock::new(),
                found,
                ids,
            },
        );
        Ok(has)
    }

    /// Attaches the probes of every safe section of a loaded file, for one process or all.
    fn attach(
        &mut self,
        id: FileId,
        probe_path: &Path,
        pid: Option<u32>,
    ) -> Result<(), SessionError> {
        if !self.attached.insert((id, pid)) {
            return Ok(());
        }
        let scope = match pid.and_then(NonZeroU32::new) {
            Some(pid) => UProbeScope::OneProcess(pid),
            None => UProbeScope::AllProcesses,
        };
        let object = &self.objects[&id];
        let plans: Vec<(u32, &ProbePlan)> = object
            .ids
            .iter()
            .filter_map(|id| Some((*id, self.sections[*id as usize].plan.as_ref().ok()?)))
            .collect();
        self.tracer
            .attach_object(probe_path, scope, &object.image, &plans, &object.found)?;
        Ok(())
    }

    /// Follows changes of the targets: new mappings of followed processes, processes that
    /// exited (their counts are kept, their map entries dropped), and new processes seen by
    /// system-wide probes.
    /// [`Session::refresh`] including the walk for new and exited processes: before a summary.
    pub fn refresh_all(&mut self) -> Result<(), SessionError> {
        self.last_process_scan = None;
        self.refresh()
    }

    pub fn refresh(&mut self) -> Result<(), SessionError> {
        self.release_dl_pending()?;
        // The loader hook catches dlopen and exec as they happen; this slower rescan is the
        // safety net for what it cannot see (a static executable exec'd, say).
        if self.last_rescan.elapsed() >= RESCAN_PERIOD {
            self.last_rescan = Instant::now();
            for pid in self.followed.clone() {
                if procfs::is_alive(pid) {
                    self.rescan(pid)?;
                }
            }
        }
        // New and exited processes need no 50 ms reaction (their counts wait in the maps):
        // walking the traced-process map less often keeps the idle agent cheap.
        if self
            .last_process_scan
            .is_some_and(|t| t.elapsed() < PROCESS_SCAN_PERIOD)
        {
            return Ok(());
        }
        self.last_process_scan = Some(Instant::now());
        let seen = self.tracer.traced_processes()?;
        for pid in &seen {
            if !self.processes.contains_key(pid) {
                let comm = procfs::comm(*pid).unwrap_or_else(|| "?".to_owned());
                info!("tracing pid {pid} ({comm})");
                self.processes.insert(*pid, comm);
            }
        }
        let gone: Vec<u32> = seen
            .iter()
            .chain(&self.followed)
            .filter(|p| !self.exited.contains(p) && !procfs::is_alive(**p))
            .copied()
            .collect();
        if gone.is_empty() {
            return Ok(());
        }
        // Only now read every counter: keep the final counts of the processes that exited.
        let snapshot = self.tracer.snapshot()?;
        for pid in gone {
            self.exited.insert(pid);
            let keys: Vec<CountKey> = snapshot
                .counts
                .keys()
                .filter(|k| k.tgid == pid)
                .copied()
                .collect();
            for k in &keys {
                self.finished.insert(*k, snapshot.counts[k]);
            }
            self.tracer.forget_process(pid, &keys)?;
        }
        Ok(())
    }

    /// All counts so far, including those of processes that exited.
    pub fn snapshot(&self) -> Result<Snapshot, SessionError> {
        let mut s = self.tracer.snapshot()?;
        s.absorb(&self.finished);
        Ok(s)
    }

    /// Whether every process the session follows has exited and nothing system-wide is traced:
    /// then the counts are final.
    pub fn done(&self) -> bool {
        !self.open_ended && self.followed.iter().all(|p| !procfs::is_alive(*p))
    }

    /// Whether a process this session saw has exited (its counts are final).
    pub fn has_exited(&self, pid: u32) -> bool {
        self.exited.contains(&pid)
    }

    /// Uprobes attached so far.
    pub fn probes(&self) -> usize {
        self.tracer.probes()
    }

    /// What the probes count.
    pub fn mode(&self) -> Mode {
        self.tracer.mode
    }

    pub fn restarts_counted(&self) -> bool {
        self.tracer.restarts_counted
    }

    /// The instruction at `offset` from the start of `section`, and its source line.
    pub fn describe_position(&self, section: u32, offset: u32) -> (String, Option<String>) {
        let Some(s) = self.sections.get(section as usize) else {
            return ("?".into(), None);
        };
        let Some(object) = self.objects.get(&s.file) else {
            return ("?".into(), None);
        };
        let addr = s.cs.start_ip + offset as u64;
        let source = object
            .symbolizer
            .get_or_init(|| Symbolizer::new(&object.open_path))
            .locate(addr)
            .map(|l| l.location);
        (crate::elf::disasm::instruction_at(&object.image, addr), source)
    }

    /// Whether restarts have causes (the scheduler and signal tracepoints are attached).
    pub fn causes_counted(&self) -> bool {
        self.tracer.causes_counted
    }

    /// The tracer, for sampled mode's windows.
    pub fn tracer_mut(&mut self) -> &mut Tracer {
        &mut self.tracer
    }

    /// Processes with probes that are still alive: whose CPU time sampled mode budgets against.
    pub fn live_processes(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = self
            .tracer
            .traced_processes()
            .unwrap_or_default()
            .into_iter()
            .chain(self.followed.iter().copied())
            .filter(|p| !self.exited.contains(p))
            .collect();
        pids.sort_unstable();
        pids.dedup();
        pids
    }
}

impl Drop for Session {
    /// Never leave a process stopped at a loader change behind.
    fn drop(&mut self) {
        if let Ok(pids) = self.tracer.take_dl_pending() {
            for pid in pids {
                // Continuing a process this session stopped.
                let _ = procfs::send_signal(pid, rustix::process::Signal::CONT);
            }
        }
        // Nothing is held any more: the watchdog has nothing left to do.
        if let Some(mut w) = self.watchdog.take() {
            let _ = w.kill();
            let _ = w.wait();
        }
    }
}

/// Whether a mapped file is the dynamic loader (ld-linux-*.so.*, ld-*.so).
fn is_loader(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    name.starts_with("ld-") && name.contains(".so")
}
