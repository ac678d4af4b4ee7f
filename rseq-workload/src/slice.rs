//! The time-slice extension (Linux 7.0+): a thread that set `request` in its rseq area may be
//! given a short extension instead of being preempted (a grant), and must then give the CPU
//! back at once with `rseq_slice_yield`. Neither is a restart of a section; the tests use this
//! to check that rseq-trace does not count them as one.

/// `PR_RSEQ_SLICE_EXTENSION` and its `SET` command, `PR_RSEQ_SLICE_EXT_ENABLE`.
const PR_RSEQ_SLICE_EXTENSION: libc::c_int = 79;
const PR_RSEQ_SLICE_EXTENSION_SET: libc::c_ulong = 2;
const PR_RSEQ_SLICE_EXT_ENABLE: libc::c_ulong = 1;
/// `rseq_slice_yield` (x86-64 and the generic table: 471, after 6.19's `listns`).
const SYS_RSEQ_SLICE_YIELD: libc::c_long = 471;

/// Turns the extension on for the calling thread (its rseq area must be registered, and
/// longer than 32 bytes).
pub(crate) fn enable() -> Result<(), String> {
    // SAFETY: prctl with integer arguments only.
    let rc = unsafe {
        libc::prctl(
            PR_RSEQ_SLICE_EXTENSION,
            PR_RSEQ_SLICE_EXTENSION_SET,
            PR_RSEQ_SLICE_EXT_ENABLE,
            0,
            0,
        )
    };
    if rc != 0 {
        return Err(format!(
            "the kernel offers no time-slice extension (Linux 7.0+ built with \
             CONFIG_RSEQ_SLICE_EXTENSION, and an area registered by \
             --extended-rseq): {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Gives the CPU back after a grant.
pub(crate) fn yield_now() {
    // SAFETY: a system call without arguments.
    unsafe { libc::syscall(SYS_RSEQ_SLICE_YIELD) };
}
