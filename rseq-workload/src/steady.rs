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
