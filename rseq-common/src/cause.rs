//! Why the kernel restarted a critical section, and where it interrupted it.
//!
//! The eBPF side notes per thread what happened to it since the kernel last returned it to user
//! space with rseq work to do (scheduler and signal tracepoints), and at each kernel restart
//! (`rseq_ip_fixup`) turns that into one [`Cause`]. The `rseq_update` tracepoint marks the end of
//! such a return, so a note never outlives the return it explains; but where it fires differs:
//! up to 6.18 right after the fixup (the update drops the note), from 6.19 on (the rseq rework)
//! just before it, in the same return: there the update sets the note aside
//! ([`Note::updated`]) for a fixup that follows within [`Note::SAME_RETURN_NS`]. The agent tells
//! the two apart by the kernel's BTF ([`UPDATE_BEFORE_FIXUP_GLOBAL`]).

/// Name of the global (a byte, set at load time) that says the kernel runs `rseq_update` before
/// the fixup of the same return (the 6.19 rework), so the update sets the note aside
/// ([`Note::updated`]) instead of dropping it.
pub const UPDATE_BEFORE_FIXUP_GLOBAL: &str = "UPDATE_BEFORE_FIXUP";

/// Name of the per-thread note map: tid -> [`Note`].
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
    /// `bpf_ktime_get_ns` when the last signal was delivered ([`SIGNALLED`]).
    pub signal_ns: u64,
}

/// A thread's note: what happened since the last `rseq_update` (`live`), and what had happened
/// before it (`before_update`, with the time of that update).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Note {
    pub live: ThreadEvents,
    pub before_update: ThreadEvents,
    /// `bpf_ktime_get_ns` at the last `rseq_update`, 0 once used.
    pub updated_ns: u64,
}

impl Note {
    /// A fixup this soon after an update belongs to the same return to user space (nothing
    /// runs in between but the kernel's own exit path; generous for emulated machines).
    pub const SAME_RETURN_NS: u64 = 2_000_000;

    /// `rseq_update` at `now`: the return being made ends the note.
    #[inline(always)]
    pub const fn updated(self, now: u64) -> Note {
        Note {
            live: ThreadEvents {
                flags: 0,
                switch_cpu: self.live.switch_cpu,
                signal_ns: 0,
            },
            before_update: self.live,
            updated_ns: now,
        }
    }

    /// The events that explain a fixup at `now`: those noted since the last update, or, when
    /// none were and that update was part of this same return (6.19+), those before it. A
    /// signal explains only a fixup of its own delivery, which follows it at once: where the
    /// kernel writes the IDs only when they change (the V2 ABI of 7.1+) no update ends a note
    /// after a signal delivered outside any section, and it must not explain a later restart.
    #[inline(always)]
    pub const fn explaining(self, now: u64) -> ThreadEvents {
        let mut events = if self.live.flags == 0
            && self.updated_ns != 0
            && now.wrapping_sub(self.updated_ns) < Self::SAME_RETURN_NS
        {
            self.before_update
        } else {
            self.live
        };
        if events.flags & SIGNALLED != 0
            && now.wrapping_sub(events.signal_ns) >= Self::SAME_RETURN_NS
        {
            events.flags &= !SIGNALLED;
        }
        events
    }

    /// After a fixup: nothing left to explain.
    #[inline(always)]
    pub const fn used(self) -> Note {
        Note {
            live: ThreadEvents {
                flags: 0,
                switch_cpu: self.live.switch_cpu,
                signal_ns: 0,
            },
            before_update: ThreadEvents {
                flags: 0,
                switch_cpu: 0,
                signal_ns: 0,
            },
            updated_ns: 0,
        }
    }
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
    /// Made by rseq-trace itself: a restart at start_ip on the thread's return from an entry
    /// probe on the descriptor store ([`crate::Cookie::entry_arms`]), whose trap returns with
    /// the section armed; whatever arrived during the trap (a signal, a preemption) aborts it.
    /// Untraced, the program would not have aborted there.
    Probe = 4,
}

impl Cause {
    pub const COUNT: usize = 5;
    pub const ALL: [Cause; Cause::COUNT] = [
        Cause::Preemption,
        Cause::Migration,
        Cause::Signal,
        Cause::Other,
        Cause::Probe,
    ];

    /// The cause a [`Restart::cause`] holds (`Other` for anything unknown).
    #[inline(always)]
    pub const fn from_u32(v: u32) -> Cause {
        match v {
            0 => Cause::Preemption,
            1 => Cause::Migration,
            2 => Cause::Signal,
            4 => Cause::Probe,
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
            Cause::Probe => "probe",
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

/// Name of the map of each thread's last entry-probe hit in sampled mode: tid -> [`Armed`].
pub const ARMED_MAP: &str = "ARMED";

/// A thread's last entry-probe hit in sampled mode, where entry probes come and go: a restart
/// at start_ip is the probe's own only while they are there, and so is a CPU-check abort of a
/// thread that the probe's trip through the kernel let the scheduler move.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Armed {
    pub section: u32,
    /// The CPU the entry probe ran on.
    pub cpu: u32,
    /// `bpf_ktime_get_ns` at the hit.
    pub ns: u64,
}

impl Armed {
    /// A restart at start_ip this long after the trap still follows it: longer than any
    /// sampling window (50 ms) and a preemption during the trap on a loaded machine.
    pub const FRESH_NS: u64 = 200_000_000;

    /// Whether a restart of `section` at start_ip at `now` followed this trap.
    #[inline(always)]
    pub const fn explains(&self, section: u32, now: u64) -> bool {
        self.section == section && now.wrapping_sub(self.ns) < Self::FRESH_NS
    }

    /// Whether an abort of `section` on `cpu` at `now` that the kernel did not make (the
    /// section's own CPU check) came from a move to another CPU after this entry hit: the
    /// program read its CPU before the probe, the probe's return to user space is where the
    /// scheduler preempted it and moved it, and the section then found itself on the wrong
    /// CPU. Untraced, the few instructions between that read and the section would almost
    /// never be preempted; traced, the probe's microseconds in the kernel often are when
    /// threads outnumber CPUs.
    #[inline(always)]
    pub const fn moved_after(&self, section: u32, cpu: u32, now: u64) -> bool {
        self.explains(section, now) && self.cpu != cpu
    }
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
        ThreadEvents {
            flags,
            switch_cpu,
            signal_ns: 0,
        }
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
    }

    fn noted(flags: u32, cpu: u32) -> Note {
        Note {
            live: ev(flags, cpu),
            ..Note::default()
        }
    }

    #[test]
    fn a_fixup_before_the_update_uses_the_live_note() {
        // Up to 6.18: switch, fixup, update.
        let n = noted(PREEMPTED | SWITCHED, 1);
        assert_eq!(n.explaining(1_000), ev(PREEMPTED | SWITCHED, 1));
        let n = n.used().updated(1_100);
        assert_eq!(n.explaining(5_000_000), ev(0, 1));
    }

    #[test]
    fn a_fixup_just_after_the_update_uses_what_the_update_set_aside() {
        // 6.19+: switch, update, fixup in the same return.
        let n = noted(PREEMPTED | SWITCHED, 1).updated(1_000);
        assert_eq!(n.explaining(1_500), ev(PREEMPTED | SWITCHED, 1));
        // Once used, a later fixup is not explained by it again.
        assert_eq!(n.used().explaining(1_600).flags, 0);
    }

    #[test]
    fn an_old_update_or_new_events_are_not_mixed_up() {
        let mut n = noted(SIGNALLED, 0);
        n.live.signal_ns = 900;
        let n = n.updated(1_000);
        // Long after: another return; nothing noted since, so nothing explains it.
        assert_eq!(n.explaining(1_000 + Note::SAME_RETURN_NS).flags, 0);
        // Events noted since the update win over what was set aside.
        let mut m = n;
        m.live.flags = PREEMPTED | SWITCHED;
        assert_eq!(m.explaining(1_500).flags, PREEMPTED | SWITCHED);
    }

    #[test]
    fn a_store_probe_trap_explains_a_restart_of_its_section_only_while_fresh() {
        let a = Armed {
            section: 7,
            cpu: 1,
            ns: 1_000,
        };
        assert!(a.explains(7, 1_000 + Armed::FRESH_NS - 1));
        assert!(!a.explains(8, 2_000), "another section's trap");
        assert!(
            !a.explains(7, 1_000 + Armed::FRESH_NS),
            "a trap long before: the probes may be gone"
        );
        assert!(a.moved_after(7, 0, 2_000), "entered on CPU 1, aborted on 0");
        assert!(
            !a.moved_after(7, 1, 2_000),
            "the same CPU: the program's own mismatch"
        );
        assert!(!a.moved_after(8, 0, 2_000), "another section's hit");
        assert!(
            !a.moved_after(7, 0, 1_000 + Armed::FRESH_NS),
            "a hit long before"
        );
        assert_eq!(Cause::from_u32(Cause::Probe as u32), Cause::Probe);
        assert_eq!(Cause::Probe.name(), "probe");
    }

    #[test]
    fn a_signal_explains_only_the_fixup_of_its_delivery() {
        let mut n = noted(SIGNALLED | PREEMPTED | SWITCHED, 0);
        n.live.signal_ns = 1_000;
        assert_eq!(
            Cause::classify(n.explaining(1_200), 0),
            Cause::Signal,
            "a fixup right after the delivery"
        );
        assert_eq!(
            Cause::classify(n.explaining(1_000 + Note::SAME_RETURN_NS), 0),
            Cause::Preemption,
            "a later preemption restart, no update in between (V2)"
        );
        for c in Cause::ALL {
            assert_eq!(Cause::from_u32(c as u32), c);
        }
    }
}
