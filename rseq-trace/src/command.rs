//! `rseq-trace run -- CMD`: start a command stopped just before it execs, so every probe is in
//! place before its first instruction, then let it go and report its exit status.

use std::{
    ffi::CString,
    io,
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
};

/// A child process stopped before exec.
#[derive(Debug)]
pub struct GatedChild {
    pub pid: u32,
    /// The resolved executable it will exec.
    pub exe: PathBuf,
}

/// How the command ended, as a shell would report it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    Code(i32),
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
    let mut status = 0;
    // SAFETY: waiting for our own child.
    if unsafe { libc::waitpid(pid, &mut status, libc::WUNTRACED) } < 0 {
        return Err(io::Error::last_os_error());
    }
    if !libc::WIFSTOPPED(status) {
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
        // SAFETY: signalling our own child.
        if unsafe { libc::kill(self.pid as i32, libc::SIGCONT) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits for the child to exit (blocking: call it on a blocking thread).
    pub fn wait(pid: u32) -> io::Result<ExitStatus> {
        let mut status = 0;
        loop {
            // SAFETY: waiting for our own child.
            let r = unsafe { libc::waitpid(pid as i32, &mut status, 0) };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if libc::WIFEXITED(status) {
                return Ok(ExitStatus::Code(libc::WEXITSTATUS(status)));
            }
            if libc::WIFSIGNALED(status) {
                return Ok(ExitStatus::Signal(libc::WTERMSIG(status)));
            }
        }
    }
}
