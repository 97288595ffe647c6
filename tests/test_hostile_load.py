"""Keeping the worker pool free (docs/security.md, "Denial of service"): slow senders, idle connections, a
stalled FastCGI peer and a flood of forged requests cannot occupy the workers while Paddle's deliveries keep
being stored, and forged requests never reach PostgreSQL (counted in its statement log)."""

import collections
import json
import os
import socket
import threading
import time

import harness
import hostile
from harness import make_event, new_secret, py_sign, sample_customer
from hostile import WORKERS, HostileHarness, event

H = HostileHarness()
setUpModule, tearDownModule = H.start, H.stop


class HostileCase(hostile.HostileCase):
    harness = H


class Deliveries:
    """Posts good events from a thread until stopped; records every answer."""

    def __init__(self, ep, interval=0.1):
        self.ep = ep
        self.interval = interval
        self.sent = []          # (event_id, Response or exception, seconds)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            data = sample_customer()
            env = make_event("customer.created", data, as_dict=True)
            body = json.dumps(env, separators=(",", ":")).encode()
            t = time.monotonic()
            try:
                r = H.post(self.ep.path, body, signature=py_sign(body, self.ep.secret), timeout=10)
            except Exception as exc:  # noqa: BLE001 - reported by check()
                r = exc
            self.sent.append((env["event_id"], r, time.monotonic() - t))
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(30)

    def check(self, test, at_least, max_seconds=4.0):
        test.assertGreaterEqual(len(self.sent), at_least, "too few deliveries got through")
        for eid, r, secs in self.sent:
            test.assertIsInstance(r, harness.Response, "delivery %s: %r" % (eid, r))
            test.assertStored(r, eid)
            test.assertLess(secs, max_seconds, "delivery %s took %.1f s" % (eid, secs))
        ids = [eid for eid, _, _ in self.sent]
        n = int(H.sql_value("SELECT count(*) FROM paddle.payment_events WHERE event_id IN (%s)"
                            % ",".join(H.lit(i) for i in ids)))
        test.assertEqual(n, len(ids), "not every acknowledged delivery is stored")


def pg_statements_since(offset, needle):
    with open(H.pg_log, "rb") as f:
        f.seek(offset)
        return f.read().decode("utf-8", "replace").count(needle)


class HostileLoad(HostileCase):

    def test_slow_loris_senders_are_cut_off_while_deliveries_continue(self):
        slow = []
        for i in range(3 * WORKERS):
            s = socket.create_connection(("127.0.0.1", H.http_port), timeout=30)
            s.sendall(b"POST %s HTTP/1.1\r\nHost: localhost\r\nPaddle-Signature: ts=1;h1=00\r\n"
                      b"Content-Type: application/json\r\nContent-Length: 5000\r\n\r\n{\"event_id\""
                      % self.ep.path.encode())
            slow.append(s)
        started = time.monotonic()
        closed_after = [None] * len(slow)
        with Deliveries(self.ep) as d:
            # nginx's client_body_timeout (10 s in the shipped snippet) ends each of them.
            for i, s in enumerate(slow):
                s.settimeout(max(0.1, started + 16 - time.monotonic()))
                try:
                    data = s.recv(4096)
                    closed_after[i] = (time.monotonic() - started, data[:40])
                except socket.timeout:
                    closed_after[i] = None
                except ConnectionResetError:
                    closed_after[i] = (time.monotonic() - started, b"reset")
        for s in slow:
            s.close()
        d.check(self, at_least=20)
        for i, c in enumerate(closed_after):
            self.assertIsNotNone(c, "slow sender %d was still connected after 16 s" % i)
            self.assertGreater(c[0], 8, "slow sender %d cut off too early: %r" % (i, c))
            # nginx answers nothing on its body timeout (it logs a 408 and closes).
            self.assertIn(c[1], (b"", b"reset"), "slow sender %d got an answer: %r" % (i, c))
        self.assertEqual(len(H.worker_pids()), WORKERS)

    def test_200_idle_connections_do_not_block_deliveries(self):
        idle = []
        try:
            for i in range(200):
                s = socket.create_connection(("127.0.0.1", H.http_port), timeout=10)
                if i % 2:  # half of them start a request and never finish its headers
                    s.sendall(b"POST %s HTTP/1.1\r\nHost: localhost\r\n" % self.ep.path.encode())
                idle.append(s)
            with Deliveries(self.ep, interval=0.05) as d:
                time.sleep(3)
            d.check(self, at_least=20, max_seconds=2.0)
            # Every idle connection is still open: nothing was refused to make room.
            alive = 0
            for s in idle:
                s.setblocking(False)
                try:
                    alive += s.recv(1) != b""
                except BlockingIOError:
                    alive += 1
                except OSError:
                    pass
            self.assertEqual(alive, 200)
        finally:
            for s in idle:
                s.close()
        self.assertEqual(len(H.worker_pids()), WORKERS)

    def test_stalled_fastcgi_connection_does_not_pin_a_worker(self):
        """A peer on the worker socket that starts a FastCGI record and stops
        must not hold a worker for good.  libfcgi drops unix-socket
        connections that send nothing for 2 s, but once a byte has arrived
        it blocks in read(); the worker's per-request deadline (5 s) cuts
        such a connection off."""
        stalled = []
        try:
            for _ in range(WORKERS):
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect(H.socket_path)
                s.sendall(b"\x01\x01\x00\x01\x00\x08\x00\x00")  # a BEGIN_REQUEST header, no body
                stalled.append(s)
            time.sleep(3)  # past libfcgi's 2 s grace for silent connections
            t = time.monotonic()
            try:
                r = H.get("/paddle/healthz", timeout=12)
            except socket.timeout:
                r = None
            self.assertIsNotNone(r, "every worker is held by a stalled FastCGI connection (%.0f s)"
                                 % (time.monotonic() - t))
            self.assertEqual(r.status, 200, r)
        finally:
            for s in stalled:
                s.close()
            H.wait_healthy(timeout=40)

    def test_flood_of_bad_signatures_never_reaches_the_database(self):
        H.psql("ALTER SYSTEM SET log_statement = 'all'", db="postgres")
        try:
            H.reload_conf("log_statement", "all")  # the workers' sessions log from their next statement on
            offset = os.path.getsize(H.pg_log)
            forged = collections.Counter()
            lock = threading.Lock()
            bodies = [event() for _ in range(8)]

            # Each sender sends at least n, and goes on until the good deliveries beside them number 10: on a fast
            # host 2,000 forged requests end before that (bounded by the deadline).
            deadline = time.monotonic() + 60

            def flood(n, seed):
                other = new_secret()
                i = 0
                while i < n or (len(d.sent) < 10 and time.monotonic() < deadline):
                    body = bodies[(seed + i) % len(bodies)]
                    kind = i % 4
                    if kind == 0:
                        sig = py_sign(body, other)                                  # wrong secret
                    elif kind == 1:
                        sig = py_sign(body, self.ep.secret, ts=int(time.time()) - 3600)  # stale
                    elif kind == 2:
                        sig = "ts=%d;h1=%s" % (time.time(), os.urandom(32).hex())   # guessed
                    else:
                        sig = py_sign(body + b" ", self.ep.secret)                  # other body
                    try:
                        r = H.post(self.ep.path, body, signature=sig, timeout=10)
                        key = (r.status, r.error)
                    except Exception as exc:  # noqa: BLE001
                        key = ("exception", type(exc).__name__)
                    with lock:
                        forged[key] += 1
                    i += 1

            threads = [threading.Thread(target=flood, args=(250, k)) for k in range(8)]
            with Deliveries(self.ep, interval=0.05) as d:
                for t in threads:
                    t.start()
                for t in threads:
                    t.join(120)
            d.check(self, at_least=10)
            self.assertGreaterEqual(sum(forged.values()), 2000)
            self.assertEqual(set(forged), {(401, "invalid_signature"), (401, "timestamp_out_of_range")},
                             forged)
            good = len(d.sent)
            time.sleep(0.3)
            self.assertEqual(pg_statements_since(offset, "paddle.ingest_event("), good,
                             "ingest_event ran for something else than the %d good deliveries" % good)
            self.assertEqual(H.event_count(), self.before[harness.EVENT_TABLE][0] + good)
        finally:
            H.psql("ALTER SYSTEM RESET log_statement; SELECT pg_reload_conf()", db="postgres")
        self.assertEqual(len(H.worker_pids()), WORKERS)


class Logs(HostileCase):
    """Runs last in the module (classes run in name order)."""

    def test_no_secret_or_malformed_line_reaches_the_logs(self):
        self.assertLogsClean()
