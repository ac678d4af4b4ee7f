//! Following a process: the objects it maps (now, after a dlopen, after exec), holding it at
//! each change of its loaded objects until they are probed.

use std::{path::Path, sync::Arc};

use aya::programs::uprobe::UProbeScope;
use tracing::warn;

use super::{procfs, Session};
use crate::{
    catalog::{probe_plan::ProbePlan, FileId},
    error::{SessionError, TargetError},
};

impl Session {
    /// Attaches to every object `pid` maps that has tables, and keeps following it.
    pub(super) fn follow(&mut self, pid: u32) -> Result<(), SessionError> {
        self.tracer.maps.trace_process(pid)?;
        if let Some(comm) = procfs::comm(pid) {
            Arc::make_mut(&mut self.processes).insert(pid, comm);
        }
        if !self.followed.contains(&pid) {
            self.followed.push(pid);
        }
        self.rescan(pid)
    }

    /// Holds `pid` at every change of its loaded objects (dlopen) until they are attached.
    pub(super) fn hook_loader(&mut self, loader: &Path, pid: u32) {
        if !self.hooked.insert(pid) {
            return;
        }
        match self.tracer.attach_dl_hook(loader, pid) {
            Ok(()) => {}
            // A static executable has no loader and loads nothing later.
            Err(e) => warn!(
                "libraries pid {pid} loads later may miss their first events: cannot hook {}: {e}",
                loader.display()
            ),
        }
    }

    /// Attaches to what the processes stopped at a loader change mapped, then continues them.
    pub(super) fn release_dl_pending(&mut self) -> Result<(), SessionError> {
        // This loop is what releases holds: while it runs, holds may be taken.
        self.tracer.maps.heartbeat()?;
        for pid in self.tracer.maps.take_dl_pending() {
            tracing::debug!("pid {pid} changed its loaded objects: rescanning before it goes on");
            self.tracer.maps.heartbeat()?;
            let result = self.rescan(pid);
            // Continuing a process this session stopped (a vanished one needs nothing).
            let _ = procfs::send_signal(pid, rustix::process::Signal::CONT);
            result?;
        }
        Ok(())
    }

    /// Loads and attaches the objects `pid` maps that are new since the last look: libraries
    /// loaded with dlopen, or a new executable after exec.
    pub(super) fn rescan(&mut self, pid: u32) -> Result<(), SessionError> {
        let objects = match procfs::mapped_objects(pid) {
            Ok(o) => o,
            Err(TargetError::NoSuchProcess { .. }) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        if !self.hooked.contains(&pid) {
            if let Some(loader) = objects.iter().find(|o| is_loader(&o.shown)) {
                let path = loader.probe_path.clone();
                self.hook_loader(&path, pid);
            }
        }
        for o in objects {
            if self.attached.contains(&(o.id, Some(pid)))
                || self.everywhere.contains(&o.id)
                || self.no_tables.contains(&o.id)
            {
                continue;
            }
            // Reading a large file takes a while: the holds' heartbeat must not go stale.
            self.tracer.maps.heartbeat()?;
            match self.add_file(o.id, &o.open_path, &o.shown) {
                Ok(true) => self.attach(o.id, &o.probe_path, Some(pid))?,
                Ok(false) => {
                    self.no_tables.insert(o.id);
                }
                Err(e) => {
                    warn!("{}: {e}", o.shown);
                    self.no_tables.insert(o.id);
                }
            }
        }
        Ok(())
    }

    /// Reads a file's tables into the catalog once; `Ok(false)` when it has no sections.
    pub(super) fn add_file(
        &mut self,
        id: FileId,
        open_path: &Path,
        shown: &str,
    ) -> Result<bool, SessionError> {
        if let Some(o) = self.catalog.object(id) {
            return Ok(!o.found.is_empty());
        }
        // Views holding the previous version keep it; sections are shared, not copied.
        Ok(Arc::make_mut(&mut self.catalog).add_file(id, open_path, shown)?)
    }

    /// Attaches the probes of every safe section of a file read, for one process or all.
    pub(super) fn attach(
        &mut self,
        id: FileId,
        probe_path: &Path,
        pid: Option<u32>,
    ) -> Result<(), SessionError> {
        if !self.attached.insert((id, pid)) {
            return Ok(());
        }
        let scope = match pid.and_then(std::num::NonZeroU32::new) {
            Some(pid) => UProbeScope::OneProcess(pid),
            None => UProbeScope::AllProcesses,
        };
        let Some(object) = self.catalog.object(id) else {
            return Ok(());
        };
        let plans: Vec<(u32, &ProbePlan)> = object
            .ids
            .iter()
            .filter_map(|id| Some((*id, self.catalog.section(*id)?.plan.as_ref().ok()?)))
            .collect();
        self.tracer
            .attach_object(probe_path, scope, &object.image, &plans, &object.found)?;
        Ok(())
    }
}

/// Whether a mapped file is the dynamic loader (ld-linux-*.so.*, ld-*.so).
fn is_loader(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    name.starts_with("ld-") && name.contains(".so")
}
