//! `/metrics`: a Prometheus collector that reads the BPF maps at scrape time (see
//! docs/metrics.md for the names and labels).

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Mutex,
    },
    time::Instant,
};

use prometheus::{
    core::{Collector, Desc},
    proto::MetricFamily,
    Encoder, GaugeVec, IntCounterVec, IntGaugeVec, Opts, TextEncoder,
};
use rseq_common::{health::Health, mode::Mode};

pub use crate::export::scrape::ProcessLabels;
use crate::{
    export::scrape::ScrapeView,
    sampling::SamplingStats,
    snapshot::{
        counts::{Tally, PROBE_MOVE},
        Reader,
    },
};

/// A counter family: name, help text, and the tally field it exports.
type CounterSpec = (&'static str, &'static str, fn(&Tally) -> u64);
/// A gauge family, likewise.
type GaugeSpec = (&'static str, &'static str, fn(&Tally) -> f64);

/// The custom collector: every scrape takes a snapshot with its own reader, never through the
/// session, so a scrape of any size cannot delay the tracer.
pub struct Exporter {
    reader: Reader,
    labels: ProcessLabels,
    per_cpu: bool,
    read_errors: AtomicU64,
    /// Duration of the previous scrape's map read, in nanoseconds.
    last_read_ns: AtomicU64,
    /// Held while a scrape renders.
    rendering: Mutex<()>,
}

impl Exporter {
    /// A collector over `reader`'s snapshots.
    pub fn new(reader: Reader, labels: ProcessLabels, per_cpu: bool) -> Self {
        Exporter {
            reader,
            labels,
            per_cpu,
            read_errors: AtomicU64::new(0),
            last_read_ns: AtomicU64::new(0),
            rendering: Mutex::new(()),
        }
    }

    /// A snapshot, reduced to what the metrics show.
    fn read(&self) -> Option<ScrapeView> {
        let started = Instant::now();
        match self.reader.take() {
            Ok((catalog, snapshot)) => {
                self.last_read_ns
                    .store(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
                Some(ScrapeView::new(
                    &catalog,
                    &snapshot,
                    self.labels,
                    self.per_cpu,
                ))
            }
            Err(e) => {
                tracing::warn!("scrape: reading the maps failed: {e}");
                self.read_errors.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// The text exposition of everything, as served on `/metrics`.
    pub fn render(&self) -> String {
        // One render at a time: a render at 10,000 sections in exact mode holds some 250 MiB
        // (docs/BENCHMARKS.md), and scrapes that come faster than they render would otherwise
        // pile up. The session never takes this lock.
        let _one_at_a_time = self.rendering.lock();
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.collect(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }

    fn section_families(&self, view: &ScrapeView) -> Vec<MetricFamily> {
        let names = self.labels.names(self.per_cpu);
        let series = &view.series;
        let counters: [CounterSpec; 5] = [
            ("rseq_entries_total", "Critical-section attempts entered (the descriptor store before start_ip).", |t| t.entries),
            ("rseq_commits_total", "Attempts committed: entries - aborts - cancels (includes attempts in flight, at most one per thread).", |t| t.commits),
            ("rseq_aborts_total", "Attempts aborted: kernel restarts plus the section's own CPU-mismatch branch.", |t| t.aborts),
            ("rseq_cancels_total", "Attempts that left early through an exit point.", |t| t.cancels),
            ("rseq_probe_moved_aborts_total", "Aborts (in rseq_aborts_total) by the section's own CPU check after rseq-trace's entry probe let the scheduler move the thread to another CPU; untraced, almost none would happen. Exact mode, and sampled mode's windows.", |t| t.abort_causes.probe_move),
        ];
        let mut families = Vec::new();
        let exact = view.mode == Mode::Exact;
        for (name, help, value) in counters {
            if !exact && (name == "rseq_entries_total" || name == "rseq_commits_total") {
                continue; // not counted (or estimated): absent rather than a false figure
            }
            let Ok(vec) = IntCounterVec::new(Opts::new(name, help), &names) else {
                continue;
            };
            for (labels, tally) in series {
                let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
                vec.with_label_values(&labels).inc_by(value(tally));
            }
            families.extend(vec.collect());
        }
        if view.mode != Mode::Aborts {
            families.extend(ratio_families(series, &names, view.mode));
        }
        families.extend(restart_families(series, &names));
        if view.mode == Mode::Sampled {
            families.extend(estimate_families(&view.sampled, &names));
        }
        let unattributed = IntCounterVec::new(
            Opts::new(
                "rseq_trace_unattributed_events_total",
                "Events the eBPF side could not attribute, by cause.",
            ),
            &["cause"],
        );
        if let Ok(vec) = unattributed {
            for h in Health::ALL {
                vec.with_label_values(&[h.name()])
                    .inc_by(view.health[h as usize]);
            }
            families.extend(vec.collect());
        }
        families
    }

    fn health_families(&self, view: &ScrapeView) -> Vec<MetricFamily> {
        let mut families = Vec::new();
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            IntGaugeVec::new(Opts::new(name, help), labels).ok()
        };
        if let Some(g) = gauge("rseq_trace_probes_attached", "Uprobes attached.", &[]) {
            g.with_label_values::<&str>(&[]).set(view.probes as i64);
            families.extend(g.collect());
        }
        let skipped = &view.skipped;
        if let Some(g) = gauge(
            "rseq_trace_sections",
            "Critical sections found, by state.",
            &["state"],
        ) {
            g.with_label_values(&["traced"])
                .set(view.traced_sections as i64);
            g.with_label_values(&["skipped"]).set(skipped.len() as i64);
            families.extend(g.collect());
        }
        if let Some(g) = gauge(
            "rseq_trace_sections_skipped",
            "Critical sections not traced, by reason.",
            &["reason"],
        ) {
            for reason in crate::catalog::probe_plan::Refusal::LABELS {
                let n = skipped.iter().filter(|r| **r == reason).count();
                g.with_label_values(&[reason]).set(n as i64);
            }
            families.extend(g.collect());
        }
        if let Some(g) = gauge(
            "rseq_trace_kernel_restarts_counted",
            "1 when the rseq:rseq_ip_fixup tracepoint is attached.",
            &[],
        ) {
            g.with_label_values::<&str>(&[])
                .set(view.restarts_counted as i64);
            families.extend(g.collect());
        }
        if let Ok(c) = IntCounterVec::new(
            Opts::new(
                "rseq_trace_map_read_errors_total",
                "Failed reads of the BPF maps during scrapes.",
            ),
            &[],
        ) {
            c.with_label_values::<&str>(&[])
                .inc_by(self.read_errors.load(Ordering::Relaxed));
            families.extend(c.collect());
        }
        if view.mode == Mode::Sampled {
            families.extend(sampling_families(&view.sampling));
        }
        families.extend(plain_gauge(
            "rseq_trace_poll_gap_max_seconds",
            "Longest time between two passes of the tracer's poll loop (exits, holds at library loads, new mappings) since start; about 0.05 when nothing delays it.",
            view.poll_gap_max.as_secs_f64(),
        ));
        families.extend(plain_gauge(
            "rseq_trace_scrape_duration_seconds",
            "Time the previous scrape took to read the BPF maps.",
            self.last_read_ns.load(Ordering::Relaxed) as f64 / 1e9,
        ));
        families
    }
}

impl Collector for Exporter {
    /// Unchecked collector: its series come and go with the traced processes.
    fn desc(&self) -> Vec<&Desc> {
        Vec::new()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let Some(view) = self.read() else {
            return Vec::new();
        };
        let mut families = self.health_families(&view);
        families.extend(self.section_families(&view));
        families
    }
}

/// A gauge without labels.
fn plain_gauge(name: &str, help: &str, value: f64) -> Vec<MetricFamily> {
    let Ok(g) = GaugeVec::new(Opts::new(name, help), &[]) else {
        return Vec::new();
    };
    g.with_label_values::<&str>(&[]).set(value);
    g.collect()
}

/// `rseq_kernel_restarts_total{cause}`: kernel restarts by cause (the section's own
/// CPU-mismatch aborts are `rseq_aborts_total` minus the sum of these).
fn restart_families(series: &BTreeMap<Vec<String>, Tally>, names: &[&str]) -> Vec<MetricFamily> {
    let mut names = names.to_vec();
    names.push("cause");
    let Ok(vec) = IntCounterVec::new(
        Opts::new(
            "rseq_kernel_restarts_total",
            "Aborts caused by the kernel, from the rseq_ip_fixup tracepoint, by cause: preemption, migration (resumed on another CPU), signal, other, probe (made by rseq-trace's own entry probe on the descriptor store; untraced they would not happen).",
        ),
        &names,
    ) else {
        return Vec::new();
    };
    for (labels, t) in series {
        for (cause, n) in t.abort_causes.named() {
            if cause == "cpu_mismatch" || cause == PROBE_MOVE {
                continue; // not kernel restarts
            }
            let mut values: Vec<&str> = labels.iter().map(String::as_str).collect();
            values.push(cause);
            vec.with_label_values(&values).inc_by(n);
        }
    }
    vec.collect()
}

/// Sampled mode: the extrapolated entries and commits, as gauges (an estimate may go down as
/// windows add evidence, which a counter must never do), their uncertainty, and the exact count
/// of entries seen in windows.
/// The attempts the abort ratio is measured on, as counters (so that Prometheus computes the
/// ratio over any range with `rate()`), and the ratio's bounds since tracing began.
fn ratio_families(
    series: &BTreeMap<Vec<String>, Tally>,
    names: &[&str],
    mode: Mode,
) -> Vec<MetricFamily> {
    let mut families = Vec::new();
    let counters: [CounterSpec; 2] = [
        ("rseq_ratio_entries_total", "Attempts the abort ratio is measured on: every attempt in exact mode, those entered while a sampling window was open in sampled mode (exact).", |t| t.entries),
        ("rseq_ratio_aborts_total", "Aborts of those attempts (in sampled mode: aborts while a window was open, except those rseq-trace's own entry probe made). rate(rseq_ratio_aborts_total) / rate(rseq_ratio_entries_total) is the abort ratio.", |t| t.window_aborts),
    ];
    for (name, help, value) in counters {
        if let Ok(vec) = IntCounterVec::new(Opts::new(name, help), names) {
            for (labels, t) in series {
                let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
                // Exact mode: every abort is of a counted attempt.
                let v = if mode == Mode::Exact && name == "rseq_ratio_aborts_total" {
                    t.aborts
                } else {
                    value(t)
                };
                vec.with_label_values(&labels).inc_by(v);
            }
            families.extend(vec.collect());
        }
    }
    let bounds: [GaugeSpec; 2] = [
        ("rseq_abort_ratio_lower", "Lower bound (95% confidence) of the abort ratio since tracing began; equal to the ratio in exact mode.", |t| t.ratio.map_or(f64::NAN, |r| r.low)),
        ("rseq_abort_ratio_upper", "Upper bound (95% confidence) of the abort ratio since tracing began; equal to the ratio in exact mode.", |t| t.ratio.map_or(f64::NAN, |r| r.high)),
    ];
    for (name, help, value) in bounds {
        if let Ok(vec) = GaugeVec::new(Opts::new(name, help), names) {
            for (labels, t) in series {
                let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
                vec.with_label_values(&labels)
                    .set(value(&t.with_ratio(mode, None)));
            }
            families.extend(vec.collect());
        }
    }
    families
}

fn estimate_families(series: &BTreeMap<Vec<String>, Tally>, names: &[&str]) -> Vec<MetricFamily> {
    let mut families = Vec::new();
    let gauges: [GaugeSpec; 5] = [
        ("rseq_entries_estimated", "Sampled mode: estimated attempts entered since tracing began (extrapolated from sampling windows by the exact aborts and cancels).", |t| t.entries as f64),
        ("rseq_commits_estimated", "Sampled mode: estimated attempts committed since tracing began.", |t| t.commits as f64),
        ("rseq_aborts_estimated", "Sampled mode: aborts since tracing began, estimated where abort probes were moved into the sampling windows (their cost called for it), else as counted.", |t| t.aborts as f64),
        ("rseq_cancels_estimated", "Sampled mode: cancels since tracing began, estimated where cancel probes were moved into the sampling windows (their cost called for it), else as counted.", |t| t.cancels as f64),
        ("rseq_estimate_uncertainty", "Sampled mode: half-width (3 standard errors) of the interval around rseq_entries_estimated and rseq_commits_estimated; NaN when no abort or cancel was seen in a window yet.", |t| {
            t.estimate.and_then(|e| e.uncertainty).map_or(f64::NAN, |u| u as f64)
        }),
    ];
    let estimated: Vec<(Vec<&str>, Tally)> = series
        .iter()
        .map(|(labels, raw)| {
            (
                labels.iter().map(String::as_str).collect(),
                crate::sampling::estimate::extrapolate(raw),
            )
        })
        .collect();
    for (name, help, value) in gauges {
        if let Ok(vec) = GaugeVec::new(Opts::new(name, help), names) {
            for (labels, t) in &estimated {
                vec.with_label_values(labels).set(value(t));
            }
            families.extend(vec.collect());
        }
    }
    if let Ok(vec) = IntCounterVec::new(
        Opts::new(
            "rseq_sampled_entries_total",
            "Sampled mode: attempts entered while a sampling window was open (exact).",
        ),
        names,
    ) {
        for (labels, raw) in series {
            let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
            vec.with_label_values(&labels).inc_by(raw.entries);
        }
        families.extend(vec.collect());
    }
    families
}

/// Sampled mode's windows and their estimated cost.
fn sampling_families(stats: &SamplingStats) -> Vec<MetricFamily> {
    let mut families = Vec::new();
    let specs: [(&str, &str, f64); 4] = [
        (
            "rseq_trace_sampling_windows_total",
            "Sampling windows opened.",
            stats.windows as f64,
        ),
        (
            "rseq_trace_sampling_window_seconds_total",
            "Time sampling windows were open.",
            stats.window_seconds,
        ),
        (
            "rseq_trace_sampling_probe_cost_seconds_total",
            "Estimated CPU time the entry probes cost the traced threads.",
            stats.probe_cost_seconds,
        ),
        (
            "rseq_trace_sampling_traced_cpu_seconds_total",
            "CPU time the traced processes used while sampled (the budget's base).",
            stats.traced_cpu_seconds,
        ),
    ];
    for (name, help, value) in specs {
        if let Ok(c) = prometheus::CounterVec::new(Opts::new(name, help), &[]) {
            c.with_label_values::<&str>(&[]).inc_by(value);
            families.extend(c.collect());
        }
    }
    families
}
