//! Per-CPU data touched by the critical sections: one padded counter and one small
//! bounded stack per possible CPU, allocated once before any worker starts.

use std::cell::UnsafeCell;

/// Capacity of each per-CPU stack. Small on purpose so `--burst` pushes overflow it
/// and pops drain it, which exercises both early exits (cancels).
pub const STACK_CAP: usize = 8;

/// One CPU's counter, alone on its cache line so CPUs do not false-share.
#[repr(C, align(64))]
pub struct CounterSlot {
    value: UnsafeCell<u64>,
}

/// The memory layout the list sections work on: `len` at offset 0, then the items.
#[repr(C)]
pub struct StackData {
    /// Number of valid items; the commit store of push and pop writes it.
    pub len: u64,
    /// `items[..len]` are on the stack; the rest is stale.
    pub items: [u64; STACK_CAP],
}

/// One CPU's stack, cache-line aligned.
#[repr(C, align(64))]
pub struct CpuStack {
    data: UnsafeCell<StackData>,
}

/// All per-CPU data of the run.
pub struct PerCpu {
    counters: Box<[CounterSlot]>,
    stacks: Box<[CpuStack]>,
}

// SAFETY: the cells are only written by rseq critical sections whose single commit
// store happens on the CPU that owns the slot, with no preemption or migration since
// the section started (otherwise the kernel aborts it), so writers to one slot never
// overlap. Plain reads happen only after every worker was joined.
unsafe impl Sync for PerCpu {}

impl PerCpu {
    /// Allocates zeroed data for `ncpus` CPUs.
    pub fn new(ncpus: usize) -> Self {
        let counters = (0..ncpus)
            .map(|_| CounterSlot {
                value: UnsafeCell::new(0),
            })
            .collect();
        let stacks = (0..ncpus)
            .map(|_| CpuStack {
                data: UnsafeCell::new(StackData {
                    len: 0,
                    items: [0; STACK_CAP],
                }),
            })
            .collect();
        PerCpu { counters, stacks }
    }

    /// Number of CPUs the data is sized for.
    pub fn ncpus(&self) -> usize {
        self.counters.len()
    }

    /// Raw pointer to `cpu`'s counter for the counter_add section, if `cpu` is in range.
    pub fn counter_ptr(&self, cpu: u32) -> Option<*mut u64> {
        self.counters.get(cpu as usize).map(|s| s.value.get())
    }

    /// Raw pointer to `cpu`'s stack for the list sections, if `cpu` is in range.
    pub fn stack_ptr(&self, cpu: u32) -> Option<*mut StackData> {
        self.stacks.get(cpu as usize).map(|s| s.data.get())
    }

    /// Final counter values, one per CPU. Call only after all workers have finished.
    pub fn counter_values(&mut self) -> Vec<u64> {
        self.counters
            .iter_mut()
            .map(|s| *s.value.get_mut())
            .collect()
    }

    /// Final stack contents (`items[..len]`, or `None` if `len` is out of range), one per
    /// CPU. Call only after all workers have finished.
    pub fn stack_contents(&mut self) -> Vec<Option<Vec<u64>>> {
        self.stacks
            .iter_mut()
            .map(|s| {
                let d = s.data.get_mut();
                usize::try_from(d.len)
                    .ok()
                    .and_then(|n| d.items.get(..n))
                    .map(<[u64]>::to_vec)
            })
            .collect()
    }
}

/// How many CPU slots to allocate: enough for every CPU number the kernel may report,
/// the larger of `_SC_NPROCESSORS_CONF` and the highest id in
/// `/sys/devices/system/cpu/possible` plus one.
pub fn possible_cpus() -> usize {
    // SAFETY: sysconf has no preconditions.
    let conf = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_CONF) };
    let conf = usize::try_from(conf).unwrap_or(0);
    let possible = std::fs::read_to_string("/sys/devices/system/cpu/possible")
        .ok()
        .and_then(|s| max_cpu_in_list(&s))
        .map_or(0, |m| m + 1);
    conf.max(possible).max(1)
}

/// Highest CPU number in a kernel cpu list such as `0-3,8,10-11`.
fn max_cpu_in_list(s: &str) -> Option<usize> {
    s.trim()
        .split(',')
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.rsplit('-')
                .next()
                .and_then(|n| n.trim().parse::<usize>().ok())
        })
        .try_fold(None, |acc: Option<usize>, v| {
            v.map(|v| Some(acc.map_or(v, |a| a.max(v))))
        })?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_list_parsing() {
        assert_eq!(max_cpu_in_list("0-3\n"), Some(3));
        assert_eq!(max_cpu_in_list("0"), Some(0));
        assert_eq!(max_cpu_in_list("0-3,8,10-11"), Some(11));
        assert_eq!(max_cpu_in_list(""), None);
        assert_eq!(max_cpu_in_list("x"), None);
    }

    #[test]
    fn layout_is_padded() {
        assert_eq!(std::mem::size_of::<CounterSlot>(), 64);
        assert_eq!(std::mem::offset_of!(StackData, items), 8);
        assert_eq!(std::mem::align_of::<CpuStack>(), 64);
    }
}
