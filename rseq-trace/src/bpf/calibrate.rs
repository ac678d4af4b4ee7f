//! What one probe hit costs the traced threads on this machine, measured at start-up rather
//! than assumed: sampled mode budgets its windows with it.
//!
//! A child process (this binary again, [`SUBCOMMAND`]) calls three tiny functions many times
//! each: one unprobed (the floor), one whose first instruction is a 5-byte nop (the probe of a
//! marker, which kernels turn into a call) and one whose first instruction is ordinary (the
//! probe of a descriptor store, a trap and a single step). The agent attaches `rseq_event` to
//! the two in that child only, with a cookie of no section, and the child reports its own
//! thread CPU time for each loop: in-kernel probe handling is charged to the thread that hit
//! the probe, so the difference per call is what a traced thread pays per hit, however busy the
//! machine is. The child's entries are then dropped from the maps.

use std::{
    io::{BufRead, BufReader, Write},
    process::{Command, Stdio},
    time::Duration,
};

use rseq_common::{Cookie, Event};

use super::Tracer;
use crate::{error::AttachError, session::procfs};

/// The hidden subcommand the calibration child runs as.
pub const SUBCOMMAND: &str = "calibration-target";
/// Calls per function and round.
const CALLS: u32 = 2_000;
/// Rounds; the median is kept.
const ROUNDS: usize = 3;
/// Section id of the calibration cookies: none of the catalog's.
const NO_SECTION: u32 = (1 << 24) - 1;

/// The cost of one probe hit, by kind.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct HitCosts {
    /// A probe on a 5-byte nop (a marker); in JSON, `nop_us`.
    #[serde(rename = "nop_us", serialize_with = "micros")]
    pub nop: Duration,
    /// A probe on an ordinary instruction (a trap and a single step); in JSON, `trap_us`.
    #[serde(rename = "trap_us", serialize_with = "micros")]
    pub trap: Duration,
    /// Whether these were measured here (else the figures of REFERENCE §3).
    pub measured: bool,
}

impl HitCosts {
    /// REFERENCE §3, on a 2-vCPU VM: what is assumed when measuring fails.
    pub const ASSUMED: HitCosts = HitCosts {
        nop: Duration::from_micros(1),
        trap: Duration::from_micros(10),
        measured: false,
    };
}

#[cfg(target_arch = "x86_64")]
core::arch::global_asm!(
    ".pushsection .text.rseq_trace_calibration,\"ax\",@progbits",
    ".globl rseq_trace_calibration_none",
    "rseq_trace_calibration_none:",
    "xor eax, eax",
    "ret",
    ".globl rseq_trace_calibration_nop5",
    "rseq_trace_calibration_nop5:",
    ".byte 0x0f, 0x1f, 0x44, 0x00, 0x00",
    "ret",
    ".globl rseq_trace_calibration_plain",
    "rseq_trace_calibration_plain:",
    "xor eax, eax",
    "ret",
    ".popsection",
);

#[cfg(target_arch = "aarch64")]
core::arch::global_asm!(
    ".pushsection .text.rseq_trace_calibration,\"ax\",@progbits",
    ".globl rseq_trace_calibration_none",
    "rseq_trace_calibration_none:",
    "mov x9, x9",
    "ret",
    ".globl rseq_trace_calibration_nop5",
    "rseq_trace_calibration_nop5:",
    "nop",
    "ret",
    ".globl rseq_trace_calibration_plain",
    "rseq_trace_calibration_plain:",
    "mov x9, x9",
    "ret",
    ".popsection",
);

extern "C" {
    fn rseq_trace_calibration_none();
    fn rseq_trace_calibration_nop5();
    fn rseq_trace_calibration_plain();
}

/// The child's side: prints the functions' addresses, waits for a line on stdin, then prints
/// the thread CPU nanoseconds of [`CALLS`] calls of each, per round.
pub fn run_target() -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    let fns: [unsafe extern "C" fn(); 3] = [
        rseq_trace_calibration_none,
        rseq_trace_calibration_nop5,
        rseq_trace_calibration_plain,
    ];
    writeln!(out, "{} {}", fns[1] as usize, fns[2] as usize)?;
    out.flush()?;
    let mut go = String::new();
    std::io::stdin().read_line(&mut go)?;
    for _ in 0..ROUNDS {
        let mut line = Vec::new();
        for f in fns {
            let start = thread_cpu_ns();
            for _ in 0..CALLS {
                // SAFETY: the functions take nothing, touch nothing and return.
                unsafe { f() };
            }
            line.push((thread_cpu_ns() - start).to_string());
        }
        writeln!(out, "{}", line.join(" "))?;
    }
    out.flush()
}

/// The numbers on the child's next line.
fn numbers<T: std::str::FromStr>(from: &mut impl BufRead) -> Result<Vec<T>, AttachError> {
    let mut line = String::new();
    from.read_line(&mut line)
        .map_err(|e| AttachError::Calibration(e.to_string()))?;
    Ok(line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect())
}

/// A duration in JSON: microseconds.
fn micros<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64() * 1e6)
}

fn thread_cpu_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

impl Tracer {
    /// Measures [`HitCosts`] with a child of this binary; the assumed figures, with a
    /// warning, when that fails.
    pub fn calibrate(&mut self) -> HitCosts {
        match self.measure_hits() {
            Ok(costs) => costs,
            Err(e) => {
                tracing::warn!(
                    "cannot measure what a probe hit costs here ({e}); assuming {:?} per trap and {:?} per nop",
                    HitCosts::ASSUMED.trap,
                    HitCosts::ASSUMED.nop
                );
                HitCosts::ASSUMED
            }
        }
    }

    fn measure_hits(&mut self) -> Result<HitCosts, AttachError> {
        let io = |e: std::io::Error| AttachError::Calibration(e.to_string());
        let mut child = Command::new("/proc/self/exe")
            .arg(SUBCOMMAND)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(io)?;
        let pid = child.id();
        let result = self.measure_in(&mut child);
        let _ = child.kill();
        let _ = child.wait();
        let keys: Vec<_> = self
            .maps
            .counts()
            .unwrap_or_default()
            .into_keys()
            .filter(|k| k.tgid == pid)
            .collect();
        self.maps.forget_process(pid, &keys);
        result
    }

    fn measure_in(&mut self, child: &mut std::process::Child) -> Result<HitCosts, AttachError> {
        let bad = |what: &str| AttachError::Calibration(what.to_owned());
        let pid = child.id();
        let mut stdout = BufReader::new(child.stdout.take().ok_or_else(|| bad("no stdout"))?);
        let addrs: Vec<u64> = numbers(&mut stdout)?;
        let [nop, plain] = addrs[..] else {
            return Err(bad("the child gave no addresses"));
        };
        let (path, offsets) = procfs::file_offsets(pid, &[nop, plain])
            .ok_or_else(|| bad("the child's code is not in a mapped file"))?;
        let cookies = [
            Cookie::new(NO_SECTION, Event::Entry).encode(),
            Cookie::new(NO_SECTION, Event::Entry).encode(),
        ];
        let _probes = self.attach_probes(&path, pid, &offsets, &cookies)?;
        let mut stdin = child.stdin.take().ok_or_else(|| bad("no stdin"))?;
        writeln!(stdin, "go").map_err(|e| bad(&e.to_string()))?;
        let mut rounds: Vec<[f64; 3]> = Vec::new();
        for _ in 0..ROUNDS {
            let ns: Vec<f64> = numbers(&mut stdout)?;
            let [none, nop, plain] = ns[..] else {
                return Err(bad("the child's figures are incomplete"));
            };
            rounds.push([none, nop, plain]);
        }
        let per_hit = |i: usize| {
            let mut v: Vec<f64> = rounds
                .iter()
                .map(|r| ((r[i] - r[0]) / f64::from(CALLS)).max(0.0))
                .collect();
            v.sort_by(f64::total_cmp);
            Duration::from_nanos(v[v.len() / 2] as u64)
        };
        let costs = HitCosts {
            nop: per_hit(1),
            trap: per_hit(2),
            measured: true,
        };
        tracing::info!(
            "a probe hit costs the traced thread {:.2} µs on a nop, {:.2} µs on a trap (measured)",
            costs.nop.as_secs_f64() * 1e6,
            costs.trap.as_secs_f64() * 1e6
        );
        Ok(costs)
    }
}
