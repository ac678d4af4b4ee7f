//! The session: the only writer. It owns the loaded eBPF programs, their links and maps, and
//! the traced processes; it follows them as they change (libraries mapped later, exec,
//! processes that exit or, system-wide, start), extends the catalog as files appear, and
//! publishes a [`Status`] after each pass of its poll loop ([`runner`]).

mod follow;
pub mod hold_watchdog;
mod pass;
pub mod poll_gap;
pub mod procfs;
pub mod runner;
pub mod spawn;
mod status;

use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    path::{Path, PathBuf},
    sync::Arc,
    time::Instant,
};

use rseq_common::{
    counters::{CountKey, Counters},
    mode::Mode,
};
use tracing::{info, warn};

pub use self::status::Status;
use self::{poll_gap::PollGap, procfs::Target};
use crate::{
    bpf::{maps::MapIds, Tracer},
    catalog::{Catalog, FileId},
    error::{SessionError, TableError},
    sampling::{ratio::WindowMoments, SamplingStats},
};

/// What to trace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetSpec {
    /// One running process: every object it maps with tables, now and later.
    Pid(u32),
    /// Every process running this executable or library, including ones started later.
    Binary(PathBuf),
    /// A child stopped just before it execs `exe` (`rseq-trace run`).
    Command {
        /// The stopped child.
        pid: u32,
        /// What it is about to exec.
        exe: PathBuf,
    },
}

/// The tracing session (see the module documentation).
pub struct Session {
    tracer: Tracer,
    catalog: Arc<Catalog>,
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
    processes: Arc<BTreeMap<u32, String>>,
    /// Final counts of processes that exited.
    finished: Arc<BTreeMap<CountKey, Counters>>,
    exited: Arc<BTreeSet<u32>>,
    /// Exited processes whose counter sets leave the maps once their final counts are published.
    to_forget: Vec<(u32, Vec<CountKey>)>,
    last_rescan: Instant,
    /// When the traced-process map was last walked; `None` forces a walk.
    last_process_scan: Option<Instant>,
    /// What sampled mode's windows did so far (written by the sampler).
    pub(crate) sampling: SamplingStats,
    /// Sampled mode: per key, entries and aborts window by window (written by the sampler).
    pub(crate) moments: Arc<BTreeMap<String, WindowMoments>>,
    /// Sampled mode: sections whose cancels are counted in the windows only (estimated).
    pub(crate) windowed: Arc<crate::sampling::WindowedExits>,
    /// Continues held processes if this agent dies or stops answering (`hold_watchdog`).
    watchdog: Option<std::process::Child>,
    /// How late the poll loop has run.
    poll_gap: PollGap,
}

impl Session {
    /// Loads the programs and attaches to every target.
    pub fn start(specs: &[TargetSpec], mode: Mode) -> Result<Self, SessionError> {
        // Check the targets before loading anything, so a typo gets its own message.
        for spec in specs {
            if let TargetSpec::Pid(pid) = spec {
                Target::from_pid(*pid)?;
            }
        }
        let mut session = Session {
            watchdog: None,
            poll_gap: PollGap::default(),
            tracer: Tracer::load(mode)?,
            catalog: Arc::default(),
            attached: HashSet::new(),
            everywhere: HashSet::new(),
            no_tables: HashSet::new(),
            hooked: HashSet::new(),
            followed: Vec::new(),
            open_ended: false,
            processes: Arc::default(),
            finished: Arc::default(),
            exited: Arc::default(),
            to_forget: Vec::new(),
            last_rescan: Instant::now(),
            last_process_scan: None,
            sampling: SamplingStats::default(),
            moments: Arc::default(),
            windowed: Arc::default(),
        };
        let (pending, heartbeat) = session.map_ids().holds();
        session.watchdog =
            Some(hold_watchdog::spawn(pending, heartbeat).map_err(SessionError::Watchdog)?);
        // System-wide files first, so a process also named by pid is not probed twice.
        for spec in specs {
            if let TargetSpec::Binary(path) = spec {
                session.trace_everywhere(path)?;
            }
        }
        for spec in specs {
            match spec {
                TargetSpec::Pid(pid) => session.trace_pid(*pid)?,
                TargetSpec::Command { pid, exe } => session.trace_command(*pid, exe)?,
                TargetSpec::Binary(_) => {}
            }
        }
        session.check_something_traced()?;
        // A `run` child maps this binary until it execs: never read it (it has no tables, and
        // reading it, debug information and all, would hold up the first passes).
        if let Ok(own) = FileId::of(Path::new("/proc/self/exe")) {
            session.no_tables.insert(own);
        }
        session.last_rescan = Instant::now();
        info!(
            "attached {} probes to {} sections{}",
            session.tracer.probes(),
            session
                .catalog
                .sections()
                .filter(|s| s.plan.is_ok())
                .count(),
            if session.tracer.restarts_counted {
                ", counting kernel restarts"
            } else {
                ""
            }
        );
        // Attaching can take long on a slow machine: the first holds must not be skipped.
        session.tracer.maps.heartbeat()?;
        Ok(session)
    }

    /// `--binary PATH`: probes in every process, now and later.
    fn trace_everywhere(&mut self, path: &Path) -> Result<(), SessionError> {
        self.open_ended = true;
        let shown = path.display().to_string();
        let id = file_id(path)?;
        if !self.add_file(id, path, &shown)? {
            return Err(SessionError::NoTables { path: shown });
        }
        self.everywhere.insert(id);
        self.attach(id, path, None)
    }

    /// `--pid PID`: what it maps now and later; an error if it has no sections at all.
    fn trace_pid(&mut self, pid: u32) -> Result<(), SessionError> {
        self.follow(pid)?;
        let has_tables = self
            .attached
            .iter()
            .any(|(f, p)| *p == Some(pid) || self.everywhere.contains(f));
        if !has_tables {
            let exe = Target::from_pid(pid)?.exe_name;
            return Err(SessionError::NoSections { exe, pid });
        }
        Ok(())
    }

    /// `run -- CMD`: the child stopped before its exec, and the libraries it maps after.
    fn trace_command(&mut self, pid: u32, exe: &Path) -> Result<(), SessionError> {
        let id = file_id(exe)?;
        self.tracer.maps.trace_process(pid)?;
        self.followed.push(pid);
        match self.add_file(id, exe, &exe.display().to_string()) {
            Ok(true) if !self.everywhere.contains(&id) => self.attach(id, exe, Some(pid))?,
            Ok(_) => {}
            // A script: its interpreter is found once it runs.
            Err(e) => warn!("{e}"),
        }
        // Its libraries are mapped after exec: hold it at each loader change.
        let loader = self.catalog.object(id).and_then(|o| o.image.interpreter());
        if let Some(loader) = loader {
            self.hook_loader(Path::new(&loader), pid);
        }
        Ok(())
    }

    /// Refuses a session where sections exist but none can be probed safely.
    fn check_something_traced(&self) -> Result<(), SessionError> {
        let mut sections = self.catalog.sections();
        if sections.len() == 0 || self.catalog.sections().any(|s| s.plan.is_ok()) {
            return Ok(());
        }
        let first = sections.next();
        Err(SessionError::NothingSafe {
            exe: first.map(|s| s.object.clone()).unwrap_or_default(),
            count: self.catalog.len(),
            reason: first
                .and_then(|s| s.plan.as_ref().err().map(ToString::to_string))
                .unwrap_or_default(),
        })
    }

    /// The kernel's ids of the maps, for readers of their own.
    pub fn map_ids(&self) -> MapIds {
        self.tracer.map_ids
    }

    /// The sections known so far.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// The tracer, for sampled mode's windows.
    pub fn tracer_mut(&mut self) -> &mut Tracer {
        &mut self.tracer
    }

    /// Processes with probes that are still alive: whose CPU time sampled mode budgets against.
    pub fn live_processes(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = self
            .tracer
            .maps
            .traced_processes()
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
        // The hook first, or a process continued here could be held again at its loader's next
        // change before the probes are detached, with nobody left to continue it.
        self.tracer.maps.stop_holding();
        for pid in self.tracer.maps.take_dl_pending() {
            // Continuing a process this session stopped.
            let _ = procfs::send_signal(pid, rustix::process::Signal::CONT);
        }
        // Nothing is held any more: the watchdog has nothing left to do.
        if let Some(mut w) = self.watchdog.take() {
            let _ = w.kill();
            let _ = w.wait();
        }
    }
}

/// The identity of a file named on the command line.
fn file_id(path: &Path) -> Result<FileId, TableError> {
    FileId::of(path).map_err(|source| TableError::Io {
        path: path.to_owned(),
        source,
    })
}
