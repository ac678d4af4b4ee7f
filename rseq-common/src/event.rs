//! The events a probe can report for one critical section.

/// What a probe observed about one attempt of a critical section.
///
/// Commits are not probed: every attempt that was entered ends in exactly one of commit, abort
/// or cancel, so `commits = entries - aborts - cancels` once no attempt is in flight. That keeps
/// probes off the post-commit join point, where compilers merge the commit, cancel and abort
/// paths.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// The store of the descriptor address into `rseq->rseq_cs`, just before start_ip.
    Entry = 0,
    /// The abort handler at abort_ip: a kernel restart or the section's own CPU-mismatch branch.
    Abort = 1,
    /// An exit point other than commit and abort: the section gave up early.
    Cancel = 2,
}

impl Event {
    /// How many counters each (CPU, section) pair has.
    pub const COUNT: usize = 3;
    /// All events, in counter order.
    pub const ALL: [Event; Event::COUNT] = [Event::Entry, Event::Abort, Event::Cancel];

    /// Decodes the low byte of a cookie; `None` for a value no agent ever wrote.
    #[inline(always)]
    pub const fn from_u8(v: u8) -> Option<Event> {
        match v {
            0 => Some(Event::Entry),
            1 => Some(Event::Abort),
            2 => Some(Event::Cancel),
            _ => None,
        }
    }
}
