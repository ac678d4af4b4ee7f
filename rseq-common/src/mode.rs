//! What the probes count, chosen by the agent at load time.

/// Name of the global the agent sets to a [`Mode`] value.
pub const MODE_GLOBAL: &str = "MODE";

/// Tracing modes: how much the traced program pays for what it learns.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Every event: entry probes on the hot path, exact entries, commits, aborts and cancels
    /// per CPU the attempt entered on.
    Exact = 0,
    /// Only aborts and cancels (probes off the hot path, plus the kernel-restart tracepoint);
    /// counted on the CPU where they happen. Entries and commits are not counted.
    Aborts = 1,
    /// Aborts and cancels exact, as in `Aborts`; entry probes attached only for short windows
    /// (see [`crate::window`]), entries and commits extrapolated from them.
    Sampled = 2,
}

impl Mode {
    /// The mode's name, as the command line and the JSON spell it.
    pub const fn name(self) -> &'static str {
        match self {
            Mode::Exact => "exact",
            Mode::Aborts => "aborts",
            Mode::Sampled => "sampled",
        }
    }

    #[inline(always)]
    pub const fn from_u8(v: u8) -> Mode {
        match v {
            1 => Mode::Aborts,
            2 => Mode::Sampled,
            _ => Mode::Exact,
        }
    }
}
