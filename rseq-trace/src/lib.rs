//! rseq-trace: counts how often each restartable-sequence critical section of a process is
//! entered, committed, cancelled and aborted, with uprobes placed only where they cannot break
//! the traced program.

pub mod attach;
#[cfg(feature = "bench")]
pub mod bench_rig;
pub mod command;
pub mod counts;
#[cfg(test)]
mod ebpf_frames;
pub mod engine;
pub mod error;
pub mod estimate;
pub mod hold_watchdog;
pub mod kernel_features;
pub mod listing;
pub mod live;
pub mod metrics;
pub mod multi_link;
pub mod poll_gap;
pub mod positions;
pub mod probe_points;
pub mod report;
pub mod sampling;
pub mod scrape;
pub mod serve;
pub mod symbolize;
pub mod table;
pub mod target;
pub mod tui;
