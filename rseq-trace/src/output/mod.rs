//! The views: the summary table and JSON, the live view, and `list`.

pub mod list;
pub mod live;
pub mod positions;
pub mod report;
pub mod summary;
pub mod tui;
