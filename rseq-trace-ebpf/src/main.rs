//! The eBPF side of rseq-trace: one uprobe program, attached at every safe probe point of every
//! traced critical section. Its cookie ([`rseq_common::Cookie`]) says which section and which
//! event; it counts into `COUNTS`, crediting each attempt to the CPU it entered on.
#![no_std]
#![no_main]
// The BPF target has atomic add but no compare-and-swap, so `AtomicU64::fetch_add` is not
// offered; the intrinsic lowers to the BPF atomic add instruction. The crate is built with
// RUSTC_BOOTSTRAP=1 anyway (for -Z build-std).
#![feature(core_intrinsics)]
#![allow(internal_features)]

use core::intrinsics::{atomic_xadd, AtomicOrdering};

use aya_ebpf::{
    helpers::{bpf_get_attach_cookie, bpf_get_current_pid_tgid, bpf_get_smp_processor_id},
    macros::{map, uprobe},
    maps::{Array, LruHashMap},
    programs::ProbeContext,
    EbpfContext,
};
use rseq_common::{
    counters::counter_index,
    health::Health,
    state::{open_key, OPEN_MAP_CAPACITY},
    Cookie, Event,
};

/// Number of section slots `COUNTS` was sized for; set by the agent at load time.
#[no_mangle]
static SECTION_CAPACITY: u32 = 0;

/// `[cpu][section][event]` counters; resized by the agent at load time.
#[map]
static COUNTS: Array<u64> = Array::with_max_entries(1, 0);

/// Attribution failures, indexed by [`Health`].
#[map]
static HEALTH: Array<u64> = Array::with_max_entries(Health::COUNT, 0);

/// Open attempts: (tid, section) -> CPU the attempt entered on.
#[map]
static OPEN: LruHashMap<u64, u32> = LruHashMap::with_max_entries(OPEN_MAP_CAPACITY, 0);

#[uprobe]
pub fn rseq_event(ctx: ProbeContext) -> u32 {
    // SAFETY: the helper only reads the cookie of the link that fired.
    let raw = unsafe { bpf_get_attach_cookie(ctx.as_ptr()) };
    match Cookie::decode(raw) {
        Some(cookie) => on_event(cookie),
        None => bump(&HEALTH, Health::BadCookie as u32),
    }
    0
}

#[inline(always)]
fn on_event(cookie: Cookie) {
    let tid = bpf_get_current_pid_tgid() as u32;
    let key = open_key(tid, cookie.section);
    let cpu = match cookie.event {
        Event::Entry => {
            // SAFETY: the helper has no preconditions.
            let cpu = unsafe { bpf_get_smp_processor_id() };
            if OPEN.insert(&key, &cpu, 0).is_err() {
                bump(&HEALTH, Health::StateInsertFailed as u32);
            }
            cpu
        }
        Event::Abort | Event::Cancel => {
            // SAFETY: the value is a plain u32 copied out at once; a concurrent update of the
            // same key can only come from this same thread, which is here.
            let Some(cpu) = (unsafe { OPEN.get(&key) }).copied() else {
                bump(&HEALTH, Health::UnmatchedExit as u32);
                return;
            };
            let _ = OPEN.remove(&key);
            cpu
        }
    };
    // SAFETY: a plain read of a global that the loader may have rewritten.
    let capacity = unsafe { core::ptr::read_volatile(&SECTION_CAPACITY) };
    match counter_index(cpu, cookie.section, cookie.event, capacity) {
        Some(i) => bump(&COUNTS, i),
        None => bump(&HEALTH, Health::BadCookie as u32),
    }
}

/// Atomically adds one: an abort may be credited to another CPU's slot while that CPU counts.
#[inline(always)]
fn bump(map: &Array<u64>, index: u32) {
    if let Some(p) = map.get_ptr_mut(index) {
        // SAFETY: `p` points into a live map value of 8 aligned bytes.
        unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(p, 1) };
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
