//! rseq-trace: counts how often each restartable-sequence critical section of a process is
//! entered, committed, cancelled and aborted, with uprobes placed only where they cannot break
//! the traced program.

pub mod attach;
pub mod command;
pub mod counts;
pub mod engine;
pub mod error;
pub mod listing;
pub mod live;
pub mod metrics;
pub mod probe_points;
pub mod report;
pub mod serve;
pub mod symbolize;
pub mod table;
pub mod target;
