"""Every error the HTTP contract names, through nginx.

Each test asserts the status, the JSON `error` code, a non-empty `message`,
and that payment_events and the state tables did not change.  Requests that
should fail for one reason only are otherwise valid (correctly signed, fresh
timestamp), so the test proves which check fired.

The worker here runs with --max-body 262144 so its own 413 is reachable below
nginx's 1 MiB limit.
"""

import json
import os
import socket
import time

import harness
from harness_fcgi import (FCGI_ABORT_REQUEST, FCGI_PARAMS, FCGI_STDIN, fcgi_once, fcgi_record, fcgi_request,
                          fcgi_response, fcgi_split)
from harness import (Harness, HarnessTestCase, make_event, paddle_id, py_sign,
                     sample_subscription)

WORKER_MAX_BODY = 262144
H = Harness(workers=2, max_body=WORKER_MAX_BODY)


def setUpModule():
    H.start()


def tearDownModule():
    H.stop()


class ErrorCase(HarnessTestCase):
    harness = H

    @classmethod
    def setUpClass(cls):
        cls.ep = H.add_endpoint()

    def setUp(self):
        self.before = H.digest()

    def assertNothingChanged(self):
        self.assertEqual(H.digest(), self.before, "payment_events/state tables changed")

    def event(self, **kw):
        return make_event("subscription.created", sample_subscription(), **kw)

    def post_signed(self, body, path=None, secret=None):
        path = path or self.ep.path
        return H.post(path, body, signature=py_sign(body, secret or self.ep.secret))

    def expect(self, r, status, code, what=""):
        self.assertErrorResponse(r, status, code, what)
        self.assertNothingChanged()


class SignatureErrors(ErrorCase):

    def test_missing_signature_header_is_401_missing_signature(self):
        r = H.post(self.ep.path, self.event())
        self.expect(r, 401, "missing_signature")

    def test_empty_signature_header_is_401_missing_signature(self):
        r = H.post(self.ep.path, self.event(), signature="")
        self.expect(r, 401, "missing_signature")

    def test_repeated_signature_header_is_401_whichever_comes_first(self):
        """Two Paddle-Signature headers: one of them valid is not enough (which one would a proxy keep?)."""
        body = self.event()
        good, junk = py_sign(body, self.ep.secret), "ts=%d;h1=%s" % (time.time(), "0" * 64)
        for first, second in ((good, junk), (junk, good), (good, good)):
            with self.subTest(first=first[:12], second=second[:12]):
                raw = ("POST %s HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                       "Paddle-Signature: %s\r\nPaddle-Signature: %s\r\nContent-Length: %d\r\n"
                       "Connection: close\r\n\r\n" % (self.ep.path, first, second, len(body))).encode() + body
                self.expect(H.raw_request(raw), 401, "invalid_signature")

    def test_garbled_signature_header_is_401_invalid_signature(self):
        body = self.event()
        for header in ("garbage", "ts=;h1=", "h1=" + "0" * 64, "ts=%d" % time.time(),
                       "ts=abc;h1=" + "0" * 64, "ts=%d;h1=" % time.time(),
                       "%s" % py_sign(body, self.ep.secret).replace(";", ",")):
            with self.subTest(header=header):
                r = H.post(self.ep.path, body, signature=header)
                self.expect(r, 401, "invalid_signature", header)

    def test_garbage_and_duplicated_bad_h1_are_401_invalid_signature(self):
        body = self.event()
        ts = int(time.time())
        for header in ("ts=%d;h1=zzzz" % ts,
                       "ts=%d;h1=%s" % (ts, "g" * 64),
                       "ts=%d;h1=%s;h1=%s" % (ts, "ab" * 32, "ab" * 32),
                       "ts=%d;h1=%s" % (ts, "0" * 63)):
            with self.subTest(header=header):
                r = H.post(self.ep.path, body, signature=header)
                self.expect(r, 401, "invalid_signature", header)

    def test_wrong_secret_is_401_invalid_signature(self):
        body = self.event()
        r = H.post(self.ep.path, body, signature=py_sign(body, harness.new_secret()))
        self.expect(r, 401, "invalid_signature")

    def test_body_changed_after_signing_is_401_invalid_signature(self):
        body = self.event()
        sig = py_sign(body, self.ep.secret)
        changed = json.dumps(json.loads(body), indent=1).encode()  # same JSON, other bytes
        r = H.post(self.ep.path, changed, signature=sig)
        self.expect(r, 401, "invalid_signature")

    def test_timestamp_400s_old_is_401_timestamp_out_of_range(self):
        body = self.event()
        r = H.post(self.ep.path, body, signature=py_sign(body, self.ep.secret, ts=int(time.time()) - 400))
        self.expect(r, 401, "timestamp_out_of_range")

    def test_timestamp_400s_in_future_is_401_timestamp_out_of_range(self):
        body = self.event()
        r = H.post(self.ep.path, body, signature=py_sign(body, self.ep.secret, ts=int(time.time()) + 400))
        self.expect(r, 401, "timestamp_out_of_range")

    def test_bad_signature_is_checked_before_json(self):
        # Not JSON and wrongly signed: the signature verdict must come first.
        r = H.post(self.ep.path, b"{not json", signature=py_sign(b"{not json", harness.new_secret()))
        self.expect(r, 401, "invalid_signature")


class MethodAndPathErrors(ErrorCase):

    def test_get_on_webhook_path_is_405(self):
        r = H.get(self.ep.path)
        self.expect(r, 405, "method_not_allowed", "GET")

    def test_put_and_delete_on_webhook_path_are_405(self):
        body = self.event()
        for method in ("PUT", "DELETE", "PATCH"):
            with self.subTest(method=method):
                r = H.request(method, self.ep.path, body=body,
                              headers={"Paddle-Signature": py_sign(body, self.ep.secret)})
                self.expect(r, 405, "method_not_allowed", method)

    def test_unknown_endpoint_is_404_unknown_endpoint(self):
        body = self.event()
        for eid in (paddle_id("ep"), "ep_doesnotexist", "nope"):
            with self.subTest(endpoint=eid):
                r = H.post("/paddle/webhooks/%s" % eid, body, signature=py_sign(body, self.ep.secret))
                self.expect(r, 404, "unknown_endpoint", eid)

    def test_other_paths_are_404_not_found(self):
        for path in ("/paddle/", "/paddle/nope", "/paddle/webhooks",
                     "/paddle/webhooks/%s/extra" % self.ep.id):
            with self.subTest(path=path):
                body = self.event()
                r = H.post(path, body, signature=py_sign(body, self.ep.secret))
                # An id with a slash is a webhook path with an id of the wrong form.
                self.expect(r, 404, "unknown_endpoint" if path.endswith("/extra") else "not_found", path)
        r = H.get("/paddle/nope")
        self.expect(r, 404, "not_found", "GET /paddle/nope")

    def test_healthz_takes_get_and_head_only(self):
        self.assertEqual(H.request("HEAD", "/paddle/healthz").status, 200)
        for method in ("POST", "PUT", "DELETE"):
            with self.subTest(method=method):
                r = H.request(method, "/paddle/healthz", body=b"{}")
                self.expect(r, 405, "method_not_allowed", method)
                self.assertEqual(r.headers.get("allow"), "GET, HEAD")

    def test_metrics_take_get_only(self):
        self.assertEqual(H.get("/paddle/metrics").status, 200)
        r = H.request("HEAD", "/paddle/metrics")
        self.assertEqual((r.status, r.headers.get("allow")), (405, "GET"), r)
        for method in ("POST", "DELETE"):
            with self.subTest(method=method):
                r = H.request(method, "/paddle/metrics", body=b"{}")
                self.expect(r, 405, "method_not_allowed", method)
                self.assertEqual(r.headers.get("allow"), "GET")
                self.assertNotIn(b"paddlehook_", r.body)

    def test_checks_run_in_the_documented_order(self):
        """README: path; method; endpoint id format; Content-Length present, within the limit, not zero;
        endpoint lookup; enabled; secrets; body length; signature; JSON. Each request fails two checks and
        must get the earlier one's answer, signed or not."""
        unknown = "/paddle/webhooks/%s" % paddle_id("ep")
        disabled = H.add_endpoint()
        H.disable_endpoint(disabled)
        harness.wait_until(lambda: H.post_event(disabled, self.event()).status == 410, timeout=10,
                           what="the disable to take effect")
        self.before = H.digest()
        big = b"x" * (WORKER_MAX_BODY + 1)
        no_length = "POST %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        cases = [
            ("method before id format", H.request("GET", "/paddle/webhooks/bad-id!"), 405, "method_not_allowed"),
            ("id format before Content-Length",
             H.raw_request((no_length % "/paddle/webhooks/bad-id!").encode()), 404, "unknown_endpoint"),
            ("Content-Length before lookup", H.raw_request((no_length % unknown).encode()), 411, "length_required"),
            ("size before lookup", H.post(unknown, big), 413, "body_too_large"),
            ("empty before lookup", H.post(unknown, b""), 400, "empty_body"),
            ("empty before the signature", H.post(self.ep.path, b""), 400, "empty_body"),
            ("empty before enabled", H.post(disabled.path, b""), 400, "empty_body"),
            ("enabled before the signature", H.post(disabled.path, b"{not json"), 410, "endpoint_disabled"),
            ("the signature before JSON", H.post(self.ep.path, b"{not json"), 401, "missing_signature"),
        ]
        for what, r, status, code in cases:
            with self.subTest(what):
                self.expect(r, status, code, what)

    def test_disabled_endpoint_is_410_until_enabled_again(self):
        ep = H.add_endpoint()
        H.disable_endpoint(ep)
        # Workers pick the change up "within a moment": poll with fresh events.
        r = harness.wait_until(
            lambda: (lambda r: r if r.status != 200 else None)(H.post_event(ep, self.event())),
            timeout=10, what="endpoint disable to take effect")
        self.assertErrorResponse(r, 410, "endpoint_disabled")
        self.before = H.digest()
        self.expect(H.post_event(ep, self.event()), 410, "endpoint_disabled", "next request")

        H.enable_endpoint(ep)
        body = self.event()
        r = harness.wait_until(
            lambda: (lambda r: r if r.status != 410 else None)(H.post_event(ep, body)),
            timeout=10, what="endpoint enable to take effect")
        self.assertStored(r, "after enable")
        self.assertEqual(H.event_count(), self.before[harness.EVENT_TABLE][0] + 1)

    def test_disable_the_workers_cannot_load_at_once_still_takes_effect(self):
        """A reload that fails (here the secrets table is locked past the
        worker's lock_timeout) is tried again; until one succeeds the endpoint
        gets 503, never an answer from the table as it was before the change."""
        ep = H.add_endpoint()
        self.assertStored(H.post_event(ep, self.event()), "before")
        locker = H.in_flight("LOCK TABLE paddle.endpoint_secrets IN ACCESS EXCLUSIVE MODE", 5, "test_locker")
        try:
            H.disable_endpoint(ep)
            seen = set()
            deadline = time.monotonic() + 25
            while time.monotonic() < deadline:
                self.before = H.digest()
                r = H.post_event(ep, self.event())
                seen.add(r.status)
                if r.status == 410:
                    break
                self.expect(r, 503, "database_unavailable", "while the endpoints cannot be loaded")
        finally:
            locker.join()
        self.assertIn(410, seen, "the disable took effect once the lock was gone")
        self.assertNothingChanged()


class BodyErrors(ErrorCase):

    def test_post_without_content_length_is_411(self):
        sig = py_sign(b"", self.ep.secret)
        raw = ("POST %s HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
               "Paddle-Signature: %s\r\nConnection: close\r\n\r\n" % (self.ep.path, sig)).encode()
        r = H.raw_request(raw)
        self.expect(r, 411, "length_required")

    def test_empty_body_is_400_empty_body(self):
        r = self.post_signed(b"")
        self.expect(r, 400, "empty_body")

    def test_body_over_1mib_is_413_from_nginx(self):
        pad = "x" * (1024 * 1024)
        body = make_event("subscription.created", {"id": paddle_id("sub"), "pad": pad})
        sig = py_sign(body, self.ep.secret)
        raw = ("POST %s HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
               "Paddle-Signature: %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
               % (self.ep.path, sig, len(body))).encode() + body
        r = H.raw_request(raw)
        self.expect(r, 413, "body_too_large")

    def test_body_over_worker_max_body_is_413_from_worker(self):
        body = make_event("subscription.created",
                          {"id": paddle_id("sub"), "pad": "x" * WORKER_MAX_BODY})
        self.assertGreater(len(body), WORKER_MAX_BODY)
        self.assertLess(len(body), 1024 * 1024)
        r = self.post_signed(body)
        self.expect(r, 413, "body_too_large")

    def test_content_length_shorter_than_body_is_401(self):
        # nginx forwards only Content-Length bytes: the signature (over the
        # full body) cannot match the truncated body.
        body = self.event()
        sig = py_sign(body, self.ep.secret)
        raw = ("POST %s HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
               "Paddle-Signature: %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
               % (self.ep.path, sig, len(body) - 10)).encode() + body
        r = H.raw_request(raw)
        self.expect(r, 401, "invalid_signature")

    def test_content_length_longer_than_body_is_not_passed_on_by_nginx(self):
        # nginx waits for the rest, then drops the request: the worker never sees it (see WorkerOnly).
        body = self.event()
        sig = py_sign(body, self.ep.secret)
        raw = ("POST %s HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
               "Paddle-Signature: %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
               % (self.ep.path, sig, len(body) + 100)).encode() + body
        r = H.raw_request(raw, shutdown_write=True)
        self.assertTrue(r is None or r.status == 400, r)
        self.assertNothingChanged()

    def test_invalid_utf8_is_400_malformed_json(self):
        body = self.event().replace(b'"subscription.created"', b'"subscription.created\xff"', 1)
        self.expect(self.post_signed(body), 400, "malformed_json")
        body = self.event()
        body = body.replace(b'"status":"active"', b'"status":"act\xc3\x28ive"', 1)
        self.expect(self.post_signed(body), 400, "malformed_json", "invalid continuation byte")
        # Well-formed in shape, which is all yajl checks; PostgreSQL would refuse them.
        for bad in (b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80"):
            body = self.event().replace(b'"status":"active"', b'"status":"act' + bad + b'ive"', 1)
            self.expect(self.post_signed(body), 400, "malformed_json", repr(bad))

    def test_invalid_json_is_400_malformed_json(self):
        good = self.event()
        for body in (good[:-1], good + b"x", good + b"{}", b"{", b"nul", b"{'a': 1}",
                     good.replace(b'"event_id"', b'event_id', 1), b"{\"a\":1,}"):
            with self.subTest(body=body[:40]):
                self.expect(self.post_signed(body), 400, "malformed_json", body[:60])

    def test_200_deep_nesting_is_400_nesting_too_deep(self):
        deep = "[" * 200 + "]" * 200
        body = ('{"event_id":"%s","event_type":"subscription.created","occurred_at":"%s",'
                '"notification_id":"%s","data":{"id":"%s","x":%s}}'
                % (paddle_id("evt"), harness.rfc3339(), paddle_id("ntf"), paddle_id("sub"), deep)).encode()
        json.loads(body)  # valid JSON, only too deep
        self.expect(self.post_signed(body), 400, "nesting_too_deep")
        objs = '{"a":' * 200 + "1" + "}" * 200
        body = make_event("subscription.created", {"id": paddle_id("sub")}).replace(
            b'"data":{', b'"data":{"deep":' + objs.encode() + b',', 1)
        json.loads(body)
        self.expect(self.post_signed(body), 400, "nesting_too_deep", "objects")

    def test_missing_envelope_fields_are_400_missing_field(self):
        for field in ("event_id", "event_type", "occurred_at", "data"):
            with self.subTest(field=field):
                env = make_event("subscription.created", sample_subscription(), as_dict=True)
                del env[field]
                body = json.dumps(env).encode()
                self.expect(self.post_signed(body), 400, "missing_field", field)

    def test_wrongly_typed_envelope_fields_are_400_invalid_field(self):
        cases = [
            ("event_id", 12345),
            ("event_id", ""),
            ("event_type", 7),
            ("occurred_at", "yesterday"),
            ("occurred_at", 1700000000),
            ("occurred_at", "2024-13-45T99:00:00Z"),
            ("occurred_at", "2024-03-15T10:32:38+16:00"),   # PostgreSQL's offset limit is 15 h
            ("data", "a string"),
            ("data", 42),
            ("data", [1, 2]),
        ]
        for field, value in cases:
            with self.subTest(field=field, value=value):
                env = make_event("subscription.created", sample_subscription(), as_dict=True)
                env[field] = value
                body = json.dumps(env).encode()
                self.expect(self.post_signed(body), 400, "invalid_field", "%s=%r" % (field, value))

    def test_error_responses_are_application_json(self):
        r = H.post(self.ep.path, self.event())
        self.assertEqual(r.status, 401)
        self.assertTrue(r.headers.get("content-type", "").startswith("application/json"), r.headers)
        r = self.post_signed(b"{")
        self.assertEqual(r.status, 400)
        self.assertTrue(r.headers.get("content-type", "").startswith("application/json"), r.headers)


class WorkerOnly(ErrorCase):
    """What nginx never forwards, sent to the worker's socket directly: the worker does not rely on nginx."""

    def fcgi(self, body, content_length=None):
        out = fcgi_once(H.socket_path, "POST", self.ep.path, body, content_length=content_length,
                        params=[("HTTP_PADDLE_SIGNATURE", py_sign(body, self.ep.secret))])
        self.assertIsNotNone(out, "the worker closed the connection without an answer")
        return fcgi_split(out)

    def expect_fcgi(self, answer, status, code, what):
        self.assertEqual((answer[0], json.loads(answer[2]).get("error")), (status, code), what)
        self.assertNothingChanged()

    def test_body_shorter_or_longer_than_content_length_is_400_incomplete_body(self):
        body = self.event()
        for declared in (len(body) + 100, len(body) - 1):
            with self.subTest(declared=declared):
                self.expect_fcgi(self.fcgi(body, str(declared)), 400, "incomplete_body", declared)
        self.assertEqual(self.fcgi(body)[0], 200, "the same body with its own length")

    def held_request(self, body, then, wait=0, hold_params=False):
        """The request's records but the end of its body (hold_params: of its parameters, and what follows
        them but the body's end); after wait seconds, then(sock) (sends the rest, or not); the worker's answer,
        split."""
        params = [("HTTP_PADDLE_SIGNATURE", py_sign(body, self.ep.secret))]
        records = fcgi_request("POST", self.ep.path, body, params=params, end_stdin=False)
        cut = records.index(fcgi_record(FCGI_PARAMS)) if hold_params else len(records)
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(H.socket_path)
            s.sendall(records[:cut])
            time.sleep(wait)
            s.sendall(records[cut:])
            then(s)
            out = fcgi_response(s, timeout=15)
        self.assertIsNotNone(out, "the worker closed the connection without an answer")
        return fcgi_split(out)

    def test_a_body_whose_stream_does_not_end_is_400_incomplete_body(self):
        """All of Content-Length came, but not the record that ends the body: the peer aborts, half-closes,
        or holds on until the request deadline. Never stored, never answered as if it were."""
        def half_close(s):
            s.shutdown(socket.SHUT_WR)
        for what, then in (("abort", lambda s: s.sendall(fcgi_record(FCGI_ABORT_REQUEST))),
                           ("half-close", half_close), ("held past the deadline", lambda s: None)):
            with self.subTest(what):
                self.expect_fcgi(self.held_request(self.event(), then), 400, "incomplete_body", what)

    def test_a_request_that_ends_after_the_database_deadline_is_answered_without_the_database(self):
        """The body's end, or the parameters' end (then the body at once), comes when the delivery's database
        time (4.5 s from its first record) is spent but the request's (5 s) is not: 503 (Paddle retries),
        nothing sent to a healthy database only to be dropped unanswered, and the answer agrees with the
        database."""
        for held in ("body", "parameters"):
            with self.subTest(held):
                answers, log_from = [], os.path.getsize(H.serve_log)
                for wait in (4.6, 4.75, 4.9):
                    body = self.event()
                    status, _, reply = self.held_request(body, lambda s: s.sendall(fcgi_record(FCGI_STDIN)), wait,
                                                         hold_params=held == "parameters")
                    rows = H.event_rows_with_id(json.loads(body)["event_id"])
                    answers.append((wait, status, json.loads(reply)))
                    self.assertEqual(rows, 1 if status == 200 else 0, answers[-1])
                self.assertIn(503, [a[1] for a in answers], "no request ended inside the window: %r" % answers)
                log = H.serve_log_since(log_from)
                self.assertIn("event=deadline_passed step=ingest", log)
                self.assertNotIn("event=db_timeout", log)

    def test_a_delivery_queued_behind_connections_that_end_without_a_request_gets_a_whole_deadline(self):
        """Every worker is taken by a connection that sends part of a record and gives up 2.5 s later; a
        delivery that waited behind them has 5 s from when a worker takes it, not what the others left."""
        stalls = [socket.socket(socket.AF_UNIX) for _ in range(H.workers)]

        def stalls_give_up_then_end(s):
            time.sleep(2.5)
            for stall in stalls:
                stall.close()
            time.sleep(3)  # past the first stall's deadline, well inside the delivery's own
            try:
                s.sendall(fcgi_record(FCGI_STDIN))
            except OSError:
                pass  # cut off: what the worker answered before, if anything, is checked below

        try:
            for stall in stalls:
                stall.connect(H.socket_path)
                stall.sendall(fcgi_request("POST", self.ep.path)[:4])
                time.sleep(0.3)  # a worker takes it before the next comes
            body = self.event()
            status, _, reply = self.held_request(body, stalls_give_up_then_end)
        finally:
            for stall in stalls:
                stall.close()
        self.assertEqual(status, 200, reply)
        self.assertEqual(H.event_rows_with_id(json.loads(body)["event_id"]), 1)

    def test_a_new_connection_without_a_request_is_logged_but_not_a_kept_one_nginx_closes(self):
        """What nginx never sends on a connection it opens: HTTP (a location with proxy_pass instead of
        fastcgi_pass), or nothing at all. The worker answers nothing and says so. A kept connection closed after its
        request is nginx's everyday and says nothing."""
        log_from = os.path.getsize(H.serve_log)
        http = b"POST /paddle/webhooks/x HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"
        for what, data in (("HTTP", http), ("nothing", b"")):
            with self.subTest(what):
                with socket.socket(socket.AF_UNIX) as s:
                    s.settimeout(10)
                    s.connect(H.socket_path)
                    s.sendall(data)
                    s.shutdown(socket.SHUT_WR)
                    self.assertEqual(s.recv(4096), b"", "the worker answered")
        harness.wait_until(lambda: H.serve_log_since(log_from).count("event=connection_without_request") == 2,
                           what="a log line for each connection")
        self.assertRegex(H.serve_log_since(log_from), r"level=warn pid=\d+ event=connection_without_request "
                                                      r"waited_ms=\d+")

        body = self.event()
        params = [("HTTP_PADDLE_SIGNATURE", py_sign(body, self.ep.secret))]
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(H.socket_path)
            s.sendall(fcgi_request("POST", self.ep.path, body, keep_conn=True, params=params))
            self.assertEqual(fcgi_split(fcgi_response(s))[0], 200)
        time.sleep(0.5)  # the worker that kept it sees it closed at once
        self.assertEqual(H.serve_log_since(log_from).count("event=connection_without_request"), 2)

    def test_content_length_that_is_not_a_number_is_411(self):
        for declared in ("12x", "-5", " 12", "", "0x10", False):
            with self.subTest(declared=declared):
                self.expect_fcgi(self.fcgi(b"{}", declared), 411, "length_required", declared)


class UnknownEventType(ErrorCase):

    def test_unknown_event_type_is_stored_without_projection(self):
        data = sample_subscription()      # looks like a subscription, but the type is unknown
        env = make_event("foo.bar", data, as_dict=True)
        body = json.dumps(env).encode()
        r = self.post_signed(body)
        self.assertStored(r)
        rows = H.sql_json("SELECT event_type, payload FROM paddle.payment_events WHERE event_id = %s"
                          % H.lit(env["event_id"]))
        self.assertEqual(len(rows), 1)
        self.assertEqual(rows[0]["event_type"], "foo.bar")
        self.assertEqual(rows[0]["payload"], json.loads(body))
        after = H.digest()
        for table in harness.STATE_TABLES:
            if table in self.before:
                self.assertEqual(after[table], self.before[table], "%s changed" % table)
        self.assertEqual(after[harness.EVENT_TABLE][0], self.before[harness.EVENT_TABLE][0] + 1)


class ProjectionFailures(ErrorCase):
    """A projection failure the data causes is recorded on the stored event
    (retrying the same payload cannot help); any other failure (here a table
    missing, as mid-deploy; likewise a missing grant or an I/O error) must not
    be acknowledged: 500, nothing stored, and Paddle's retry succeeds once the
    cause is mended."""

    def customer_event(self):
        env = make_event("customer.created", harness.sample_customer(), as_dict=True)
        return env, json.dumps(env).encode()

    def test_failure_the_data_causes_is_recorded_and_the_event_kept(self):
        env, body = self.customer_event()
        log_at = os.path.getsize(H.serve_log)
        H.sql("ALTER TABLE paddle.customers ADD CONSTRAINT test_no_such_email CHECK (email <> %s)"
              % H.lit(env["data"]["email"]))
        try:
            self.assertStored(self.post_signed(body))
        finally:
            H.sql("ALTER TABLE paddle.customers DROP CONSTRAINT test_no_such_email")
        err = H.sql_value("SELECT projection_error FROM paddle.payment_events WHERE event_id = %s"
                          % H.lit(env["event_id"]))
        self.assertTrue(err and err.startswith("23514:"), err)
        self.assertEqual(H.sql_value("SELECT count(*) FROM paddle.customers WHERE id = %s"
                                     % H.lit(env["data"]["id"])), "0")
        # Paddle got its 200; the operator gets a warning and a counter of its own.
        harness.wait_until(lambda: "event_id=%s" % env["event_id"] in H.serve_log_since(log_at), timeout=10,
                           what="the delivery's log line")
        line = next(l for l in H.serve_log_since(log_at).splitlines() if "event_id=%s" % env["event_id"] in l)
        self.assertIn("level=warn", line)
        self.assertIn("status=200 outcome=projection_failed", line)
        self.assertIn('endpoint="%s",event_type="customer.created",outcome="projection_failed"} 1' % self.ep.id,
                      H.get("/paddle/metrics").body.decode())

    def test_failure_that_is_not_the_datas_fault_is_not_acknowledged(self):
        env, body = self.customer_event()
        H.sql("ALTER TABLE paddle.customers RENAME TO customers_moved")
        try:
            r = self.post_signed(body)
        finally:
            H.sql("ALTER TABLE paddle.customers_moved RENAME TO customers")
        self.expect(r, 500, "internal_error")
        self.assertStored(self.post_signed(body), "the retry after the table is back")
        self.assertIsNone(H.sql_value("SELECT projection_error FROM paddle.payment_events WHERE event_id = %s"
                                      % H.lit(env["event_id"])))
        self.assertEqual(H.sql_value("SELECT count(*) FROM paddle.customers WHERE id = %s"
                                     % H.lit(env["data"]["id"])), "1")
