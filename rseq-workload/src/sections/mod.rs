//! The three rseq critical sections (architecture-specific asm in the submodules), safe
//! wrappers around them, and a start-up self-check of the tables they emit.
//!
//! Each section lives in its own `#[no_mangle]` function containing exactly one asm
//! block and one descriptor, so every ELF object linking this crate (the executable, or
//! `librseq_workload_sections.so`) carries exactly three `__rseq_cs` descriptors, each
//! attributable to its enclosing symbol by its start_ip.
//!
//! [`SectionFns`] is how the executable calls them: either its own statically linked
//! copies ([`SectionFns::BUILT_IN`]) or the copies in the shared library, found with
//! `dlsym`. [`rseq_workload_sections_descriptors`] is the C entry point that checks and
//! returns the descriptors of the object it is linked into.
//!
//! Besides librseq's tables, every asm block emits one record into
//! `rseq_workload_delay_loops`: its start_ip (relocated) and the offsets from start_ip of
//! the first instruction of its `--delay` spin loop and of the first instruction after it,
//! computed by the assembler from the loop's own labels. A preemption, migration or signal
//! that hits a thread spinning in a section interrupts it inside that range, so a test can
//! check the interrupted-instruction offsets a tracer reports for kernel restarts against
//! it, without disassembling anything. It is read like the other tables, in
//! [`check_tables`], and reported with each descriptor.

#[cfg(target_arch = "aarch64")]
mod aarch64;
#[cfg(target_arch = "x86_64")]
mod x86_64;

#[cfg(target_arch = "aarch64")]
use aarch64 as arch;
#[cfg(target_arch = "x86_64")]
use x86_64 as arch;

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
compile_error!("rseq-workload has critical sections for x86_64 and aarch64 only");

pub use arch::{rseq_workload_counter_add, rseq_workload_list_pop, rseq_workload_list_push};

use std::ffi::{c_char, CStr};

use crate::percpu::{PerCpu, StackData};
use crate::rseq_abi::{Rseq, ThreadRseq, RSEQ_SIG};

/// Raw status returned by a section function when its commit store ran.
pub const STATUS_COMMITTED: u32 = 0;
/// Raw status returned when the section went through abort_ip (kernel abort or the
/// section's own CPU-mismatch branch).
pub const STATUS_ABORTED: u32 = 1;
/// Raw status returned when the section left through its exit point (stack full on
/// push, empty on pop).
pub const STATUS_CANCELLED: u32 = 2;

/// How one call into a section ended; the ground truth a tracer is compared with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The commit store ran.
    Committed,
    /// Left through abort_ip.
    Aborted,
    /// Left through the exit point without committing.
    Cancelled,
}

impl Outcome {
    fn from_raw(status: u32) -> Self {
        // The asm only ever produces the three values above; anything else would be a
        // bug in it and is reported as an abort (nothing was committed by this code).
        match status {
            STATUS_COMMITTED => Outcome::Committed,
            STATUS_CANCELLED => Outcome::Cancelled,
            _ => Outcome::Aborted,
        }
    }
}

/// Which section; indexes the ground-truth tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Section {
    /// `counters[cpu] += 1`.
    CounterAdd = 0,
    /// Push onto `cpu`'s bounded stack.
    ListPush = 1,
    /// Pop from `cpu`'s bounded stack.
    ListPop = 2,
}

impl Section {
    /// All sections, in report order.
    pub const ALL: [Section; 3] = [Section::CounterAdd, Section::ListPush, Section::ListPop];

    /// Key of the section in the JSON report.
    pub fn key(self) -> &'static str {
        match self {
            Section::CounterAdd => "counter_add",
            Section::ListPush => "list_push",
            Section::ListPop => "list_pop",
        }
    }

    /// ELF symbol enclosing the section (the tracer attributes descriptors by it).
    pub fn function(self) -> &'static str {
        match self {
            Section::CounterAdd => "rseq_workload_counter_add",
            Section::ListPush => "rseq_workload_list_push",
            Section::ListPop => "rseq_workload_list_pop",
        }
    }

    /// The section numbered `index` (`Section as u32`), as in [`RawDescriptor::section`].
    pub fn from_index(index: u32) -> Option<Self> {
        Section::ALL.get(usize::try_from(index).ok()?).copied()
    }

    fn address(self) -> usize {
        match self {
            Section::CounterAdd => rseq_workload_counter_add as *const () as usize,
            Section::ListPush => rseq_workload_list_push as *const () as usize,
            Section::ListPop => rseq_workload_list_pop as *const () as usize,
        }
    }

    /// Number of exit points (other than commit and abort) the section declares.
    fn exit_points(self) -> usize {
        match self {
            Section::CounterAdd => 0,
            Section::ListPush | Section::ListPop => 1,
        }
    }
}

/// Type of `rseq_workload_counter_add`.
pub type CounterAddFn = unsafe extern "C" fn(*mut Rseq, u32, *mut u64, u64) -> u32;
/// Type of `rseq_workload_list_push`.
pub type ListPushFn = unsafe extern "C" fn(*mut Rseq, u32, *mut StackData, u64, u64) -> u32;
/// Type of `rseq_workload_list_pop`.
pub type ListPopFn = unsafe extern "C" fn(*mut Rseq, u32, *mut StackData, u64, *mut u64) -> u32;
/// Type of [`rseq_workload_sections_descriptors`].
pub type DescriptorsFn =
    unsafe extern "C" fn(*mut RawDescriptor, usize, *mut c_char, usize) -> isize;

/// One set of the three section functions plus the descriptor query of the same ELF
/// object, with safe wrappers that run a section once.
#[derive(Clone, Copy, Debug)]
pub struct SectionFns {
    counter_add_fn: CounterAddFn,
    list_push_fn: ListPushFn,
    list_pop_fn: ListPopFn,
    descriptors_fn: DescriptorsFn,
}

impl SectionFns {
    /// The copies linked into this object (the executable's own sections).
    pub const BUILT_IN: SectionFns = SectionFns {
        counter_add_fn: rseq_workload_counter_add,
        list_push_fn: rseq_workload_list_push,
        list_pop_fn: rseq_workload_list_pop,
        descriptors_fn: rseq_workload_sections_descriptors,
    };

    /// A set from other function pointers (those of a loaded shared library).
    ///
    /// # Safety
    /// The four pointers must be this crate's `rseq_workload_counter_add`,
    /// `rseq_workload_list_push`, `rseq_workload_list_pop` and
    /// `rseq_workload_sections_descriptors` (same signatures and contracts, same
    /// per-CPU data layout and signature), all from one object that stays loaded for
    /// as long as the returned value is used.
    pub unsafe fn from_raw(
        counter_add_fn: CounterAddFn,
        list_push_fn: ListPushFn,
        list_pop_fn: ListPopFn,
        descriptors_fn: DescriptorsFn,
    ) -> Self {
        SectionFns {
            counter_add_fn,
            list_push_fn,
            list_pop_fn,
            descriptors_fn,
        }
    }

    /// Run-time address of the function enclosing `section`.
    pub fn address(&self, section: Section) -> usize {
        match section {
            Section::CounterAdd => self.counter_add_fn as usize,
            Section::ListPush => self.list_push_fn as usize,
            Section::ListPop => self.list_pop_fn as usize,
        }
    }

    /// Runs the counter_add section once for `cpu`. `None` if `cpu` has no slot.
    pub fn counter_add(
        &self,
        rseq: &ThreadRseq,
        percpu: &PerCpu,
        cpu: u32,
        delay: u64,
    ) -> Option<Outcome> {
        let slot = percpu.counter_ptr(cpu)?;
        // SAFETY: the function is this crate's counter_add (`from_raw`'s contract);
        // `rseq` is this thread's registered area (ThreadRseq is not Send), and `slot`
        // points into `percpu`, which outlives the call; the section writes the slot
        // only when it commits on `cpu`.
        let st = unsafe { (self.counter_add_fn)(rseq.area(), cpu, slot, delay) };
        Some(Outcome::from_raw(st))
    }

    /// Runs the list_push section once for `cpu`. `None` if `cpu` has no stack.
    pub fn list_push(
        &self,
        rseq: &ThreadRseq,
        percpu: &PerCpu,
        cpu: u32,
        item: u64,
        delay: u64,
    ) -> Option<Outcome> {
        let stack = percpu.stack_ptr(cpu)?;
        // SAFETY: as in `counter_add`; the section keeps `len <= STACK_CAP`.
        let st = unsafe { (self.list_push_fn)(rseq.area(), cpu, stack, item, delay) };
        Some(Outcome::from_raw(st))
    }

    /// Runs the list_pop section once for `cpu`; the value is meaningful only on a
    /// commit. `None` if `cpu` has no stack.
    pub fn list_pop(
        &self,
        rseq: &ThreadRseq,
        percpu: &PerCpu,
        cpu: u32,
        delay: u64,
    ) -> Option<(Outcome, u64)> {
        let stack = percpu.stack_ptr(cpu)?;
        let mut value = 0u64;
        // SAFETY: as in `counter_add`; `value` is a valid local the function writes
        // after its section ends.
        let st = unsafe { (self.list_pop_fn)(rseq.area(), cpu, stack, delay, &mut value) };
        Some((Outcome::from_raw(st), value))
    }

    /// The descriptors of the object these functions live in, checked there by
    /// [`check_tables`] against that object's own table bounds, at their run-time
    /// addresses.
    pub fn descriptors(&self) -> Result<Vec<RuntimeDescriptor>, String> {
        let mut raw = [RawDescriptor::default(); 8];
        let mut err: [c_char; 512] = [0; 512];
        // SAFETY: the function is this crate's descriptor query (`from_raw`'s
        // contract); both buffers are valid for the lengths passed.
        let n = unsafe {
            (self.descriptors_fn)(raw.as_mut_ptr(), raw.len(), err.as_mut_ptr(), err.len())
        };
        if n < 0 {
            // The callee NUL-terminates the message within `err`; make sure anyway.
            err[err.len() - 1] = 0;
            // SAFETY: `err` is a NUL-terminated buffer we own.
            let msg = unsafe { CStr::from_ptr(err.as_ptr()) };
            return Err(msg.to_string_lossy().into_owned());
        }
        let n = n.unsigned_abs();
        raw.get(..n)
            .ok_or_else(|| format!("{n} descriptors do not fit a buffer of {}", raw.len()))?
            .iter()
            .map(RuntimeDescriptor::from_raw)
            .collect()
    }
}

/// `struct rseq_cs` as emitted in `__rseq_cs`.
#[repr(C)]
struct RseqCs {
    version: u32,
    flags: u32,
    start_ip: u64,
    post_commit_offset: u64,
    abort_ip: u64,
}

extern "C" {
    // Linker-defined bounds of the table sections (their names are C identifiers).
    // Referencing them also keeps the otherwise unreferenced arrays alive under
    // `--gc-sections`.
    static __start___rseq_cs_ptr_array: u8;
    static __stop___rseq_cs_ptr_array: u8;
    static __start___rseq_exit_point_array: u8;
    static __stop___rseq_exit_point_array: u8;
    static __start_rseq_workload_delay_loops: u8;
    static __stop_rseq_workload_delay_loops: u8;
}

/// Copies the array of `T` between two linker-defined bounds. The array sections are
/// only byte-aligned (as librseq's are), so elements are read unaligned.
///
/// # Safety
/// `start..stop` must delimit an initialised array of `T` that is not being written.
unsafe fn table<T: Copy>(start: *const u8, stop: *const u8) -> Vec<T> {
    let len = (stop as usize).saturating_sub(start as usize) / std::mem::size_of::<T>();
    (0..len)
        // SAFETY: element `i < len` lies inside the array, guaranteed by the caller.
        .map(|i| unsafe { start.cast::<T>().add(i).read_unaligned() })
        .collect()
}

/// One descriptor as the running program itself sees it (relocated by the loader), so
/// tests can check a tracer's probe offsets against a source independent of the tracer.
///
/// The `*_ip` fields are run-time addresses; the `delay_loop_*_offset` fields are byte
/// offsets from `start_ip` (what a tracer computes as `regs_ip - start_ip`, and the same in
/// the file and in every process, whatever the load address).
#[derive(Clone, Debug, serde::Serialize)]
pub struct RuntimeDescriptor {
    pub function: &'static str,
    pub start_ip: u64,
    pub post_commit_ip: u64,
    pub abort_ip: u64,
    pub exit_ips: Vec<u64>,
    /// Offset from `start_ip` of the delay loop's first instruction (`sub`/`subs`).
    pub delay_loop_begin_offset: u64,
    /// Offset from `start_ip` of the first instruction after the delay loop's backward
    /// branch: the loop is `[begin, end)`, inside `[start_ip, post_commit_ip)`.
    pub delay_loop_end_offset: u64,
}

impl RuntimeDescriptor {
    /// The descriptor in its C form.
    fn to_raw(&self, section: Section) -> Result<RawDescriptor, String> {
        let mut exit_ips = [0u64; MAX_EXIT_IPS];
        exit_ips
            .get_mut(..self.exit_ips.len())
            .ok_or_else(|| format!("{} has too many exit points", self.function))?
            .copy_from_slice(&self.exit_ips);
        Ok(RawDescriptor {
            section: section as u32,
            n_exit_ips: self.exit_ips.len() as u32,
            start_ip: self.start_ip,
            post_commit_ip: self.post_commit_ip,
            abort_ip: self.abort_ip,
            exit_ips,
            delay_loop_begin_offset: self.delay_loop_begin_offset,
            delay_loop_end_offset: self.delay_loop_end_offset,
        })
    }

    /// The descriptor from its C form.
    pub fn from_raw(raw: &RawDescriptor) -> Result<Self, String> {
        let section = Section::from_index(raw.section)
            .ok_or_else(|| format!("descriptor of unknown section {}", raw.section))?;
        let exit_ips = usize::try_from(raw.n_exit_ips)
            .ok()
            .and_then(|n| raw.exit_ips.get(..n))
            .ok_or_else(|| format!("{}: bad exit point count", section.function()))?;
        Ok(RuntimeDescriptor {
            function: section.function(),
            start_ip: raw.start_ip,
            post_commit_ip: raw.post_commit_ip,
            abort_ip: raw.abort_ip,
            exit_ips: exit_ips.to_vec(),
            delay_loop_begin_offset: raw.delay_loop_begin_offset,
            delay_loop_end_offset: raw.delay_loop_end_offset,
        })
    }
}

/// Room for exit points in a [`RawDescriptor`] (the sections have at most one).
pub const MAX_EXIT_IPS: usize = 2;

/// A [`RuntimeDescriptor`] in the C form returned by
/// [`rseq_workload_sections_descriptors`] (all addresses are run-time addresses).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RawDescriptor {
    /// Which section: 0 counter_add, 1 list_push, 2 list_pop (`Section as u32`).
    pub section: u32,
    /// How many entries of `exit_ips` are valid.
    pub n_exit_ips: u32,
    /// `start_ip`.
    pub start_ip: u64,
    /// `start_ip + post_commit_offset`.
    pub post_commit_ip: u64,
    /// `abort_ip`.
    pub abort_ip: u64,
    /// Exit points (cancels) from `__rseq_exit_point_array`.
    pub exit_ips: [u64; MAX_EXIT_IPS],
    /// Delay loop begin, as an offset from `start_ip` (from `rseq_workload_delay_loops`).
    /// Appended after the original fields; the executable and the library are built from
    /// the same source, so both sides always agree on this layout.
    pub delay_loop_begin_offset: u64,
    /// Delay loop end (exclusive), as an offset from `start_ip`.
    pub delay_loop_end_offset: u64,
}

/// Runs [`check_tables`] inside the ELF object this function is linked into (so it sees
/// that object's own `__start___rseq_cs_ptr_array`... bounds: the executable's for the
/// built-in sections, the library's in `librseq_workload_sections.so`) and returns its
/// descriptors at their run-time addresses.
///
/// Returns the number of descriptors (3) and writes the first `min(n, cap)` of them to
/// `out`; on failure returns -1 and writes the reason to `err`, NUL-terminated and
/// truncated to `err_len` bytes.
///
/// # Safety
/// `out` must be valid for `cap` writes and `err` for `err_len` writes (either may be
/// null when its length is 0).
#[no_mangle]
pub unsafe extern "C" fn rseq_workload_sections_descriptors(
    out: *mut RawDescriptor,
    cap: usize,
    err: *mut c_char,
    err_len: usize,
) -> isize {
    let result = check_tables().and_then(|found| {
        found
            .iter()
            .map(|d| {
                let section = Section::ALL
                    .into_iter()
                    .find(|s| s.function() == d.function)
                    .ok_or_else(|| format!("unknown function {}", d.function))?;
                d.to_raw(section)
            })
            .collect::<Result<Vec<_>, String>>()
    });
    match result {
        Ok(raw) => {
            for (i, r) in raw.iter().take(cap).enumerate() {
                // SAFETY: `i < cap`, and the caller guarantees `out` for `cap` writes.
                unsafe { out.add(i).write(*r) };
            }
            raw.len() as isize
        }
        Err(msg) => {
            if err_len > 0 {
                let n = msg.len().min(err_len - 1);
                // SAFETY: `n + 1 <= err_len` bytes, which the caller guarantees
                // writable; `msg` is a distinct Rust allocation.
                unsafe {
                    std::ptr::copy_nonoverlapping(msg.as_ptr(), err.cast::<u8>(), n);
                    err.add(n).write(0);
                }
            }
            -1
        }
    }
}

/// Verifies at start-up, on the relocated tables of the running binary, what the
/// tracer relies on: exactly one descriptor per section function, version and flags
/// 0, the signature right before every abort_ip, and one exit point each for push and
/// pop; and, for the tests, exactly one delay loop record per section, lying inside it.
/// A mismatch means the compiler duplicated or dropped an asm block. Returns the
/// descriptors as relocated in this process.
pub fn check_tables() -> Result<Vec<RuntimeDescriptor>, String> {
    // SAFETY: the linker defines these bounds around the arrays our asm emits (8-byte
    // pointers, 16-byte pairs, 24-byte delay loop records), relocated by the loader
    // before main and never written.
    let (ptrs, exits, delay_loops): (Vec<u64>, Vec<[u64; 2]>, Vec<[u64; 3]>) = unsafe {
        (
            table(
                &raw const __start___rseq_cs_ptr_array,
                &raw const __stop___rseq_cs_ptr_array,
            ),
            table(
                &raw const __start___rseq_exit_point_array,
                &raw const __stop___rseq_exit_point_array,
            ),
            table(
                &raw const __start_rseq_workload_delay_loops,
                &raw const __stop_rseq_workload_delay_loops,
            ),
        )
    };
    if ptrs.len() != Section::ALL.len() {
        return Err(format!(
            "binary has {} rseq descriptors, expected {}",
            ptrs.len(),
            Section::ALL.len()
        ));
    }
    let mut starts = [0u64; 3];
    let mut found = Vec::new();
    for &p in &ptrs {
        // SAFETY: every pointer in __rseq_cs_ptr_array is the address of a 32-byte
        // descriptor in __rseq_cs emitted by our asm.
        let cs = unsafe { &*(p as usize as *const RseqCs) };
        let owner = Section::ALL
            .iter()
            .copied()
            .filter(|s| (s.address() as u64) <= cs.start_ip)
            .max_by_key(|s| s.address())
            .ok_or_else(|| format!("descriptor {p:#x} has a start_ip before all sections"))?;
        let idx = owner as usize;
        if starts[idx] != 0 {
            return Err(format!("{} has more than one descriptor", owner.function()));
        }
        starts[idx] = cs.start_ip;
        let mut loops = delay_loops.iter().filter(|r| r[0] == cs.start_ip);
        let (Some(&[_, begin, end]), None) = (loops.next(), loops.next()) else {
            return Err(format!(
                "{} does not have exactly one delay loop record",
                owner.function()
            ));
        };
        if !(begin < end && end <= cs.post_commit_offset) {
            return Err(format!(
                "delay loop [{begin:#x}, {end:#x}) of {} is not inside its section",
                owner.function()
            ));
        }
        found.push(RuntimeDescriptor {
            function: owner.function(),
            start_ip: cs.start_ip,
            post_commit_ip: cs.start_ip + cs.post_commit_offset,
            abort_ip: cs.abort_ip,
            exit_ips: exits
                .iter()
                .filter(|e| e[0] == cs.start_ip)
                .map(|e| e[1])
                .collect(),
            delay_loop_begin_offset: begin,
            delay_loop_end_offset: end,
        });
        if cs.version != 0 || cs.flags != 0 || cs.post_commit_offset == 0 {
            return Err(format!("descriptor of {} is malformed", owner.function()));
        }
        // SAFETY: abort_ip points into our own mapped, readable text; the 4 bytes before
        // it are the signature emitted by the asm.
        let sig = unsafe { std::ptr::read_unaligned((cs.abort_ip as usize - 4) as *const u32) };
        if sig != RSEQ_SIG {
            return Err(format!(
                "abort_ip of {} is not preceded by the rseq signature",
                owner.function()
            ));
        }
    }
    for s in Section::ALL {
        let n = exits.iter().filter(|e| e[0] == starts[s as usize]).count();
        if n != s.exit_points() {
            return Err(format!("{} has {n} exit points", s.function()));
        }
    }
    if exits.len() != Section::ALL.iter().map(|s| s.exit_points()).sum::<usize>() {
        return Err("exit point table has entries for unknown sections".to_string());
    }
    if delay_loops.len() != Section::ALL.len() {
        return Err("delay loop table has entries for unknown sections".to_string());
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_consistent() {
        assert_eq!(check_tables().map(|d| d.len()), Ok(3));
    }

    #[test]
    fn delay_loops_lie_inside_their_sections() {
        for d in check_tables().expect("tables") {
            let (begin, end) = (d.delay_loop_begin_offset, d.delay_loop_end_offset);
            // At least the CPU check comes first; at least the commit store comes after.
            assert!(0 < begin && begin < end, "{d:x?}");
            assert!(d.start_ip + end < d.post_commit_ip, "{d:x?}");
        }
    }

    #[test]
    fn descriptors_round_trip_through_the_c_entry_point() {
        let direct = check_tables().expect("tables");
        let via_c = SectionFns::BUILT_IN.descriptors().expect("descriptors");
        assert_eq!(format!("{direct:?}"), format!("{via_c:?}"));
        for s in Section::ALL {
            let d = via_c.iter().find(|d| d.function == s.function()).unwrap();
            let f = SectionFns::BUILT_IN.address(s) as u64;
            assert!(f < d.start_ip && d.start_ip < d.post_commit_ip, "{d:x?}");
        }
        // A too small buffer still reports the count and writes only what fits.
        let mut one = [RawDescriptor::default(); 1];
        // SAFETY: `one` holds 1 element; no error buffer (length 0).
        let n = unsafe {
            rseq_workload_sections_descriptors(one.as_mut_ptr(), 1, std::ptr::null_mut(), 0)
        };
        assert_eq!(n, 3);
        assert_eq!(
            RuntimeDescriptor::from_raw(&one[0]).unwrap().function,
            direct[0].function
        );
        assert!(RuntimeDescriptor::from_raw(&RawDescriptor {
            section: 3,
            ..RawDescriptor::default()
        })
        .is_err());
    }

    #[test]
    fn sections_run_and_keep_invariants() {
        let reg = crate::rseq_abi::Registration::detect(false).expect("registration");
        let rseq = ThreadRseq::attach(reg).expect("rseq area");
        let percpu = PerCpu::new(crate::percpu::possible_cpus());
        let fns = SectionFns::BUILT_IN;
        let (mut commits, mut pushed, mut popped) = (0u64, 0u64, 0u64);
        for i in 0..1000u64 {
            let cpu = rseq.cpu_id_start();
            if fns.counter_add(&rseq, &percpu, cpu, 0) == Some(Outcome::Committed) {
                commits += 1;
            }
            let cpu = rseq.cpu_id_start();
            if i % 20 < 10 {
                if fns.list_push(&rseq, &percpu, cpu, i + 1, 0) == Some(Outcome::Committed) {
                    pushed += 1;
                }
            } else if let Some((Outcome::Committed, v)) = fns.list_pop(&rseq, &percpu, cpu, 0) {
                assert!(v > 0 && v <= i);
                popped += 1;
            }
        }
        let mut percpu = percpu;
        assert_eq!(percpu.counter_values().iter().sum::<u64>(), commits);
        let held: usize = percpu.stack_contents().iter().flatten().map(Vec::len).sum();
        assert_eq!(held as u64, pushed - popped);
        // A CPU that does not exist is refused, not run.
        assert_eq!(fns.counter_add(&rseq, &percpu, u32::MAX, 0), None);
    }
}
