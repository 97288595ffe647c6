"""The benchmark stack: PostgreSQL, paddlehook serve and nginx from
tests/harness.py with the bench's settings, the Node.js peer, and the load
generators (wrk with bench/replay.lua, pgbench) that drive them."""

import datetime
import json
import os
import platform
import re
import resource
import signal
import subprocess
import time

from measure import (BENCH_DIR, BUILD_BENCH, CpuMeter, REPO_ROOT, RssSampler, descendants, log,
                     machine_busy_ticks, percentile, set_affinity, sh)  # sets sys.path for tests/harness.py
import events as bevents  # noqa: E402
from harness import EVENT_TABLE, STATE_TABLES, Harness, children_of, free_port, pid_alive, wait_until


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
        """Empty event and state tables, checkpoint and write back every dirty
        page: every run starts alike. Without the sync the kernel flushes the
        replay files (hundreds of MB) and the previous run's logs 30 s after
        they were written, in the middle of a run, and that writeback held
        single WAL flushes for up to 100 ms."""
        self.H.psql("TRUNCATE %s; CHECKPOINT;" % ", ".join(self.data_tables()), timeout=120)
        os.sync()

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


def run_wrk(stack, url, replay, conns, workers_fn, label, timeout, extra_groups=None,
            progress_log=None, rss_interval=0.25, answer="stored"):
    """Replay every line of `replay` once with wrk; account CPU and RSS. answer: what every delivery must be
    answered ("stored", or "duplicate" for a replay of events already stored: then the rows stay as many)."""
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
    own_log = stack.H.serve_log if label.startswith("paddlehook") else None
    own_log_offset = os.path.getsize(own_log) if own_log else 0
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
        "codes": r["codes"], "n2xx": n2xx, "stored_body": r["stored"], "duplicate_body": r["duplicate"],
        "rows": rows, "verified": rows == n2xx == r["sent"] == r[answer],
        "seconds": elapsed, "eps": r["sent"] / elapsed,
        "lat_ms": {k: v / 1000.0 for k, v in r["lat_us"].items()},
        "wrk_errors": r["errors"],
        "rss_sum_kb": sampler.peak_sum, "rss_max_kb": sampler.peak_max,
        "rss_series": sampler.series if progress_log else None,
        "nproc": len(workers_fn()),
        "cpu": cpu,
        "wal_bytes_per_event": stack.wal_bytes(lsn0, lsn1) / max(1, r["sent"]),
    }
    if own_log:
        res["worker_ms"] = worker_durations(stack.H.serve_log_since(own_log_offset), answer)
    # CPU seconds per 1,000 events of the worker processes
    res["cpu_workers_s_per_1k"] = cpu["workers"] / max(1, r["sent"]) * 1000.0
    res["cpu_all_s_per_1k"] = cpu["_machine"] / max(1, r["sent"]) * 1000.0
    return res


def worker_durations(log_text, answer):
    """p50 and p99 of the workers' own time per delivery answered `answer`: `duration_ms` of serve's request
    lines, from the request read to the answer written (body, signature, parse, the database round trip with
    its commit). What the client waited beyond it was spent outside the workers: in nginx, in the queue for a
    free worker, on the wire."""
    ms = sorted(float(m.group(1)) for m in re.finditer(
        r"event=request .*status=2\d\d outcome=%s duration_ms=([\d.]+)" % re.escape(answer), log_text))
    return {"n": len(ms), "p50": percentile(ms, 50), "p99": percentile(ms, 99)}


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
