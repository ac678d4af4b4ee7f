//! The agent loop: follow the targets, read the counters on a tick, show the live view, and
//! stop when the traced processes exit, the duration ends, or on Ctrl-C / SIGTERM.

use std::{
    fs,
    io::{IsTerminal, Write},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use rseq_common::mode::Mode;
use rseq_trace::{
    session::Session,
    export::{
        collector::{Exporter, ProcessLabels},
        serve,
    },
    output::{
        live::{self, Rates, Series},
        report::Report,
        tui,
    },
    sampling,
};
use std::sync::{Arc, Mutex};
use tokio::signal::unix::{signal, SignalKind};
use tracing::info;

use crate::cli::Output;

/// How often targets are checked for exits and new mappings; the live view redraws less often.
const POLL: Duration = Duration::from_millis(50);

/// How the agent was started, for what it shows.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Shown {
    /// `--binary`: metrics label processes by binary.
    pub(crate) binary_mode: bool,
    /// `rseq-trace run`: the command writes to the same terminal as the live view.
    pub(crate) shares_terminal: bool,
}

/// Runs until a stop condition (the traced processes exited, `--duration`, Ctrl-C, SIGTERM, `q`
/// in the live view), then returns the final report.
pub(crate) async fn run(
    shared: &Arc<Mutex<Session>>,
    out: &Output,
    shown: Shown,
) -> anyhow::Result<Report> {
    let binary_mode = shown.binary_mode;
    let _server = match out.listen {
        Some(addr) => {
            let labels = if binary_mode {
                ProcessLabels::Binary
            } else {
                ProcessLabels::Pid
            };
            let exporter = Arc::new(Exporter::new(shared.clone(), labels, !out.metrics_no_cpu));
            let (bound, task) = serve::serve(addr, exporter)
                .await
                .with_context(|| format!("cannot listen on {addr}"))?;
            info!("serving metrics on http://{bound}/metrics");
            Some(AbortOnDrop(task))
        }
        None => None,
    };
    let _sampler = (lock_mode(shared)? == Mode::Sampled)
        .then(|| AbortOnDrop(tokio::spawn(sampling::run(shared.clone(), out.budget))));
    let lock = || {
        shared
            .lock()
            .map_err(|_| anyhow::anyhow!("engine lock poisoned"))
    };
    let started = Instant::now();
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut ctrl_c = std::pin::pin!(tokio::signal::ctrl_c());
    let live = !out.json && !out.quiet;
    // On a terminal the live view owns it until this function returns, however it returns.
    let mut screen = if live && std::io::stdout().is_terminal() {
        let screen = tui::Screen::new().context("cannot set up the terminal for the live view")?;
        Some(screen.repainting(shown.shares_terminal))
    } else {
        None
    };
    let mut rates = Rates::new(out.window);
    let mut poll = tokio::time::interval(POLL);
    let mut last_draw = Instant::now();
    let deadline = out.duration.map(|d| started + d);
    let mut sort = out.sort;
    loop {
        tokio::select! {
            _ = poll.tick() => {}
            _ = &mut ctrl_c => { info!("interrupted"); break; }
            _ = term.recv() => { info!("terminated"); break; }
        }
        let mut engine = lock()?;
        engine.refresh().context("following the targets failed")?;
        engine.poll_gap.pass(Instant::now());
        let input = screen.as_mut().map(tui::Screen::input).unwrap_or_default();
        if input.quit {
            info!("quit from the live view");
            break;
        }
        if let Some(s) = input.sort {
            sort = s;
        }
        if live && (input.sort.is_some() || last_draw.elapsed() >= out.interval) {
            last_draw = Instant::now();
            let snapshot = engine.snapshot()?;
            let report = Report::new(&engine, &snapshot, started.elapsed());
            rates.push(last_draw, Series::of(&report));
            match screen.as_mut() {
                Some(s) => s.draw(&report, &rates, sort, out.window)?,
                None => {
                    let text = live::render(&report, &rates, sort, out.window);
                    let mut stdout = std::io::stdout().lock();
                    let _ = stdout.write_all(text.as_bytes());
                    let _ = stdout.flush();
                }
            }
        }
        if engine.done() {
            info!("the traced processes exited");
            break;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
    }
    drop(screen);
    let mut engine = lock()?;
    let gap = engine.poll_gap;
    info!(
        "poll loop: longest gap between passes {:.1} ms over {} passes",
        gap.max().as_secs_f64() * 1e3,
        gap.passes()
    );
    engine.refresh_all()?;
    let snapshot = engine.snapshot().context("reading the counters failed")?;
    Ok(Report::new(&engine, &snapshot, started.elapsed()))
}

fn lock_mode(shared: &Arc<Mutex<Session>>) -> anyhow::Result<Mode> {
    Ok(shared
        .lock()
        .map_err(|_| anyhow::anyhow!("engine lock poisoned"))?
        .mode())
}

/// Stops a background task (metrics server, sampler) when the agent loop ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Prints or writes the final summary.
pub(crate) fn emit(report: &Report, out: &Output) -> anyhow::Result<()> {
    let text = if out.json {
        serde_json::to_string_pretty(report)? + "\n"
    } else {
        report.to_table()
    };
    match &out.output {
        Some(path) => {
            fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?
        }
        None => print!("{text}"),
    }
    Ok(())
}
