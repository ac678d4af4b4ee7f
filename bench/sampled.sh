#!/usr/bin/env bash
# Sampled mode against its goals: the workload's slowdown under `--mode sampled --budget PCT`
# beside `--mode aborts` (untraced, aborts and sampled runs interleaved, three rounds, medians),
# and the estimated commits per section beside the workload's own count. Two workloads:
#  - rare cancels (--burst 4, as most real code): what the budget itself costs;
#  - frequent cancels (default bursts: a third of list_push/list_pop attempts cancel): many
#    reference events for the estimate, but every cancel is a probe hit, in aborts mode too.
# Usage: bench/sampled.sh [SECONDS_PER_RUN] [PCT]   (root; bench/bench.sh builds the binaries)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-15}
budget=${2:-1}
bin=target/release
out=$(mktemp -d)
trap '[ -n "${KEEP:-}" ] || rm -rf "$out"' EXIT
for rep in 1 2 3; do
    for load in rare frequent; do
        args=(--threads 2 --delay 50 --duration "$seconds")
        [ "$load" = rare ] && args+=(--burst 4)
        "$bin/rseq-workload" "${args[@]}" >"$out/$load-untraced-$rep.truth"
        for mode in aborts sampled; do
            "$bin/rseq-trace" run --quiet --json --output "$out/$load-$mode-$rep.trace" \
                --mode "$mode" --budget "$budget" -- "$bin/rseq-workload" "${args[@]}" \
                >"$out/$load-$mode-$rep.truth" 2>/dev/null
        done
    done
done
python3 - "$out" "$seconds" "$budget" <<'PY'
import json, sys
out, seconds, budget = sys.argv[1], sys.argv[2], sys.argv[3]
def rate(path):
    t = json.load(open(path))
    return sum(s["entries"] for s in t["sections"].values()) / t["elapsed_secs"]
def median(load, mode):
    runs = sorted((rate(f"{out}/{load}-{mode}-{r}.truth"), r) for r in (1, 2, 3))
    return runs[1]
print(f"sampled --budget {budget} vs aborts: rseq-workload --threads 2 --delay 50, {seconds} s per run, median of 3 interleaved rounds")
for load in ("rare", "frequent"):
    base, _ = median(load, "untraced")
    aborts, _ = median(load, "aborts")
    sampled, rep = median(load, "sampled")
    print(f"\n{load} cancels: untraced {base:,.0f} ops/s; aborts {base / aborts:.3f}x; sampled {base / sampled:.3f}x")
    trace = json.load(open(f"{out}/{load}-sampled-{rep}.trace"))
    truth = json.load(open(f"{out}/{load}-sampled-{rep}.truth"))
    s = trace["sampling"]
    print(f"  {s['windows']} windows, {s['window_seconds']:.2f} s open; entry probes' cost estimated at "
          f"{100 * s['probe_cost_seconds'] / max(s['traced_cpu_seconds'], 1e-9):.2f}% of the traced threads' CPU time")
    print(f"  {'section':<28} {'commits (truth)':>16} {'estimate':>14} {'± (3σ)':>10} {'error':>8} {'±/truth':>8}")
    for t in truth["sections"].values():
        sec = next(x for x in trace["sections"] if x["name"].startswith(t["function"]))
        est, unc = sec["commits"], sec["estimate"]["uncertainty"]
        if unc is None:
            print(f"  {t['function']:<28} {t['commits']:>16,} {'>=' + format(sec['entries'], ','):>14} {'-':>10} {'-':>8} {'-':>8}")
        else:
            err = 100 * (est - t["commits"]) / t["commits"]
            print(f"  {t['function']:<28} {t['commits']:>16,} {est:>14,} {unc:>10,} {err:>7.2f}% {100 * unc / t['commits']:>7.2f}%")
PY
