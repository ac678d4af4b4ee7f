//! Discovering a program's rseq critical sections from the tables in its ELF file.

pub mod elf;
pub mod librseq;

use serde::Serialize;

/// One rseq critical section, in link-time addresses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CriticalSection {
    /// Address of its `struct rseq_cs` descriptor.
    pub descriptor: u64,
    pub start_ip: u64,
    /// start_ip + post_commit_offset: the first instruction after the commit.
    pub post_commit_ip: u64,
    pub abort_ip: u64,
    /// Exit points other than commit and abort (cancels), from `__rseq_exit_point_array`.
    pub exits: Vec<u64>,
}

impl CriticalSection {
    /// Whether `ip` is inside [start_ip, post_commit_ip): where no probe may ever go.
    pub fn contains(&self, ip: u64) -> bool {
        ip >= self.start_ip && ip < self.post_commit_ip
    }
}

/// Something wrong with one table entry; the rest of the table is still used.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TableWarning {
    pub at: u64,
    pub message: String,
}
