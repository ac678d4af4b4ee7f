//! Sampled mode's cancel probes. They start attached for the whole session, so cancels are
//! counted exactly; when a file's cancels cost the traced threads more than the budget allows
//! (frequent cancels through a trap), the sampler moves them into the windows, attached and
//! detached with the entry probes, and their count becomes an estimate.

use super::{
    links::{Links, ProbeGroup},
    DetachOnDrop, Tracer,
};
use crate::error::AttachError;

/// One file's cancel probes in one scope.
pub(super) struct CancelGroup {
    group: ProbeGroup,
    /// Attached for the whole session; `None` once they are sampled.
    link: Option<Links>,
    /// The sections they belong to.
    sections: Vec<u32>,
}

impl Tracer {
    /// Attaches a file's cancel probes for the whole session.
    pub(super) fn attach_cancels(
        &mut self,
        group: ProbeGroup,
        sections: Vec<u32>,
    ) -> Result<(), AttachError> {
        let link = self.attach_group(&group)?;
        self.probes += group.offsets.len();
        self.cancel_groups.push(CancelGroup {
            group,
            link: Some(link),
            sections,
        });
        Ok(())
    }

    /// The groups of cancel probes still attached for the whole session: (index, sections).
    pub fn continuous_cancels(&self) -> impl Iterator<Item = (usize, &[u32])> {
        self.cancel_groups
            .iter()
            .enumerate()
            .filter(|(_, g)| g.link.is_some())
            .map(|(i, g)| (i, g.sections.as_slice()))
    }

    /// Moves group `index`'s cancel probes into the windows. Returns their sections and the
    /// session-long probes, to drop away from the poll loop (detaching waits for the kernel's
    /// grace period).
    pub fn sample_cancels(&mut self, index: usize) -> Option<(Vec<u32>, DetachOnDrop)> {
        let g = self.cancel_groups.get_mut(index)?;
        let link = g.link.take()?;
        self.probes -= g.group.offsets.len();
        let sections = g.sections.clone();
        self.sample_groups.push(g.group.clone());
        Some((sections, DetachOnDrop { _links: vec![link] }))
    }
}
