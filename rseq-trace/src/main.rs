use std::{fs, process::ExitCode};

use anyhow::Context as _;
use clap::Parser as _;
use rseq_trace::{listing, report::Report, session::Session};
use tokio::signal::unix::{signal, SignalKind};
use tracing::info;

mod cli;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let level = match cli.verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .without_time()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level)),
        )
        .init();
    let result = match cli.command {
        Some(cli::Command::List(args)) => list(args),
        None => trace(cli.trace).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rseq-trace: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn list(args: cli::ListArgs) -> anyhow::Result<()> {
    let objects = match (&args.file, args.pid) {
        (_, Some(pid)) => listing::list_pid(pid)?,
        (Some(file), None) => listing::list_path(file)?,
        (None, None) => anyhow::bail!("give a FILE or --pid PID"),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&objects)?);
    } else {
        print!("{}", listing::to_table(&objects));
    }
    Ok(())
}

async fn trace(cli: cli::TraceArgs) -> anyhow::Result<()> {
    let pid = cli.pid.context("give --pid PID")?;
    let session = Session::start(pid)?;
    let exit = session.target.exit_watch()?;
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let duration = async {
        match cli.duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = exit.exited() => info!("pid {pid} exited"),
        _ = tokio::signal::ctrl_c() => info!("interrupted"),
        _ = term.recv() => info!("terminated"),
        _ = duration => {}
    }
    let snapshot = session.snapshot().context("reading the counters failed")?;
    let report = Report::new(&session, &snapshot);
    drop(session);
    let text = if cli.json {
        serde_json::to_string_pretty(&report)? + "\n"
    } else {
        report.to_table()
    };
    match &cli.output {
        Some(path) => {
            fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?
        }
        None => print!("{text}"),
    }
    Ok(())
}
