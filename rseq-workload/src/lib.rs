//! rseq_workload_sections: the three rseq critical sections of rseq-workload, with the
//! per-CPU data layout and the rseq ABI they use.
//!
//! Built twice from the same source:
//!
//! * as an rlib, linked statically into the `rseq-workload` executable (its built-in
//!   sections: exactly three descriptors in the executable);
//! * as the shared library `librseq_workload_sections.so` (`target/<profile>/`), which
//!   `rseq-workload --sections-lib PATH` loads with `dlopen`, so a tracer can be tested
//!   on critical sections living in a shared object. The library exports the three
//!   section functions under the same names (`rseq_workload_counter_add`,
//!   `rseq_workload_list_push`, `rseq_workload_list_pop`), the marker keys, and
//!   [`rseq_workload_sections_descriptors`], which checks and returns the library's own
//!   relocated descriptors.

#![deny(clippy::undocumented_unsafe_blocks)]

pub mod percpu;
pub mod rseq_abi;
pub mod sections;

pub use sections::rseq_workload_sections_descriptors;
