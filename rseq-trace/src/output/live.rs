//! The live view's figures: per-key rates over the last tick and over a longer window, and the
//! rows, header and why-lines both views show: drawn by `tui` on a terminal, printed as plain
//! text (here) otherwise.

use std::{
    collections::{BTreeMap, VecDeque},
    fmt::Write as _,
    time::{Duration, Instant},
};

use crate::{
    output::{
        report::{KeyReport, Report},
        summary,
    },
    sampling::estimate,
    snapshot::counts::Tally,
};

/// What the live table is sorted by.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum SortBy {
    /// Aborts per second, highest first.
    #[default]
    Aborts,
    /// Entries per second, highest first.
    Entries,
    /// Abort ratio, highest first.
    Ratio,
    /// Key name.
    Key,
}

/// What a rate is of.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Series {
    /// One key, by name.
    Key(String),
    /// All keys together on one CPU, the one the attempts entered on.
    Cpu(u32),
    /// All keys together in one process, by pid.
    Process(u32),
}

impl Series {
    /// Every series of a report: its keys, CPUs and processes.
    pub fn of(report: &Report) -> BTreeMap<Series, Tally> {
        let keys = report
            .keys
            .iter()
            .map(|k| (Series::Key(k.key.clone()), k.total));
        let cpus = report.per_cpu.iter().map(|(c, t)| (Series::Cpu(*c), *t));
        let procs = report
            .processes
            .iter()
            .map(|p| (Series::Process(p.pid), p.total));
        keys.chain(cpus).chain(procs).collect()
    }
}

/// Totals per key, CPU and process over time, to compute rates over the last tick and over a
/// longer window.
pub struct Rates {
    history: VecDeque<(Instant, BTreeMap<Series, Tally>)>,
    window: Duration,
}

/// Events per second of one key.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Rate {
    /// Attempts entered per second.
    pub entries: f64,
    /// Attempts committed per second.
    pub commits: f64,
    /// Attempts aborted per second.
    pub aborts: f64,
    /// Attempts cancelled (left by an exit point) per second.
    pub cancels: f64,
    /// Sampled mode: ± per second around `entries` and `commits` (they are estimates); `None`
    /// when no abort or cancel was seen in a window yet, entries are then only those counted.
    pub estimate: Option<Option<f64>>,
}

impl Rates {
    /// No totals yet; rates are over `window`.
    pub fn new(window: Duration) -> Self {
        Rates {
            history: VecDeque::new(),
            window,
        }
    }

    /// Adds the totals at `at`, dropping those older than the window (the last two stay).
    pub fn push(&mut self, at: Instant, totals: BTreeMap<Series, Tally>) {
        self.history.push_back((at, totals));
        while self
            .history
            .front()
            .is_some_and(|(t, _)| at.duration_since(*t) > self.window)
            && self.history.len() > 2
        {
            self.history.pop_front();
        }
    }

    /// Rate over the last tick.
    pub fn last(&self, series: &Series) -> Rate {
        let n = self.history.len();
        if n < 2 {
            return Rate::default();
        }
        rate(&self.history[n - 2], &self.history[n - 1], series)
    }

    /// Aborts per second over each tick in the window, oldest first (for a sparkline).
    pub fn abort_history(&self, series: &Series) -> Vec<f64> {
        let h: Vec<_> = self.history.iter().collect();
        h.windows(2)
            .map(|w| rate(w[0], w[1], series).aborts)
            .collect()
    }

    /// Rate over the whole window.
    pub fn windowed(&self, series: &Series) -> Rate {
        match (self.history.front(), self.history.back()) {
            (Some(a), Some(b)) if self.history.len() >= 2 => rate(a, b, series),
            _ => Rate::default(),
        }
    }
}

fn rate(
    (t0, a): &(Instant, BTreeMap<Series, Tally>),
    (t1, b): &(Instant, BTreeMap<Series, Tally>),
    key: &Series,
) -> Rate {
    let secs = t1.duration_since(*t0).as_secs_f64();
    if secs <= 0.0 {
        return Rate::default();
    }
    let zero = Tally::default();
    let later = b.get(key).unwrap_or(&zero);
    let mut d = later.raw().since(&a.get(key).unwrap_or(&zero).raw());
    if later.estimate.is_some() {
        d = estimate::extrapolate(&d);
    } else {
        d.commits = d.entries.saturating_sub(d.aborts).saturating_sub(d.cancels);
    }
    Rate {
        entries: d.entries as f64 / secs,
        commits: d.commits as f64 / secs,
        aborts: d.aborts as f64 / secs,
        cancels: d.cancels as f64 / secs,
        estimate: d.estimate.map(|e| e.uncertainty.map(|u| u as f64 / secs)),
    }
}

/// The columns of the live table, in order (both views).
pub const COLUMNS: [&str; 7] = [
    "KEY", "ENTRY/s", "COMMIT/s", "ABORT/s", "ABORT/s*", "CANCEL/s", "ABORT%",
];

/// One key's row: its name, the [`COLUMNS`] as text, and its aborts per CPU.
pub struct RowText<'a> {
    /// The key's name.
    pub key: &'a str,
    /// The [`COLUMNS`] as text, the key's name first.
    pub cells: Vec<String>,
    /// `cpu:aborts` for each CPU with aborts, space-separated.
    pub by_cpu: String,
}

/// The sort order a typed key picks.
pub fn sort_key(c: char) -> Option<SortBy> {
    match c {
        'a' => Some(SortBy::Aborts),
        'e' => Some(SortBy::Entries),
        'r' => Some(SortBy::Ratio),
        'k' => Some(SortBy::Key),
        _ => None,
    }
}

/// The first line of both views.
pub fn header(report: &Report, sort: SortBy, window: Duration) -> String {
    format!(
        "rseq-trace ({} mode)  {:.0}s  {} keys  {} processes  sorted by {:?} (keys a/e/r/k, q quits)  (rates: last tick; ABORT/s* and ~estimates over {}s)",
        report.mode.name(),
        report.seconds,
        report.keys.len(),
        report.processes.len(),
        sort,
        window.as_secs()
    )
}

/// Every key's row, in `sort` order.
pub fn sorted_rows<'a>(report: &'a Report, rates: &Rates, sort: SortBy) -> Vec<RowText<'a>> {
    let mut rows: Vec<_> = report
        .keys
        .iter()
        .map(|k| {
            let series = Series::Key(k.key.clone());
            (k, rates.last(&series), rates.windowed(&series))
        })
        .collect();
    match sort {
        SortBy::Aborts => rows.sort_by(|a, b| b.1.aborts.total_cmp(&a.1.aborts)),
        SortBy::Entries => rows.sort_by(|a, b| b.1.entries.total_cmp(&a.1.entries)),
        SortBy::Ratio => rows.sort_by(|a, b| {
            let r = |k: &KeyReport| k.total.abort_ratio().unwrap_or(-1.0);
            r(b.0).total_cmp(&r(a.0))
        }),
        SortBy::Key => rows.sort_by(|a, b| a.0.key.cmp(&b.0.key)),
    }
    rows.into_iter()
        .map(|(k, last, win)| {
            // Sampled estimates need many windows: shown over the whole window, marked.
            let (entries, commits) = match win.estimate {
                // Aborts mode: not counted, so not shown as a rate of 0.
                _ if k.total.entries_unknown => ("-".into(), "-".into()),
                None => (
                    format!("{:.0}", last.entries),
                    format!("{:.0}", last.commits),
                ),
                Some(u) => (estimated(win.entries, u), estimated(win.commits, u)),
            };
            let by_cpu: Vec<String> = k
                .per_cpu
                .iter()
                .filter(|(_, t)| t.aborts > 0)
                .map(|(cpu, t)| format!("{cpu}:{}", t.aborts))
                .collect();
            RowText {
                key: &k.key,
                cells: vec![
                    k.key.clone(),
                    entries,
                    commits,
                    format!("{:.1}", last.aborts),
                    format!("{:.1}", win.aborts),
                    format!("{:.1}", last.cancels),
                    summary::percent(&k.total),
                ],
                by_cpu: by_cpu.join(" "),
            }
        })
        .collect()
}

/// The why-and-where line of every key with aborts (where restarts are counted).
pub fn why_lines(report: &Report) -> Vec<String> {
    if !report.kernel_restarts_counted {
        return Vec::new();
    }
    report.keys.iter().filter_map(why_and_where).collect()
}

/// The live view as plain text, for a stdout that is not a terminal.
pub fn render(report: &Report, rates: &Rates, sort: SortBy, window: Duration) -> String {
    let rows = sorted_rows(report, rates, sort);
    let width = rows.iter().map(|r| r.key.len()).max().unwrap_or(3).max(3);
    let mut out = String::new();
    let _ = writeln!(out, "{}", header(report, sort, window));
    let line = |cells: &[&str], by_cpu: &str| {
        format!(
            "{:<width$}  {:>10}  {:>10}  {:>9}  {:>9}  {:>9}  {:>7}  {by_cpu}",
            cells[0], cells[1], cells[2], cells[3], cells[4], cells[5], cells[6]
        )
    };
    let _ = writeln!(out, "{}", line(&COLUMNS, "ABORTS BY CPU"));
    for row in &rows {
        let cells: Vec<&str> = row.cells.iter().map(String::as_str).collect();
        let _ = writeln!(out, "{}", line(&cells, &row.by_cpu));
    }
    for l in why_lines(report) {
        let _ = writeln!(out, "{l}");
    }
    for l in footer_lines(report, rates) {
        let _ = writeln!(out, "{l}");
    }
    out
}

/// Rates per CPU, and per process when there are several.
fn footer_lines(report: &Report, rates: &Rates) -> Vec<String> {
    // Aborts mode counts no entries: a rate of them is unknown, not 0.
    let unknown = report.mode == rseq_common::mode::Mode::Aborts;
    let entry_rate = |entries: f64| {
        if unknown {
            "-".to_owned()
        } else {
            format!("{entries:.0}")
        }
    };
    let per_cpu: Vec<String> = report
        .per_cpu
        .keys()
        .map(|c| {
            let r = rates.last(&Series::Cpu(*c));
            format!(
                "cpu{c} {} entries/s {:.1} aborts/s",
                entry_rate(r.entries),
                r.aborts
            )
        })
        .collect();
    let mut out = vec![per_cpu.join("  |  ")];
    if report.processes.len() > 1 {
        let per_process: Vec<String> = report
            .processes
            .iter()
            .map(|p| {
                let r = rates.last(&Series::Process(p.pid));
                format!(
                    "{} ({}) {} entries/s {:.1} aborts/s",
                    p.pid,
                    p.comm,
                    entry_rate(r.entries),
                    r.aborts
                )
            })
            .collect();
        out.push(per_process.join("  |  "));
    }
    out
}

/// "↳ key: signal 92%, preemption 8% | hottest `jne ...` at start+0x12 (file.rs:81)", per key
/// with aborts: the causes so far and where the kernel interrupts it most.
fn why_and_where(k: &KeyReport) -> Option<String> {
    let causes = k.total.abort_causes;
    let total: u64 = causes.named().iter().map(|(_, n)| n).sum();
    if total == 0 {
        return None;
    }
    let mut shares: Vec<(&str, u64)> = causes.named().into_iter().filter(|(_, n)| *n > 0).collect();
    shares.sort_by_key(|s| std::cmp::Reverse(s.1));
    let shares: Vec<String> = shares
        .iter()
        .map(|(name, n)| format!("{name} {:.0}%", 100.0 * *n as f64 / total as f64))
        .collect();
    let hottest = k
        .positions
        .first()
        .map(|p| format!(" | hottest {}", p.place()))
        .unwrap_or_default();
    let probe = match causes.probe {
        0 => String::new(),
        n => format!(" | ⚠ {n} made by rseq-trace's probe on the descriptor store"),
    };
    Some(format!(
        "↳ {}: {}{hottest}{probe}",
        k.key,
        shares.join(", ")
    ))
}

/// A rate that is an estimate: `~N±U`, or `>=N` when it cannot be extrapolated yet.
fn estimated(value: f64, uncertainty: Option<f64>) -> String {
    match uncertainty {
        Some(u) => format!("~{value:.0}±{u:.0}"),
        None => format!(">={value:.0}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals(entries: u64, aborts: u64) -> BTreeMap<Series, Tally> {
        let t = Tally {
            entries,
            aborts,
            ..Default::default()
        };
        [(Series::Key("k".into()), t), (Series::Cpu(1), t)].into()
    }

    #[test]
    fn rates_over_the_last_tick_and_the_window() {
        let t0 = Instant::now();
        let mut r = Rates::new(Duration::from_secs(10));
        r.push(t0, totals(0, 0));
        r.push(t0 + Duration::from_secs(1), totals(100, 10));
        r.push(t0 + Duration::from_secs(2), totals(400, 10));
        let key = Series::Key("k".into());
        assert_eq!(r.last(&key).entries, 300.0);
        assert_eq!(r.last(&key).aborts, 0.0);
        assert_eq!(r.windowed(&key).entries, 200.0);
        assert_eq!(r.windowed(&Series::Cpu(1)).aborts, 5.0);
        assert_eq!(r.last(&Series::Process(9)), Rate::default());
        assert_eq!(r.abort_history(&key), vec![10.0, 0.0]);
        // Samples older than the window are dropped (keeping at least two).
        r.push(t0 + Duration::from_secs(20), totals(2400, 10));
        assert_eq!(r.windowed(&key).entries, 2000.0 / 18.0);
    }
}
