//! The processes being traced, as `/proc` shows them (read with the `procfs` crate): their
//! executable, the files they map, whether they are alive, their CPU time and name.

use std::{
    fs, io,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use procfs::process::{MMPermissions, MMapPath, Process};

use crate::{catalog::FileId, error::TargetError};

/// A live process, named by pid.
#[derive(Debug, Clone)]
pub struct Target {
    /// The process id.
    pub pid: u32,
    /// `/proc/PID/exe`: opening it reaches the executable even if it was replaced or lives in
    /// another mount namespace, so the ELF reader uses it.
    pub exe_link: PathBuf,
    /// The path the uprobes are attached by: the executable's own path when that still names
    /// the same file (so `bpftool link` shows something a person recognises), else `exe_link`.
    pub probe_path: PathBuf,
    /// What `/proc/PID/exe` points to, for people to read.
    pub exe_name: String,
    /// Its command name, from `/proc/PID/comm`.
    pub comm: String,
}

impl Target {
    /// Reads the executable and name of `pid` from `/proc`.
    pub fn from_pid(pid: u32) -> Result<Self, TargetError> {
        let proc_dir = PathBuf::from(format!("/proc/{pid}"));
        if pid == 0 || !proc_dir.exists() {
            return Err(TargetError::NoSuchProcess { pid });
        }
        let exe_link = proc_dir.join("exe");
        let exe_path = fs::read_link(&exe_link).map_err(|source| io_error(pid, source))?;
        let exe_name = exe_path.display().to_string();
        let probe_path = if same_file(&exe_path, &exe_link) {
            exe_path
        } else {
            exe_link.clone()
        };
        let comm = fs::read_to_string(proc_dir.join("comm"))
            .map_err(|source| io_error(pid, source))?
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
    /// The file's identity (device and inode), the same whichever path reaches it.
    pub id: FileId,
}

/// Every file `pid` maps executable, each once.
pub fn mapped_objects(pid: u32) -> Result<Vec<MappedObject>, TargetError> {
    let maps = process(pid)
        .and_then(|p| p.maps())
        .map_err(|e| classify(pid, e))?;
    let mut seen = std::collections::BTreeSet::new();
    let mut objects = Vec::new();
    for map in maps {
        let MMapPath::Path(path) = &map.pathname else {
            continue;
        };
        let shown = path.display().to_string();
        if !map.perms.contains(MMPermissions::EXECUTE)
            || !path.is_absolute()
            || !seen.insert(shown.clone())
        {
            continue;
        }
        let open_path = PathBuf::from(format!("/proc/{pid}/root{shown}"));
        let Ok(id) = FileId::of(&open_path) else {
            continue; // deleted or unreachable: nothing to read tables from
        };
        let probe_path = if FileId::of(path).ok() == Some(id) {
            path.clone()
        } else {
            open_path.clone()
        };
        objects.push(MappedObject {
            shown,
            open_path,
            probe_path,
            id,
        });
    }
    Ok(objects)
}

/// Whether `pid` is alive (a zombie has exited: its counts are final).
pub fn is_alive(pid: u32) -> bool {
    process(pid)
        .and_then(|p| p.stat())
        .is_ok_and(|s| !matches!(s.state, 'Z' | 'X'))
}

/// CPU time (user + system, all threads) the process has used, in seconds; `None` once it is
/// gone. Clock-tick resolution (10 ms), which sampled mode's budget accrues over seconds.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = process(pid).and_then(|p| p.stat()).ok()?;
    let hz = procfs::ticks_per_second().max(1) as f64;
    Some((stat.utime + stat.stime) as f64 / hz)
}

/// Sends `sig` to `pid`.
pub fn send_signal(pid: u32, sig: rustix::process::Signal) -> io::Result<()> {
    let pid = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
    Ok(rustix::process::kill_process(pid, sig)?)
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

fn classify(pid: u32, e: procfs::ProcError) -> TargetError {
    match e {
        // A read that ended early: the process exited while its file was read (seen in the
        // 7.3 VM), as with ESRCH below.
        procfs::ProcError::NotFound(_) | procfs::ProcError::Incomplete(_) => {
            TargetError::NoSuchProcess { pid }
        }
        procfs::ProcError::Io(source, _) => io_error(pid, source),
        other => TargetError::Inaccessible {
            pid,
            source: io::Error::other(other.to_string()),
        },
    }
}

/// ENOENT, and ESRCH (what reading `/proc/PID/maps` of a process that is exiting gives), mean
/// the process is gone: the caller stops following it. Anything else is a real failure.
fn io_error(pid: u32, source: io::Error) -> TargetError {
    if source.kind() == io::ErrorKind::NotFound
        || source.raw_os_error() == Some(rustix::io::Errno::SRCH.raw_os_error())
    {
        TargetError::NoSuchProcess { pid }
    } else {
        TargetError::Inaccessible { pid, source }
    }
}

/// `/proc/PID`, as procfs reads it; pid 0 and pids over `i32::MAX` name no process.
/// Where the code at `addrs` of process `pid` comes from: the one file that maps all of them
/// (through `/proc/PID/root`) and their offsets in it.
pub fn file_offsets(pid: u32, addrs: &[u64]) -> Option<(PathBuf, Vec<u64>)> {
    let maps = process(pid).and_then(|p| p.maps()).ok()?;
    let mut file = None;
    let mut offsets = Vec::with_capacity(addrs.len());
    for &addr in addrs {
        let map = maps
            .iter()
            .find(|m| m.address.0 <= addr && addr < m.address.1)?;
        let MMapPath::Path(path) = &map.pathname else {
            return None;
        };
        if file.get_or_insert_with(|| path.clone()) != path {
            return None;
        }
        offsets.push(addr - map.address.0 + map.offset);
    }
    let path = file?;
    Some((
        PathBuf::from(format!("/proc/{pid}/root{}", path.display())),
        offsets,
    ))
}

fn process(pid: u32) -> procfs::ProcResult<Process> {
    match i32::try_from(pid) {
        Ok(p) if p > 0 => Process::new(p),
        _ => Err(procfs::ProcError::NotFound(None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> u32 {
        std::process::id()
    }

    #[test]
    fn reads_this_process() {
        let exe = fs::canonicalize("/proc/self/exe").unwrap();
        let objects = mapped_objects(me()).unwrap();
        assert!(
            objects.iter().any(|o| Path::new(&o.shown) == exe),
            "{exe:?} not among {objects:?}"
        );
        assert!(objects.iter().all(|o| o.shown.starts_with('/')));
        assert!(is_alive(me()));
        assert!(cpu_seconds(me()).is_some());
        assert!(comm(me()).is_some_and(|c| !c.is_empty()));
    }

    #[test]
    fn a_process_that_is_exiting_is_gone_not_inaccessible() {
        let esrch = io::Error::from_raw_os_error(rustix::io::Errno::SRCH.raw_os_error());
        assert!(matches!(
            io_error(7, esrch),
            TargetError::NoSuchProcess { pid: 7 }
        ));
        let eacces = io::Error::from_raw_os_error(rustix::io::Errno::ACCESS.raw_os_error());
        assert!(matches!(
            io_error(7, eacces),
            TargetError::Inaccessible { pid: 7, .. }
        ));
    }

    #[test]
    fn a_read_cut_short_by_the_exit_is_a_process_gone() {
        assert!(matches!(
            classify(7, procfs::ProcError::Incomplete(None)),
            TargetError::NoSuchProcess { pid: 7 }
        ));
    }

    #[test]
    fn a_pid_that_names_no_process() {
        for pid in [0, u32::MAX, i32::MAX as u32] {
            assert!(!is_alive(pid));
            assert!(cpu_seconds(pid).is_none());
            assert!(matches!(
                mapped_objects(pid),
                Err(TargetError::NoSuchProcess { .. })
            ));
        }
    }
}
