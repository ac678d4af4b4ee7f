//! The `COUNTS` hash map: one set of counters per (process, section, CPU).
//!
//! The CPU is the one the attempt *entered* on: an abort or cancel is credited there even when
//! the probe that saw it fired on another CPU (a thread migrated mid-section aborts on the new
//! one), so that per CPU, entries = commits + aborts + cancels. Because of that cross-CPU
//! credit, the eBPF side adds to the values atomically.

use crate::cause::Cause;

/// Name of the counter hash map in the eBPF object.
pub const COUNTS_MAP: &str = "COUNTS";

/// What one counter slot counts.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    Entries = 0,
    Aborts = 1,
    Cancels = 2,
    /// Aborts the kernel caused (preemption, migration, signal, or during our probe), seen by the
    /// `rseq_ip_fixup` tracepoint just before the abort handler ran. The rest of the aborts
    /// are the section's own CPU-mismatch branch.
    KernelRestarts = 3,
    /// Sampled mode: aborts that happened while a sampling window was open, except those the
    /// agent's own entry probe made: the abort ratio's numerator (over the entries counted in
    /// the same windows), and a reference that entries are extrapolated from.
    WindowAborts = 4,
    /// Sampled mode: cancels that happened while a sampling window was open.
    WindowCancels = 5,
    /// Kernel restarts by [`Cause`], in its order.
    RestartPreemption = 6,
    RestartMigration = 7,
    RestartSignal = 8,
    RestartOther = 9,
    RestartProbe = 10,
    /// Aborts by the section's own CPU check of a thread moved to another CPU since its entry
    /// probe hit: the scheduler moved it during the probe's trip through the kernel (exact
    /// mode, and sampled mode's open windows).
    ProbeMoves = 11,
}

impl Counter {
    pub const COUNT: usize = 12;

    /// The slot counting kernel restarts of `cause`.
    #[inline(always)]
    pub const fn restarts_by(cause: Cause) -> Counter {
        match cause {
            Cause::Preemption => Counter::RestartPreemption,
            Cause::Migration => Counter::RestartMigration,
            Cause::Signal => Counter::RestartSignal,
            Cause::Other => Counter::RestartOther,
            Cause::Probe => Counter::RestartProbe,
        }
    }
}

/// Key of the counter map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CountKey {
    /// Process id (thread group id) of the traced process.
    pub tgid: u32,
    /// Index in the agent's section table, from the probe's cookie.
    pub section: u32,
    /// CPU the attempt entered on.
    pub cpu: u32,
    pub _pad: u32,
}

/// Value of the counter map, indexed by [`Counter`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters(pub [u64; Counter::COUNT]);

impl Counters {
    #[inline(always)]
    pub const fn get(&self, c: Counter) -> u64 {
        self.0[c as usize]
    }
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: both are `repr(C)` plain integers with no padding the kernel could leave
    // uninitialised (the key's padding is an explicit field).
    unsafe impl aya::Pod for super::CountKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Counters {}
}
