//! Sampled mode's window: the agent attaches the entry probes for a short window and opens this
//! gate once they are all in place (and closes it before detaching any), so that entries and the
//! aborts and cancels they are compared with are counted over exactly the same time.

/// Name of the window array map: [`Slot`] -> value.
pub const WINDOW_MAP: &str = "WINDOW";

/// Slots of the window map.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    /// Non-zero while a window is open.
    Open = 0,
    /// Entry probe hits in sampled mode, all sections, gate open or not: what windows cost.
    Hits = 1,
}

impl Slot {
    pub const COUNT: u32 = 2;
}
