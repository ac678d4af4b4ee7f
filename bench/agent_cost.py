#!/usr/bin/env python3
"""What the rseq-trace agent itself costs, on binaries built by bench/gen_sections.py:

- agent: CPU time (utime + stime from /proc/PID/stat, as % of one core) and peak RSS (VmHWM)
  while it traces a binary with many sections, run by 2 threads, for a window of SECONDS, with
  a /metrics scrape (curl) every second, as Prometheus would.
- attach: time from rseq-trace's start to the end of attaching, on a binary with many
  sections: its "attached N probes" log line, written when Session::start returns. The /metrics
  server starts only then, so the first /metrics answer (its rseq_trace_probes_attached says
  how many) comes later by the time it takes to render one. The agent's own utime and stime at
  the log line split the attach time between its code (reading tables, planning probes) and the
  kernel (loading the programs, registering the uprobes), and `rseq-trace list FILE`, which
  reads and plans but attaches nothing, is timed too. Then 20 scrapes give the /metrics latency
  at that size (curl's time_total).
- detach: time from SIGTERM to the agent's exit, in both. Detaching waits for the kernel's
  uprobe grace period (per link); the agent is never SIGKILLed, since a kill in the middle of
  it makes the kernel leak the uprobes ("failed to unregister, leaking uprobe").

Usage (root): agent_cost.py --rseq-trace BIN --agent-binary FILE --attach-binary FILE
                            [--seconds 60] [--modes aborts,exact] [--attach-threads 1]
"""
import argparse
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port, timeout=10):
    """(seconds curl took, body) or None when the agent does not answer yet."""
    r = subprocess.run(
        ["curl", "-s", "-f", "--max-time", str(timeout), "-w", "\n%{time_total}",
         f"http://127.0.0.1:{port}/metrics"],
        capture_output=True, text=True)
    if r.returncode != 0:
        return None
    body, _, total = r.stdout.rpartition("\n")
    return float(total), body


def metric(body, name, labels=""):
    m = re.search(rf"^{re.escape(name + labels)} (\S+)$", body, re.M)
    return float(m.group(1)) if m else None


def cpu_ticks(pid):
    """(utime, stime) in clock ticks."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]), int(fields[12])


def status_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return None


class Session:
    """A target built by gen_sections.py and an rseq-trace agent serving /metrics on it."""

    def __init__(self, rseq_trace, binary, mode, threads, target_seconds):
        self.target = subprocess.Popen([binary, str(target_seconds), str(threads)],
                                       stdout=subprocess.DEVNULL)
        time.sleep(0.2)  # let it map its libraries and start its threads
        self.port = free_port()
        # A file, not a pipe: nobody reads the log while the agent runs, and a full pipe would
        # block it.
        self.log = tempfile.TemporaryFile(mode="w+")
        self.started = time.monotonic()
        self.agent = subprocess.Popen(
            [rseq_trace, "--pid", str(self.target.pid), "--listen", f"127.0.0.1:{self.port}",
             "--quiet", "--mode", mode],
            stdout=subprocess.DEVNULL, stderr=self.log)

    def wait_ready(self, limit=300):
        """Seconds from the agent's start to its "attached N probes" log line (the end of
        Session::start), to its first /metrics answer (which includes rendering it), and that
        answer."""
        attached = None
        while time.monotonic() - self.started < limit:
            if self.agent.poll() is not None:
                self.target.kill()
                self.log.seek(0)
                sys.exit(f"rseq-trace exited early: {self.log.read()}")
            if attached is None:
                # The server starts only after this line: no scrape before it can succeed.
                self.log.seek(0)
                if re.search(r"attached \d+ probes", self.log.read()):
                    attached = time.monotonic() - self.started
                    self.attach_cpu = cpu_ticks(self.agent.pid)
                else:
                    time.sleep(0.005)
                    continue
            got = scrape(self.port, timeout=30)
            if got is not None:
                return attached, time.monotonic() - self.started, got[1]
            time.sleep(0.01)
        self.stop()
        sys.exit(f"rseq-trace did not serve /metrics within {limit} s")

    def stop(self):
        """Seconds from SIGTERM to the agent's exit (it detaches every probe first)."""
        t = time.monotonic()
        self.agent.send_signal(signal.SIGTERM)
        self.agent.wait()
        detach = time.monotonic() - t
        self.target.kill()
        self.target.wait()
        return detach


def agent_row(args, mode):
    s = Session(args.rseq_trace, args.agent_binary, mode, 2, args.seconds + 120)
    attached, ready, body = s.wait_ready()
    sections = metric(body, "rseq_trace_sections", '{state="traced"}')
    probes = metric(body, "rseq_trace_probes_attached")
    u0, s0 = cpu_ticks(s.agent.pid)
    t0 = time.monotonic()
    latencies = []
    for i in range(1, int(args.seconds) + 1):
        time.sleep(max(0.0, t0 + i - time.monotonic()))
        got = scrape(s.port)
        if got is None:
            sys.exit("a /metrics scrape failed")
        latencies.append(got[0])
    u1, s1 = cpu_ticks(s.agent.pid)
    wall = time.monotonic() - t0
    hwm, rss = status_kib(s.agent.pid, "VmHWM"), status_kib(s.agent.pid, "VmRSS")
    detach = s.stop()
    return {
        "detach": detach,
        "mode": mode, "sections": sections, "probes": probes, "attached": attached,
        "ready": ready, "startup_cpu": (u0 + s0) / CLK_TCK,
        "cpu_pct": ((u1 - u0) + (s1 - s0)) / CLK_TCK / wall * 100,
        "user_pct": (u1 - u0) / CLK_TCK / wall * 100,
        "sys_pct": (s1 - s0) / CLK_TCK / wall * 100,
        "hwm": hwm / 1024, "rss": rss / 1024,
        "scrape_med": statistics.median(latencies) * 1000, "scrape_max": max(latencies) * 1000,
        "bytes": len(body.encode()),
    }


def attach_row(args, mode):
    s = Session(args.rseq_trace, args.attach_binary, mode, args.attach_threads, 3600)
    attached, ready, body = s.wait_ready()
    user, sys_ = s.attach_cpu
    sections = metric(body, "rseq_trace_sections", '{state="traced"}')
    probes = metric(body, "rseq_trace_probes_attached")
    latencies = []
    for _ in range(20):
        got = scrape(s.port)
        if got is None:
            sys.exit("a /metrics scrape failed")
        latencies.append(got[0])
        body = got[1]
        time.sleep(0.2)
    # The poll loop's longest gap so far (it continues processes held at library loads): what
    # the scrapes cost the tracer's own loop.
    gap = metric(body, "rseq_trace_poll_gap_max_seconds")
    hwm = status_kib(s.agent.pid, "VmHWM")
    detach = s.stop()
    return {
        "detach": detach,
        "mode": mode, "sections": sections, "probes": probes, "attached": attached,
        "ready": ready, "user": user / CLK_TCK, "sys": sys_ / CLK_TCK, "hwm": hwm / 1024,
        "gap": None if gap is None else gap * 1000,
        "scrape_med": statistics.median(latencies) * 1000, "scrape_max": max(latencies) * 1000,
        "bytes": len(body.encode()),
    }


def time_list(rseq_trace, binary):
    t = time.monotonic()
    subprocess.run([rseq_trace, "list", binary], stdout=subprocess.DEVNULL, check=True)
    return time.monotonic() - t


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--rseq-trace", required=True)
    p.add_argument("--agent-binary", required=True)
    p.add_argument("--attach-binary", required=True)
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--modes", default="aborts,exact")
    p.add_argument("--attach-threads", type=int, default=1)
    args = p.parse_args()
    modes = args.modes.split(",")
    n = lambda v: "?" if v is None else f"{v:.0f}"

    rows = []
    for mode in modes:
        print(f"agent cost: --mode {mode}, {args.seconds:.0f} s", file=sys.stderr)
        rows.append(agent_row(args, mode))
    print(f"agent cost: {os.path.basename(args.agent_binary)}, 2 target threads, "
          f"{args.seconds:.0f} s window after attach, /metrics scraped every 1 s; CPU = the "
          "agent's utime+stime over the window as % of one core; attach CPU = by the end of "
          "attach; detach = SIGTERM to exit")
    print(f"{'mode':<7} {'sections':>8} {'probes':>6} {'attach s':>8} {'attach CPU s':>12} "
          f"{'CPU %':>6} {'user %':>6} {'sys %':>6} {'VmHWM MiB':>9} {'VmRSS MiB':>9} "
          f"{'scrape ms med/max':>17} {'body KiB':>8} {'detach s':>8}")
    for r in rows:
        print(f"{r['mode']:<7} {n(r['sections']):>8} {n(r['probes']):>6} {r['attached']:>8.2f} "
              f"{r['startup_cpu']:>12.2f} {r['cpu_pct']:>6.2f} {r['user_pct']:>6.2f} "
              f"{r['sys_pct']:>6.2f} {r['hwm']:>9.1f} {r['rss']:>9.1f} "
              f"{r['scrape_med']:>8.1f}/{r['scrape_max']:<8.1f} {r['bytes'] / 1024:>8.0f} "
              f"{r['detach']:>8.2f}")

    listed = time_list(args.rseq_trace, args.attach_binary)
    rows = []
    for mode in modes:
        print(f"attach: --mode {mode}", file=sys.stderr)
        rows.append(attach_row(args, mode))
    print()
    print(f"attach: {os.path.basename(args.attach_binary)}, target running with "
          f"{args.attach_threads} thread(s); attach = rseq-trace start to its \"attached N "
          "probes\" line (end of Session::start); user/sys = agent CPU by then; first scrape = "
          "start to first /metrics answer (includes rendering it); poll gap = the longest time "
          "between two passes of the agent's poll loop by the last scrape "
          "(rseq_trace_poll_gap_max_seconds, 50 ms when nothing delays it); `rseq-trace list` "
          f"(read tables, plan probes, no attach) takes {listed:.2f} s")
    print(f"{'mode':<7} {'sections':>8} {'probes':>6} {'attach s':>8} {'user s':>6} {'sys s':>6} "
          f"{'first scrape s':>14} {'VmHWM MiB':>9} {'scrape ms med/max':>17} {'body KiB':>8} "
          f"{'detach s':>8} {'poll gap ms':>11}")
    for r in rows:
        print(f"{r['mode']:<7} {n(r['sections']):>8} {n(r['probes']):>6} {r['attached']:>8.2f} "
              f"{r['user']:>6.2f} {r['sys']:>6.2f} {r['ready']:>14.2f} {r['hwm']:>9.1f} "
              f"{r['scrape_med']:>8.1f}/{r['scrape_max']:<8.1f} {r['bytes'] / 1024:>8.0f} "
              f"{r['detach']:>8.2f} {n(r['gap']):>11}")


if __name__ == "__main__":
    main()
