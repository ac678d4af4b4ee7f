//! The kernel's own list of attached uprobe links (BPF_LINK_GET_NEXT_ID + BPF_OBJ_GET_INFO_BY_FD),
//! so that tests check where probes really are rather than where rseq-trace says they are.

use std::{ffi::CStr, io, mem::size_of};

const BPF_OBJ_GET_INFO_BY_FD: i64 = 15;
const BPF_LINK_GET_FD_BY_ID: i64 = 30;
const BPF_LINK_GET_NEXT_ID: i64 = 31;
const BPF_LINK_TYPE_PERF_EVENT: u32 = 7;
const BPF_PERF_EVENT_UPROBE: u32 = 1;
const BPF_LINK_TYPE_UPROBE_MULTI: u32 = 12;

/// One uprobe as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Uprobe {
    pub file: String,
    pub offset: u64,
    pub cookie: u64,
    /// Part of a uprobe multi link (one link for many probes) rather than a perf-event link.
    pub multi: bool,
}

fn bpf(cmd: i64, attr: &mut [u64; 16]) -> io::Result<i64> {
    // SAFETY: `attr` is a zeroed, large-enough `union bpf_attr` for these commands.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.as_mut_ptr(),
            size_of::<[u64; 16]>() as u32,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Every uprobe link currently in the kernel.
pub(crate) fn uprobes() -> Vec<Uprobe> {
    let mut found = Vec::new();
    let mut id = 0u32;
    loop {
        let mut attr = [0u64; 16];
        attr[0] = id as u64; // start_id
        if bpf(BPF_LINK_GET_NEXT_ID, &mut attr).is_err() {
            break; // ENOENT: no more links
        }
        id = (attr[0] >> 32) as u32; // next_id
        let mut attr = [0u64; 16];
        attr[0] = id as u64; // link_id
        let Ok(fd) = bpf(BPF_LINK_GET_FD_BY_ID, &mut attr) else {
            continue; // gone meanwhile
        };
        found.extend(uprobe_info(fd as i32));
        // SAFETY: `fd` was returned to us by the kernel.
        unsafe { libc::close(fd as i32) };
    }
    found
}

fn uprobe_info(fd: i32) -> Vec<Uprobe> {
    // struct bpf_link_info: type@0 id@4 prog_id@8, union@16: perf_event.type@16,
    // uprobe.file_name@24 name_len@32 offset@36 cookie@40.
    // First the type (and the multi link's count), with no buffers.
    let mut kind = [0u64; 32];
    if get_info(fd, &mut kind).is_none() {
        return Vec::new();
    }
    if kind[0] as u32 == BPF_LINK_TYPE_UPROBE_MULTI {
        return multi_info(fd, (kind[6] >> 32) as usize);
    }
    let mut info = [0u64; 32];
    let mut name = [0u8; 4096];
    info[3] = name.as_mut_ptr() as u64;
    info[4] = name.len() as u64; // name_len (low half of the word at 32)
    if get_info(fd, &mut info).is_none() {
        return Vec::new();
    }
    match info[0] as u32 {
        BPF_LINK_TYPE_PERF_EVENT if info[2] as u32 == BPF_PERF_EVENT_UPROBE => {
            vec![Uprobe {
                file: c_string(&name),
                offset: info[4] >> 32,
                cookie: info[5],
                multi: false,
            }]
        }
        _ => Vec::new(),
    }
}

/// A uprobe multi link: union@16 = path@16 offsets@24 ref_ctr_offsets@32 cookies@40
/// path_size@48 count@52 flags@56 pid@60.
fn multi_info(fd: i32, count: usize) -> Vec<Uprobe> {
    let mut info = [0u64; 32];
    let mut path = [0u8; 4096];
    let mut offsets = vec![0u64; count];
    let mut cookies = vec![0u64; count];
    info[2] = path.as_mut_ptr() as u64;
    info[3] = offsets.as_mut_ptr() as u64;
    info[5] = cookies.as_mut_ptr() as u64;
    info[6] = path.len() as u64 | ((count as u64) << 32);
    if get_info(fd, &mut info).is_none() {
        return Vec::new();
    }
    let file = c_string(&path);
    offsets
        .into_iter()
        .zip(cookies)
        .map(|(offset, cookie)| Uprobe {
            file: file.clone(),
            offset,
            cookie,
            multi: true,
        })
        .collect()
}

fn get_info(fd: i32, info: &mut [u64; 32]) -> Option<()> {
    let mut attr = [0u64; 16];
    attr[0] = fd as u64 | ((size_of::<[u64; 32]>() as u64) << 32); // bpf_fd, info_len
    attr[1] = info.as_mut_ptr() as u64;
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr).ok().map(|_| ())
}

fn c_string(bytes: &[u8]) -> String {
    CStr::from_bytes_until_nul(bytes)
        .map(|c| c.to_string_lossy().into_owned())
        .unwrap_or_default()
}
