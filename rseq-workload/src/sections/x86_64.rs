//! x86-64 critical sections, laid out like librseq's `rseq-x86.h`.
//!
//! Shape of every section (labels as used below):
//!
//! ```text
//!         nop5                          entry anchor (0f 1f 44 00 00), outside the section
//!         lea  rax, [rip + desc]
//!         mov  qword ptr [rseq + 8], rax   descriptor store; the instruction ending at start_ip
//! 4:      cmp  dword ptr [rseq + 4], cpu    start_ip; CPU mismatch -> abort_ip
//!         jne  5f
//!         ... optional delay loop, loads, early-exit branch to 22f ...
//!         mov  [commit], reg               commit store, last instruction of the section
//! 6:      nop5                             post_commit_ip, reached only by commits
//!         status = committed
//!         jmp 9f                           (push/pop only)
//! 22:     nop5                             exit_ip, reached only by the early-exit branch
//!         status = cancelled
//! 9:                                       common end
//!
//!         __rseq_failure: 0f b9 3d <0x53053053>
//! 5:      nop5                             abort_ip, reached by the kernel and the CPU check
//!         status = aborted; jmp 9b
//! ```
//!
//! The 5-byte nops are not needed for correctness: they give a tracer places outside
//! every section where the kernel can use its optimized (nop5) uprobes.
//!
//! The asm blocks deliberately omit `options(nostack)`: an optimized uprobe turns a
//! nop5 into a `call` to a kernel trampoline that pushes 32 bytes below `rsp`, i.e.
//! into the red zone. Without `nostack` the compiler keeps nothing live below `rsp`
//! across the block (in every build profile); the cost is one `push`/`pop` pair that
//! realigns the stack at function entry and exit.
//! Numeric labels avoid 0 and 1 (LLVM reads `0b`/`1b`-like labels as binary literals
//! in Intel syntax).

use std::arch::asm;
use std::mem::offset_of;

use crate::percpu::{StackData, STACK_CAP};
use crate::rseq_abi::{Rseq, OFFSET_CPU_ID, OFFSET_RSEQ_CS};

use super::{STATUS_ABORTED, STATUS_CANCELLED, STATUS_COMMITTED};

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
            ".byte 0x0f, 0x1f, 0x44, 0x00, 0x00",
            "lea rax, [rip + 3f]",
            "mov qword ptr [{rseq} + {off_cs}], rax",
            "4:",
            "cmp dword ptr [{rseq} + {off_cpu}], {cpu:e}",
            "jne 5f",
            "test {delay}, {delay}",
            "jz 7f",
            "8:",
            "sub {delay}, 1",
            "jnz 8b",
            "7:",
            "mov rax, qword ptr [{counter}]",
            "add rax, 1",
            "mov qword ptr [{counter}], rax",
            "6:",
            ".byte 0x0f, 0x1f, 0x44, 0x00, 0x00",
            "mov {st:e}, {committed}",
            "9:",
            // struct rseq_cs { u32 version, flags; u64 start_ip, post_commit_offset, abort_ip; }
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
            ".reloc 0, R_X86_64_NONE, 24b",
            // Abort handler, preceded by the signature the kernel checks at abort_ip - 4.
            ".pushsection __rseq_failure, \"ax\"",
            ".byte 0x0f, 0xb9, 0x3d",
            ".long {sig}",
            "5:",
            ".byte 0x0f, 0x1f, 0x44, 0x00, 0x00",
            "mov {st:e}, {aborted}",
            "jmp 9b",
            ".popsection",
            rseq = in(reg) rseq,
            cpu = in(reg) cpu,
            counter = in(reg) counter,
            delay = inout(reg) delay => _,
            st = out(reg) status,
            out("rax") _,
            off_cs = const OFFSET_RSEQ_CS,
            off_cpu = const OFFSET_CPU_ID,
            sig = const crate::rseq_abi::RSEQ_SIG,
            committed = const STATUS_COMMITTED,
            aborted = const STATUS_ABORTED,
            options(),
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
            ".byte 0x0f, 0x1f, 0x44, 0x00, 0x00",
            "lea rax, [rip + 3f]",
            "mov qword ptr [{rseq} + {off_cs}], rax",
            "4:",
            "cmp dword ptr [{rseq} + {off_cpu}], {cpu:e}",
            "jne 5f",
            "test {delay}, {delay}",
            "jz 7f",
            "8:",
            "sub {delay}, 1",
            "jnz 8b",
            "7:",
            "mov rax, qword ptr [{stack} + {off_len}]",
            "cmp rax, {cap}",
            "jae 22f",
            "mov qword ptr [{stack} + rax*8 + {off_items}], {item}",
            "add rax, 1",
            "mov qword ptr [{stack} + {off_len}], rax",
            "6:",
            ".byte 0x0f, 0x1f, 0x44, 0x00, 0x00",
            "mov {st:e}, {committed}",
            "jmp 9f",
            "22:",
            ".byte 0x0f, 0x1f, 0x44, 0x00, 0x00",
            "mov {st:e}, {cancelled}",
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
            ".reloc 0, R_X86_64_NONE, 24b",
            ".pushsection __rseq_exit_point_array, \"aw\"",
            "25:",
            ".quad 4b, 22b",
            ".popsection",
            ".reloc 0, R_X86_64_NONE, 25b",
            ".pushsection __rseq_failure, \"ax\"",
            ".byte 0x0f, 0xb9, 0x3d",
            ".long {sig}",
            "5:",
            ".byte 0x0f, 0x1f, 0x44, 0x00, 0x00",
            "mov {st:e}, {aborted}",
            "jmp 9b",
            ".popsection",
            rseq = in(reg) rseq,
            cpu = in(reg) cpu,
            stack = in(reg) stack,
            item = in(reg) item,
            delay = inout(reg) delay => _,
            st = out(reg) status,
            out("rax") _,
            off_cs = const OFFSET_RSEQ_CS,
            off_cpu = const OFFSET_CPU_ID,
            off_len = const offset_of!(StackData, len),
            off_items = const offset_of!(StackData, items),
            cap = const STACK_CAP,
            sig = const crate::rseq_abi::RSEQ_SIG,
            committed = const STATUS_COMMITTED,
            cancelled = const STATUS_CANCELLED,
            aborted = const STATUS_ABORTED,
            options(),
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
            "xor {val:e}, {val:e}",
            ".byte 0x0f, 0x1f, 0x44, 0x00, 0x00",
            "lea rax, [rip + 3f]",
            "mov qword ptr [{rseq} + {off_cs}], rax",
            "4:",
            "cmp dword ptr [{rseq} + {off_cpu}], {cpu:e}",
            "jne 5f",
            "test {delay}, {delay}",
            "jz 7f",
            "8:",
            "sub {delay}, 1",
            "jnz 8b",
            "7:",
            "mov rax, qword ptr [{stack} + {off_len}]",
            "test rax, rax",
            "jz 22f",
            "mov {val}, qword ptr [{stack} + rax*8 + {off_items} - 8]",
            "sub rax, 1",
            "mov qword ptr [{stack} + {off_len}], rax",
            "6:",
            ".byte 0x0f, 0x1f, 0x44, 0x00, 0x00",
            "mov {st:e}, {committed}",
            "jmp 9f",
            "22:",
            ".byte 0x0f, 0x1f, 0x44, 0x00, 0x00",
            "mov {st:e}, {cancelled}",
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
            ".reloc 0, R_X86_64_NONE, 24b",
            ".pushsection __rseq_exit_point_array, \"aw\"",
            "25:",
            ".quad 4b, 22b",
            ".popsection",
            ".reloc 0, R_X86_64_NONE, 25b",
            ".pushsection __rseq_failure, \"ax\"",
            ".byte 0x0f, 0xb9, 0x3d",
            ".long {sig}",
            "5:",
            ".byte 0x0f, 0x1f, 0x44, 0x00, 0x00",
            "mov {st:e}, {aborted}",
            "jmp 9b",
            ".popsection",
            rseq = in(reg) rseq,
            cpu = in(reg) cpu,
            stack = in(reg) stack,
            delay = inout(reg) delay => _,
            val = out(reg) value,
            st = out(reg) status,
            out("rax") _,
            off_cs = const OFFSET_RSEQ_CS,
            off_cpu = const OFFSET_CPU_ID,
            off_len = const offset_of!(StackData, len),
            off_items = const offset_of!(StackData, items),
            sig = const crate::rseq_abi::RSEQ_SIG,
            committed = const STATUS_COMMITTED,
            cancelled = const STATUS_CANCELLED,
            aborted = const STATUS_ABORTED,
            options(),
        );
        // SAFETY: the caller guarantees `out` is valid for a write.
        out.write(value);
    }
    status
}
