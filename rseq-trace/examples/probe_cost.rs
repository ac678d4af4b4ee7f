//! What one probe hit costs the traced program, for rseq-trace's `rseq_event` (doing its real
//! work: an Entry of section 0 in a process marked traced), for the empty program `rseq_empty`
//! (the floor: what the kernel's uprobe machinery alone costs), and for bpftrace's `count()` on
//! the same instruction, each on an ordinary instruction (trap and single step) and on a 5-byte
//! nop (which the kernel optimizes into a call). Run by `bench/probe_cost.sh`, which builds the
//! target from `bench/probe_cost_target.c`.
//!
//! Every configuration runs in every round, rounds interleaved, so that drift in the machine
//! hits all alike; the table shows each configuration's median. Cost per hit is the traced
//! run's time per call minus the untraced run's, and each program's cost is also given as a
//! ratio to the empty program's on the same instruction and the same kind of link: the agent
//! attaches through uprobe multi links, bpftrace through perf-event links, and the kernel runs
//! programs from a different handler for each, so `rseq_empty` is measured in both.
//!
//! Usage (root): probe_cost --target PATH [--seconds S] [--rounds R]

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{bail, Context as _};
use clap::Parser;
use rseq_common::{Cookie, Event};
use rseq_trace::bench_rig::{symbol_file_offset, LinkKind, Rig};

#[derive(Parser)]
struct Args {
    /// The benchmark target built from bench/probe_cost_target.c.
    #[arg(long)]
    target: PathBuf,
    /// Seconds each run calls the probed function.
    #[arg(long, default_value_t = 1.0)]
    seconds: f64,
    /// Interleaved rounds; the table shows the median.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
}

const SITES: [&str; 2] = ["ordinary", "nop5"];

/// What is attached to the probed instruction.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Probe {
    Untraced,
    /// The floor, in a multi link as the agent attaches.
    EmptyMulti,
    /// rseq-trace's program doing its work, in a multi link as the agent attaches it.
    EventMulti,
    /// The floor in a perf-event link, the kind bpftrace attaches.
    EmptyPerf,
    Bpftrace,
}

impl Probe {
    const ALL: [Probe; 5] = [
        Probe::Untraced,
        Probe::EmptyMulti,
        Probe::EventMulti,
        Probe::EmptyPerf,
        Probe::Bpftrace,
    ];

    fn label(self) -> &'static str {
        match self {
            Probe::Untraced => "none (untraced)",
            Probe::EmptyMulti => "rseq_empty multi",
            Probe::EventMulti => "rseq_event multi",
            Probe::EmptyPerf => "rseq_empty perf",
            Probe::Bpftrace => "bpftrace count()",
        }
    }

    /// The empty program on the same kind of link: what this one's cost is compared with.
    fn floor(self) -> Option<Probe> {
        match self {
            Probe::Untraced => None,
            Probe::EmptyMulti | Probe::EventMulti => Some(Probe::EmptyMulti),
            Probe::EmptyPerf | Probe::Bpftrace => Some(Probe::EmptyPerf),
        }
    }

    /// (program, link) for the rig.
    fn rig(self) -> Option<(&'static str, LinkKind)> {
        match self {
            Probe::EmptyMulti => Some(("rseq_empty", LinkKind::Multi)),
            Probe::EventMulti => Some(("rseq_event", LinkKind::Multi)),
            Probe::EmptyPerf => Some(("rseq_empty", LinkKind::Perf)),
            Probe::Untraced | Probe::Bpftrace => None,
        }
    }
}

/// One run: time per call, and hits the probe counted per call where it counts them.
struct Run {
    ns_per_call: f64,
    hits_per_call: Option<f64>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let target = args
        .target
        .canonicalize()
        .with_context(|| format!("target {}", args.target.display()))?;
    let bpftrace = which("bpftrace");
    let probes: Vec<Probe> = Probe::ALL
        .into_iter()
        .filter(|p| *p != Probe::Bpftrace || bpftrace.is_some())
        .collect();
    let mut runs: BTreeMap<(&str, Probe), Vec<Run>> = BTreeMap::new();
    for round in 1..=args.rounds {
        eprintln!("probe cost: round {round}/{}", args.rounds);
        for site in SITES {
            for &probe in &probes {
                let run = match probe {
                    Probe::Bpftrace => {
                        run_bpftrace(bpftrace.as_deref().unwrap(), &target, site, args.seconds)?
                    }
                    _ => run_rig(&target, site, probe, args.seconds)?,
                };
                runs.entry((site, probe)).or_default().push(run);
            }
        }
    }

    println!(
        "probe cost per hit: {} s per run, median of {} interleaved rounds; µs/hit = traced ns/call - untraced ns/call;",
        args.seconds, args.rounds
    );
    println!(
        "vs empty = µs/hit / rseq_empty's µs/hit on the same kind of link (multi: as the agent attaches; perf: as bpftrace does),"
    );
    println!("median and range of the ratios within each round; spread = (max - min) / median of ns/call");
    println!(
        "{:<9} {:<17} {:>10} {:>7} {:>9} {:>9}  vs empty (range)",
        "site", "probe", "ns/call", "spread", "hits/call", "µs/hit"
    );
    for site in SITES {
        let median_ns = |p: Probe| {
            runs.get(&(site, p))
                .map(|r| median(r.iter().map(|r| r.ns_per_call)))
        };
        let base = median_ns(Probe::Untraced).unwrap_or(0.0);
        let untraced = runs.get(&(site, Probe::Untraced));
        for probe in Probe::ALL {
            let Some(rs) = runs.get(&(site, probe)) else {
                println!("{site:<9} {:<17} {:>10}", probe.label(), "not installed");
                continue;
            };
            let ns: Vec<f64> = rs.iter().map(|r| r.ns_per_call).collect();
            let med = median(ns.iter().copied());
            let spread = (max(&ns) - min(&ns)) / med * 100.0;
            let hits = rs
                .iter()
                .filter_map(|r| r.hits_per_call)
                .reduce(f64::min)
                .map_or("-".to_owned(), |h| format!("{h:.3}"));
            let (cost, ratio) = match probe.floor() {
                None => ("-".to_owned(), "-".to_owned()),
                Some(floor) => {
                    let cost = med - base;
                    // Paired by round: each round ran every configuration back to back, so
                    // the ratio within a round cancels the machine's slower drift.
                    let ratios: Vec<f64> = match (runs.get(&(site, floor)), untraced) {
                        (Some(fl), Some(un)) => rs
                            .iter()
                            .zip(fl)
                            .zip(un)
                            .map(|((r, f), u)| {
                                (r.ns_per_call - u.ns_per_call) / (f.ns_per_call - u.ns_per_call)
                            })
                            .collect(),
                        _ => Vec::new(),
                    };
                    let ratio = if ratios.is_empty() {
                        "-".to_owned()
                    } else {
                        format!(
                            "{:.2}x {:.2}-{:.2}",
                            median(ratios.iter().copied()),
                            min(&ratios),
                            max(&ratios)
                        )
                    };
                    (format!("{:.3}", cost / 1000.0), ratio)
                }
            };
            println!(
                "{site:<9} {:<17} {med:>10.1} {:>6.1}% {hits:>9} {cost:>9}  {ratio}",
                probe.label(),
                spread
            );
        }
    }
    Ok(())
}

/// Starts the target waiting on stdin, attaches the probe with rseq-trace's object, lets it run.
fn run_rig(target: &Path, site: &str, probe: Probe, seconds: f64) -> anyhow::Result<Run> {
    let mut child = Command::new(target)
        .args([site, &seconds.to_string(), "--wait"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {}", target.display()))?;
    let pid = child.id();
    let mut out = BufReader::new(child.stdout.take().context("no stdout")?);
    let mut line = String::new();
    out.read_line(&mut line)?;
    if line.trim() != "ready" {
        bail!("target said {line:?} instead of ready");
    }
    let rig = match probe.rig() {
        None => None,
        Some((program, link)) => {
            let symbol = format!("site_{site}_probe");
            let offset = symbol_file_offset(target, &symbol)?
                .with_context(|| format!("no symbol {symbol} in {}", target.display()))?;
            let mut rig = Rig::load()?;
            let cookie = Cookie::new(0, Event::Entry).encode();
            rig.attach(program, link, target, offset, cookie, pid)?;
            // rseq_event adds an untraced process to the map on its first hit; marking it
            // first, as the agent does for --pid, keeps every timed hit on the usual path.
            rig.trace_process(pid)?;
            Some(rig)
        }
    };
    child.stdin.take().context("no stdin")?.write_all(b"go\n")?;
    line.clear();
    out.read_line(&mut line)?;
    let status = child.wait()?;
    if !status.success() {
        bail!("target exited with {status}");
    }
    let (warmup, calls, ns_per_call) = parse_result(&line)?;
    let hits_per_call = match (&rig, probe) {
        (Some(rig), Probe::EventMulti) => {
            Some(rig.entries()?.saturating_sub(warmup) as f64 / calls as f64)
        }
        _ => None,
    };
    Ok(Run {
        ns_per_call,
        hits_per_call,
    })
}

/// bpftrace starts the target itself (`-c`) once its probe is attached, and prints the count
/// when the target exits.
fn run_bpftrace(bpftrace: &Path, target: &Path, site: &str, seconds: f64) -> anyhow::Result<Run> {
    let script = format!(
        "uprobe:{}:site_{site}_probe {{ @hits = count(); }}",
        target.display()
    );
    let output = Command::new(bpftrace)
        .args(["-c", &format!("{} {site} {seconds}", target.display())])
        .args(["-e", &script])
        .stdin(Stdio::null())
        .output()
        .context("cannot run bpftrace")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "bpftrace failed ({}): {}{}",
            output.status,
            stdout,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let result = stdout
        .lines()
        .find(|l| l.starts_with("warmup "))
        .with_context(|| format!("no result from the target under bpftrace: {stdout}"))?;
    let (warmup, calls, ns_per_call) = parse_result(result)?;
    let hits = stdout
        .lines()
        .find_map(|l| l.strip_prefix("@hits: "))
        .and_then(|h| h.trim().parse::<u64>().ok());
    Ok(Run {
        ns_per_call,
        hits_per_call: hits.map(|h| h.saturating_sub(warmup) as f64 / calls as f64),
    })
}

/// "warmup W calls N ns_per_call X" -> (W, N, X).
fn parse_result(line: &str) -> anyhow::Result<(u64, u64, f64)> {
    let words: Vec<&str> = line.split_whitespace().collect();
    match words.as_slice() {
        ["warmup", warmup, "calls", calls, "ns_per_call", ns] => {
            Ok((warmup.parse()?, calls.parse()?, ns.parse()?))
        }
        _ => bail!("unexpected target output {line:?}"),
    }
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn min(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::NEG_INFINITY, f64::max)
}
