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

/// Size passed to `sys_rseq` for our own area by default: the original 32-byte ABI size,
/// which every kernel since 4.18 accepts.
const ORIG_RSEQ_LEN: u32 = 32;
/// Room for our own area: the 32 bytes above and the fields later kernels added (7.x's
/// `struct rseq` is 64 bytes), for a registration with the kernel's feature size.
const OWN_AREA_SIZE: u32 = 64;
/// `AT_RSEQ_FEATURE_SIZE` (Linux 6.3+): how much of `struct rseq` the kernel supports.
const AT_RSEQ_FEATURE_SIZE: libc::c_ulong = 27;
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
    /// Time-slice extension (Linux 7.0+, an area registered longer than 32 bytes): byte 0
    /// `request` (user space asks to finish before being preempted), byte 1 `granted`.
    pub slice_ctrl: u32,
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
            slice_ctrl: 0,
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
    static OWN_AREA: UnsafeCell<OwnArea> = const {
        UnsafeCell::new(OwnArea { rseq: Rseq::unregistered(), _later_fields: [0; 8] })
    };
}

/// Our own area: `struct rseq` and room for the fields after its first 32 bytes.
#[repr(C, align(64))]
struct OwnArea {
    rseq: Rseq,
    _later_fields: [u32; 8],
}

const _: () = assert!(std::mem::size_of::<OwnArea>() == OWN_AREA_SIZE as usize);

/// Who registered the rseq areas of this process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Registration {
    /// glibc registered every thread; the area is at thread pointer + offset.
    Glibc {
        /// `__rseq_offset`.
        offset: isize,
    },
    /// glibc did not register; each worker registers its own area of `len` bytes.
    Own {
        /// The length passed to `sys_rseq`: 32, or the kernel's feature size (`extended`).
        len: u32,
    },
}

impl Registration {
    /// Reads glibc's exported rseq variables to decide which kind of area to use. With
    /// `extended`, an own area is registered with the length the kernel announces
    /// (`AT_RSEQ_FEATURE_SIZE`), as glibc 2.40+ does: on Linux 7.1+ a length over 32 selects
    /// the V2 ABI (IDs written only when they change).
    pub fn detect(extended: bool) -> Result<Self, String> {
        // SAFETY: both symbols are plain data exported by glibc 2.35+, written once by
        // the dynamic loader before `main` and never again.
        let (size, offset) = unsafe { (ptr::read(&raw const __rseq_size), __rseq_offset) };
        if size > 0 {
            if extended {
                return Err("--extended-rseq registers our own area: run with \
                            GLIBC_TUNABLES=glibc.pthread.rseq=0"
                    .into());
            }
            return Ok(Registration::Glibc { offset });
        }
        let len = if extended {
            // SAFETY: getauxval has no preconditions.
            let feature = unsafe { libc::getauxval(AT_RSEQ_FEATURE_SIZE) } as u32;
            if feature > OWN_AREA_SIZE {
                return Err(format!(
                    "the kernel's rseq feature size {feature} exceeds our {OWN_AREA_SIZE}-byte area"
                ));
            }
            feature.max(ORIG_RSEQ_LEN)
        } else {
            ORIG_RSEQ_LEN
        };
        Ok(Registration::Own { len })
    }

    /// Short name used in the JSON report.
    pub fn name(self) -> &'static str {
        match self {
            Registration::Glibc { .. } => "glibc",
            Registration::Own { len: ORIG_RSEQ_LEN } => "own",
            Registration::Own { .. } => "own-extended",
        }
    }

    /// The registered length: glibc's `__rseq_size`, or ours.
    pub fn area_len(self) -> u32 {
        match self {
            // SAFETY: as in `detect`.
            Registration::Glibc { .. } => unsafe { ptr::read(&raw const __rseq_size) },
            Registration::Own { len } => len,
        }
    }
}

/// The current thread's registered rseq area. Not `Send`: the area belongs to the
/// thread that created this value, and an own registration is undone on drop.
pub struct ThreadRseq {
    area: *mut Rseq,
    /// The length of our own registration; `None` for glibc's.
    own: Option<u32>,
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
                    own: None,
                    _not_send: PhantomData,
                })
            }
            Registration::Own { len } => {
                let area = OWN_AREA.with(|a| a.get()).cast::<Rseq>();
                // SAFETY: `area` is this thread's 64-byte, 64-aligned TLS area (`len` <= 64),
                // valid until the thread exits; `Drop` unregisters it before that.
                let rc =
                    unsafe { libc::syscall(libc::SYS_rseq, area, len, 0, RSEQ_SIG as libc::c_int) };
                if rc != 0 {
                    let err = std::io::Error::last_os_error();
                    return Err(format!(
                        "rseq registration failed: {err}; is this kernel built with CONFIG_RSEQ?"
                    ));
                }
                Ok(ThreadRseq {
                    area,
                    own: Some(len),
                    _not_send: PhantomData,
                })
            }
        }
    }

    /// Address of the area, passed to the critical sections.
    pub fn area(&self) -> *mut Rseq {
        self.area
    }

    /// Asks the kernel not to preempt this thread until [`Self::take_grant`] (it may give a
    /// short extension instead: a grant).
    pub fn request_slice(&self) {
        // SAFETY: the area is registered for this thread; byte 0 of `slice_ctrl` is
        // `request`, which user space writes and the kernel may clear.
        unsafe { ptr::write_volatile(self.area_slice_ctrl().cast::<u8>(), 1) }
    }

    /// Whether the kernel granted an extension since [`Self::request_slice`]; the request is
    /// withdrawn either way.
    pub fn take_grant(&self) -> bool {
        let ctrl = self.area_slice_ctrl().cast::<u8>();
        // SAFETY: as above; byte 1 is `granted`, which only the kernel writes.
        unsafe {
            ptr::write_volatile(ctrl, 0);
            ptr::read_volatile(ctrl.add(1)) != 0
        }
    }

    fn area_slice_ctrl(&self) -> *mut u32 {
        // SAFETY: only computes the field's address.
        unsafe { &raw mut (*self.area).slice_ctrl }
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
        if let Some(len) = self.own {
            // SAFETY: unregisters exactly the area, length and signature registered in
            // `attach` on this same thread (the type is not `Send`). A failure only means the
            // kernel forgets the area at thread exit anyway, so it is ignored.
            unsafe {
                libc::syscall(
                    libc::SYS_rseq,
                    self.area,
                    len,
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
