//! The per-thread loop: attach to the thread's rseq area, wait at the start line, then
//! run counter_add plus one push-or-pop step per iteration, with optional yields
//! (migrations -> CPU-mismatch aborts) and SIGUSR1 to the next worker (signal aborts),
//! counting every outcome.

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Condvar, Mutex, PoisonError};

use crate::migrate::Movable;
use crate::percpu::PerCpu;
use crate::rseq_abi::{Registration, ThreadRseq};
use crate::sections::{Outcome, Section, SectionFns};
use crate::signals;
use crate::slice;
use crate::steady;
use crate::truth::Truth;

/// What every worker does, from the command line.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Plan {
    /// Number of workers.
    pub threads: usize,
    /// Iterations per worker, or `None` to run until stopped (`--duration`).
    pub iterations: Option<u64>,
    /// Spin count inside each section.
    pub delay: u64,
    /// `sched_yield` between reading the CPU and entering the sections every N
    /// iterations (0 = never).
    pub yield_every: u64,
    /// SIGUSR1 to the next worker every N iterations (0 = never).
    pub signal_every: u64,
    /// SIGUSR1 to the workers in turn at this period, from a thread of its own.
    pub signal_period: Option<std::time::Duration>,
    /// Enter the sections expecting the wrong CPU every N iterations (0 = never).
    pub mismatch_every: u64,
    /// Request a time-slice extension over every iteration, yield after grants.
    pub slice_extension: bool,
    /// Push steps, then as many pop steps, alternating.
    pub burst: u64,
    /// Whose rseq area to use.
    pub registration: Registration,
    /// Which copy of the sections to run (the executable's or a loaded library's).
    pub fns: SectionFns,
}

/// Holds workers back until all have attached to rseq and published their tid, so a
/// registration failure stops the run before any section runs and signals always have
/// a target.
#[derive(Default)]
pub(crate) struct StartLine {
    state: Mutex<StartState>,
    cv: Condvar,
}

#[derive(Default)]
struct StartState {
    arrived: usize,
    failed: usize,
    go: Option<bool>,
}

impl StartLine {
    fn arrive_and_wait(&self, ok: bool) -> bool {
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        st.arrived += 1;
        if !ok {
            st.failed += 1;
        }
        self.cv.notify_all();
        loop {
            if let Some(go) = st.go {
                return go;
            }
            st = self.cv.wait(st).unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Waits until `n` workers arrived; returns how many failed to attach.
    pub(crate) fn wait_arrivals(&self, n: usize) -> usize {
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        while st.arrived < n {
            st = self.cv.wait(st).unwrap_or_else(PoisonError::into_inner);
        }
        st.failed
    }

    /// Lets the workers run (`true`) or return at once (`false`).
    pub(crate) fn release(&self, go: bool) {
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        st.go = Some(go);
        self.cv.notify_all();
    }
}

/// State shared by all workers.
pub(crate) struct Shared<'a> {
    /// The per-CPU data the sections update.
    pub percpu: &'a PerCpu,
    /// Kernel tid of each worker, for tgkill.
    pub tids: Vec<AtomicI32>,
    /// The workers `--migrate-every-ms` may move (each while it runs).
    pub movable: Movable,
    /// Start synchronisation.
    pub start: StartLine,
    /// What to do.
    pub plan: Plan,
}

impl<'a> Shared<'a> {
    /// Shared state for `plan.threads` workers.
    pub(crate) fn new(percpu: &'a PerCpu, plan: Plan) -> Self {
        Shared {
            percpu,
            tids: (0..plan.threads).map(|_| AtomicI32::new(0)).collect(),
            movable: Movable::new(plan.threads),
            start: StartLine::default(),
            plan,
        }
    }
}

/// A distinct non-zero value per (worker, iteration), so sums catch lost or duplicated
/// items.
fn item_value(index: usize, iter: u64) -> u64 {
    ((index as u64 + 1) << 40) | (iter & ((1 << 40) - 1))
}

fn cpu_out_of_range(cpu: u32, ncpus: usize) -> String {
    signals::request_stop();
    format!("kernel reported cpu {cpu}, but only {ncpus} per-CPU slots were allocated")
}

/// Counts an abort after which the thread is on another CPU than `checked`, the one its
/// section compared with (unless the mismatch was deliberate): ground truth for a tracer's
/// `migration` restarts plus the aborts it says its own probe made by letting the thread move.
fn note_moved(
    truth: &mut Truth,
    rseq: &ThreadRseq,
    section: Section,
    checked: u32,
    out: Outcome,
    deliberate: bool,
) {
    if out == Outcome::Aborted && !deliberate && rseq.cpu_id_start() != checked {
        truth.record_moved(section);
    }
}

fn maybe_yield(yes: bool) {
    if yes {
        // SAFETY: sched_yield has no preconditions.
        unsafe {
            libc::sched_yield();
        }
    }
}

/// Body of worker `index`: returns what it counted, or why it could not run.
pub(crate) fn run(index: usize, shared: &Shared<'_>) -> Result<Truth, String> {
    let plan = shared.plan;
    let rseq = ThreadRseq::attach(plan.registration).and_then(|r| {
        if plan.slice_extension {
            slice::enable()?;
        }
        Ok(r)
    });
    let tid = signals::gettid();
    if let Some(t) = shared.tids.get(index) {
        t.store(tid, Ordering::Relaxed);
    }
    // Dropped on every way out of this function, before the thread exits.
    let _movable = shared.movable.register(index, tid);
    if !shared.start.arrive_and_wait(rseq.is_ok()) {
        return rseq.map(|_| Truth::new(0));
    }
    let rseq = rseq?;
    let percpu = shared.percpu;
    let ncpus = percpu.ncpus();
    let next = shared.tids.get((index + 1) % plan.threads.max(1));
    let burst = plan.burst.max(1);
    let mut truth = Truth::new(ncpus);
    let mut iter: u64 = 0;
    let mut before_steady = None;
    let cpu_at_start = steady::thread_cpu_ns();
    while plan.iterations.is_none_or(|n| iter < n) && !signals::stop_requested() {
        if before_steady.is_none() && iter.is_multiple_of(steady::LOOK_EVERY) && steady::begun() {
            before_steady = Some(iter);
            truth.cpu_ns_before_steady = steady::thread_cpu_ns().saturating_sub(cpu_at_start);
        }
        let nth = iter + 1;
        if plan.signal_every > 0 && nth.is_multiple_of(plan.signal_every) {
            if let Some(tid) = next.map(|t| t.load(Ordering::Relaxed)) {
                if tid > 0 && signals::send_sigusr1(tid) {
                    truth.signals_sent += 1;
                }
            }
        }
        if plan.slice_extension {
            rseq.request_slice();
        }
        let yield_now = plan.yield_every > 0 && nth.is_multiple_of(plan.yield_every);
        let mismatch = plan.mismatch_every > 0 && nth.is_multiple_of(plan.mismatch_every);
        // The CPU the section checks: the one the thread is on, or another one, which makes
        // the section abort by its own check (a commit proves the thread was on it).
        let expect = |cpu: u32| {
            if mismatch && ncpus > 1 {
                (cpu + 1) % ncpus as u32
            } else {
                cpu
            }
        };

        let cpu = expect(rseq.cpu_id_start());
        maybe_yield(yield_now);
        signals::next_attempt();
        let out = plan
            .fns
            .counter_add(&rseq, percpu, cpu, plan.delay)
            .ok_or_else(|| cpu_out_of_range(cpu, ncpus))?;
        truth.record(Section::CounterAdd, cpu, out);
        note_moved(&mut truth, &rseq, Section::CounterAdd, cpu, out, mismatch);

        let cpu = expect(rseq.cpu_id_start());
        maybe_yield(yield_now);
        signals::next_attempt();
        if (iter / burst).is_multiple_of(2) {
            let item = item_value(index, iter);
            let out = plan
                .fns
                .list_push(&rseq, percpu, cpu, item, plan.delay)
                .ok_or_else(|| cpu_out_of_range(cpu, ncpus))?;
            truth.record(Section::ListPush, cpu, out);
            note_moved(&mut truth, &rseq, Section::ListPush, cpu, out, mismatch);
            if out == Outcome::Committed {
                truth.pushed_sum = truth.pushed_sum.wrapping_add(item);
            }
        } else {
            let (out, value) = plan
                .fns
                .list_pop(&rseq, percpu, cpu, plan.delay)
                .ok_or_else(|| cpu_out_of_range(cpu, ncpus))?;
            truth.record(Section::ListPop, cpu, out);
            note_moved(&mut truth, &rseq, Section::ListPop, cpu, out, mismatch);
            if out == Outcome::Committed {
                truth.popped_sum = truth.popped_sum.wrapping_add(value);
            }
        }
        if plan.slice_extension && rseq.take_grant() {
            truth.slice_grants += 1;
            slice::yield_now();
        }
        iter += 1;
    }
    truth.iterations = iter;
    truth.cpu_ns = steady::thread_cpu_ns().saturating_sub(cpu_at_start);
    if before_steady.is_none() {
        truth.cpu_ns_before_steady = truth.cpu_ns;
    }
    truth.iterations_before_steady = before_steady.unwrap_or(iter);
    Ok(truth)
}
