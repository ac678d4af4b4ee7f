//! Links `librseq_workload_sections.so` with `-Bsymbolic`: the library's own references
//! to its exported section functions (taken by `check_tables` to attribute descriptors)
//! bind to the library itself, never to same-named definitions elsewhere in the process
//! (the `rseq-workload` executable has its own copies of all three functions).

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-Bsymbolic");
    }
}
