//! The token bucket that keeps the windows' probe cost within the budget.

use std::time::Duration;

use super::{CREDIT_HORIZON_SECS, MAX_WINDOW, MIN_WINDOW};

/// The token bucket.
#[derive(Clone, Debug)]
pub struct Budget {
    fraction: f64,
    /// CPU seconds the probes may still spend.
    credit: f64,
    /// Probe cost (CPU seconds) per second of window, from the windows so far.
    cost_rate: Option<f64>,
}

impl Budget {
    /// `percent` of the traced threads' CPU time may go to the probes.
    pub fn new(percent: f64) -> Self {
        Budget {
            fraction: percent / 100.0,
            credit: 0.0,
            cost_rate: None,
        }
    }

    /// The traced threads used `cpu_seconds` since the last call, at `cpu_rate` CPU seconds per
    /// second.
    pub fn earn(&mut self, cpu_seconds: f64, cpu_rate: f64) {
        let cap = self.fraction * cpu_rate.max(0.0) * CREDIT_HORIZON_SECS;
        self.credit = (self.credit + self.fraction * cpu_seconds.max(0.0)).min(cap.max(0.0));
    }

    /// The next window's length, or `None` while the credit does not pay for one.
    pub fn next_window(&self, cpu_rate: f64) -> Option<Duration> {
        let rate = self.cost_rate.unwrap_or(cpu_rate);
        if self.credit <= 0.0 {
            return None;
        }
        // Windows that cost nothing so far (no entry hit: the threads were idle, or slow to
        // reach a section) are as long as allowed: sampling must never stop for good.
        let len = if rate > 0.0 {
            (self.credit / rate).min(MAX_WINDOW.as_secs_f64())
        } else {
            MAX_WINDOW.as_secs_f64()
        };
        let len = Duration::from_secs_f64(len);
        (len >= MIN_WINDOW).then_some(len)
    }

    /// The share of the traced threads' CPU time the probes may cost.
    pub fn fraction(&self) -> f64 {
        self.fraction
    }

    /// Probes attached outside the windows cost the traced threads `cost_seconds` of CPU: the
    /// windows get that much less. The debt is bounded by one second of budget (at `cpu_rate`),
    /// so that a burst of such cost (before the sampler moves those probes into the windows)
    /// does not stop sampling for long.
    pub fn charge(&mut self, cost_seconds: f64, cpu_rate: f64) {
        let floor = -self.fraction * cpu_rate.max(0.0);
        self.credit = (self.credit - cost_seconds.max(0.0)).max(floor.min(self.credit));
    }

    /// A window of `len` cost the traced threads `cost_seconds` of CPU.
    pub fn spend(&mut self, len: Duration, cost_seconds: f64) {
        self.credit -= cost_seconds;
        let rate = cost_seconds / len.as_secs_f64().max(1e-9);
        // Smoothed, but quick to learn that windows got more expensive.
        self.cost_rate = Some(match self.cost_rate {
            Some(old) if rate < old => 0.5 * old + 0.5 * rate,
            _ => rate,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_window_assumes_the_worst() {
        // Two busy threads, 1% budget: after 1 s, 20 ms of credit at a cost rate of 2 CPU s/s.
        let mut b = Budget::new(1.0);
        b.earn(2.0, 2.0);
        assert_eq!(b.next_window(2.0), Some(Duration::from_millis(10)));
    }

    #[test]
    fn no_window_before_the_credit_pays_for_one() {
        let mut b = Budget::new(1.0);
        b.earn(0.2, 2.0);
        assert_eq!(b.next_window(2.0), None);
        assert_eq!(Budget::new(1.0).next_window(0.0), None);
    }

    #[test]
    fn spending_over_budget_waits_and_cheap_windows_grow() {
        let mut b = Budget::new(1.0);
        b.earn(2.0, 2.0);
        // That window cost 0.04 s: twice the credit; the next needs 2 s more of earning.
        b.spend(Duration::from_millis(10), 0.04);
        b.earn(2.0, 2.0);
        assert_eq!(b.next_window(2.0), None);
        b.earn(2.0, 2.0);
        assert!(b.next_window(2.0).is_some());
        // Windows that cost little get long, up to the cap.
        let mut cheap = Budget::new(1.0);
        cheap.earn(2.0, 2.0);
        cheap.spend(Duration::from_millis(10), 0.0001);
        cheap.earn(20.0, 2.0);
        assert_eq!(cheap.next_window(2.0), Some(MAX_WINDOW));
    }

    #[test]
    fn a_window_without_hits_does_not_stop_sampling() {
        let mut b = Budget::new(1.0);
        b.earn(1.0, 1.0);
        let len = b.next_window(1.0).expect("a first window");
        b.spend(len, 0.0);
        b.earn(0.1, 1.0);
        assert_eq!(b.next_window(1.0), Some(MAX_WINDOW));
    }

    #[test]
    fn a_burst_of_outside_cost_delays_windows_by_a_second_at_most() {
        let mut b = Budget::new(1.0);
        b.earn(2.0, 2.0);
        b.charge(10.0, 2.0);
        assert!(b.credit >= -0.02 - 1e-12, "{}", b.credit);
        // One second of earning pays the debt back and a window again.
        b.earn(2.0, 2.0);
        b.earn(1.0, 2.0);
        assert!(b.next_window(2.0).is_some());
    }

    #[test]
    fn credit_does_not_pile_up() {
        let mut b = Budget::new(1.0);
        for _ in 0..1000 {
            b.earn(2.0, 2.0);
        }
        assert!(b.credit <= 0.01 * 2.0 * CREDIT_HORIZON_SECS + 1e-9);
    }
}
