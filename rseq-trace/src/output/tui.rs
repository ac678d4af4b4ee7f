//! The live view on a terminal (ratatui + crossterm, as bpftop does): the alternate screen in
//! raw mode, redrawn on every tick and on resize, restored on every way out (drop, an error
//! returned through it, a panic). Per key: rates, the abort ratio and a sparkline of its abort
//! rate; below, aborts per CPU as bars and the why-and-where line of each key. Log lines written
//! while the screen is up are kept (see [`LogWriter`]) and printed once it is gone.

use std::{
    io::{self, Stdout, Write},
    sync::{
        atomic::{AtomicBool, Ordering},
        Mutex, Once,
    },
    time::Duration,
};

use ratatui::{
    backend::CrosstermBackend,
    crossterm::{
        cursor,
        event::{self, Event, KeyCode, KeyEventKind, KeyModifiers},
        execute,
        terminal::{disable_raw_mode, enable_raw_mode, EnterAlternateScreen, LeaveAlternateScreen},
    },
    layout::{Constraint, Layout},
    style::{Modifier, Style},
    text::Line,
    widgets::{Bar, BarChart, BarGroup, Block, Paragraph, Row, Table},
    Terminal,
};

use crate::{
    output::live::{self, Rates, Series, SortBy},
    output::report::Report,
};

/// Whether the screen is up: log lines are then kept instead of written over it.
static ACTIVE: AtomicBool = AtomicBool::new(false);
/// Log lines written while the screen was up.
static KEPT: Mutex<Vec<u8>> = Mutex::new(Vec::new());

/// What the user typed since the last look.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Input {
    /// `a`, `e`, `r`, `k`: a new sort order.
    pub sort: Option<SortBy>,
    /// `q`, Esc or Ctrl-C (raw mode turns Ctrl-C into a key, not SIGINT).
    pub quit: bool,
}

/// The terminal while the live view owns it.
pub struct Screen {
    terminal: Terminal<CrosstermBackend<Stdout>>,
    /// Repaint every cell of every frame: something else writes to the terminal too.
    repaint: bool,
}

impl Screen {
    /// Enters the alternate screen in raw mode.
    pub fn new() -> io::Result<Screen> {
        static HOOK: Once = Once::new();
        HOOK.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                restore();
                previous(info);
            }));
        });
        enable_raw_mode()?;
        ACTIVE.store(true, Ordering::Relaxed);
        let mut stdout = io::stdout();
        if let Err(e) = execute!(stdout, EnterAlternateScreen, cursor::Hide) {
            restore();
            return Err(e);
        }
        match Terminal::new(CrosstermBackend::new(stdout)) {
            Ok(terminal) => Ok(Screen {
                terminal,
                repaint: false,
            }),
            Err(e) => {
                restore();
                Err(e)
            }
        }
    }

    /// Repaints every frame whole when `shared`: the command `rseq-trace run` started writes to
    /// the same terminal, and ratatui only redraws the cells it changed.
    pub fn repainting(mut self, shared: bool) -> Screen {
        self.repaint = shared;
        self
    }

    /// Keys typed since the last call (never waits).
    pub fn input(&mut self) -> Input {
        let mut input = Input::default();
        while event::poll(Duration::ZERO).unwrap_or(false) {
            let Ok(Event::Key(key)) = event::read() else {
                continue;
            };
            if key.kind != KeyEventKind::Press {
                continue;
            }
            match key.code {
                KeyCode::Char('c') if key.modifiers.contains(KeyModifiers::CONTROL) => {
                    input.quit = true;
                }
                KeyCode::Char('q') | KeyCode::Esc => input.quit = true,
                KeyCode::Char(c) => input.sort = live::sort_key(c).or(input.sort),
                _ => {}
            }
        }
        input
    }

    /// Draws one frame (ratatui sizes it to the terminal, so a resize is drawn at once).
    pub fn draw(
        &mut self,
        report: &Report,
        rates: &Rates,
        sort: SortBy,
        window: Duration,
    ) -> io::Result<()> {
        let why: Vec<Line> = live::why_lines(report)
            .into_iter()
            .map(Line::from)
            .collect();
        if self.repaint {
            self.terminal.clear()?;
        }
        self.terminal.draw(|f| {
            // The table as tall as its keys (and a border and a header), the rest below it.
            let rows = report.keys.len() as u16 + 3;
            let [head, table, bars, lines, _] = Layout::vertical([
                Constraint::Length(1),
                Constraint::Max(rows.max(4)),
                Constraint::Length(6),
                Constraint::Length(why.len() as u16),
                Constraint::Min(0),
            ])
            .areas(f.area());
            f.render_widget(Paragraph::new(live::header(report, sort, window)), head);
            f.render_widget(keys_table(report, rates, sort), table);
            f.render_widget(cpu_bars(report, rates), bars);
            f.render_widget(Paragraph::new(why.clone()), lines);
        })?;
        Ok(())
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        restore();
    }
}

/// Leaves the alternate screen and raw mode, then prints the log lines kept meanwhile.
fn restore() {
    if !ACTIVE.swap(false, Ordering::Relaxed) {
        return;
    }
    let _ = disable_raw_mode();
    let _ = execute!(io::stdout(), LeaveAlternateScreen, cursor::Show);
    if let Ok(mut kept) = KEPT.lock() {
        let _ = io::stderr().write_all(&kept);
        kept.clear();
    }
}

/// The per-key table: the plain view's columns and a sparkline of the abort rate.
fn keys_table<'a>(report: &'a Report, rates: &Rates, sort: SortBy) -> Table<'a> {
    let header = Row::new(live::COLUMNS.iter().copied().chain(["ABORT/s TREND"]))
        .style(Style::default().add_modifier(Modifier::BOLD));
    let rows: Vec<Row> = live::sorted_rows(report, rates, sort)
        .into_iter()
        .map(|row| {
            let trend = sparkline(&rates.abort_history(&Series::Key(row.key.to_owned())));
            Row::new(row.cells.into_iter().chain([trend]))
        })
        .collect();
    let key_width = report.keys.iter().map(|k| k.key.len()).max().unwrap_or(3);
    let mut widths = vec![Constraint::Length(key_width.max(3) as u16)];
    widths.extend([10, 10, 9, 9, 9, 20].map(Constraint::Length));
    widths.push(Constraint::Min(10));
    Table::new(rows, widths)
        .header(header)
        .block(Block::bordered().title(format!(
            " keys ({}) · processes ({}) ",
            report.keys.len(),
            report.processes.len()
        )))
}

/// Aborts per second on each CPU over the last tick.
fn cpu_bars<'a>(report: &Report, rates: &Rates) -> BarChart<'a> {
    let bars: Vec<Bar> = report
        .per_cpu
        .keys()
        .map(|c| {
            let aborts = rates.last(&Series::Cpu(*c)).aborts;
            Bar::default()
                .value(aborts.round() as u64)
                .text_value(format!("{aborts:.1}"))
                .label(Line::from(format!("cpu{c}")))
        })
        .collect();
    BarChart::default()
        .block(Block::bordered().title(" aborts/s per CPU (last tick) "))
        .bar_width(7)
        .bar_gap(1)
        .data(BarGroup::default().bars(&bars))
}

/// `▁▂▄█`-style text of `values` scaled to their maximum (blank when all are zero).
pub fn sparkline(values: &[f64]) -> String {
    const LEVELS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let max = values.iter().copied().fold(0.0, f64::max);
    values
        .iter()
        .map(|v| {
            if max <= 0.0 {
                ' '
            } else {
                LEVELS[((v / max) * 7.0).round().clamp(0.0, 7.0) as usize]
            }
        })
        .collect()
}

/// The writer the agent's log lines go through: stderr, or kept while the screen is up.
#[derive(Clone, Copy, Debug, Default)]
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if ACTIVE.load(Ordering::Relaxed) {
            if let Ok(mut kept) = KEPT.lock() {
                kept.extend_from_slice(buf);
                return Ok(buf.len());
            }
        }
        io::stderr().write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogWriter;

    fn make_writer(&'a self) -> Self::Writer {
        LogWriter
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparkline_scales_to_the_maximum() {
        assert_eq!(sparkline(&[0.0, 0.0]), "  ");
        assert_eq!(sparkline(&[0.0, 1.0, 2.0, 4.0]), "▁▃▅█");
        assert_eq!(crate::output::summary::percent(&Default::default()), "-");
    }
}
