//! Builds the eBPF programs from `rseq-trace-ebpf` and leaves the object in `OUT_DIR` for
//! `include_bytes_aligned!`. The BPF target needs `-Z build-std=core`, which Debian's rustc-web
//! (linked as the rustup toolchain `debian-web` by `scripts/bootstrap.sh`) allows with
//! RUSTC_BOOTSTRAP=1, and bpf-linker, which the bootstrap installs under /opt/rseq-trace-tools.
use std::{env, path::PathBuf};

use anyhow::Context as _;

const TOOLCHAIN: &str = "debian-web";
const DEFAULT_TOOLS: &str = "/opt/rseq-trace-tools";

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=RSEQ_TRACE_TOOLS");
    println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
    if env::var_os("AYA_BUILD_SKIP").is_some_and(|v| v == "1") {
        // Builds that never load eBPF (the table-parser fuzz target) embed an empty stub.
        let out = PathBuf::from(env::var_os("OUT_DIR").context("OUT_DIR not set")?);
        std::fs::write(out.join("rseq-trace-ebpf"), [])?;
        return Ok(());
    }
    let tools = env::var_os("RSEQ_TRACE_TOOLS").unwrap_or_else(|| DEFAULT_TOOLS.into());
    let mut path = vec![PathBuf::from(tools).join("bin")];
    path.extend(env::split_paths(&env::var_os("PATH").unwrap_or_default()));
    // Only this build script's environment (and the cargo it spawns) sees these.
    env::set_var("PATH", env::join_paths(path)?);
    env::set_var("RUSTC_BOOTSTRAP", "1");

    let manifest_dir = env::var("CARGO_MANIFEST_DIR")?;
    let ebpf_dir = PathBuf::from(manifest_dir).join("../rseq-trace-ebpf");
    let ebpf_dir = ebpf_dir
        .canonicalize()
        .with_context(|| format!("eBPF crate not found at {}", ebpf_dir.display()))?;
    let root_dir = ebpf_dir
        .to_str()
        .context("non-UTF-8 path to the eBPF crate")?;
    // `--features bench` (bench/probe_cost.sh) adds the empty program to the object.
    let features: &[&str] = if env::var_os("CARGO_FEATURE_BENCH").is_some() {
        &["bench"]
    } else {
        &[]
    };
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "rseq-trace-ebpf",
            root_dir,
            features,
            ..Default::default()
        }],
        aya_build::Toolchain::Custom(TOOLCHAIN),
    )
    .context("building the eBPF programs failed; run scripts/bootstrap.sh first")
}
