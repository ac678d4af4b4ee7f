//! Errors of the library, one enum per job, each message a single line that says what to do.

use std::{io, path::PathBuf};

/// Reading an ELF file's rseq tables.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    /// The file could not be read.
    #[error("cannot read {path}")]
    Io {
        /// The file that could not be read.
        path: PathBuf,
        /// What the operating system said.
        source: io::Error,
    },
    /// The file is not an ELF file, or one too damaged to parse.
    #[error("{path} is not an ELF file we can read ({reason}); point rseq-trace at an executable or shared library")]
    NotElf {
        /// The file that is not ELF.
        path: PathBuf,
        /// What the ELF parser said.
        reason: String,
    },
    /// The ELF file is for an architecture other than x86-64 or aarch64.
    #[error("{path} is a {arch} ELF file; rseq-trace reads x86-64 and aarch64 only")]
    UnsupportedArch {
        /// The ELF file of the wrong architecture.
        path: PathBuf,
        /// The architecture it is built for, as the ELF parser names it.
        arch: String,
    },
}

/// Finding the process to trace.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// No process has that pid, or it exited while being read.
    #[error("no process with pid {pid}: check the pid, the process may have exited")]
    NoSuchProcess {
        /// The pid asked for.
        pid: u32,
    },
    /// The process exists but its `/proc` files cannot be read, usually for want of root.
    #[error("cannot inspect pid {pid} (run rseq-trace as root)")]
    Inaccessible {
        /// The pid whose `/proc` files could not be read.
        pid: u32,
        /// What the operating system said.
        source: io::Error,
    },
}

/// Loading the eBPF programs and attaching probes.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    /// Not running as root, so the kernel will not load eBPF programs.
    #[error(
        "rseq-trace needs root (CAP_BPF and CAP_PERFMON) to load eBPF programs; rerun it with sudo"
    )]
    NotRoot,
    /// The kernel was built without uprobe events.
    #[error("this kernel has no uprobe support (no /sys/bus/event_source/devices/uprobe); it needs CONFIG_UPROBE_EVENTS")]
    NoUprobes,
    /// The kernel lacks a feature rseq-trace needs.
    #[error("this kernel ({release}) is too old for rseq-trace: it lacks {what}, which Linux {since} added; rseq-trace runs on Linux 6.1 and later")]
    KernelTooOld {
        /// The running kernel's release, from `/proc/sys/kernel/osrelease`.
        release: String,
        /// The missing feature.
        what: &'static str,
        /// The Linux version that added the missing feature.
        since: &'static str,
    },
    /// Measuring what a probe hit costs on this machine failed.
    #[error("calibration: {0}")]
    Calibration(String),
    /// aya could not load the eBPF object.
    #[error("loading the eBPF programs failed: {0}")]
    Load(#[from] aya::EbpfError),
    /// The kernel refused to load or attach an eBPF program.
    #[error("the eBPF program was rejected: {0}")]
    Program(#[from] aya::programs::ProgramError),
    /// An eBPF map could not be opened, read or written.
    #[error("eBPF map error: {0}")]
    Map(#[from] aya::maps::MapError),
    /// A program or map rseq-trace expects is not in the eBPF object; it names what is missing.
    #[error("the eBPF object has no {0}: it was built from another version of rseq-trace")]
    Missing(&'static str),
    /// A probe point the guard refused (inside a critical section, where a uprobe would break
    /// the section): the same refusal the plan gives.
    #[error(transparent)]
    Refused(#[from] crate::catalog::probe_plan::Refusal),
    /// A probe point has no file offset, so the kernel could not be told where to put it.
    #[error("{addr:#x} is not in any loadable segment of {path}")]
    NotMapped {
        /// The probe point's address.
        addr: u64,
        /// The ELF file it was looked for in.
        path: PathBuf,
    },
    /// The uprobe multi-link program could not be prepared or the kernel cannot make such links.
    #[error("preparing uprobe multi links failed: {0}")]
    Multi(String),
    /// The kernel would not create the multi link of a file's probes.
    #[error("attaching probes to {path} failed: {source}")]
    Link {
        /// The file whose probes could not be attached.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
}

/// Starting a tracing session: any of the above, or a target with nothing to trace.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// An ELF file's tables could not be read.
    #[error(transparent)]
    Table(#[from] TableError),
    /// A target process could not be found or inspected.
    #[error(transparent)]
    Target(#[from] TargetError),
    /// The eBPF programs could not be loaded or the probes attached.
    #[error(transparent)]
    Attach(#[from] AttachError),
    /// The operating system would not start the tracing thread.
    #[error("cannot start the tracing thread: {0}")]
    Thread(std::io::Error),
    /// The tracing thread panicked before it reported back.
    #[error(
        "the tracing thread panicked (a bug in rseq-trace: please report it with the log above)"
    )]
    Panicked,
    /// The operating system would not start the hold watchdog.
    #[error("cannot start the hold watchdog (which continues held processes should rseq-trace die): {0}")]
    Watchdog(std::io::Error),
    /// A file, or every object a process maps, has no rseq tables at all.
    #[error("no rseq tables in {path} (no __rseq_cs, __rseq_table or __rseq_markers section); was it built with librseq, tcmalloc or rseq-marker?")]
    NoTables {
        /// The file, or a description of the objects, as shown to the user.
        path: String,
    },
    /// A process's executable has no critical sections in its ELF tables.
    #[error("{exe} (pid {pid}) has no rseq critical sections in its ELF tables (no __rseq_cs); it must be built with librseq-style tables")]
    NoSections {
        /// The process's executable.
        exe: String,
        /// The process traced.
        pid: u32,
    },
    /// Sections were found but every one was refused as unsafe to probe.
    #[error(
        "none of the {count} critical sections of {exe} can be probed safely (first: {reason})"
    )]
    NothingSafe {
        /// The object of the first section refused.
        exe: String,
        /// How many critical sections were found.
        count: usize,
        /// Why the first section was refused.
        reason: String,
    },
}

/// Starting a debugger with rseq-trace's extension.
#[derive(Debug, thiserror::Error)]
pub enum DebuggerError {
    /// The path of this binary, which the extension runs, is unknown.
    #[error("cannot tell where this rseq-trace binary is, which the gdb extension runs")]
    OwnPath(#[source] io::Error),
    /// The extension could not be written.
    #[error(
        "cannot write the gdb extension to {path}: set XDG_CACHE_HOME to a writable directory"
    )]
    Script {
        /// Where it was to be written.
        path: PathBuf,
        /// What the operating system said.
        source: io::Error,
    },
    /// gdb could not be started.
    #[error("cannot run {gdb}{hint}", gdb = gdb.display(), hint = if *missing { ": install gdb (apt install gdb) or pass --gdb PATH" } else { "" })]
    Gdb {
        /// The gdb asked for.
        gdb: PathBuf,
        /// Whether it is not there at all.
        missing: bool,
        /// What the operating system said.
        source: io::Error,
    },
}
