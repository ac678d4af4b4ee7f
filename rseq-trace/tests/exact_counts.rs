//! The promise users trust most: rseq-trace's counts equal what the traced program counted
//! itself, per section and per CPU, nothing lost. Real workload, real kernel, real uprobes.

mod support;

use serde_json::Value;
use support::{assert_exact, provoking, Tracer, Workload};

/// Gated workload, traced from before its first section to after its exit.
fn traced_run(args: &[&str], env: &[(&str, &str)]) -> (Value, Value) {
    let workload = Workload::start(args, env);
    let tracer = Tracer::attach(workload.pid, &[]);
    workload.release();
    let truth = workload.finish();
    let traced = tracer.finish(); // rseq-trace stops by itself when the workload exits
    (truth, traced)
}

#[test]
fn counts_equal_ground_truth_with_glibc_rseq_area() {
    support::require_root();
    let (truth, traced) = traced_run(&provoking("3", "6000"), &[]);
    let (aborts, cancels) = assert_exact(&truth, &traced);
    assert!(aborts > 0, "the run provoked no abort: {truth}");
    assert!(cancels > 0, "the run provoked no cancel: {truth}");
    eprintln!("exact over {aborts} aborts and {cancels} cancels");
}

#[test]
fn counts_equal_ground_truth_with_own_rseq_registration() {
    support::require_root();
    let (truth, traced) = traced_run(
        &provoking("2", "6000"),
        &[("GLIBC_TUNABLES", "glibc.pthread.rseq=0")],
    );
    let (aborts, cancels) = assert_exact(&truth, &traced);
    assert!(
        aborts > 0 && cancels > 0,
        "aborts {aborts}, cancels {cancels}: {truth}"
    );
}

/// The rseq ABI glibc 2.40+ selects: an area registered with the kernel's feature size, which
/// on Linux 7.1+ is the V2 ABI (the kernel writes the IDs only when they change, and evaluates
/// sections less often). Elsewhere the same as the 32-byte registration.
#[test]
fn counts_equal_ground_truth_with_the_kernels_extended_rseq_abi() {
    support::require_root();
    let mut args = provoking("2", "6000");
    args.push("--extended-rseq");
    let (truth, traced) = traced_run(&args, &[("GLIBC_TUNABLES", "glibc.pthread.rseq=0")]);
    eprintln!("registered with {} bytes", truth["rseq_len"]);
    let (aborts, cancels) = assert_exact(&truth, &traced);
    assert!(
        aborts > 0 && cancels > 0,
        "aborts {aborts}, cancels {cancels}: {truth}"
    );
}
