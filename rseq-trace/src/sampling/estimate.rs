//! Sampled mode's extrapolation: entries (and so commits) from the entries counted in windows,
//! scaled by the aborts and cancels, which are counted exactly all the time.
//!
//! Why not scale by time: while the entry probes are attached, the traced threads run hundreds
//! of times slower (every entry costs a trap), so entries per second inside a window say little
//! about entries per second outside. The chance that an attempt aborts or cancels, though, does
//! not depend on the probe, which sits before the section: so the share p of attempts that end
//! in an abort or cancel, measured on the attempts the windows saw, turns the exact count of
//! aborts and cancels outside the windows into a count of entries. The estimate is unbiased as
//! long as what makes sections abort arrives per unit of time or per attempt (preemption,
//! migration, the program's own state), not per unit of the traced program's progress that the
//! probes slow down. Threads that share per-CPU data break it too: when whether an attempt
//! cancels depends on how far the other threads got (a stack that several threads push to and
//! pop from), the probes, which slow some sections more than others inside windows, change
//! the share itself.

use serde::Serialize;

use crate::snapshot::counts::{AbortCauses, Tally};

/// How many standard errors the reported uncertainty spans (99.7% for a normal error).
pub const SIGMAS: f64 = 3.0;
/// Fewer aborts and cancels than this in windows make no estimate: the normal approximation
/// behind the uncertainty does not hold for a handful of events, and a few aborts that the
/// windows themselves cause (attaching rewrites code pages) would dominate.
pub const MIN_REFERENCES: u64 = 20;

/// How good an estimated `entries` (and `commits`) is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Estimate {
    /// Entries counted while windows were open (exact).
    pub sampled_entries: u64,
    /// Aborts plus cancels while windows were open: what the extrapolation rests on.
    pub sampled_references: u64,
    /// Half-width of the interval around `entries` and `commits` ([`SIGMAS`] standard errors);
    /// `None` while windows saw fewer than [`MIN_REFERENCES`] aborts and cancels, and `entries`
    /// is then only what the windows counted (a lower bound).
    pub uncertainty: Option<u64>,
    /// Where some cancels were counted in the windows only: the half-width around `cancels`
    /// (their own sampling error and that of the entries they scale with), and so around
    /// `commits` too.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cancels_uncertainty: Option<u64>,
    /// Where some aborts were counted in the windows only: the half-width around `aborts`, as
    /// for cancels.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aborts_uncertainty: Option<u64>,
    /// The exits as counted, before the sampled ones were scaled ([`Tally::raw`]).
    #[serde(skip)]
    pub counted: Counted,
}

/// A tally's aborts and cancels as counted, which extrapolation replaces.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counted {
    /// As counted: `Tally::aborts`.
    pub aborts: u64,
    /// As counted: `Tally::cancels`.
    pub cancels: u64,
    /// As counted: `Tally::kernel_restarts`.
    pub kernel_restarts: u64,
    /// As counted: `Tally::abort_causes`.
    pub abort_causes: AbortCauses,
}

impl Estimate {
    /// `[entries - uncertainty, entries + uncertainty]`, `None` while there is no estimate
    /// (only a lower bound).
    pub fn entries_bounds(&self, entries: u64) -> Option<[u64; 2]> {
        self.uncertainty.map(|u| around(entries, u))
    }

    /// The same for commits, whose uncertainty also has the estimated cancels' part.
    pub fn commits_bounds(&self, commits: u64) -> Option<[u64; 2]> {
        let u = self.uncertainty? as f64;
        let c = self.cancels_uncertainty.unwrap_or(0) as f64;
        let a = self.aborts_uncertainty.unwrap_or(0) as f64;
        Some(around(
            commits,
            (u * u + c * c + a * a).sqrt().ceil() as u64,
        ))
    }
}

/// Entries and commits of a sampled-mode tally, extrapolated, with its [`Estimate`].
pub fn extrapolate(raw: &Tally) -> Tally {
    let sampled = raw.entries;
    // Aborts our own entry probe made happen only while it is attached: no reference.
    let ours = raw.abort_causes.probe + raw.abort_causes.probe_move;
    let references = raw.aborts - ours.min(raw.aborts) + raw.cancels;
    // The windows' aborts of sections whose aborts are sampled are no reference: they are
    // what is scaled.
    let in_windows =
        (raw.window_aborts.saturating_sub(raw.sampled_aborts) + raw.window_cancels).min(references);
    let (entries, uncertainty) = match estimate_entries(sampled, in_windows, references) {
        Some((e, sigma)) => (e.round() as u64, Some((SIGMAS * sigma).ceil() as u64)),
        None => (sampled, None),
    };
    // Aborts and cancels counted in windows only scale like the entries the windows saw.
    let scale = |estimated: bool, count: u64| {
        estimated.then(|| scale_sample(count, sampled, entries, uncertainty))
    };
    let cancels = scale(raw.cancels_estimated, raw.sampled_cancels);
    let aborts = scale(raw.aborts_estimated, raw.sampled_aborts);
    let (extra_cancels, extra_aborts) = (cancels.map_or(0, |c| c.0), aborts.map_or(0, |a| a.0));
    let ended = references + extra_cancels + extra_aborts;
    // Entries cannot be fewer than the attempts seen to end.
    let entries = entries.max(ended);
    let mut abort_causes = raw.abort_causes;
    let kernel = add_shares(&mut abort_causes, &raw.sampled_causes, extra_aborts);
    Tally {
        entries,
        commits: entries - ended,
        aborts: raw.aborts + extra_aborts,
        kernel_restarts: raw.kernel_restarts + kernel,
        abort_causes,
        cancels: raw.cancels + extra_cancels,
        estimate: Some(Estimate {
            sampled_entries: sampled,
            sampled_references: in_windows,
            uncertainty,
            cancels_uncertainty: cancels.and_then(|c| c.1),
            aborts_uncertainty: aborts.and_then(|a| a.1),
            counted: Counted {
                aborts: raw.aborts,
                cancels: raw.cancels,
                kernel_restarts: raw.kernel_restarts,
                abort_causes: raw.abort_causes,
            },
        }),
        ..*raw
    }
}

/// What `count` events seen in windows only stand for, given the `sampled` entries of the
/// windows and the estimated `entries` (± `uncertainty`): (events, their uncertainty). They
/// scale like the entries: N = N_w x E / S, with a relative error from the entries' and from
/// N_w's own (a count of events: 1 / sqrt(N_w)). Without an estimate of the entries there is
/// nothing to scale by: the windows' own events are a lower bound (`Tally::cancels_lower_bound`,
/// `Tally::aborts_lower_bound`).
fn scale_sample(
    count: u64,
    sampled: u64,
    entries: u64,
    uncertainty: Option<u64>,
) -> (u64, Option<u64>) {
    let Some(u) = uncertainty.filter(|_| sampled > 0) else {
        return (count, None);
    };
    let scaled = count as f64 * entries as f64 / sampled as f64;
    let relative_entries = u as f64 / entries.max(1) as f64;
    let relative_count = SIGMAS / (count.max(1) as f64).sqrt();
    let u = scaled * (relative_entries.powi(2) + relative_count.powi(2)).sqrt();
    (scaled.round() as u64, Some(u.ceil() as u64))
}

/// Adds `total` aborts to `causes`, divided as the `sample` saw them divided (our own probe's
/// restarts left out); returns how many of them are kernel restarts.
fn add_shares(causes: &mut AbortCauses, sample: &AbortCauses, total: u64) -> u64 {
    let seen = sample.preemption + sample.migration + sample.signal + sample.other;
    let all = seen + sample.cpu_mismatch;
    if all == 0 || total == 0 {
        return 0;
    }
    let share = |n: u64| (n as f64 * total as f64 / all as f64).round() as u64;
    let (p, m, s, o) = (
        share(sample.preemption),
        share(sample.migration),
        share(sample.signal),
        share(sample.other),
    );
    let kernel = (p + m + s + o).min(total);
    causes.preemption += p;
    causes.migration += m;
    causes.signal += s;
    causes.other += o;
    causes.cpu_mismatch += total - kernel;
    kernel
}

/// `[value - u, value + u]`, not below 0.
fn around(value: u64, u: u64) -> [u64; 2] {
    [value.saturating_sub(u), value.saturating_add(u)]
}

/// (estimated entries, standard error) from `sampled` entries and `in_windows` of the
/// `references` aborts and cancels; `None` without a reference event in a window.
///
/// With p = in_windows / sampled, the attempts outside windows are R_out / p, where
/// R_out = references - in_windows. Its variance has two parts: R_out itself given the true
/// attempts (binomial: R_out (1 - p) / p^2) and the error of p (relative variance
/// (1 - p) / in_windows, delta method).
pub fn estimate_entries(sampled: u64, in_windows: u64, references: u64) -> Option<(f64, f64)> {
    if in_windows < MIN_REFERENCES || sampled == 0 {
        return None;
    }
    let p = (in_windows as f64 / sampled as f64).min(1.0);
    let outside = references.saturating_sub(in_windows) as f64;
    let extra = outside / p;
    let variance = outside * (1.0 - p) / (p * p) + extra * extra * (1.0 - p) / in_windows as f64;
    Some((sampled as f64 + extra, variance.sqrt()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_over_everything_is_exact() {
        let (e, sigma) = estimate_entries(1000, MIN_REFERENCES, MIN_REFERENCES).unwrap();
        assert_eq!((e, sigma), (1000.0, 0.0));
    }

    #[test]
    fn scales_by_the_reference_ratio() {
        // 1% of attempts abort or cancel; windows saw 100 of the 1000 references.
        let (e, sigma) = estimate_entries(10_000, 100, 1000).unwrap();
        assert!((e - 100_000.0).abs() < 1e-6, "{e}");
        // About 10% relative error from 100 reference events.
        assert!((sigma / e - 0.1).abs() < 0.01, "{sigma}");
    }

    #[test]
    fn without_a_reference_in_windows_there_is_no_estimate() {
        assert!(estimate_entries(500, 0, 10).is_none());
        assert!(estimate_entries(500, MIN_REFERENCES - 1, 100).is_none());
        let raw = Tally {
            entries: 500,
            aborts: 10,
            ..Default::default()
        };
        let t = extrapolate(&raw);
        assert_eq!((t.entries, t.commits), (500, 490));
        assert_eq!(t.estimate.unwrap().uncertainty, None);
    }

    #[test]
    fn commits_are_entries_minus_every_abort_and_cancel() {
        let raw = Tally {
            entries: 10_000,
            aborts: 600,
            cancels: 400,
            window_aborts: 60,
            window_cancels: 40,
            ..Default::default()
        };
        let t = extrapolate(&raw);
        assert_eq!(t.entries, 100_000);
        assert_eq!(t.commits, 99_000);
        assert!(t.estimate.unwrap().uncertainty.unwrap() > 0);
    }

    #[test]
    fn cancels_counted_in_windows_only_scale_like_entries() {
        let raw = Tally {
            entries: 10_000,
            aborts: 1000,
            window_aborts: 100,
            sampled_cancels: 2000,
            cancels_estimated: true,
            ..Default::default()
        };
        let t = extrapolate(&raw);
        assert_eq!((t.entries, t.cancels, t.commits), (100_000, 20_000, 79_000));
        assert!(t.cancels_estimated);
    }

    /// The estimator against a simulated program whose attempts end in an abort or cancel with
    /// a fixed chance: the truth falls within the reported uncertainty.
    #[test]
    fn covers_the_truth_in_simulation() {
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut uniform = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 11) as f64 / (1u64 << 53) as f64
        };
        let mut misses = 0;
        for _ in 0..50 {
            let (truth, p, duty) = (200_000u64, 0.004, 0.05);
            let (mut sampled, mut in_windows, mut references) = (0, 0, 0);
            for i in 0..truth {
                let in_window = (i % 1000) as f64 / 1000.0 < duty;
                let ends_early = uniform() < p;
                sampled += in_window as u64;
                references += ends_early as u64;
                in_windows += (in_window && ends_early) as u64;
            }
            let raw = Tally {
                entries: sampled,
                aborts: references,
                window_aborts: in_windows,
                ..Default::default()
            };
            let t = extrapolate(&raw);
            let u = t.estimate.unwrap().uncertainty.unwrap_or(u64::MAX);
            misses += (t.entries.abs_diff(truth) > u) as u32;
        }
        assert!(misses <= 2, "{misses} of 50 estimates missed the truth");
    }
}
