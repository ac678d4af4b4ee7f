//! The kernel's rseq ABI as this program uses it: the `struct rseq` layout, the
//! signature constants, and how each thread finds (or creates) its registered area.
//!
//! glibc 2.35+ registers an rseq area for every thread and a process may only have
//! one area per thread, so we use glibc's when it has one (`__rseq_size > 0`) and
//! only register our own when glibc was told not to
//! (`GLIBC_TUNABLES=glibc.pthread.rseq=0`).

use std::cell::UnsafeCell;
use std::marker::PhantomData;
use std::ptr;

/// The signature the kernel checks in the 4 bytes before every abort_ip. It must equal
/// the value the area was registered with; glibc registers with these same values.
#[cfg(target_arch = "x86_64")]
pub const RSEQ_SIG: u32 = 0x5305_3053;
/// The signature the kernel checks in the 4 bytes before every abort_ip (`brk #0x45e0`).
#[cfg(target_arch = "aarch64")]
pub const RSEQ_SIG: u32 = 0xd428_bc00;

/// Byte offset of `cpu_id_start` in `struct rseq` (read before entering a section).
pub const OFFSET_CPU_ID_START: usize = 0;
/// Byte offset of `cpu_id` in `struct rseq` (compared inside every section).
pub const OFFSET_CPU_ID: usize = 4;
/// Byte offset of `rseq_cs` in `struct rseq` (the descriptor store right before start_ip).
pub const OFFSET_RSEQ_CS: usize = 8;

/// Size passed to `sys_rseq` for our own area: the original 32-byte ABI size, which
/// every kernel since 4.18 accepts.
const OWN_AREA_LEN: u32 = 32;
/// `RSEQ_FLAG_UNREGISTER`.
const RSEQ_FLAG_UNREGISTER: libc::c_int = 1;
/// `cpu_id` value before registration (`RSEQ_CPU_ID_UNINITIALIZED`).
const CPU_ID_UNINITIALIZED: u32 = -1i32 as u32;
/// `cpu_id` value glibc leaves when its registration failed (`RSEQ_CPU_ID_REGISTRATION_FAILED`).
const CPU_ID_REGISTRATION_FAILED: u32 = -2i32 as u32;

/// `struct rseq` from `<linux/rseq.h>`, in its original 32-byte form. The sections
/// address its fields by the offsets above, so the layout is checked at compile time.
#[repr(C, align(32))]
pub struct Rseq {
    /// CPU the thread last started running on; always a valid CPU number.
    pub cpu_id_start: u32,
    /// Current CPU, or a negative "not registered" value.
    pub cpu_id: u32,
    /// Address of the active `struct rseq_cs` descriptor, or 0.
    pub rseq_cs: u64,
    /// Deprecated per-thread flags, kept 0.
    pub flags: u32,
    /// NUMA node (kernel 6.3+).
    pub node_id: u32,
    /// Concurrency id (kernel 6.3+).
    pub mm_cid: u32,
    _pad: u32,
}

const _: () = {
    assert!(std::mem::size_of::<Rseq>() == 32);
    assert!(std::mem::offset_of!(Rseq, cpu_id_start) == OFFSET_CPU_ID_START);
    assert!(std::mem::offset_of!(Rseq, cpu_id) == OFFSET_CPU_ID);
    assert!(std::mem::offset_of!(Rseq, rseq_cs) == OFFSET_RSEQ_CS);
};

impl Rseq {
    const fn unregistered() -> Self {
        Rseq {
            cpu_id_start: 0,
            cpu_id: CPU_ID_UNINITIALIZED,
            rseq_cs: 0,
            flags: 0,
            node_id: 0,
            mm_cid: 0,
            _pad: 0,
        }
    }
}

extern "C" {
    /// Offset of glibc's per-thread `struct rseq` from the thread pointer (glibc 2.35+).
    static __rseq_offset: isize;
    /// Size of glibc's registration, 0 when glibc did not register rseq.
    static __rseq_size: u32;
}

thread_local! {
    /// Our own area, used only when glibc did not register one. Const-initialised and
    /// without a destructor, so it lives in the static TLS block for the whole life of
    /// the thread, longer than the registration that points at it.
    static OWN_AREA: UnsafeCell<Rseq> = const { UnsafeCell::new(Rseq::unregistered()) };
}

/// Who registered the rseq areas of this process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Registration {
    /// glibc registered every thread; the area is at thread pointer + offset.
    Glibc {
        /// `__rseq_offset`.
        offset: isize,
    },
    /// glibc did not register; each worker registers its own area.
    Own,
}

impl Registration {
    /// Reads glibc's exported rseq variables to decide which kind of area to use.
    pub fn detect() -> Self {
        // SAFETY: both symbols are plain data exported by glibc 2.35+, written once by
        // the dynamic loader before `main` and never again.
        let (size, offset) = unsafe { (ptr::read(&raw const __rseq_size), __rseq_offset) };
        if size > 0 {
            Registration::Glibc { offset }
        } else {
            Registration::Own
        }
    }

    /// Short name used in the JSON report.
    pub fn name(self) -> &'static str {
        match self {
            Registration::Glibc { .. } => "glibc",
            Registration::Own => "own",
        }
    }
}

/// The current thread's registered rseq area. Not `Send`: the area belongs to the
/// thread that created this value, and an own registration is undone on drop.
pub struct ThreadRseq {
    area: *mut Rseq,
    own: bool,
    _not_send: PhantomData<*mut ()>,
}

impl ThreadRseq {
    /// Finds (glibc) or registers (own) this thread's area and checks it is live.
    pub fn attach(reg: Registration) -> Result<Self, String> {
        match reg {
            Registration::Glibc { offset } => {
                let area = thread_pointer().wrapping_offset(offset) as *mut Rseq;
                // SAFETY: glibc placed this thread's `struct rseq` at tp + __rseq_offset
                // (it is part of the thread's TCB and lives as long as the thread).
                let cpu = unsafe { ptr::read_volatile(&raw const (*area).cpu_id) };
                if cpu == CPU_ID_UNINITIALIZED || cpu == CPU_ID_REGISTRATION_FAILED {
                    return Err(format!(
                        "rseq registration failed: glibc reports __rseq_size > 0 but this \
                         thread's area is not registered (cpu_id = {})",
                        cpu as i32
                    ));
                }
                Ok(ThreadRseq {
                    area,
                    own: false,
                    _not_send: PhantomData,
                })
            }
            Registration::Own => {
                let area = OWN_AREA.with(|a| a.get());
                // SAFETY: `area` is this thread's 32-byte, 32-aligned TLS `struct rseq`,
                // valid until the thread exits; `Drop` unregisters it before that.
                let rc = unsafe {
                    libc::syscall(
                        libc::SYS_rseq,
                        area,
                        OWN_AREA_LEN,
                        0,
                        RSEQ_SIG as libc::c_int,
                    )
                };
                if rc != 0 {
                    let err = std::io::Error::last_os_error();
                    return Err(format!(
                        "rseq registration failed: {err}; is this kernel built with CONFIG_RSEQ?"
                    ));
                }
                Ok(ThreadRseq {
                    area,
                    own: true,
                    _not_send: PhantomData,
                })
            }
        }
    }

    /// Address of the area, passed to the critical sections.
    pub fn area(&self) -> *mut Rseq {
        self.area
    }

    /// The CPU to run the next section for (librseq's `rseq_cpu_start()`).
    pub fn cpu_id_start(&self) -> u32 {
        // SAFETY: the area is registered for this thread (checked in `attach`) and the
        // kernel updates it concurrently, hence the volatile read.
        unsafe { ptr::read_volatile(&raw const (*self.area).cpu_id_start) }
    }
}

impl Drop for ThreadRseq {
    fn drop(&mut self) {
        if self.own {
            // SAFETY: unregisters exactly the area and signature registered in `attach`
            // on this same thread (the type is not `Send`). A failure only means the
            // kernel forgets the area at thread exit anyway, so it is ignored.
            unsafe {
                libc::syscall(
                    libc::SYS_rseq,
                    self.area,
                    OWN_AREA_LEN,
                    RSEQ_FLAG_UNREGISTER,
                    RSEQ_SIG as libc::c_int,
                );
            }
        }
    }
}

/// The thread pointer glibc's `__rseq_offset` is relative to.
#[cfg(target_arch = "x86_64")]
fn thread_pointer() -> *mut u8 {
    let tp: *mut u8;
    // SAFETY: on x86-64 Linux, fs:[0] holds the TCB's self pointer (the thread pointer).
    unsafe {
        std::arch::asm!(
            "mov {tp}, qword ptr fs:[0]",
            tp = out(reg) tp,
            options(nostack, readonly, preserves_flags)
        );
    }
    tp
}

/// The thread pointer glibc's `__rseq_offset` is relative to.
#[cfg(target_arch = "aarch64")]
fn thread_pointer() -> *mut u8 {
    let tp: *mut u8;
    // SAFETY: reading tpidr_el0 has no side effects; it holds the thread pointer.
    unsafe {
        std::arch::asm!(
            "mrs {tp}, tpidr_el0",
            tp = out(reg) tp,
            options(nomem, nostack, preserves_flags)
        );
    }
    tp
}
