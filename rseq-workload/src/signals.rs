//! Signals: SIGUSR1 interrupts workers (a signal delivered inside a critical section
//! makes the kernel abort it), SIGUSR2 opens the `--gate`, SIGINT/SIGTERM stop the run
//! early but still print the report.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

static SIGNALS_RECEIVED: AtomicU64 = AtomicU64::new(0);
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigusr1(_sig: libc::c_int) {
    // Lock-free atomic: async-signal-safe.
    SIGNALS_RECEIVED.fetch_add(1, Ordering::Relaxed);
}

extern "C" fn on_stop(_sig: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

fn install(sig: libc::c_int, handler: extern "C" fn(libc::c_int)) -> Result<(), String> {
    // SAFETY: a zeroed sigaction is a valid "no flags, empty mask" value, and the
    // handlers only touch atomics, which is async-signal-safe.
    let rc = unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = handler as libc::sighandler_t;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(sig, &sa, std::ptr::null_mut())
    };
    if rc != 0 {
        return Err(format!(
            "sigaction({sig}) failed: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Installs the SIGUSR1 handler (count only, SA_RESTART). Must run before workers start.
pub fn install_sigusr1_counter() -> Result<(), String> {
    install(libc::SIGUSR1, on_sigusr1)
}

/// Makes SIGINT and SIGTERM request a clean stop (report still printed).
pub fn install_stop_handlers() -> Result<(), String> {
    install(libc::SIGINT, on_stop)?;
    install(libc::SIGTERM, on_stop)
}

fn sigusr2_set() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise the set we own.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGUSR2);
        set
    }
}

/// Blocks SIGUSR2 in the calling thread, and so in every thread it creates later,
/// so the gate signal is only ever consumed by `sigwait` and never kills us.
pub fn block_sigusr2() -> Result<(), String> {
    let set = sigusr2_set();
    // SAFETY: valid set, old mask not requested.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(format!(
            "pthread_sigmask failed: {}",
            std::io::Error::from_raw_os_error(rc)
        ));
    }
    Ok(())
}

/// Prints `READY <pid>` on stderr and waits for SIGUSR2 (which must be blocked), so a
/// tracer can attach before any critical section runs.
pub fn wait_for_gate() -> Result<(), String> {
    let mut err = std::io::stderr().lock();
    writeln!(err, "READY {}", std::process::id())
        .and_then(|()| err.flush())
        .map_err(|e| format!("cannot write READY line: {e}"))?;
    drop(err);
    let set = sigusr2_set();
    loop {
        let mut sig: libc::c_int = 0;
        // SAFETY: valid set and out pointer.
        let rc = unsafe { libc::sigwait(&set, &mut sig) };
        if rc != 0 {
            return Err(format!(
                "sigwait failed: {}",
                std::io::Error::from_raw_os_error(rc)
            ));
        }
        if sig == libc::SIGUSR2 {
            return Ok(());
        }
    }
}

/// SIGUSR1 handled so far, in all threads.
pub fn signals_received() -> u64 {
    SIGNALS_RECEIVED.load(Ordering::Relaxed)
}

/// Whether the run should end now (SIGINT/SIGTERM, `--duration` elapsed, or a worker
/// failed).
pub fn stop_requested() -> bool {
    STOP.load(Ordering::Relaxed)
}

/// Asks every worker to finish its current iteration and return.
pub fn request_stop() {
    STOP.store(true, Ordering::Relaxed);
}

/// The calling thread's kernel tid.
pub fn gettid() -> libc::pid_t {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() }
}

/// Sends SIGUSR1 to thread `tid` of this process; false if it no longer exists.
pub fn send_sigusr1(tid: libc::pid_t) -> bool {
    // SAFETY: tgkill with our own tgid only reaches threads of this process.
    let rc = unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), tid, libc::SIGUSR1) };
    rc == 0
}
