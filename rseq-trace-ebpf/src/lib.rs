//! Empty library target: lets `rseq-trace` name this crate as a build-dependency so that cargo
//! rebuilds the embedded eBPF object whenever this crate changes (the programs are in `main.rs`).
#![no_std]
