#!/usr/bin/env bash
# Sets up a fresh machine (idempotent), then traces the bundled rseq-workload for a few seconds
# and prints rseq-trace's per-section table beside the workload's own ground truth. Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
cargo build --release -p rseq-trace -p rseq-workload
bin=target/release

# The workload waits at its start gate (SIGUSR2) until the probes are attached.
truth=$(mktemp); trace_log=$(mktemp); gate=$(mktemp)
trap 'rm -f "$truth" "$trace_log" "$gate"' EXIT
"$bin/rseq-workload" --gate --threads 2 --duration "${DEMO_SECONDS:-3}" \
    --delay 100 --yield-every 50 --signal-every 200 >"$truth" 2>"$gate" &
workload=$!
until grep -q READY "$gate"; do sleep 0.05; done

"$bin/rseq-trace" --mode exact --pid "$workload" 2>"$trace_log" &
tracer=$!
until grep -q attached "$trace_log"; do
    kill -0 "$tracer" 2>/dev/null || { cat "$trace_log" >&2; exit 1; }
    sleep 0.05
done
kill -USR2 "$workload"
wait "$workload"
wait "$tracer"
echo
echo "The workload's own count (ground truth):"
python3 - "$truth" <<'PY'
import json, sys
t = json.load(open(sys.argv[1]))
print(f"{'SECTION':<28}  {'ENTRIES':>12}  {'COMMITS':>12}  {'ABORTS':>10}  {'CANCELS':>10}")
for s in t["sections"].values():
    print(f"{s['function']:<28}  {s['entries']:>12}  {s['commits']:>12}  {s['aborts']:>10}  {s['cancels']:>10}")
PY

# The default mode, which a fleet leaves running: every key's abort ratio with 95% bounds,
# measured on short windows within 1% of the traced threads' CPU time.
echo
echo "The default mode (sampled, --budget 1) on the same workload, with every 50th attempt made to abort:"
"$bin/rseq-trace" run --quiet --output "$gate" -- "$bin/rseq-workload" --threads 2 \
    --duration "${DEMO_SECONDS:-3}" --mismatch-every 50 >"$truth"
cat "$gate"
