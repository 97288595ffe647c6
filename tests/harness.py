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
"""

import atexit
import ctypes
import http.client
import json
import os
import pwd
import re
import secrets as _secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

from paddledata import (fixtures_dir, hmac_h1, make_event, new_secret, paddle_id,  # noqa: F401
                        parse_ts, py_sign, rfc3339, sample_adjustment, sample_customer,
                        sample_subscription, sample_transaction)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS_DIR = os.path.join(REPO_ROOT, "tests")

DEFAULT_PG_BIN = "/usr/lib/postgresql/15/bin"
DB_NAME = "paddlehook"

# Tables the contract names; the digest helpers skip those not created yet.
EVENT_TABLE = "paddle.payment_events"
STATE_TABLES = (
    "paddle.customers",
    "paddle.subscriptions",
    "paddle.subscription_items",
    "paddle.transactions",
    "paddle.transaction_items",
    "paddle.adjustments",
    "paddle.adjustment_items",
)


class HarnessError(RuntimeError):
    """A component failed to start/stop; the message carries log tails."""


# --------------------------------------------------------------------------
# small utilities
# --------------------------------------------------------------------------

def wait_until(predicate, timeout=10.0, interval=0.05, what="condition"):
    """Poll predicate() until it returns a truthy value; return that value.

    Raises TimeoutError naming `what` and the last value or exception seen.
    """
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            value = predicate()
            if value:
                return value
            last = value
        except Exception as exc:  # noqa: BLE001 - reported on timeout
            last = exc
        if time.monotonic() >= deadline:
            raise TimeoutError("timed out after %.1fs waiting for %s (last: %r)"
                               % (timeout, what, last))
        time.sleep(interval)


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pid_alive(pid):
    """True if pid exists and is not a zombie."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            stat = f.read()
    except OSError:
        return False
    state = stat.rpartition(")")[2].split()[0]
    return state not in ("Z", "X")


def children_of(pid):
    """PIDs whose parent is pid (from /proc), zombies excluded."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()
        if len(fields) > 1 and int(fields[1]) == pid and fields[0] not in ("Z", "X"):
            out.append(int(name))
    return sorted(out)


def kill_pid(pid, sig):
    try:
        os.kill(pid, sig)
        return True
    except ProcessLookupError:
        return False


def tail(path, lines=40):
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            data = f.read().decode("utf-8", "replace")
    except OSError as exc:
        return "(cannot read %s: %s)" % (path, exc)
    return "\n".join(data.splitlines()[-lines:])


_libc = None


def _set_pdeathsig():
    """preexec_fn: deliver SIGTERM to the child if the harness dies."""
    global _libc
    try:
        if _libc is None:
            _libc = ctypes.CDLL(None, use_errno=True)
        _libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - best effort only
        pass


# --------------------------------------------------------------------------
# HTTP
# --------------------------------------------------------------------------

class Response:
    """An HTTP response: status, headers (lower-case names), raw body."""

    def __init__(self, status, reason, headers, body):
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body

    def json(self):
        """The body parsed as JSON, or None."""
        try:
            return json.loads(self.body.decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            return None

    @property
    def error(self):
        j = self.json()
        return j.get("error") if isinstance(j, dict) else None

    def __repr__(self):
        return "<Response %s %r>" % (self.status, self.body[:300])


def _response_from(resp):
    body = resp.read()
    headers = {}
    for k, v in resp.getheaders():
        k = k.lower()
        headers[k] = headers[k] + ", " + v if k in headers else v
    return Response(resp.status, resp.reason, headers, body)


# --------------------------------------------------------------------------
# Endpoint record
# --------------------------------------------------------------------------

class Endpoint:
    def __init__(self, id, secret, name, environment, tolerance):
        self.id = id
        self.secret = secret        # the newest secret
        self.secrets = [secret]     # all secrets handed to the binary
        self.name = name
        self.environment = environment
        self.tolerance = tolerance

    @property
    def path(self):
        return "/paddle/webhooks/%s" % self.id

    def __repr__(self):
        return "<Endpoint %s %s>" % (self.id, self.environment)


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


class Harness:
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

    @property
    def commands_log(self):
        return self._p("commands.log")

    @property
    def key_file(self):
        return self._p("master.key")

    @property
    def conninfo(self):
        return ("host=127.0.0.1 port=%d user=postgres dbname=%s connect_timeout=5"
                % (self.pg_port, DB_NAME))

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

    # ---- PostgreSQL ------------------------------------------------------

    def _as_postgres(self, argv):
        if self.is_root:
            return ["runuser", "-u", "postgres", "--"] + argv
        return argv

    def _run(self, argv, input=None, timeout=60, check=True, env=None, log=True):
        try:
            p = subprocess.run(argv, input=input, capture_output=True, timeout=timeout,
                               env=env, text=isinstance(input, str) or input is None)
        except subprocess.TimeoutExpired as exc:
            if log:
                self._log_command(argv, "timeout", str(exc.stdout), str(exc.stderr))
            raise HarnessError("command timed out after %ss: %s" % (timeout, " ".join(argv)))
        if log:
            self._log_command(argv, p.returncode,
                              p.stdout if isinstance(p.stdout, str) else "(bytes)",
                              p.stderr if isinstance(p.stderr, str) else
                              p.stderr.decode("utf-8", "replace"))
        if check and p.returncode != 0:
            err = p.stderr if isinstance(p.stderr, str) else p.stderr.decode("utf-8", "replace")
            raise HarnessError("command failed (rc=%d): %s\n%s" % (p.returncode, " ".join(argv), err))
        return p

    def init_postgres(self):
        os.makedirs(self.pg_dir, exist_ok=True)
        os.makedirs(self._p("pg", "run"), exist_ok=True)
        if self.is_root:
            pw = pwd.getpwnam("postgres")
            for d in (self.pg_dir, self._p("pg", "run")):
                os.chown(d, pw.pw_uid, pw.pw_gid)
        os.chmod(self.pg_dir, 0o700)
        self._run(self._as_postgres([
            os.path.join(self.pg_bin, "initdb"), "-D", self.pg_data,
            "--auth=trust", "-U", "postgres", "-E", "UTF8", "--locale=C", "-N"]),
            timeout=120)
        if self.pg_port is None:
            self.pg_port = free_port()
        settings = [
            "listen_addresses = '127.0.0.1'",
            "port = %d" % self.pg_port,
            "unix_socket_directories = '%s'" % self._p("pg", "run"),
            "max_connections = 100",
            "shared_buffers = 32MB",
            "log_line_prefix = '%m [%p] %q%u@%d '",
            "log_min_messages = warning",
            "timezone = 'UTC'",
        ]
        if self.pg_fast:
            settings += ["fsync = off", "synchronous_commit = off", "full_page_writes = off"]
        conf = os.path.join(self.pg_data, "postgresql.conf")
        # postgres owns the file; root may append, ownership stays.
        with open(conf, "a") as f:
            f.write("\n# paddlehook test harness\n" + "\n".join(settings) + "\n")

    def _pg_ctl(self, *args, timeout=60, check=True):
        return self._run(self._as_postgres(
            [os.path.join(self.pg_bin, "pg_ctl"), "-D", self.pg_data] + list(args)),
            timeout=timeout, check=check)

    def _read_pg_pid(self):
        try:
            with open(os.path.join(self.pg_data, "postmaster.pid")) as f:
                return int(f.readline().strip())
        except (OSError, ValueError):
            return None

    def start_postgres(self):
        """Start the cluster (again) on the same port; wait until it accepts."""
        self._pg_ctl("-l", self.pg_log, "-w", "-t", "60", "start", timeout=90)
        self.pg_pid = self._read_pg_pid()
        wait_until(self.postgres_ready, timeout=30, what="postgres to accept connections")

    def stop_postgres(self, mode="fast"):
        """Stop the cluster; SIGKILL the postmaster by PID if it lingers."""
        if not self.tmpdir or not os.path.isdir(self.pg_data):
            return
        pid = self._read_pg_pid() or self.pg_pid
        if pid is None or not pid_alive(pid):
            self.pg_pid = None
            return
        self._pg_ctl("-m", mode, "-w", "-t", "30", "stop", timeout=45, check=False)
        try:
            wait_until(lambda: not pid_alive(pid), timeout=15, what="postmaster exit")
        except TimeoutError:
            kids = children_of(pid)
            kill_pid(pid, signal.SIGKILL)
            for k in kids:
                kill_pid(k, signal.SIGKILL)
        self.pg_pid = None

    def postgres_running(self):
        pid = self._read_pg_pid()
        return bool(pid and pid_alive(pid))

    def postgres_ready(self):
        p = subprocess.run([os.path.join(self.pg_bin, "pg_isready"), "-q", "-h", "127.0.0.1",
                            "-p", str(self.pg_port), "-U", "postgres", "-t", "2"],
                           capture_output=True)
        return p.returncode == 0

    def create_database(self):
        self.psql("CREATE DATABASE %s" % DB_NAME, db="postgres")

    # ---- SQL -------------------------------------------------------------

    _FS = "\x1f"
    _RS = "\x1e"
    _NULL = "\x01NULL\x01"

    def psql(self, sql, db=DB_NAME, timeout=30):
        """Run SQL through psql; return the raw stdout text."""
        argv = [os.path.join(self.pg_bin, "psql"), "-X", "-A", "-t", "-q",
                "-h", "127.0.0.1", "-p", str(self.pg_port), "-U", "postgres", "-d", db,
                "-v", "ON_ERROR_STOP=1", "-F", self._FS, "-R", self._RS,
                "-P", "null=" + self._NULL, "-f", "-"]
        env = dict(os.environ, PGTZ="UTC", PGCONNECT_TIMEOUT="5")
        p = subprocess.run(argv, input=sql, capture_output=True, text=True,
                           timeout=timeout, env=env)
        if p.returncode != 0:
            raise HarnessError("psql failed (rc=%d): %s\nSQL: %s"
                               % (p.returncode, p.stderr.strip(), sql[:2000]))
        return p.stdout

    def sql(self, sql, db=DB_NAME):
        """Rows of the last statement as tuples of str (None for NULL)."""
        out = self.psql(sql, db=db)
        if out.endswith("\n"):
            out = out[:-1]
        rows = []
        for rec in out.split(self._RS):
            if rec == "":
                continue
            rows.append(tuple(None if v == self._NULL else v for v in rec.split(self._FS)))
        return rows

    def sql_value(self, sql, db=DB_NAME):
        rows = self.sql(sql, db=db)
        return rows[0][0] if rows else None

    def sql_json(self, query, db=DB_NAME):
        """Rows of a SELECT as a list of dicts (via json_agg: types survive)."""
        q = query.strip().rstrip(";")
        v = self.sql_value("SELECT coalesce(json_agg(_harness_row), '[]'::json) FROM (%s) _harness_row"
                           % q, db=db)
        return json.loads(v)

    @staticmethod
    def lit(value):
        """SQL string literal."""
        if value is None:
            return "NULL"
        return "'" + str(value).replace("'", "''") + "'"

    def existing_tables(self, refresh=False):
        """schema.table names that exist in schema paddle."""
        if self._table_cache is None or refresh:
            rows = self.sql("SELECT table_schema || '.' || table_name FROM "
                            "information_schema.tables WHERE table_schema = 'paddle'")
            self._table_cache = {r[0] for r in rows}
        return self._table_cache

    def table_columns(self, table):
        schema, name = table.split(".")
        rows = self.sql("SELECT column_name FROM information_schema.columns WHERE "
                        "table_schema = %s AND table_name = %s ORDER BY ordinal_position"
                        % (self.lit(schema), self.lit(name)))
        return [r[0] for r in rows]

    def digest(self, tables=None):
        """{table: (row count, md5 of all rows)} for the event and state tables
        that exist: equal digests mean nothing changed."""
        if tables is None:
            tables = (EVENT_TABLE,) + STATE_TABLES
        have = self.existing_tables()
        parts = []
        for t in tables:
            if t in have:
                parts.append("SELECT %s, count(*)::text, coalesce(md5(string_agg(x::text, '|' "
                             "ORDER BY x::text)), '') FROM %s x" % (self.lit(t), t))
        if not parts:
            return {}
        return {r[0]: (int(r[1]), r[2]) for r in self.sql(" UNION ALL ".join(parts))}

    def state_row(self, table, entity_id):
        """The state row keyed by Paddle's id as a dict (None if absent), with
        occurred_at also rendered as `occurred_at_text` (RFC 3339, 6 digits)."""
        rows = self.sql_json("SELECT t.*, %s AS occurred_at_text FROM %s t WHERE t.id = %s"
                             % (ts_text("t.occurred_at"), table, self.lit(entity_id)))
        if len(rows) > 1:
            raise AssertionError("%d rows in %s for id %s" % (len(rows), table, entity_id))
        return rows[0] if rows else None

    def event_row(self, event_id):
        """The payment_events row as a dict (None if absent); occurred_at and
        received_at also as `occurred_at_text`/`received_at_text`."""
        rows = self.sql_json("SELECT e.*, %s AS occurred_at_text, %s AS received_at_text "
                             "FROM paddle.payment_events e WHERE e.event_id = %s"
                             % (ts_text("e.occurred_at"), ts_text("e.received_at"),
                                self.lit(event_id)))
        return rows[0] if rows else None

    def event_count(self):
        return int(self.sql_value("SELECT count(*) FROM %s" % EVENT_TABLE))

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

    # ---- serve -----------------------------------------------------------

    def start_serve(self, wait=True):
        if self.serve_proc and self.serve_proc.poll() is None:
            return self.serve_proc
        try:
            os.unlink(self.socket_path)
        except FileNotFoundError:
            pass
        args = [self.binary, "serve", "--listen", "unix:" + self.socket_path,
                "--workers", str(self.workers)]
        if self.max_body is not None:
            args += ["--max-body", str(self.max_body)]
        args += self.serve_args
        if self._serve_log_f is None:
            self._serve_log_f = open(self.serve_log, "ab")
        self._log_command(args, "(started)", "", "")
        self.serve_proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=self._serve_log_f, stderr=self._serve_log_f,
            env=self.env(), cwd=self.tmpdir,
            preexec_fn=_set_pdeathsig if threading.current_thread() is threading.main_thread() else None)
        if wait:
            def ready():
                if self.serve_proc.poll() is not None:
                    raise HarnessError("paddlehook serve exited with status %s"
                                       % self.serve_proc.returncode)
                return os.path.exists(self.socket_path) and \
                    len(self.worker_pids()) >= self.workers
            try:
                wait_until(ready, timeout=20, what="serve socket and %d workers" % self.workers)
            except TimeoutError as exc:
                if self.serve_proc.poll() is not None:
                    raise HarnessError("paddlehook serve exited with status %s"
                                       % self.serve_proc.returncode)
                raise HarnessError(str(exc))
        return self.serve_proc

    def stop_serve(self, timeout=15):
        """SIGTERM (graceful) then SIGKILL serve and any leftover workers."""
        p = self.serve_proc
        if p is None:
            return None
        kids = set(children_of(p.pid))
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                kids |= set(children_of(p.pid))
                p.kill()
                p.wait(5)
        for k in kids:
            if pid_alive(k):
                kill_pid(k, signal.SIGKILL)
        self.serve_proc = None
        return p.returncode

    def serve_pid(self):
        return self.serve_proc.pid if self.serve_proc else None

    def worker_pids(self):
        """The serve supervisor's live children (the workers)."""
        if not self.serve_proc or self.serve_proc.poll() is not None:
            return []
        return children_of(self.serve_proc.pid)

    def wait_workers(self, count=None, exclude=(), timeout=20):
        """Wait until serve has `count` live workers, none of them in exclude."""
        count = self.workers if count is None else count
        exclude = set(exclude)

        def ok():
            pids = self.worker_pids()
            return pids if len(pids) == count and not (set(pids) & exclude) else None
        return wait_until(ok, timeout=timeout, what="%d workers (not %s)" % (count, sorted(exclude)))

    # ---- nginx -----------------------------------------------------------

    def nginx_config(self):
        """Write nginx.conf + upstream + fastcgi_params into tmp/nginx/; return the path."""
        self.make_tmpdir()
        if self.http_port is None:
            self.http_port = free_port()
        nd = self.nginx_dir
        os.makedirs(nd, exist_ok=True)
        # The snippet's relative `include fastcgi_params;` resolves here.
        shutil.copyfile("/etc/nginx/fastcgi_params", os.path.join(nd, "fastcgi_params"))
        # The shipped upstream file with the socket replaced by ours.
        with open(self.upstream_conf) as f:
            upstream = f.read()
        new, n = re.subn(r"server\s+unix:[^\s;]+", "server unix:%s" % self.socket_path, upstream)
        if n != 1 or not re.search(r"upstream\s+paddlehook\s*\{", new):
            new = "upstream paddlehook {\n    server unix:%s;\n}\n" % self.socket_path
        if self.nginx_upstream_keepalive is not None:
            new = re.sub(r"keepalive\s+\d+;", "keepalive %d;" % self.nginx_upstream_keepalive, new)
        with open(os.path.join(nd, "paddlehook-upstream.conf"), "w") as f:
            f.write(new)
        with open(os.path.join(TESTS_DIR, "nginx.conf.in")) as f:
            conf = f.read()
        subst = {
            "USER_DIRECTIVE": "user root root;" if self.is_root else "# (not root: no user directive)",
            "NGINX_DIR": nd,
            "HTTP_PORT": str(self.http_port),
            "SNIPPET": self.snippet,
            "SERVER_DIRECTIVES": self.nginx_server_directives,
            "ACCESS_LOG_OPTIONS": self.nginx_access_log_options,
        }
        for k, v in subst.items():
            conf = conf.replace("@%s@" % k, v)
        left = [m for m in re.findall(r"@[A-Z_]+@", conf) if m != "@NAME@"]
        if left:
            raise HarnessError("unfilled placeholders in nginx.conf.in: %s" % left)
        path = os.path.join(nd, "nginx.conf")
        with open(path, "w") as f:
            f.write(conf)
        return path

    def _nginx_argv(self, conf, *extra):
        return [self.nginx_bin, "-p", self.nginx_dir + "/", "-c", conf,
                "-e", os.path.join(self.nginx_dir, "error.log")] + list(extra)

    def nginx_test_config(self):
        """`nginx -t` on the generated config; returns (ok, output)."""
        conf = self.nginx_config()
        p = subprocess.run(self._nginx_argv(conf, "-t"), capture_output=True, text=True, timeout=30)
        return p.returncode == 0, (p.stdout + p.stderr).strip()

    def start_nginx(self):
        ok, out = self.nginx_test_config()
        if not ok:
            raise HarnessError("nginx -t failed for the generated config:\n%s" % out)
        conf = os.path.join(self.nginx_dir, "nginx.conf")
        self.nginx_proc = subprocess.Popen(
            self._nginx_argv(conf), stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=_set_pdeathsig if threading.current_thread() is threading.main_thread() else None)

        def up():
            if self.nginx_proc.poll() is not None:
                raise HarnessError("nginx exited with status %s" % self.nginx_proc.returncode)
            with socket.create_connection(("127.0.0.1", self.http_port), timeout=1):
                return True
        try:
            wait_until(up, timeout=15, what="nginx to listen on %d" % self.http_port)
        except TimeoutError as exc:
            raise HarnessError(str(exc))
        return self.nginx_proc

    def stop_nginx(self, timeout=10):
        p = self.nginx_proc
        if p is None:
            return None
        kids = set(children_of(p.pid))
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                kids |= set(children_of(p.pid))
                p.kill()
                p.wait(5)
        for k in kids:
            if pid_alive(k):
                kill_pid(k, signal.SIGKILL)
        self.nginx_proc = None
        return p.returncode

    def wait_healthy(self, timeout=20):
        def ok():
            r = self.get("/paddle/healthz", timeout=5)
            return r if r.status == 200 else None
        try:
            return wait_until(ok, timeout=timeout, what="GET /paddle/healthz == 200")
        except TimeoutError as exc:
            raise HarnessError(str(exc))

    # ---- HTTP ------------------------------------------------------------

    def request(self, method, path, body=None, headers=None, timeout=30):
        """One request through nginx with http.client (new connection)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=timeout)
        try:
            h = {}
            if body is not None:
                h["Content-Type"] = "application/json"
            h.update(headers or {})
            conn.request(method, path, body=body, headers=h)
            return _response_from(conn.getresponse())
        finally:
            conn.close()

    def get(self, path, headers=None, timeout=30):
        return self.request("GET", path, headers=headers, timeout=timeout)

    def post(self, path, body, signature=None, headers=None, timeout=30):
        h = dict(headers or {})
        if signature is not None:
            h["Paddle-Signature"] = signature
        if isinstance(body, str):
            body = body.encode()
        return self.request("POST", path, body=body, headers=h, timeout=timeout)

    def post_event(self, endpoint, body, secret=None, ts=None, signature=None, timeout=30):
        """POST body to the endpoint, signed in Python with a fresh ts
        (or with the given signature header)."""
        if isinstance(body, str):
            body = body.encode()
        if isinstance(body, dict):
            body = json.dumps(body, separators=(",", ":")).encode()
        if signature is None:
            signature = py_sign(body, secret or endpoint.secret, ts=ts)
        eid = endpoint.id if isinstance(endpoint, Endpoint) else endpoint
        return self.post("/paddle/webhooks/%s" % eid, body, signature=signature, timeout=timeout)

    def raw_request(self, data, shutdown_write=False, timeout=15, method="POST"):
        """Send raw bytes on a fresh TCP connection; parse the HTTP response.

        Returns a Response, or None when the server closed without answering.
        """
        s = socket.create_connection(("127.0.0.1", self.http_port), timeout=timeout)
        try:
            try:
                s.sendall(data)
            except (BrokenPipeError, ConnectionResetError):
                pass
            if shutdown_write:
                try:
                    s.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
            resp = http.client.HTTPResponse(s, method=method)
            try:
                resp.begin()
            except (http.client.RemoteDisconnected, ConnectionResetError,
                    http.client.BadStatusLine):
                return None
            return _response_from(resp)
        finally:
            s.close()


def ts_text(column):
    """SQL rendering a timestamp column as RFC 3339 UTC with 6 fractional digits."""
    return ("to_char((%s) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')" % column)


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
