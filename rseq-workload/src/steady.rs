//! `--steady-after SECS`: the iterations of the run's last part only, so that a benchmark can
//! compare a traced program's steady state with the untraced program's, a tracer's start-up
//! (attaching, calibrating, its first decisions) left out.

use std::sync::atomic::{AtomicBool, Ordering};

/// Set by the main thread once the steady part begins.
static BEGUN: AtomicBool = AtomicBool::new(false);

/// How many iterations a worker runs between looks at [`begun`] (a few microseconds).
pub(crate) const LOOK_EVERY: u64 = 1024;

/// The steady part begins now.
pub(crate) fn begin() {
    BEGUN.store(true, Ordering::Relaxed);
}

/// Whether the steady part has begun.
pub(crate) fn begun() -> bool {
    BEGUN.load(Ordering::Relaxed)
}

/// CPU nanoseconds the calling thread has used (`CLOCK_THREAD_CPUTIME_ID`): a tracer's probes are
/// paid in it, other processes' use of the machine is not.
pub(crate) fn thread_cpu_ns() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec for the kernel to write; the clock id is a constant.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) } != 0 {
        return 0;
    }
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}
