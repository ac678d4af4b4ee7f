//! aarch64 critical sections, laid out like librseq's `rseq-arm64.h`: `adrp; add; str`
//! of the descriptor address into `rseq->rseq_cs`, then start_ip; the abort handler in
//! `__rseq_failure` is preceded by `.inst 0xd428bc00` (RSEQ_SIG).
//!
//! Same shape and labels as the x86-64 version (see there): counter_add and list_push carry
//! `rseq-marker` markers (a `nop` each, plus a record in `__rseq_markers`), list_pop plain
//! `nop` anchors; the delay loop [8, 7) is `subs; b.ne`. The CPU-mismatch branch is `b.eq`
//! over an unconditional `b` to abort_ip, because a conditional branch (+-1 MiB) might not
//! reach `__rseq_failure`.

use std::arch::asm;
use std::mem::offset_of;

use crate::percpu::{StackData, STACK_CAP};
use crate::rseq_abi::{Rseq, OFFSET_CPU_ID, OFFSET_RSEQ_CS};

use super::{STATUS_ABORTED, STATUS_CANCELLED, STATUS_COMMITTED};

rseq_marker::define_key!(
    /// Marker key (group name) of the counter_add section.
    rseq_key_workload_counter
);
rseq_marker::define_key!(
    /// Marker key (group name) of the list_push section.
    rseq_key_workload_list_push
);

/// Offset of `items[len - 1]` from `stack + len * 8` (the address pop computes).
const OFF_TOP: usize = offset_of!(StackData, items) - 8;

/// Per-CPU counter increment: one load, one add, the store is the commit.
///
/// # Safety
/// `rseq` must be the calling thread's registered `struct rseq` and `counter` must be
/// valid for reads and writes; only `cpu`'s counter may be passed for `cpu`.
#[no_mangle]
#[inline(never)]
pub unsafe extern "C" fn rseq_workload_counter_add(
    rseq: *mut Rseq,
    cpu: u32,
    counter: *mut u64,
    delay: u64,
) -> u32 {
    let status: u32;
    // SAFETY: the caller guarantees `rseq` and `counter`; the asm only touches those,
    // its own read-only descriptor, and declared registers.
    unsafe {
        asm!(
            rseq_marker::start!(key),
            "adrp {tmp}, 3f",
            "add {tmp}, {tmp}, :lo12:3f",
            "str {tmp}, [{rseq}, #{off_cs}]",
            "4:",
            "ldr {tmp:w}, [{rseq}, #{off_cpu}]",
            "cmp {tmp:w}, {cpu:w}",
            "b.eq 23f",
            "b 5f",
            "23:",
            "cbz {delay}, 7f",
            "8:",
            "subs {delay}, {delay}, #1",
            "b.ne 8b",
            "7:",
            "ldr {tmp}, [{counter}]",
            "add {tmp}, {tmp}, #1",
            "str {tmp}, [{counter}]",
            "6:",
            rseq_marker::finish!(key),
            "mov {st:w}, #{committed}",
            "9:",
            ".pushsection __rseq_cs, \"aw\"",
            ".balign 32",
            "3:",
            ".long 0, 0",
            ".quad 4b, (6b - 4b), 5f",
            ".popsection",
            ".pushsection __rseq_cs_ptr_array, \"aw\"",
            "24:",
            ".quad 3b",
            ".popsection",
            // Nothing else refers to the arrays: a no-op relocation from this function's
            // text keeps them alive under --gc-sections (as tcmalloc does).
            ".reloc 0, R_AARCH64_NONE, 24b",
            // Where the delay loop lies (see `DelayLoop` in the parent module).
            ".pushsection rseq_workload_delay_loops, \"aw\"",
            "26:",
            ".quad 4b, (8b - 4b), (7b - 4b)",
            ".popsection",
            ".reloc 0, R_AARCH64_NONE, 26b",
            ".pushsection __rseq_failure, \"ax\"",
            ".inst {sig}",
            "5:",
            rseq_marker::abort!(key),
            "mov {st:w}, #{aborted}",
            "b 9b",
            ".popsection",
            rseq = in(reg) rseq,
            cpu = in(reg) cpu,
            counter = in(reg) counter,
            delay = inout(reg) delay => _,
            st = out(reg) status,
            tmp = out(reg) _,
            off_cs = const OFFSET_RSEQ_CS,
            off_cpu = const OFFSET_CPU_ID,
            sig = const crate::rseq_abi::RSEQ_SIG,
            committed = const STATUS_COMMITTED,
            aborted = const STATUS_ABORTED,
            key = sym rseq_key_workload_counter,
            options(nostack),
        );
    }
    status
}

/// Push `item` onto `cpu`'s bounded stack; cancels (exit point) when it is full.
///
/// # Safety
/// `rseq` must be the calling thread's registered `struct rseq` and `stack` must be
/// valid for reads and writes with `len <= STACK_CAP`; only `cpu`'s stack may be
/// passed for `cpu`.
#[no_mangle]
#[inline(never)]
pub unsafe extern "C" fn rseq_workload_list_push(
    rseq: *mut Rseq,
    cpu: u32,
    stack: *mut StackData,
    item: u64,
    delay: u64,
) -> u32 {
    let status: u32;
    // SAFETY: the caller guarantees `rseq` and `stack`; the item store is bounded by
    // the `len < STACK_CAP` check, and the asm touches nothing else but its tables.
    unsafe {
        asm!(
            rseq_marker::start!(key),
            "adrp {tmp}, 3f",
            "add {tmp}, {tmp}, :lo12:3f",
            "str {tmp}, [{rseq}, #{off_cs}]",
            "4:",
            "ldr {tmp:w}, [{rseq}, #{off_cpu}]",
            "cmp {tmp:w}, {cpu:w}",
            "b.eq 23f",
            "b 5f",
            "23:",
            "cbz {delay}, 7f",
            "8:",
            "subs {delay}, {delay}, #1",
            "b.ne 8b",
            "7:",
            "ldr {tmp}, [{stack}, #{off_len}]",
            "cmp {tmp}, #{cap}",
            "b.hs 22f",
            "add {addr}, {stack}, {tmp}, lsl #3",
            "str {item}, [{addr}, #{off_items}]",
            "add {tmp}, {tmp}, #1",
            "str {tmp}, [{stack}, #{off_len}]",
            "6:",
            rseq_marker::finish!(key),
            "mov {st:w}, #{committed}",
            "b 9f",
            "22:",
            rseq_marker::abort!(key),
            "mov {st:w}, #{cancelled}",
            "9:",
            ".pushsection __rseq_cs, \"aw\"",
            ".balign 32",
            "3:",
            ".long 0, 0",
            ".quad 4b, (6b - 4b), 5f",
            ".popsection",
            ".pushsection __rseq_cs_ptr_array, \"aw\"",
            "24:",
            ".quad 3b",
            ".popsection",
            // Nothing else refers to the arrays: a no-op relocation from this function's
            // text keeps them alive under --gc-sections (as tcmalloc does).
            ".reloc 0, R_AARCH64_NONE, 24b",
            // Where the delay loop lies (see `DelayLoop` in the parent module).
            ".pushsection rseq_workload_delay_loops, \"aw\"",
            "26:",
            ".quad 4b, (8b - 4b), (7b - 4b)",
            ".popsection",
            ".reloc 0, R_AARCH64_NONE, 26b",
            ".pushsection __rseq_exit_point_array, \"aw\"",
            "25:",
            ".quad 4b, 22b",
            ".popsection",
            ".reloc 0, R_AARCH64_NONE, 25b",
            ".pushsection __rseq_failure, \"ax\"",
            ".inst {sig}",
            "5:",
            rseq_marker::abort!(key),
            "mov {st:w}, #{aborted}",
            "b 9b",
            ".popsection",
            rseq = in(reg) rseq,
            cpu = in(reg) cpu,
            stack = in(reg) stack,
            item = in(reg) item,
            delay = inout(reg) delay => _,
            st = out(reg) status,
            tmp = out(reg) _,
            addr = out(reg) _,
            off_cs = const OFFSET_RSEQ_CS,
            off_cpu = const OFFSET_CPU_ID,
            off_len = const offset_of!(StackData, len),
            off_items = const offset_of!(StackData, items),
            cap = const STACK_CAP,
            sig = const crate::rseq_abi::RSEQ_SIG,
            committed = const STATUS_COMMITTED,
            cancelled = const STATUS_CANCELLED,
            aborted = const STATUS_ABORTED,
            key = sym rseq_key_workload_list_push,
            options(nostack),
        );
    }
    status
}

/// Pop the top of `cpu`'s stack into `*out`; cancels (exit point) when it is empty.
/// `*out` is written on every path and meaningful only when the status is committed.
///
/// # Safety
/// As for [`rseq_workload_list_push`]; `out` must be valid for a write.
#[no_mangle]
#[inline(never)]
pub unsafe extern "C" fn rseq_workload_list_pop(
    rseq: *mut Rseq,
    cpu: u32,
    stack: *mut StackData,
    delay: u64,
    out: *mut u64,
) -> u32 {
    let status: u32;
    let value: u64;
    // SAFETY: the caller guarantees `rseq` and `stack`; the item load is at index
    // `len - 1` with `0 < len <= STACK_CAP`, and the asm touches nothing else but its
    // tables.
    unsafe {
        asm!(
            "mov {val}, xzr",
            "nop",
            "adrp {tmp}, 3f",
            "add {tmp}, {tmp}, :lo12:3f",
            "str {tmp}, [{rseq}, #{off_cs}]",
            "4:",
            "ldr {tmp:w}, [{rseq}, #{off_cpu}]",
            "cmp {tmp:w}, {cpu:w}",
            "b.eq 23f",
            "b 5f",
            "23:",
            "cbz {delay}, 7f",
            "8:",
            "subs {delay}, {delay}, #1",
            "b.ne 8b",
            "7:",
            "ldr {tmp}, [{stack}, #{off_len}]",
            "cbz {tmp}, 22f",
            "add {addr}, {stack}, {tmp}, lsl #3",
            "ldr {val}, [{addr}, #{off_top}]",
            "sub {tmp}, {tmp}, #1",
            "str {tmp}, [{stack}, #{off_len}]",
            "6:",
            "nop",
            "mov {st:w}, #{committed}",
            "b 9f",
            "22:",
            "nop",
            "mov {st:w}, #{cancelled}",
            "9:",
            ".pushsection __rseq_cs, \"aw\"",
            ".balign 32",
            "3:",
            ".long 0, 0",
            ".quad 4b, (6b - 4b), 5f",
            ".popsection",
            ".pushsection __rseq_cs_ptr_array, \"aw\"",
            "24:",
            ".quad 3b",
            ".popsection",
            // Nothing else refers to the arrays: a no-op relocation from this function's
            // text keeps them alive under --gc-sections (as tcmalloc does).
            ".reloc 0, R_AARCH64_NONE, 24b",
            // Where the delay loop lies (see `DelayLoop` in the parent module).
            ".pushsection rseq_workload_delay_loops, \"aw\"",
            "26:",
            ".quad 4b, (8b - 4b), (7b - 4b)",
            ".popsection",
            ".reloc 0, R_AARCH64_NONE, 26b",
            ".pushsection __rseq_exit_point_array, \"aw\"",
            "25:",
            ".quad 4b, 22b",
            ".popsection",
            ".reloc 0, R_AARCH64_NONE, 25b",
            ".pushsection __rseq_failure, \"ax\"",
            ".inst {sig}",
            "5:",
            "nop",
            "mov {st:w}, #{aborted}",
            "b 9b",
            ".popsection",
            rseq = in(reg) rseq,
            cpu = in(reg) cpu,
            stack = in(reg) stack,
            delay = inout(reg) delay => _,
            val = out(reg) value,
            st = out(reg) status,
            tmp = out(reg) _,
            addr = out(reg) _,
            off_cs = const OFFSET_RSEQ_CS,
            off_cpu = const OFFSET_CPU_ID,
            off_len = const offset_of!(StackData, len),
            off_top = const OFF_TOP,
            sig = const crate::rseq_abi::RSEQ_SIG,
            committed = const STATUS_COMMITTED,
            cancelled = const STATUS_CANCELLED,
            aborted = const STATUS_ABORTED,
            options(nostack),
        );
        // SAFETY: the caller guarantees `out` is valid for a write.
        out.write(value);
    }
    status
}
