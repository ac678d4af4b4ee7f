//! Layout of the `COUNTS` array map.
//!
//! Counters are indexed CPU-major, `[cpu][section][event]`, so that the CPUs' hot entry counters
//! sit in separate regions of the map rather than sharing cache lines. The eBPF side adds to them
//! atomically because an abort or cancel is credited to the CPU the attempt *entered* on, which
//! need not be the CPU the probe fires on (a thread migrated mid-section aborts on the new CPU).

use crate::event::Event;

/// Name of the counter array map in the eBPF object.
pub const COUNTS_MAP: &str = "COUNTS";
/// Name of the global the agent sets to the number of section slots it sized the map for.
pub const SECTION_CAPACITY_GLOBAL: &str = "SECTION_CAPACITY";

/// Index of one counter, or `None` when `section` is outside the capacity the map was sized for.
#[inline(always)]
pub const fn counter_index(cpu: u32, section: u32, event: Event, capacity: u32) -> Option<u32> {
    if section >= capacity {
        return None;
    }
    let i = (cpu as u64 * capacity as u64 + section as u64) * Event::COUNT as u64 + event as u64;
    if i > u32::MAX as u64 {
        return None;
    }
    Some(i as u32)
}

/// Number of map entries for `cpus` possible CPUs and `capacity` sections.
pub const fn map_len(cpus: u32, capacity: u32) -> Option<u32> {
    let n = cpus as u64 * capacity as u64 * Event::COUNT as u64;
    if n == 0 || n > u32::MAX as u64 {
        None
    } else {
        Some(n as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_are_dense_and_distinct() {
        let (cpus, cap) = (3u32, 5u32);
        let len = map_len(cpus, cap).unwrap();
        let mut seen = [false; 45];
        for cpu in 0..cpus {
            for s in 0..cap {
                for e in Event::ALL {
                    let i = counter_index(cpu, s, e, cap).unwrap();
                    assert!(i < len);
                    assert!(!seen[i as usize]);
                    seen[i as usize] = true;
                }
            }
        }
        assert!(seen.iter().all(|s| *s));
    }

    #[test]
    fn out_of_capacity_section_has_no_index() {
        assert_eq!(counter_index(0, 5, Event::Entry, 5), None);
    }
}
