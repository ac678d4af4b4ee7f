//! Types shared by the eBPF programs (`rseq-trace-ebpf`) and the agent (`rseq-trace`).
//!
//! Everything that both sides must agree on bit for bit lives here exactly once: what a probe
//! counts, how a BPF cookie names (section, event), and how the counter map is laid out.
#![no_std]

pub mod cause;
pub mod cookie;
pub mod counters;
pub mod event;
pub mod health;
pub mod mode;
pub mod state;
pub mod window;

pub use cookie::Cookie;
pub use event::Event;
