//! The process being traced: its executable, and a way to learn that it exited.

use std::{
    fs, io,
    os::{
        fd::{FromRawFd, OwnedFd},
        unix::fs::MetadataExt,
    },
    path::{Path, PathBuf},
};

use tokio::io::unix::AsyncFd;

use crate::error::TargetError;

/// A live process, named by pid.
#[derive(Debug, Clone)]
pub struct Target {
    pub pid: u32,
    /// `/proc/PID/exe`: opening it reaches the executable even if it was replaced or lives in
    /// another mount namespace, so the ELF reader uses it.
    pub exe_link: PathBuf,
    /// The path the uprobes are attached by: the executable's own path when that still names
    /// the same file (so `bpftool link` shows something a person recognises), else `exe_link`.
    pub probe_path: PathBuf,
    /// What `/proc/PID/exe` points to, for people to read.
    pub exe_name: String,
    pub comm: String,
}

impl Target {
    pub fn from_pid(pid: u32) -> Result<Self, TargetError> {
        let proc_dir = PathBuf::from(format!("/proc/{pid}"));
        if pid == 0 || !proc_dir.exists() {
            return Err(TargetError::NoSuchProcess { pid });
        }
        let exe_link = proc_dir.join("exe");
        let exe_path = fs::read_link(&exe_link).map_err(|source| classify(pid, source))?;
        let exe_name = exe_path.display().to_string();
        let probe_path = if same_file(&exe_path, &exe_link) {
            exe_path
        } else {
            exe_link.clone()
        };
        let comm = fs::read_to_string(proc_dir.join("comm"))
            .map_err(|source| classify(pid, source))?
            .trim_end()
            .to_owned();
        Ok(Target {
            pid,
            exe_link,
            probe_path,
            exe_name,
            comm,
        })
    }

    /// A handle that becomes ready when the process exits (a pidfd), so the agent can stop
    /// reading as soon as the last count is final.
    pub fn exit_watch(&self) -> Result<ExitWatch, TargetError> {
        let watch = |source| TargetError::Watch {
            pid: self.pid,
            source,
        };
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, self.pid as libc::c_int, 0) };
        if fd < 0 {
            let e = io::Error::last_os_error();
            return Err(if e.raw_os_error() == Some(libc::ESRCH) {
                TargetError::NoSuchProcess { pid: self.pid }
            } else {
                watch(e)
            });
        }
        // SAFETY: `fd` was just returned by the kernel and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        // SAFETY: the AsyncFd owns the pidfd and deregisters it before closing it.
        let fd = unsafe { AsyncFd::register(fd) }.map_err(|e| watch(e.into()))?;
        Ok(ExitWatch(fd))
    }
}

/// Becomes ready when the watched process exits.
pub struct ExitWatch(AsyncFd<OwnedFd>);

impl ExitWatch {
    pub async fn exited(&self) {
        // A pidfd polls readable once the process has exited; errors mean it is gone too.
        if let Ok(mut guard) = self.0.readable().await {
            guard.retain_ready();
        }
    }
}

/// The identity of a file, whatever path reaches it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

impl FileId {
    pub fn of(path: &Path) -> io::Result<Self> {
        let m = fs::metadata(path)?;
        Ok(FileId {
            dev: m.dev(),
            ino: m.ino(),
        })
    }
}

/// A file a process maps executable: its executable, shared libraries, the dynamic loader.
#[derive(Clone, Debug)]
pub struct MappedObject {
    /// The path as the process knows it (its mount namespace).
    pub shown: String,
    /// A path that reaches the same file from here: through `/proc/PID/root`.
    pub open_path: PathBuf,
    /// The path to attach uprobes by: `shown` when it names the same file here (readable in
    /// `bpftool link`), else `open_path`.
    pub probe_path: PathBuf,
    pub id: FileId,
}

/// Every file `pid` maps executable, each once.
pub fn mapped_objects(pid: u32) -> Result<Vec<MappedObject>, TargetError> {
    let maps =
        fs::read_to_string(format!("/proc/{pid}/maps")).map_err(|source| classify(pid, source))?;
    let mut seen = std::collections::BTreeSet::new();
    let mut objects = Vec::new();
    for line in maps.lines() {
        let mut f = line.split_whitespace();
        let (Some(perms), Some(path)) = (f.nth(1), f.nth(3)) else {
            continue;
        };
        if !perms.contains('x') || !path.starts_with('/') || !seen.insert(path.to_owned()) {
            continue;
        }
        let open_path = PathBuf::from(format!("/proc/{pid}/root{path}"));
        let Ok(id) = FileId::of(&open_path) else {
            continue; // deleted or unreachable: nothing to read tables from
        };
        let probe_path = if FileId::of(Path::new(path)).ok() == Some(id) {
            PathBuf::from(path)
        } else {
            open_path.clone()
        };
        objects.push(MappedObject {
            shown: path.to_owned(),
            open_path,
            probe_path,
            id,
        });
    }
    Ok(objects)
}

/// Whether `pid` is alive (a zombie has exited: its counts are final).
pub fn is_alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised comm, which may itself contain ") ".
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X')),
        Err(_) => false,
    }
}

/// CPU time (user + system, all threads) the process has used, in seconds; `None` once it is
/// gone. Clock-tick resolution (10 ms), which sampled mode's budget accrues over seconds.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the comm: state is field 3, utime and stime fields 14 and 15.
    let (_, rest) = stat.rsplit_once(") ")?;
    let mut fields = rest.split_ascii_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Some((utime + stime) as f64 / hz)
}

/// The process's command name, if it still exists.
pub fn comm(pid: u32) -> Option<String> {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|c| c.trim_end().to_owned())
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (fs::metadata(a), fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

fn classify(pid: u32, source: io::Error) -> TargetError {
    match source.kind() {
        io::ErrorKind::NotFound => TargetError::NoSuchProcess { pid },
        _ => TargetError::Inaccessible { pid, source },
    }
}
