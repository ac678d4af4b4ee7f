//! rseq-workload: the demo and test target of rseq-trace.
//!
//! Runs three real rseq critical sections (per-CPU counter add, bounded per-CPU stack
//! push and pop) in worker threads, counts its own ground truth (entries, commits,
//! aborts, cancels, commits per CPU), checks the per-CPU data against it, and prints one
//! JSON object on stdout, so a tracer's counts can be compared with it exactly.
//!
//! The sections run either from the executable itself (statically linked from this
//! package's library crate) or, with `--sections-lib PATH`, from the shared library
//! `librseq_workload_sections.so` built from the same source, loaded at start-up or,
//! with `--dlopen-after-gate`, only once the gate opened.
//!
//! `--migrate-every-ms N` adds a controller thread that moves the workers between CPUs
//! (see `migrate`), and every descriptor in the report carries the position of its
//! section's delay loop, so tests can check why and where the kernel restarted sections.
//!
//! Exit codes: 0 ok, 2 setup error, 3 invariant broken.

#![deny(clippy::undocumented_unsafe_blocks)]

mod library;
mod migrate;
mod signals;
mod slice;
mod steady;
mod truth;
mod worker;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use clap::Parser;
use rseq_workload_sections::{percpu, rseq_abi, sections};

use crate::migrate::Controller;
use crate::percpu::PerCpu;
use crate::rseq_abi::{Registration, ThreadRseq};
use crate::sections::SectionFns;
use crate::truth::{Report, SectionsReport, Truth};
use crate::worker::{Plan, Shared};

/// How long to run: until the workers' iterations are done, or for a time (and when the
/// steady part of that time begins).
#[derive(Clone, Copy)]
struct RunFor {
    duration: Option<Duration>,
    steady_after: Option<Duration>,
}

/// Command line.
#[derive(Parser, Debug)]
#[command(
    name = "rseq-workload",
    version,
    about = "Runs real rseq critical sections and prints their ground-truth counts as JSON"
)]
struct Cli {
    /// Worker threads.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=4096))]
    threads: u32,
    /// Iterations per thread (one counter_add plus one push-or-pop step each).
    #[arg(long, default_value_t = 200_000)]
    iterations: u64,
    /// Run for this many seconds instead of a number of iterations.
    #[arg(long)]
    duration: Option<f64>,
    /// With --duration: also report the iterations and time after this many seconds
    /// (`steady_iterations`, `steady_secs`), a tracer's start-up left out.
    #[arg(long, value_name = "SECS", requires = "duration")]
    steady_after: Option<f64>,
    /// Spin iterations inside each critical section (makes preemption aborts likely).
    #[arg(long, default_value_t = 0)]
    delay: u64,
    /// Every N iterations, sched_yield between reading the CPU and entering (0 = off).
    #[arg(long, default_value_t = 0)]
    yield_every: u64,
    /// Every N iterations, SIGUSR1 the next worker thread (0 = off).
    #[arg(long, default_value_t = 0)]
    signal_every: u64,
    /// Every N microseconds of wall-clock time, SIGUSR1 the workers in turn from a thread of
    /// its own: a signal rate that does not slow down with the program (0 = off).
    #[arg(long, default_value_t = 0, value_name = "N")]
    signal_period_us: u64,
    /// With GLIBC_TUNABLES=glibc.pthread.rseq=0: register our own rseq area with the length
    /// the kernel announces (AT_RSEQ_FEATURE_SIZE), as glibc 2.40+ does; on Linux 7.1+ that
    /// selects the V2 ABI (IDs written only when they change).
    #[arg(long)]
    extended_rseq: bool,
    /// With --extended-rseq: ask for a time-slice extension over every iteration (Linux 7.0+)
    /// and give the CPU back with rseq_slice_yield after each grant.
    #[arg(long)]
    slice_extension: bool,
    /// Every N iterations, enter each section expecting another CPU than the thread is on: the
    /// section's own CPU check aborts it, on any machine however busy (0 = off; needs 2 CPUs).
    #[arg(long, default_value_t = 0, value_name = "N")]
    mismatch_every: u64,
    /// Every N milliseconds, pin each worker to another CPU with sched_setaffinity,
    /// round-robin over the CPUs allowed at start (migration aborts; 0 = off; needs 2 CPUs).
    #[arg(long, default_value_t = 0, value_name = "N")]
    migrate_every_ms: u64,
    /// Alternate N push steps and N pop steps (the stacks hold 8 items).
    #[arg(long, default_value_t = 12, value_parser = clap::value_parser!(u64).range(1..))]
    burst: u64,
    /// Print `READY <pid>` on stderr and wait for SIGUSR2 before starting workers.
    #[arg(long)]
    gate: bool,
    /// Run the sections of this shared library (librseq_workload_sections.so, loaded
    /// with dlopen before the gate) instead of the executable's own.
    #[arg(long, value_name = "PATH")]
    sections_lib: Option<PathBuf>,
    /// With --sections-lib: load the library only after the gate opened (SIGUSR2), just
    /// before the workers start.
    #[arg(long, requires = "sections_lib")]
    dlopen_after_gate: bool,
}

/// Exit code for a setup error.
const EXIT_SETUP: u8 = 2;
/// Exit code for a broken invariant.
const EXIT_INVARIANT: u8 = 3;

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("rseq-workload: {e}");
            ExitCode::from(EXIT_SETUP)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode, String> {
    if cli.gate {
        signals::block_sigusr2()?;
    }
    let duration = match cli.duration {
        Some(d) if d.is_finite() && d > 0.0 && d < 1e9 => Some(Duration::from_secs_f64(d)),
        Some(d) => {
            return Err(format!(
                "--duration must be a positive number of seconds, got {d}"
            ))
        }
        None => None,
    };
    // Before the gate, so a machine without two CPUs fails before a tracer attaches.
    let migrator = match cli.migrate_every_ms {
        0 => None,
        ms => Some(Controller::new(ms)?),
    };
    let registration = Registration::detect(cli.extended_rseq)?;
    // Fail before the gate if this thread cannot use rseq (workers attach again).
    drop(ThreadRseq::attach(registration)?);
    // The executable's own tables are checked in every mode.
    let built_in = sections::check_tables()?;
    let mut library = match &cli.sections_lib {
        Some(path) if !cli.dlopen_after_gate => Some(library::load(path)?),
        _ => None,
    };
    let mut percpu = PerCpu::new(percpu::possible_cpus());
    signals::install_sigusr1_counter()?;
    if cli.gate {
        signals::wait_for_gate()?;
    }
    let mut library_load_secs = None;
    if let (Some(path), true) = (&cli.sections_lib, cli.dlopen_after_gate) {
        let started = Instant::now();
        library = Some(library::load(path)?);
        library_load_secs = Some(started.elapsed().as_secs_f64());
    }
    let (fns, descriptors, sections_from) = match library {
        Some(lib) => (lib.fns, lib.descriptors, lib.path),
        None => (SectionFns::BUILT_IN, built_in, "executable".to_string()),
    };
    signals::watch_abort_ips(descriptors.iter().map(|d| d.abort_ip));
    signals::install_stop_handlers()?;

    let plan = Plan {
        threads: cli.threads as usize,
        iterations: if duration.is_some() {
            None
        } else {
            Some(cli.iterations)
        },
        delay: cli.delay,
        yield_every: cli.yield_every,
        signal_every: cli.signal_every,
        signal_period: (cli.signal_period_us > 0)
            .then(|| Duration::from_micros(cli.signal_period_us)),
        mismatch_every: cli.mismatch_every,
        slice_extension: cli.slice_extension,
        burst: cli.burst,
        registration,
        fns,
    };
    let started = Instant::now();
    let run_for = RunFor {
        duration,
        steady_after: cli.steady_after.map(Duration::from_secs_f64),
    };
    let (truth, migrations_requested, steady) =
        run_workers(&percpu, plan, run_for, migrator.as_ref())?;
    let elapsed = started.elapsed();
    let steady_secs = steady.map(|began| began.elapsed().as_secs_f64());

    let problems =
        truth::check_invariants(&truth, &percpu.counter_values(), &percpu.stack_contents());
    let report = Report {
        pid: std::process::id(),
        threads: plan.threads,
        sections: SectionsReport::new(&truth),
        signals_received: signals::signals_received(),
        signal_restarts: signals::signal_restarts(),
        invariant_ok: problems.is_empty(),
        signals_sent: truth.signals_sent,
        slice_grants: truth.slice_grants,
        migrations_requested,
        total_iterations: truth.iterations,
        elapsed_secs: elapsed.as_secs_f64(),
        steady_iterations: steady.map(|_| truth.iterations - truth.iterations_before_steady),
        steady_secs,
        cpu_secs: truth.cpu_ns as f64 * 1e-9,
        steady_cpu_secs: steady
            .map(|_| truth.cpu_ns.saturating_sub(truth.cpu_ns_before_steady) as f64 * 1e-9),
        possible_cpus: percpu.ncpus(),
        rseq_registration: registration.name(),
        rseq_len: registration.area_len(),
        library_load_secs,
        sections_from,
        descriptors,
    };
    let json = serde_json::to_string(&report).map_err(|e| format!("cannot encode report: {e}"))?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{json}")
        .and_then(|()| out.flush())
        .map_err(|e| format!("cannot write report: {e}"))?;
    if let Some(first) = problems.first() {
        let more = match problems.len() - 1 {
            0 => String::new(),
            n => format!(" (and {n} more)"),
        };
        eprintln!("rseq-workload: invariant broken: {first}{more}");
        return Ok(ExitCode::from(EXIT_INVARIANT));
    }
    Ok(ExitCode::SUCCESS)
}

/// Starts the workers (and the migration controller, if any), lets them run (for
/// `duration` if given), joins them and merges their counts; also returns the number of
/// affinity changes the controller made, and when the steady part began.
fn run_workers(
    percpu: &PerCpu,
    plan: Plan,
    run_for: RunFor,
    migrator: Option<&Controller>,
) -> Result<(Truth, u64, Option<Instant>), String> {
    let shared = Shared::new(percpu, plan);
    let workers_done = AtomicBool::new(false);
    let results = thread::scope(|s| {
        let mut handles = Vec::with_capacity(plan.threads);
        let mut spawn_error = None;
        for i in 0..plan.threads {
            let shared = &shared;
            match thread::Builder::new()
                .name(format!("rseq-worker-{i}"))
                .spawn_scoped(s, move || worker::run(i, shared))
            {
                Ok(h) => handles.push(h),
                Err(e) => {
                    spawn_error = Some(format!("cannot start worker thread: {e}"));
                    break;
                }
            }
        }
        let failed = shared.start.wait_arrivals(handles.len());
        let go = spawn_error.is_none() && failed == 0;
        shared.start.release(go);
        let signaller = match (go, plan.signal_period) {
            (true, Some(period)) => {
                let (tids, done) = (&shared.tids, &workers_done);
                thread::Builder::new()
                    .name("rseq-signaller".into())
                    .spawn_scoped(s, move || signals::send_periodically(tids, period, done))
                    .map_err(|e| spawn_error = Some(format!("cannot start signal thread: {e}")))
                    .ok()
            }
            _ => None,
        };
        let mut controller = None;
        if let (true, Some(c)) = (go, migrator) {
            let movable = &shared.movable;
            match thread::Builder::new()
                .name("rseq-migrator".into())
                .spawn_scoped(s, move || c.run(movable))
            {
                Ok(h) => controller = Some(h),
                Err(e) => {
                    signals::request_stop();
                    spawn_error = Some(format!("cannot start migration thread: {e}"));
                }
            }
        }
        let mut steady = None;
        if go {
            if let Some(d) = run_for.duration {
                let deadline = Instant::now() + d;
                let steady_at = run_for.steady_after.map(|s| Instant::now() + s);
                while !signals::stop_requested() {
                    if steady.is_none() && steady_at.is_some_and(|t| Instant::now() >= t) {
                        steady::begin();
                        steady = Some(Instant::now());
                    }
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    thread::sleep(left.min(Duration::from_millis(20)));
                }
                signals::request_stop();
            }
        }
        let mut results: Vec<Result<Truth, String>> = handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("a worker thread panicked".into()))
            })
            .collect();
        workers_done.store(true, Ordering::Relaxed);
        let periodic = signaller.map_or(0, |h| h.join().unwrap_or(0));
        // Only now, so workers are moved until the last one returned (it unregisters
        // itself first, see `migrate::Movable`).
        if let Some(c) = migrator {
            c.finish();
        }
        let migrations = controller.map_or(Ok(0), |h| {
            h.join()
                .map_err(|_| "the migration thread panicked".to_string())
        });
        if let Some(e) = spawn_error {
            results.push(Err(e));
        }
        (results, migrations, periodic, steady)
    });
    let (results, migrations, periodic, steady) = results;
    let mut total = Truth::new(percpu.ncpus());
    total.signals_sent += periodic;
    for r in results {
        total.merge(&r?);
    }
    Ok((total, migrations?, steady))
}
