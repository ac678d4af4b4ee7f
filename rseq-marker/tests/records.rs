//! Assembles functions with markers into this test binary, then reads the binary's own ELF file
//! (`/proc/self/exe`, the section is not loaded) and checks every record: section flags, type,
//! version, that `ip` is the probe point inside the right function, and that `key` is the
//! address of the key symbol. Also runs the functions (the marker code must be harmless).

#![cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]

use std::arch::asm;
use std::collections::HashMap;

use object::{Object, ObjectSection, ObjectSymbol};
use rseq_marker::{MarkerType, Record};

rseq_marker::define_key!(
    /// Group A.
    pub rseq_key_marker_test_a
);
rseq_marker::define_key!(rseq_key_marker_test_b);

#[cfg(target_arch = "x86_64")]
mod arch {
    use super::*;
    pub(crate) use rseq_marker::x86_64::{CODE, PROBE, PROBE_OFFSET};

    /// START, FINISH, ABORT of group A in one block, around real work.
    #[no_mangle]
    #[inline(never)]
    pub(crate) extern "C" fn rseq_marker_test_each(x: u64) -> u64 {
        let mut y = x;
        // SAFETY: the markers only move rsp within the red zone and back; `y` is a register.
        unsafe {
            asm!(
                rseq_marker::start!(key),
                "add {y}, 1",
                rseq_marker::finish!(key),
                "add {y}, 2",
                rseq_marker::abort!(),
                y = inout(reg) y,
                key = sym rseq_key_marker_test_a,
            );
        }
        y
    }

    /// Two keys in one block, a marker in another section (like an abort handler in
    /// `__rseq_failure`, preceded by RSEQ_SIG), with `nostack`.
    #[no_mangle]
    #[inline(never)]
    pub(crate) extern "C" fn rseq_marker_test_two_keys(x: u64) -> u64 {
        let mut y = x;
        // SAFETY: as above; the jump into the other section returns right away.
        unsafe {
            asm!(
                rseq_marker::start!(ka),
                "cmp {y}, 0",
                rseq_marker::start!(kb),
                "jne 82f",
                "83:",
                "add {y}, 10",
                rseq_marker::finish!(kb),
                ".pushsection __rseq_failure, \"ax\"",
                ".byte 0x0f, 0xb9, 0x3d",
                ".long 0x53053053",
                "82:",
                rseq_marker::abort!(ka),
                "add {y}, 100",
                "jmp 83b",
                ".popsection",
                y = inout(reg) y,
                ka = sym rseq_key_marker_test_a,
                kb = sym rseq_key_marker_test_b,
                options(nostack),
            );
        }
        y
    }

    /// The fragments also work in AT&T syntax.
    #[no_mangle]
    #[inline(never)]
    pub(crate) extern "C" fn rseq_marker_test_att(x: u64) -> u64 {
        let mut y = x;
        // SAFETY: as above.
        unsafe {
            asm!(
                "addq $1, {y}",
                rseq_marker::abort!(k),
                y = inout(reg) y,
                k = sym rseq_key_marker_test_b,
                options(att_syntax),
            );
        }
        y
    }
}

#[cfg(target_arch = "aarch64")]
mod arch {
    use super::*;
    pub use rseq_marker::aarch64::{CODE, PROBE, PROBE_OFFSET};

    #[no_mangle]
    #[inline(never)]
    pub extern "C" fn rseq_marker_test_each(x: u64) -> u64 {
        let mut y = x;
        // SAFETY: the markers are nops; `y` is a register.
        unsafe {
            asm!(
                rseq_marker::start!(key),
                "add {y}, {y}, #1",
                rseq_marker::finish!(key),
                "add {y}, {y}, #2",
                rseq_marker::abort!(),
                y = inout(reg) y,
                key = sym rseq_key_marker_test_a,
            );
        }
        y
    }

    #[no_mangle]
    #[inline(never)]
    pub extern "C" fn rseq_marker_test_two_keys(x: u64) -> u64 {
        let mut y = x;
        // SAFETY: as above; the jump into the other section returns right away.
        unsafe {
            asm!(
                rseq_marker::start!(ka),
                "cmp {y}, #0",
                rseq_marker::start!(kb),
                "b.ne 82f",
                "83:",
                "add {y}, {y}, #10",
                rseq_marker::finish!(kb),
                ".pushsection __rseq_failure, \"ax\"",
                ".inst 0xd428bc00",
                "82:",
                rseq_marker::abort!(ka),
                "add {y}, {y}, #100",
                "b 83b",
                ".popsection",
                y = inout(reg) y,
                ka = sym rseq_key_marker_test_a,
                kb = sym rseq_key_marker_test_b,
                options(nostack),
            );
        }
        y
    }

    #[no_mangle]
    #[inline(never)]
    pub extern "C" fn rseq_marker_test_att(x: u64) -> u64 {
        let mut y = x;
        // SAFETY: as above.
        unsafe {
            asm!(
                "add {y}, {y}, #1",
                rseq_marker::abort!(k),
                y = inout(reg) y,
                k = sym rseq_key_marker_test_b,
            );
        }
        y
    }
}

use arch::*;

struct Image {
    data: Vec<u8>,
}

impl Image {
    fn load() -> Self {
        Image {
            data: std::fs::read("/proc/self/exe").expect("read /proc/self/exe"),
        }
    }

    fn file(&self) -> object::File<'_> {
        object::File::parse(&*self.data).expect("parse own ELF")
    }
}

/// Link-time address and size of a symbol.
fn symbol(file: &object::File<'_>, name: &str) -> (u64, u64) {
    let s = file
        .symbols()
        .find(|s| s.name() == Ok(name))
        .unwrap_or_else(|| panic!("no symbol {name}"));
    (s.address(), s.size())
}

/// `len` bytes of the file's image at link-time address `addr`.
fn bytes_at(file: &object::File<'_>, addr: u64, len: u64) -> Vec<u8> {
    for s in file.sections() {
        if s.address() <= addr && addr + len <= s.address() + s.size() {
            if let Ok(Some(b)) = s.data_range(addr, len) {
                return b.to_vec();
            }
        }
    }
    panic!("{addr:#x} is not in any section with data");
}

fn own_records(file: &object::File<'_>) -> Vec<Record> {
    let sec = file
        .section_by_name(rseq_marker::SECTION)
        .expect("__rseq_markers in the test binary");
    rseq_marker::records(sec.data().unwrap(), file.is_little_endian()).collect()
}

/// (sh_type, sh_flags, sh_addralign, sh_size) of a section, read from the raw 64-bit ELF
/// section header (independent of the `object` version's flag types).
fn raw_header(data: &[u8], index: usize, le: bool) -> (u32, u64, u64, u64) {
    let u16_at = |o: usize| {
        let a = [data[o], data[o + 1]];
        if le {
            u16::from_le_bytes(a)
        } else {
            u16::from_be_bytes(a)
        }
    };
    let u32_at = |o: usize| {
        let a: [u8; 4] = data[o..o + 4].try_into().unwrap();
        if le {
            u32::from_le_bytes(a)
        } else {
            u32::from_be_bytes(a)
        }
    };
    let u64_at = |o: usize| {
        let a: [u8; 8] = data[o..o + 8].try_into().unwrap();
        if le {
            u64::from_le_bytes(a)
        } else {
            u64::from_be_bytes(a)
        }
    };
    assert_eq!(data[4], 2, "64-bit ELF");
    let shoff = u64_at(0x28) as usize;
    let shentsize = u16_at(0x3a) as usize;
    let h = shoff + index * shentsize;
    (u32_at(h + 4), u64_at(h + 8), u64_at(h + 48), u64_at(h + 32))
}

#[test]
fn section_is_not_loadable_progbits() {
    let img = Image::load();
    let file = img.file();
    let sec = file.section_by_name(rseq_marker::SECTION).unwrap();
    let (sh_type, sh_flags, align, size) =
        raw_header(&img.data, sec.index().0, file.is_little_endian());
    const SHT_PROGBITS: u32 = 1;
    const SHF_ALLOC: u64 = 2;
    assert_eq!(sh_type, SHT_PROGBITS);
    assert_eq!(
        sh_flags & SHF_ALLOC,
        0,
        "__rseq_markers must not be loadable"
    );
    assert_eq!(sh_flags, 0, "__rseq_markers must have no flags");
    assert_eq!(align, rseq_marker::RECORD_ALIGN as u64);
    assert_eq!(size % rseq_marker::RECORD_SIZE as u64, 0);
    assert!(size > 0);
}

#[test]
fn records_point_at_probe_points_and_keys() {
    let img = Image::load();
    let file = img.file();
    let key_a = symbol(&file, "rseq_key_marker_test_a");
    let key_b = symbol(&file, "rseq_key_marker_test_b");
    assert_eq!((key_a.1, key_b.1), (1, 1), "keys are 1-byte objects");
    let funcs = [
        "rseq_marker_test_each",
        "rseq_marker_test_two_keys",
        "rseq_marker_test_att",
    ]
    .map(|n| (n, symbol(&file, n)));
    let failure = file
        .sections()
        .find(|s| s.name() == Ok("__rseq_failure"))
        .map_or((0, 0), |s| (s.address(), s.size()));

    // Every record, ours or not, is well formed.
    let records = own_records(&file);
    for r in &records {
        assert!(r.is_usable(), "{r:x?}");
        assert_eq!(r.reserved, 0);
        assert_eq!(bytes_at(&file, r.ip, PROBE.len() as u64), PROBE, "{r:x?}");
        assert_eq!(
            bytes_at(&file, r.ip - PROBE_OFFSET, CODE.len() as u64),
            CODE,
            "{r:x?}"
        );
    }

    // Which function (or the __rseq_failure section) a record's ip is in.
    let place = |ip: u64| -> &str {
        if failure.1 > 0 && (failure.0..failure.0 + failure.1).contains(&ip) {
            return "__rseq_failure";
        }
        funcs
            .iter()
            .find(|(_, (a, s))| (*a..*a + *s).contains(&ip))
            .map(|(n, _)| *n)
            .unwrap_or("elsewhere")
    };
    let mut by_place: HashMap<&str, Vec<(MarkerType, char, u64)>> = HashMap::new();
    for r in &records {
        let key = if r.key == key_a.0 {
            'a'
        } else if r.key == key_b.0 {
            'b'
        } else {
            panic!("record with an unknown key: {r:x?}");
        };
        by_place
            .entry(place(r.ip))
            .or_default()
            .push((r.marker_type().unwrap(), key, r.ip));
    }
    for v in by_place.values_mut() {
        v.sort_by_key(|e| e.2);
    }
    let kinds = |p: &str| -> Vec<(MarkerType, char)> {
        by_place
            .get(p)
            .map(|v| v.iter().map(|e| (e.0, e.1)).collect())
            .unwrap_or_default()
    };
    use MarkerType::*;
    assert_eq!(
        kinds("rseq_marker_test_each"),
        [(Start, 'a'), (Finish, 'a'), (Abort, 'a')]
    );
    // The abort handler is in __rseq_failure (or, with another linker, next to the function).
    let mut two = kinds("rseq_marker_test_two_keys");
    two.extend(kinds("__rseq_failure"));
    assert_eq!(two.len(), 4, "{by_place:x?}");
    for m in [(Start, 'a'), (Start, 'b'), (Finish, 'b'), (Abort, 'a')] {
        assert!(two.contains(&m), "{m:?} missing: {by_place:x?}");
    }
    assert_eq!(kinds("rseq_marker_test_att"), [(Abort, 'b')]);
    assert!(!by_place.contains_key("elsewhere"), "{by_place:x?}");

    // Markers of one block each got their own probe point, in program order.
    let each = &by_place["rseq_marker_test_each"];
    assert!(each
        .windows(2)
        .all(|w| w[1].2 >= w[0].2 + CODE.len() as u64));

    // The ABORT in the other section starts right after the signature (as at an abort_ip).
    let each = funcs[0].1;
    let aborts: Vec<u64> = records
        .iter()
        .filter(|r| r.key == key_a.0 && r.marker_type() == Some(Abort))
        .map(|r| r.ip)
        .filter(|ip| !(each.0..each.0 + each.1).contains(ip))
        .collect();
    assert_eq!(aborts.len(), 1, "{aborts:x?}");
    let sig = bytes_at(&file, aborts[0] - PROBE_OFFSET - 4, 4);
    #[cfg(target_arch = "x86_64")]
    assert_eq!(u32::from_le_bytes(sig.try_into().unwrap()), 0x5305_3053);
    #[cfg(target_arch = "aarch64")]
    assert_eq!(u32::from_le_bytes(sig.try_into().unwrap()), 0xd428_bc00);
}

#[test]
fn link_time_addresses_match_the_running_image() {
    let img = Image::load();
    let file = img.file();
    let (link, _) = symbol(&file, "rseq_marker_test_each");
    let bias = (rseq_marker_test_each as *const () as u64).wrapping_sub(link);
    let (key_link, _) = symbol(&file, "rseq_key_marker_test_a");
    assert_eq!(
        (&raw const rseq_key_marker_test_a) as u64,
        key_link.wrapping_add(bias),
        "key address at run time = link-time address + load bias"
    );
    for r in own_records(&file) {
        let ip = r.ip.wrapping_add(bias) as usize as *const u8;
        // SAFETY: ip is in this program's mapped, readable text (the records were checked to
        // point at probe points inside its functions).
        let live = unsafe { std::slice::from_raw_parts(ip, PROBE.len()) };
        assert_eq!(live, PROBE, "{r:x?}");
    }
}

#[test]
fn marked_code_runs() {
    for x in [0u64, 1, 41] {
        assert_eq!(std::hint::black_box(rseq_marker_test_each)(x), x + 3);
        let want = if x != 0 { x + 110 } else { x + 10 };
        assert_eq!(std::hint::black_box(rseq_marker_test_two_keys)(x), want);
        assert_eq!(std::hint::black_box(rseq_marker_test_att)(x), x + 1);
    }
}
