"""Integration harness for paddlehook: real PostgreSQL, nginx and worker.

One Harness owns a fresh temporary directory and, inside it, everything a
paddlehook deployment needs on loopback:

    PostgreSQL 15 cluster   127.0.0.1:<free port>, trust auth, user postgres
    paddlehook migrate      schema `paddle` in database `paddlehook`
    master key              keygen --out <tmp>/master.key
    paddlehook serve        unix:<tmp>/run/paddlehook.sock, N pre-forked workers
    nginx                   127.0.0.1:<free port>, the shipped snippet included

Typical use (one instance per test module):

    H = Harness(workers=4)
    H.start()
    ep = H.add_endpoint()                       # Endpoint(id, secret, ...)
    body = make_event("customer.created", {...})
    r = H.post_event(ep, body)                  # signed with a fresh ts
    rows = H.sql_json("select * from paddle.payment_events")
    H.stop()

Everything the harness starts is stopped by PID in stop() (also registered
with atexit); the temporary directory is removed unless PADDLEHOOK_KEEP_TMP=1.
Every wait is a bounded poll.  Only the Python standard library is used.

Root: PostgreSQL refuses to run as root, so initdb/pg_ctl run through
`runuser -u postgres --` in a postgres-owned subdirectory of a traversable
(0711) temp dir.  nginx runs with `user root root;` when the harness is root,
so its workers can connect to the worker socket that paddlehook (running as
root) creates; when not root the `user` directive is left out.

Environment knobs:
    PADDLEHOOK_BIN            binary (default <repo>/build/paddlehook)
    PADDLEHOOK_NGINX_SNIPPET  snippet to include (default <repo>/nginx/paddlehook.conf)
    PADDLEHOOK_PG_BIN         PostgreSQL bin dir (default /usr/lib/postgresql/15/bin)
    PADDLEHOOK_NGINX          nginx binary (default: nginx on PATH or /usr/sbin/nginx)
    PADDLEHOOK_FIXTURES       Paddle fixtures dir (default: see fixtures_dir())
    PADDLEHOOK_KEEP_TMP=1     keep the temporary directory
    PADDLEHOOK_TMPDIR         parent of the temporary directory (default $TMPDIR)

Run `python3 tests/harness.py up` to start a stack by hand (make demo).

The Harness class is assembled from harness_pg.py (the PostgreSQL cluster and
SQL) and harness_web.py (serve, nginx, HTTP); helpers that need no stack are in
harness_util.py. Tests import everything from this module.
"""

import atexit
import os
import pty
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import secrets as _secrets
import unittest

# Re-exported: the tests import all of these from harness.
from paddledata import (fixtures_dir, hmac_h1, make_event, new_secret,  # noqa: F401
                        paddle_id, parse_ts, py_sign, rfc3339, sample_adjustment, sample_customer,
                        sample_subscription, sample_transaction)
from harness_util import (DB_NAME, DEFAULT_PG_BIN, EVENT_TABLE, ClientCutProxy, Endpoint, HarnessError,  # noqa: F401
                          REPO_ROOT, Response, STATE_TABLES, TESTS_DIR, _response_from, _set_pdeathsig,
                          WORKER_SESSIONS, children_of, free_port, kill_pid, metric_values, pid_alive, tail,
                          ts_text, UNREACHABLE_DB, wait_until)
from harness_pg import PostgresMixin
from harness_web import WebMixin


# --------------------------------------------------------------------------
# The harness
# --------------------------------------------------------------------------

_ACTIVE = []          # running harnesses, for atexit and failure log dumps
_ACTIVE_LOCK = threading.Lock()


def active_harnesses():
    with _ACTIVE_LOCK:
        return list(_ACTIVE)


def _stop_all_at_exit():
    for h in active_harnesses():
        try:
            h.stop()
        except Exception:  # noqa: BLE001
            pass


atexit.register(_stop_all_at_exit)


class Harness(PostgresMixin, WebMixin):
    def __init__(self, workers=4, max_body=None, serve_args=(), pg_fast=True,
                 environment_name="paddlehook-test", keep_tmp=None,
                 binary=None, snippet=None, http_port=None, pg_port=None,
                 nginx_server_directives="", nginx_access_log_options=""):
        self.workers = workers
        # Extra directives for the server block and options for access_log
        # (the bench's tuned deployment: docs/deploy.md, "A busy endpoint").
        self.nginx_server_directives = nginx_server_directives
        self.nginx_access_log_options = nginx_access_log_options
        # When set, replaces the shipped upstream's `keepalive` (idle worker
        # connections nginx keeps; docs/deploy.md: about the worker count).
        self.nginx_upstream_keepalive = None
        self.max_body = max_body
        self.serve_args = list(serve_args)
        self.pg_fast = pg_fast
        self.name = environment_name
        if keep_tmp is None:
            keep_tmp = os.environ.get("PADDLEHOOK_KEEP_TMP") == "1"
        self.keep_tmp = keep_tmp
        self.binary = binary or os.environ.get("PADDLEHOOK_BIN") or \
            os.path.join(REPO_ROOT, "build", "paddlehook")
        self.snippet = snippet or os.environ.get("PADDLEHOOK_NGINX_SNIPPET") or \
            os.path.join(REPO_ROOT, "nginx", "paddlehook.conf")
        self.upstream_conf = os.path.join(REPO_ROOT, "nginx", "paddlehook-upstream.conf")
        self.pg_bin = os.environ.get("PADDLEHOOK_PG_BIN", DEFAULT_PG_BIN)
        self.nginx_bin = os.environ.get("PADDLEHOOK_NGINX") or \
            shutil.which("nginx") or "/usr/sbin/nginx"
        self.is_root = os.geteuid() == 0
        self.http_port = http_port
        self.pg_port = pg_port

        self.tmpdir = None
        self.serve_proc = None
        self.nginx_proc = None
        self.pg_pid = None
        self._serve_log_f = None
        self._started = False
        self._table_cache = None
        self._cli_lock = threading.Lock()

    # ---- paths -----------------------------------------------------------

    def _p(self, *parts):
        return os.path.join(self.tmpdir, *parts)

    @property
    def pg_dir(self):
        return self._p("pg")

    @property
    def pg_data(self):
        return self._p("pg", "data")

    @property
    def pg_log(self):
        return self._p("pg", "postgres.log")

    @property
    def nginx_dir(self):
        return self._p("nginx")

    @property
    def socket_path(self):
        return self._p("run", "paddlehook.sock")

    @property
    def serve_log(self):
        return self._p("serve.log")

    def serve_log_since(self, offset=0):
        """serve's log from byte offset on (offset: os.path.getsize(serve_log) taken earlier)."""
        with open(self.serve_log, errors="replace") as f:
            f.seek(offset)
            return f.read()

    @property
    def commands_log(self):
        return self._p("commands.log")

    @property
    def key_file(self):
        return self._p("master.key")

    @property
    def conninfo(self):
        return self.conninfo_for(DB_NAME)

    def conninfo_for(self, dbname):
        """The connection string of another database of this cluster."""
        return ("host=127.0.0.1 port=%d user=postgres dbname=%s connect_timeout=5"
                % (self.pg_port, dbname))

    @property
    def base_url(self):
        return "http://127.0.0.1:%d" % self.http_port

    def env(self):
        """Environment for paddlehook commands."""
        e = dict(os.environ)
        e["PADDLEHOOK_DB"] = self.conninfo
        e["PADDLEHOOK_KEY_FILE"] = self.key_file
        # Each stack its own shared counters (metrics, `paddlehook status`).
        e["PADDLEHOOK_STATS_FILE"] = self._p("stats")
        e["PGTZ"] = "UTC"
        return e

    # ---- lifecycle -------------------------------------------------------

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()
        return False

    def make_tmpdir(self):
        if self.tmpdir:
            return self.tmpdir
        parent = os.environ.get("PADDLEHOOK_TMPDIR") or None
        self.tmpdir = tempfile.mkdtemp(prefix="paddlehook-test-", dir=parent)
        # Traversable so the postgres user (root case) reaches pg/.
        os.chmod(self.tmpdir, 0o711)
        os.makedirs(self._p("run"), exist_ok=True)
        os.makedirs(self.nginx_dir, exist_ok=True)
        with _ACTIVE_LOCK:
            if self not in _ACTIVE:
                _ACTIVE.append(self)
        return self.tmpdir

    def start(self, nginx=True, serve=True):
        """Start PostgreSQL, migrate, keygen, serve and nginx."""
        if not os.access(self.binary, os.X_OK):
            raise HarnessError("paddlehook binary not found or not executable: %s "
                               "(run `make` first, or set PADDLEHOOK_BIN)" % self.binary)
        self.make_tmpdir()
        try:
            self.init_postgres()
            self.start_postgres()
            self.create_database()
            self.migrate()
            self.keygen()
            if serve:
                self.start_serve()
            if nginx:
                self.start_nginx()
            if serve and nginx:
                self.wait_healthy()
            self._started = True
        except BaseException as exc:
            logs = self.log_report()
            self.stop()
            if isinstance(exc, HarnessError):
                raise HarnessError("%s\n%s" % (exc, logs)) from None
            raise HarnessError("harness start failed: %r\n%s" % (exc, logs)) from exc
        return self

    def stop(self):
        """Stop everything this harness started, by PID; remove tmpdir."""
        errors = []
        for step in (self.stop_nginx, self.stop_serve, self.stop_postgres):
            try:
                step()
            except Exception as exc:  # noqa: BLE001 - keep stopping the rest
                errors.append(repr(exc))
        if self._serve_log_f:
            self._serve_log_f.close()
            self._serve_log_f = None
        with _ACTIVE_LOCK:
            if self in _ACTIVE:
                _ACTIVE.remove(self)
        if self.tmpdir and os.path.isdir(self.tmpdir):
            if self.keep_tmp:
                sys.stderr.write("paddlehook harness: kept %s\n" % self.tmpdir)
            else:
                shutil.rmtree(self.tmpdir, ignore_errors=True)
        self._started = False
        if errors:
            raise HarnessError("errors while stopping: " + "; ".join(errors))

    # ---- logs ------------------------------------------------------------

    def log_files(self):
        if not self.tmpdir:
            return []
        return [
            ("paddlehook serve", self.serve_log),
            ("nginx error.log", os.path.join(self.nginx_dir, "error.log")),
            ("nginx access.log", os.path.join(self.nginx_dir, "access.log")),
            ("postgres", self.pg_log),
            ("harness commands", self.commands_log),
        ]

    def log_report(self, lines=25):
        """Where the logs are and their last lines."""
        if not self.tmpdir:
            return "(harness has no temporary directory)"
        out = ["---- paddlehook harness logs in %s%s ----" % (
            self.tmpdir, "" if self.keep_tmp else " (set PADDLEHOOK_KEEP_TMP=1 to keep)")]
        for label, path in self.log_files():
            if os.path.exists(path):
                out.append("== %s: %s (last %d lines)" % (label, path, lines))
                out.append(tail(path, lines))
        return "\n".join(out)

    def _log_command(self, argv, rc, stdout, stderr):
        try:
            with open(self.commands_log, "a") as f:
                f.write("$ %s\n  rc=%s\n" % (" ".join(argv), rc))
                for label, text in (("stdout", stdout), ("stderr", stderr)):
                    if text:
                        f.write("  %s: %s\n" % (label, text.rstrip().replace("\n", "\n    ")))
        except OSError:
            pass

    # ---- paddlehook CLI --------------------------------------------------

    def cli(self, *args, input=None, check=True, timeout=60):
        """Run build/paddlehook with the harness environment."""
        argv = [self.binary] + [str(a) for a in args]
        p = self._run(argv, input=input if input is not None else "", timeout=timeout,
                      check=False, env=self.env())
        if check and p.returncode != 0:
            raise HarnessError("paddlehook %s failed (rc=%d)\nstdout: %s\nstderr: %s"
                               % (" ".join(map(str, args)), p.returncode, p.stdout, p.stderr))
        return p

    def cli_on_terminal(self, *args, timeout=60):
        """Runs paddlehook with its stdout on a pseudo-terminal, as an operator's; returns (rc, what the
        terminal got, stderr). The terminal turns each newline into CR LF."""
        master, slave = pty.openpty()
        got, proc = b"", None
        try:
            proc = subprocess.Popen([self.binary] + [str(a) for a in args], stdin=subprocess.DEVNULL,
                                    stdout=slave, stderr=subprocess.PIPE, env=self.env())
            os.close(slave)
            slave = None
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if not select.select([master], [], [], 1)[0]:
                    continue
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the command closed its end
                    break
                if not chunk:
                    break
                got += chunk
            _, err = proc.communicate(timeout=max(1, deadline - time.monotonic()))
        finally:
            os.close(master)
            if slave is not None:
                os.close(slave)
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
        return proc.returncode, got.decode("utf-8", "replace"), err.decode("utf-8", "replace")

    def cli_losing_commit_answer(self, args, input="", cut="server", before_release=None):
        """Runs paddlehook with args while commits wait for a synchronous standby that is not there, and loses
        the answer to the command's commit, which has taken place locally. cut="server": the session that waits
        is ended (a shutdown does the same; the commit is then visible at once). cut="client": the command's
        connection is cut between it and the database (through a ClientCutProxy; it must connect to
        PADDLEHOOK_DB), the session keeps waiting, and the standby setting is lifted a second later, which
        lets the commit finish. cut="client-unreachable": the same, but the database stays out of reach of the
        command (its new connections are taken and never answered) and the commit waits until the end.
        before_release: called after a "client" cut, before the commit may finish.
        Returns the finished process, output captured."""
        waiting = "SELECT pid FROM pg_stat_activity WHERE wait_event = 'SyncRep'"
        proxy = ClientCutProxy(self.pg_port) if cut.startswith("client") else None
        env = self.env()
        if proxy:
            env["PADDLEHOOK_DB"] = env["PADDLEHOOK_DB"].replace("port=%d" % self.pg_port, "port=%d" % proxy.port)
        output = []
        try:
            self.sql("ALTER SYSTEM SET synchronous_standby_names = 'no_such_standby'")
            self.sql("ALTER SYSTEM SET synchronous_commit = 'on'")
            self.sql("SELECT pg_reload_conf()")
            proc = subprocess.Popen([self.binary] + list(args), env=env, stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            talk = threading.Thread(target=lambda: output.extend(proc.communicate(input)))
            talk.start()
            try:
                wait_until(lambda: self.sql(waiting), timeout=10, what="the command's commit to wait for the standby")
                if cut == "client-unreachable":
                    proxy.cut(black_hole=True)
                elif proxy:
                    proxy.cut()
                    time.sleep(1)   # the command asks what became of its commit meanwhile
                    if before_release:
                        before_release()
                    self.sql("ALTER SYSTEM RESET synchronous_standby_names")
                    self.sql("SELECT pg_reload_conf()")
                else:
                    self.sql("SELECT pg_terminate_backend(pid) FROM (%s) w" % waiting)
                talk.join(60)
            finally:
                if proc.poll() is None:
                    proc.kill()
                talk.join(30)
        finally:
            self.sql("ALTER SYSTEM RESET synchronous_standby_names")
            self.sql("ALTER SYSTEM RESET synchronous_commit")
            self.sql("SELECT pg_reload_conf()")
            if proxy:
                proxy.close()
        return subprocess.CompletedProcess(args, proc.returncode, *output)

    def migrate(self):
        return self.cli("migrate")

    def keygen(self):
        if not os.path.exists(self.key_file):
            self.cli("keygen", "--out", self.key_file)
        return self.key_file

    def add_endpoint(self, name=None, secret=None, environment="sandbox", tolerance=None,
                     wait=True):
        """endpoint add; returns an Endpoint (id from the last stdout line).
        With wait (and serve + nginx running) it returns once the workers
        answer for the endpoint (see wait_endpoint_known)."""
        secret = secret or new_secret()
        name = name or "test-%s" % paddle_id("n")[2:14]
        args = ["endpoint", "add", name]
        if environment is not None:
            args += ["--environment", environment]
        if tolerance is not None:
            args += ["--tolerance", str(tolerance)]
        p = self.cli(*args, input=secret + "\n")
        lines = [l.strip() for l in p.stdout.splitlines() if l.strip()]
        if not lines:
            raise HarnessError("endpoint add printed no id (stderr: %s)" % p.stderr)
        ep = Endpoint(lines[-1], secret, name, environment or "sandbox", tolerance)
        if wait and self.nginx_proc is not None and self.serve_proc is not None:
            self.wait_endpoint_known(ep)
        return ep

    def wait_endpoint_known(self, endpoint, timeout=10):
        """Poll until the workers answer for a new endpoint (the contract lets
        them pick it up "within a moment").  The probe is an unsigned POST:
        404 unknown_endpoint while unknown, 401 once known; it never reaches
        the database.  Requires `workers` consecutive non-404 answers."""
        streak = [0]

        def known():
            r = self.post(endpoint.path, b"{}")
            streak[0] = streak[0] + 1 if r.status != 404 else 0
            return streak[0] >= self.workers
        try:
            wait_until(known, timeout=timeout, interval=0.02,
                       what="workers to know endpoint %s" % endpoint.id)
        except TimeoutError as exc:
            raise HarnessError(str(exc))

    def rotate_endpoint(self, endpoint, new_secret_value=None):
        s = new_secret_value or new_secret()
        self.cli("endpoint", "rotate", endpoint.id, input=s + "\n")
        endpoint.secrets.append(s)
        endpoint.secret = s
        return s

    def retire_secrets(self, endpoint):
        self.cli("endpoint", "retire-secret", endpoint.id)
        endpoint.secrets = [endpoint.secret]

    def disable_endpoint(self, endpoint):
        self.cli("endpoint", "disable", endpoint.id)

    def enable_endpoint(self, endpoint):
        self.cli("endpoint", "enable", endpoint.id)

    def list_endpoints(self):
        return self.cli("endpoint", "list").stdout

    def sign(self, body, secret, ts=None):
        """Paddle-Signature from `paddlehook sign` (secret via a 0600 file)."""
        if isinstance(body, str):
            body = body.encode()
        path = self._p("secret-%s" % _secrets.token_hex(6))
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secret)
        try:
            args = [self.binary, "sign", "--secret-file", path]
            if ts is not None:
                args += ["--ts", str(ts)]
            p = subprocess.run(args, input=body, capture_output=True, timeout=30, env=self.env())
            if p.returncode != 0:
                raise HarnessError("paddlehook sign failed (rc=%d): %s"
                                   % (p.returncode, p.stderr.decode("utf-8", "replace")))
            lines = [l.strip() for l in p.stdout.decode().splitlines() if l.strip()]
            return lines[-1]
        finally:
            os.unlink(path)

    py_sign = staticmethod(py_sign)



# Parents (entity, id, event_id, items_event_id) whose item rows were written from other items than the
# snapshot the parent holds carries: items_event_id must name an event with the same items JSON.
ITEMS_FROM_OTHER_DATA = """
SELECT p.entity, p.id, p.event_id, p.items_event_id FROM (
    SELECT 'subscription' AS entity, id, event_id, items_event_id FROM paddle.subscriptions UNION ALL
    SELECT 'transaction', id, event_id, items_event_id FROM paddle.transactions UNION ALL
    SELECT 'adjustment', id, event_id, items_event_id FROM paddle.adjustments) p
JOIN paddle.payment_events a ON a.event_id = p.event_id
LEFT JOIN paddle.payment_events b ON b.event_id = p.items_event_id
WHERE b.event_id IS NULL
   OR (a.payload -> 'data' -> 'items')::text IS DISTINCT FROM (b.payload -> 'data' -> 'items')::text
   OR (a.payload -> 'data' -> 'details' -> 'line_items')::text
      IS DISTINCT FROM (b.payload -> 'data' -> 'details' -> 'line_items')::text"""


# --------------------------------------------------------------------------
# unittest support
# --------------------------------------------------------------------------

class HarnessTestCase(unittest.TestCase):
    """Base class: `harness` is the module's Harness.  On failure the tails
    of the serve/nginx/postgres logs are appended to the report."""

    harness = None
    maxDiff = 4000

    @property
    def H(self):
        return self.harness

    def run(self, result=None):
        if result is None:
            result = self.defaultTestResult()
        before = len(result.failures) + len(result.errors)
        out = super().run(result)
        h = self.harness
        if h is not None and h.tmpdir and len(result.failures) + len(result.errors) > before:
            report = h.log_report()
            for lst in (result.failures, result.errors):
                for i in range(len(lst) - 1, -1, -1):
                    test, text = lst[i]
                    if (getattr(test, "test_case", None) or test) is self:
                        lst[i] = (test, text + "\n" + report)
                        break
        return out

    # -- assertions ------------------------------------------------------

    def assertStatusJSON(self, r, status, what=""):
        self.assertIsNotNone(r, "no HTTP response %s" % what)
        self.assertEqual(r.status, status, "unexpected response %r%s" % (r, " (%s)" % what if what else ""))
        j = r.json()
        self.assertIsInstance(j, dict, "%s: body is not a JSON object: %r" % (what, r))
        return j

    def assertStored(self, r, what=""):
        j = self.assertStatusJSON(r, 200, what)
        self.assertEqual(j.get("status"), "stored", "%s: %r" % (what, r))

    def assertDuplicate(self, r, what=""):
        j = self.assertStatusJSON(r, 200, what)
        self.assertEqual(j.get("status"), "duplicate", "%s: %r" % (what, r))

    def assertErrorResponse(self, r, status, code, what=""):
        """status, JSON `error` == code and a non-empty `message`."""
        j = self.assertStatusJSON(r, status, what)
        self.assertEqual(j.get("error"), code, "%s: %r" % (what, r))
        msg = j.get("message")
        self.assertIsInstance(msg, str, "%s: message missing: %r" % (what, r))
        self.assertTrue(msg.strip(), "%s: empty message: %r" % (what, r))
        # Every 503 tells Paddle when to retry; nothing else does.
        retry_after = r.headers.get("retry-after")
        if status == 503:
            self.assertTrue(retry_after and retry_after.isdigit() and int(retry_after) > 0,
                            "%s: 503 without a Retry-After: %r" % (what, r.headers))
        else:
            self.assertIsNone(retry_after, "%s: Retry-After on a %d" % (what, status))
        return j


# --------------------------------------------------------------------------
# `python3 tests/harness.py up` - a stack for demos and benchmarks
# --------------------------------------------------------------------------

def _main(argv):
    import argparse
    ap = argparse.ArgumentParser(description="Start PostgreSQL + paddlehook serve + nginx "
                                 "in a temporary directory and wait for Ctrl-C.")
    ap.add_argument("command", choices=["up", "nginx-config"])
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--endpoint", action="store_true", help="also create a demo endpoint")
    args = ap.parse_args(argv)
    h = Harness(workers=args.workers)
    if args.command == "nginx-config":
        h.make_tmpdir()
        try:
            ok, out = h.nginx_test_config()
            print(open(os.path.join(h.nginx_dir, "nginx.conf")).read())
            print(out)
            return 0 if ok else 1
        finally:
            h.stop()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    signal.signal(signal.SIGINT, lambda *a: stop.set())
    h.start()
    try:
        print("tmpdir:      %s" % h.tmpdir)
        print("webhooks:    %s/paddle/webhooks/<endpoint-id>" % h.base_url)
        print("healthz:     %s/paddle/healthz" % h.base_url)
        print("database:    psql '%s'" % h.conninfo)
        print("env:         PADDLEHOOK_DB='%s' PADDLEHOOK_KEY_FILE=%s" % (h.conninfo, h.key_file))
        if args.endpoint:
            ep = h.add_endpoint(name="demo")
            print("endpoint:    %s  secret: %s" % (ep.id, ep.secret))
        print("serve pid %s, workers %s; Ctrl-C to stop" % (h.serve_pid(), h.worker_pids()))
        sys.stdout.flush()
        while not stop.wait(1):
            pass
    finally:
        h.stop()
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
