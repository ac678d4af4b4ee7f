//! The abort ratio of sampled attempts, with bounds: aborts over entries, both counted in the
//! same windows (the entry probes are attached only then, and the gate counts aborts for the
//! windows only while it is open), so the ratio is measured, not extrapolated.
//!
//! The attempts of one window are not independent draws: a burst of preemptions or signals
//! aborts many attempts of the same window. So the interval is Wilson's score interval on an
//! effective number of attempts: the entries divided by the design effect, the variance of the
//! ratio between windows (a ratio estimator over clusters) over the variance independent
//! attempts would give, and never below 1. Without an abort the upper bound is the exact
//! (Clopper-Pearson) one for zero events.

use serde::Serialize;

/// Confidence of the bounds.
pub const CONFIDENCE: f64 = 0.95;
/// The normal quantile of [`CONFIDENCE`], two-sided.
const Z: f64 = 1.959_963_985;
/// Windows with entries needed before their spread is trusted for the design effect.
pub const MIN_WINDOWS: u64 = 8;

/// Sums over windows of one key's per-window entries `e` and aborts `a`: what the variance of
/// the ratio between windows is computed from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct WindowMoments {
    /// Windows in which the key had entries.
    pub windows: u64,
    /// Σe.
    pub entries: f64,
    /// Σa.
    pub aborts: f64,
    /// Σe².
    pub ee: f64,
    /// Σa².
    pub aa: f64,
    /// Σae.
    pub ae: f64,
}

impl WindowMoments {
    /// One window's entries and aborts of the key.
    pub fn add(&mut self, entries: u64, aborts: u64) {
        if entries == 0 {
            return;
        }
        let (e, a) = (entries as f64, aborts as f64);
        self.windows += 1;
        self.entries += e;
        self.aborts += a;
        self.ee += e * e;
        self.aa += a * a;
        self.ae += a * e;
    }

    /// The design effect at ratio `r`: between-window variance of the ratio over the binomial
    /// one; 1 while there are too few windows to tell.
    fn design_effect(&self, r: f64) -> f64 {
        if self.windows < MIN_WINDOWS || self.entries <= 0.0 || r <= 0.0 || r >= 1.0 {
            return 1.0;
        }
        let n = self.windows as f64;
        let residual = (self.aa - 2.0 * r * self.ae + r * r * self.ee).max(0.0);
        let between = n / (n - 1.0) * residual / (self.entries * self.entries);
        let binomial = r * (1.0 - r) / self.entries;
        (between / binomial).max(1.0)
    }
}

/// An abort ratio and its bounds at [`CONFIDENCE`].
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct RatioBounds {
    /// Aborts over entries, as counted.
    pub ratio: f64,
    /// Lower bound.
    pub low: f64,
    /// Upper bound.
    pub high: f64,
}

impl RatioBounds {
    /// An exactly counted ratio: both bounds equal to it.
    pub fn exact(aborts: u64, entries: u64) -> Option<Self> {
        (entries > 0).then(|| {
            let ratio = (aborts as f64 / entries as f64).min(1.0);
            RatioBounds {
                ratio,
                low: ratio,
                high: ratio,
            }
        })
    }

    /// The ratio of `aborts` in `entries` sampled attempts, with bounds; `moments` (when the
    /// windows were recorded one by one) widen them by the design effect.
    pub fn sampled(aborts: u64, entries: u64, moments: Option<&WindowMoments>) -> Option<Self> {
        if entries == 0 {
            return None;
        }
        let ratio = (aborts as f64 / entries as f64).min(1.0);
        let deff = moments.map_or(1.0, |m| m.design_effect(ratio));
        let n = entries as f64 / deff;
        if aborts == 0 {
            // Clopper-Pearson for zero events: P(no abort in n) = (1 - high)^n = (1 - c) / 2.
            let high = 1.0 - ((1.0 - CONFIDENCE) / 2.0).powf(1.0 / n);
            return Some(RatioBounds {
                ratio,
                low: 0.0,
                high,
            });
        }
        let z2 = Z * Z;
        let center = (ratio + z2 / (2.0 * n)) / (1.0 + z2 / n);
        let half = Z / (1.0 + z2 / n) * (ratio * (1.0 - ratio) / n + z2 / (4.0 * n * n)).sqrt();
        Some(RatioBounds {
            ratio,
            low: (center - half).max(0.0),
            high: (center + half).min(1.0),
        })
    }

    /// Whether both bounds equal the ratio (it was counted, not sampled).
    pub fn is_exact(&self) -> bool {
        self.low == self.ratio && self.high == self.ratio
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A xorshift generator: the simulation is the same on every run.
    struct Rng(u64);

    impl Rng {
        fn uniform(&mut self) -> f64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    #[test]
    fn exact_ratios_have_no_width_and_no_entries_no_ratio() {
        let r = RatioBounds::exact(3, 100).unwrap();
        assert!(r.is_exact() && (r.ratio - 0.03).abs() < 1e-12);
        assert!(RatioBounds::exact(0, 0).is_none());
        assert!(RatioBounds::sampled(0, 0, None).is_none());
    }

    #[test]
    fn no_abort_gives_the_rule_of_three() {
        let r = RatioBounds::sampled(0, 10_000, None).unwrap();
        assert_eq!((r.ratio, r.low), (0.0, 0.0));
        // ln(40) / n, about 3.7 / n at 95% two-sided.
        assert!((r.high * 10_000.0 - 3.69).abs() < 0.01, "{r:?}");
    }

    #[test]
    fn bursty_windows_widen_the_bounds() {
        let (mut even, mut bursty) = (WindowMoments::default(), WindowMoments::default());
        for i in 0..20 {
            even.add(1000, 10);
            bursty.add(1000, if i % 4 == 0 { 40 } else { 0 });
        }
        let a = RatioBounds::sampled(200, 20_000, Some(&even)).unwrap();
        let b = RatioBounds::sampled(200, 20_000, Some(&bursty)).unwrap();
        assert_eq!(a.ratio, b.ratio);
        assert!(b.high - b.low > 2.0 * (a.high - a.low), "{a:?} {b:?}");
    }

    /// Coverage over many simulated runs of a program whose abort chance drifts from window to
    /// window (clustered aborts) and of one where it does not: the true mean ratio lies within
    /// the bounds in about 95% of the runs, and never in fewer than 90%.
    #[test]
    fn bounds_cover_the_truth_in_simulation() {
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        for (p, drift, per_window) in [
            (0.02, 0.0, 400),
            (0.02, 1.0, 400),
            (0.001, 0.5, 2_000),
            (0.2, 0.5, 50),
        ] {
            let runs = 400;
            let mut covered = 0;
            for _ in 0..runs {
                let mut m = WindowMoments::default();
                let (mut a_sum, mut e_sum) = (0, 0);
                for _ in 0..30 {
                    // The window's abort chance: p scaled by a factor of mean 1.
                    let factor = 1.0 + drift * (2.0 * rng.uniform() - 1.0);
                    let pw = (p * factor).clamp(0.0, 1.0);
                    let a = (0..per_window).filter(|_| rng.uniform() < pw).count() as u64;
                    m.add(per_window, a);
                    a_sum += a;
                    e_sum += per_window;
                }
                let r = RatioBounds::sampled(a_sum, e_sum, Some(&m)).unwrap();
                covered += (r.low <= p && p <= r.high) as u32;
            }
            let share = f64::from(covered) / f64::from(runs);
            eprintln!("p {p}, drift {drift}: {share:.3} of the bounds cover it");
            assert!(share >= 0.90, "p {p}, drift {drift}: coverage {share}");
        }
    }
}
