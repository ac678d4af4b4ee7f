//! The per-thread "open attempt" map (`OPEN`): which CPU a thread entered a section on.
//!
//! Keyed by (thread, section) rather than by thread alone, so that a section entered by a signal
//! handler while another section's abort is pending does not overwrite the interrupted one.

/// Name of the open-attempt LRU hash map in the eBPF object.
pub const OPEN_MAP: &str = "OPEN";
/// Capacity of the open-attempt map. Committed attempts are never closed explicitly (commits are
/// not probed), so stale keys accumulate up to threads x sections; LRU eviction drops those first.
pub const OPEN_MAP_CAPACITY: u32 = 1 << 16;

/// Key of the open-attempt map.
#[inline(always)]
pub const fn open_key(tid: u32, section: u32) -> u64 {
    ((tid as u64) << 32) | section as u64
}
