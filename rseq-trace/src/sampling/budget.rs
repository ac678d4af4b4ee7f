//! The token bucket that keeps the windows' probe cost within the budget.

use std::time::Duration;

use super::{CREDIT_HORIZON_SECS, MAX_WINDOW, MIN_WINDOW};

/// What a window's overhead is taken to be before one was measured: on this 2-vCPU VM a
/// window's probes were attached 10-20 ms longer than planned while 8 threads kept the CPUs
/// busy (the session thread waits for a CPU to close it), and were hit for 10-50 ms after it
/// closed.
const OVERHEAD_PRIOR: Duration = Duration::from_millis(15);

/// The share of the budget the windows are planned for: a window's cost is known only once
/// it closed, and one that costs more than planned (more hits than the last windows, a longer
/// tail) is paid from this tenth, so that the whole run stays within the budget.
const HEADROOM: f64 = 0.9;

/// The token bucket.
#[derive(Clone, Debug)]
pub struct Budget {
    fraction: f64,
    /// CPU seconds the probes may still spend.
    credit: f64,
    /// Probe cost (CPU seconds) per second of probes attached (window and tail), from the
    /// windows so far.
    cost_rate: Option<f64>,
    /// How much longer than planned a window's probes cost: it closes late when the CPUs are
    /// busy, and its probes go on being hit after it closed (its tail), until the kernel has
    /// removed their breakpoints, which it does after a grace period. A window of 5 ms costs
    /// as if it were several times as long; leaving that out let the first window of frequent
    /// cancels cost 8 times its credit (the whole budget of an 8 s run).
    overhead: Duration,
}

impl Budget {
    /// `percent` of the traced threads' CPU time may go to the probes.
    pub fn new(percent: f64) -> Self {
        Budget {
            fraction: percent / 100.0,
            credit: 0.0,
            cost_rate: None,
            overhead: OVERHEAD_PRIOR,
        }
    }

    /// The traced threads used `cpu_seconds` since the last call, at `cpu_rate` CPU seconds per
    /// second.
    pub fn earn(&mut self, cpu_seconds: f64, cpu_rate: f64) {
        let planned = HEADROOM * self.fraction;
        let cap = planned * cpu_rate.max(0.0) * CREDIT_HORIZON_SECS;
        self.credit = (self.credit + planned * cpu_seconds.max(0.0)).min(cap.max(0.0));
    }

    /// The next window's length, or `None` while the credit does not pay for one.
    pub fn next_window(&self, cpu_rate: f64) -> Option<Duration> {
        let rate = self.cost_rate.unwrap_or(cpu_rate);
        if self.credit <= 0.0 {
            return None;
        }
        // Windows that cost nothing so far (no entry hit: the threads were idle, or slow to
        // reach a section) are as long as allowed: sampling must never stop for good.
        // The window and its overhead are paid at `rate`.
        let len = if rate > 0.0 {
            (self.credit / rate - self.overhead.as_secs_f64()).clamp(0.0, MAX_WINDOW.as_secs_f64())
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

    /// A window planned for `planned` was open for `open` and cost the traced threads
    /// `cost_seconds` of CPU; its probes were hit for `tail` after it closed (`None`: no hit
    /// to tell).
    pub fn spend(
        &mut self,
        planned: Duration,
        open: Duration,
        tail: Option<Duration>,
        cost_seconds: f64,
    ) {
        self.credit -= cost_seconds;
        let tail = tail.unwrap_or_default();
        let overhead = open.saturating_sub(planned) + tail;
        // Quick to learn a longer overhead, slow to forget it.
        self.overhead = overhead.max((self.overhead + overhead) / 2);
        let rate = cost_seconds / (open + tail).as_secs_f64().max(1e-9);
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
    fn first_window_assumes_the_worst_overhead_included() {
        // Two busy threads, 1% budget of which 0.9% planned: 18 ms of credit a second at a
        // cost rate of 2 CPU s/s pays for 9 ms of probes, less than the overhead; after 2 s,
        // for 18 ms, 3 ms of window; after 3 s, for a 12 ms window and its 15 ms overhead.
        let mut b = Budget::new(1.0);
        b.earn(2.0, 2.0);
        assert_eq!(b.next_window(2.0), None);
        b.earn(2.0, 2.0);
        assert_eq!(b.next_window(2.0), None);
        b.earn(2.0, 2.0);
        let len = b.next_window(2.0).expect("a window");
        assert!((len.as_secs_f64() - 0.012).abs() < 1e-9, "{len:?}");
    }

    #[test]
    fn windows_learn_their_overhead() {
        let mut b = Budget::new(1.0);
        b.earn(20.0, 2.0);
        // Planned 5 ms, open 10 ms, hit for 30 ms after, at 1 CPU s/s.
        let ms = Duration::from_millis;
        b.spend(ms(5), ms(10), Some(ms(30)), 0.04);
        assert_eq!(b.overhead, ms(35));
        assert!((b.cost_rate.unwrap() - 1.0).abs() < 1e-9);
        // A smaller overhead is learnt halfway.
        b.spend(ms(10), ms(10), Some(ms(5)), 0.015);
        assert_eq!(b.overhead, ms(20));
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
        b.earn(4.0, 2.0);
        // That window (and its tail) cost 0.08 s: twice the credit; the next needs 2 s more
        // of earning to pay back, and at 3.2 CPU s/s of probes 5 s for itself.
        b.spend(
            Duration::from_millis(10),
            Duration::from_millis(10),
            Some(Duration::from_millis(15)),
            0.08,
        );
        b.earn(4.0, 2.0);
        assert_eq!(b.next_window(2.0), None);
        b.earn(10.0, 2.0);
        assert!(b.next_window(2.0).is_some());
        // Windows that cost little get long, up to the cap.
        let mut cheap = Budget::new(1.0);
        cheap.earn(2.0, 2.0);
        cheap.spend(
            Duration::from_millis(10),
            Duration::from_millis(10),
            None,
            0.0001,
        );
        cheap.earn(20.0, 2.0);
        assert_eq!(cheap.next_window(2.0), Some(MAX_WINDOW));
    }

    #[test]
    fn a_window_without_hits_does_not_stop_sampling() {
        let mut b = Budget::new(1.0);
        b.earn(3.0, 1.0);
        let len = b.next_window(1.0).expect("a first window");
        b.spend(len, len, None, 0.0);
        b.earn(0.1, 1.0);
        assert_eq!(b.next_window(1.0), Some(MAX_WINDOW));
    }

    #[test]
    fn a_burst_of_outside_cost_delays_windows_by_a_second_at_most() {
        let mut b = Budget::new(1.0);
        b.earn(2.0, 2.0);
        b.charge(10.0, 2.0);
        assert!(b.credit >= -0.02 - 1e-12, "{}", b.credit);
        // A second of earning pays most of the debt back, three more a window and its tail.
        b.earn(2.0, 2.0);
        b.earn(6.0, 2.0);
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
