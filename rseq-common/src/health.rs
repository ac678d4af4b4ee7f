//! The eBPF side's own error counters (`HEALTH` array map), so that nothing is lost silently.

/// Name of the health array map in the eBPF object.
pub const HEALTH_MAP: &str = "HEALTH";

/// One slot of the health map. A non-zero value means some event could not be attributed.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    /// An abort or cancel probe fired for a thread with no open attempt of that section: the
    /// attempt began before the probes were attached. Not counted, so totals stay consistent.
    UnmatchedExit = 0,
    /// The per-thread state map was full: an entry could not be recorded.
    StateInsertFailed = 1,
    /// A cookie named an unknown event.
    BadCookie = 2,
    /// The counter map was full: an event of a new (process, section, CPU) was lost.
    CountsFull = 3,
    /// A kernel restart was seen but no abort probe consumed it (an untraced section's abort).
    RestartUnclaimed = 4,
    /// A traced process changed its loaded objects while the agent was not responsive (no
    /// heartbeat for [`crate::state::HOLD_FRESH_NS`]): it was not held, so a library it loaded
    /// then may miss its first events.
    HoldSkipped = 5,
}

impl Health {
    pub const COUNT: u32 = 6;
    pub const ALL: [Health; Health::COUNT as usize] = [
        Health::UnmatchedExit,
        Health::StateInsertFailed,
        Health::BadCookie,
        Health::CountsFull,
        Health::RestartUnclaimed,
        Health::HoldSkipped,
    ];

    /// Stable name, used in logs and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Health::UnmatchedExit => "unmatched_exit",
            Health::StateInsertFailed => "state_insert_failed",
            Health::BadCookie => "bad_cookie",
            Health::CountsFull => "counts_full",
            Health::RestartUnclaimed => "restart_unclaimed",
            Health::HoldSkipped => "hold_skipped",
        }
    }
}
