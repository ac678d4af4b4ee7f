//! Command-line interface.

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};
use rseq_trace::output::live::SortBy;

/// Count rseq critical-section entries, commits, aborts and cancels, per key, CPU and process.
#[derive(Debug, Parser)]
#[command(
    name = "rseq-trace",
    version,
    about,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub targets: Targets,

    #[command(flatten)]
    pub output: Output,

    /// More log output (repeat for more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// List the critical sections of an ELF file or of every object a process maps, with the
    /// probe points rseq-trace would use (or why it refuses a section).
    List(ListArgs),
    /// Run a command with every probe in place before its first instruction, then print the
    /// summary when it exits (like `perf stat`); exits with the command's exit code.
    Run(RunArgs),
    /// Debug a program or process with gdb, stepping over its critical sections (single steps
    /// would make every section abort): `info rseq`, `set rseq-step on|off`.
    Gdb(GdbArgs),
    /// Internal: the child an agent measures probe costs in (`bpf::calibrate`).
    #[command(name = "calibration-target", hide = true)]
    CalibrationTarget,
    /// Internal: the hold watchdog an agent starts (`hold_watchdog`).
    #[command(name = "hold-watchdog", hide = true)]
    HoldWatchdog {
        /// The agent's pid.
        agent: u32,
        /// Id of the loader-stop map.
        pending_map: u32,
        /// Id of the heartbeat map.
        heartbeat_map: u32,
    },
}

/// What to trace (at least one).
#[derive(Debug, Args)]
#[group(required = true, multiple = true)]
pub(crate) struct Targets {
    /// A running process (repeatable): every object it maps with tables, now and later.
    #[arg(long = "pid", value_name = "PID")]
    pub pids: Vec<u32>,

    /// An executable or library (repeatable): every process running it, including processes
    /// started later.
    #[arg(long = "binary", value_name = "PATH")]
    pub binaries: Vec<PathBuf>,
}

/// How and when to report.
#[derive(Debug, Args)]
pub(crate) struct Output {
    /// Stop after this many seconds (default: when the traced processes exit, or on Ctrl-C /
    /// SIGTERM; system-wide tracing runs until stopped).
    #[arg(long, value_parser = parse_seconds)]
    pub duration: Option<Duration>,

    /// Print the final summary as JSON instead of a table (no live view).
    #[arg(long)]
    pub json: bool,

    /// Write the final summary to this file instead of standard output.
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// Live view refresh period in seconds.
    #[arg(long, default_value = "1", value_parser = parse_seconds)]
    pub interval: Duration,

    /// Rate window of the live view, in seconds.
    #[arg(long, default_value = "60", value_parser = parse_seconds)]
    pub window: Duration,

    /// Sort order of the live view.
    #[arg(long, value_enum, default_value_t)]
    pub sort: SortBy,

    /// No live view, only the final summary.
    #[arg(long, short)]
    pub quiet: bool,

    /// Serve Prometheus metrics on ADDR at /metrics (default 127.0.0.1:9464; never all
    /// interfaces unless given, e.g. 0.0.0.0:9464).
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = "127.0.0.1:9464")]
    pub listen: Option<std::net::SocketAddr>,

    /// Leave the `cpu` label out of the metrics (fewer series on large machines).
    #[arg(long)]
    pub metrics_no_cpu: bool,

    /// What to count, and so what the traced program pays (docs/BENCHMARKS.md).
    #[arg(long, value_enum, default_value_t)]
    pub mode: ModeArg,

    /// Sampled mode: the share of the traced threads' CPU time the entry probes may cost, in
    /// percent.
    #[arg(long, value_name = "PCT", default_value = "1", value_parser = parse_percent)]
    pub budget: f64,

    /// Sampled mode: keep the abort and cancel probes attached for the whole run, whatever
    /// they cost (outside --budget), so that aborts and cancels stay exact. Without it, the
    /// abort (or cancel) probes of a file whose aborts (or cancels) cost more than half the
    /// budget are moved into the windows, and those counts are estimated.
    #[arg(long, alias = "exact-cancels")]
    pub exact_exits: bool,
}

impl Output {
    /// Sampled mode's options.
    pub(crate) fn sampling(&self) -> rseq_trace::sampling::SamplingOptions {
        rseq_trace::sampling::SamplingOptions {
            budget_percent: self.budget,
            exact_exits: self.exact_exits,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ModeArg {
    /// Every event exact: a probe on each attempt's entry (cheap on marker nops, a trap
    /// otherwise).
    Exact,
    /// Aborts and cancels exact, probes off the hot path; entries and commits not counted.
    Aborts,
    /// The default, for production: aborts and cancels exact; entry probes attached for short
    /// windows within --budget, so that every key has an abort ratio with 95% bounds (measured
    /// on the windows' attempts), and entries and commits extrapolated and marked as estimates.
    #[default]
    Sampled,
}

impl From<ModeArg> for rseq_common::mode::Mode {
    fn from(m: ModeArg) -> Self {
        match m {
            ModeArg::Exact => rseq_common::mode::Mode::Exact,
            ModeArg::Aborts => rseq_common::mode::Mode::Aborts,
            ModeArg::Sampled => rseq_common::mode::Mode::Sampled,
        }
    }
}

#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    /// An executable or shared library.
    #[arg(required_unless_present = "pid", conflicts_with = "pid")]
    pub file: Option<PathBuf>,

    /// A running process: its executable and every shared library it maps that has tables.
    #[arg(long)]
    pub pid: Option<u32>,

    /// JSON for scripts instead of the table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    #[command(flatten)]
    pub output: Output,

    /// The command and its arguments.
    #[arg(required = true, last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

fn parse_seconds(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("not a number of seconds: {s}"))?;
    Duration::try_from_secs_f64(secs).map_err(|e| e.to_string())
}

fn parse_percent(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(p) if p > 0.0 && p <= 100.0 => Ok(p),
        _ => Err(format!("not a percentage in (0, 100]: {s}")),
    }
}

/// `rseq-trace gdb`.
#[derive(Debug, Args)]
pub(crate) struct GdbArgs {
    /// Print the path of the gdb extension (for `source` in a gdb started otherwise) and exit.
    #[arg(long, conflicts_with_all = ["pid", "command"])]
    pub print_script: bool,

    /// Attach to a running process.
    #[arg(long, conflicts_with = "command")]
    pub pid: Option<u32>,

    /// The gdb to run.
    #[arg(long, value_name = "PATH", default_value = "gdb")]
    pub gdb: PathBuf,

    /// A gdb command to run once the program is loaded (repeatable, in order; gdb's `-ex`).
    #[arg(long = "ex", value_name = "COMMAND")]
    pub commands: Vec<String>,

    /// Run the `--ex` commands and exit (gdb's `-batch`), for scripts and tests.
    #[arg(long)]
    pub batch: bool,

    /// The program to debug and its arguments (after `--`).
    #[arg(last = true, value_name = "PROGRAM")]
    pub command: Vec<String>,
}
