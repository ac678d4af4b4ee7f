//! Rebuild when the bpf-linker binary changes: building this crate depends on it, and cargo has no
//! other way to know. Also declares the `bpf_target_arch` cfg.
fn main() {
    // aya-build passes --cfg bpf_target_arch="..." (the architecture whose pt_regs to read).
    println!(
        "cargo::rustc-check-cfg=cfg(bpf_target_arch, values(\"x86_64\", \"aarch64\", \"arm\", \"riscv64\", \"powerpc64\", \"s390x\", \"mips\", \"loongarch64\"))"
    );
    if let Ok(linker) = which::which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", linker.display());
    }
}
