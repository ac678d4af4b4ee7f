#!/usr/bin/env bash
# Cost per probe hit: rseq-trace's rseq_event, the empty program rseq_empty (the floor) and
# bpftrace's count() (when installed), on an ordinary instruction and on a 5-byte nop, against
# the untraced run, all measured side by side in one run (rseq-trace/examples/probe_cost.rs).
# Usage: bench/probe_cost.sh [SECONDS_PER_RUN] [ROUNDS]   (root; called by bench/bench.sh,
# which builds the release binaries first)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-1}
rounds=${2:-5}
build=target/bench
mkdir -p "$build"
gcc -O2 -Wall -Wextra -o "$build/probe_cost_target" bench/probe_cost_target.c
cargo build --release -q -p rseq-trace --features bench --example probe_cost
target/release/examples/probe_cost --target "$build/probe_cost_target" \
    --seconds "$seconds" --rounds "$rounds"
