//! Command-line interface.

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};

/// Count rseq critical-section entries, commits, aborts and cancels of a running process.
#[derive(Debug, Parser)]
#[command(
    name = "rseq-trace",
    version,
    about,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub trace: TraceArgs,

    /// More log output (repeat for more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the critical sections of an ELF file or of every object a process maps, with the
    /// probe points rseq-trace would use (or why it refuses a section).
    List(ListArgs),
}

#[derive(Debug, Args)]
pub struct TraceArgs {
    /// Process to trace.
    #[arg(long, required = true)]
    pub pid: Option<u32>,

    /// Stop after this many seconds (default: when the process exits, or on Ctrl-C / SIGTERM).
    #[arg(long, value_parser = parse_seconds)]
    pub duration: Option<Duration>,

    /// Print the summary as JSON instead of a table.
    #[arg(long)]
    pub json: bool,

    /// Write the summary to this file instead of standard output.
    #[arg(long)]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ListArgs {
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

fn parse_seconds(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("not a number of seconds: {s}"))?;
    Duration::try_from_secs_f64(secs).map_err(|e| e.to_string())
}
