use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;
use rseq_trace::{
    output::list as listing,
    session::{
        runner::Running,
        spawn::{spawn_gated, GatedChild},
        TargetSpec,
    },
};

mod agent;
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
        .with_writer(rseq_trace::output::tui::LogWriter)
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
        Some(cli::Command::Run(args)) => run_command(args).await,
        Some(cli::Command::Gdb(args)) => gdb(args),
        Some(cli::Command::CalibrationTarget) => rseq_trace::bpf::calibrate::run_target()
            .map(|()| ExitCode::SUCCESS)
            .context("the calibration target failed"),
        Some(cli::Command::HoldWatchdog {
            agent,
            pending_map,
            heartbeat_map,
        }) => rseq_trace::session::hold_watchdog::run(agent, pending_map, heartbeat_map)
            .map(|()| ExitCode::SUCCESS)
            .context("the hold watchdog cannot open the agent's maps"),
        None => trace(cli.targets, cli.output).await,
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("rseq-trace: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn list(args: cli::ListArgs) -> anyhow::Result<ExitCode> {
    let objects = match (&args.file, args.pid) {
        (_, Some(pid)) => listing::list_pid(pid)?,
        (Some(file), None) => listing::list_path(file)?,
        (None, None) => anyhow::bail!("give a FILE or --pid PID"),
    };
    let text = if args.json {
        serde_json::to_string_pretty(&objects)? + "\n"
    } else {
        listing::to_table(&objects)
    };
    print_all(&text)
}

/// Prints `text`; a reader that went away (`| head`) is no error.
fn print_all(text: &str) -> anyhow::Result<ExitCode> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(e).context("cannot write to standard output")
        }
        _ => Ok(ExitCode::SUCCESS),
    }
}

fn gdb(args: cli::GdbArgs) -> anyhow::Result<ExitCode> {
    use rseq_trace::debugger::{self, Debuggee, GdbRun};
    if args.print_script {
        let path = debugger::gdb_script()?;
        return print_all(&format!("{}\n", path.display()));
    }
    let what = match args.pid {
        Some(pid) => Debuggee::Pid(pid),
        None if args.command.is_empty() => {
            anyhow::bail!("give --pid PID or -- PROGRAM ARGS... (or --print-script)")
        }
        None => Debuggee::Command(args.command),
    };
    let run = GdbRun {
        gdb: args.gdb,
        commands: args.commands,
        batch: args.batch,
    };
    Err(debugger::exec_gdb(&run, &what).into())
}

async fn trace(targets: cli::Targets, out: cli::Output) -> anyhow::Result<ExitCode> {
    let specs: Vec<TargetSpec> = targets
        .pids
        .iter()
        .map(|p| TargetSpec::Pid(*p))
        .chain(targets.binaries.iter().cloned().map(TargetSpec::Binary))
        .collect();
    let running = Running::start(specs, out.mode.into(), out.sampling())?;
    let shown = agent::Shown {
        binary_mode: !targets.binaries.is_empty(),
        shares_terminal: false,
    };
    // Every probe is detached before the summary is printed.
    let report = agent::run(running, &out, shown).await?;
    agent::emit(&report, &out)?;
    Ok(ExitCode::SUCCESS)
}

async fn run_command(args: cli::RunArgs) -> anyhow::Result<ExitCode> {
    let child =
        spawn_gated(&args.command).with_context(|| format!("cannot start {}", args.command[0]))?;
    let pid = child.pid;
    let spec = TargetSpec::Command {
        pid,
        exe: child.exe.clone(),
    };
    let running = match Running::start(vec![spec], args.output.mode.into(), args.output.sampling())
    {
        Ok(r) => r,
        Err(e) => {
            // Never leave the stopped child behind.
            let _ = rseq_trace::session::procfs::send_signal(pid, rustix::process::Signal::KILL);
            let _ = GatedChild::wait(pid);
            return Err(e.into());
        }
    };
    child.release()?;
    let waiter = tokio::task::spawn_blocking(move || GatedChild::wait(pid));
    let shown = agent::Shown {
        binary_mode: false,
        shares_terminal: true,
    };
    let report = agent::run(running, &args.output, shown).await?;
    let status = waiter.await??;
    agent::emit(&report, &args.output)?;
    Ok(ExitCode::from(status.code().clamp(0, 255) as u8))
}
