//! Debuggers that step over critical sections: every ptrace stop schedules the stepped thread
//! out, and the kernel then aborts the section it is inside, so single-stepping never gets
//! through one. The gdb extension (`rseq-trace/gdb/rseq_trace.py`, built into this binary)
//! reads the sections with `rseq-trace list --json` and, when a stepping command reaches a
//! section's entry, runs the thread through the section with temporary breakpoints on all of
//! its key's exits.

use std::{
    fs,
    io::{self, ErrorKind},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use crate::error::DebuggerError;

/// The extension, as shipped.
const GDB_SCRIPT: &str = include_str!("../../gdb/rseq_trace.py");
/// The line of the script that names this binary (filled in when the script is written).
const BINARY_LINE: &str = r#"RSEQ_TRACE = os.environ.get("RSEQ_TRACE_BIN", "rseq-trace")"#;

/// What to debug.
#[derive(Debug)]
pub enum Debuggee {
    /// A running process.
    Pid(u32),
    /// A program and its arguments, started under the debugger.
    Command(Vec<String>),
}

/// How to run gdb.
#[derive(Debug)]
pub struct GdbRun {
    /// The gdb binary.
    pub gdb: PathBuf,
    /// Commands to run once the program is loaded (`-ex`).
    pub commands: Vec<String>,
    /// Exit after them (`-batch`).
    pub batch: bool,
}

/// Writes the gdb extension where `source` can read it (a per-user cache directory), naming
/// this binary as the table reader, and returns its path.
pub fn gdb_script() -> Result<PathBuf, DebuggerError> {
    let exe = std::env::current_exe().map_err(DebuggerError::OwnPath)?;
    let dir = cache_dir();
    let path = dir.join(format!("rseq_trace-{}.py", env!("CARGO_PKG_VERSION")));
    let text = with_binary(GDB_SCRIPT, &exe);
    // Rewritten only when it differs: several gdbs may be reading it.
    if fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
        let write = |e| DebuggerError::Script {
            path: path.clone(),
            source: e,
        };
        fs::create_dir_all(&dir).map_err(write)?;
        let tmp = path.with_extension(format!("py.{}", std::process::id()));
        fs::write(&tmp, &text).map_err(write)?;
        fs::rename(&tmp, &path).map_err(write)?;
    }
    Ok(path)
}

/// The script with `exe` as the `rseq-trace` it runs (a JSON string is a Python string).
fn with_binary(script: &str, exe: &Path) -> String {
    let quoted = serde_json::Value::String(exe.display().to_string()).to_string();
    let line = BINARY_LINE.replace(r#""rseq-trace""#, &quoted);
    script.replacen(BINARY_LINE, &line, 1)
}

/// `$XDG_CACHE_HOME/rseq-trace`, `~/.cache/rseq-trace`, or a directory of this user's in
/// the temporary directory.
fn cache_dir() -> PathBuf {
    let home = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")));
    match home {
        Some(d) => d.join("rseq-trace"),
        None => {
            std::env::temp_dir().join(format!("rseq-trace-{}", rustix::process::getuid().as_raw()))
        }
    }
}

/// Replaces this process with `gdb`, the extension loaded, debugging `what`. Returns only
/// when gdb could not be started.
pub fn exec_gdb(run: &GdbRun, what: &Debuggee) -> DebuggerError {
    let script = match gdb_script() {
        Ok(p) => p,
        Err(e) => return e,
    };
    let mut cmd = Command::new(&run.gdb);
    cmd.arg("-q");
    if run.batch {
        cmd.arg("-batch");
    }
    cmd.arg("-x").arg(&script);
    for c in &run.commands {
        cmd.arg("-ex").arg(c);
    }
    match what {
        Debuggee::Pid(pid) => cmd.arg("-p").arg(pid.to_string()),
        Debuggee::Command(args) => cmd.arg("--args").args(args),
    };
    let e: io::Error = cmd.exec();
    DebuggerError::Gdb {
        gdb: run.gdb.clone(),
        missing: e.kind() == ErrorKind::NotFound,
        source: e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_names_this_binary() {
        let text = with_binary(GDB_SCRIPT, Path::new("/opt/x \"y\"/rseq-trace"));
        assert!(
            text.contains(
                r#"RSEQ_TRACE = os.environ.get("RSEQ_TRACE_BIN", "/opt/x \"y\"/rseq-trace")"#
            ),
            "the binary line was not filled in"
        );
    }
}
