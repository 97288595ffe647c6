#!/usr/bin/env python3
"""make bench / bench-soak / bench-profile: paddlehook side by side with the
database's own ceiling (pgbench) and with the usual Node.js handler.

Everything runs on loopback in one temporary directory, started and stopped
by this script (tests/harness.py): PostgreSQL 15 with fsync=on,
synchronous_commit=on and full_page_writes=on, `paddlehook serve` behind
nginx, and the Node.js peer (bench/peer-node) on its own port.

    python3 bench/run.py bench     # the table -> docs/performance.md
    python3 bench/run.py soak      # 200,000 events, worker RSS over time
    python3 bench/run.py profile   # perf + pg_stat_statements + WAL per statement

See docs/performance.md for what each column means.
"""

import argparse
import datetime
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(BENCH_DIR)
sys.path.insert(0, os.path.join(REPO_ROOT, "tests"))
sys.path.insert(0, BENCH_DIR)

import events as bevents  # noqa: E402
from harness import (EVENT_TABLE, STATE_TABLES, Harness, children_of, pid_alive,  # noqa: E402
                     wait_until)

BUILD_BENCH = os.path.join(REPO_ROOT, "build", "bench")
DOC = os.path.join(REPO_ROOT, "docs", "performance.md")
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024

# PostgreSQL settings for every benchmark: durable commits (the defaults,
# stated explicitly because the test harness turns them off), and a
# shared_buffers a small production server would have instead of the
# harness's 32MB.
PG_SETTINGS = {
    "fsync": "on",
    "synchronous_commit": "on",
    "full_page_writes": "on",
    "shared_buffers": "256MB",
    "max_connections": "200",
}
# nginx as docs/deploy.md tunes a busy endpoint: a whole delivery read in one
# recv (no FIONREAD + second recv), the access log written in batches.
NGINX_SERVER_DIRECTIVES = "client_header_buffer_size 8k;"
NGINX_ACCESS_LOG_OPTIONS = "buffer=64k flush=1s"
TOLERANCE = 7 * 24 * 3600          # the endpoint accepts the pre-signed ts for a week
PIN_DB, PIN_FRONT = {0}, {1}         # --pin: CPU sets of the database and of the rest


def log(msg):
    sys.stderr.write("[bench %s] %s\n" % (time.strftime("%H:%M:%S"), msg))
    sys.stderr.flush()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------
# /proc accounting
# ---------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------
# the stack
# ---------------------------------------------------------------------------

class Stack:
    def __init__(self, args, extra_pg=None):
        self.args = args
        self.H = Harness(workers=args.workers, pg_fast=False,
                         environment_name="paddlehook-bench",
                         nginx_server_directives=NGINX_SERVER_DIRECTIVES,
                         nginx_access_log_options=NGINX_ACCESS_LOG_OPTIONS)
        self.H.nginx_upstream_keepalive = args.workers  # as many idle connections as workers
        self.extra_pg = dict(extra_pg or {})
        self.node_proc = None
        self.node_port = None
        self.ep = None
        self.secret = None

    # -- lifecycle ----------------------------------------------------------

    def start(self):
        H = self.H
        log("starting PostgreSQL (fsync=on, synchronous_commit=on) in a temporary directory")
        H.start(serve=False, nginx=False)
        settings = dict(PG_SETTINGS)
        settings.update(self.extra_pg)
        # Workaround: the harness cannot be given settings (pg_fast=False
        # gives the durable defaults, shared_buffers stays at its 32MB), so
        # append ours to postgresql.conf (the last line wins) and restart
        # before anything connects.
        with open(os.path.join(H.pg_data, "postgresql.conf"), "a") as f:
            f.write("\n# paddlehook bench (bench/run.py)\n")
            for k, v in settings.items():
                f.write("%s = '%s'\n" % (k, v))
        H.stop_postgres()
        H.start_postgres()
        self.pg_settings = dict(H.sql(
            "SELECT name, setting || coalesce(unit, '') FROM pg_settings WHERE name IN "
            "('fsync','synchronous_commit','full_page_writes','wal_sync_method','shared_buffers',"
            "'max_wal_size','checkpoint_timeout','wal_compression','default_toast_compression',"
            "'max_connections','shared_preload_libraries','wal_level','server_version')"))
        if self.pg_settings.get("fsync") != "on" or self.pg_settings.get("synchronous_commit") != "on":
            raise RuntimeError("PostgreSQL is not durable: %r" % self.pg_settings)
        log("starting paddlehook serve (%d workers) and nginx" % H.workers)
        H.start_serve()
        H.start_nginx()
        H.wait_healthy()
        self.secret = bevents_secret()
        self.ep = H.add_endpoint(name="bench", secret=self.secret, tolerance=TOLERANCE)
        log("endpoint %s (tolerance %ds)" % (self.ep.id, TOLERANCE))

    def stop(self):
        self.stop_node()
        try:
            self.H.stop()
        except Exception as exc:  # noqa: BLE001
            log("harness stop: %s" % exc)

    # -- --pin: the database on CPU 0, everything else on CPU 1 ---------------

    def pin(self):
        if not self.args.pin:
            return
        set_affinity(self.pg_pids(), PIN_DB)
        set_affinity([self.H.serve_proc.pid] + self.worker_pids() + self.nginx_pids() +
                     self.node_primary_pids() + self.node_worker_pids(), PIN_FRONT)

    def pin_argv(self):
        """Prefix for the load generators (wrk, pgbench) under --pin."""
        return ["taskset", "-c", ",".join(str(c) for c in sorted(PIN_FRONT))] if self.args.pin else []

    # -- process groups -----------------------------------------------------

    def pg_pids(self):
        pid = self.H._read_pg_pid()
        return ([pid] + descendants(pid)) if pid else []

    def nginx_pids(self):
        p = self.H.nginx_proc
        return ([p.pid] + children_of(p.pid)) if p and p.poll() is None else []

    def worker_pids(self):
        return self.H.worker_pids()

    def node_worker_pids(self):
        p = self.node_proc
        return children_of(p.pid) if p and p.poll() is None else []

    def node_primary_pids(self):
        p = self.node_proc
        return [p.pid] if p and p.poll() is None else []

    # -- database -------------------------------------------------------------

    def data_tables(self):
        """The tables paddle.ingest_event writes (not endpoints, not seed data)."""
        return [t for t in (EVENT_TABLE,) + STATE_TABLES if t in self.H.existing_tables(refresh=True)]

    def reset_db(self):
        """Empty event and state tables and checkpoint: every run starts alike."""
        self.H.psql("TRUNCATE %s; CHECKPOINT;" % ", ".join(self.data_tables()), timeout=120)

    def lsn(self):
        return self.H.sql_value("SELECT pg_current_wal_lsn()")

    def wal_bytes(self, a, b):
        return int(float(self.H.sql_value("SELECT pg_wal_lsn_diff('%s', '%s')" % (b, a))))

    def stored_rows(self):
        return self.H.event_count()

    # -- Node.js peer -------------------------------------------------------

    def start_node(self):
        d = os.path.join(BUILD_BENCH, "peer-node")
        if not os.path.exists(os.path.join(d, "node_modules", "@paddle", "paddle-node-sdk")):
            raise RuntimeError("%s has no node_modules: run `make bench` (it runs npm ci)" % d)
        self.node_port = free_port()
        ready = os.path.join(self.H.tmpdir, "node.ready")
        env = dict(os.environ, PEER_PORT=str(self.node_port), PEER_SECRET=self.secret,
                   PEER_DB="postgresql://postgres@127.0.0.1:%d/paddlehook" % self.H.pg_port,
                   PEER_ENDPOINT=self.ep.id, PEER_TOLERANCE=str(TOLERANCE),
                   PEER_READY_FILE=ready, NODE_ENV="production")
        self.node_log = open(os.path.join(self.H.tmpdir, "node.log"), "ab")
        self.node_proc = subprocess.Popen(["node", os.path.join(d, "server.js")], cwd=d, env=env,
                                          stdin=subprocess.DEVNULL, stdout=self.node_log,
                                          stderr=self.node_log)
        wait_until(lambda: os.path.exists(ready) or self.node_proc.poll() is not None,
                   timeout=30, what="node peer to listen")
        if self.node_proc.poll() is not None:
            raise RuntimeError("node peer exited: see %s" % self.node_log.name)
        log("node peer on 127.0.0.1:%d, workers %s" % (self.node_port, self.node_worker_pids()))

    def stop_node(self):
        p = self.node_proc
        if p is None:
            return
        kids = children_of(p.pid)
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        for k in kids:
            if pid_alive(k):
                os.kill(k, signal.SIGKILL)
        self.node_proc = None

    def node_versions(self):
        try:
            with open(os.path.join(BUILD_BENCH, "peer-node", "node_modules", "@paddle",
                                   "paddle-node-sdk", "package.json")) as f:
                sdk = json.load(f)["version"]
            with open(os.path.join(BUILD_BENCH, "peer-node", "node_modules", "pg",
                                   "package.json")) as f:
                pg = json.load(f)["version"]
            return sdk, pg
        except (OSError, ValueError, KeyError):
            return "?", "?"


def bevents_secret():
    from paddledata import new_secret
    return new_secret()


# ---------------------------------------------------------------------------
# load generators
# ---------------------------------------------------------------------------

def run_wrk(stack, url, replay, conns, workers_fn, label, timeout, extra_groups=None,
            progress_log=None, rss_interval=0.25):
    """Replay every line of `replay` once with wrk; account CPU and RSS."""
    threads = min(2, conns)
    done_dir = os.path.join(stack.H.tmpdir, "wrk-done-%s-%d-%d" % (label, conns, time.time_ns()))
    os.makedirs(done_dir)
    groups = {"workers": workers_fn, "postgres": stack.pg_pids}
    groups.update(extra_groups or {})
    wrk_pid = [None]
    groups["wrk"] = lambda: [wrk_pid[0]] if wrk_pid[0] else []
    progress = None
    if progress_log:
        state = {"off": os.path.getsize(progress_log), "n": 0}

        def progress():
            with open(progress_log, "rb") as f:
                f.seek(state["off"])
                data = f.read()
            state["off"] += len(data)
            state["n"] += data.count(b"\n")
            return state["n"]
    sampler = RssSampler(workers_fn, interval=rss_interval, progress_fn=progress)
    meter = CpuMeter(groups)
    lsn0 = stack.lsn()
    argv = stack.pin_argv() + ["wrk", "-t", str(threads), "-c", str(conns), "-d", "3600s", "--timeout", "30s",
            "-s", os.path.join(BENCH_DIR, "replay.lua"), url, "--", replay, str(threads), done_dir]
    meter.start()
    sampler.start()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wrk_pid[0] = proc.pid
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if len(os.listdir(done_dir)) >= threads or proc.poll() is not None:
                break
            time.sleep(0.02)
        else:
            log("%s c=%d: not all answers after %ds; stopping wrk" % (label, conns, timeout))
        cpu = meter.stop()
        sampler.finish()
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    m = re.search(r"REPLAY_RESULT (\{.*\})", out)
    if not m:
        raise RuntimeError("wrk produced no result (rc=%s)\n%s\n%s" % (proc.returncode, out, err))
    r = json.loads(m.group(1))
    lsn1 = stack.lsn()
    n2xx = sum(v for k, v in r["codes"].items() if k.startswith("2"))
    elapsed = max(1e-9, r["t_last"] - r["t_first"])
    rows = stack.stored_rows()
    res = {
        "system": label, "concurrency": conns, "events": r["sent"], "answered": r["answered"],
        "codes": r["codes"], "n2xx": n2xx, "stored_body": r["stored"], "rows": rows,
        "verified": rows == n2xx == r["sent"] == r["stored"],
        "seconds": elapsed, "eps": r["sent"] / elapsed,
        "lat_ms": {k: v / 1000.0 for k, v in r["lat_us"].items()},
        "wrk_errors": r["errors"],
        "rss_sum_kb": sampler.peak_sum, "rss_max_kb": sampler.peak_max,
        "rss_series": sampler.series if progress_log else None,
        "nproc": len(workers_fn()),
        "cpu": cpu,
        "wal_bytes_per_event": stack.wal_bytes(lsn0, lsn1) / max(1, r["sent"]),
    }
    # CPU seconds per 1,000 events of the worker processes
    res["cpu_workers_s_per_1k"] = cpu["workers"] / max(1, r["sent"]) * 1000.0
    res["cpu_all_s_per_1k"] = cpu["_machine"] / max(1, r["sent"]) * 1000.0
    return res


def run_pgbench(stack, clients, seconds, label="pgbench", run_id=1, variant="", pgoptions=None):
    H = stack.H
    d = os.path.join(H.tmpdir, "pgbench-%d-%d" % (clients, time.time_ns()))
    os.makedirs(d)
    script = os.path.join(H.tmpdir, "pgbench-ingest%s.sql" % variant)
    if not os.path.exists(script):
        text = bevents.pgbench_script(store_only=(variant == "-store-only"))
        for path in (script, os.path.join(BUILD_BENCH, os.path.basename(script))):
            with open(path, "w") as f:   # the copy in build/bench is for reading
                f.write(text)
    env = dict(os.environ)
    if pgoptions:
        env["PGOPTIONS"] = pgoptions
    pgb_pid = [None]
    meter = CpuMeter({"postgres": stack.pg_pids,
                      "pgbench": lambda: [pgb_pid[0]] if pgb_pid[0] else []})
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    lsn0 = stack.lsn()
    argv = stack.pin_argv() + [os.path.join(H.pg_bin, "pgbench"), "-h", "127.0.0.1", "-p", str(H.pg_port),
            "-U", "postgres", "-n", "-M", "prepared", "-f", script,
            "-D", "i=-1", "-D", "run=%d" % run_id, "-D", "ep=%s" % stack.ep.id,
            "-c", str(clients), "-j", str(min(2, clients)), "-T", str(seconds),
            "-l", "--log-prefix", os.path.join(d, "pgb"), "paddlehook"]
    meter.start()
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=d,
                         env=env)
    pgb_pid[0] = p.pid
    out, err = p.communicate(timeout=seconds + 120)
    cpu = meter.stop()
    # pgbench has exited and been reaped by now: its CPU is in our children's rusage.
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu["pgbench_user"] = ru1.ru_utime - ru0.ru_utime
    cpu["pgbench_sys"] = ru1.ru_stime - ru0.ru_stime
    cpu["pgbench"] = cpu["pgbench_user"] + cpu["pgbench_sys"]
    cpu["_foreign"] = max(0.0, cpu["_foreign"] - cpu["pgbench"])
    cpu["_foreign_share"] = cpu["_foreign"] / max(1e-9, cpu["_wall"] * (os.cpu_count() or 1))
    if p.returncode != 0:
        raise RuntimeError("pgbench failed (rc=%d):\n%s\n%s" % (p.returncode, out, err[-3000:]))
    lsn1 = stack.lsn()
    processed = int(re.search(r"actually processed: (\d+)", out).group(1))
    failed_m = re.search(r"number of failed transactions: (\d+)", out)
    failed = int(failed_m.group(1)) if failed_m else 0
    tps = float(re.search(r"tps = ([\d.]+) \(without initial connection time\)", out).group(1))
    lats = []
    for name in os.listdir(d):
        with open(os.path.join(d, name)) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3:
                    lats.append(int(parts[2]))
    lats.sort()
    rows = stack.stored_rows()
    return {
        "system": label, "concurrency": clients, "events": processed, "failed": failed,
        "rows": rows, "verified": rows == processed and failed == 0,
        "seconds": seconds, "eps": tps,
        "lat_ms": {"mean": sum(lats) / max(1, len(lats)) / 1000.0,
                   "p50": percentile(lats, 50) / 1000.0, "p90": percentile(lats, 90) / 1000.0,
                   "p99": percentile(lats, 99) / 1000.0, "p999": percentile(lats, 99.9) / 1000.0,
                   "max": (lats[-1] / 1000.0) if lats else 0},
        "cpu": cpu,
        "cpu_all_s_per_1k": cpu["_machine"] / max(1, processed) * 1000.0,
        "wal_bytes_per_event": stack.wal_bytes(lsn0, lsn1) / max(1, processed),
    }


# ---------------------------------------------------------------------------
# callgrind
# ---------------------------------------------------------------------------

def annotate(path, inclusive=True):
    """callgrind_annotate -> (program total Ir, {function: Ir})."""
    argv = ["callgrind_annotate", "--inclusive=%s" % ("yes" if inclusive else "no"),
            "--threshold=100", path]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=120).stdout
    total = 0
    m = re.search(r"^\s*([\d,]+)\s*(?:\([^)]*\)\s*)?PROGRAM TOTALS", out, re.M)
    if m:
        total = int(m.group(1).replace(",", ""))
    funcs = {}
    for line in out.splitlines():
        mm = re.match(r"^\s*([\d,]+)\s+(?:\([^)]*\)\s+)?\*?\s*(\S.*?)\s*$", line)
        if not mm or "PROGRAM TOTALS" in line:
            continue
        name = mm.group(2)
        # "file:function [object]" -> function
        fn = name.split(":", 1)[1] if ":" in name else name
        fn = re.sub(r"\s*\[.*\]$", "", fn).strip()
        fn = re.sub(r"\.(constprop|isra|part|cold)(\.\d+)*$", "", fn)
        fn = re.sub(r"\.(constprop|isra|part|cold)(\.\d+)*$", "", fn)
        ir = int(mm.group(1).replace(",", ""))
        funcs[fn] = max(funcs.get(fn, 0), ir)
    return total, funcs


def profile_driver(args, body, secret):
    """verify + parse + bind of one ~5 KB event in a small driver that links
    fcgi/sig.c and fcgi/event.c: callgrind Ir per event and native ns per event."""
    exe = args.driver
    if not exe or not os.path.exists(exe):
        return None
    d = os.path.join(BUILD_BENCH, "callgrind")
    os.makedirs(d, exist_ok=True)
    bpath = os.path.join(d, "event-5k.json")
    with open(bpath, "wb") as f:
        f.write(body)
    # The fastest of several runs: on a shared machine the others are slowed
    # by whatever else runs on the core, which is not the worker's cost.
    runs = []
    for _ in range(args.driver_runs):
        native = subprocess.run([exe, bpath, secret, str(args.driver_iterations)], capture_output=True,
                                text=True, timeout=300)
        runs.append(json.loads(native.stdout.strip().splitlines()[-1])["ns_per_event"])
    runs.sort()
    nat = {"iterations": args.driver_iterations, "runs": len(runs), "ns_per_event": runs[0],
           "ns_median": runs[len(runs) // 2]}
    res = {"body_bytes": len(body), "native": nat}
    if shutil.which("valgrind"):
        out = os.path.join(d, "callgrind.driver.out")
        k = 2000
        subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out,
                        "--toggle-collect=profile_one", exe, bpath, secret, str(k)],
                       capture_output=True, text=True, timeout=600)
        total, funcs = annotate(out)
        res["callgrind_file"] = out
        res["ir_per_event"] = total / k
        res["ir"] = {f: funcs.get(f, 0) / k for f in
                     ("profile_one", "sig_parse", "sig_verify", "sig_compute", "event_parse",
                      "yajl_parse", "crypto_auth_hmacsha256_update", "bind_params")}
        res["ns_per_ir"] = nat["ns_per_event"] / max(1.0, res["ir_per_event"])
    return res


def profile_worker(stack, args, replay_lines, k):
    """The real worker under callgrind for k requests (1 connection): Ir per
    request for the whole loop, split by function (inclusive)."""
    if not shutil.which("valgrind"):
        return None
    H = stack.H
    d = os.path.join(BUILD_BENCH, "callgrind")
    os.makedirs(d, exist_ok=True)
    for name in os.listdir(d):
        if name.startswith("callgrind.worker."):
            os.unlink(os.path.join(d, name))
    wrapper = os.path.join(H.tmpdir, "paddlehook-callgrind")
    with open(wrapper, "w") as f:
        f.write("#!/bin/sh\nexec valgrind --tool=callgrind --callgrind-out-file=%s/callgrind.worker.%%p "
                "%s \"$@\"\n" % (d, H.binary))
    os.chmod(wrapper, 0o755)
    replay = os.path.join(H.tmpdir, "replay-callgrind.txt")
    with open(replay, "wb") as f:
        f.writelines(replay_lines[:k])
    original_bin, original_workers = H.binary, H.workers
    stack.reset_db()
    H.stop_serve()
    try:
        H.binary, H.workers = wrapper, 1
        H.start_serve()
        H.binary = original_bin
        wait_until(lambda: H.get("/paddle/healthz", timeout=10).status == 200, timeout=60,
                   what="worker under callgrind")
        url = "%s/paddle/webhooks/%s" % (H.base_url, stack.ep.id)
        r = run_wrk(stack, url, replay, 1, stack.worker_pids, "callgrind", timeout=900)
        H.stop_serve(timeout=60)
    finally:
        H.binary, H.workers = original_bin, original_workers
    files = [os.path.join(d, n) for n in os.listdir(d) if n.startswith("callgrind.worker.")]
    best = None
    for path in files:
        total, funcs = annotate(path)
        if "webhook_handle" in funcs and (best is None or total > best[1]):
            best = (path, total, funcs)
    H.start_serve()
    H.wait_healthy()
    if best is None:
        return {"error": "no worker profile found in %s" % d}
    path, total, funcs = best
    n = r["events"]
    names = ("webhook_handle", "FCGX_Accept_r", "FCGX_Finish_r", "http_request_init",
             "http_read_body", "sig_verify", "sig_parse", "event_parse", "store_ingest",
             "PQexecPrepared", "log_line", "worker_endpoint", "refresh", "yajl_parse",
             "crypto_auth_hmacsha256_update", "http_respond_status", "FCGX_GetParam",
             "pqParseInput3", "pqPutMsgEnd", "vfprintf", "__vfprintf_internal")
    loop = sum(funcs.get(f, 0) for f in ("FCGX_Accept_r", "refresh", "webhook_handle",
                                          "FCGX_Finish_r", "http_request_init"))
    return {"file": path, "requests": n, "ok": r["verified"],
            "ir_total_per_event": total / max(1, n), "ir_loop_per_event": loop / max(1, n),
            "ir": {f: funcs.get(f, 0) / max(1, n) for f in names}}


# ---------------------------------------------------------------------------
# facts, sizes, report
# ---------------------------------------------------------------------------

def sh(argv, timeout=30):
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        return (p.stdout + p.stderr).strip()
    except (OSError, subprocess.TimeoutExpired) as exc:
        return "(%s)" % exc


def machine_facts(stack):
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "?"
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal"):
                mem = "%.1f GiB" % (int(line.split()[1]) / 1024 / 1024)
    fsync = sh([os.path.join(stack.H.pg_bin, "pg_test_fsync"), "-s", "1", "-f",
                os.path.join(stack.H.tmpdir, "fsync.test")], timeout=60)
    m = re.search(r"^\s+fdatasync\s+([\d.]+) ops/sec\s+(\d+) usecs/op", fsync, re.M)
    sdk, pg = stack.node_versions()
    git = sh(["git", "-C", REPO_ROOT, "rev-parse", "--short", "HEAD"])
    dirty = sh(["git", "-C", REPO_ROOT, "status", "--porcelain", "--untracked-files=no"])
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu, "cores": os.cpu_count(), "memory": mem,
        "kernel": platform.release(),
        "os": "Debian " + open("/etc/debian_version").read().strip()
        if os.path.exists("/etc/debian_version") else platform.platform(),
        "postgres": stack.pg_settings.get("server_version", "?"),
        "nginx": sh(["nginx", "-v"]).replace("nginx version: ", ""),
        "node": sh(["node", "--version"]), "paddle_sdk": sdk, "pg_js": pg,
        "wrk": sh(["wrk", "-v"]).split(" [")[0].replace("wrk ", ""),
        "gcc": sh(["gcc", "-dumpfullversion"]),
        "fdatasync_8k_us": int(m.group(2)) if m else None,
        "git": git + ("+dirty" if dirty else ""),
        "loadavg_start": open("/proc/loadavg").read().split()[:3],
        "pg_settings": stack.pg_settings,
    }


def db_sizes(stack):
    H = stack.H
    n = stack.stored_rows()
    if not n:
        return None
    row = H.sql("SELECT avg(pg_column_size(payload))::int, avg(octet_length(payload::text))::int "
                "FROM paddle.payment_events")[0]
    tables = H.sql(
        "SELECT c.relname, pg_relation_size(c.oid), pg_total_relation_size(c.oid) - pg_relation_size(c.oid) "
        "- coalesce(pg_total_relation_size(c.reltoastrelid), 0), coalesce(pg_total_relation_size(c.reltoastrelid), 0), "
        "(SELECT count(*) FROM pg_index i WHERE i.indrelid = c.oid) "
        "FROM pg_class c JOIN pg_namespace s ON s.oid = c.relnamespace "
        "WHERE s.nspname = 'paddle' AND c.relkind = 'r' AND 'paddle.' || c.relname IN (%s) ORDER BY 1"
        % ", ".join(H.lit(t) for t in stack.data_tables()))
    return {"events": n, "jsonb_bytes": int(row[0]), "json_text_bytes": int(row[1]),
            "tables": [{"table": t, "heap_per_event": int(h) / n, "index_per_event": int(i) / n,
                        "toast_per_event": int(x) / n, "indexes": int(k)}
                       for t, h, i, x, k in tables]}


def fmt_kb(kb):
    return "%.1f" % (kb / 1024.0)


def server_cpu(r):
    """CPU seconds of everything serving the events: workers (or node),
    nginx or the node primary, PostgreSQL; not the load generator."""
    c = r["cpu"]
    return sum(v for k, v in c.items() if not k.startswith("_") and not k.endswith(("_user", "_sys"))
               and k not in ("wrk", "pgbench"))


def render_table(results):
    head = ("| system | conc. | events | events/s | p50 ms | p99 ms | worker RSS sum / max MiB "
            "| worker CPU s/1k ev (user+sys) | server CPU s/1k ev | WAL KB/ev | rows = 2xx | other load |")
    lines = [head, "|" + "---|" * 12]
    for r in results:
        n = max(1, r["events"])
        if r["system"] == "pgbench":
            rss = wcpu = "—"
            check = "%s (%d = %d)" % ("yes" if r["verified"] else "**NO**", r["rows"], r["events"])
        else:
            c = r["cpu"]
            rss = "%s / %s (%d proc)" % (fmt_kb(r["rss_sum_kb"]), fmt_kb(r["rss_max_kb"]), r["nproc"])
            wcpu = "%.3f (%.3f+%.3f)" % (1000.0 * c["workers"] / n, 1000.0 * c["workers_user"] / n,
                                         1000.0 * c["workers_sys"] / n)
            check = "%s (%d = %d)" % ("yes" if r["verified"] else "**NO**", r["rows"], r["n2xx"])
        lines.append("| %s | %d | %d | %.0f | %.2f | %.2f | %s | %s | %.3f | %.1f | %s | %.0f%% |" % (
            r.get("title", r["system"]), r["concurrency"], r["events"], r["eps"], r["lat_ms"]["p50"],
            r["lat_ms"]["p99"], rss, wcpu, 1000.0 * server_cpu(r) / n,
            r["wal_bytes_per_event"] / 1024.0, check, 100.0 * r["cpu"]["_foreign_share"]))
    return "\n".join(lines)


def find(results, system, conc, variant=None):
    for r in results:
        if r["system"] == system and r["concurrency"] == conc and r.get("variant") == variant:
            return r
    return None


def targets(results, drv, wprof, workers):
    out = []
    pg, nd = find(results, "pgbench", 16), find(results, "node", 16)
    variants = [None] + sorted({r["variant"] for r in results if r.get("variant")})
    for v in variants:
        ph = find(results, "paddlehook", 16, v)
        if ph:
            out += _ratio_targets(ph, pg, nd, v or "workers=%d" % workers)
    phs = [r for r in results if r["system"] == "paddlehook"]
    if phs:
        mx = max(r["rss_max_kb"] for r in phs)
        out.append(("worker RSS ≤ 8 MiB per process under load", "%.1f MiB max (all paddlehook runs)"
                    % (mx / 1024.0), mx <= 8 * 1024))
        out.append(("no RSS growth over 200,000 events", "see `make bench-soak`", None))
    if drv and "ir_per_event" in drv:
        us = drv["ir_per_event"] * drv["ns_per_ir"] / 1000.0
        txt = "verify+parse+bind of %d B: %.0f Ir = %.1f µs" % (drv["body_bytes"], drv["ir_per_event"], us)
        ok = us <= 40
        if wprof and "ir_loop_per_event" in wprof:
            wus = wprof["ir_loop_per_event"] * drv["ns_per_ir"] / 1000.0
            txt += "; whole worker request loop: %.0f Ir ≈ %.1f µs user space" % (
                wprof["ir_loop_per_event"], wus)
            ok = ok and wus <= 40
        out.append(("worker CPU ≤ 40 µs per 5 KB event (callgrind)", txt, ok))
    return out


def _ratio_targets(ph, pg, nd, label):
    out = []
    if ph and pg:
        ratio = ph["eps"] / pg["eps"]
        cpu_ratio = (server_cpu(pg) / pg["events"]) / (server_cpu(ph) / ph["events"])
        out.append(("paddlehook@16 ≥ 85% of pgbench@16 events/s", "%.0f%% (%.0f / %.0f); per server "
                    "CPU second (insensitive to other load): %.0f%% (%.2f vs %.2f ms per event)"
                    % (100 * ratio, ph["eps"], pg["eps"], 100 * cpu_ratio,
                       1000 * server_cpu(ph) / ph["events"], 1000 * server_cpu(pg) / pg["events"]),
                    ratio >= 0.85))
    if ph and nd:
        ratio = ph["eps"] / nd["eps"]
        cpu_ratio = (server_cpu(nd) / nd["events"]) / (server_cpu(ph) / ph["events"])
        out.append(("paddlehook@16 ≥ 2× Node peer@16 events/s", "%.2f× (%.0f / %.0f); per server CPU "
                    "second: %.2f× (%.2f vs %.2f ms per event; workers alone %.2f vs %.2f ms)"
                    % (ratio, ph["eps"], nd["eps"], cpu_ratio, 1000 * server_cpu(ph) / ph["events"],
                       1000 * server_cpu(nd) / nd["events"], 1000 * ph["cpu"]["workers"] / ph["events"],
                       1000 * nd["cpu"]["workers"] / nd["events"]), ratio >= 2.0))
        lr = ph["lat_ms"]["p99"] / max(1e-9, nd["lat_ms"]["p99"])
        out.append(("paddlehook@16 p99 ≤ ½ Node peer@16 p99", "%.2f× (%.1f / %.1f ms)"
                    % (lr, ph["lat_ms"]["p99"], nd["lat_ms"]["p99"]), lr <= 0.5))
    return [("%s [%s]" % (a, label), b, c) for a, b, c in out]


def render_targets(tg):
    out = ["Targets from the issue:", "", "| target | measured | met |", "|---|---|---|"]
    for a, b, c in tg:
        out.append("| %s | %s | %s |" % (a, b, "—" if c is None else ("yes" if c else "**no**")))
    return out + [""]


def render_report(kind, facts, body_facts, results, extra_md):
    f = facts
    ps = f["pg_settings"]
    lines = [
        "`make %s`, %s. Machine: %s, %d cores, %s RAM, %s, kernel %s; fdatasync of one 8 kB "
        "write %s µs (pg_test_fsync); load average at start %s. PostgreSQL %s: fsync=%s, "
        "synchronous_commit=%s, full_page_writes=%s, wal_sync_method=%s, shared_buffers=%s, "
        "max_wal_size=%s. nginx %s; Node.js %s with @paddle/paddle-node-sdk %s and pg %s; "
        "wrk %s; gcc %s; paddlehook %s." % (
            kind, f["date"], f["cpu"], f["cores"], f["memory"], f["os"], f["kernel"],
            f["fdatasync_8k_us"], " ".join(f["loadavg_start"]), ps.get("server_version", "?").split(" ")[0],
            ps.get("fsync"), ps.get("synchronous_commit"), ps.get("full_page_writes"),
            ps.get("wal_sync_method"), ps.get("shared_buffers"), ps.get("max_wal_size"),
            f["nginx"].replace("nginx/", ""), f["node"], f["paddle_sdk"], f["pg_js"], f["wrk"],
            f["gcc"], f["git"]),
        "",
    ]
    if body_facts:
        lines += ["Replay: %d unique pre-signed notifications (%d subscription, %d transaction "
                  "events; 2/3 of them update an entity an earlier event created), bodies %d–%d "
                  "bytes, mean %.0f. Every run starts from empty event and state tables after a "
                  "CHECKPOINT and sends each notification once; wrk uses min(2, connections) "
                  "threads. nginx as docs/deploy.md tunes a busy endpoint (`%s`, access log `%s`) and "
                  "keeps as many idle connections to the workers as there are workers." % (
                      body_facts["events"],
                      sum(v for k, v in body_facts["types"].items() if k.startswith("subscription")),
                      sum(v for k, v in body_facts["types"].items() if k.startswith("transaction")),
                      body_facts["bytes_min"], body_facts["bytes_max"], body_facts["bytes_mean"],
                      NGINX_SERVER_DIRECTIVES, NGINX_ACCESS_LOG_OPTIONS), ""]
    if results:
        lines += [render_table(results), ""]
    lines += extra_md
    return "\n".join(lines).rstrip() + "\n"


def update_doc(section, md):
    begin = "<!-- BEGIN %s: generated by bench/run.py, rewritten on every run -->" % section
    end = "<!-- END %s -->" % section
    block = begin + "\n\n" + md + "\n" + end
    text = open(DOC).read() if os.path.exists(DOC) else "# Performance\n"
    pat = re.compile(re.escape("<!-- BEGIN %s:" % section) + r".*?" + re.escape(end), re.S)
    if pat.search(text):
        text = pat.sub(lambda _: block, text)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    with open(DOC, "w") as f:
        f.write(text)


def save_json(name, obj):
    os.makedirs(BUILD_BENCH, exist_ok=True)
    path = os.path.join(BUILD_BENCH, name)
    with open(path, "w") as f:
        json.dump(obj, f, indent=1, default=str)
    return path


def make_replay(stack, n, name, seed=None):
    evs = bevents.generate(n, seed=seed)
    path = os.path.join(stack.H.tmpdir, name)
    facts = bevents.write_replay(path, evs, stack.secret)
    return path, facts, evs


def head_file(src, n, dst):
    with open(src, "rb") as f, open(dst, "wb") as g:
        for i, line in enumerate(f):
            if i >= n:
                break
            g.write(line)
    return dst


def wait_quiet(max_wait, threshold=0.25):
    """Wait (bounded) until the machine is mostly idle; return the busy share seen."""
    deadline = time.monotonic() + max_wait
    while True:
        b0 = machine_busy_ticks()
        time.sleep(2)
        b1 = machine_busy_ticks()
        share = (b1[0] - b0[0]) / max(1, b1[1] - b0[1])
        if share <= threshold or time.monotonic() >= deadline:
            if share > threshold:
                log("the machine is %.0f%% busy with other work; numbers will be perturbed "
                    "(see the 'other load' column)" % (100 * share))
            return share
        log("machine %.0f%% busy before the benchmark; waiting (at most %.0f s more)"
            % (100 * share, deadline - time.monotonic()))
        time.sleep(3)


def restart_serve(stack, workers):
    """serve with another worker count, and nginx keeping as many idle
    connections to the workers (docs/deploy.md)."""
    H = stack.H
    H.stop_nginx()
    H.stop_serve()
    H.workers = workers
    H.nginx_upstream_keepalive = workers
    H.start_serve()
    H.start_nginx()
    H.wait_healthy()
    stack.pin()


# ---------------------------------------------------------------------------
# commands
# ---------------------------------------------------------------------------

def cmd_bench(args):
    t_start = time.monotonic()
    stack = Stack(args)
    results, sizes, drv, wprof = [], None, None, None
    try:
        stack.start()
        stack.start_node()
        stack.pin()
        facts = machine_facts(stack)
        log("generating %d + %d warm-up notifications" % (args.events, args.warmup))
        replay, body_facts, evs = make_replay(stack, args.events, "replay.txt")
        warm, _, _ = make_replay(stack, args.warmup, "warmup.txt")
        replays = {}
        for conc in args.levels:
            k = min(args.events, args.level_events.get(conc, args.events))
            replays[conc] = (replay if k == args.events else
                             head_file(replay, k, os.path.join(stack.H.tmpdir, "replay-%d.txt" % k)))
        ph_url = "%s/paddle/webhooks/%s" % (stack.H.base_url, stack.ep.id)
        nd_url = "http://127.0.0.1:%d/paddle/webhooks/%s" % (stack.node_port, stack.ep.id)
        timeout = args.run_timeout
        facts["busy_before"] = wait_quiet(args.quiet_wait)

        log("warm-up: %d events each through paddlehook and the node peer, pgbench 3 s" % args.warmup)
        stack.reset_db()
        run_wrk(stack, ph_url, warm, 16, stack.worker_pids, "paddlehook", timeout)
        stack.reset_db()
        run_wrk(stack, nd_url, warm, 16, stack.node_worker_pids, "node", timeout)
        stack.reset_db()
        run_pgbench(stack, 4, 3, run_id=999)

        systems = [s for s in ("pgbench", "paddlehook", "node") if s not in args.skip]
        for conc in args.levels:
            rf = replays[conc]
            for system in systems:
                stack.reset_db()
                if system == "pgbench":
                    r = run_pgbench(stack, conc, args.pgbench_seconds, run_id=conc)
                elif system == "paddlehook":
                    r = run_wrk(stack, ph_url, rf, conc, stack.worker_pids, "paddlehook",
                                timeout, {"nginx": stack.nginx_pids})
                    r["title"] = "paddlehook (%d workers)" % stack.H.workers
                    if conc == 16:
                        sizes = db_sizes(stack)
                else:
                    r = run_wrk(stack, nd_url, rf, conc, stack.node_worker_pids, "node",
                                timeout, {"node_primary": stack.node_primary_pids})
                    r["title"] = "Node.js peer (%d procs)" % len(stack.node_worker_pids())
                results.append(r)
                log("%-10s c=%-2d %6.0f events/s  p50 %6.2f ms  p99 %7.2f ms  verified=%s  other load %.0f%%"
                    % (system, conc, r["eps"], r["lat_ms"]["p50"], r["lat_ms"]["p99"], r["verified"],
                       100 * r["cpu"]["_foreign_share"]))
        stack.stop_node()

        # the same 16-connection replay with other worker counts (a configuration, not code)
        if "paddlehook" in systems and 16 in args.levels:
            for w in args.also_workers:
                restart_serve(stack, w)
                stack.reset_db()
                r = run_wrk(stack, ph_url, replays[16], 16, stack.worker_pids, "paddlehook",
                            timeout, {"nginx": stack.nginx_pids})
                r["title"] = "paddlehook (%d workers)" % w
                r["variant"] = "workers=%d" % w
                results.append(r)
                log("paddlehook c=16 workers=%d %6.0f events/s  p99 %7.2f ms  other load %.0f%%"
                    % (w, r["eps"], r["lat_ms"]["p99"], 100 * r["cpu"]["_foreign_share"]))
            if args.also_workers:
                restart_serve(stack, args.workers)

        if not args.no_callgrind:
            body = next(e[2] for e in evs if e[1] == "transaction.paid")
            log("callgrind: driver (verify + parse + bind of one %d-byte event)" % len(body))
            drv = profile_driver(args, body, stack.secret)
            log("callgrind: the worker for %d requests" % args.callgrind_requests)
            wprof = profile_worker(stack, args, open(replay, "rb").readlines(),
                                   args.callgrind_requests)

        tg = targets(results, drv, wprof, args.workers)
        extra = render_targets(tg)
        if drv:
            extra += render_profile(drv, wprof)
        if sizes:
            extra += render_sizes(sizes)
        short = ", ".join("%d connection%s the first %d" % (c, "" if c == 1 else "s",
                                                            min(args.events, args.level_events[c]))
                          for c in args.levels if args.level_events.get(c, args.events) < args.events)
        kind = "bench-pinned" if args.pin else "bench"
        extra.append("Wall time of this `make %s`: %.0f s.%s `other load` = CPU used during the "
                     "run by processes that are not part of the benchmark, as a share of the machine "
                     "(other sessions on a shared machine); above a few percent the absolute numbers "
                     "are perturbed, the ratios less so."
                     % (kind, time.monotonic() - t_start,
                        (" To keep the run under 15 minutes the latency-bound levels replay a prefix "
                         "of the same notifications: %s." % short) if short else ""))
        if args.pin:
            extra.append("")
            extra.append("Pinned: PostgreSQL (the postmaster, so every backend) on CPU %s; nginx, paddlehook "
                         "serve and its workers, the Node.js peer, wrk and pgbench on CPU %s. The database "
                         "gets the same core whatever the front end costs, so events/s show whether a "
                         "front end keeps up with the database." % (
                             ",".join(map(str, sorted(PIN_DB))), ",".join(map(str, sorted(PIN_FRONT)))))
        md = render_report(kind, facts, body_facts, results, extra)
        print(md)
        raw = save_json("results-%s.json" % kind, {"facts": facts, "body": body_facts, "results": results,
                                               "driver": drv, "worker": wprof, "sizes": sizes,
                                               "targets": tg})
        log("raw results: %s" % raw)
        if not args.no_doc:
            update_doc("make " + kind, md)
            log("updated %s" % DOC)
        return 0 if all(r["verified"] for r in results) else 1
    finally:
        stack.stop()


def render_profile(drv, wprof):
    out = ["Per-event CPU of the worker, measured with callgrind (Ir = instructions executed) "
           "and converted to time with the driver's own native CPU time per instruction:", ""]
    nat = drv["native"]
    ir = drv["ir"]
    out.append("- Driver `build/bench/profile-event` (bench/profile_event.c linked with fcgi/sig.c "
               "and fcgi/event.c; one %d-byte transaction.paid, the same code path as webhook.c "
               "before the database): **%.0f Ir per event** = sig_parse %.0f + sig_verify %.0f "
               "(of which libsodium HMAC-SHA256 update %.0f) + event_parse %.0f (of which yajl_parse "
               "%.0f) + bind %.0f. Natively %.1f µs CPU per event, the fastest of %d runs of %d iterations "
               "(median %.1f µs; the slower runs share the core with other load) = %.3f ns per Ir."
               % (drv["body_bytes"], drv["ir_per_event"], ir["sig_parse"], ir["sig_verify"],
                  ir["crypto_auth_hmacsha256_update"], ir["event_parse"], ir["yajl_parse"],
                  ir["bind_params"], nat["ns_per_event"] / 1000.0, nat["runs"], nat["iterations"],
                  nat["ns_median"] / 1000.0, drv["ns_per_ir"]))
    if wprof and "ir" in wprof:
        w = wprof["ir"]
        out.append("- The real worker (`paddlehook serve --workers 1` under callgrind, %d requests of "
                   "the replay mix through nginx at 1 connection, inclusive Ir per request): request "
                   "loop **%.0f Ir** ≈ %.1f µs (process total with start-up: %.0f Ir): FCGX_Accept_r "
                   "%.0f, http_request_init %.0f, refresh %.0f, webhook_handle %.0f [sig_verify %.0f, "
                   "event_parse %.0f, store_ingest %.0f (PQexecPrepared %.0f), log_line %.0f, "
                   "http_read_body %.0f, http_respond_status %.0f], FCGX_Finish_r %.0f. Kernel time "
                   "(syscalls) is not in these counts; the table's worker CPU column has it."
                   % (wprof["requests"], wprof["ir_loop_per_event"],
                      wprof["ir_loop_per_event"] * drv["ns_per_ir"] / 1000.0, wprof["ir_total_per_event"],
                      w["FCGX_Accept_r"], w["http_request_init"], w["refresh"], w["webhook_handle"],
                      w["sig_verify"], w["event_parse"], w["store_ingest"], w["PQexecPrepared"],
                      w["log_line"], w["http_read_body"], w["http_respond_status"], w["FCGX_Finish_r"]))
    out.append("")
    return out


def render_sizes(s):
    out = ["Storage per event after the paddlehook run at 16 connections (%d events): the jsonb "
           "payload takes %d bytes (lz4) for %d bytes of JSON text." %
           (s["events"], s["jsonb_bytes"], s["json_text_bytes"]), "",
           "| table | heap B/event | indexes B/event | TOAST B/event | indexes |", "|---|---|---|---|---|"]
    for t in s["tables"]:
        out.append("| %s | %.0f | %.0f | %.0f | %d |" % (t["table"], t["heap_per_event"],
                                                        t["index_per_event"], t["toast_per_event"],
                                                        t["indexes"]))
    out.append("")
    return out


def cmd_soak(args):
    stack = Stack(args)
    try:
        stack.start()
        facts = machine_facts(stack)
        log("generating %d notifications" % args.events)
        replay, body_facts, _ = make_replay(stack, args.events, "soak.txt")
        ph_url = "%s/paddle/webhooks/%s" % (stack.H.base_url, stack.ep.id)
        facts["busy_before"] = wait_quiet(args.quiet_wait)
        stack.reset_db()
        access_log = os.path.join(stack.H.nginx_dir, "access.log")
        log("replaying %d events at %d connections" % (args.events, args.conns))
        r = run_wrk(stack, ph_url, replay, args.conns, stack.worker_pids, "paddlehook",
                    args.run_timeout, {"nginx": stack.nginx_pids}, progress_log=access_log,
                    rss_interval=1.0)
        r["title"] = "paddlehook (%d workers)" % stack.H.workers
        series = r.pop("rss_series") or []
        n = r["events"]
        pids = sorted(series[-1][2]) if series else []
        marks = (0.05, 0.10, 0.25, 0.50, 0.75, 1.00)
        picks = []
        for m in marks:
            pick = next((x for x in series if x[1] is not None and x[1] >= m * n * 0.999), None)
            picks.append((m, pick or (series[-1] if series else (0, 0, {}))))
        md_rows = ["| progress | events | " + " | ".join("worker %d RSS KiB" % (i + 1) for i in range(len(pids))) + " |",
                   "|" + "---|" * (2 + len(pids))]
        for m, (t, prog, rss) in picks:
            md_rows.append("| %d%% (%.0f s) | %s | %s |" % (m * 100, t, prog,
                                                          " | ".join(str(rss.get(p, "—")) for p in pids)))
        base = picks[1][1][2]
        late = [rss for t, prog, rss in series if prog is not None and prog >= 0.75 * n]
        growth = {p: (max(x.get(p, 0) for x in late) - base.get(p, 0)) if late else 0 for p in pids}
        worst = max(growth.values()) if growth else 0
        no_growth = worst <= args.growth_kb
        rates, prev = [], None
        for t, prog, rss in series:
            if prog is None:
                continue
            if prev is None:
                prev = (t, prog)
            elif t - prev[0] >= 20:
                rates.append((prog, (prog - prev[1]) / (t - prev[0])))
                prev = (t, prog)
        extra = ["Worker RSS during the run (VmRSS from /proc every second; progress counted from "
                 "nginx's access log, written in batches, so up to a second behind):", ""] + md_rows + [
            "", "Growth from the 10%% mark to the highest sample of the last quarter: %s KiB per "
            "worker → %s (threshold %d KiB). Peak %.1f MiB per process, %.1f MiB for all %d workers."
            % (", ".join(str(growth[p]) for p in pids), "**no growth**" if no_growth else "**grows**",
               args.growth_kb, r["rss_max_kb"] / 1024.0, r["rss_sum_kb"] / 1024.0, len(pids)),
            "", "Events/s in 20-second windows (as the tables grow): %s." % ", ".join(
                "%.0f (at %dk)" % (rate, prog // 1000) for prog, rate in rates), ""]
        md = render_report("bench-soak", facts, body_facts, [r], extra)
        print(md)
        save_json("results-soak.json", {"facts": facts, "result": r, "series": series, "growth": growth})
        if not args.no_doc:
            update_doc("make bench-soak", md)
            log("updated %s" % DOC)
        return 0 if (r["verified"] and no_growth and r["rss_max_kb"] <= 8 * 1024) else 1
    finally:
        stack.stop()


def syscalls_per_event(stack, url, replay, n):
    """strace -c on every worker during an n-event replay: syscalls per event."""
    if not shutil.which("strace"):
        return None
    pids = stack.worker_pids()
    out = os.path.join(stack.H.tmpdir, "strace.txt")
    argv = ["strace", "-c", "-f", "-o", out]
    for p in pids:
        argv += ["-p", str(p)]
    st = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    try:
        stack.reset_db()
        r = run_wrk(stack, url, replay, 4, stack.worker_pids, "paddlehook", 300)
    finally:
        st.send_signal(signal.SIGINT)
        st.wait(30)
    calls = {}
    for line in open(out):
        parts = line.split()
        if len(parts) >= 5 and parts[0][0].isdigit() and parts[-1] not in ("total",):
            try:
                calls[parts[-1]] = int(parts[3])
            except ValueError:
                pass
    return {"events": r["events"], "per_event": {k: v / max(1, r["events"]) for k, v in
                                                 sorted(calls.items(), key=lambda kv: -kv[1])}}


def _log_values(path, offset, pattern):
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read().decode("utf-8", "replace")
    return sorted(float(x) for x in re.findall(pattern, data))


def latency_decomposition(stack, url, replay):
    H = stack.H
    access = os.path.join(H.nginx_dir, "access.log")
    a0, s0 = os.path.getsize(access), os.path.getsize(H.serve_log)
    stack.reset_db()
    H.psql("SELECT pg_stat_statements_reset()")
    r = run_wrk(stack, url, replay, 1, stack.worker_pids, "paddlehook", 300)
    time.sleep(1.5)  # the access log is flushed every second
    rt = _log_values(access, a0, r"\" 200 .*? rt=([\d.]+)")
    urt = _log_values(access, a0, r"\" 200 .*? urt=([\d.]+)")
    dur = _log_values(H.serve_log, s0, r"event=request .*?status=200 .*?duration_ms=([\d.]+)")
    pg = H.sql("SELECT mean_exec_time, stddev_exec_time FROM pg_stat_statements "
               "WHERE query LIKE 'SELECT paddle.ingest_event%' ORDER BY calls DESC LIMIT 1")

    def pp(vals, scale=1.0):
        return "%.2f / %.2f" % (percentile(vals, 50) * scale, percentile(vals, 99) * scale) if vals else "?"
    return {"events": r["events"], "wrk": "%.2f / %.2f" % (r["lat_ms"]["p50"], r["lat_ms"]["p99"]),
            "nginx_rt": pp(rt, 1000.0), "nginx_urt": pp(urt, 1000.0), "worker": pp(dur),
            "pg_mean": float(pg[0][0]) if pg else 0.0, "pg_stddev": float(pg[0][1]) if pg else 0.0}


def cmd_profile(args):
    """Where the time goes, at 16 connections through paddlehook: worker
    count sweep, pg_stat_statements with nested statements, WAL, perf, strace."""
    stack = Stack(args, extra_pg={"shared_preload_libraries": "pg_stat_statements",
                                  "pg_stat_statements.track": "all",
                                  "track_functions": "all", "track_wal_io_timing": "on"})
    try:
        stack.start()
        facts = machine_facts(stack)
        H = stack.H
        H.psql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        replay, body_facts, _ = make_replay(stack, args.events, "profile.txt")
        warm, _, _ = make_replay(stack, 1000, "warm.txt")
        ph_url = "%s/paddle/webhooks/%s" % (H.base_url, stack.ep.id)
        facts["busy_before"] = wait_quiet(args.quiet_wait)
        stack.reset_db()
        run_wrk(stack, ph_url, warm, 16, stack.worker_pids, "paddlehook", args.run_timeout)
        extra = []

        # 1. worker count vs cores
        sweep = []
        for w in args.sweep:
            restart_serve(stack, w)
            stack.reset_db()
            r = run_wrk(stack, ph_url, replay, args.conns, stack.worker_pids, "paddlehook",
                        args.run_timeout, {"nginx": stack.nginx_pids})
            r["title"] = "paddlehook (%d workers)" % w
            sweep.append(r)
            log("workers=%-2d c=%d %6.0f events/s p99 %.2f ms" % (w, args.conns, r["eps"], r["lat_ms"]["p99"]))
        for c in args.pgbench_clients:
            for variant, opts, title in (
                    ("", None, "pgbench"),
                    ("", "-c synchronous_commit=off", "pgbench, synchronous_commit=off"),
                    ("-store-only", None, "pgbench, store only (no projection)")):
                stack.reset_db()
                r = run_pgbench(stack, c, args.pgbench_seconds, run_id=c, variant=variant,
                                pgoptions=opts)
                r["title"] = title
                sweep.append(r)
                log("%s c=%-2d %6.0f events/s p99 %.2f ms" % (title, c, r["eps"], r["lat_ms"]["p99"]))
        # latency decomposition at 1 connection: wrk -> nginx -> worker -> PostgreSQL
        dec = latency_decomposition(stack, ph_url, head_file(replay, 2000, os.path.join(
            H.tmpdir, "latency-replay.txt")))
        if dec:
            extra += ["Where one request's time goes at 1 connection (%d events; p50 / p99 in ms; nginx "
                      "logs with millisecond resolution): client (wrk) %s; nginx `$request_time` %s; "
                      "nginx `$upstream_response_time` (FastCGI connect + worker) %s; the worker's own "
                      "`duration_ms` (read body, verify, parse, database, respond) %s; PostgreSQL "
                      "execution of `ingest_event` (pg_stat_statements, mean ± stddev) %.2f ± %.2f."
                      % (dec["events"], dec["wrk"], dec["nginx_rt"], dec["nginx_urt"], dec["worker"],
                         dec["pg_mean"], dec["pg_stddev"]), ""]
        extra += ["Worker count (paddlehook at %d connections) and the database alone (pgbench: as "
                  "in `make bench`; with synchronous_commit=off, i.e. without waiting for the WAL "
                  "flush; and storing only, with event types that paddle.ingest_event does not "
                  "project):" % args.conns, "", render_table(sweep), ""]
        restart_serve(stack, args.workers)

        # 2. statements, WAL and CPU by process for one run at the default worker count
        stack.reset_db()
        H.psql("SELECT pg_stat_statements_reset(); SELECT pg_stat_reset_shared('wal'); "
               "SELECT pg_stat_reset();")
        perf_data = os.path.join(BUILD_BENCH, "perf.data")
        os.makedirs(BUILD_BENCH, exist_ok=True)
        perf = None
        for old in (perf_data, perf_data + ".old"):
            if os.path.exists(old):
                os.unlink(old)
        if shutil.which("perf"):
            perf_log = open(os.path.join(H.tmpdir, "perf.log"), "wb")
            perf = subprocess.Popen(["perf", "record", "-a", "-g", "-F", "499", "-o", perf_data],
                                    stdout=perf_log, stderr=perf_log)
            time.sleep(0.5)
        try:
            r = run_wrk(stack, ph_url, replay, args.conns, stack.worker_pids, "paddlehook",
                        args.run_timeout, {"nginx": stack.nginx_pids})
            # Report only this stack's processes: the machine may be shared.
            our_pids = ",".join(str(p) for p in stack.pg_pids() + stack.worker_pids() + stack.nginx_pids())
        finally:
            if perf:
                perf.send_signal(signal.SIGINT)
                perf.wait(120)
        r["title"] = "paddlehook (%d workers), pg_stat_statements + perf" % H.workers
        n = r["events"]
        c = r["cpu"]
        extra += ["CPU by process group over one run at %d connections (%d events, %.1f s): "
                  "PostgreSQL %.2f s (user %.2f + sys %.2f), workers %.2f s (%.2f + %.2f), "
                  "nginx %.2f s (%.2f + %.2f), wrk %.2f s; i.e. per event PostgreSQL %.0f µs, "
                  "workers %.0f µs, nginx %.0f µs." % (
                      args.conns, n, r["seconds"], c["postgres"], c["postgres_user"], c["postgres_sys"],
                      c["workers"], c["workers_user"], c["workers_sys"], c["nginx"], c["nginx_user"],
                      c["nginx_sys"], c["wrk"], 1e6 * c["postgres"] / n, 1e6 * c["workers"] / n,
                      1e6 * c["nginx"] / n), ""]
        stmts = H.sql(
            "SELECT calls, round(total_exec_time::numeric, 0), round((total_exec_time / calls)::numeric, 3), "
            "round(wal_bytes / calls), round(wal_fpi::numeric / calls, 2), "
            "regexp_replace(left(query, 90), '\\s+', ' ', 'g') "
            "FROM pg_stat_statements WHERE calls > 0 ORDER BY total_exec_time DESC LIMIT 16")
        extra += ["pg_stat_statements with track = all (so the statements inside "
                  "paddle.ingest_event show up; nested times are included in their callers'):", "",
                  "| calls | total ms | ms/call | WAL B/call | FPI/call | statement |",
                  "|---|---|---|---|---|---|"]
        for calls, tot, per, wb, fpi, q in stmts:
            extra.append("| %s | %s | %s | %s | %s | `%s` |" % (calls, tot, per, wb, fpi,
                                                               q.replace("|", "\\|")))
        time.sleep(11)  # backends flush function statistics within 10 s of going idle
        funcs = H.sql("SELECT schemaname || '.' || funcname, calls, round(total_time::numeric, 0), "
                      "round(self_time::numeric, 0), round((self_time / calls * 1000)::numeric, 1) "
                      "FROM pg_stat_user_functions WHERE calls > 0 ORDER BY self_time DESC LIMIT 12")
        if funcs:
            extra += ["", "Functions (track_functions = all; inlined SQL functions do not appear; "
                      "self time excludes nested function calls but includes the statements they run):",
                      "", "| function | calls | calls/event | total ms | self ms | self µs/call |",
                      "|---|---|---|---|---|---|"]
            for fn, calls, tot, selft, per in funcs:
                extra.append("| %s | %s | %.1f | %s | %s | %s |" % (fn, calls, int(calls) / n, tot, selft, per))
        wal = H.sql("SELECT wal_records, wal_fpi, wal_bytes, wal_write, wal_sync, "
                    "round(wal_write_time::numeric, 0), round(wal_sync_time::numeric, 0) FROM pg_stat_wal")[0]
        extra += ["", "pg_stat_wal over the run: %.1f WAL records and %.2f full-page images per event, "
                  "%.1f KB per event; %s WAL syncs for %d commits (%.2f commits per fdatasync: group "
                  "commit), %s ms in fdatasync in total (%.2f ms per sync)." % (
                      int(wal[0]) / n, int(wal[1]) / n, int(wal[2]) / n / 1024.0, wal[4], n,
                      n / max(1, int(wal[4])), wal[6], float(wal[6]) / max(1, int(wal[4]))), ""]
        if perf and os.path.exists(perf_data):
            rep = subprocess.run(["perf", "report", "-i", perf_data, "--no-children", "--pid", our_pids,
                                  "--percentage", "relative", "--sort", "comm,dso", "--stdio", "-g", "none",
                                  "--percent-limit", "0.5"],
                                 capture_output=True, text=True, timeout=300).stdout
            top = [x for x in rep.splitlines() if x.strip() and not x.startswith("#")][:16]
            extra += ["`perf record -a -g` over the same run, reported for this stack's PostgreSQL, "
                      "worker and nginx processes only (shares of their samples), by process and object:", "",
                      "```"] + top + ["```", ""]
            for comm in ("postgres", "paddlehook"):
                rep = subprocess.run(["perf", "report", "-i", perf_data, "--no-children", "--pid", our_pids,
                                      "--percentage", "relative", "--comm", comm, "--sort", "sym", "--stdio",
                                      "-g", "none"],
                                     capture_output=True, text=True, timeout=300).stdout
                top = [x for x in rep.splitlines() if x.strip() and not x.startswith("#")][:25]
                extra += ["Top symbols in %s (share of that process group's samples):" % comm, "", "```"] + top + ["```", ""]

        # 3. syscalls per request
        small = head_file(replay, 2000, os.path.join(H.tmpdir, "strace-replay.txt"))
        sc = syscalls_per_event(stack, ph_url, small, 2000)
        if sc:
            top = list(sc["per_event"].items())[:14]
            extra += ["Syscalls per request in the workers (strace -c, %d events at 4 connections): %s; "
                      "%.1f in total." % (sc["events"], ", ".join("%s %.2f" % kv for kv in top),
                                          sum(sc["per_event"].values())), ""]
        md = render_report("bench-profile", facts, body_facts, [r], extra)
        print(md)
        save_json("results-profile.json", {"facts": facts, "result": r, "sweep": sweep,
                                           "statements": stmts, "wal": wal, "syscalls": sc})
        if not args.no_doc:
            update_doc("make bench-profile", md)
            log("updated %s" % DOC)
        return 0 if r["verified"] and all(x["verified"] for x in sweep) else 1
    finally:
        stack.stop()


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("command", choices=["bench", "soak", "profile"])
    ap.add_argument("--events", type=int, default=None,
                    help="notifications per run (bench 40000, soak 200000, profile 20000)")
    ap.add_argument("--level-events", default="1:10000,4:20000",
                    help="bench: CONNS:N,... replay only the first N notifications at these levels "
                         "(latency-bound, slow); the others replay all --events")
    ap.add_argument("--warmup", type=int, default=2000)
    ap.add_argument("--levels", default="1,4,16,32", help="bench: connections / pgbench clients")
    ap.add_argument("--workers", type=int, default=4, help="paddlehook serve --workers (4 = default)")
    ap.add_argument("--also-workers", default="16",
                    help="bench: also run paddlehook at 16 connections with these worker counts")
    ap.add_argument("--sweep", default="2,4,8,16,32", help="profile: worker counts to try")
    ap.add_argument("--pgbench-clients", default="16,32", help="profile: pgbench clients to try")
    ap.add_argument("--conns", type=int, default=16, help="soak/profile: connections")
    ap.add_argument("--pgbench-seconds", type=int, default=15)
    ap.add_argument("--skip", default="", help="bench: comma list of pgbench,paddlehook,node")
    ap.add_argument("--driver", default=os.path.join(BUILD_BENCH, "profile-event"))
    ap.add_argument("--driver-iterations", type=int, default=5000, help="per native run of the driver")
    ap.add_argument("--driver-runs", type=int, default=7, help="native runs of the driver; the fastest counts")
    ap.add_argument("--callgrind-requests", type=int, default=1000)
    ap.add_argument("--no-callgrind", action="store_true")
    ap.add_argument("--growth-kb", type=int, default=128, help="soak: allowed RSS growth per worker")
    ap.add_argument("--quiet-wait", type=int, default=120,
                    help="seconds to wait at most for other load on the machine to calm down")
    ap.add_argument("--run-timeout", type=int, default=900, help="seconds per wrk run at most")
    ap.add_argument("--no-doc", action="store_true", help="do not rewrite docs/performance.md")
    ap.add_argument("--pin", action="store_true",
                    help="bench: PostgreSQL on CPU 0, everything else on CPU 1 (make bench-pinned)")
    args = ap.parse_args(argv)
    args.levels = [int(x) for x in args.levels.split(",") if x]
    args.level_events = {int(a): int(b) for a, b in
                         (x.split(":") for x in args.level_events.split(",") if x)}
    args.sweep = [int(x) for x in args.sweep.split(",") if x]
    args.also_workers = [int(x) for x in args.also_workers.split(",") if x]
    args.pgbench_clients = [int(x) for x in args.pgbench_clients.split(",") if x]
    args.skip = set(x for x in args.skip.split(",") if x)
    if args.events is None:
        args.events = {"bench": 40000, "soak": 200000, "profile": 20000}[args.command]
    if args.pin and (os.cpu_count() or 1) < 2:
        sys.exit("bench --pin needs at least 2 CPUs")
    if not shutil.which("wrk"):
        sys.exit("bench: wrk not found (make bench installs it with apt-get when root)")
    return {"bench": cmd_bench, "soak": cmd_soak, "profile": cmd_profile}[args.command](args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
