//! `--sections-lib PATH`: the critical sections of a shared library
//! (`librseq_workload_sections.so`, built from this package), loaded with
//! `dlopen(RTLD_NOW | RTLD_LOCAL)` and found with `dlsym`, instead of the executable's
//! own copies.

use std::ffi::{c_void, CStr, CString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::sections::{
    CounterAddFn, DescriptorsFn, ListPopFn, ListPushFn, RuntimeDescriptor, Section, SectionFns,
};

/// A loaded sections library. It is never unloaded: the workers run its code and the
/// report holds its addresses until the process exits.
pub(crate) struct Library {
    /// Its three section functions and its descriptor query.
    pub fns: SectionFns,
    /// Its descriptors at their run-time addresses (inside the library's mapping).
    pub descriptors: Vec<RuntimeDescriptor>,
    /// The file the dynamic loader mapped (`dli_fname`; for a PATH with a `/`, its
    /// canonical form, as it appears in `/proc/PID/maps`).
    pub path: String,
}

/// `dlerror()` as one line, or `fallback` when it has nothing to say.
fn last_dl_error(fallback: &str) -> String {
    // SAFETY: dlerror returns null or a NUL-terminated string valid until the next dl*
    // call on this thread; it is copied at once.
    let msg = unsafe {
        let p = libc::dlerror();
        (!p.is_null()).then(|| CStr::from_ptr(p).to_string_lossy().into_owned())
    };
    msg.unwrap_or_else(|| fallback.to_string())
        .replace('\n', " ")
}

/// What `dladdr` says about `addr`: (object base, object file name, symbol name).
fn dl_addr(addr: usize) -> Option<(usize, String, Option<String>)> {
    // SAFETY: a zeroed Dl_info is a valid out-parameter; dladdr only reads `addr` as a
    // number, and the strings it returns point into the loader's data of an object that
    // stays loaded (they are copied at once).
    unsafe {
        let mut info: libc::Dl_info = std::mem::zeroed();
        if libc::dladdr(addr as *const c_void, &mut info) == 0 || info.dli_fbase.is_null() {
            return None;
        }
        let text = |p: *const libc::c_char| {
            (!p.is_null()).then(|| CStr::from_ptr(p).to_string_lossy().into_owned())
        };
        Some((
            info.dli_fbase as usize,
            text(info.dli_fname).unwrap_or_default(),
            text(info.dli_sname),
        ))
    }
}

/// Loads the library at `path` and checks its tables (inside the library, against its
/// own table bounds). Every failure is one line naming the path.
pub(crate) fn load(path: &Path) -> Result<Library, String> {
    let shown = path.display();
    // A path with a `/` is opened by its canonical name, so `sections_from` matches
    // `/proc/PID/maps`; a bare name goes through the loader's search path.
    let target: PathBuf = if path.as_os_str().as_bytes().contains(&b'/') {
        std::fs::canonicalize(path)
            .map_err(|e| format!("cannot load sections library {shown}: {e}"))?
    } else {
        path.to_path_buf()
    };
    let c_path = CString::new(target.as_os_str().as_bytes())
        .map_err(|_| format!("cannot load sections library {shown}: path contains NUL"))?;
    // SAFETY: `c_path` is NUL-terminated. The library is ours (or fails the symbol and
    // table checks below); its initialisers are Rust's, which are harmless.
    let handle = unsafe { libc::dlopen(c_path.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    if handle.is_null() {
        return Err(format!(
            "cannot load sections library {shown}: {}",
            last_dl_error("dlopen failed")
        ));
    }
    // Deliberately never dlclose'd (see `Library`).
    let sym = |name: &CStr| -> Result<*mut c_void, String> {
        // SAFETY: `handle` is a live handle from dlopen and `name` is NUL-terminated;
        // dlerror is called first to clear an old error.
        let p = unsafe {
            libc::dlerror();
            libc::dlsym(handle, name.as_ptr())
        };
        if p.is_null() {
            return Err(format!(
                "sections library {shown} lacks symbol {}: {}",
                name.to_string_lossy(),
                last_dl_error("null address")
            ));
        }
        Ok(p)
    };
    let counter_add = sym(c"rseq_workload_counter_add")?;
    let list_push = sym(c"rseq_workload_list_push")?;
    let list_pop = sym(c"rseq_workload_list_pop")?;
    let descriptors_fn = sym(c"rseq_workload_sections_descriptors")?;
    let (base, loaded, _) = dl_addr(counter_add as usize).ok_or_else(|| {
        format!("sections library {shown}: dladdr does not know rseq_workload_counter_add")
    })?;
    if dl_addr(SectionFns::BUILT_IN.address(Section::CounterAdd)).map(|i| i.0) == Some(base) {
        return Err(format!(
            "sections library {shown}: dlsym returned the executable's own sections"
        ));
    }
    for (p, name) in [
        (list_push, "rseq_workload_list_push"),
        (list_pop, "rseq_workload_list_pop"),
        (descriptors_fn, "rseq_workload_sections_descriptors"),
    ] {
        if dl_addr(p as usize).map(|i| i.0) != Some(base) {
            return Err(format!(
                "sections library {shown}: {name} is not defined in {loaded}"
            ));
        }
    }
    // SAFETY: the four symbols are this package's exported functions with exactly these
    // signatures (the library is built from the same source), all from one object that
    // is never unloaded.
    let fns = unsafe {
        SectionFns::from_raw(
            std::mem::transmute::<*mut c_void, CounterAddFn>(counter_add),
            std::mem::transmute::<*mut c_void, ListPushFn>(list_push),
            std::mem::transmute::<*mut c_void, ListPopFn>(list_pop),
            std::mem::transmute::<*mut c_void, DescriptorsFn>(descriptors_fn),
        )
    };
    let descriptors = fns
        .descriptors()
        .map_err(|e| format!("sections library {shown}: {e}"))?;
    // Independent of the library's own check: every address lies in the library, and
    // each start_ip inside the exported function of its name.
    for d in &descriptors {
        let in_lib = |a: u64| dl_addr(a as usize).map(|i| i.0) == Some(base);
        let owner = dl_addr(d.start_ip as usize).and_then(|i| i.2);
        if owner.as_deref() != Some(d.function)
            || !in_lib(d.post_commit_ip)
            || !in_lib(d.abort_ip)
            || !d.exit_ips.iter().all(|&e| in_lib(e))
        {
            return Err(format!(
                "sections library {shown}: descriptor of {} does not lie in {loaded}",
                d.function
            ));
        }
    }
    if descriptors.len() != Section::ALL.len() {
        return Err(format!(
            "sections library {shown} has {} descriptors, expected {}",
            descriptors.len(),
            Section::ALL.len()
        ));
    }
    Ok(Library {
        fns,
        descriptors,
        path: loaded,
    })
}
