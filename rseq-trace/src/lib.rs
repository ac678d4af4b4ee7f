//! rseq-trace: counts how often each restartable-sequence critical section of a process is
//! entered, committed, cancelled and aborted, with uprobes placed only where they cannot break
//! the traced program.
//!
//! Data flows one way, one folder per stage: ELF files ([`elf`]) are read into a [`catalog`]
//! of sections and their probe plans; a [`session`] owns the loaded eBPF programs ([`bpf`]) and
//! the traced processes, and [`sampling`] opens its windows; counter values are read into
//! [`snapshot`]s, which the views ([`output`]) and the Prometheus exporter ([`export`]) show.

#![warn(missing_docs)]

#[cfg(feature = "bench")]
pub mod bench_rig;
pub mod bpf;
pub mod catalog;
pub mod debugger;
pub mod elf;
pub mod error;
pub mod export;
pub mod output;
pub mod sampling;
pub mod session;
pub mod snapshot;
