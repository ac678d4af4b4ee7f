//! The BPF cookie attached to each uprobe: which section, which event.

use crate::event::Event;

/// A uprobe's BPF cookie: the section's index in the agent's section table (high 32 bits) and
/// the [`Event`] the probe reports (low 8 bits). One eBPF program serves every probe; the cookie
/// is how it knows what it is counting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cookie {
    pub section: u32,
    pub event: Event,
}

impl Cookie {
    #[inline(always)]
    pub const fn new(section: u32, event: Event) -> Self {
        Cookie { section, event }
    }

    #[inline(always)]
    pub const fn encode(self) -> u64 {
        ((self.section as u64) << 32) | self.event as u64
    }

    /// `None` when the low byte names no event: the probe was not attached by this agent.
    #[inline(always)]
    pub const fn decode(raw: u64) -> Option<Self> {
        match Event::from_u8((raw & 0xff) as u8) {
            Some(event) => Some(Cookie {
                section: (raw >> 32) as u32,
                event,
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
                let c = Cookie::new(section, event);
                assert_eq!(Cookie::decode(c.encode()), Some(c));
            }
        }
    }

    #[test]
    fn rejects_unknown_event() {
        assert_eq!(Cookie::decode(0x0000_0001_0000_0007), None);
    }
}
