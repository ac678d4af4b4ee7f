//! Uprobe multi links (`BPF_TRACE_UPROBE_MULTI`, Linux 6.6): one link puts the program on many
//! offsets of one file. aya 0.14 only makes one perf-event link per probe, and detaching each of
//! those waits for the kernel's uprobe grace period (about 100 ms here, serialized): detaching a
//! section's probes, a sampling window's entry probes, or 10,000 sections at exit would take
//! seconds to hours, with the probes still trapping meanwhile. A multi link removes all its
//! breakpoints at once and waits once; attaching one is also a single system call.
//!
//! The program must be loaded with the multi expected attach type, which aya 0.14 cannot do: it
//! is loaded here a second time from the same object, relocated by `aya-obj` against the maps
//! aya already created, so both copies share every map.

use std::{
    collections::HashSet,
    ffi::CString,
    io,
    mem::{size_of, zeroed},
    os::{
        fd::{AsFd, AsRawFd, FromRawFd, OwnedFd},
        unix::ffi::OsStrExt,
    },
    path::Path,
};

use aya::{maps::Map, Ebpf};
use aya_obj::generated::{bpf_attach_type, bpf_attr, bpf_cmd, bpf_prog_type};

use crate::error::AttachError;

/// The uprobe program, loaded for multi links.
pub struct MultiProgram {
    fd: OwnedFd,
}

/// One multi link; dropping it detaches every probe of it at once.
#[derive(Debug)]
pub struct MultiLink {
    _fd: OwnedFd,
}

impl MultiProgram {
    /// Loads program `name` of `object` (already loaded by aya as `ebpf`) for multi links.
    pub fn load(ebpf: &Ebpf, object: &[u8], name: &str) -> Result<Self, AttachError> {
        let fail = |what: String| AttachError::Multi(what);
        let mut obj = aya_obj::Object::parse(object).map_err(|e| fail(e.to_string()))?;
        let mut fds = Vec::new();
        for (map_name, map) in ebpf.maps() {
            let data = match map {
                Map::Array(d) | Map::HashMap(d) | Map::LruHashMap(d) | Map::PerCpuArray(d) => d,
                _ => return Err(fail(format!("map {map_name} is of an unexpected kind"))),
            };
            fds.push((map_name.to_owned(), data.fd()));
        }
        let text_sections: HashSet<usize> = obj.functions.keys().map(|(s, _)| *s).collect();
        let maps = obj.maps.clone();
        obj.relocate_maps(
            fds.iter()
                .filter_map(|(n, fd)| maps.get(n).map(|m| (n.as_str(), fd.as_fd().as_raw_fd(), m))),
            &text_sections,
        )
        .map_err(|e| fail(e.to_string()))?;
        obj.relocate_calls(&text_sections)
            .map_err(|e| fail(e.to_string()))?;
        let program = obj
            .programs
            .get(name)
            .ok_or(AttachError::Missing("uprobe program"))?;
        let function = obj
            .functions
            .get(&program.function_key())
            .ok_or(AttachError::Missing("uprobe program's code"))?;
        let insns = &function.instructions;
        let license = obj.license.clone();
        // Without a verifier log first (a full log buffer fails the load with ENOSPC); with one
        // only to explain a failure.
        match prog_load(insns, &license, None) {
            Ok(fd) => MultiProgram { fd }.probed(),
            Err(e) => {
                let mut log = vec![0u8; 1 << 20];
                let _ = prog_load(insns, &license, Some(&mut log));
                let end = log.iter().position(|b| *b == 0).unwrap_or(0);
                let tail = String::from_utf8_lossy(&log[end.saturating_sub(300)..end]);
                Err(fail(format!("loading for multi links failed: {e}: {tail}")))
            }
        }
    }

    /// Whether the kernel makes uprobe multi links: kernels before 6.6 load the program (they
    /// ignore its expected attach type) but refuse the link. The probe libbpf uses: a link on
    /// `/`, a directory, fails with EBADF where multi links exist and EINVAL where they don't.
    fn probed(self) -> Result<Self, AttachError> {
        match self.attach(Path::new("/"), &[0], &[0], None) {
            Err(e) if e.raw_os_error() == Some(libc::EBADF) => Ok(self),
            Ok(_) => Ok(self),
            Err(e) => Err(AttachError::Multi(format!(
                "the kernel makes no uprobe multi links (Linux 6.6+): {e}"
            ))),
        }
    }

    /// Probes `offsets` of the file at `path`, each with its cookie; only in process `pid`
    /// (all processes when `None`).
    pub fn attach(
        &self,
        path: &Path,
        offsets: &[u64],
        cookies: &[u64],
        pid: Option<u32>,
    ) -> io::Result<MultiLink> {
        assert_eq!(offsets.len(), cookies.len());
        let path = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: as above.
        let mut attr: bpf_attr = unsafe { zeroed() };
        // SAFETY: writing plain integers into the BPF_LINK_CREATE member of the union; the
        // pointers stay valid for the call.
        unsafe {
            let l = &mut attr.link_create;
            l.__bindgen_anon_1.prog_fd = self.fd.as_raw_fd() as u32;
            l.attach_type = bpf_attach_type::BPF_TRACE_UPROBE_MULTI as u32;
            let u = &mut l.__bindgen_anon_3.uprobe_multi;
            u.path = path.as_ptr() as u64;
            u.offsets = offsets.as_ptr() as u64;
            u.cookies = cookies.as_ptr() as u64;
            u.cnt = offsets.len() as u32;
            u.pid = pid.unwrap_or(0);
        }
        bpf(bpf_cmd::BPF_LINK_CREATE, &mut attr).map(|fd| MultiLink { _fd: fd })
    }
}

/// BPF_PROG_LOAD of the uprobe program for multi links, with the verifier's log in `log`.
fn prog_load(
    insns: &[aya_obj::generated::bpf_insn],
    license: &CString,
    log: Option<&mut Vec<u8>>,
) -> io::Result<OwnedFd> {
    // SAFETY: an all-zero bpf_attr is the documented "no options" value.
    let mut attr: bpf_attr = unsafe { zeroed() };
    // SAFETY: writing plain integers into the BPF_PROG_LOAD member of the union; the pointers
    // stay valid for the call.
    unsafe {
        let a = &mut attr.__bindgen_anon_3;
        a.prog_type = bpf_prog_type::BPF_PROG_TYPE_KPROBE as u32;
        a.expected_attach_type = bpf_attach_type::BPF_TRACE_UPROBE_MULTI as u32;
        a.insn_cnt = insns.len() as u32;
        a.insns = insns.as_ptr() as u64;
        a.license = license.as_ptr() as u64;
        if let Some(log) = log {
            a.log_level = 1;
            a.log_size = log.len() as u32;
            a.log_buf = log.as_mut_ptr() as u64;
        }
        for (dst, src) in a.prog_name.iter_mut().zip(b"rseq_event_m") {
            *dst = *src as _;
        }
    }
    bpf(bpf_cmd::BPF_PROG_LOAD, &mut attr)
}

/// The `bpf` system call: a new file descriptor, or the error.
pub(crate) fn bpf(cmd: bpf_cmd, attr: &mut bpf_attr) -> io::Result<OwnedFd> {
    // SAFETY: `attr` is a valid bpf_attr for `cmd`; the kernel reads at most its size.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as i64,
            attr as *mut bpf_attr,
            size_of::<bpf_attr>() as u32,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        // SAFETY: the kernel returned a new file descriptor that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(r as i32) })
    }
}
