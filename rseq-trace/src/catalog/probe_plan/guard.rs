//! The guard that keeps every probe out of [start_ip, post_commit_ip) (REFERENCE §5: a probe
//! there silently corrupts the traced program's per-CPU data).

use super::Refusal;
use crate::{elf::CriticalSection, error::AttachError};

/// The guard: refuses any address inside any critical section of a file. Built once per file,
/// so checking every probe of 10,000 sections stays cheap.
pub struct Guard {
    /// (start_ip, post_commit_ip, index in the sections given), by start_ip.
    ranges: Vec<(u64, u64, usize)>,
    /// Largest end among `ranges[..=i]`: a search can stop once it is at or below the address.
    max_end: Vec<u64>,
}

impl Guard {
    /// The guard over `all`, the critical sections of one file.
    pub fn new(all: &[CriticalSection]) -> Self {
        let mut ranges: Vec<(u64, u64, usize)> = all
            .iter()
            .enumerate()
            .map(|(i, cs)| (cs.start_ip, cs.post_commit_ip, i))
            .collect();
        ranges.sort_unstable();
        let max_end = ranges
            .iter()
            .scan(0, |m, r| {
                *m = (*m).max(r.1);
                Some(*m)
            })
            .collect();
        Guard { ranges, max_end }
    }

    /// `Err` when `addr` lies in [start_ip, post_commit_ip) of a section.
    pub fn check(&self, addr: u64) -> Result<(), AttachError> {
        match self.containing(addr) {
            Some((start, end)) => Err(Refusal::InsideSection { addr, start, end }.into()),
            None => Ok(()),
        }
    }

    /// The [start_ip, post_commit_ip) of a section that holds `addr`, if any.
    pub fn containing(&self, addr: u64) -> Option<(u64, u64)> {
        let candidates = self.ranges.partition_point(|r| r.0 <= addr);
        for i in (0..candidates).rev() {
            if self.max_end[i] <= addr {
                break;
            }
            let (start, end, _) = self.ranges[i];
            if addr < end {
                return Some((start, end));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cs(start: u64, end: u64) -> CriticalSection {
        CriticalSection {
            descriptor: 0,
            start_ip: start,
            post_commit_ip: end,
            abort_ip: end + 100,
            ..Default::default()
        }
    }

    #[test]
    fn guard_handles_overlapping_and_unsorted_sections() {
        // A long section covering a short one, given out of order.
        let all = [cs(0x3000, 0x3004), cs(0x1000, 0x2000), cs(0x1100, 0x1108)];
        let guard = Guard::new(&all);
        for addr in [0x1000, 0x1104, 0x1200, 0x1fff, 0x3003] {
            assert!(guard.check(addr).is_err(), "{addr:#x}");
        }
        for addr in [0xfff, 0x2000, 0x2fff, 0x3004] {
            assert!(guard.check(addr).is_ok(), "{addr:#x}");
        }
    }

    #[test]
    fn guard_refuses_every_address_inside_and_allows_the_edges() {
        let all = [cs(0x1000, 0x1010), cs(0x2000, 0x2004)];
        for addr in [0x1000, 0x1008, 0x100f, 0x2000, 0x2003] {
            assert!(Guard::new(&all).check(addr).is_err(), "{addr:#x}");
        }
        for addr in [0xfff, 0x1010, 0x1fff, 0x2004] {
            assert!(Guard::new(&all).check(addr).is_ok(), "{addr:#x}");
        }
    }
}
