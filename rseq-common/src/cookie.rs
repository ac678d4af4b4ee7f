//! The BPF cookie attached to each uprobe: which section, which event.

use crate::event::Event;

/// A uprobe's BPF cookie: the section's index in the agent's section table (high 32 bits), the
/// [`Event`] the probe reports (low 8 bits) and whether the section's entry probe arms it (bit
/// 8). One eBPF program serves every probe; the cookie is how it knows what it is counting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cookie {
    pub section: u32,
    pub event: Event,
    /// The section's entry probe sits on the descriptor store (no earlier instruction could be
    /// proven to run before it every time): its trap returns to start_ip with the section
    /// already armed, so a signal or preemption that arrived during the trap restarts the
    /// section at start_ip. Such restarts are the probe's own ([`crate::cause::Cause::Probe`]).
    pub entry_arms: bool,
}

/// The cookie bit of [`Cookie::entry_arms`].
const ENTRY_ARMS: u64 = 1 << 8;
/// Bits no agent writes.
const UNUSED: u64 = 0xffff_fe00;

impl Cookie {
    #[inline(always)]
    pub const fn new(section: u32, event: Event) -> Self {
        Cookie {
            section,
            event,
            entry_arms: false,
        }
    }

    /// The same cookie for a section whose entry probe does (or does not) arm it.
    #[inline(always)]
    pub const fn entry_arming(self, arms: bool) -> Self {
        Cookie {
            entry_arms: arms,
            ..self
        }
    }

    #[inline(always)]
    pub const fn encode(self) -> u64 {
        let arms = if self.entry_arms { ENTRY_ARMS } else { 0 };
        ((self.section as u64) << 32) | arms | self.event as u64
    }

    /// `None` when the low byte names no event or unused bits are set: the probe was not
    /// attached by this agent.
    #[inline(always)]
    pub const fn decode(raw: u64) -> Option<Self> {
        if raw & UNUSED != 0 {
            return None;
        }
        match Event::from_u8((raw & 0xff) as u8) {
            Some(event) => Some(Cookie {
                section: (raw >> 32) as u32,
                event,
                entry_arms: raw & ENTRY_ARMS != 0,
            }),
            None => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_event() {
        for event in Event::ALL {
            for section in [0, 1, 77, u32::MAX] {
                for arms in [false, true] {
                    let c = Cookie::new(section, event).entry_arming(arms);
                    assert_eq!(Cookie::decode(c.encode()), Some(c));
                }
            }
        }
    }

    #[test]
    fn rejects_unknown_event() {
        assert_eq!(Cookie::decode(0x0000_0001_0000_0007), None);
        assert_eq!(Cookie::decode(0x0000_0001_0000_0400), None, "an unused bit");
    }
}
