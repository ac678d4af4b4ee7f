//! ELF fixtures with rseq critical sections in every table format and link mode rseq-trace reads,
//! built from the C sources in `tests/fixtures/` (no binary is ever committed).
//!
//! [`all`] builds every variant once per test process (in parallel, cached across processes by
//! compiler command line and source mtime) under cargo's integration-test temp directory, and
//! says what each one must contain. `tests/fixtures_build.rs` checks the link-mode properties
//! each variant exists for.
#![allow(dead_code)]

use std::{
    fs,
    io::ErrorKind,
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
    thread,
    time::UNIX_EPOCH,
};

/// A function that owns one critical section, and that section's number of exit points as the
/// binary's `__rseq_exit_point_array` records them. A function with two sections (two inlined
/// call sites) appears twice.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Expected {
    pub function: &'static str,
    pub exits: usize,
}

#[derive(Debug, Clone)]
pub(crate) struct Fixture {
    /// `<format>-<arch>-<linker>-<kind>[-relr]`, e.g. "librseq-x86_64-gnu-pie".
    pub name: String,
    pub path: PathBuf,
    /// "x86_64" or "aarch64".
    pub arch: &'static str,
    /// "gnu" (GNU ld) or "lld".
    pub linker: &'static str,
    /// "exec" (non-PIE executable), "pie" or "shared".
    pub kind: &'static str,
    /// "librseq", "tcmalloc" or "rseq_table".
    pub format: &'static str,
    /// Linked with `-z pack-relative-relocs` (has `.relr.dyn`).
    pub relr: bool,
    /// Every critical section, sorted by function name.
    pub expected: Vec<Expected>,
    /// Runs here: `<path> [iterations]` prints one line and exits 0 (x86-64 executables).
    pub runnable: bool,
}

/// Where lld is looked for (`ld.lld`), and the Debian package that installs it.
pub(crate) const LLD_DIR: &str = "/usr/lib/llvm-22/bin";
const LLD_PACKAGE: &str = "lld-22";

fn sources_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn build_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("rseq-fixtures")
}

fn expected(format: &str) -> Vec<Expected> {
    let e = |function, exits| Expected { function, exits };
    let mut v = match format {
        "librseq" => vec![
            e("fx_counter_add", 0),
            e("fx_counter_add_twice", 0),
            e("fx_counter_add_twice", 0),
            e("fx_cmpeqv_storev", 1),
            e("fx_two_exits", 2),
        ],
        "tcmalloc" => vec![e("fx_tc_alloc", 0), e("fx_tc_free", 0)],
        "rseq_table" => vec![e("fx_legacy", 0)],
        "librseq_param" => vec![
            e("px_inc", 0),
            e("px_list_pop", 1),
            e("px_list_push", 1),
            e("px_retry_inc", 0),
        ],
        "marker_key" => vec![e("fx_pair_add", 0), e("fx_pair_cap", 1)],
        other => unreachable!("unknown fixture format {other}"),
    };
    v.sort();
    v
}

struct Variant {
    format: &'static str,
    arch: &'static str,
    linker: &'static str,
    kind: &'static str,
    relr: bool,
}

fn variants() -> Vec<Variant> {
    let v = |format, arch, linker, kind, relr| Variant {
        format,
        arch,
        linker,
        kind,
        relr,
    };
    let mut out = vec![];
    for linker in ["gnu", "lld"] {
        for kind in ["exec", "pie", "shared"] {
            out.push(v("librseq", "x86_64", linker, kind, false));
        }
        out.push(v("librseq", "x86_64", linker, "pie", true));
    }
    out.push(v("librseq", "aarch64", "gnu", "pie", false));
    out.push(v("librseq", "aarch64", "gnu", "shared", false));
    out.push(v("tcmalloc", "x86_64", "gnu", "pie", false));
    out.push(v("rseq_table", "x86_64", "gnu", "pie", false));
    out
}

impl Variant {
    fn name(&self) -> String {
        let relr = if self.relr { "-relr" } else { "" };
        format!(
            "{}-{}-{}-{}{relr}",
            self.format, self.arch, self.linker, self.kind
        )
    }

    fn compiler(&self) -> (&'static str, &'static str) {
        match self.arch {
            "x86_64" => ("gcc", "gcc"),
            "aarch64" => ("aarch64-linux-gnu-gcc", "gcc-aarch64-linux-gnu"),
            other => unreachable!("unknown arch {other}"),
        }
    }

    fn source(&self) -> PathBuf {
        sources_dir().join(format!("{}_{}.c", self.format, self.arch))
    }

    fn args(&self, out: &Path) -> Vec<String> {
        let mut a: Vec<String> = ["-g", "-O2", "-Wall", "-Wextra"].map(String::from).to_vec();
        match self.kind {
            "exec" => a.extend(["-fno-pie", "-no-pie"].map(String::from)),
            "pie" => a.extend(["-fPIE", "-pie"].map(String::from)),
            "shared" => a.extend(["-fPIC", "-shared", "-DFX_NO_MAIN"].map(String::from)),
            other => unreachable!("unknown kind {other}"),
        }
        if self.linker == "lld" {
            a.push("-fuse-ld=lld".into());
            a.push(format!("-B{LLD_DIR}"));
        }
        if self.relr {
            a.push("-Wl,-z,pack-relative-relocs".into());
        }
        a.push("-o".into());
        a.push(out.display().to_string());
        a.push(self.source().display().to_string());
        a
    }
}

fn check_tool(program: &str, package: &str) {
    match Command::new(program).arg("--version").output() {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!(
            "`{program} --version` failed ({}); reinstall the Debian package `{package}`",
            o.status
        ),
        Err(e) if e.kind() == ErrorKind::NotFound => panic!(
            "`{program}` not found: the rseq fixtures need it; install the Debian package \
             `{package}` (scripts/bootstrap.sh does)"
        ),
        Err(e) => panic!("cannot run `{program}`: {e}"),
    }
}

fn mtime_nanos(p: &Path) -> u128 {
    let meta = fs::metadata(p).unwrap_or_else(|e| panic!("fixture source {}: {e}", p.display()));
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos())
}

/// The mtime of the arch's shared header (`librseq_<arch>.h`), 0 where there is none.
fn header_mtime(arch: &str) -> u128 {
    let header = sources_dir().join(format!("librseq_{arch}.h"));
    if header.exists() {
        mtime_nanos(&header)
    } else {
        0
    }
}

/// Builds one variant unless the output exists and its stamp (command line + source mtime)
/// matches. Writes to temporary names and renames, so concurrent test processes never see a
/// half-written file.
fn build(v: &Variant, dir: &Path) -> Fixture {
    let name = v.name();
    let path = dir.join(&name);
    let stamp_path = dir.join(format!("{name}.stamp"));
    let (cc, cc_package) = v.compiler();
    let source = v.source();
    let stamp = format!(
        "{cc} {}\nsource mtime {}\nheader mtime {}\n",
        v.args(&path).join(" "),
        mtime_nanos(&source),
        header_mtime(v.arch)
    );
    let fresh = path.exists() && fs::read_to_string(&stamp_path).ok().as_deref() == Some(&stamp);
    if !fresh {
        let pid = std::process::id();
        let tmp = dir.join(format!("{name}.tmp.{pid}"));
        let out = Command::new(cc)
            .args(v.args(&tmp))
            .output()
            .unwrap_or_else(|e| panic!("cannot run {cc} (Debian package `{cc_package}`): {e}"));
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let hint = if stderr.contains("No such file or directory") && stderr.contains(".h") {
                let headers = if v.arch == "aarch64" {
                    "libc6-dev-arm64-cross"
                } else {
                    "libc6-dev"
                };
                format!(" (C headers missing: install the Debian package `{headers}`)")
            } else if v.linker == "lld" && stderr.contains("lld") {
                format!(" (lld: install the Debian package `{LLD_PACKAGE}`)")
            } else {
                String::new()
            };
            panic!(
                "building fixture {name} failed{hint}:\n{cc} {}\n{stderr}",
                v.args(&tmp).join(" ")
            );
        }
        fs::rename(&tmp, &path).unwrap_or_else(|e| panic!("rename to {}: {e}", path.display()));
        let tmp_stamp = dir.join(format!("{name}.stamp.tmp.{pid}"));
        fs::write(&tmp_stamp, &stamp).unwrap();
        fs::rename(&tmp_stamp, &stamp_path).unwrap();
    }
    Fixture {
        name,
        path,
        arch: v.arch,
        linker: v.linker,
        kind: v.kind,
        format: v.format,
        relr: v.relr,
        expected: expected(v.format),
        runnable: v.arch == std::env::consts::ARCH && v.kind != "shared",
    }
}

/// Builds every fixture once per test process into a directory under the target dir, and
/// returns them. Panics naming the missing tool and the Debian package that provides it.
pub(crate) fn all() -> &'static [Fixture] {
    static FIXTURES: OnceLock<Vec<Fixture>> = OnceLock::new();
    FIXTURES.get_or_init(|| {
        let variants = variants();
        check_tool("gcc", "gcc");
        if variants.iter().any(|v| v.arch == "aarch64") {
            check_tool("aarch64-linux-gnu-gcc", "gcc-aarch64-linux-gnu");
        }
        if variants.iter().any(|v| v.linker == "lld") {
            let lld = Path::new(LLD_DIR).join("ld.lld");
            assert!(
                lld.exists(),
                "{} not found: the lld fixtures need it; install the Debian package \
                 `{LLD_PACKAGE}` (scripts/bootstrap.sh does)",
                lld.display()
            );
        }
        let dir = build_dir();
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        thread::scope(|s| {
            let handles: Vec<_> = variants
                .iter()
                .map(|v| s.spawn(|| build(v, &dir)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                .collect()
        })
    })
}

/// The librseq-shaped test program (`tests/fixtures/librseq_param_x86_64.c`, a PIE): threads,
/// a delay loop inside every section, signals from a thread of its own, and its own count of
/// every section's attempts, aborts and cancels on stdout. Not in [`all`]: it is a program to
/// trace, not a table format.
pub(crate) fn librseq_param() -> &'static Fixture {
    static PARAM: OnceLock<Fixture> = OnceLock::new();
    PARAM.get_or_init(|| program("librseq_param"))
}

/// The marker-key program (`tests/fixtures/marker_key_x86_64.c`, a PIE): one marker key over
/// two sections retried until commit or cancel, with its own counts on stdout. Not in [`all`]:
/// it is a program to debug, not a table format.
pub(crate) fn marker_key() -> &'static Fixture {
    static KEY: OnceLock<Fixture> = OnceLock::new();
    KEY.get_or_init(|| program("marker_key"))
}

/// Builds the x86-64 PIE test program `tests/fixtures/<format>_x86_64.c`.
fn program(format: &'static str) -> Fixture {
    check_tool("gcc", "gcc");
    let dir = build_dir();
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    let v = Variant {
        format,
        arch: "x86_64",
        linker: "gnu",
        kind: "pie",
        relr: false,
    };
    build(&v, &dir)
}

/// The fixture named `name` (see [`Fixture::name`]).
pub(crate) fn get(name: &str) -> &'static Fixture {
    all()
        .iter()
        .find(|f| f.name == name)
        .unwrap_or_else(|| panic!("no fixture named {name}"))
}
