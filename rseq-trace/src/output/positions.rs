//! Where the kernel interrupts critical sections: per key, a histogram of the interrupted
//! instruction's offset from start_ip, each offset shown as the instruction there and its source
//! line. It tells a section's author which part of the section is too long.

use std::collections::BTreeMap;

use serde::Serialize;

/// One bar of the histogram.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Position {
    /// The section (`function+offset` of its start_ip).
    pub section: String,
    /// Interrupted instruction minus start_ip.
    pub offset: u32,
    /// Kernel restarts that interrupted the section there.
    pub restarts: u64,
    /// The instruction at that offset, as disassembled from the file.
    pub instruction: String,
    /// Its file:line, when the file has DWARF.
    pub source: Option<String>,
}

impl Position {
    /// "`jne 0x6360c` at start+0x12 (file.rs:81)": the instruction, where, and its source.
    pub fn place(&self) -> String {
        let source = self
            .source
            .as_deref()
            .map(|s| format!(" ({s})"))
            .unwrap_or_default();
        format!("`{}` at start+{:#x}{source}", self.instruction, self.offset)
    }
}

/// Sorts bars by restarts, most first, and keeps the `top` first ones.
pub fn hottest(mut bars: Vec<Position>, top: usize) -> Vec<Position> {
    bars.sort_by(|a, b| b.restarts.cmp(&a.restarts).then(a.offset.cmp(&b.offset)));
    bars.truncate(top);
    bars
}

/// Sums per (section, offset) over processes.
pub fn by_section_offset(
    positions: &BTreeMap<rseq_common::cause::PositionKey, u64>,
) -> BTreeMap<(u32, u32), u64> {
    let mut out = BTreeMap::new();
    for (k, n) in positions {
        *out.entry((k.section, k.offset)).or_default() += n;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bar(offset: u32, restarts: u64) -> Position {
        Position {
            section: "s".into(),
            offset,
            restarts,
            instruction: String::new(),
            source: None,
        }
    }

    #[test]
    fn hottest_first_then_by_offset() {
        let bars = hottest(vec![bar(4, 1), bar(9, 7), bar(2, 7), bar(0, 3)], 3);
        let got: Vec<(u32, u64)> = bars.iter().map(|b| (b.offset, b.restarts)).collect();
        assert_eq!(got, vec![(2, 7), (9, 7), (0, 3)]);
    }

    #[test]
    fn sums_over_processes() {
        use rseq_common::cause::PositionKey;
        let key = |tgid, offset| PositionKey {
            tgid,
            section: 1,
            offset,
            _pad: 0,
        };
        let m = BTreeMap::from([(key(1, 8), 2), (key(2, 8), 3), (key(2, 12), 1)]);
        let s = by_section_offset(&m);
        assert_eq!(s[&(1, 8)], 5);
        assert_eq!(s[&(1, 12)], 1);
    }
}
