//! Rebuild when the bpf-linker binary changes: building this crate depends on it, and cargo has no
//! other way to know.
fn main() {
    if let Ok(linker) = which::which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", linker.display());
    }
}
