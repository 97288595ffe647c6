"""Deliveries at the edges of the HTTP contract and of the database session:
lengths past any size, paths and headers that only look alike, envelope
values at their limits; endpoints that cannot be loaded, a database that is
down, a session that is frozen, lost, or stripped of its prepared statement.

Each request is otherwise valid (correctly signed, fresh timestamp), so the
answer shows which rule decided it.
"""

import json
import os
import signal
import socket
import time

import harness
from harness_fcgi import (FCGI_STDIN, fcgi_once, fcgi_record, fcgi_request, fcgi_response,
                          fcgi_split)
from harness import (WORKER_SESSIONS, Harness, hmac_h1, make_event, metric_values, py_sign, sample_subscription)
from hostile import HostileCase

H = Harness(workers=2)


def setUpModule():
    H.start()


def tearDownModule():
    H.stop()


class EdgeCase(HostileCase):
    harness = H

    def event(self, **kw):
        return make_event("subscription.created", sample_subscription(), **kw)

    def stored_rows(self, body):
        return H.event_rows_with_id(json.loads(body)["event_id"])


class ContentLength(EdgeCase):
    """CONTENT_LENGTH as the worker gets it on its socket (nginx answers 413 itself for such lengths)."""

    def fcgi(self, body, content_length):
        out = fcgi_once(H.socket_path, "POST", self.ep.path, body, content_length=content_length,
                        params=[("HTTP_PADDLE_SIGNATURE", py_sign(body, self.ep.secret))])
        self.assertIsNotNone(out, "the worker closed the connection without an answer")
        return fcgi_split(out)

    def test_a_content_length_past_2_to_the_64_is_413_not_wrapped_to_the_body_length(self):
        """A length that does not fit in 64 bits is too large: it must not wrap around to a small number
        (here exactly the length of the signed body that follows, which would then be stored)."""
        for extra in (2 ** 64, 2 ** 65, 10 ** 30):
            body = self.event()
            declared = str(extra + len(body))
            with self.subTest(declared=declared):
                status, _, reply = self.fcgi(body, declared)
                self.assertEqual((status, json.loads(reply).get("error")), (413, "body_too_large"), declared)
                self.assertEqual(self.stored_rows(body), 0, declared)
        self.assertNothingChanged()


class PathSpellings(EdgeCase):

    def test_the_worker_routes_a_delivery_by_the_path_nginx_matched(self):
        """nginx decodes and normalises the path before it picks a location; the worker must route on that
        same path, or the two disagree about which page a request is for."""
        first = self.ep.id[0]
        for path in ("/paddle/webhooks/%%%02X%s" % (ord(first), self.ep.id[1:]),
                     "/paddle/x/../webhooks/%s" % self.ep.id,
                     "/paddle//webhooks/%s" % self.ep.id):
            with self.subTest(path=path):
                body = self.event()
                self.assertStored(H.post(path, body, signature=py_sign(body, self.ep.secret)), path)
                self.assertEqual(self.stored_rows(body), 1, path)


class Caching(EdgeCase):

    def test_every_answer_of_the_worker_says_cache_control_no_store(self):
        """An acknowledgement, an error, the health check and the metrics describe one moment: no cache
        between Paddle (or a monitor) and the worker may answer for the worker."""
        body = self.event()
        answers = {
            "stored": self.post_signed(body),
            "duplicate": self.post_signed(body),
            "401": H.post(self.ep.path, self.event()),
            "404": H.get("/paddle/nope"),
            "healthz": H.get("/paddle/healthz"),
            "metrics": H.get("/paddle/metrics"),
        }
        self.assertEqual(answers["stored"].json().get("status"), "stored")
        for what, r in answers.items():
            with self.subTest(what):
                self.assertEqual(r.headers.get("cache-control"), "no-store", "%s: %r" % (what, r.headers))


class StalledBody(EdgeCase):

    def test_a_rejected_request_whose_body_stalls_holds_its_worker_about_a_second(self):
        """The worker answers a PUT 405 without reading its body, then drains what is left so it can keep
        the connection; a sender that stops mid-body is given about a second for that, not the rest of the
        5 s request deadline, before its answer goes out and the connection is closed."""
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(H.socket_path)
            start = time.monotonic()
            s.sendall(fcgi_request("PUT", self.ep.path, b"x" * 100, content_length="1000", end_stdin=False))
            out = fcgi_response(s, timeout=15)
            took = time.monotonic() - start
            self.assertIsNotNone(out, "the worker closed the connection without an answer")
            self.assertEqual(fcgi_split(out)[0], 405)
            self.assertLess(took, 3, "the answer took %.1f s" % took)
            s.settimeout(5)
            self.assertEqual(s.recv(1), b"", "a connection with an unfinished body was kept")


class SignatureHeaderNames(EdgeCase):

    def test_a_header_whose_name_starts_with_paddle_signature_is_not_a_second_signature(self):
        """Only a repeated Paddle-Signature is refused as ambiguous; Paddle-Signature-Version (nginx passes it
        as HTTP_PADDLE_SIGNATURE_VERSION) is another header and the delivery is stored."""
        body = self.event()
        r = H.post(self.ep.path, body, signature=py_sign(body, self.ep.secret),
                   headers={"Paddle-Signature-Version": "2", "Paddle-Signatures": "x"})
        self.assertStored(r)
        self.assertEqual(self.stored_rows(body), 1)

    def test_a_signature_header_of_exactly_2048_bytes_is_verified(self):
        """2 KiB is the largest header the worker takes, not one byte more than it refuses."""
        body = self.event()
        ts = int(time.time())
        header = "ts=%d;h1=%s;x=" % (ts, hmac_h1(self.ep.secret, ts, body))
        header += "a" * (2048 - len(header))
        self.assertEqual(len(header), 2048)
        self.assertStored(H.post(self.ep.path, body, signature=header))
        self.before = H.digest()
        r = H.post(self.ep.path, self.event(), signature=header + "a")
        self.assertErrorResponse(r, 401, "invalid_signature")
        self.assertNothingChanged("2049 bytes")

    def test_eight_h1_values_with_the_valid_one_last_are_verified(self):
        """Eight h1 values are allowed (secret rotation); the ninth makes the header malformed."""
        body = self.event()
        ts = int(time.time())
        junk = ["h1=%s" % ("%064x" % i) for i in range(7)]
        header = ";".join(["ts=%d" % ts] + junk + ["h1=" + hmac_h1(self.ep.secret, ts, body)])
        self.assertStored(H.post(self.ep.path, body, signature=header))
        self.before = H.digest()
        body = self.event()
        header = ";".join(["ts=%d" % ts] + junk + ["h1=%064x" % 99, "h1=" + hmac_h1(self.ep.secret, ts, body)])
        self.assertErrorResponse(H.post(self.ep.path, body, signature=header), 401, "invalid_signature")
        self.assertNothingChanged("nine h1")


class EnvelopeLimits(EdgeCase):

    def test_ids_of_exactly_64_characters_are_stored_whole_and_65_are_invalid_field(self):
        """64 characters is the id limit (MAX_ID_LEN): such an id is stored as sent, never cut short."""
        env = make_event("subscription.created", sample_subscription(), as_dict=True)
        env["event_id"] = "evt_" + "a" * 60
        env["notification_id"] = "ntf_" + "b" * 60
        body = json.dumps(env).encode()
        self.assertStored(self.post_signed(body))
        row = H.sql_json("SELECT event_id, notification_id FROM paddle.payment_events WHERE event_id = %s"
                         % H.lit(env["event_id"]))
        self.assertEqual(row, [{"event_id": env["event_id"], "notification_id": env["notification_id"]}])
        self.before = H.digest()
        for field in ("event_id", "notification_id"):
            with self.subTest(field=field):
                env = make_event("subscription.created", sample_subscription(), as_dict=True)
                env[field] = "x_" + "c" * 63
                r = self.post_signed(json.dumps(env).encode())
                self.assertErrorResponse(r, 400, "invalid_field", field)
        self.assertNothingChanged("65-character ids")

    def test_occurred_at_postgresql_would_refuse_is_invalid_field(self):
        """A date that does not exist (2100 and 1900 are not leap years) or an offset with 60 minutes is the
        sender's mistake in the envelope: 400 invalid_field, not a database error."""
        for value in ("2100-02-29T00:00:00Z", "1900-02-29T12:00:00Z", "2024-03-15T10:32:38+15:60",
                      "2024-03-15T10:32:38-05:75"):
            with self.subTest(occurred_at=value):
                env = make_event("subscription.created", sample_subscription(), as_dict=True)
                env["occurred_at"] = value
                r = self.post_signed(json.dumps(env).encode())
                self.assertErrorResponse(r, 400, "invalid_field", value)
        self.assertNothingChanged()


class EndpointsCannotBeLoaded(EdgeCase):

    def test_a_known_endpoint_is_503_with_retry_after_while_a_reload_is_refused(self):
        """A change was announced but the workers cannot load it (the secrets table is locked past their
        lock_timeout): the endpoint may have been disabled or a secret retired, so a delivery to it gets
        503 database_unavailable (Paddle retries), neither an answer from the stale table nor a 404."""
        ep = H.add_endpoint()
        self.assertStored(H.post_event(ep, self.event()), "before")
        self.before = H.digest()
        # Each answer may wait for a reload's lock_timeout (3 s): the table stays locked long enough for two.
        locker = H.in_flight("LOCK TABLE paddle.endpoint_secrets IN ACCESS EXCLUSIVE MODE", 20, "edges_locker")
        locked_at = time.monotonic()
        try:
            H.sql("NOTIFY paddlehook_endpoints")
            # Every worker's reload waits for the lock (and fails at its lock_timeout): none answers from its table.
            H.wait_lock_waiters("SELECT e.id, e.environment", count=H.workers,
                                what="every worker's reload to wait for the lock")
            deadline = locked_at + 14   # the last answer (at most 4.5 s) still comes while the table is locked
            answers = 0
            while answers < 2 and time.monotonic() < deadline:
                body = self.event()
                r = H.post_event(ep, body)
                self.assertErrorResponse(r, 503, "database_unavailable", "while the endpoints cannot be loaded")
                self.assertEqual(self.stored_rows(body), 0)
                answers += 1
            self.assertGreater(answers, 1)
        finally:
            locker.join()
        self.assertNothingChanged("while locked")
        body = self.event()
        r = harness.wait_until(lambda: (lambda r: r if r.status != 503 else None)(H.post_event(ep, body)),
                               timeout=15, what="the reload to succeed once the lock is gone")
        self.assertStored(r, "after the lock")


class DatabaseTimeout(EdgeCase):

    def db_errors(self):
        return metric_values(H.get("/paddle/metrics").body.decode(), "paddlehook_db_errors_total").get("", 0)

    def test_a_delivery_the_database_does_not_answer_in_time_is_one_db_error(self):
        """A frozen session (its socket open, no answer): 503 after the delivery's time, logged as
        event=db_timeout and counted once in paddlehook_db_errors_total, not again as a failed statement."""
        ep = H.add_endpoint()
        for _ in range(4 * H.workers):
            self.assertStored(H.post_event(ep, self.event()), "warm-up")
        harness.wait_until(lambda: len(H.sql(WORKER_SESSIONS)) == H.workers, timeout=60, interval=0.2,
                           what="a session for every worker")
        errors = self.db_errors()
        log_from = os.path.getsize(H.serve_log)
        frozen = [int(row[0]) for row in H.sql(WORKER_SESSIONS)]
        for pid in frozen:
            os.kill(pid, signal.SIGSTOP)
        try:
            body = self.event()
            r = H.post_event(ep, body, timeout=60)
        finally:
            for pid in frozen:
                os.kill(pid, signal.SIGCONT)
        self.assertErrorResponse(r, 503, "database_unavailable")
        log = H.serve_log_since(log_from)
        self.assertEqual(log.count("event=db_timeout"), 1, log)
        self.assertNotIn("event=db_error ", log)
        self.assertEqual(self.db_errors() - errors, 1)


class AnswerLost(EdgeCase):

    def test_an_answer_nobody_waits_for_any_more_is_logged_as_lost_and_the_retry_is_a_duplicate(self):
        """Paddle (or nginx) gives up while the commit waits: the event is stored, but the answer goes nowhere.
        A warning says so after the request line, whose 200 Paddle never saw."""
        ep = H.add_endpoint()
        body = self.event()
        event_id = json.loads(body)["event_id"]
        lost_before = metric_values(H.get("/paddle/metrics").body.decode(), "paddlehook_answers_lost_total").get("", 0)
        log_from = os.path.getsize(H.serve_log)
        # Held well inside the worker's 3-second lock timeout, long enough for a loaded host to get the request there.
        locker = H.in_flight("LOCK TABLE paddle.payment_events IN SHARE ROW EXCLUSIVE MODE", 2.5, "answer_locker")
        try:
            with socket.create_connection(("127.0.0.1", H.http_port), timeout=10) as client:
                client.sendall(b"POST /paddle/webhooks/%s HTTP/1.1\r\nHost: localhost\r\nPaddle-Signature: %s\r\n"
                               b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                               % (ep.id.encode(), py_sign(body, ep.secret).encode(), len(body), body))
                H.wait_lock_waiters("%ingest_event", what="the delivery to wait for the lock")
        finally:
            locker.join()
        line = harness.wait_until(
            lambda: next((l for l in H.serve_log_since(log_from).splitlines() if "event=answer_lost" in l), None),
            timeout=10, what="the lost answer's warning")
        self.assertRegex(line, r"level=warn .*event=answer_lost endpoint=%s event_id=%s status=200 outcome=stored "
                               % (ep.id, event_id))
        self.assertIn("event=request endpoint=%s event_id=%s event_type=subscription.created status=200 "
                      "outcome=stored" % (ep.id, event_id), H.serve_log_since(log_from))
        self.assertEqual(self.stored_rows(body), 1)
        self.assertDuplicate(H.post_event(ep, body))
        lost = metric_values(H.get("/paddle/metrics").body.decode(), "paddlehook_answers_lost_total").get("", 0)
        self.assertEqual(lost - lost_before, 1)
        self.assertEqual(H.serve_log_since(log_from).count("event=answer_lost"), 1)


class WhileTheDatabaseIsDown(EdgeCase):

    def setUp(self):
        super().setUp()
        self.addCleanup(self.recover)

    def recover(self):
        if not H.postgres_running():
            H.start_postgres()
        for i in range(4 * H.workers):
            harness.wait_until(lambda: H.get("/paddle/healthz").status == 200, timeout=30, interval=0.2,
                               what="healthz after the outage #%d" % i)

    def test_an_endpoint_id_the_workers_do_not_know_is_503_not_404(self):
        """With the database unreachable a worker cannot know whether an endpoint was added since it last
        loaded them: an id it does not know is 'retry later' (Paddle retries a 503, not a 404)."""
        for _ in range(4 * H.workers):
            self.assertStored(H.post_event(self.ep, self.event()), "warm-up")
        H.stop_postgres()
        for i in range(3 * H.workers):
            body = self.event()
            r = H.post("/paddle/webhooks/%s" % harness.paddle_id("ep"), body,
                       signature=py_sign(body, self.ep.secret))
            self.assertErrorResponse(r, 503, "database_unavailable", "#%d" % i)


class LostConnection(EdgeCase):
    """The worker's database session ends while the worker waits for the end of a body (the server
    restarted, a pooler or an operator ended it): the worker finds out only when it sends the event."""

    def delivery_whose_session_ends(self, body, late):
        """The worker's answer, split, to a delivery whose body's end comes late seconds after its
        session was terminated."""
        for _ in range(4 * H.workers):
            self.assertStored(H.post_event(self.ep, self.event()), "warm-up")
        params = [("HTTP_PADDLE_SIGNATURE", py_sign(body, self.ep.secret))]
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(H.socket_path)
            s.sendall(fcgi_request("POST", self.ep.path, body, params=params, end_stdin=False))
            time.sleep(0.3)
            H.sql("SELECT pg_terminate_backend(pid) FROM (%s) w" % WORKER_SESSIONS)
            time.sleep(late)
            s.sendall(fcgi_record(FCGI_STDIN))
            out = fcgi_response(s, timeout=15)
        self.assertIsNotNone(out, "the worker closed the connection without an answer")
        return fcgi_split(out)

    def test_a_connection_lost_while_the_body_arrives_is_replaced_and_the_event_stored(self):
        """With time enough left, the failure on the dead session earns one retry on a new one: stored,
        not a 503."""
        body = self.event()
        status, _, reply = self.delivery_whose_session_ends(body, 0.3)
        self.assertEqual((status, json.loads(reply).get("status")), (200, "stored"), reply)
        self.assertEqual(self.stored_rows(body), 1)

    def test_a_connection_lost_with_less_than_the_connect_timeout_left_is_503_without_connecting(self):
        """The body comes 2 s late: with less of the delivery's 4.5 s left than a connect may take (3 s),
        the worker answers 503 at once instead of starting one that could outlast Paddle's window. The
        event is not stored; Paddle's retry is."""
        body = self.event()
        status, headers, reply = self.delivery_whose_session_ends(body, 1.9)
        self.assertEqual((status, json.loads(reply).get("error")), (503, "database_unavailable"), reply)
        self.assertIn("retry-after", headers)
        self.assertEqual(self.stored_rows(body), 0)
        r = harness.wait_until(lambda: (lambda r: r if r.status != 503 else None)(H.post_event(self.ep, body)),
                               timeout=15, what="the retry to be stored")
        self.assertStored(r, "the retry")


class PreparedStatementGone(EdgeCase):

    def test_a_delivery_whose_prepared_statement_vanished_is_prepared_again_and_stored(self):
        """Something between the worker and PostgreSQL (a pooler's DISCARD ALL, here a trigger's DEALLOCATE
        ALL) drops the worker's prepared statement: the next delivery prepares it again and is stored, no
        500 for Paddle to retry."""
        H.sql("CREATE FUNCTION paddle.test_deallocate() RETURNS trigger LANGUAGE plpgsql AS "
              "$$BEGIN EXECUTE 'DEALLOCATE ALL'; RETURN NULL; END$$; "
              "CREATE TRIGGER test_deallocate AFTER INSERT ON paddle.payment_events "
              "FOR EACH STATEMENT EXECUTE FUNCTION paddle.test_deallocate()")
        self.addCleanup(H.sql, "DROP TRIGGER IF EXISTS test_deallocate ON paddle.payment_events; "
                               "DROP FUNCTION IF EXISTS paddle.test_deallocate()")
        for i in range(3 * H.workers):
            body = self.event()
            self.assertStored(H.post_event(self.ep, body), "#%d" % i)
            self.assertEqual(self.stored_rows(body), 1)
