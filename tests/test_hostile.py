"""Hostile input and abuse, through nginx, against one stack (docs/security.md).

Each request test asserts the status, the JSON `error` code and that
payment_events and the state tables are unchanged (H.digest()), or for inputs
that must be stored, exactly what was stored.  The load tests check that
attackers cannot occupy the worker pool (slow senders, idle connections, a
flood of forged requests) while Paddle's deliveries keep being stored, and
that forged requests never reach PostgreSQL (counted in its statement log).
LeastPrivilege runs the worker as a role holding only the GRANTs written in
docs/security.md.  Logs checks that no secret or payload reaches a log.

The serve log runs at --log-level debug so the log checks cover everything
the worker can write.  Errors that test_errors.py already covers are not
repeated here.

`python3 tests/test_hostile.py --valgrind-load N` is the driver of
`make valgrind`: a one-worker stack (PADDLEHOOK_BIN wraps serve in memcheck)
and N mixed good and bad requests.
"""

import base64
import collections
import datetime
import glob
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import unittest

if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402
from harness import (Harness, HarnessTestCase, hmac_h1, make_event, new_secret,  # noqa: E402
                     paddle_id, py_sign, rfc3339, sample_adjustment, sample_customer, sample_subscription,
                     sample_transaction)

WORKERS = 2
SECURITY_DOC = os.path.join(harness.REPO_ROOT, "docs", "security.md")
WORKER_ROLE = "paddlehook_worker"


class HostileHarness(Harness):
    """A Harness whose serve can connect as another database role."""

    serve_conninfo = None

    def env(self):
        e = super().env()
        if self.serve_conninfo:
            e["PADDLEHOOK_DB"] = self.serve_conninfo
        return e


H = HostileHarness(workers=WORKERS, serve_args=["--log-level", "debug"])
SECRETS = []     # every endpoint secret created here, for the log checks


def setUpModule():
    H.start()


def tearDownModule():
    H.stop()


def add_endpoint(**kw):
    ep = H.add_endpoint(**kw)
    SECRETS.append(ep.secret)
    return ep


def at(t):
    """RFC 3339 of unix time t."""
    return rfc3339(datetime.datetime.fromtimestamp(t, datetime.timezone.utc))


def event(**kw):
    return make_event("subscription.created", sample_subscription(), **kw)


class HostileCase(HarnessTestCase):
    harness = H

    @classmethod
    def setUpClass(cls):
        cls.ep = add_endpoint()

    def setUp(self):
        self.before = H.digest()

    def assertNothingChanged(self, what=""):
        self.assertEqual(H.digest(), self.before, "payment_events/state tables changed %s" % what)

    def expect(self, r, status, code, what=""):
        self.assertErrorResponse(r, status, code, what)
        self.assertNothingChanged(what)

    def post_signed(self, body, ep=None):
        ep = ep or self.ep
        return H.post(ep.path, body, signature=py_sign(body, ep.secret))

    def raw_post(self, path, body, header_lines, **kw):
        """POST with exact header bytes (http.client refuses some values)."""
        head = (b"POST " + path.encode() + b" HTTP/1.1\r\nHost: localhost\r\n"
                b"Content-Type: application/json\r\n" + b"".join(l + b"\r\n" for l in header_lines) +
                b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body))
        return H.raw_request(head + body, **kw)


# --------------------------------------------------------------------------
# The Paddle-Signature header
# --------------------------------------------------------------------------

class HostileSignature(HostileCase):

    def test_100_h1_values_are_401_even_with_the_valid_one_among_them(self):
        body = event()
        ts = int(time.time())
        good = "h1=" + hmac_h1(self.ep.secret, ts, body)
        junk = ["h1=" + os.urandom(32).hex() for _ in range(99)]
        for header in (";".join(["ts=%d" % ts, good] + junk), ";".join(["ts=%d" % ts] + junk + [good])):
            with self.subTest(valid_at=header.index(good)):
                self.assertLess(len(header), 8000)
                self.expect(H.post(self.ep.path, body, signature=header), 401, "invalid_signature")

    def test_8kb_signature_header_is_401_or_nginx_400_never_stored(self):
        body = event()
        ts = int(time.time())
        valid = "ts=%d;h1=%s" % (ts, hmac_h1(self.ep.secret, ts, body))
        # Just under nginx's 8 KiB header buffer: reaches the worker, whose limit is 2 KiB.
        header = valid + ";x=" + "a" * (8000 - len(valid))
        self.expect(H.post(self.ep.path, body, signature=header), 401, "invalid_signature", "7.9 KB")
        # Over it: nginx answers 400 itself (before any location, so not as JSON).
        header = valid + ";x=" + "a" * (8192 - len(valid))
        r = H.post(self.ep.path, body, signature=header)
        self.assertEqual(r.status, 400, r)
        self.assertNothingChanged("8 KB header")

    def test_ts_of_20_digits_or_negative_is_401_invalid_signature(self):
        body = event()
        now = int(time.time())
        for ts in ("9" * 20, "18446744073709551617", "-%d" % now, "+%d" % now, "%d.5" % now,
                   "0%d" % now, "%de0" % now, " %d" % now):
            with self.subTest(ts=ts):
                # h1 is a correct HMAC over "<ts as sent>:<body>": only the ts format is wrong.
                header = "ts=%s;h1=%s" % (ts, hmac_h1(self.ep.secret, ts, body))
                self.expect(H.post(self.ep.path, body, signature=header), 401, "invalid_signature", ts)

    def test_h1_that_is_almost_hex_is_401_invalid_signature(self):
        body = event()
        ts = int(time.time())
        mac = hmac_h1(self.ep.secret, ts, body)
        variants = {
            "last char not hex": mac[:-1] + "g",
            "0x prefix": "0x" + mac,
            "colon separated": ":".join(mac[i:i + 2] for i in range(0, 64, 2)),
            "space inside": mac[:32] + " " + mac[32:],
            "one digit short": mac[:-1],
            "one digit long": mac + "0",
            "base64 of the mac": base64.b64encode(bytes.fromhex(mac)).decode(),
        }
        for name, h1 in variants.items():
            with self.subTest(variant=name):
                header = "ts=%d;h1=%s" % (ts, h1)
                self.expect(H.post(self.ep.path, body, signature=header), 401, "invalid_signature", name)
        # Non-ASCII look-alike digits (fullwidth) as raw header bytes.
        fullwidth = "".join(chr(0xFF10 + int(c)) if c.isdigit() else c for c in mac)
        r = self.raw_post(self.ep.path, body,
                          [b"Paddle-Signature: ts=%d;h1=" % ts + fullwidth.encode("utf-8")])
        self.expect(r, 401, "invalid_signature", "fullwidth digits")

    def test_valid_signature_of_another_body_is_401_invalid_signature(self):
        signed = event()
        sent = event()
        self.expect(H.post(self.ep.path, sent, signature=py_sign(signed, self.ep.secret)),
                    401, "invalid_signature")
        # The right h1 moved to another ts.
        ts = int(time.time())
        header = "ts=%d;h1=%s" % (ts - 1, hmac_h1(self.ep.secret, ts, sent))
        self.expect(H.post(self.ep.path, sent, signature=header), 401, "invalid_signature", "ts moved")

    def test_replayed_request_after_the_tolerance_is_401_timestamp_out_of_range(self):
        ep = add_endpoint(tolerance=2)
        body = event()
        ts = int(time.time())
        sig = py_sign(body, ep.secret, ts=ts)
        self.assertStored(H.post(ep.path, body, signature=sig))
        self.assertDuplicate(H.post(ep.path, body, signature=sig), "replay inside the tolerance")
        self.before = H.digest()
        while int(time.time()) <= ts + 2:
            time.sleep(0.1)
        self.expect(H.post(ep.path, body, signature=sig), 401, "timestamp_out_of_range", "late replay")
        other = event()
        self.expect(H.post(ep.path, other, signature=py_sign(other, ep.secret, ts=ts)),
                    401, "timestamp_out_of_range", "new body, old ts")


# --------------------------------------------------------------------------
# Bodies: encodings, structure, sizes, values
# --------------------------------------------------------------------------

class HostileBody(HostileCase):

    def test_raw_nul_bytes_are_400_malformed_json(self):
        good = event()
        for name, body in (("inside a string", good.replace(b'"active"', b'"act\x00ive"', 1)),
                           ("after the object", good + b"\x00"),
                           ("before the object", b"\x00" + good),
                           ("between tokens", good.replace(b'":', b'"\x00:', 1))):
            with self.subTest(where=name):
                self.assertIn(b"\x00", body)
                self.expect(self.post_signed(body), 400, "malformed_json", name)

    def test_utf16_body_is_400_malformed_json(self):
        text = event().decode()
        for enc in ("utf-16", "utf-16-le", "utf-16-be", "utf-32"):
            with self.subTest(encoding=enc):
                self.expect(self.post_signed(text.encode(enc)), 400, "malformed_json", enc)

    def test_utf8_bom_is_400_malformed_json(self):
        self.expect(self.post_signed(b"\xef\xbb\xbf" + event()), 400, "malformed_json")

    def test_10000_deep_nesting_is_400_nesting_too_deep(self):
        for name, deep in (("arrays", "[" * 10000 + "]" * 10000),
                           ("objects", '{"a":' * 10000 + "1" + "}" * 10000),
                           ("unclosed", "[" * 10000)):
            with self.subTest(shape=name):
                body = event().replace(b'"data":{', b'"data":{"deep":' + deep.encode() + b',', 1)
                self.expect(self.post_signed(body), 400, "nesting_too_deep", name)

    def test_duplicate_envelope_keys_are_400_invalid_field(self):
        good = event()
        eid = json.loads(good)["event_id"]
        cases = {
            "event_id twice, same value": good.replace(b"{", b'{"event_id":"%s",' % eid.encode(), 1),
            "event_id twice, other value": good[:-1] + b',"event_id":"%s"}' % paddle_id("evt").encode(),
            "event_type twice": good[:-1] + b',"event_type":"customer.created"}',
            "data twice": good[:-1] + b',"data":{"id":"%s"}}' % paddle_id("ctm").encode(),
            "escaped key": good[:-1] + b',"event\\u005fid":"%s"}' % paddle_id("evt").encode(),
        }
        for name, body in cases.items():
            with self.subTest(case=name):
                json.loads(body)  # valid JSON; the duplicate is the only fault
                self.expect(self.post_signed(body), 400, "invalid_field", name)

    def test_huge_numbers_in_data_are_stored_exactly(self):
        big = "123456789012345678901234567890123456789012345678901234567890"
        data = sample_subscription()
        env = make_event("subscription.created", data, as_dict=True)
        body = json.dumps(env, separators=(",", ":")).encode()
        body = body.replace(b'"data":{', b'"data":{"big":%s,"exp":1e400,"neg":-%s.%s,"tiny":1e-400,'
                            % (big.encode(), big.encode(), big.encode()), 1)
        self.assertStored(self.post_signed(body))
        row = H.sql_json("SELECT payload->'data'->>'big' AS big, payload->'data'->>'exp' AS exp, "
                         "payload->'data'->>'neg' AS neg, payload->'data'->>'tiny' AS tiny "
                         "FROM paddle.payment_events WHERE event_id = %s" % H.lit(env["event_id"]))[0]
        self.assertEqual(row["big"], big)
        self.assertEqual(row["neg"], "-%s.%s" % (big, big))
        self.assertEqual(row["exp"].replace("0", ""), "1")
        self.assertEqual(len(row["exp"]), 401)
        self.assertEqual(row["tiny"].rstrip("0"), "0." + "0" * 399 + "1")
        sub = H.state_row("paddle.subscriptions", data["id"])
        self.assertIsNotNone(sub, "the subscription was not projected")

    def test_number_beyond_postgresql_numeric_is_400_unsupported_json(self):
        body = event().replace(b'"data":{', b'"data":{"n":1e1000000,', 1)
        self.expect(self.post_signed(body), 400, "unsupported_json")

    def test_900kb_string_value_is_stored(self):
        blob = "x" * (900 * 1024)
        data = sample_customer()
        data["custom_data"] = {"blob": blob}
        env = make_event("customer.created", data, as_dict=True)
        body = json.dumps(env, separators=(",", ":")).encode()
        self.assertLess(len(body), 1024 * 1024)
        self.assertStored(self.post_signed(body))
        n = H.sql_value("SELECT length(payload->'data'->'custom_data'->>'blob') FROM paddle.payment_events "
                        "WHERE event_id = %s" % H.lit(env["event_id"]))
        self.assertEqual(int(n), len(blob))
        n = H.sql_value("SELECT length(custom_data->>'blob') FROM paddle.customers WHERE id = %s"
                        % H.lit(data["id"]))
        self.assertEqual(int(n), len(blob))

    def test_sql_metacharacters_in_envelope_ids_are_400_invalid_field(self):
        injections = ["evt_'; DROP TABLE paddle.payment_events; --", "evt_01\" OR \"1\"=\"1",
                      "evt_01); DELETE FROM paddle.customers; --", "evt_$1", "evt_01\\'",
                      "evt_01 UNION SELECT sealed FROM paddle.endpoint_secrets"]
        for value in injections:
            for field in ("event_id", "notification_id", "event_type"):
                with self.subTest(field=field, value=value):
                    env = make_event("subscription.created", sample_subscription(), as_dict=True)
                    env[field] = value
                    self.expect(self.post_signed(json.dumps(env).encode()), 400, "invalid_field",
                                "%s=%s" % (field, value))

    def test_sql_metacharacters_in_data_are_stored_verbatim(self):
        name = "Robert'); DROP TABLE paddle.customers; -- \\ $1 $$ \" ; '' E'\\x00'"
        data = sample_customer(name=name)
        data["email"] = "o'hara+\"quoted\"@example.com"
        self.assertStored(self.post_signed(make_event("customer.created", data)))
        row = H.state_row("paddle.customers", data["id"])
        self.assertEqual(row["name"], name)
        self.assertEqual(row["email"], data["email"])
        self.assertGreater(H.event_count(), 0)  # the tables are all still there

    def test_nul_escape_in_data_is_400_unsupported_json(self):
        for where, data in (("string", {"id": paddle_id("sub"), "name": "a\u0000b"}),
                            ("key", {"id": paddle_id("sub"), "a\u0000b": 1})):
            with self.subTest(where=where):
                env = make_event("subscription.created", data, as_dict=True)
                body = json.dumps(env).encode()
                self.assertIn(b"\\u0000", body)
                self.expect(self.post_signed(body), 400, "unsupported_json", where)
                self.assertIsNone(H.event_row(env["event_id"]))

    def test_chunked_body_is_verified_on_its_decoded_bytes(self):
        body = event()
        sig = py_sign(body, self.ep.secret)
        chunks = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 100]), body[i:i + 100])
                          for i in range(0, len(body), 100)) + b"0\r\n\r\n"
        head = (b"POST %s HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                b"Paddle-Signature: %s\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                % (self.ep.path.encode(), sig.encode()))
        self.assertStored(H.raw_request(head + chunks))
        self.before = H.digest()
        other = event()
        chunks = b"%x\r\n%s\r\n0\r\n\r\n" % (len(other), other)
        self.expect(H.raw_request(head + chunks), 401, "invalid_signature", "other body, chunked")

    def test_over_long_paths_and_ids_are_404(self):
        body = event()
        sig = py_sign(body, self.ep.secret)
        for path, code in (("/paddle/webhooks/" + "a" * 65, "unknown_endpoint"),
                           ("/paddle/webhooks/" + "a" * 4000, "not_found")):
            with self.subTest(path=path[:60]):
                self.expect(H.post(path, body, signature=sig), 404, code, path[:60])
        # An encoded NUL never reaches the worker: nginx refuses the request line.
        r = H.post(self.ep.path + "%00", body, signature=sig)
        self.assertEqual(r.status, 400, r)
        self.assertNothingChanged("%00")

    def test_sandbox_snapshot_never_changes_live_state(self):
        live = add_endpoint(environment="live")
        sandbox = add_endpoint(environment="sandbox")
        t0 = time.time()
        cust = sample_customer(email="live@example.com")
        self.assertStored(self.post_signed(make_event(
            "customer.created", cust, occurred_at=at(t0 - 60)), ep=live))
        forged = dict(cust, email="attacker@example.com", status="archived")
        self.assertStored(self.post_signed(make_event(
            "customer.updated", forged, occurred_at=at(t0)), ep=sandbox))
        row = H.state_row("paddle.customers", cust["id"])
        self.assertEqual((row["environment"], row["email"], row["status"]),
                         ("live", "live@example.com", "active"))


    @staticmethod
    def one_id_two_environments(**decoy_kw):
        """A live and a sandbox endpoint, a live customer and a sandbox decoy
        event about it (later, other email) under one event id."""
        live = add_endpoint(environment="live")
        sandbox = add_endpoint(environment="sandbox")
        eid = paddle_id("evt")
        cust = sample_customer(email="live@example.com")
        decoy = make_event("customer.updated", dict(cust, email="decoy@example.com"), event_id=eid,
                           occurred_at=at(time.time() + 3600), **decoy_kw)
        return live, sandbox, eid, cust, decoy

    def test_live_delivery_replaces_a_sandbox_event_with_the_same_id(self):
        """Whoever holds a sandbox secret and learns the id of a live event
        before it is stored (a delivery Paddle is still retrying) can send it
        first through a sandbox endpoint; the live delivery must still be
        stored and projected, not taken for a duplicate."""
        live, sandbox, eid, cust, decoy = self.one_id_two_environments()
        self.assertStored(self.post_signed(decoy, ep=sandbox))
        genuine = make_event("customer.created", cust, event_id=eid)
        log_at = os.path.getsize(H.serve_log)
        self.assertStored(self.post_signed(genuine, ep=live), "the live delivery after the sandbox decoy")
        # Stored for Paddle; a warning for the operator, who has a sandbox secret to look into.
        harness.wait_until(lambda: "event_id=%s" % eid in H.serve_log_since(log_at), timeout=10,
                           what="the delivery's log line")
        line = next(l for l in H.serve_log_since(log_at).splitlines() if "event_id=%s" % eid in l)
        self.assertIn("level=warn", line)
        self.assertIn("outcome=replaced_sandbox", line)
        self.assertIn('endpoint="%s",event_type="customer.created",outcome="replaced_sandbox"' % live.id,
                      H.get("/paddle/metrics").body.decode())
        row = H.event_row(eid)
        self.assertEqual((row["environment"], row["endpoint_id"], row["event_type"], row["payload"]),
                         ("live", live.id, "customer.created", json.loads(genuine)))
        self.assertIsNone(row["projection_error"])
        state = H.state_row("paddle.customers", cust["id"])
        self.assertEqual((state["environment"], state["email"], state["event_id"]), ("live", cust["email"], eid))
        # Once live, the id is taken for both environments.
        self.before = H.digest()
        self.assertDuplicate(self.post_signed(decoy, ep=sandbox), "the sandbox decoy again")
        self.assertDuplicate(self.post_signed(genuine, ep=live), "the live delivery again")
        self.assertNothingChanged("by the redeliveries")

    def test_what_a_replaced_sandbox_event_projected_is_removed(self):
        """The report views take an entity's environment from the event its
        row holds: a sandbox subscription left under an event id that is now
        live would count as a live entitlement and live revenue."""
        live, sandbox, eid, cust, _ = self.one_id_two_environments()
        forged = sample_subscription()
        self.assertStored(self.post_signed(make_event("subscription.created", forged, event_id=eid), ep=sandbox))
        self.assertEqual(int(H.sql_value("SELECT count(*) FROM paddle.subscription_items WHERE subscription_id = %s"
                                         % H.lit(forged["id"]))), 2)
        self.assertStored(self.post_signed(make_event("customer.created", cust, event_id=eid), ep=live))
        self.assertIsNone(H.state_row("paddle.subscriptions", forged["id"]))
        self.assertEqual(H.sql("SELECT price_id FROM paddle.subscription_items WHERE subscription_id = %s"
                               % H.lit(forged["id"])), [])
        self.assertEqual(H.sql("SELECT environment FROM paddle.entitlements WHERE subscription_id = %s"
                               % H.lit(forged["id"])), [])
        self.assertEqual(H.state_row("paddle.customers", cust["id"])["environment"], "live")

    def test_replaced_sandbox_transactions_and_adjustments_go_with_their_items(self):
        for event_type, data, table, id_column in (
                ("transaction.completed", sample_transaction(), "transactions", "transaction_id"),
                ("adjustment.created", sample_adjustment(), "adjustments", "adjustment_id")):
            with self.subTest(table=table):
                live, sandbox, eid, cust, _ = self.one_id_two_environments()
                self.assertStored(self.post_signed(make_event(event_type, data, event_id=eid), ep=sandbox))
                items = "SELECT count(*) FROM paddle.%s_items WHERE %s = %s" % (table[:-1], id_column,
                                                                             H.lit(data["id"]))
                self.assertGreater(int(H.sql_value(items)), 0)
                self.assertStored(self.post_signed(make_event("customer.created", cust, event_id=eid), ep=live))
                self.assertIsNone(H.state_row("paddle." + table, data["id"]))
                self.assertEqual(H.sql_value(items), "0")

    def test_a_sandbox_row_holding_a_later_sandbox_event_stays(self):
        live, sandbox, eid, cust, _ = self.one_id_two_environments()
        sub = sample_subscription()
        t0 = time.time()
        self.assertStored(self.post_signed(make_event("subscription.created", sub, event_id=eid,
                                                      occurred_at=at(t0 - 60)), ep=sandbox))
        later = paddle_id("evt")
        self.assertStored(self.post_signed(make_event("subscription.updated", dict(sub, status="past_due"),
                                                      event_id=later, occurred_at=at(t0)), ep=sandbox))
        self.assertStored(self.post_signed(make_event("customer.created", cust, event_id=eid), ep=live))
        row = H.state_row("paddle.subscriptions", sub["id"])
        self.assertEqual((row["environment"], row["event_id"], row["status"]), ("sandbox", later, "past_due"))

    def test_sandbox_delivery_of_a_live_event_id_is_a_duplicate(self):
        live, sandbox, eid, cust, decoy = self.one_id_two_environments()
        self.assertStored(self.post_signed(make_event("customer.created", cust, event_id=eid), ep=live))
        self.before = H.digest()
        self.assertDuplicate(self.post_signed(decoy, ep=sandbox))
        self.assertNothingChanged("by a sandbox delivery of a live id")

    def test_live_deliveries_wait_for_a_sandbox_insert_of_the_id_in_flight_and_one_replaces_it(self):
        """Two deliveries of the live event (Paddle retries, several destinations) arrive while the
        sandbox insert is uncommitted: one replaces it, the other is a duplicate."""
        live, sandbox, eid, cust, decoy = self.one_id_two_environments(as_dict=True)
        held = threading.Thread(target=H.sql, args=(
            "BEGIN; %s; SELECT pg_sleep(2); COMMIT;" % H.ingest_sql(decoy, sandbox.id, "sandbox"),))
        held.start()
        try:
            harness.wait_until(lambda: H.sql_value(
                "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(2)%' "
                "AND state = 'active' AND pid <> pg_backend_pid()") != "0",
                timeout=10, interval=0.02, what="the sandbox insert to be in flight")
            genuine = make_event("customer.created", cust, event_id=eid)
            answers = []
            posts = [threading.Thread(target=lambda: answers.append(self.post_signed(genuine, ep=live)))
                     for _ in range(2)]
            for t in posts:
                t.start()
            for t in posts:
                t.join(30)
        finally:
            held.join(30)
        self.assertEqual(sorted((r.status, json.loads(r.body)["status"]) for r in answers),
                         [(200, "duplicate"), (200, "stored")])
        self.assertEqual(H.event_row(eid)["environment"], "live")
        self.assertEqual(H.state_row("paddle.customers", cust["id"])["email"], cust["email"])


# --------------------------------------------------------------------------
# Keeping the worker pool free
# --------------------------------------------------------------------------

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
            self.assertFalse(c[1].startswith(b"HTTP/1.1 2"), c)
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
        H.psql("ALTER SYSTEM SET log_statement = 'all'; SELECT pg_reload_conf()", db="postgres")
        try:
            time.sleep(0.5)  # backends pick the setting up at their next command
            offset = os.path.getsize(H.pg_log)
            forged = collections.Counter()
            lock = threading.Lock()
            bodies = [event() for _ in range(8)]

            def flood(n, seed):
                other = new_secret()
                for i in range(n):
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

            threads = [threading.Thread(target=flood, args=(250, k)) for k in range(8)]
            with Deliveries(self.ep, interval=0.05) as d:
                for t in threads:
                    t.start()
                for t in threads:
                    t.join(120)
            d.check(self, at_least=10)
            self.assertEqual(sum(forged.values()), 2000)
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


# --------------------------------------------------------------------------
# The worker's database role (docs/security.md, "Database role")
# --------------------------------------------------------------------------

def documented_grants():
    """The SQL between `-- BEGIN worker-role` and `-- END worker-role` in docs/security.md."""
    with open(SECURITY_DOC) as f:
        text = f.read()
    m = re.search(r"-- BEGIN worker-role\n(.*?)-- END worker-role", text, re.S)
    if not m:
        raise AssertionError("docs/security.md has no '-- BEGIN worker-role' ... '-- END worker-role' block")
    return m.group(1)


def worker_conninfo():
    """The harness's connection string, as the worker role."""
    return H.conninfo.replace("user=postgres", "user=" + WORKER_ROLE)


def psql_as(role, sql):
    """(returncode, stderr) of sql run as role, one statement, no retry."""
    p = subprocess.run([os.path.join(H.pg_bin, "psql"), "-X", "-q", "-A", "-t", "-h", "127.0.0.1",
                        "-p", str(H.pg_port), "-U", role, "-d", harness.DB_NAME,
                        "-v", "ON_ERROR_STOP=1", "-c", sql],
                       capture_output=True, text=True, timeout=30)
    return p.returncode, p.stdout + p.stderr


class LeastPrivilege(HostileCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        H.psql("DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '%s') THEN "
               "CREATE ROLE %s LOGIN; END IF; END $$;" % (WORKER_ROLE, WORKER_ROLE))
        H.psql(documented_grants())
        H.stop_serve()
        H.serve_conninfo = worker_conninfo()
        try:
            H.start_serve()
            H.wait_healthy()
            H.wait_endpoint_known(cls.ep)
        except BaseException:
            H.serve_conninfo = None
            cls.tearDownClass()  # not called when setUpClass fails; later classes need serve
            raise
        finally:
            H.serve_conninfo = None

    @classmethod
    def tearDownClass(cls):
        H.stop_serve()
        H.start_serve()
        H.wait_healthy()

    def test_worker_role_stores_and_projects_every_fixture_type(self):
        users = H.sql("SELECT DISTINCT usename FROM pg_stat_activity WHERE application_name = 'paddlehook'")
        self.assertEqual(users, [(WORKER_ROLE,)], "the workers do not run as %s" % WORKER_ROLE)
        fx = harness.fixtures_dir()
        if fx is None:
            self.skipTest("Paddle fixtures not found")
        # The queue trigger runs with its owner's rights: the role needs no grant for it.
        H.sql("INSERT INTO paddle.consumers (name) VALUES ('least_privilege') ON CONFLICT DO NOTHING")
        paths = sorted(glob.glob(os.path.join(fx, "envelopes", "*.json")))
        self.assertGreater(len(paths), 50)
        stored = []
        for path in paths:
            with open(path, "rb") as f:
                env = json.loads(f.read())
            env["event_id"] = paddle_id("evt")
            body = json.dumps(env).encode()
            r = self.post_signed(body)
            self.assertStored(r, os.path.basename(path))
            stored.append(env["event_id"])
        self.assertDuplicate(self.post_signed(body), "redelivery")
        rows = H.sql_json("SELECT event_id, event_type, projection_error FROM paddle.payment_events "
                          "WHERE event_id IN (%s)" % ",".join(H.lit(e) for e in stored))
        self.assertEqual(len(rows), len(stored))
        failed = [(r["event_type"], r["projection_error"]) for r in rows if r["projection_error"]]
        self.assertEqual(failed, [], "projection needs a privilege the role lacks")
        self.assertEqual(H.sql_value("SELECT count(*) FROM paddle.consumer_queue WHERE consumer = 'least_privilege' "
                                     "AND event_id IN (%s)" % ",".join(H.lit(e) for e in stored)), str(len(stored)))
        for table in ("customers", "subscriptions", "transactions", "adjustments",
                      "subscription_items", "transaction_items", "adjustment_items"):
            n = int(H.sql_value("SELECT count(*) FROM paddle.%s WHERE %s IN (%s)"
                                % (table, "event_id", ",".join(H.lit(e) for e in stored))))
            self.assertGreater(n, 0, "nothing projected into paddle.%s" % table)
        self.assertEqual(H.get("/paddle/healthz").status, 200)

    def test_worker_role_replaces_a_sandbox_event_with_its_live_delivery(self):
        live = add_endpoint(environment="live")
        sandbox = add_endpoint(environment="sandbox")
        H.wait_endpoint_known(live)
        H.wait_endpoint_known(sandbox)
        eid, decoy = paddle_id("evt"), sample_customer()
        self.assertStored(self.post_signed(make_event("customer.updated", decoy, event_id=eid), ep=sandbox))
        self.assertStored(self.post_signed(make_event("customer.created", sample_customer(), event_id=eid),
                                           ep=live))
        self.assertEqual(H.event_row(eid)["environment"], "live")
        self.assertIsNone(H.state_row("paddle.customers", decoy["id"]))

    def test_other_roles_cannot_rewrite_events_through_the_replacement_function(self):
        other = "paddlehook_other"
        H.psql("DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '%s') THEN "
               "CREATE ROLE %s LOGIN; END IF; END $$; GRANT USAGE ON SCHEMA paddle TO %s;" % (other, other, other))
        rc, out = psql_as(other, "SELECT paddle.replace_sandbox_event('evt_x', 'customer.created', now(), NULL, "
                                 "'ep_x', '{}')")
        self.assertNotEqual(rc, 0, out)
        self.assertIn("permission denied", out)
        self.assertNothingChanged()

    def test_check_config_as_the_worker_role_names_a_missing_grant(self):
        p = H.cli("check-config", "--db", worker_conninfo(), check=False)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertRegex(p.stdout, r"ok +schema: this role may not read paddle.schema_migrations")
        self.assertRegex(p.stdout, r"ok +deliveries: ")
        H.psql("REVOKE DELETE ON paddle.transaction_items FROM %s" % WORKER_ROLE)
        try:
            p = H.cli("check-config", "--db", worker_conninfo(), check=False)
        finally:
            H.psql(documented_grants())
        self.assertEqual(p.returncode, 1, p.stdout)
        self.assertRegex(p.stdout, r"PROBLEM +deliveries: transaction.completed: .*permission denied for table "
                                   r"transaction_items")
        self.assertNothingChanged()

    def test_worker_role_loads_endpoint_changes(self):
        ep = add_endpoint(environment="live")
        self.assertStored(self.post_signed(event(), ep=ep))
        H.disable_endpoint(ep)
        r = harness.wait_until(lambda: (lambda r: r if r.status == 410 else None)(self.post_signed(event(), ep=ep)),
                               timeout=10, what="disable to reach the restricted worker")
        self.assertErrorResponse(r, 410, "endpoint_disabled")

    def test_worker_role_cannot_change_or_read_what_it_does_not_need(self):
        denied = [
            "DROP TABLE paddle.payment_events",
            "TRUNCATE paddle.customers",
            "DELETE FROM paddle.payment_events",
            "ALTER TABLE paddle.payment_events ADD COLUMN x int",
            "CREATE TABLE paddle.x (a int)",
            "UPDATE paddle.endpoints SET enabled = true",
            "INSERT INTO paddle.endpoints (id, name, environment) VALUES ('ep_x', 'x', 'live')",
            "INSERT INTO paddle.endpoint_secrets (endpoint_id, sealed, hint) VALUES ('ep_x', '\\x00', 'x')",
            "UPDATE paddle.endpoint_secrets SET retired_at = now()",
            "DELETE FROM paddle.endpoint_secrets",
            "SELECT hint FROM paddle.endpoint_secrets",
            "SELECT name FROM paddle.endpoints",
            "SELECT * FROM paddle.schema_migrations",
            "CREATE FUNCTION paddle.f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
            "CREATE OR REPLACE FUNCTION paddle.ingest_event(text, text, timestamptz, text, text, text, jsonb) "
            "RETURNS text LANGUAGE sql AS 'SELECT ''stored'''",
            "SELECT paddle.reproject()",
            "UPDATE paddle.payment_events SET payload = '{}'",
            # Consumer queues are the application's: the worker's events reach them through a trigger.
            "SELECT * FROM paddle.claim_events('x')",
            "SELECT * FROM paddle.consumer_queue",
            "INSERT INTO paddle.consumer_queue (consumer, event_id, occurred_at) VALUES ('x', 'evt_x', now())",
            "SELECT * FROM paddle.consumers",
            "INSERT INTO paddle.consumers (name) VALUES ('x')",
            "SELECT paddle.queue_stored_events('x', NULL)",
            # The queue's trigger functions run with their owner's rights: not on a table of the caller's.
            "CREATE TEMP TABLE h (event_id text, occurred_at timestamptz, event_type text, environment text); "
            "CREATE TRIGGER h AFTER INSERT ON h FOR EACH ROW EXECUTE FUNCTION paddle.queue_event()",
            "CREATE TEMP TABLE h (name text); "
            "CREATE TRIGGER h AFTER TRUNCATE ON h FOR EACH STATEMENT EXECUTE FUNCTION paddle.queue_cascade()",
            "CREATE TEMP TABLE h (name text); "
            "CREATE TRIGGER h AFTER INSERT ON h FOR EACH STATEMENT EXECUTE FUNCTION paddle.consumer_change()",
        ]
        for sql in denied:
            with self.subTest(sql=sql):
                rc, out = psql_as(WORKER_ROLE, sql)
                self.assertNotEqual(rc, 0, "allowed: %s" % sql)
                self.assertRegex(out, r"permission denied for function" if "CREATE TRIGGER" in sql
                                 else r"permission denied|must be owner", out)
        # What it needs, it has.
        for sql in ("SELECT id, environment, tolerance_seconds, enabled FROM paddle.endpoints",
                    "SELECT id, endpoint_id, sealed, retired_at FROM paddle.endpoint_secrets"):
            with self.subTest(sql=sql):
                rc, out = psql_as(WORKER_ROLE, sql)
                self.assertEqual(rc, 0, out)
        self.assertNothingChanged()


# --------------------------------------------------------------------------
# Logs
# --------------------------------------------------------------------------

LOG_LINE = re.compile(r'^ts=\S+ level=(error|warn|info|debug) pid=\d+( [a-z_]+=("[^"\n]*"|\S*))*$')


class Logs(HostileCase):

    def test_no_secret_payload_or_forged_line_reaches_the_logs(self):
        canary = "CANARY%s" % os.urandom(6).hex()
        data = sample_customer(name="Name " + canary, email=canary.lower() + "@example.com")
        data["custom_data"] = {"note": canary, "x": "\n" + canary}
        self.assertStored(self.post_signed(make_event("customer.created", data)))
        body = make_event("customer.created", data)
        for r in (H.post(self.ep.path, body, signature="ts=1;h1=" + canary),          # malformed header
                  H.post(self.ep.path, body, signature=py_sign(body, canary)),       # wrong secret
                  self.post_signed(body.replace(b'"data":', b'"data":1,"x":', 1)),   # invalid field
                  self.post_signed(body[:-3]),                                       # malformed JSON
                  self.post_signed(body.replace(b'"note":"', b'"note":"\\u0000', 1)),  # PostgreSQL refuses
                  self.post_signed(make_event("x\ny level=error FORGED=1", data)),
                  H.post(self.ep.path + "%0a" + "ts=0%20level=error%20FORGED=1", body,
                         signature=py_sign(body, self.ep.secret)),
                  H.request("GET", "/paddle/healthz?" + canary)):
            self.assertIsNotNone(r)
        time.sleep(0.3)
        logs = {"serve": H.serve_log, "nginx error": os.path.join(H.nginx_dir, "error.log"),
                "harness commands": H.commands_log, "postgres": H.pg_log}
        text = {}
        for name, path in logs.items():
            with open(path, "rb") as f:
                text[name] = f.read().decode("utf-8", "replace")
        for name, t in text.items():
            for s in SECRETS + [self.ep.secret]:
                self.assertNotIn(s, t, "an endpoint secret is in the %s log" % name)
                self.assertNotIn(s[-20:], t, "part of an endpoint secret is in the %s log" % name)
        with open(H.key_file) as f:
            master = f.read().strip()
        for name, t in text.items():
            self.assertNotIn(master, t, "the master key is in the %s log" % name)
        self.assertNotIn(canary, text["serve"], "payload or header bytes in the serve log")
        self.assertNotIn("FORGED", text["serve"])
        bad = [l for l in text["serve"].splitlines() if not LOG_LINE.match(l)]
        self.assertEqual(bad, [], "serve log lines that are not one key=value record")


# --------------------------------------------------------------------------
# `make valgrind`: mixed load against one worker
# --------------------------------------------------------------------------

def valgrind_load(total):
    """Drives a one-worker stack with `total` mixed requests; returns 0 when
    every answer was the expected one."""
    h = Harness(workers=1, max_body=262144)
    results = collections.Counter()
    wrong = []
    h.start()
    try:
        ep = h.add_endpoint()
        live = h.add_endpoint(environment="live")
        off = h.add_endpoint()
        h.disable_endpoint(off)
        fx = harness.fixtures_dir()
        envelopes = []
        for path in sorted(glob.glob(os.path.join(fx, "envelopes", "*.json"))) if fx else []:
            with open(path, "rb") as f:
                envelopes.append(json.loads(f.read()))
        if not envelopes:
            envelopes = [make_event("subscription.created", sample_subscription(), as_dict=True)]
        stored = []

        def good(i):
            env = dict(envelopes[i % len(envelopes)], event_id=paddle_id("evt"))
            body = json.dumps(env).encode()
            stored.append(body)
            return h.post_event(ep if i % 3 else live, body), (200, None)

        def signed(body, target=None):
            return h.post_event(target or ep, body)

        deep = event().replace(b'"data":{', b'"data":{"d":' + b"[" * 100 + b"]" * 100 + b",", 1)
        kinds = [
            good,
            lambda i: (h.post_event(ep, stored[-1] if stored else event()),
                       (200, None)),
            lambda i: (h.post_event(ep, event(), secret=new_secret()), (401, "invalid_signature")),
            lambda i: (h.post_event(ep, event(), ts=int(time.time()) - 3600), (401, "timestamp_out_of_range")),
            lambda i: (signed(event()[:-2]), (400, "malformed_json")),
            lambda i: (signed(deep), (400, "nesting_too_deep")),
            lambda i: (signed(event().replace(b'"data":{', b'"data":{"z":"\\u0000",', 1)), (400, "unsupported_json")),
            lambda i: (signed(b'{"event_id":"%s","data":{}}' % paddle_id("evt").encode()), (400, "missing_field")),
            lambda i: (h.post_event(paddle_id("ep"), event(), secret=new_secret()), (404, "unknown_endpoint")),
            lambda i: (h.post_event(off, event()), (410, "endpoint_disabled")),
            lambda i: (h.get("/paddle/healthz"), (200, None)),
            lambda i: (h.get(ep.path), (405, "method_not_allowed")),
            lambda i: (signed(make_event("customer.created", {"id": paddle_id("ctm"), "p": "x" * 300000})),
                       (413, "body_too_large")),
            lambda i: (h.post_event(ep, event(), signature="ts=%d;%s" % (
                time.time(), ";".join("h1=" + os.urandom(32).hex() for _ in range(100)))),
                (401, "invalid_signature")),
            lambda i: (h.get("/paddle/metrics"), (200, None)),
            good,
            good,
        ]
        started = time.monotonic()
        for i in range(total):
            if i and i % 500 == 0:
                h.rotate_endpoint(live)                  # NOTIFY: endpoints reloaded
                h.retire_secrets(live)
                os.kill(h.serve_pid(), signal.SIGHUP)
                print("valgrind-load: %d/%d requests, %.0f s" % (i, total, time.monotonic() - started),
                      flush=True)
            r, (status, code) = kinds[i % len(kinds)](i)
            j = r.json()
            results[(r.status, r.error or (j.get("status") if isinstance(j, dict) else "(text)"))] += 1
            if r.status != status or (code is not None and r.error != code):
                wrong.append((i, status, code, r))
        print("valgrind-load: %d requests in %.0f s" % (total, time.monotonic() - started))
        for (status, code), n in sorted(results.items(), key=lambda kv: (kv[0][0], str(kv[0][1]))):
            print("  %5d  %s %s" % (n, status, code or ""))
        for w in wrong[:20]:
            print("unexpected answer to request %d: wanted %s %s, got %r" % w)
    finally:
        h.stop()
    return 1 if wrong else 0


def _main(argv):
    if len(argv) == 2 and argv[0] == "--valgrind-load":
        return valgrind_load(int(argv[1]))
    sys.stderr.write("usage: test_hostile.py --valgrind-load N   (the tests run with tests/run.py)\n")
    return 2


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
