//! Counter values read from the maps at one moment, and their sums.

pub mod counts;
