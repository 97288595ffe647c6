"""Helpers of the integration harness that need no running stack: where the
repository is, the tables the contract names, bounded waits, free ports, /proc,
and the Response and Endpoint records the harness hands to tests."""

import ctypes
import json
import os
import random
import re
import signal
import socket
import subprocess
import threading
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS_DIR = os.path.join(REPO_ROOT, "tests")

DEFAULT_PG_BIN = "/usr/lib/postgresql/15/bin"
DB_NAME = "paddlehook"
# A database no command can reach (nothing listens on port 1): a command that gets as far as connecting fails.
UNREACHABLE_DB = "host=127.0.0.1 port=1 user=postgres dbname=nope connect_timeout=2"

# Tables the contract names; the digest helpers skip those not created yet.
EVENT_TABLE = "paddle.payment_events"
# The workers' database sessions (only they use this application_name).
WORKER_SESSIONS = ("SELECT pid FROM pg_stat_activity WHERE application_name = 'paddlehook' "
                   "AND backend_type = 'client backend'")
STATE_TABLES = (
    "paddle.customers",
    "paddle.subscriptions",
    "paddle.subscription_items",
    "paddle.transactions",
    "paddle.transaction_items",
    "paddle.adjustments",
    "paddle.adjustment_items",
    "paddle.addresses",
    "paddle.businesses",
    "paddle.products",
    "paddle.prices",
    "paddle.discounts",
)
# Events waiting for the application's consumers (written with the event).
QUEUE_TABLE = "paddle.consumer_queue"


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


# Listening ports are picked below the kernel's ephemeral range: a port there can be taken as the source port of
# any outgoing connection (a worker's to PostgreSQL, a test's to nginx, another suite's running beside this one)
# while its server is down for a restart, and the server could not listen again.
LISTEN_PORT_LOW = 10000
LISTEN_PORT_TRIES = 200


def _ephemeral_ports():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(v) for v in f.read().split())
        return low, high
    except (OSError, ValueError):
        return 32768, 60999


def _bindable(port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago, outside the ephemeral range when there is room."""
    low, high = _ephemeral_ports()
    candidates = [r for r in ((LISTEN_PORT_LOW, low - 1), (high + 1, 65535)) if r[1] - r[0] >= 1000]
    rng = random.SystemRandom()
    for _ in range(LISTEN_PORT_TRIES if candidates else 0):
        first, last = rng.choice(candidates)
        port = rng.randint(first, last)
        if _bindable(port):
            return port
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


def metric_values(text, name):
    """{labels-string: value} for one metric family of a /paddle/metrics page."""
    out = {}
    for line in text.splitlines():
        m = re.match(r"^%s(\{[^}]*\})? (\S+)$" % re.escape(name), line)
        if m:
            out[m.group(1) or ""] = float(m.group(2))
    return out


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


def ts_text(column):
    """SQL rendering a timestamp column as RFC 3339 UTC with 6 fractional digits."""
    return ("to_char((%s) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')" % column)


def stop_with_children(proc, timeout):
    """SIGTERM proc (a Popen, or None), SIGKILL it after timeout seconds, then
    SIGKILL any child it left behind; its exit status, None without one."""
    if proc is None:
        return None
    kids = set(children_of(proc.pid))
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            kids |= set(children_of(proc.pid))
            proc.kill()
            proc.wait(5)
    for k in kids:
        if pid_alive(k):
            kill_pid(k, signal.SIGKILL)
    return proc.returncode


class ClientCutProxy:
    """A TCP proxy on 127.0.0.1 to a local port. cut() closes the client's side of every connection open then
    and keeps the server's side open, as a network that fails between client and proxy would: the client sees
    its connection lost, the server sees nothing. Later connections are proxied as before."""

    def __init__(self, target_port):
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.open = []        # (client, server) still proxied
        self.cut_servers = []  # server sides kept open after a cut, closed by close()
        self.held = []         # clients accepted and never answered (black_hole)
        self.black_hole = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.black_hole:   # a server that takes connections and never answers
                with self.lock:
                    self.held.append(client)
                continue
            server = socket.create_connection(("127.0.0.1", self.target_port))
            with self.lock:
                self.open.append((client, server))
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass

    def cut(self, black_hole=False):
        """black_hole: connections made afterwards are taken and never answered."""
        self.black_hole = black_hole
        with self.lock:
            pairs, self.open = self.open, []
            self.cut_servers += [server for _, server in pairs]
        for client, _ in pairs:
            client.shutdown(socket.SHUT_RDWR)
            client.close()

    def close(self):
        self.listener.close()
        with self.lock:
            socks = [s for pair in self.open for s in pair] + self.cut_servers + self.held
            self.open, self.cut_servers, self.held = [], [], []
        for s in socks:
            s.close()
