//! `--migrate-every-ms N`: a controller thread that, every N ms, pins each worker to
//! another CPU with `sched_setaffinity`, round-robin over the CPUs the process was allowed
//! at start.
//!
//! Why: yields only provoke the section's own CPU-mismatch branch (the migration happens
//! before the section starts) and `--delay` mostly provokes preemptions on the same CPU.
//! An affinity change that excludes the CPU a worker is running on makes the kernel move
//! it at once (its migration stopper preempts the worker wherever it is), so a worker
//! spinning inside a critical section is migrated out of it, and the kernel restarts the
//! section with cause "migration".
//!
//! Only the number of affinity changes that succeeded is known here, not how many of them
//! hit a section (nor how many moved a worker at all: the first change may pin a worker
//! to the CPU it already runs on), hence the report's name `migrations_requested`.
//! Nothing is restored at the end: the workers exit right after.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Tids the controller may move, by worker index: a worker's tid while it may run,
/// 0 before and after.
///
/// A worker removes itself under the lock before it returns, and the controller calls
/// `sched_setaffinity` only under the same lock, so it never targets a thread that has
/// exited. (Unlike tgkill, `sched_setaffinity` does not check the thread group: the tid
/// of an exited worker could by then name a thread of another process.)
pub(crate) struct Movable {
    tids: Mutex<Vec<libc::pid_t>>,
}

impl Movable {
    /// Room for `n` workers, none registered.
    pub(crate) fn new(n: usize) -> Self {
        Movable {
            tids: Mutex::new(vec![0; n]),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<libc::pid_t>> {
        self.tids.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes worker `index` (the calling thread, `tid`) movable until the returned guard
    /// is dropped, which the worker does before its thread exits.
    pub(crate) fn register(&self, index: usize, tid: libc::pid_t) -> Registered<'_> {
        if let Some(t) = self.lock().get_mut(index) {
            *t = tid;
        }
        Registered {
            movable: self,
            index,
        }
    }
}

/// A worker's registration in [`Movable`]; dropping it removes the worker (on every way
/// out of the worker, including an error or a panic).
pub(crate) struct Registered<'a> {
    movable: &'a Movable,
    index: usize,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        if let Some(t) = self.movable.lock().get_mut(self.index) {
            *t = 0;
        }
    }
}

/// The controller: its period, the CPUs it moves workers between, and the flag that
/// ends it once the workers have been joined.
pub(crate) struct Controller {
    period: Duration,
    cpus: Vec<usize>,
    done: Mutex<bool>,
    wake: Condvar,
}

impl Controller {
    /// A controller moving workers every `period_ms` ms between the CPUs the calling
    /// thread may run on (the main thread, before any worker exists: the workers inherit
    /// its mask). Fails, in one line, with fewer than two such CPUs.
    pub(crate) fn new(period_ms: u64) -> Result<Self, String> {
        let cpus = allowed_cpus()?;
        if cpus.len() < 2 {
            return Err(format!(
                "--migrate-every-ms needs at least 2 CPUs to move workers between, but this \
                 process may only run on CPU {}",
                cpus.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        Ok(Controller {
            period: Duration::from_millis(period_ms),
            cpus,
            done: Mutex::new(false),
            wake: Condvar::new(),
        })
    }

    /// The CPU worker `index` is pinned to in round `round`: consecutive rounds give
    /// every worker a different CPU (there are at least two), and in one round the
    /// workers are spread over all CPUs.
    fn target(&self, index: usize, round: usize) -> usize {
        self.cpus[(index + round) % self.cpus.len()]
    }

    /// Moves every registered worker each period until [`Controller::finish`]; returns
    /// the number of `sched_setaffinity` calls that succeeded.
    pub(crate) fn run(&self, movable: &Movable) -> u64 {
        let mut requested = 0u64;
        let mut next = Instant::now().checked_add(self.period);
        for round in 0usize.. {
            if !self.sleep_until(next) {
                break;
            }
            for (index, &tid) in movable.lock().iter().enumerate() {
                if tid > 0 && pin(tid, self.target(index, round)) {
                    requested += 1;
                }
            }
            // A fixed schedule, but ticks missed (a long stall) are dropped, not caught
            // up in a burst.
            let now = Instant::now();
            next = next
                .and_then(|n| n.checked_add(self.period))
                .map(|n| n.max(now));
        }
        requested
    }

    /// Waits until `deadline` (`None`: forever); false once [`Controller::finish`] was
    /// called.
    fn sleep_until(&self, deadline: Option<Instant>) -> bool {
        let mut done = self.done.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if *done {
                return false;
            }
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            done = match left {
                Some(left) if left.is_zero() => return true,
                Some(left) => {
                    self.wake
                        .wait_timeout(done, left)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
                None => self.wake.wait(done).unwrap_or_else(PoisonError::into_inner),
            };
        }
    }

    /// Ends [`Controller::run`] at its next wake-up, which this causes at once.
    pub(crate) fn finish(&self) {
        *self.done.lock().unwrap_or_else(PoisonError::into_inner) = true;
        self.wake.notify_all();
    }
}

/// The CPUs the calling thread may run on, in increasing order.
fn allowed_cpus() -> Result<Vec<usize>, String> {
    // SAFETY: a zeroed cpu_set_t is an empty set; sched_getaffinity writes at most
    // `size_of::<cpu_set_t>()` bytes into it, and CPU_ISSET reads it for CPU numbers below
    // CPU_SETSIZE only.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Err(format!(
                "sched_getaffinity failed: {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok((0..libc::CPU_SETSIZE as usize)
            .filter(|&cpu| libc::CPU_ISSET(cpu, &set))
            .collect())
    }
}

/// Pins thread `tid` (of this process) to `cpu` alone; false if the kernel refused.
fn pin(tid: libc::pid_t, cpu: usize) -> bool {
    // SAFETY: a zeroed cpu_set_t is an empty set and `cpu` comes from `allowed_cpus`, so
    // it is below CPU_SETSIZE; sched_setaffinity only reads the set. `tid` is a live
    // worker of this process (see `Movable`).
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn controller(cpus: Vec<usize>) -> Controller {
        Controller {
            period: Duration::from_millis(1),
            cpus,
            done: Mutex::new(false),
            wake: Condvar::new(),
        }
    }

    #[test]
    fn every_round_moves_every_worker() {
        let c = controller(vec![0, 2, 5]);
        for index in 0..4 {
            for round in 0..6 {
                assert_ne!(c.target(index, round), c.target(index, round + 1));
            }
        }
        let one_round: Vec<usize> = (0..3).map(|i| c.target(i, 4)).collect();
        assert_eq!(one_round, [2, 5, 0]);
    }

    #[test]
    fn registration_ends_with_the_guard() {
        let m = Movable::new(2);
        {
            let _r = m.register(1, 42);
            assert_eq!(*m.lock(), [0, 42]);
        }
        assert_eq!(*m.lock(), [0, 0]);
    }

    #[test]
    fn finish_stops_a_controller_that_would_never_wake() {
        let c = controller(vec![0, 1]);
        let m = Movable::new(1);
        let c = &c;
        std::thread::scope(|s| {
            let h = s.spawn(move || c.sleep_until(None));
            c.finish();
            assert!(!h.join().unwrap());
        });
        // Nothing registered: nothing moved, and a finished controller returns at once.
        assert_eq!(c.run(&m), 0);
    }
}
