//! Command-line interface.

use std::{path::PathBuf, time::Duration};

use clap::Parser;

/// Count rseq critical-section entries, commits, aborts and cancels of a running process.
#[derive(Debug, Parser)]
#[command(name = "rseq-trace", version, about)]
pub struct Cli {
    /// Process to trace.
    #[arg(long)]
    pub pid: u32,

    /// Stop after this many seconds (default: when the process exits, or on Ctrl-C / SIGTERM).
    #[arg(long, value_parser = parse_seconds)]
    pub duration: Option<Duration>,

    /// Print the summary as JSON instead of a table.
    #[arg(long)]
    pub json: bool,

    /// Write the summary to this file instead of standard output.
    #[arg(long)]
    pub output: Option<PathBuf>,

    /// More log output (repeat for more).
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

fn parse_seconds(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("not a number of seconds: {s}"))?;
    Duration::try_from_secs_f64(secs).map_err(|e| e.to_string())
}
