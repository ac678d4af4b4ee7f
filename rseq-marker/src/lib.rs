//! START / FINISH / ABORT markers for rseq critical sections.
//!
//! Code that uses restartable sequences puts markers, grouped by a *key*, where a critical
//! section is entered and wherever it is left. Each marker is a tiny piece of machine code (the
//! *probe point*) plus a 24-byte record in the ELF section `__rseq_markers`, so a tracer such
//! as rseq-trace finds every entry and exit of the group without reading, decoding or probing
//! the inside of the section. The table format is specified in `docs/marker-table.md` of the
//! rseq-trace repository; `include/rseq_marker.h` produces the same code and records from C.
//!
//! # Why markers
//!
//! * **Cheap probes.** A uprobe on an ordinary instruction costs an `int3` trap plus a single
//!   step, about 10 µs per hit. On x86-64 the kernel turns a uprobe on a 5-byte nop
//!   (`0f 1f 44 00 00`) into a `call` to a trampoline (an *optimized uprobe*), about 0.5 µs.
//!   Every marker's probe point is such a nop. On aarch64 it is a plain `nop`.
//! * **Red zone.** That optimized `call` pushes a return address (and the trampoline saves
//!   registers) below `rsp`, i.e. into the 128-byte red zone where a leaf function may keep
//!   live data. The x86-64 marker code therefore moves `rsp` past the red zone around the nop:
//!   `lea rsp, [rsp-128]`; nop5; `lea rsp, [rsp+128]`. `lea` leaves the flags alone, so a
//!   marker may sit between a `cmp` and its `jcc`. The user's asm block may keep
//!   `options(nostack)`. aarch64 has no red zone and uprobes there are not calls.
//! * **No run-time cost for the table.** `__rseq_markers` is not loadable (no `SHF_ALLOC`):
//!   it is never mapped or relocated by the dynamic loader. The static linker resolves its
//!   addresses to link-time values (like DWARF), in executables, PIE and shared objects alike.
//!   With nobody tracing, a marker costs three cheap instructions (x86-64) or one `nop`.
//!
//! # Usage
//!
//! Define a key (a 1-byte `#[no_mangle]` static whose symbol names the group) with
//! [`define_key!`], pass it to `asm!` as a `sym` operand, and paste [`start!`], [`finish!`]
//! and [`abort!`] fragments into the template:
//!
//! ```no_run
//! # #[cfg(target_arch = "x86_64")]
//! # mod demo {
//! use core::arch::asm;
//!
//! rseq_marker::define_key!(pub rseq_key_my_counter);
//!
//! /// # Safety
//! /// `rseq` is the thread's registered `struct rseq`; `counter` is `cpu`'s counter.
//! pub unsafe fn add(rseq: *mut u8, cpu: u32, counter: *mut u64) -> u32 {
//!     let status: u32;
//!     unsafe {
//!         asm!(
//!             rseq_marker::start!(key),             // entry: before the descriptor store
//!             "lea rax, [rip + 3f]",
//!             "mov qword ptr [{rseq} + 8], rax",
//!             "4:",                                 // start_ip
//!             "cmp dword ptr [{rseq} + 4], {cpu:e}",
//!             "jne 5f",
//!             "add qword ptr [{counter}], 1",       // commit
//!             "6:",                                 // post_commit_ip
//!             rseq_marker::finish!(key),
//!             "xor {st:e}, {st:e}",
//!             "9:",
//!             ".pushsection __rseq_cs, \"aw\"",
//!             ".balign 32",
//!             "3:",
//!             ".long 0, 0",
//!             ".quad 4b, (6b - 4b), 5f",
//!             ".popsection",
//!             ".pushsection __rseq_failure, \"ax\"",
//!             ".byte 0x0f, 0xb9, 0x3d",
//!             ".long 0x53053053",                   // RSEQ_SIG
//!             "5:",                                 // abort_ip
//!             rseq_marker::abort!(key),
//!             "mov {st:e}, 1",
//!             "jmp 9b",
//!             ".popsection",
//!             rseq = in(reg) rseq,
//!             cpu = in(reg) cpu,
//!             counter = in(reg) counter,
//!             st = out(reg) status,
//!             out("rax") _,
//!             key = sym rseq_key_my_counter,
//!         );
//!     }
//!     status
//! }
//! # }
//! ```
//!
//! `start!(key)` refers to the asm operand named `key`; any operand name works
//! (`start!(counter_key)` with `counter_key = sym ...`), and `start!()` is short for
//! `start!(key)`. One asm block may hold any number of markers, of one or several keys.
//! Each fragment is a string literal (built with `concat!`), so it can also be combined with
//! other literals in `concat!`.
//!
//! # Rules (what keeps the traced program correct)
//!
//! * **Never inside `[start_ip, post_commit_ip)`.** A probe hit inside a critical section runs
//!   out of line; a preemption at that moment makes the kernel drop the section's protection
//!   and the commit later happens unprotected. Put the marker *at* `post_commit_ip` (its code
//!   starts there, which is outside the section), never before it.
//! * **START** goes before the store of the descriptor address into `rseq->rseq_cs`, with only
//!   straight-line code (no branch, no label jumped to) between the marker and that store, so
//!   that every attempt passes it exactly once. The store must still be the instruction ending
//!   right at start_ip.
//! * **FINISH** goes at post_commit_ip, on the commit path only.
//! * **ABORT** at an abort handler must start *right at* abort_ip, i.e. immediately after the
//!   4-byte `RSEQ_SIG` (tools recognise an abort handler by the signature right before the
//!   marker code). ABORT anywhere else (at an exit point of the section) means a *cancel*.
//! * Keys are compared by address: use one key object per group, in one place.
//!
//! # Labels used
//!
//! Each fragment defines the numeric local labels **`90`** (the probe point) and **`91`**
//! (the record) and refers to them backwards right away, so several markers in one asm block
//! never clash. The user's own `90b`/`91b` references must not cross a marker: use other
//! label numbers (and, in Intel syntax, avoid labels made only of the digits 0 and 1, which
//! LLVM reads as binary literals in `0b`/`1b`-like references).
//!
//! # Garbage collection and keep-alive
//!
//! Each fragment also emits `.reloc 0, R_<ARCH>_NONE, 91b` in the section the marker is in.
//! GNU ld's `--gc-sections` otherwise discards non-loadable sections that carry relocations
//! (lld keeps them). The effect is that the records of a section live as long as its code,
//! and that a `__rseq_markers` input section that is kept keeps the code and keys it refers
//! to. If a function is discarded anyway (lld), its records read `ip == 0` and are ignored.
//!
//! # Encoding
//!
//! The x86-64 code is emitted as `.byte` directives, so the fragments work in asm blocks with
//! `options(att_syntax)` as well. `__rseq_markers` is declared `""` (no flags) and
//! `@progbits` (`%progbits` on aarch64).
#![no_std]
#![deny(missing_docs)]

/// Name of the ELF section holding the marker records.
pub const SECTION: &str = "__rseq_markers";
/// Size of one record in bytes.
pub const RECORD_SIZE: usize = 24;
/// Alignment of the section and of every record.
pub const RECORD_ALIGN: usize = 8;
/// The record format version written by this crate (field `version`).
pub const VERSION: u16 = 1;

/// What a marker marks (field `type` of a record).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u16)]
pub enum MarkerType {
    /// Entry: every attempt passes it once, before the descriptor store.
    Start = 1,
    /// Commit: at post_commit_ip.
    Finish = 2,
    /// Abort (at an abort handler, right after `RSEQ_SIG`) or cancel (anywhere else).
    Abort = 3,
}

impl MarkerType {
    /// The type for a raw `type` field; `None` for values this version does not know.
    pub const fn from_raw(raw: u16) -> Option<Self> {
        match raw {
            1 => Some(MarkerType::Start),
            2 => Some(MarkerType::Finish),
            3 => Some(MarkerType::Abort),
            _ => None,
        }
    }

    /// The raw `type` field.
    pub const fn raw(self) -> u16 {
        self as u16
    }
}

/// One record of `__rseq_markers`, as read from a file (link-time addresses).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Record {
    /// Link-time address of the probe point (the 5-byte nop on x86-64, the `nop` on aarch64).
    pub ip: u64,
    /// Link-time address of the key object; its symbol names the group.
    pub key: u64,
    /// Raw type, see [`MarkerType`].
    pub kind: u16,
    /// Format version, [`VERSION`] for records this crate writes.
    pub version: u16,
    /// Reserved, 0.
    pub reserved: u32,
}

impl Record {
    /// Decodes the first [`RECORD_SIZE`] bytes of `bytes` in the given byte order; `None` if
    /// there are fewer.
    pub fn parse(bytes: &[u8], little_endian: bool) -> Option<Record> {
        let b = bytes.get(..RECORD_SIZE)?;
        let u64_at = |o: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[o..o + 8]);
            if little_endian {
                u64::from_le_bytes(a)
            } else {
                u64::from_be_bytes(a)
            }
        };
        let u16_at = |o: usize| {
            let a = [b[o], b[o + 1]];
            if little_endian {
                u16::from_le_bytes(a)
            } else {
                u16::from_be_bytes(a)
            }
        };
        let a = [b[20], b[21], b[22], b[23]];
        Some(Record {
            ip: u64_at(0),
            key: u64_at(8),
            kind: u16_at(16),
            version: u16_at(18),
            reserved: if little_endian {
                u32::from_le_bytes(a)
            } else {
                u32::from_be_bytes(a)
            },
        })
    }

    /// The marker type, `None` if the raw type is unknown.
    pub fn marker_type(&self) -> Option<MarkerType> {
        MarkerType::from_raw(self.kind)
    }

    /// Whether a tool should use the record: known version and type, and neither address 0
    /// (which is what a linker writes for a garbage-collected function or key).
    pub fn is_usable(&self) -> bool {
        self.version == VERSION && self.marker_type().is_some() && self.ip != 0 && self.key != 0
    }
}

/// Iterates over the records of a `__rseq_markers` section's contents. A trailing partial
/// record is ignored.
pub fn records(section: &[u8], little_endian: bool) -> impl Iterator<Item = Record> + '_ {
    section
        .chunks_exact(RECORD_SIZE)
        .filter_map(move |c| Record::parse(c, little_endian))
}

/// The x86-64 marker code.
pub mod x86_64 {
    /// The whole marker code: `lea rsp, [rsp-128]`; `nopl 0(%rax,%rax,1)`;
    /// `lea rsp, [rsp+128]`.
    pub const CODE: [u8; 18] = [
        0x48, 0x8d, 0x64, 0x24, 0x80, // lea rsp, [rsp-128]
        0x0f, 0x1f, 0x44, 0x00, 0x00, // nop5: the probe point
        0x48, 0x8d, 0xa4, 0x24, 0x80, 0x00, 0x00, 0x00, // lea rsp, [rsp+128]
    ];
    /// The probe point's bytes, found at a record's `ip`.
    pub const PROBE: [u8; 5] = [0x0f, 0x1f, 0x44, 0x00, 0x00];
    /// Distance from the start of the marker code to the probe point (`ip`): an ABORT marker
    /// is at an abort handler when the 4 bytes at `ip - PROBE_OFFSET - 4` are `RSEQ_SIG`.
    pub const PROBE_OFFSET: u64 = 5;
}

/// The aarch64 marker code.
pub mod aarch64 {
    /// The whole marker code: `nop` (`0xd503201f`), which is also the probe point.
    pub const CODE: [u8; 4] = 0xd503_201f_u32.to_le_bytes();
    /// The probe point's bytes, found at a record's `ip`.
    pub const PROBE: [u8; 4] = CODE;
    /// Distance from the start of the marker code to the probe point (`ip`).
    pub const PROBE_OFFSET: u64 = 0;
}

/// Internal: the asm fragment of one marker. `$type` is the record type as a literal.
#[cfg(target_arch = "x86_64")]
#[doc(hidden)]
#[macro_export]
macro_rules! __rseq_marker_fragment {
    ($type:literal, $key:ident) => {
        concat!(
            ".byte 0x48, 0x8d, 0x64, 0x24, 0x80\n", // lea rsp, [rsp-128]
            "90:\n",
            ".byte 0x0f, 0x1f, 0x44, 0x00, 0x00\n", // nopl 0(%rax,%rax,1): the probe point
            ".byte 0x48, 0x8d, 0xa4, 0x24, 0x80, 0x00, 0x00, 0x00\n", // lea rsp, [rsp+128]
            ".pushsection __rseq_markers, \"\", @progbits\n",
            ".balign 8\n",
            "91:\n",
            ".quad 90b, {",
            stringify!($key),
            "}\n",
            ".short ",
            $type,
            ", 1\n",
            ".long 0\n",
            ".popsection\n",
            ".reloc 0, R_X86_64_NONE, 91b",
        )
    };
}

/// Internal: the asm fragment of one marker. `$type` is the record type as a literal.
#[cfg(target_arch = "aarch64")]
#[doc(hidden)]
#[macro_export]
macro_rules! __rseq_marker_fragment {
    ($type:literal, $key:ident) => {
        concat!(
            "90:\n",
            "nop\n", // the probe point
            ".pushsection __rseq_markers, \"\", %progbits\n",
            ".balign 8\n",
            "91:\n",
            ".quad 90b, {",
            stringify!($key),
            "}\n",
            ".short ",
            $type,
            ", 1\n",
            ".long 0\n",
            ".popsection\n",
            ".reloc 0, R_AARCH64_NONE, 91b",
        )
    };
}

/// Internal: markers exist for x86-64 and aarch64 only.
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
#[doc(hidden)]
#[macro_export]
macro_rules! __rseq_marker_fragment {
    ($type:literal, $key:ident) => {
        compile_error!("rseq-marker supports x86_64 and aarch64 only")
    };
}

/// asm fragment of a START marker (entry of a critical section) for the key passed as the
/// `sym` operand named by the argument (`key` if omitted).
///
/// Place it before the descriptor store, with only straight-line code in between.
///
/// ```ignore
/// asm!(rseq_marker::start!(key), "lea rax, [rip + 3f]", /* ... */ key = sym MY_KEY);
/// ```
#[macro_export]
macro_rules! start {
    () => {
        $crate::__rseq_marker_fragment!("1", key)
    };
    ($key:ident) => {
        $crate::__rseq_marker_fragment!("1", $key)
    };
}

/// asm fragment of a FINISH marker (commit) for the key passed as the `sym` operand named by
/// the argument (`key` if omitted).
///
/// Place it at post_commit_ip (the label of post_commit_ip right before it), on the commit
/// path only.
#[macro_export]
macro_rules! finish {
    () => {
        $crate::__rseq_marker_fragment!("2", key)
    };
    ($key:ident) => {
        $crate::__rseq_marker_fragment!("2", $key)
    };
}

/// asm fragment of an ABORT marker for the key passed as the `sym` operand named by the
/// argument (`key` if omitted).
///
/// At an abort handler it must come right after the `RSEQ_SIG` signature, i.e. the marker
/// code starts at abort_ip. Anywhere else (an exit point) it marks a cancel.
#[macro_export]
macro_rules! abort {
    () => {
        $crate::__rseq_marker_fragment!("3", key)
    };
    ($key:ident) => {
        $crate::__rseq_marker_fragment!("3", $key)
    };
}

/// Defines a marker key: a 1-byte `#[no_mangle]`, `#[used]` static whose symbol names the
/// group. Attributes (doc comments) and a visibility may precede the name.
///
/// ```
/// rseq_marker::define_key!(
///     /// Markers of the per-CPU counter.
///     pub rseq_key_doc_example
/// );
/// ```
///
/// The name is the symbol: choose a unique one (prefix `rseq_key_` by convention). Define
/// each key once per program; markers in several functions may share it.
#[macro_export]
macro_rules! define_key {
    ($(#[$attr:meta])* $vis:vis $name:ident) => {
        $(#[$attr])*
        #[no_mangle]
        #[used]
        #[allow(non_upper_case_globals)]
        $vis static $name: u8 = 0;
    };
}

#[cfg(test)]
extern crate std;

#[cfg(test)]
mod tests {
    use super::*;
    use std::format;

    #[test]
    fn marker_types_round_trip() {
        for t in [MarkerType::Start, MarkerType::Finish, MarkerType::Abort] {
            assert_eq!(MarkerType::from_raw(t.raw()), Some(t));
        }
        assert_eq!(MarkerType::Start.raw(), 1);
        assert_eq!(MarkerType::Finish.raw(), 2);
        assert_eq!(MarkerType::Abort.raw(), 3);
        assert_eq!(MarkerType::from_raw(0), None);
        assert_eq!(MarkerType::from_raw(4), None);
    }

    #[test]
    fn parses_records_in_both_byte_orders() {
        let mut le = [0u8; 2 * RECORD_SIZE + 5];
        le[..8].copy_from_slice(&0x1122_3344_5566_7788u64.to_le_bytes());
        le[8..16].copy_from_slice(&0x99u64.to_le_bytes());
        le[16..18].copy_from_slice(&3u16.to_le_bytes());
        le[18..20].copy_from_slice(&1u16.to_le_bytes());
        let r = Record::parse(&le, true).unwrap();
        assert_eq!(
            r,
            Record {
                ip: 0x1122_3344_5566_7788,
                key: 0x99,
                kind: 3,
                version: 1,
                reserved: 0
            }
        );
        assert_eq!(r.marker_type(), Some(MarkerType::Abort));
        assert!(r.is_usable());
        // The second (all-zero) record is garbage-collected; the 5 trailing bytes are ignored.
        let all: [Option<Record>; 3] = {
            let mut it = records(&le, true);
            [it.next(), it.next(), it.next()]
        };
        assert_eq!(all[0], Some(r));
        assert!(!all[1].unwrap().is_usable());
        assert_eq!(all[2], None);

        let mut be = [0u8; RECORD_SIZE];
        be[..8].copy_from_slice(&0x1000u64.to_be_bytes());
        be[8..16].copy_from_slice(&0x2000u64.to_be_bytes());
        be[16..18].copy_from_slice(&1u16.to_be_bytes());
        be[18..20].copy_from_slice(&1u16.to_be_bytes());
        be[20..24].copy_from_slice(&7u32.to_be_bytes());
        let r = Record::parse(&be, false).unwrap();
        assert_eq!(
            (r.ip, r.key, r.kind, r.version, r.reserved),
            (0x1000, 0x2000, 1, 1, 7)
        );
        assert!(Record::parse(&be[..RECORD_SIZE - 1], false).is_none());
    }

    #[test]
    fn unusable_records() {
        let good = Record {
            ip: 1,
            key: 2,
            kind: 1,
            version: VERSION,
            reserved: 0,
        };
        assert!(good.is_usable());
        assert!(!Record { ip: 0, ..good }.is_usable());
        assert!(!Record { key: 0, ..good }.is_usable());
        assert!(!Record { kind: 9, ..good }.is_usable());
        assert!(!Record { version: 2, ..good }.is_usable());
    }

    #[test]
    fn code_constants_match_the_fragments() {
        assert_eq!(&x86_64::CODE[5..10], &x86_64::PROBE);
        assert_eq!(x86_64::PROBE_OFFSET, 5);
        assert_eq!(aarch64::CODE, [0x1f, 0x20, 0x03, 0xd5]);
        #[cfg(target_arch = "x86_64")]
        {
            // The fragment spells the same bytes as CODE.
            let f = start!();
            let bytes: [u8; 18] = x86_64::CODE;
            let lines: [&str; 3] = [
                ".byte 0x48, 0x8d, 0x64, 0x24, 0x80",
                ".byte 0x0f, 0x1f, 0x44, 0x00, 0x00",
                ".byte 0x48, 0x8d, 0xa4, 0x24, 0x80, 0x00, 0x00, 0x00",
            ];
            let mut n = 0;
            for l in lines {
                assert!(f.contains(l), "{f}");
                for b in l.trim_start_matches(".byte ").split(", ") {
                    let v = u8::from_str_radix(b.trim_start_matches("0x"), 16).unwrap();
                    assert_eq!(v, bytes[n]);
                    n += 1;
                }
            }
            assert_eq!(n, bytes.len());
        }
    }

    #[test]
    fn fragments_name_the_operand_and_type() {
        let frags = [
            (start!(), "key", 1),
            (finish!(), "key", 2),
            (abort!(), "key", 3),
            (start!(k2), "k2", 1),
            (finish!(k2), "k2", 2),
            (abort!(my_key), "my_key", 3),
        ];
        for (f, op, t) in frags {
            assert!(f.contains(&format!(".quad 90b, {{{op}}}\n")), "{f}");
            assert!(f.contains(&format!(".short {t}, 1\n")), "{f}");
            assert!(f.contains(".pushsection __rseq_markers, \"\", "), "{f}");
            assert!(f.contains(".balign 8\n91:\n"), "{f}");
            assert!(f.contains(".long 0\n.popsection\n.reloc 0, R_"), "{f}");
            assert!(f.ends_with("_NONE, 91b"), "{f}");
            // The probe label comes right before the probe point.
            #[cfg(target_arch = "x86_64")]
            assert!(
                f.contains("90:\n.byte 0x0f, 0x1f, 0x44, 0x00, 0x00\n"),
                "{f}"
            );
            #[cfg(target_arch = "aarch64")]
            assert!(f.starts_with("90:\nnop\n"), "{f}");
        }
    }

    #[test]
    fn define_key_defines_a_one_byte_object() {
        define_key!(
            /// A key for this test.
            rseq_key_marker_unit_test
        );
        assert_eq!(core::mem::size_of_val(&rseq_key_marker_unit_test), 1);
        assert_eq!(rseq_key_marker_unit_test, 0);
    }
}
