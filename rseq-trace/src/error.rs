//! Errors of the library, one enum per job, each message a single line that says what to do.

use std::{io, path::PathBuf};

/// Reading an ELF file's rseq tables.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("cannot read {path}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path} is not an ELF file we can read ({reason}); point rseq-trace at an executable or shared library")]
    NotElf { path: PathBuf, reason: String },
    #[error("{path} is a {arch} ELF file; rseq-trace reads x86-64 and aarch64 only")]
    UnsupportedArch { path: PathBuf, arch: String },
}

/// Finding the process to trace.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("no process with pid {pid}: check the pid, the process may have exited")]
    NoSuchProcess { pid: u32 },
    #[error("cannot inspect pid {pid} (run rseq-trace as root)")]
    Inaccessible { pid: u32, source: io::Error },
}

/// Loading the eBPF programs and attaching probes.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error(
        "rseq-trace needs root (CAP_BPF and CAP_PERFMON) to load eBPF programs; rerun it with sudo"
    )]
    NotRoot,
    #[error("this kernel has no uprobe support (no /sys/bus/event_source/devices/uprobe); it needs CONFIG_UPROBE_EVENTS")]
    NoUprobes,
    #[error("this kernel ({release}) is too old for rseq-trace: it lacks {what}, which Linux {since} added; rseq-trace runs on Linux 6.1 and later")]
    KernelTooOld {
        release: String,
        what: &'static str,
        since: &'static str,
    },
    #[error("too many sections to trace ({sections}) for {cpus} CPUs")]
    TooManySections { sections: usize, cpus: u32 },
    #[error("cannot count the possible CPUs: {0}")]
    Cpus(String),
    #[error("loading the eBPF programs failed: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("the eBPF program was rejected: {0}")]
    Program(#[from] aya::programs::ProgramError),
    #[error("eBPF map error: {0}")]
    Map(#[from] aya::maps::MapError),
    #[error("the eBPF object has no {0}: it was built from another version of rseq-trace")]
    Missing(&'static str),
    #[error(
        "refusing to probe {addr:#x}: it lies inside the critical section at {start:#x}..{end:#x}"
    )]
    InsideSection { addr: u64, start: u64, end: u64 },
    #[error("{addr:#x} is not in any loadable segment of {path}")]
    NotMapped { addr: u64, path: PathBuf },
    #[error("preparing uprobe multi links failed: {0}")]
    Multi(String),
    #[error("attaching probes to {path} failed: {source}")]
    Link {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Starting a tracing session: any of the above, or a target with nothing to trace.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Table(#[from] TableError),
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error(transparent)]
    Attach(#[from] AttachError),
    #[error("cannot start the hold watchdog (which continues held processes should rseq-trace die): {0}")]
    Watchdog(std::io::Error),
    #[error("no rseq tables in {path} (no __rseq_cs, __rseq_table or __rseq_markers section); was it built with librseq, tcmalloc or rseq-marker?")]
    NoTables { path: String },
    #[error("{exe} (pid {pid}) has no rseq critical sections in its ELF tables (no __rseq_cs); it must be built with librseq-style tables")]
    NoSections { exe: String, pid: u32 },
    #[error(
        "none of the {count} critical sections of {exe} can be probed safely (first: {reason})"
    )]
    NothingSafe {
        exe: String,
        count: usize,
        reason: String,
    },
}
