//! The kernel's own list of attached uprobe links (BPF_LINK_GET_NEXT_ID + BPF_OBJ_GET_INFO_BY_FD),
//! so that tests check where probes really are rather than where rseq-trace says they are.

use std::{ffi::CStr, io, mem::size_of};

const BPF_OBJ_GET_INFO_BY_FD: i64 = 15;
const BPF_LINK_GET_FD_BY_ID: i64 = 30;
const BPF_LINK_GET_NEXT_ID: i64 = 31;
const BPF_LINK_TYPE_PERF_EVENT: u32 = 7;
const BPF_PERF_EVENT_UPROBE: u32 = 1;

/// One uprobe as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uprobe {
    pub file: String,
    pub offset: u64,
    pub cookie: u64,
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
pub fn uprobes() -> Vec<Uprobe> {
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
        if let Some(u) = uprobe_info(fd as i32) {
            found.push(u);
        }
        // SAFETY: `fd` was returned to us by the kernel.
        unsafe { libc::close(fd as i32) };
    }
    found
}

fn uprobe_info(fd: i32) -> Option<Uprobe> {
    // struct bpf_link_info: type@0 id@4 prog_id@8, union@16: perf_event.type@16,
    // uprobe.file_name@24 name_len@32 offset@36 cookie@40.
    let mut info = [0u64; 32];
    let mut name = [0u8; 4096];
    info[3] = name.as_mut_ptr() as u64;
    info[4] = name.len() as u64; // name_len (low half of the word at 32)
    let mut attr = [0u64; 16];
    attr[0] = fd as u64 | ((size_of::<[u64; 32]>() as u64) << 32); // bpf_fd, info_len
    attr[1] = info.as_mut_ptr() as u64;
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr).ok()?;
    let link_type = info[0] as u32;
    let perf_type = info[2] as u32;
    if link_type != BPF_LINK_TYPE_PERF_EVENT || perf_type != BPF_PERF_EVENT_UPROBE {
        return None;
    }
    let file = CStr::from_bytes_until_nul(&name)
        .ok()?
        .to_string_lossy()
        .into_owned();
    Some(Uprobe {
        file,
        offset: info[4] >> 32,
        cookie: info[5],
    })
}
