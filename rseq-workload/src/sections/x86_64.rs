//! x86-64 critical sections, laid out like librseq's `rseq-x86.h`.
//!
//! Shape of every section (labels as used below):
//!
//! ```text
//!         START marker (or nop5)        entry, outside the section
//!         lea  rax, [rip + desc]
//!         mov  qword ptr [rseq + 8], rax   descriptor store; the instruction ending at start_ip
//! 4:      cmp  dword ptr [rseq + 4], cpu    start_ip; CPU mismatch -> abort_ip
//!         jne  5f
//!         test delay, delay; jz 7f
//! 8:      sub  delay, 1                    the `--delay` spin loop, [8, 7): its offsets from
//!         jnz  8b                          start_ip go to `rseq_workload_delay_loops`
//! 7:      ... loads, early-exit branch to 22f ...
//!         mov  [commit], reg               commit store, last instruction of the section
//! 6:      FINISH marker (or nop5)          post_commit_ip, reached only by commits
//!         status = committed
//!         jmp 9f                           (push/pop only)
//! 22:     ABORT marker (or nop5)           exit_ip (a cancel), reached only by the early exit
//!         status = cancelled
//! 9:                                       common end
//!
//!         __rseq_failure: 0f b9 3d <0x53053053>
//! 5:      ABORT marker (or nop5)           abort_ip, reached by the kernel and the CPU check
//!         status = aborted; jmp 9b
//! ```
//!
//! counter_add and list_push carry `rseq-marker` markers, keyed `rseq_key_workload_counter`
//! and `rseq_key_workload_list_push` (records in the non-loadable `__rseq_markers`). A
//! marker's code is `lea rsp, [rsp-128]; nop5; lea rsp, [rsp+128]` and starts exactly at
//! the label (post_commit_ip, abort_ip, exit_ip stay where they were); the START marker is
//! straight-line code before the descriptor store. list_pop keeps plain 5-byte nop anchors
//! (`0f 1f 44 00 00`), so the binary has sections both with and without markers.
//!
//! Neither markers nor nops are needed for correctness: they give a tracer places outside
//! every section where the kernel can use its optimized (nop5) uprobes.
//!
//! The asm blocks deliberately omit `options(nostack)`: an optimized uprobe turns a
//! nop5 into a `call` to a kernel trampoline that pushes 32 bytes below `rsp`, i.e.
//! into the red zone. Without `nostack` the compiler keeps nothing live below `rsp`
//! across the block (in every build profile); the cost is one `push`/`pop` pair that
//! realigns the stack at function entry and exit. (The marker code also steps over the
//! red zone itself; list_pop's plain nops rely on the missing `nostack` alone.)
//! Numeric labels avoid 0 and 1 (LLVM reads `0b`/`1b`-like labels as binary literals
//! in Intel syntax), and 90 and 91, which the marker fragments define.

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
            rseq_marker::finish!(key),
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
            // Where the delay loop lies (see `DelayLoop` in the parent module).
            ".pushsection rseq_workload_delay_loops, \"aw\"",
            "26:",
            ".quad 4b, (8b - 4b), (7b - 4b)",
            ".popsection",
            ".reloc 0, R_X86_64_NONE, 26b",
            // Abort handler, preceded by the signature the kernel checks at abort_ip - 4.
            ".pushsection __rseq_failure, \"ax\"",
            ".byte 0x0f, 0xb9, 0x3d",
            ".long {sig}",
            "5:",
            rseq_marker::abort!(key),
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
            key = sym rseq_key_workload_counter,
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
            rseq_marker::start!(key),
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
            rseq_marker::finish!(key),
            "mov {st:e}, {committed}",
            "jmp 9f",
            "22:",
            rseq_marker::abort!(key),
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
            // Where the delay loop lies (see `DelayLoop` in the parent module).
            ".pushsection rseq_workload_delay_loops, \"aw\"",
            "26:",
            ".quad 4b, (8b - 4b), (7b - 4b)",
            ".popsection",
            ".reloc 0, R_X86_64_NONE, 26b",
            ".pushsection __rseq_exit_point_array, \"aw\"",
            "25:",
            ".quad 4b, 22b",
            ".popsection",
            ".reloc 0, R_X86_64_NONE, 25b",
            ".pushsection __rseq_failure, \"ax\"",
            ".byte 0x0f, 0xb9, 0x3d",
            ".long {sig}",
            "5:",
            rseq_marker::abort!(key),
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
            key = sym rseq_key_workload_list_push,
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
            // Where the delay loop lies (see `DelayLoop` in the parent module).
            ".pushsection rseq_workload_delay_loops, \"aw\"",
            "26:",
            ".quad 4b, (8b - 4b), (7b - 4b)",
            ".popsection",
            ".reloc 0, R_X86_64_NONE, 26b",
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

#[cfg(test)]
mod tests {
    use object::{Object, ObjectSection, ObjectSymbol};
    use rseq_marker::x86_64::{CODE, PROBE_OFFSET};
    use rseq_marker::{MarkerType, Record};

    /// `len` bytes of this process's own text at run-time address `addr`.
    fn code(addr: u64, len: usize) -> Vec<u8> {
        // SAFETY: callers pass addresses derived from this binary's own descriptors and
        // marker records, all inside its mapped, readable, never-written text.
        unsafe { std::slice::from_raw_parts(addr as usize as *const u8, len) }.to_vec()
    }

    /// Each section's delay loop record covers exactly its spin loop: `sub reg, 1` (REX.W
    /// 83 /5 01) and the `jnz` back to it, right after the `jz` that skips exactly them.
    #[test]
    fn delay_loop_records_cover_the_spin_loop() {
        for d in crate::sections::check_tables().expect("tables") {
            let begin = d.start_ip + d.delay_loop_begin_offset;
            let end = d.start_ip + d.delay_loop_end_offset;
            assert_eq!(end - begin, 6, "{d:x?}");
            let loop_code = code(begin, 6);
            assert!(
                matches!(
                    loop_code[..],
                    [0x48 | 0x49, 0x83, 0xe8..=0xef, 0x01, 0x75, 0xfa]
                ),
                "{}: {loop_code:02x?}",
                d.function
            );
            assert_eq!(code(begin - 2, 2), [0x74, 0x06], "{}: jz 7f", d.function);
        }
    }

    /// The marker records of this test binary (read from its file: the section is not
    /// loaded) sit exactly at the boundaries of the descriptors the running code uses.
    #[test]
    fn markers_sit_at_the_section_boundaries() {
        let data = std::fs::read("/proc/self/exe").expect("read /proc/self/exe");
        let file = object::File::parse(&*data).expect("parse own ELF");
        let sym = |name: &str| {
            file.symbols()
                .find(|s| s.name() == Ok(name))
                .map(|s| s.address())
                .unwrap_or_else(|| panic!("no symbol {name}"))
        };
        let bias = (super::rseq_workload_counter_add as *const () as u64)
            .wrapping_sub(sym("rseq_workload_counter_add"));
        let records: Vec<Record> = rseq_marker::records(
            file.section_by_name(rseq_marker::SECTION)
                .expect("__rseq_markers")
                .data()
                .unwrap(),
            true,
        )
        .collect();
        let keys = [
            (
                "rseq_workload_counter_add",
                sym("rseq_key_workload_counter"),
            ),
            (
                "rseq_workload_list_push",
                sym("rseq_key_workload_list_push"),
            ),
        ];
        // Only the two marked sections have records; list_pop has none.
        assert_eq!(records.len(), 3 + 4, "{records:x?}");
        for r in &records {
            assert!(r.is_usable() && r.reserved == 0, "{r:x?}");
            assert!(keys.iter().any(|k| k.1 == r.key), "unknown key: {r:x?}");
            let at = r.ip.wrapping_add(bias) - PROBE_OFFSET;
            assert_eq!(code(at, CODE.len()), CODE, "no marker code at {r:x?}");
        }
        let descriptors = crate::sections::check_tables().expect("tables");
        for (function, key) in keys {
            let d = descriptors.iter().find(|d| d.function == function).unwrap();
            // Run-time address of each marker's code (probe point - PROBE_OFFSET).
            let of = |t: MarkerType| -> Vec<u64> {
                let mut v: Vec<u64> = records
                    .iter()
                    .filter(|r| r.key == key && r.marker_type() == Some(t))
                    .map(|r| r.ip.wrapping_add(bias) - PROBE_OFFSET)
                    .collect();
                v.sort_unstable();
                v
            };
            for at in of(MarkerType::Start)
                .into_iter()
                .chain(of(MarkerType::Finish))
                .chain(of(MarkerType::Abort))
            {
                assert!(
                    !(d.start_ip..d.post_commit_ip).contains(&at),
                    "{function}: marker inside the section"
                );
            }
            // START, then `lea rax, [rip + desc]` (7 bytes), then the descriptor store
            // `mov qword ptr [reg + 8], rax` (4 or 5 bytes) ending exactly at start_ip.
            let start = of(MarkerType::Start);
            assert_eq!(start.len(), 1, "{function}");
            let lea = start[0] + CODE.len() as u64;
            assert_eq!(
                code(lea, 3),
                [0x48, 0x8d, 0x05],
                "{function}: lea rax, [rip+d]"
            );
            let mov = code(lea + 7, 2);
            assert!(
                matches!(d.start_ip - (lea + 7), 4 | 5) && matches!(mov[..], [0x48 | 0x49, 0x89]),
                "{function}: store does not end at start_ip"
            );
            // FINISH at post_commit_ip; ABORT at abort_ip (right after RSEQ_SIG) and at each
            // exit point (cancel).
            assert_eq!(of(MarkerType::Finish), [d.post_commit_ip], "{function}");
            let mut aborts = vec![d.abort_ip];
            aborts.extend(&d.exit_ips);
            aborts.sort_unstable();
            assert_eq!(of(MarkerType::Abort), aborts, "{function}");
        }
    }
}
