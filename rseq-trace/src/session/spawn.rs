//! `rseq-trace run -- CMD`: start a command stopped just before it execs, so every probe is in
//! place before its first instruction, then let it go and report its exit status.

use std::{
    ffi::CString,
    io,
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
};

use rustix::process::{Pid, WaitOptions};

/// `pid` as rustix takes it.
fn child_pid(pid: u32) -> io::Result<Option<Pid>> {
    let pid = i32::try_from(pid).ok().and_then(Pid::from_raw);
    pid.map(Some)
        .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))
}

/// A child process stopped before exec.
#[derive(Debug)]
pub struct GatedChild {
    /// The child's process id.
    pub pid: u32,
    /// The resolved executable it will exec.
    pub exe: PathBuf,
}

/// How the command ended, as a shell would report it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    /// It exited with this code.
    Code(i32),
    /// A signal of this number killed it.
    Signal(i32),
}

impl ExitStatus {
    /// The exit code rseq-trace passes on: the command's, or 128 + signal.
    pub fn code(self) -> i32 {
        match self {
            ExitStatus::Code(c) => c,
            ExitStatus::Signal(s) => 128 + s,
        }
    }
}

/// Finds `program` as execvp would: a path with a slash as is, else the first match in PATH.
pub fn resolve(program: &str) -> io::Result<PathBuf> {
    if program.contains('/') {
        return Path::new(program).canonicalize();
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
        .map(|p| p.canonicalize())
        .unwrap_or_else(|| {
            Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{program}: command not found in PATH"),
            ))
        })
}

/// Forks a child that stops itself (SIGSTOP) and, once continued, execs `argv[0]` resolved.
pub fn spawn_gated(argv: &[String]) -> io::Result<GatedChild> {
    let program = argv
        .first()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no command given"))?;
    let exe = resolve(program)?;
    let to_c =
        |s: &[u8]| CString::new(s).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e));
    let c_exe = to_c(exe.as_os_str().as_bytes())?;
    let c_args = argv
        .iter()
        .map(|a| to_c(a.as_bytes()))
        .collect::<io::Result<Vec<_>>>()?;
    let mut c_argv: Vec<*const libc::c_char> = c_args.iter().map(|a| a.as_ptr()).collect();
    c_argv.push(std::ptr::null());
    // SAFETY: the child only calls async-signal-safe functions (raise, execv, _exit) on memory
    // prepared before the fork.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: see above; the child never returns into Rust code.
        unsafe {
            libc::raise(libc::SIGSTOP);
            libc::execv(c_exe.as_ptr(), c_argv.as_ptr());
            libc::_exit(127);
        }
    }
    let stopped = rustix::process::waitpid(child_pid(pid as u32)?, WaitOptions::UNTRACED)?
        .is_some_and(|(_, status)| status.stopped());
    if !stopped {
        return Err(io::Error::other("the command did not start"));
    }
    Ok(GatedChild {
        pid: pid as u32,
        exe,
    })
}

impl GatedChild {
    /// Lets the child exec.
    pub fn release(&self) -> io::Result<()> {
        crate::session::procfs::send_signal(self.pid, rustix::process::Signal::CONT)
    }

    /// Waits for the child to exit (blocking: call it on a blocking thread).
    pub fn wait(pid: u32) -> io::Result<ExitStatus> {
        let child = child_pid(pid)?;
        loop {
            let status = match rustix::process::waitpid(child, WaitOptions::empty()) {
                Ok(Some((_, status))) => status,
                Ok(None) | Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            };
            if let Some(code) = status.exit_status() {
                return Ok(ExitStatus::Code(code));
            }
            if let Some(sig) = status.terminating_signal() {
                return Ok(ExitStatus::Signal(sig));
            }
        }
    }
}
