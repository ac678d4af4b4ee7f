//! What the running kernel offers, found by trying it (never by its version string, which
//! distributions and backports make meaningless): each probe loads a few instructions or makes
//! a map, then drops them. Run before anything is loaded or attached, so a kernel that lacks
//! something gets one line naming it and the first Linux release that has it.

use std::{
    io,
    mem::zeroed,
    os::fd::{AsRawFd, OwnedFd},
};

use aya_obj::generated::{bpf_attr, bpf_cmd, bpf_insn, bpf_map_type, bpf_prog_type};

use crate::bpf::multi_link::bpf;

/// A kernel feature rseq-trace cannot work without.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Missing {
    /// `bpf_get_attach_cookie` in uprobe programs: which section and event a probe is.
    AttachCookie,
    /// Hash maps allocated at run time (`BPF_F_NO_PREALLOC`) in tracing programs.
    RuntimeHashMaps,
}

impl Missing {
    /// What is missing, in the words of the one-line error.
    pub fn what(self) -> &'static str {
        match self {
            Missing::AttachCookie => "BPF attach cookies for uprobes (bpf_get_attach_cookie)",
            Missing::RuntimeHashMaps => {
                "hash maps allocated at run time in tracing programs (BPF_F_NO_PREALLOC)"
            }
        }
    }

    /// The first Linux release that has it.
    pub fn since(self) -> &'static str {
        match self {
            Missing::AttachCookie => "5.15",
            Missing::RuntimeHashMaps => "6.1",
        }
    }
}

/// Whether the kernel has the 6.19 rework of rseq, where `rseq_update` fires before the fixup
/// of the same return: its BTF then describes `struct rseq_event`, which the rework added.
/// Without BTF, the older order is assumed.
pub fn rseq_update_before_fixup() -> bool {
    aya::Btf::from_sys_fs().is_ok_and(|btf| {
        btf.id_by_type_name_kind("rseq_event", aya_obj::btf::BtfKind::Struct)
            .is_ok()
    })
}

/// Whether this machine is QEMU's TCG emulator with more than one CPU. Its multi-threaded mode
/// (QEMU's default for several CPUs) runs a uprobe's out-of-line single step wrongly when two
/// CPUs step different instructions of one process: the thread resumes a few bytes into the
/// probed instruction and crashes (reproduced with plain tracefs uprobes on kernels 6.1 to
/// 6.18, never with `-accel tcg,thread=single` nor on hardware; `docs/kernels.md`).
#[cfg(target_arch = "x86_64")]
pub fn emulated_by_qemu_tcg_smp() -> bool {
    use std::arch::x86_64::__cpuid;
    let hypervisor = __cpuid(1).ecx & (1 << 31) != 0;
    if !hypervisor {
        return false;
    }
    // Leaf 0x40000000 is the hypervisor's signature when the bit is set.
    let leaf = __cpuid(0x4000_0000);
    let mut vendor = [0u8; 12];
    vendor[..4].copy_from_slice(&leaf.ebx.to_le_bytes());
    vendor[4..8].copy_from_slice(&leaf.ecx.to_le_bytes());
    vendor[8..].copy_from_slice(&leaf.edx.to_le_bytes());
    &vendor == b"TCGTCGTCGTCG" && std::thread::available_parallelism().is_ok_and(|n| n.get() > 1)
}

/// Elsewhere QEMU's TCG is not recognised.
#[cfg(not(target_arch = "x86_64"))]
pub fn emulated_by_qemu_tcg_smp() -> bool {
    false
}

const BPF_FUNC_MAP_LOOKUP_ELEM: i32 = 1;
const BPF_FUNC_GET_ATTACH_COOKIE: i32 = 174;
const BPF_F_NO_PREALLOC: u32 = 1;

/// The first feature this kernel lacks, if any.
pub fn first_missing() -> Option<Missing> {
    if !loads(&cookie_program()) {
        return Some(Missing::AttachCookie);
    }
    match runtime_hash_map() {
        Ok(map) if loads(&lookup_program(map.as_raw_fd())) => None,
        _ => Some(Missing::RuntimeHashMaps),
    }
}

fn insn(code: u8, regs: u8, off: i16, imm: i32) -> bpf_insn {
    // SAFETY: bpf_insn is plain data; all-zero is a valid value.
    let mut i: bpf_insn = unsafe { zeroed() };
    i.code = code;
    i.set_dst_reg(regs & 0xf);
    i.set_src_reg(regs >> 4);
    i.off = off;
    i.imm = imm;
    i
}

const CALL: u8 = 0x85; // BPF_JMP | BPF_CALL
const MOV64_IMM: u8 = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K
const MOV64_REG: u8 = 0xbf; // BPF_ALU64 | BPF_MOV | BPF_X
const ADD64_IMM: u8 = 0x07; // BPF_ALU64 | BPF_ADD | BPF_K
const ST_W: u8 = 0x62; // BPF_ST | BPF_MEM | BPF_W
const LD_IMM64: u8 = 0x18; // BPF_LD | BPF_IMM | BPF_DW
const EXIT: u8 = 0x95;
const PSEUDO_MAP_FD: u8 = 1;

/// `r0 = bpf_get_attach_cookie(ctx); return 0`
fn cookie_program() -> Vec<bpf_insn> {
    vec![
        insn(CALL, 0, 0, BPF_FUNC_GET_ATTACH_COOKIE),
        insn(MOV64_IMM, 0, 0, 0),
        insn(EXIT, 0, 0, 0),
    ]
}

/// `u32 k = 0; bpf_map_lookup_elem(map, &k); return 0`
fn lookup_program(map_fd: i32) -> Vec<bpf_insn> {
    vec![
        insn(ST_W, 10, -4, 0),
        insn(MOV64_REG, 2 | (10 << 4), 0, 0),
        insn(ADD64_IMM, 2, 0, -4),
        insn(LD_IMM64, 1 | (PSEUDO_MAP_FD << 4), 0, map_fd),
        insn(0, 0, 0, 0),
        insn(CALL, 0, 0, BPF_FUNC_MAP_LOOKUP_ELEM),
        insn(MOV64_IMM, 0, 0, 0),
        insn(EXIT, 0, 0, 0),
    ]
}

fn runtime_hash_map() -> io::Result<OwnedFd> {
    // SAFETY: an all-zero bpf_attr is the documented "no options" value.
    let mut attr: bpf_attr = unsafe { zeroed() };
    // SAFETY: writing plain integers into the BPF_MAP_CREATE member of the union.
    unsafe {
        let m = &mut attr.__bindgen_anon_1;
        m.map_type = bpf_map_type::BPF_MAP_TYPE_HASH as u32;
        m.key_size = 4;
        m.value_size = 8;
        m.max_entries = 1;
        m.map_flags = BPF_F_NO_PREALLOC;
    }
    bpf(bpf_cmd::BPF_MAP_CREATE, &mut attr)
}

/// Whether the verifier accepts `insns` as a kprobe-type (uprobe) program.
fn loads(insns: &[bpf_insn]) -> bool {
    let license = c"GPL";
    // SAFETY: as above.
    let mut attr: bpf_attr = unsafe { zeroed() };
    // SAFETY: writing plain integers into the BPF_PROG_LOAD member; the pointers outlive the
    // call.
    unsafe {
        let a = &mut attr.__bindgen_anon_3;
        a.prog_type = bpf_prog_type::BPF_PROG_TYPE_KPROBE as u32;
        a.insn_cnt = insns.len() as u32;
        a.insns = insns.as_ptr() as u64;
        a.license = license.as_ptr() as u64;
    }
    bpf(bpf_cmd::BPF_PROG_LOAD, &mut attr).is_ok()
}
