"""Fault injection for paddlehook's chaos test, built on tests/harness.py.

Every fault acts only on processes this harness started, found by PID (the
serve supervisor's children, the postmaster named in its own postmaster.pid and
that postmaster's children, nginx's master), and every fault ends by itself:
a blocked database is always released in a `finally`.

    H = ChaosHarness(workers=4)      # a Harness whose commits survive a crash
    H.start()
    F = Faults(H, random.Random(1))
    record = F.inject("pg_crash")    # FaultRecord(kind, started, ended, detail)

Kinds (FAULT_KINDS):
    worker_kill      SIGKILL one random worker; serve must start a new one
    pg_crash         SIGKILL the postmaster, then whatever of its children is
                     still alive after a moment; start it again (crash recovery)
    pg_immediate     `pg_ctl stop -m immediate` (SIGQUIT to everything, no
                     checkpoint) and start again (crash recovery)
    nginx_restart    stop nginx (SIGTERM: fast shutdown, open requests cut)
                     and start it again on the same port
    db_freeze        SIGSTOP the postmaster and all its children for a few
                     seconds, then SIGCONT (a stalled database host)
    db_lock          a psql session holds ACCESS EXCLUSIVE on
                     paddle.payment_events for a few seconds
    db_terminate     pg_terminate_backend() on every worker connection (what
                     a failover, a pooler restart or an admin does)
    db_hang          SIGSTOP the workers' own sessions, the server still up,
                     for longer than the workers' database deadline (a hung
                     backend): they must give up, answer 503 and reconnect
"""

import os
import signal
import subprocess
import time

import harness
from harness import WORKER_SESSIONS, Harness, children_of, kill_pid, pid_alive, wait_until

FAULT_KINDS = ("worker_kill", "pg_crash", "pg_immediate", "nginx_restart", "db_freeze", "db_lock",
               "db_terminate", "db_hang")
# Longer than the worker's database deadline (STORE_TIMEOUT_MS, 4.5 s).
HANG_SECONDS = (5.0, 6.5)


def wait_gone(pids, timeout):
    """Wait until no process (not even a zombie) has any of these PIDs;
    returns the seconds waited."""
    t0 = time.monotonic()
    wait_until(lambda: not any(os.path.exists("/proc/%d" % p) for p in pids), timeout=timeout,
               interval=0.05, what="PIDs %s to be reaped" % pids)
    return time.monotonic() - t0


class ChaosHarness(Harness):
    """A Harness whose PostgreSQL keeps synchronous_commit on.

    The plain harness turns fsync, synchronous_commit and full_page_writes
    off for speed.  fsync and full_page_writes only matter when the machine
    loses its page cache, which no fault here does; but with
    synchronous_commit off a commit returns before its WAL record has left
    PostgreSQL's shared memory, so SIGKILLing the server loses transactions
    that were already acknowledged.  That would be the test setup breaking
    "acked => stored", not paddlehook, so the chaos test turns it back on
    (async_commit=True restores the harness default, to show the checker
    catches such losses).
    """

    def __init__(self, *args, async_commit=False, **kwargs):
        super().__init__(*args, **kwargs)
        self.async_commit = async_commit

    def init_postgres(self):
        super().init_postgres()
        if not self.async_commit:
            # Later lines of postgresql.conf win.
            with open(os.path.join(self.pg_data, "postgresql.conf"), "a") as f:
                f.write("\n# paddlehook chaos test\nsynchronous_commit = on\n")


class FaultRecord:
    """One injected fault: `ended` is when the fault was over (the process
    back, the database released); recovery is measured from there."""

    def __init__(self, kind, started, ended=None, detail=""):
        self.kind = kind
        self.started = started
        self.ended = ended
        self.detail = detail
        self.error = None

    def as_dict(self):
        return {"kind": self.kind, "started": self.started, "ended": self.ended,
                "detail": self.detail, "error": self.error}

    def __repr__(self):
        return "<Fault %s %.3f-%s %s>" % (self.kind, self.started,
                                          "%.3f" % self.ended if self.ended else "?", self.detail)


class Faults:
    """Injects one fault at a time into a running ChaosHarness."""

    def __init__(self, h, rng, block_seconds=(2.0, 4.0)):
        self.h = h
        self.rng = rng
        self.block_seconds = block_seconds
        self.frozen = []          # PIDs currently SIGSTOPped, for release()

    def inject(self, kind):
        rec = FaultRecord(kind, time.monotonic())
        try:
            getattr(self, "_" + kind)(rec)
        except Exception as exc:  # noqa: BLE001 - reported with the figures
            rec.error = "%s: %s" % (type(exc).__name__, str(exc).splitlines()[0][:300])
            self.repair()
        if rec.ended is None:
            rec.ended = time.monotonic()
        return rec

    # ---- the faults -----------------------------------------------------

    def _worker_kill(self, rec):
        pids = self.h.worker_pids()
        if not pids:
            raise RuntimeError("serve has no workers to kill")
        victim = self.rng.choice(pids)
        kill_pid(victim, signal.SIGKILL)
        rec.ended = time.monotonic()
        rec.detail = "worker %d" % victim
        # How long serve takes to have all workers again (not part of `ended`).
        t0 = time.monotonic()
        self.h.wait_workers(exclude=[victim], timeout=20)
        rec.detail += ", %d workers again after %.2fs" % (self.h.workers, time.monotonic() - t0)

    def _pg_crash(self, rec):
        pm = self.h._read_pg_pid()
        if not pm or not pid_alive(pm):
            raise RuntimeError("postmaster not running")
        kids = children_of(pm)
        kill_pid(pm, signal.SIGKILL)
        # Orphaned backends notice the dead postmaster and quit by themselves;
        # whatever lingers dies with the server, as after an OOM kill.
        try:
            wait_until(lambda: not any(pid_alive(k) for k in kids), timeout=1.0, interval=0.02)
            lingered = 0
        except TimeoutError:
            left = [k for k in kids if pid_alive(k)]
            lingered = len(left)
            for k in left:
                kill_pid(k, signal.SIGKILL)
            wait_until(lambda: not any(pid_alive(k) for k in left), timeout=10, interval=0.02,
                       what="postgres children to die")
        down = time.monotonic()
        # PostgreSQL refuses to start while the PID in postmaster.pid exists,
        # and a SIGKILLed postmaster stays a zombie until its parent (init
        # here: pg_ctl daemonises it) reaps it.
        reaped = wait_gone([pm] + kids, timeout=60)
        self.h.start_postgres()
        rec.ended = time.monotonic()
        rec.detail = "postmaster %d + %d children (%d SIGKILLed), reaped after %.2fs, down %.2fs" % (
            pm, len(kids), lingered, reaped, rec.ended - down)

    def _pg_immediate(self, rec):
        pm = self.h._read_pg_pid()
        self.h.stop_postgres(mode="immediate")
        down = time.monotonic()
        self.h.start_postgres()
        rec.ended = time.monotonic()
        rec.detail = "postmaster %s, down %.2fs" % (pm, rec.ended - down)

    def _nginx_restart(self, rec):
        old = self.h.nginx_proc.pid if self.h.nginx_proc else None
        self.h.stop_nginx()
        down = time.monotonic()
        self.h.start_nginx()
        rec.ended = time.monotonic()
        rec.detail = "nginx %s -> %d, down %.2fs" % (old, self.h.nginx_proc.pid, rec.ended - down)

    def _db_freeze(self, rec):
        secs = self.rng.uniform(*self.block_seconds)
        pm = self.h._read_pg_pid()
        if not pm or not pid_alive(pm):
            raise RuntimeError("postgres not running")
        try:
            # The postmaster first, so that it forks nothing we would miss.
            if kill_pid(pm, signal.SIGSTOP):
                self.frozen.append(pm)
            for p in children_of(pm):
                if kill_pid(p, signal.SIGSTOP):
                    self.frozen.append(p)
            time.sleep(secs)
        finally:
            n = self._thaw()
        rec.ended = time.monotonic()
        rec.detail = "%d processes stopped %.2fs" % (n, secs)

    def _db_lock(self, rec):
        secs = self.rng.uniform(*self.block_seconds)
        h = self.h
        sql = ("BEGIN;\nLOCK TABLE paddle.payment_events IN ACCESS EXCLUSIVE MODE;\n"
               "SELECT 'locked';\nSELECT pg_sleep(%.3f);\nCOMMIT;\n" % secs)
        argv = [os.path.join(h.pg_bin, "psql"), "-X", "-A", "-t", "-q", "-h", "127.0.0.1",
                "-p", str(h.pg_port), "-U", "postgres", "-d", harness.DB_NAME,
                "-v", "ON_ERROR_STOP=1", "-c", "SET lock_timeout = '5s'", "-f", "-"]
        p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True,
                             env=dict(os.environ, PGCONNECT_TIMEOUT="5"))
        try:
            out, err = p.communicate(sql, timeout=secs + 15)
        except subprocess.TimeoutExpired:
            kill_pid(p.pid, signal.SIGKILL)
            p.wait(5)
            raise RuntimeError("psql holding the lock did not finish")
        if p.returncode != 0 or "locked" not in out:
            raise RuntimeError("lock session failed (rc=%s): %s" % (p.returncode, err.strip()[:200]))
        rec.ended = time.monotonic()
        rec.detail = "ACCESS EXCLUSIVE on paddle.payment_events for %.2fs" % secs

    def _db_terminate(self, rec):
        n = self.h.sql_value("SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) "
                             "FROM pg_stat_activity WHERE application_name = 'paddlehook'")
        rec.ended = time.monotonic()
        rec.detail = "%s worker connections terminated" % n

    # ---- clean-up -------------------------------------------------------

    def _db_hang(self, rec):
        secs = self.rng.uniform(*HANG_SECONDS)
        try:
            for (pid,) in self.h.sql(WORKER_SESSIONS):
                if kill_pid(int(pid), signal.SIGSTOP):
                    self.frozen.append(int(pid))
            time.sleep(secs)
        finally:
            n = self._thaw()
        rec.ended = time.monotonic()
        rec.detail = "%d worker sessions stopped %.2fs" % (n, secs)

    def _thaw(self):
        pids, self.frozen = self.frozen, []
        for p in pids:
            kill_pid(p, signal.SIGCONT)
        return len(pids)

    def repair(self):
        """Undo whatever a failed fault may have left: frozen processes, a
        stopped postgres or nginx.  Best effort; errors are left to the final
        health check."""
        self._thaw()
        h = self.h
        try:
            if not h.postgres_running():
                pm = h._read_pg_pid()
                if pm:
                    wait_gone([pm], timeout=60)
                h.start_postgres()
        except Exception:  # noqa: BLE001
            pass
        try:
            if h.nginx_proc is None or h.nginx_proc.poll() is not None:
                h.nginx_proc = None
                h.start_nginx()
        except Exception:  # noqa: BLE001
            pass
