#!/usr/bin/env python3
"""How long a traced process is held at a library load: the workload times its own dlopen of
the sections library (--dlopen-after-gate), untraced and traced by `rseq-trace --pid`, in
interleaved rounds. Prints median and max of each, and their difference: the hold.
Usage: bench/hold_time.py [ROUNDS]   (root; after cargo build --release)"""
import json, os, signal, statistics, subprocess, sys

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
rel = os.path.join(root, "target", "release")
workload, trace = os.path.join(rel, "rseq-workload"), os.path.join(rel, "rseq-trace")
lib = os.path.join(rel, "librseq_workload_sections.so")
rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 20


def once(traced):
    w = subprocess.Popen(
        [workload, "--gate", "--threads", "1", "--iterations", "1000",
         "--sections-lib", lib, "--dlopen-after-gate"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ready = w.stderr.readline()
    assert ready.startswith("READY"), ready
    t = None
    if traced:
        t = subprocess.Popen([trace, "--pid", str(w.pid), "--json", "--mode", "aborts"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        while "attached" not in t.stderr.readline():
            pass
    w.send_signal(signal.SIGUSR2)
    out, _ = w.communicate()
    if t:
        t.wait()
    return json.loads(out)["library_load_secs"] * 1e3


plain, held = [], []
for _ in range(rounds):
    plain.append(once(False))
    held.append(once(True))
fmt = lambda xs: f"median {statistics.median(xs):7.2f} ms  max {max(xs):7.2f} ms"
print(f"library load, {rounds} interleaved rounds (rseq-trace --pid, aborts mode)")
print(f"  untraced: {fmt(plain)}")
print(f"  traced:   {fmt(held)}")
print(f"  hold (traced - untraced medians): {statistics.median(held) - statistics.median(plain):.2f} ms")
