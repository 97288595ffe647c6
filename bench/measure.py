"""Measuring processes and the machine for the benchmarks: CPU ticks and RSS
from /proc, CPU affinity, percentiles, the paths everything writes to."""

import os
import subprocess
import sys
import threading
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(BENCH_DIR)
sys.path.insert(0, os.path.join(REPO_ROOT, "tests"))

from harness import children_of  # noqa: E402

BUILD_BENCH = os.path.join(REPO_ROOT, "build", "bench")
DOC = os.path.join(REPO_ROOT, "docs", "performance.md")
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


def log(msg):
    sys.stderr.write("[bench %s] %s\n" % (time.strftime("%H:%M:%S"), msg))
    sys.stderr.flush()


def proc_cpu_ticks(pid):
    """(user, system, ppid): clock ticks of the whole process (all threads) plus
    its children that exited and were reaped (cutime, cstime): the backends of
    pgbench's connections end before the last snapshot and land in the
    postmaster's cutime."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rpartition(")")[2].split()
        return int(fields[11]) + int(fields[13]), int(fields[12]) + int(fields[14]), int(fields[1])
    except (OSError, IndexError, ValueError):
        return None


def proc_rss_kb(pid):
    try:
        with open("/proc/%d/statm" % pid) as f:
            return int(f.read().split()[1]) * PAGE_KB
    except (OSError, IndexError, ValueError):
        return None


def descendants(pid):
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        for c in children_of(p):
            out.append(c)
            todo.append(c)
    return out


def set_affinity(pids, cpus):
    """Pin every thread of these processes (children forked later inherit it)."""
    for pid in pids:
        try:
            tids = [int(t) for t in os.listdir("/proc/%d/task" % pid)]
        except OSError:
            continue
        for tid in tids:
            try:
                os.sched_setaffinity(tid, cpus)
            except OSError:
                pass


def machine_busy_ticks():
    with open("/proc/stat") as f:
        vals = [int(x) for x in f.readline().split()[1:]]
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
    return sum(vals[:8]) - idle, sum(vals[:8])


STAT_COLUMNS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


def machine_columns():
    with open("/proc/stat") as f:
        vals = [int(x) for x in f.readline().split()[1:9]]
    return dict(zip(STAT_COLUMNS, vals))


def all_process_ticks():
    out = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open("/proc/%s/stat" % name) as f:
                    raw = f.read()
            except OSError:
                continue
            comm = raw[raw.find("(") + 1:raw.rfind(")")]
            fields = raw.rpartition(")")[2].split()
            out[int(name)] = (comm, int(fields[11]) + int(fields[12]))
    return out


class CpuMeter:
    """CPU seconds per process group between start() and stop(); a process
    that appears during the interval counts with all of its time."""

    def __init__(self, groups):
        self.groups = groups    # name -> callable returning pids

    def _snap(self):
        snap = {}
        for name, fn in self.groups.items():
            d = {}
            for pid in fn():
                t = proc_cpu_ticks(pid)
                if t is not None:
                    d[pid] = t
            snap[name] = d
        return snap

    def start(self):
        self.t0 = time.monotonic()
        self.busy0 = machine_busy_ticks()
        self.cols0 = machine_columns()
        self.all0 = all_process_ticks()
        self.s0 = self._snap()

    def stop(self):
        s1 = self._snap()
        busy1 = machine_busy_ticks()
        wall = time.monotonic() - self.t0
        out = {}
        for name in self.groups:
            user = system = 0
            for pid, (u, st, _) in s1[name].items():
                u0, st0, _ = self.s0[name].get(pid, (0, 0, 0))
                user += u - u0
                system += st - st0
            # A process of the group that ended during the interval adds its
            # whole life to its parent's cutime: take back what it had used
            # before the interval (e.g. the node peer's idle pool connections,
            # closed 10 s after its run, during the next one).
            for pid, (u0, st0, ppid) in self.s0[name].items():
                if pid not in s1[name] and ppid in s1[name]:
                    user -= u0
                    system -= st0
            out[name] = (user + system) / CLK_TCK
            out[name + "_user"] = user / CLK_TCK
            out[name + "_sys"] = system / CLK_TCK
        machine = (busy1[0] - self.busy0[0]) / CLK_TCK
        out["_machine"] = machine
        out["_wall"] = wall
        ours = sum(out[k] for k in self.groups)
        out["_foreign"] = max(0.0, machine - ours)
        cols1 = machine_columns()
        out["_columns"] = {k: (cols1[k] - self.cols0[k]) / CLK_TCK for k in STAT_COLUMNS}
        # the busiest processes outside the groups, to name the other load
        mine = set()
        for d in s1.values():
            mine.update(d)
        others = []
        for pid, (comm, t) in all_process_ticks().items():
            if pid in mine or pid == os.getpid():
                continue
            d = (t - self.all0.get(pid, (comm, 0))[1]) / CLK_TCK
            if d > 0.05:
                others.append((round(d, 2), comm, pid))
        out["_others"] = sorted(others, reverse=True)[:6]
        out["_foreign_share"] = out["_foreign"] / max(1e-9, wall * (os.cpu_count() or 1))
        return out


class RssSampler(threading.Thread):
    """Samples VmRSS of a set of processes; keeps peaks and a time series."""

    def __init__(self, pids_fn, interval=0.25, progress_fn=None):
        super().__init__(daemon=True)
        self.pids_fn = pids_fn
        self.interval = interval
        self.progress_fn = progress_fn
        self.stop_ev = threading.Event()
        self.peak_sum = 0
        self.peak_max = 0
        self.series = []   # (t, progress, {pid: kb})

    def run(self):
        t0 = time.monotonic()
        while not self.stop_ev.is_set():
            rss = {}
            for pid in self.pids_fn():
                kb = proc_rss_kb(pid)
                if kb is not None:
                    rss[pid] = kb
            if rss:
                self.peak_sum = max(self.peak_sum, sum(rss.values()))
                self.peak_max = max(self.peak_max, max(rss.values()))
                prog = self.progress_fn() if self.progress_fn else None
                self.series.append((time.monotonic() - t0, prog, rss))
            self.stop_ev.wait(self.interval)

    def finish(self):
        self.stop_ev.set()
        self.join(5)


def percentile(sorted_vals, p):
    if not sorted_vals:
        return 0
    k = min(len(sorted_vals) - 1, max(0, int(round(p / 100.0 * len(sorted_vals) + 0.5)) - 1))
    return sorted_vals[k]


def sh(argv, timeout=30):
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        return (p.stdout + p.stderr).strip()
    except (OSError, subprocess.TimeoutExpired) as exc:
        return "(%s)" % exc
