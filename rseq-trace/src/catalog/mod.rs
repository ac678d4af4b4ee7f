//! The catalog: every critical section found in the traced files, with its key, name and
//! probe plan.

pub mod probe_plan;
