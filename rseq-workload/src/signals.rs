//! Signals: SIGUSR1 interrupts workers (a signal delivered inside a critical section
//! makes the kernel abort it), SIGUSR2 opens the `--gate`, SIGINT/SIGTERM stop the run
//! early but still print the report.

use std::cell::Cell;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

static SIGNALS_RECEIVED: AtomicU64 = AtomicU64::new(0);
static SIGNAL_RESTARTS: AtomicU64 = AtomicU64::new(0);
static STOP: AtomicBool = AtomicBool::new(false);
/// The abort_ip of every section being run (0 = none), for [`signal_restarts`].
static ABORT_IPS: [AtomicU64; 3] = [const { AtomicU64::new(0) }; 3];

thread_local! {
    /// The calling thread's section attempts so far ([`next_attempt`]).
    static ATTEMPT: Cell<u64> = const { Cell::new(0) };
    /// The attempt whose restart the handler counted last: a signal that arrives while the
    /// thread still stands at abort_ip after a counted one (it was pending during the handler)
    /// is not a second restart.
    static COUNTED: Cell<u64> = const { Cell::new(u64::MAX) };
}

extern "C" fn on_sigusr1(_sig: libc::c_int, _info: *mut libc::siginfo_t, uc: *mut libc::c_void) {
    // Lock-free atomics only: async-signal-safe.
    SIGNALS_RECEIVED.fetch_add(1, Ordering::Relaxed);
    // SAFETY: with SA_SIGINFO the kernel passes the interrupted context as the third argument.
    let pc = unsafe { interrupted_pc(uc.cast()) };
    if pc != 0 && ABORT_IPS.iter().any(|a| a.load(Ordering::Relaxed) == pc) {
        // Const-initialised thread-locals without destructors: plain TLS reads and writes.
        let attempt = ATTEMPT.with(Cell::get);
        if COUNTED.with(|c| c.replace(attempt)) != attempt {
            SIGNAL_RESTARTS.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Call before each section attempt, so [`signal_restarts`] counts each attempt once.
#[inline]
pub(crate) fn next_attempt() {
    ATTEMPT.with(|a| a.set(a.get().wrapping_add(1)));
}

/// # Safety
/// `uc` must be the context a SA_SIGINFO handler received.
#[cfg(target_arch = "x86_64")]
unsafe fn interrupted_pc(uc: *const libc::ucontext_t) -> u64 {
    // SAFETY: as the caller promises.
    unsafe { (*uc).uc_mcontext.gregs[libc::REG_RIP as usize] as u64 }
}

/// # Safety
/// `uc` must be the context a SA_SIGINFO handler received.
#[cfg(target_arch = "aarch64")]
unsafe fn interrupted_pc(uc: *const libc::ucontext_t) -> u64 {
    // SAFETY: as the caller promises.
    unsafe { (*uc).uc_mcontext.pc }
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

/// Installs the SIGUSR1 handler (counts, SA_RESTART). Must run before workers start.
pub(crate) fn install_sigusr1_counter() -> Result<(), String> {
    // SAFETY: as in `install`; the handler only touches atomics.
    let rc = unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sigusr1 as *const () as libc::sighandler_t;
        sa.sa_flags = libc::SA_RESTART | libc::SA_SIGINFO;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut())
    };
    if rc != 0 {
        return Err(format!(
            "sigaction(SIGUSR1) failed: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// The sections' abort handlers, so the SIGUSR1 handler can tell a signal that restarted a
/// section: the kernel moves the pc to abort_ip before it builds the signal frame, so the
/// handler sees abort_ip as the interrupted pc. Must run before workers start.
pub(crate) fn watch_abort_ips(ips: impl IntoIterator<Item = u64>) {
    for (slot, ip) in ABORT_IPS.iter().zip(ips) {
        slot.store(ip, Ordering::Relaxed);
    }
}

/// SIGUSR1 handled with the interrupted pc at a section's abort_ip: the sections the kernel
/// restarted because of a signal, as the program itself sees them.
pub(crate) fn signal_restarts() -> u64 {
    SIGNAL_RESTARTS.load(Ordering::Relaxed)
}

/// Makes SIGINT and SIGTERM request a clean stop (report still printed).
pub(crate) fn install_stop_handlers() -> Result<(), String> {
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
pub(crate) fn block_sigusr2() -> Result<(), String> {
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
pub(crate) fn wait_for_gate() -> Result<(), String> {
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
pub(crate) fn signals_received() -> u64 {
    SIGNALS_RECEIVED.load(Ordering::Relaxed)
}

/// Whether the run should end now (SIGINT/SIGTERM, `--duration` elapsed, or a worker
/// failed).
pub(crate) fn stop_requested() -> bool {
    STOP.load(Ordering::Relaxed)
}

/// Asks every worker to finish its current iteration and return.
pub(crate) fn request_stop() {
    STOP.store(true, Ordering::Relaxed);
}

/// The calling thread's kernel tid.
pub(crate) fn gettid() -> libc::pid_t {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() }
}

/// Sends SIGUSR1 to thread `tid` of this process; false if it no longer exists.
pub(crate) fn send_sigusr1(tid: libc::pid_t) -> bool {
    // SAFETY: tgkill with our own tgid only reaches threads of this process.
    let rc = unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), tid, libc::SIGUSR1) };
    rc == 0
}

/// `--signal-period-us`: SIGUSR1 to the next worker, round robin, every `period` of wall-clock
/// time until `done` or a stop request; returns how many were sent. Unlike `--signal-every`
/// (per iteration), the rate does not follow the program's speed, so the share of attempts a
/// signal aborts (signal rate x time inside a section) is the same however much slower probes
/// outside the sections make each iteration: the baseline for probe-made aborts.
pub(crate) fn send_periodically(tids: &[AtomicI32], period: Duration, done: &AtomicBool) -> u64 {
    let (mut sent, mut next) = (0, Instant::now());
    for i in 0.. {
        if done.load(Ordering::Relaxed) || stop_requested() || tids.is_empty() {
            break;
        }
        next += period;
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        let tid = tids[i % tids.len()].load(Ordering::Relaxed);
        if tid > 0 && send_sigusr1(tid) {
            sent += 1;
        }
    }
    sent
}
