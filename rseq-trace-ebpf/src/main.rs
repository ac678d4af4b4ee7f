//! The eBPF side of rseq-trace.
//!
//! - `rseq_event`, one uprobe program attached at every safe probe point of every traced
//!   critical section. Its cookie ([`rseq_common::Cookie`]) says which section and which event;
//!   it counts per (process, section, CPU the attempt entered on).
//! - `rseq_ip_fixup`, a raw tracepoint on the kernel's rseq abort fixup: it marks the thread so
//!   that the abort probe that runs next counts the abort as a kernel restart too, with its
//!   cause and the interrupted offset ([`rseq_common::cause`]).
//! - `rseq_sched_switch`, `rseq_signal_deliver` and `rseq_update`, raw tracepoints that note
//!   what happened to a traced thread since its last return to user space: the causes.
//! - `rseq_dl_change`, a uprobe on the dynamic loader's `_dl_debug_state`: it holds a traced
//!   process while the agent attaches to libraries it just mapped.
#![no_std]
#![no_main]
// The BPF target has atomic add but no compare-and-swap, so `AtomicU64::fetch_add` is not
// offered; the intrinsic lowers to the BPF atomic add instruction. The crate is built with
// RUSTC_BOOTSTRAP=1 anyway (for -Z build-std).
#![feature(core_intrinsics)]
#![allow(internal_features)]
// aya-ebpf's map methods take `impl Borrow<K>`; passing the key by reference keeps a single copy
// of it on the stack, and every function here must stay under 64 bytes of stack (see `add`).
#![allow(clippy::needless_borrows_for_generic_args)]
// The programs are entry points the loader finds by their symbols, `pub` as aya's macros expect.
#![allow(unreachable_pub)]

use core::intrinsics::{atomic_xadd, AtomicOrdering};

use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    helpers::{
        bpf_get_attach_cookie, bpf_get_current_pid_tgid, bpf_get_smp_processor_id,
        bpf_ktime_get_ns, bpf_send_signal,
    },
    macros::{map, raw_tracepoint, uprobe},
    maps::{Array, HashMap, LruHashMap},
    programs::{ProbeContext, RawTracePointContext},
    EbpfContext,
};
use rseq_common::{
    cause::{
        Armed, Cause, Note, PositionKey, Restart, POSITIONS_CAPACITY, PREEMPTED, SIGNALLED,
        SWITCHED, THREAD_EVENTS_CAPACITY,
    },
    counters::{CountKey, Counter, Counters},
    health::Health,
    mode::Mode,
    state::{
        open_key, DL_PENDING_CAPACITY, HOLD_FRESH_NS, OPEN_MAP_CAPACITY, RESTART_MAP_CAPACITY,
        TRACED_MAP_CAPACITY,
    },
    window::Slot,
    Cookie, Event,
};

/// [`Mode`] as a byte; set by the agent at load time.
#[no_mangle]
static MODE: u8 = 0;

/// 1 where `rseq_update` runs before the fixup of the same return (Linux 6.19+); set by the
/// agent at load time ([`rseq_common::cause::UPDATE_BEFORE_FIXUP_GLOBAL`]).
#[no_mangle]
static UPDATE_BEFORE_FIXUP: u8 = 0;

/// Counters per (process, section, entry CPU); resized by the agent at load time.
#[map]
static COUNTS: HashMap<CountKey, Counters> = HashMap::with_max_entries(1, BPF_F_NO_PREALLOC);

/// One zeroed [`Counters`]: the value new `COUNTS` entries are made from, read from here
/// rather than built on the stack (see [`add`]).
#[map]
static ZERO_COUNTERS: Array<Counters> = Array::with_max_entries(1, 0);

/// Attribution failures, indexed by [`Health`].
#[map]
static HEALTH: Array<u64> = Array::with_max_entries(Health::COUNT, 0);

/// Open attempts: (tid, section) -> CPU the attempt entered on.
#[map]
static OPEN: LruHashMap<u64, u32> = LruHashMap::with_max_entries(OPEN_MAP_CAPACITY, 0);

/// Threads the kernel just redirected to an abort handler: tid -> where, from where, why.
#[map]
static RESTART: LruHashMap<u32, Restart> = LruHashMap::with_max_entries(RESTART_MAP_CAPACITY, 0);

/// What happened to traced threads since their last return to user space with rseq work.
#[map]
static THREAD_EVENTS: LruHashMap<u32, Note> =
    LruHashMap::with_max_entries(THREAD_EVENTS_CAPACITY, 0);

/// Sampled mode: each thread's last entry-probe hit, its section and CPU.
#[map]
static ARMED: LruHashMap<u32, Armed> = LruHashMap::with_max_entries(THREAD_EVENTS_CAPACITY, 0);

/// Kernel restarts per (process, section, interrupted offset).
#[map]
static POSITIONS: HashMap<PositionKey, u64> =
    HashMap::with_max_entries(POSITIONS_CAPACITY, BPF_F_NO_PREALLOC);

/// Traced processes: tgid -> 1.
#[map]
static TRACED: HashMap<u32, u8> = HashMap::with_max_entries(TRACED_MAP_CAPACITY, 0);

/// Processes stopped at a library-list change, waiting for the agent: tgid -> 1.
#[map]
static DL_PENDING: HashMap<u32, u8> = HashMap::with_max_entries(DL_PENDING_CAPACITY, 0);

/// The agent's heartbeat ([`rseq_common::state::HEARTBEAT_MAP`]).
#[map]
static HEARTBEAT: Array<u64> = Array::with_max_entries(1, 0);

/// Sampled mode's window gate and the entry hits it let through, indexed by [`Slot`].
#[map]
static WINDOW: Array<u64> = Array::with_max_entries(Slot::COUNT, 0);

const SIGSTOP: u32 = 19;
/// How far after abort_ip the abort probe may sit (the x86-64 ABORT marker's nop is at +5).
const MAX_ABORT_PROBE_OFFSET: u64 = 16;

/// On the dynamic loader's `_dl_debug_state`, called after it changed the list of loaded
/// objects and before any code of a new one runs: stop the process until the agent has
/// attached to the new objects.
#[uprobe]
pub fn rseq_dl_change(_ctx: ProbeContext) -> u32 {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if TRACED.get_ptr(&tgid).is_none() {
        return 0;
    }
    // Only while the agent is responsive: it (or else the watchdog) will continue the process.
    // SAFETY: the helper has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let fresh = HEARTBEAT
        .get(0)
        .is_some_and(|beat| now.wrapping_sub(*beat) < HOLD_FRESH_NS);
    if !fresh {
        health(Health::HoldSkipped);
    } else if DL_PENDING.insert(&tgid, &1, 0).is_ok() {
        // SAFETY: the helper signals the current process.
        unsafe { bpf_send_signal(SIGSTOP) };
    }
    0
}

/// Does nothing: the floor that `bench/` compares `rseq_event`'s cost per hit against (only in
/// objects built for the benchmarks).
#[cfg(feature = "bench")]
#[uprobe]
pub fn rseq_empty(_ctx: ProbeContext) -> u32 {
    0
}

#[uprobe]
pub fn rseq_event(ctx: ProbeContext) -> u32 {
    // SAFETY: the helper only reads the cookie of the link that fired.
    let raw = unsafe { bpf_get_attach_cookie(ctx.as_ptr()) };
    match Cookie::decode(raw) {
        Some(cookie) => on_event(&ctx, cookie),
        None => health(Health::BadCookie),
    }
    0
}

#[inline(always)]
fn on_event(ctx: &ProbeContext, cookie: Cookie) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let (tgid, tid) = ((pid_tgid >> 32) as u32, pid_tgid as u32);
    let key = open_key(tid, cookie.section);
    if TRACED.get_ptr(&tgid).is_none() {
        let _ = TRACED.insert(&tgid, &1, 0);
    }
    // SAFETY: a plain read of a global the loader may have rewritten.
    let mode = Mode::from_u8(unsafe { core::ptr::read_volatile(&MODE) });
    if mode == Mode::Sampled {
        return on_sampled_event(ctx, cookie, tgid, tid);
    }
    let (cpu, counter) = match cookie.event {
        Event::Entry => {
            // SAFETY: the helper has no preconditions.
            let cpu = unsafe { bpf_get_smp_processor_id() };
            // The thread's previous attempt usually left its entry (commits are not probed):
            // overwriting it in place is much cheaper than an LRU insert.
            match OPEN.get_ptr_mut(&key) {
                // SAFETY: `p` points into a live map value that only this thread writes.
                Some(p) => unsafe { *p = cpu },
                None => {
                    if OPEN.insert(&key, &cpu, 0).is_err() {
                        health(Health::StateInsertFailed);
                    }
                }
            }
            (cpu, Counter::Entries)
        }
        Event::Abort | Event::Cancel => {
            let cpu = if mode == Mode::Aborts {
                // No entry probes: the CPU where it happens.
                // SAFETY: the helper has no preconditions.
                unsafe { bpf_get_smp_processor_id() }
            } else {
                // SAFETY: the value is a plain u32 copied out at once; a concurrent update of
                // the same key can only come from this same thread, which is here.
                let Some(cpu) = (unsafe { OPEN.get(&key) }).copied() else {
                    health(Health::UnmatchedExit);
                    return;
                };
                let _ = OPEN.remove(&key);
                cpu
            };
            if cookie.event == Event::Cancel {
                (cpu, Counter::Cancels)
            } else {
                count_abort(ctx, tgid, tid, cookie, cpu);
                (cpu, Counter::Aborts)
            }
        }
    };
    add(tgid, cookie.section, cpu, counter);
}

/// Sampled mode: every event at the CPU where it happens (no per-thread state on the hot
/// path); entries only while the window is open, aborts and cancels always, and also in the
/// window counters while it is open.
#[inline(never)]
fn on_sampled_event(ctx: &ProbeContext, cookie: Cookie, tgid: u32, tid: u32) {
    // SAFETY: the helper has no preconditions.
    let cpu = unsafe { bpf_get_smp_processor_id() };
    let open = WINDOW.get(Slot::Open as u32).is_some_and(|v| *v != 0);
    match cookie.event {
        Event::Entry => {
            // Every hit is a cost, counted or not.
            if let Some(p) = WINDOW.get_ptr_mut(Slot::Hits as u32) {
                // SAFETY: `p` points into a live map value of 8 aligned bytes.
                unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(p, 1) };
            }
            if open {
                add(tgid, cookie.section, cpu, Counter::Entries);
            }
            armed(tid, cookie.section, cpu);
        }
        Event::Abort => {
            let restart = count_restart(ctx, tgid, tid, cookie, cpu);
            add(tgid, cookie.section, cpu, Counter::Aborts);
            // The windows measure the program's abort ratio: an abort our own entry probe made
            // is no part of it (nor of the references entries are extrapolated from), be it a
            // restart of its trap or a CPU check failed after a move during it.
            let moved =
                open && restart == RestartSeen::None && moved_after_entry(tid, cookie.section, cpu);
            if moved {
                add(tgid, cookie.section, cpu, Counter::ProbeMoves);
            } else if open && restart != RestartSeen::Probe {
                add(tgid, cookie.section, cpu, Counter::WindowAborts);
            }
        }
        Event::Cancel => {
            add(tgid, cookie.section, cpu, Counter::Cancels);
            if open {
                add(tgid, cookie.section, cpu, Counter::WindowCancels);
            }
        }
    }
}

/// Sampled mode: notes the thread's entry-probe hit, for [`made_by_probe`] and
/// [`moved_after_entry`].
#[inline(never)]
fn armed(tid: u32, section: u32, cpu: u32) {
    // SAFETY: the helper has no preconditions.
    let ns = unsafe { bpf_ktime_get_ns() };
    match ARMED.get_ptr_mut(&tid) {
        // SAFETY: `p` points into a live map value that only this thread writes.
        Some(p) => unsafe { *p = Armed { section, cpu, ns } },
        None => {
            let _ = ARMED.insert(&tid, &Armed { section, cpu, ns }, 0);
        }
    }
}

/// Whether a kernel restart of `section` at start_ip on this thread was made by its entry probe
/// on the descriptor store: the trap returned there with the section armed. In exact mode every
/// entry traps, so a restart at start_ip always follows one; in sampled mode only while entry
/// probes are attached, which the thread's last trap tells.
#[inline(never)]
fn made_by_probe(tid: u32, section: u32) -> bool {
    // SAFETY: a plain read of a global the loader may have rewritten.
    if Mode::from_u8(unsafe { core::ptr::read_volatile(&MODE) }) != Mode::Sampled {
        return true;
    }
    // SAFETY: the helper has no preconditions; the value is read in place at once.
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: as above.
    unsafe { ARMED.get(&tid) }.is_some_and(|a| a.explains(section, now))
}

/// Sampled mode: whether an abort of `section` on `cpu` that the kernel did not make followed a
/// move of the thread to another CPU since its entry probe hit ([`Armed::moved_after`]).
#[inline(never)]
fn moved_after_entry(tid: u32, section: u32, cpu: u32) -> bool {
    // SAFETY: the helper has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: the value is read in place at once; only this thread writes it.
    unsafe { ARMED.get(&tid) }.is_some_and(|a| a.moved_after(section, cpu, now))
}

/// Exact and aborts modes: an abort of an attempt that entered on `cpu`, counted as a kernel
/// restart when the kernel made it. In exact mode one the kernel did not make is our probe's
/// when the thread is now on another CPU ([`Counter::ProbeMoves`]). A function of its own so
/// that `rseq_event`'s frame stays small (see `add`).
#[inline(never)]
fn count_abort(ctx: &ProbeContext, tgid: u32, tid: u32, cookie: Cookie, cpu: u32) {
    if count_restart(ctx, tgid, tid, cookie, cpu) != RestartSeen::None {
        return;
    }
    // SAFETY: a plain read of a global the loader may have rewritten; the helper has no
    // preconditions.
    let (mode, now_on) = unsafe {
        (
            Mode::from_u8(core::ptr::read_volatile(&MODE)),
            bpf_get_smp_processor_id(),
        )
    };
    if mode == Mode::Exact && now_on != cpu {
        add(tgid, cookie.section, cpu, Counter::ProbeMoves);
    }
}

/// What [`count_restart`] found behind an abort.
#[derive(Clone, Copy, PartialEq, Eq)]
enum RestartSeen {
    /// No kernel restart: the section's own CPU check.
    None,
    /// A kernel restart the program met (preemption, migration, signal, other).
    Program,
    /// A kernel restart our own entry probe made ([`Cause::Probe`]).
    Probe,
}

/// Counts the abort of the cookie's section as a kernel restart, with its cause and position,
/// when the kernel sent this thread to the abort handler being probed (rather than the
/// section's own CPU-mismatch branch jumping there), and says which it was.
#[inline(never)]
fn count_restart(ctx: &ProbeContext, tgid: u32, tid: u32, cookie: Cookie, cpu: u32) -> RestartSeen {
    let section = cookie.section;
    // SAFETY: a plain value copied out at once.
    let Some(restart) = (unsafe { RESTART.get(&tid) }).copied() else {
        return RestartSeen::None;
    };
    let _ = RESTART.remove(&tid);
    let ip = instruction_pointer(ctx);
    // The probe is on abort_ip or on the ABORT marker's nop just after it; the uprobe reports
    // the probed address, or the address after its breakpoint byte.
    if ip < restart.abort_ip || ip - restart.abort_ip > MAX_ABORT_PROBE_OFFSET {
        health(Health::RestartUnclaimed);
        return RestartSeen::None;
    }
    let cause = if restart.offset == 0 && cookie.entry_arms && made_by_probe(tid, section) {
        Cause::Probe
    } else {
        Cause::from_u32(restart.cause)
    };
    add(tgid, section, cpu, Counter::KernelRestarts);
    add(tgid, section, cpu, Counter::restarts_by(cause));
    if cause == Cause::Probe {
        // Where our own trap left the thread, not where the program is interrupted.
        return RestartSeen::Probe;
    }
    record_position(tgid, section, restart.offset);
    RestartSeen::Program
}

/// One more kernel restart of `section` at `offset`. A function of its own so that
/// `count_restart`'s frame stays small (see `add`).
#[inline(never)]
fn record_position(tgid: u32, section: u32, offset: u32) {
    let key = PositionKey {
        tgid,
        section,
        offset,
        _pad: 0,
    };
    bump(&POSITIONS, &key);
}

#[cfg(bpf_target_arch = "x86_64")]
#[inline(always)]
fn instruction_pointer(ctx: &ProbeContext) -> u64 {
    // SAFETY: `regs` is the probe's register context, readable by kprobe-type programs.
    unsafe { (*ctx.regs).rip }
}

#[cfg(bpf_target_arch = "aarch64")]
#[inline(always)]
fn instruction_pointer(ctx: &ProbeContext) -> u64 {
    // SAFETY: as above.
    unsafe { (*ctx.regs).pc }
}

/// `rseq_ip_fixup(regs_ip, start_ip, post_commit_offset, abort_ip)`: fires only when the kernel
/// aborts a critical section, just before it sets the thread's IP to abort_ip.
#[raw_tracepoint(tracepoint = "rseq_ip_fixup")]
pub fn rseq_ip_fixup(ctx: RawTracePointContext) -> i32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let (tgid, tid) = ((pid_tgid >> 32) as u32, pid_tgid as u32);
    if TRACED.get_ptr(&tgid).is_some() {
        let regs_ip: u64 = ctx.arg(0);
        let start_ip: u64 = ctx.arg(1);
        // SAFETY: the helpers have no preconditions.
        let (cpu, now) = unsafe { (bpf_get_smp_processor_id(), bpf_ktime_get_ns()) };
        // Updated in place: a copy of the note and a new one on the stack would take this
        // program over 64 bytes of stack (see `add`).
        let cause = match THREAD_EVENTS.get_ptr_mut(&tid) {
            Some(p) => {
                // SAFETY: `p` points into a live map value that only this thread writes.
                let note = unsafe { &mut *p };
                let cause = Cause::classify(note.explaining(now), cpu);
                *note = note.used();
                cause
            }
            None => Cause::Other,
        };
        let restart = Restart {
            abort_ip: ctx.arg(3),
            offset: regs_ip.wrapping_sub(start_ip).min(u32::MAX as u64) as u32,
            cause: cause as u32,
        };
        let _ = RESTART.insert(&tid, &restart, 0);
    }
    0
}

/// `rseq_update(t)`: the kernel refreshed the thread's rseq area on its way back to user space,
/// right after any fixup (up to 6.18) or just before it (6.19+): the note ends here; on 6.19+ it
/// is set aside for a fixup of this same return ([`Note`]).
#[raw_tracepoint(tracepoint = "rseq_update")]
pub fn rseq_update(_ctx: RawTracePointContext) -> i32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if TRACED.get_ptr(&((pid_tgid >> 32) as u32)).is_some() {
        if let Some(p) = THREAD_EVENTS.get_ptr_mut(&(pid_tgid as u32)) {
            // SAFETY: a plain read of a global the loader may have rewritten.
            let before_fixup = unsafe { core::ptr::read_volatile(&UPDATE_BEFORE_FIXUP) } != 0;
            // SAFETY: the helper has no preconditions; `p` points into a live map value that
            // only this thread writes.
            unsafe {
                *p = if before_fixup {
                    (*p).updated(bpf_ktime_get_ns())
                } else {
                    (*p).used()
                }
            };
        }
    }
    0
}

/// `sched_switch(preempt, prev, next, prev_state)`, in prev's context: note that a traced thread
/// left its CPU, and whether it was preempted: still runnable (`prev_state` 0, TASK_RUNNING).
/// The `preempt` argument alone would miss the common case, a preemption on the way back to
/// user space, which the kernel makes through a plain `schedule()`.
#[raw_tracepoint(tracepoint = "sched_switch")]
pub fn rseq_sched_switch(ctx: RawTracePointContext) -> i32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if TRACED.get_ptr(&((pid_tgid >> 32) as u32)).is_some() {
        let preempt: u64 = ctx.arg(0);
        let prev_state: u64 = ctx.arg(3);
        let flag = if preempt & 0xff != 0 || prev_state as u32 == 0 {
            PREEMPTED | SWITCHED
        } else {
            SWITCHED
        };
        // SAFETY: the helper has no preconditions.
        let cpu = unsafe { bpf_get_smp_processor_id() };
        note(pid_tgid as u32, flag, Some(cpu));
    }
    0
}

/// `signal_deliver(sig, info, ka)`, in the receiving thread's context.
#[raw_tracepoint(tracepoint = "signal_deliver")]
pub fn rseq_signal_deliver(_ctx: RawTracePointContext) -> i32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if TRACED.get_ptr(&((pid_tgid >> 32) as u32)).is_some() {
        note(pid_tgid as u32, SIGNALLED, None);
    }
    0
}

#[inline(always)]
fn note(tid: u32, flag: u32, switch_cpu: Option<u32>) {
    let p = match THREAD_EVENTS.get_ptr_mut(&tid) {
        Some(p) => p,
        None => {
            let _ = THREAD_EVENTS.insert(&tid, &Note::default(), 0);
            match THREAD_EVENTS.get_ptr_mut(&tid) {
                Some(p) => p,
                None => return,
            }
        }
    };
    // SAFETY: `p` points into a live map value that only this thread's context writes.
    let live = unsafe { &mut (*p).live };
    live.flags |= flag;
    match switch_cpu {
        Some(cpu) => live.switch_cpu = cpu,
        // SAFETY: the helper has no preconditions.
        None => live.signal_ns = unsafe { bpf_ktime_get_ns() },
    }
}

/// Adds one to a counter map value, creating it.
#[inline(always)]
fn bump<K>(map: &HashMap<K, u64>, key: &K) {
    let p = match map.get_ptr_mut(key) {
        Some(p) => p,
        None => {
            let _ = map.insert(key, &0, 1);
            match map.get_ptr_mut(key) {
                Some(p) => p,
                None => return health(Health::CountsFull),
            }
        }
    };
    // SAFETY: `p` points into a live map value of 8 aligned bytes.
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(p, 1) };
}

#[inline(never)]
fn add(tgid: u32, section: u32, cpu: u32, counter: Counter) {
    let key = CountKey {
        tgid,
        section,
        cpu,
        _pad: 0,
    };
    let p = match COUNTS.get_ptr_mut(&key) {
        Some(p) => p,
        None => {
            // BPF_NOEXIST: if another CPU created it meanwhile, use theirs. The zero value
            // comes from a map: 88 bytes on the stack would take this function over 64 bytes
            // of stack. From Linux 6.14 the verifier then gives the function a private stack,
            // one per CPU and program. A uprobe program runs preemptible, so on a kernel that
            // preempts kernel code (Debian's 7.x) a second thread hitting a probe on the same
            // CPU reuses that stack and overwrites the first one's locals: a 56-byte
            // `count_restart` (64 once rounded up to 16) once wrote its position histogram
            // key half from another thread's frame. The unit test
            // `ebpf_frames::every_function_stays_on_the_kernel_stack` checks every function.
            let Some(zero) = ZERO_COUNTERS.get(0) else {
                return health(Health::CountsFull);
            };
            let _ = COUNTS.insert(&key, zero, 1);
            match COUNTS.get_ptr_mut(&key) {
                Some(p) => p,
                None => return health(Health::CountsFull),
            }
        }
    };
    // The index goes through the stack and is checked after: LLVM cannot drop the check, and
    // the verifier of Linux 6.1 (which loses the range of an index computed from a cause read
    // out of a map) then sees a bounded offset.
    let slot = counter as u32;
    // SAFETY: a read of a local.
    let i = unsafe { core::ptr::read_volatile(&slot) } as usize;
    if i >= Counter::COUNT {
        return;
    }
    // SAFETY: `p` points into a live map value; the index is in bounds (checked above).
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(&raw mut (*p).0[i], 1) };
}

#[inline(always)]
fn health(h: Health) {
    if let Some(p) = HEALTH.get_ptr_mut(h as u32) {
        // SAFETY: `p` points into a live map value of 8 aligned bytes.
        unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(p, 1) };
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
