//! The session on a thread of its own: its poll loop (holds at library loads, new mappings,
//! exits) and sampled mode's windows run there, and nothing else does, so no view or scrape
//! can delay them. The views get a [`Status`] through a `watch` channel and read the counters
//! with map handles of their own ([`Reader`]).

use std::{
    sync::{
        mpsc::{self, RecvTimeoutError},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use rseq_common::mode::Mode;
use tokio::sync::watch;
use tracing::info;

use super::{Session, Status, TargetSpec};
use crate::{
    bpf::maps::{MapIds, Maps},
    error::{AttachError, SessionError},
    sampling::{sampler::Sampler, SamplingOptions},
    snapshot::Reader,
};

/// How often the targets are checked for exits, holds and new mappings.
pub const POLL: Duration = Duration::from_millis(50);
/// A pass longer than this is logged (at debug level).
const SLOW_PASS: Duration = Duration::from_millis(100);

/// A session running on its thread. Dropping it stops the session (detaching every probe).
pub struct Running {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<Result<(), SessionError>>>,
    status: watch::Receiver<Arc<Status>>,
    ids: MapIds,
}

impl Running {
    /// Starts the session on its thread and returns once its probes are attached (or with the
    /// reason they could not be). `sampling`: sampled mode's budget and options.
    pub fn start(
        specs: Vec<TargetSpec>,
        mode: Mode,
        sampling: SamplingOptions,
    ) -> Result<Running, SessionError> {
        let (started_tx, started_rx) = mpsc::channel();
        let (stop, stopped) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("rseq-session".into())
            .spawn(move || {
                let session = match Session::start(&specs, mode) {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = started_tx.send(Err(e));
                        return Ok(());
                    }
                };
                let mut session = session;
                // Before the first window: what the windows' probes cost here.
                let costs = (mode == Mode::Sampled).then(|| session.tracer_mut().calibrate());
                let (tx, rx) = watch::channel(Arc::new(session.status()));
                if started_tx.send(Ok((rx, session.map_ids()))).is_err() {
                    return Ok(());
                }
                let sampler = costs.map(|c| Sampler::new(sampling, c));
                poll_loop(session, sampler, &tx, &stopped)
            })
            .map_err(SessionError::Thread)?;
        match started_rx.recv() {
            Ok(Ok((status, ids))) => Ok(Running {
                stop: Some(stop),
                thread: Some(thread),
                status,
                ids,
            }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => Err(join(thread).err().unwrap_or(SessionError::Panicked)),
        }
    }

    /// A reader of the counters with map handles of its own.
    pub fn reader(&self) -> Result<Reader, AttachError> {
        Ok(Reader::new(Maps::open(self.ids)?, self.status.clone()))
    }

    /// The status, as published after each pass; `changed()` fails once the session ended.
    pub fn status(&self) -> watch::Receiver<Arc<Status>> {
        self.status.clone()
    }

    /// Stops the session after a last pass (its status then holds the final counts of every
    /// exited process) and detaches every probe. Readers keep reading the maps.
    pub fn finish(mut self) -> Result<(), SessionError> {
        self.stop.take();
        match self.thread.take() {
            Some(t) => join(t),
            None => Ok(()),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn join(thread: JoinHandle<Result<(), SessionError>>) -> Result<(), SessionError> {
    thread.join().map_err(|_| SessionError::Panicked)?
}

/// Passes every [`POLL`] and the sampler's steps in between, until `stop` is dropped or sent.
fn poll_loop(
    mut session: Session,
    mut sampler: Option<Sampler>,
    tx: &watch::Sender<Arc<Status>>,
    stop: &mpsc::Receiver<()>,
) -> Result<(), SessionError> {
    let publish = |s: Status| {
        tx.send_replace(Arc::new(s));
    };
    let mut next_pass = Instant::now();
    loop {
        if Instant::now() >= next_pass {
            let started = Instant::now();
            session.pass(publish)?;
            let took = started.elapsed();
            // Holds at library loads are taken only while passes come: a slow one shows.
            if took >= SLOW_PASS {
                tracing::debug!("a pass of the poll loop took {took:?}");
            }
            next_pass = Instant::now() + POLL;
        }
        let mut wake = next_pass;
        if let Some(s) = sampler.as_mut() {
            wake = wake.min(s.step(&mut session, Instant::now()));
        }
        match stop.recv_timeout(wake.saturating_duration_since(Instant::now())) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    if let Some(s) = sampler.as_mut() {
        s.stop(&mut session);
    }
    session.final_pass(publish)?;
    let gap = session.status().poll_gap;
    info!(
        "poll loop: longest gap between passes {:.1} ms over {} passes",
        gap.max().as_secs_f64() * 1e3,
        gap.passes()
    );
    Ok(())
}
