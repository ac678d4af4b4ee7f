//! How late the tracer's own loop runs: the longest time between two passes of the poll loop
//! (exits, holds at library loads, new mappings). A process held at a library load waits for
//! the next pass, so this is what a view or a scrape that delays the loop costs the traced
//! programs; exported as `rseq_trace_poll_gap_max_seconds` and logged at exit.

use std::time::{Duration, Instant};

/// The gaps between passes seen so far.
#[derive(Clone, Copy, Debug, Default)]
pub struct PollGap {
    last: Option<Instant>,
    max: Duration,
    passes: u64,
}

impl PollGap {
    /// A pass of the loop ended at `now`.
    pub fn pass(&mut self, now: Instant) {
        if let Some(last) = self.last {
            self.max = self.max.max(now.saturating_duration_since(last));
        }
        self.last = Some(now);
        self.passes += 1;
    }

    /// The longest gap between two passes so far (zero before the second pass).
    pub fn max(&self) -> Duration {
        self.max
    }

    /// Passes so far.
    pub fn passes(&self) -> u64 {
        self.passes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_longest_gap() {
        let t0 = Instant::now();
        let mut g = PollGap::default();
        g.pass(t0);
        assert_eq!(g.max(), Duration::ZERO);
        g.pass(t0 + Duration::from_millis(50));
        g.pass(t0 + Duration::from_millis(780));
        g.pass(t0 + Duration::from_millis(830));
        assert_eq!(g.max(), Duration::from_millis(730));
        assert_eq!(g.passes(), 4);
    }
}
