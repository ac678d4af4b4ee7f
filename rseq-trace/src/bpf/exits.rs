//! Sampled mode's exit probes (abort handlers and cancel exits). They start attached for the
//! whole session, so aborts and cancels are counted exactly; when a file's aborts or cancels
//! cost the traced threads more than the budget allows (frequent exits through a probe hit,
//! each a trap or an optimized nop), the sampler moves them into the windows, attached and
//! detached with the entry probes, and their count becomes an estimate.

use rseq_common::counters::Counter;

use super::{
    links::{Links, ProbeGroup},
    DetachOnDrop, Tracer,
};
use crate::error::AttachError;

/// Which exit a group of probes sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ExitKind {
    /// The abort handler: every abort, the kernel's restarts and the section's own branch.
    Abort,
    /// Exit points other than the commit.
    Cancel,
}

impl ExitKind {
    /// Both kinds.
    pub const ALL: [ExitKind; 2] = [ExitKind::Abort, ExitKind::Cancel];

    /// The counter its probes add to.
    pub fn counter(self) -> Counter {
        match self {
            ExitKind::Abort => Counter::Aborts,
            ExitKind::Cancel => Counter::Cancels,
        }
    }

    /// The word for it in messages.
    pub fn plural(self) -> &'static str {
        match self {
            ExitKind::Abort => "aborts",
            ExitKind::Cancel => "cancels",
        }
    }
}

/// One file's exit probes of one kind in one scope.
pub(super) struct ExitGroup {
    kind: ExitKind,
    group: ProbeGroup,
    /// Attached for the whole session; `None` once they are sampled.
    link: Option<Links>,
    /// The sections they belong to.
    sections: Vec<u32>,
}

impl Tracer {
    /// Attaches a file's exit probes of one kind for the whole session.
    pub(super) fn attach_exits(
        &mut self,
        kind: ExitKind,
        group: ProbeGroup,
        sections: Vec<u32>,
    ) -> Result<(), AttachError> {
        let link = self.attach_group(&group)?;
        self.probes += group.offsets.len();
        self.exit_groups.push(ExitGroup {
            kind,
            group,
            link: Some(link),
            sections,
        });
        Ok(())
    }

    /// The groups of exit probes still attached for the whole session: (index, kind,
    /// sections).
    pub fn continuous_exits(&self) -> impl Iterator<Item = (usize, ExitKind, &[u32])> {
        self.exit_groups
            .iter()
            .enumerate()
            .filter(|(_, g)| g.link.is_some())
            .map(|(i, g)| (i, g.kind, g.sections.as_slice()))
    }

    /// Moves group `index`'s exit probes into the windows. Returns their kind, their sections
    /// and the session-long probes, to drop away from the poll loop (detaching waits for the
    /// kernel's grace period).
    pub fn sample_exits(&mut self, index: usize) -> Option<(ExitKind, Vec<u32>, DetachOnDrop)> {
        let g = self.exit_groups.get_mut(index)?;
        let link = g.link.take()?;
        self.probes -= g.group.offsets.len();
        let sections = g.sections.clone();
        self.sample_groups.push(g.group.clone());
        Some((g.kind, sections, DetachOnDrop { _links: vec![link] }))
    }
}
