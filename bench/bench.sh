#!/usr/bin/env bash
# Benchmarks rseq-trace, every figure of a table measured side by side in one run. Prints one
# table per part:
#  1. workload slowdown: rseq-workload untraced, traced in --mode exact and in --mode aborts,
#     at 1, 2 and 8 threads (operations per second, slowdown ratio, cost per probe hit);
#  1b. sampled mode: slowdown at --budget 1 and estimated commits beside the truth
#     (bench/sampled.sh);
#  2. cost per probe hit of rseq_event, the empty program and bpftrace, on an ordinary
#     instruction and on a 5-byte nop (bench/probe_cost.sh);
#  3. the agent's CPU and memory at 1,000 sections, attach time and /metrics latency at 10,000
#     sections (bench/agent_cost.sh);
#  4. the hold at a library load (bench/hold_time.py);
#  5. aborts per million attempts as the programs count them, untraced and in every mode
#     (bench/probe_aborts.py).
# Usage: bench/bench.sh [SECONDS_PER_RUN] [AGENT_SECONDS]   (run as root; builds release
# binaries; installs bpftrace through scripts/bootstrap.sh --bench). SECONDS_PER_RUN (default 2)
# is each workload run and each probe-cost run; AGENT_SECONDS (default 60) the agent's window.
# The workload uses --burst 4 (its stacks hold 8), so cancels are rare, as in most real code.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-2}
agent_seconds=${2:-60}
bash scripts/bootstrap.sh --bench >/dev/null
cargo build --release -q -p rseq-trace -p rseq-workload
bin=target/release
out=$(mktemp -d)
trap '[ -n "${KEEP:-}" ] || rm -rf "$out"' EXIT

run() { # name threads repetition [rseq-trace run args...]
    local name=$1 threads=$2 rep=$3; shift 3
    local args=(--threads "$threads" --duration "$seconds" --burst 4)
    if [ "$#" -eq 0 ]; then
        "$bin/rseq-workload" "${args[@]}" >"$out/$name-$threads-$rep.truth"
    else
        "$bin/rseq-trace" run --quiet --json --output "$out/$name-$threads-$rep.trace" "$@" -- \
            "$bin/rseq-workload" "${args[@]}" >"$out/$name-$threads-$rep.truth" 2>/dev/null
    fi
}

# Three rounds, the modes interleaved, so that drift in the machine hits every mode alike; the
# table takes each configuration's median.
for rep in 1 2 3; do
    for threads in 1 2 8; do
        run untraced "$threads" "$rep"
        run exact "$threads" "$rep" --mode exact
        run aborts "$threads" "$rep" --mode aborts
    done
done

echo "machine: $(nproc) CPUs, $(uname -r), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
python3 - "$out" "$seconds" <<'PY'
import json, os, sys
out, seconds = sys.argv[1], sys.argv[2]
def load(name, threads):
    # The repetition with the median rate: (elapsed, ops, trace summary or None).
    runs = []
    for rep in (1, 2, 3):
        truth = json.load(open(f"{out}/{name}-{threads}-{rep}.truth"))
        ops = sum(s["entries"] for s in truth["sections"].values())
        path = f"{out}/{name}-{threads}-{rep}.trace"
        trace = json.load(open(path)) if os.path.exists(path) else None
        runs.append((ops / truth["elapsed_secs"], truth["elapsed_secs"], ops, trace))
    runs.sort(key=lambda r: r[0])
    return runs[1][1:]
print(f"rseq-workload, {seconds} s per run, median of 3 interleaved rounds; ops = critical-section attempts (all threads)")
print(f"{'threads':>7}  {'mode':<9}  {'ops/s':>12}  {'slowdown':>9}  {'hits/op':>8}  {'µs/hit':>7}")
for threads in (1, 2, 8):
    base_t, base_ops, _ = load("untraced", threads)
    base_rate = base_ops / base_t
    print(f"{threads:>7}  {'untraced':<9}  {base_rate:>12.0f}  {1.0:>8.2f}x  {'-':>8}  {'-':>7}")
    for mode in ("exact", "aborts"):
        t, ops, trace = load(mode, threads)
        rate = ops / t
        hits = sum(s["entries"] + s["aborts"] + s["cancels"] for s in trace["sections"])
        per_op = hits / ops if ops else 0.0
        # Cost of one hit: the extra time per op divided by hits per op (one thread only: with
        # more threads than the probes' CPU time is shared, the figure is not a per-hit cost).
        cost = (1 / rate - 1 / base_rate) / per_op * 1e6 if threads == 1 and per_op > 0.01 else None
        cost_s = f"{cost:>7.2f}" if cost is not None else f"{'-':>7}"
        print(f"{threads:>7}  {mode:<9}  {rate:>12.0f}  {base_rate / rate:>8.2f}x  {per_op:>8.4f}  {cost_s}")
PY

echo
bash bench/sampled.sh 15 1
echo
bash bench/probe_cost.sh "$seconds" 5
echo
bash bench/agent_cost.sh "$agent_seconds"
echo
python3 bench/hold_time.py 15
echo
python3 bench/probe_aborts.py 3 3
