//! The views' loop: show the live view, serve `/metrics`, and stop when the traced processes
//! exit, the duration ends, or on Ctrl-C / SIGTERM / `q`. The session runs on its own thread
//! ([`Running`]); this loop only reads snapshots, so nothing it draws delays the tracer.

use std::{
    fs,
    io::{IsTerminal, Write},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use rseq_trace::{
    export::{
        collector::{Exporter, ProcessLabels},
        serve,
    },
    output::{
        live::{self, Rates, Series},
        report::Report,
        tui,
    },
    session::runner::Running,
    snapshot::Reader,
};
use tokio::signal::unix::{signal, SignalKind};
use tracing::info;

use crate::cli::Output;

/// How often keys typed in the live view and the stop conditions are looked at.
const INPUT_PERIOD: Duration = Duration::from_millis(50);

/// How the agent was started, for what it shows.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Shown {
    /// `--binary`: metrics label processes by binary.
    pub(crate) binary_mode: bool,
    /// `rseq-trace run`: the command writes to the same terminal as the live view.
    pub(crate) shares_terminal: bool,
}

/// Runs until a stop condition, stops the session (detaching every probe), and returns the
/// final report.
pub(crate) async fn run(running: Running, out: &Output, shown: Shown) -> anyhow::Result<Report> {
    let reader = running.reader().context("cannot open the counter maps")?;
    let _server = match out.listen {
        Some(addr) => Some(serve_metrics(&running, out, shown, addr).await?),
        None => None,
    };
    let started = Instant::now();
    let ended = watch_views(&running, &reader, out, shown, started).await;
    // Even when the views failed: the session must stop and release what it holds.
    running.finish().context("following the targets failed")?;
    ended?;
    let (catalog, snapshot) = reader.take().context("reading the counters failed")?;
    Ok(Report::new(&catalog, &snapshot, started.elapsed()))
}

/// Serves `/metrics` with a reader of its own until dropped.
async fn serve_metrics(
    running: &Running,
    out: &Output,
    shown: Shown,
    addr: std::net::SocketAddr,
) -> anyhow::Result<AbortOnDrop> {
    let labels = if shown.binary_mode {
        ProcessLabels::Binary
    } else {
        ProcessLabels::Pid
    };
    let reader = running.reader().context("cannot open the counter maps")?;
    let exporter = Arc::new(Exporter::new(reader, labels, !out.metrics_no_cpu));
    let (bound, task) = serve::serve(addr, exporter)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    info!("serving metrics on http://{bound}/metrics");
    Ok(AbortOnDrop(task))
}

/// The loop of the live view and the stop conditions.
async fn watch_views(
    running: &Running,
    reader: &Reader,
    out: &Output,
    shown: Shown,
    started: Instant,
) -> anyhow::Result<()> {
    let mut status = running.status();
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
    let mut tick = tokio::time::interval(INPUT_PERIOD);
    let mut last_draw = Instant::now();
    let deadline = out.duration.map(|d| started + d);
    let mut sort = out.sort;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut ctrl_c => { info!("interrupted"); break; }
            _ = term.recv() => { info!("terminated"); break; }
            // The session ended on its own: an error, which finishing it reports.
            changed = status.changed() => if changed.is_err() { break },
        }
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
            let (catalog, snapshot) = reader.take().context("reading the counters failed")?;
            let report = Report::new(&catalog, &snapshot, started.elapsed());
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
        if status.borrow().done {
            info!("the traced processes exited");
            break;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
    }
    Ok(())
}

/// Stops a background task (the metrics server) when the agent loop ends.
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
