//! The human summary of a report: one row per key, why and where they aborted, warnings,
//! sections not traced, and the processes.

use std::fmt::Write as _;

use rseq_common::mode::Mode;

use super::{positions::Position, report::Report};
use crate::snapshot::counts::Tally;

impl Report {
    /// The human summary: one row per key, why and where they aborted, then the processes.
    pub fn to_table(&self) -> String {
        let width = self
            .keys
            .iter()
            .map(|k| k.key.len())
            .max()
            .unwrap_or(0)
            .max(3);
        let mut out = String::new();
        self.key_rows(&mut out, width);
        if self.kernel_restarts_counted {
            self.why_and_where(&mut out, width);
        }
        for w in &self.warnings {
            let _ = writeln!(out, "warning: {w}");
        }
        for s in self.sections.iter().filter(|s| s.refused.is_some()) {
            let refused = s.refused.as_deref().unwrap_or("");
            let _ = writeln!(out, "{}: not traced: {refused}", s.name);
        }
        if self.processes.len() > 1 {
            self.process_rows(&mut out);
        }
        let lost: u64 = self.health.values().sum();
        if lost > 0 {
            let _ = writeln!(out, "unattributed events: {:?}", self.health);
        }
        if !self.kernel_restarts_counted {
            let _ = writeln!(
                out,
                "(KERNEL: not counted, the rseq_ip_fixup tracepoint is unavailable)"
            );
        }
        out
    }

    /// The table of keys, and what the mode leaves out or estimates.
    fn key_rows(&self, out: &mut String, width: usize) {
        let _ = writeln!(
            out,
            "{:<width$}  {:>12}  {:>12}  {:>10}  {:>10}  {:>10}  {:>7}",
            "KEY", "ENTRIES", "COMMITS", "ABORTS", "KERNEL", "CANCELS", "ABORT% [95% bounds]"
        );
        let counted = self.mode != Mode::Aborts;
        for k in &self.keys {
            let t = &k.total;
            let (entries, commits) = if counted {
                (shown(t.entries, t), shown(t.commits, t))
            } else {
                ("-".into(), "-".into())
            };
            let ratio = percent(t);
            let _ = writeln!(
                out,
                "{:<width$}  {:>12}  {:>12}  {:>10}  {:>10}  {:>10}  {:>7}",
                k.key,
                entries,
                commits,
                aborts(t),
                marked(
                    t.kernel_restarts,
                    t.aborts_estimated,
                    t.aborts_lower_bound()
                ),
                cancels(t),
                ratio
            );
        }
        if !counted {
            let _ = writeln!(out, "(mode aborts: entries and commits are not counted)");
        }
        if let Some(s) = &self.sampling {
            let costs = s.hit_costs.map_or_else(String::new, |c| {
                format!(
                    " at {:.2} µs a nop and {:.2} µs a trap ({})",
                    c.nop.as_secs_f64() * 1e6,
                    c.trap.as_secs_f64() * 1e6,
                    if c.measured {
                        "measured here"
                    } else {
                        "assumed"
                    }
                )
            });
            let _ = writeln!(
                out,
                "(mode sampled: ABORT% is measured on the windows' attempts, bounds at 95%; ~ marks estimates, ± is {} standard errors; {} windows, {:.2} s open, probe cost about {:.2}% of the traced threads' CPU time{costs}, budget {}%)",
                crate::sampling::estimate::SIGMAS,
                s.windows,
                s.window_seconds,
                100.0 * s.probe_cost_seconds / s.traced_cpu_seconds.max(1e-9),
                s.budget_percent
            );
        }
    }

    /// Per key, the causes of its aborts and its hottest position.
    fn why_and_where(&self, out: &mut String, width: usize) {
        let _ = writeln!(out, "\nwhy and where they aborted:");
        for k in &self.keys {
            let causes: Vec<String> = k
                .total
                .abort_causes
                .named()
                .iter()
                .filter(|(_, n)| *n > 0)
                .map(|(name, n)| format!("{name} {n}"))
                .collect();
            if causes.is_empty() {
                continue;
            }
            let _ = writeln!(out, "{:<width$}  {}", k.key, causes.join(", "));
            if let Some(p) = k.positions.first() {
                let _ = writeln!(out, "{:<width$}  hottest: {}", "", describe(p));
            }
        }
    }

    /// One row per process.
    fn process_rows(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "\n{:>8}  {:<16}  {:>12}  {:>12}  {:>10}  {:>10}",
            "PID", "COMM", "ENTRIES", "COMMITS", "ABORTS", "CANCELS"
        );
        for p in &self.processes {
            let _ = writeln!(
                out,
                "{:>8}  {:<16}  {:>12}  {:>12}  {:>10}  {:>10}",
                p.pid,
                p.comm,
                shown(p.total.entries, &p.total),
                shown(p.total.commits, &p.total),
                aborts(&p.total),
                cancels(&p.total)
            );
        }
    }
}

/// An abort ratio in percent: `1.20%` when counted exactly, `0.12% [0.10-0.15]` with its
/// bounds when sampled, `<0.001%` (the upper bound) when the windows saw no abort, `-` where
/// entries are unknown.
pub fn percent(t: &Tally) -> String {
    match t.ratio {
        None => "-".into(),
        Some(r) if r.is_exact() => format!("{}%", figure(100.0 * r.ratio)),
        Some(r) if r.ratio == 0.0 => format!("<{}%", figure(100.0 * r.high)),
        Some(r) => format!(
            "{}% [{}-{}]",
            figure(100.0 * r.ratio),
            figure(100.0 * r.low),
            figure(100.0 * r.high)
        ),
    }
}

/// A percentage with two decimals, or two significant digits below 0.1.
fn figure(v: f64) -> String {
    if v == 0.0 || v >= 0.1 {
        return format!("{v:.2}");
    }
    let decimals = (1.0 - v.log10().floor()).clamp(2.0, 8.0) as usize;
    format!("{v:.decimals$}")
}

/// The cancels, `~N` when some were counted in the sampling windows only, `>=N` when that
/// estimate is a lower bound.
fn cancels(t: &Tally) -> String {
    marked(t.cancels, t.cancels_estimated, t.cancels_lower_bound())
}

/// The aborts, marked as the cancels are.
fn aborts(t: &Tally) -> String {
    marked(t.aborts, t.aborts_estimated, t.aborts_lower_bound())
}

/// `N`, `~N` when estimated, `>=N` when the estimate is a lower bound.
fn marked(value: u64, estimated: bool, lower_bound: bool) -> String {
    if lower_bound {
        format!(">={value}")
    } else if estimated {
        format!("~{value}")
    } else {
        value.to_string()
    }
}

/// An entries or commits figure, marked `~N±U` when it is an estimate.
pub fn shown(value: u64, t: &Tally) -> String {
    match t.estimate {
        None => value.to_string(),
        Some(e) => match e.uncertainty {
            Some(u) => format!("~{value}±{u}"),
            None => format!(">={value}"),
        },
    }
}

/// "`sub rcx,1` at start+0xe (file.rs:88) of f+0x3b, 57 restarts".
pub fn describe(p: &Position) -> String {
    format!("{} of {}, {} restarts", p.place(), p.section, p.restarts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampling::ratio::RatioBounds;

    fn with(ratio: Option<RatioBounds>) -> Tally {
        Tally {
            ratio,
            ..Tally::default()
        }
    }

    #[test]
    fn ratios_show_their_bounds_when_sampled() {
        assert_eq!(percent(&with(None)), "-");
        assert_eq!(percent(&with(RatioBounds::exact(12, 1000))), "1.20%");
        let sampled = RatioBounds {
            ratio: 0.0012,
            low: 0.0010,
            high: 0.0015,
        };
        assert_eq!(percent(&with(Some(sampled))), "0.12% [0.10-0.15]");
        let none_seen = RatioBounds::sampled(0, 400_000, None);
        assert_eq!(percent(&with(none_seen)), "<0.00092%");
    }
}
