#!/usr/bin/env python3
"""The default mode's abort ratio, per scenario: what it costs the traced threads and how good it
is, against the workload's own counts.

Usage (root): bench/ratio_cost.py [SECONDS] [ROUNDS] [SCENARIO]   (defaults 6, 3, all)

Slowdown is shown over the whole run and over its last two thirds (`--steady-after`): a
daemon's cost is the second, the first also has rseq-trace's start-up. Both are iterations per
wall second, so they also show the agent's own CPU use and anything else the machine ran; "per
CPU s" is iterations per CPU second of the workers' own threads (their thread clocks) in the
steady part, which is what the probes take from the traced threads. Each round runs the
workload untraced, traced, and untraced again; the traced run is compared with the mean of
the two around it, and "noise" is how far the two untraced runs of a round differ (median over
the rounds): a slowdown smaller than the noise is not measured.

Scenarios (tests/abort_ratio.rs runs the same ones): rare aborts (--mismatch-every 5000), frequent
aborts (--mismatch-every 20), rare cancels (--burst 4) and frequent cancels (--burst 64), at 1 and
8 threads. Each round runs the workload untraced, under `rseq-trace run` (the default mode,
--budget 1) and untraced again, one after the other; the slowdown is untraced iterations per
second over traced ones, as the median of the rounds. Error is the reported ratio's distance from the true one
(the workload's aborts over its attempts, all keys), width the bounds' width, both relative to
the true ratio, medians over the keys and rounds.
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRACE = os.path.join(REPO, "target/release/rseq-trace")
WORKLOAD = os.path.join(REPO, "target/release/rseq-workload")
SCENARIOS = [
    ("rare aborts", ["--mismatch-every", "5000", "--burst", "4"]),
    ("frequent aborts", ["--mismatch-every", "20", "--burst", "4"]),
    ("rare cancels", ["--mismatch-every", "200", "--burst", "4"]),
    ("frequent cancels", ["--mismatch-every", "200", "--burst", "64"]),
]


def rate(truth):
    return truth["total_iterations"] / truth["elapsed_secs"]


def steady_rate(truth):
    """Iterations per second after the first third of the run (rseq-trace's start-up, its
    calibration and its first decisions about which probes to sample, left out)."""
    return truth["steady_iterations"] / truth["steady_secs"]


def cpu_rate(truth):
    """Iterations per CPU second of the workers' own threads in the steady part: the probes
    are paid in the traced threads' CPU time, and other processes taking the machine's CPUs
    (rseq-trace's agent, a busy neighbour) do not change it."""
    return truth["steady_iterations"] / truth["steady_cpu_secs"]


def untraced(cmd):
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def traced(cmd):
    with tempfile.NamedTemporaryFile(suffix=".json") as summary:
        out = subprocess.run(
            [TRACE, "run", "--quiet", "--json", "--output", summary.name, "--"] + cmd,
            capture_output=True, text=True, check=True).stdout
        return json.loads(out), json.load(open(summary.name))


def quality(truth, report):
    """[(relative error, relative width, covered)] per key."""
    sections = list(truth["sections"].values())
    out = []
    for key in report["keys"]:
        mine = [s for s in sections if any(n.startswith(s["function"]) for n in key["sections"])]
        aborts = sum(s["aborts"] for s in mine)
        entries = sum(s["entries"] for s in mine)
        true = aborts / entries
        r, (low, high) = key["abort_ratio"], key["abort_ratio_bounds"]
        scale = true if true > 0 else 1.0
        out.append((abs(r - true) / scale, (high - low) / scale, low <= true <= high))
    return out


def main():
    seconds = sys.argv[1] if len(sys.argv) > 1 else "6"
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    print(f"default mode (sampled, --budget 1), {seconds} s per run, {rounds} rounds; "
          "slowdown = untraced iterations/s over traced (median), over the whole run and "
          "over its last two thirds (steady); per CPU s = the steady part's untraced iterations per CPU second of the workers' threads over traced ones, what the traced threads pay; error and width of the "
          "abort ratio relative to the true ratio (median over keys and rounds); covered = "
          "runs x keys whose bounds hold the truth; probe cost = rseq-trace's own estimate "
          "of the windows' probes' share (entry hits and the exit probes moved into the windows) of the traced threads' CPU time")
    print(f"{'scenario':<18} {'threads':>7} {'slowdown':>9} {'steady':>9} {'noise':>6} "
          f"{'per CPU s':>9} {'noise':>6} {'true ratio':>11} {'error':>7} "
          f"{'width':>7} {'covered':>8} {'probe cost':>10}")
    only = sys.argv[3] if len(sys.argv) > 3 else None
    for name, args in SCENARIOS:
        if only and name != only:
            continue
        for threads in ["1", "8"]:
            steady_after = str(float(seconds) / 3)
            cmd = [WORKLOAD, "--threads", threads, "--duration", seconds,
                   "--steady-after", steady_after] + args
            slow, steady, noise, per_cpu, cpu_noise, errors, widths, cost, true_ratio = ([] for _ in range(9))
            covered, total = 0, 0
            for _ in range(rounds):
                before = untraced(cmd)
                truth, report = traced(cmd)
                after = untraced(cmd)
                slow.append((rate(before) + rate(after)) / 2 / rate(truth))
                steady.append(
                    (steady_rate(before) + steady_rate(after)) / 2 / steady_rate(truth))
                noise.append(abs(steady_rate(before) / steady_rate(after) - 1))
                per_cpu.append((cpu_rate(before) + cpu_rate(after)) / 2 / cpu_rate(truth))
                cpu_noise.append(abs(cpu_rate(before) / cpu_rate(after) - 1))
                s = report["sampling"]
                cost.append(100 * s["probe_cost_seconds"] / max(s["traced_cpu_seconds"], 1e-9))
                for e, w, c in quality(truth, report):
                    errors.append(e)
                    widths.append(w)
                    covered += c
                    total += 1
                all_aborts = sum(v["aborts"] for v in truth["sections"].values())
                all_entries = sum(v["entries"] for v in truth["sections"].values())
                true_ratio.append(all_aborts / all_entries)
            print(f"{name:<18} {threads:>7} {statistics.median(slow):>8.3f}x "
                  f"{statistics.median(steady):>8.3f}x {100 * statistics.median(noise):>5.1f}% "
                  f"{statistics.median(per_cpu):>8.3f}x {100 * statistics.median(cpu_noise):>5.1f}% "
                  f"{100 * statistics.median(true_ratio):>10.3f}% "
                  f"{100 * statistics.median(errors):>6.1f}% {100 * statistics.median(widths):>6.1f}% "
                  f"{covered:>4}/{total:<3} {statistics.median(cost):>9.2f}%", flush=True)


if __name__ == "__main__":
    main()
