//! Why the kernel restarted a critical section, and where it interrupted it.
//!
//! The eBPF side notes per thread what happened to it since the kernel last returned it to user
//! space with rseq work to do (scheduler and signal tracepoints), and at each kernel restart
//! (`rseq_ip_fixup`) turns that into one [`Cause`]. The `rseq_update` tracepoint, which runs
//! right after every such return's fixup, clears the note, so a note never outlives the return it
//! explains.

/// Name of the per-thread note map: tid -> [`ThreadEvents`].
pub const THREAD_EVENTS_MAP: &str = "THREAD_EVENTS";
pub const THREAD_EVENTS_CAPACITY: u32 = 1 << 14;

/// The thread was switched out involuntarily (preempted).
pub const PREEMPTED: u32 = 1;
/// The thread was switched out (for any reason); `switch_cpu` says where.
pub const SWITCHED: u32 = 2;
/// A signal was delivered to the thread.
pub const SIGNALLED: u32 = 4;

/// What happened to a thread since its last return to user space with rseq work.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ThreadEvents {
    pub flags: u32,
    /// CPU the thread was last switched out on.
    pub switch_cpu: u32,
}

/// Cause of a kernel restart.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Cause {
    /// Preempted inside the section and resumed on the same CPU.
    Preemption = 0,
    /// Switched out inside the section and resumed on another CPU.
    Migration = 1,
    /// A signal was delivered while inside the section.
    Signal = 2,
    /// None of the above seen: a blocking switch inside the section (a page fault that slept),
    /// or a restart requested from outside (membarrier with `MEMBARRIER_CMD_*_RSEQ`).
    Other = 3,
}

impl Cause {
    pub const COUNT: usize = 4;
    pub const ALL: [Cause; Cause::COUNT] = [
        Cause::Preemption,
        Cause::Migration,
        Cause::Signal,
        Cause::Other,
    ];

    /// The cause a [`Restart::cause`] holds (`Other` for anything unknown).
    #[inline(always)]
    pub const fn from_u32(v: u32) -> Cause {
        match v {
            0 => Cause::Preemption,
            1 => Cause::Migration,
            2 => Cause::Signal,
            _ => Cause::Other,
        }
    }

    /// Stable name, used in the JSON and as the `cause` label.
    pub const fn name(self) -> &'static str {
        match self {
            Cause::Preemption => "preemption",
            Cause::Migration => "migration",
            Cause::Signal => "signal",
            Cause::Other => "other",
        }
    }

    /// The cause of a restart on `cpu` after `events`. A migration is what moved the thread
    /// whatever else happened; a signal explains a restart without a preemption, and is what
    /// the section's author can act on when both happened.
    #[inline(always)]
    pub const fn classify(events: ThreadEvents, cpu: u32) -> Cause {
        if events.flags & SWITCHED != 0 && events.switch_cpu != cpu {
            Cause::Migration
        } else if events.flags & SIGNALLED != 0 {
            Cause::Signal
        } else if events.flags & PREEMPTED != 0 {
            Cause::Preemption
        } else {
            Cause::Other
        }
    }
}

/// A pending kernel restart of a thread, from `rseq_ip_fixup` to the abort probe that runs next.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Restart {
    /// Where the kernel sends the thread.
    pub abort_ip: u64,
    /// Interrupted instruction minus start_ip.
    pub offset: u32,
    /// A [`Cause`].
    pub cause: u32,
}

/// Name of the position histogram map: [`PositionKey`] -> kernel restarts.
pub const POSITIONS_MAP: &str = "POSITIONS";
pub const POSITIONS_CAPACITY: u32 = 1 << 16;

/// Key of the position histogram: where in a section the kernel interrupted it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PositionKey {
    pub tgid: u32,
    pub section: u32,
    /// Interrupted instruction minus start_ip.
    pub offset: u32,
    pub _pad: u32,
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: `repr(C)` plain integers, padding explicit.
    unsafe impl aya::Pod for super::PositionKey {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(flags: u32, switch_cpu: u32) -> ThreadEvents {
        ThreadEvents { flags, switch_cpu }
    }

    #[test]
    fn classifies_by_what_happened() {
        assert_eq!(
            Cause::classify(ev(PREEMPTED | SWITCHED, 1), 1),
            Cause::Preemption
        );
        assert_eq!(
            Cause::classify(ev(PREEMPTED | SWITCHED, 0), 1),
            Cause::Migration
        );
        assert_eq!(Cause::classify(ev(SIGNALLED, 0), 0), Cause::Signal);
        assert_eq!(
            Cause::classify(ev(SIGNALLED | PREEMPTED | SWITCHED, 0), 0),
            Cause::Signal
        );
        assert_eq!(
            Cause::classify(ev(SIGNALLED | SWITCHED, 0), 1),
            Cause::Migration
        );
        assert_eq!(Cause::classify(ev(SWITCHED, 0), 0), Cause::Other);
        assert_eq!(Cause::classify(ev(0, 0), 3), Cause::Other);
        for c in Cause::ALL {
            assert_eq!(Cause::from_u32(c as u32), c);
        }
    }
}
