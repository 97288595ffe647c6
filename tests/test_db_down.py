"""PostgreSQL going away and coming back while serve keeps running."""

import json
import os
import signal
import time

import harness
from harness import (WORKER_SESSIONS, Harness, HarnessTestCase, make_event, metric_values, py_sign,
                     sample_customer, sample_subscription, wait_until)

H = Harness(workers=2)


def setUpModule():
    H.start()


def tearDownModule():
    H.stop()


def event(**kw):
    return make_event("subscription.created", sample_subscription(), as_dict=True, **kw)


def body_of(env):
    return json.dumps(env).encode()


class DatabaseDown(HarnessTestCase):
    harness = H

    @classmethod
    def setUpClass(cls):
        cls.ep = H.add_endpoint()

    def setUp(self):
        if not H.postgres_running():
            H.start_postgres()

    def tearDown(self):
        if not H.postgres_running():
            H.start_postgres()

    def warm_up(self):
        # Every worker has loaded endpoints and holds a connection.
        for _ in range(4 * H.workers):
            self.assertStored(H.post_event(self.ep, body_of(event())))

    def db_counters(self):
        text = H.get("/paddle/metrics").body.decode()
        return tuple(metric_values(text, name).get("", 0)
                     for name in ("paddlehook_db_errors_total", "paddlehook_db_reconnects_total"))

    def test_db_down_gives_503_and_same_workers_recover(self):
        self.warm_up()
        serve_pid, workers = H.serve_pid(), H.worker_pids()
        errors, reconnects = self.db_counters()
        self.assertEqual(len(workers), H.workers)
        env = event()
        H.stop_postgres()
        # Every request (whichever worker takes it) answers 503 with Retry-After.
        for i in range(3 * H.workers):
            r = H.post_event(self.ep, body_of(env))
            self.assertErrorResponse(r, 503, "database_unavailable", "POST #%d with db down" % i)
            ra = r.headers.get("retry-after")
            self.assertIsNotNone(ra, "no Retry-After header: %r" % r.headers)
            self.assertTrue(ra.strip().isdigit() and int(ra) > 0, "Retry-After %r" % ra)
        for i in range(2 * H.workers):
            self.assertEqual(H.get("/paddle/healthz").status, 503, "healthz #%d with db down" % i)

        H.start_postgres()
        self.assertIsNone(H.event_row(env["event_id"]), "a 503 left the event stored")
        r = wait_until(lambda: (lambda r: r if r.status != 503 else None)(
            H.post_event(self.ep, body_of(env))), timeout=30, interval=0.2,
            what="a webhook to be accepted after postgres restarted")
        self.assertStored(r, "first delivery after recovery")
        # All workers recover (enough requests to reach each of them).
        for i in range(4 * H.workers):
            self.assertStored(H.post_event(self.ep, body_of(event())), "after recovery #%d" % i)
            self.assertEqual(H.get("/paddle/healthz").status, 200, "healthz after recovery #%d" % i)
        self.assertEqual(H.serve_pid(), serve_pid)
        self.assertTrue(harness.pid_alive(serve_pid), "serve died")
        self.assertEqual(H.worker_pids(), workers, "workers were restarted instead of reconnecting")
        self.assertEqual(H.event_rows_with_id(env["event_id"]), 1)
        errors_after, reconnects_after = self.db_counters()
        self.assertGreater(errors_after, errors, "paddlehook_db_errors_total")
        self.assertGreater(reconnects_after, reconnects, "paddlehook_db_reconnects_total")

    def test_a_statement_the_database_refuses_counts_as_a_db_error(self):
        """Preparing the delivery statement fails (the function is gone): 500, and each refusal is counted
        once in paddlehook_db_errors_total."""
        self.warm_up()
        H.sql("SELECT pg_terminate_backend(pid) FROM (%s) w" % WORKER_SESSIONS)   # fresh sessions prepare again
        wait_until(lambda: len(H.sql(WORKER_SESSIONS)) == H.workers, timeout=60, interval=0.2,
                   what="a new session for every worker")
        errors, _ = self.db_counters()
        fn = "paddle.ingest_event(text, text, timestamptz, text, text, text, jsonb)"
        H.sql("ALTER FUNCTION %s RENAME TO ingest_event_gone" % fn)
        log_from = os.path.getsize(H.serve_log)
        try:
            r = H.post_event(self.ep, body_of(event()))
        finally:
            H.sql("ALTER FUNCTION paddle.ingest_event_gone(text, text, timestamptz, text, text, text, jsonb) "
                  "RENAME TO ingest_event")
        self.assertErrorResponse(r, 500, "internal_error")
        refusals = H.serve_log_since(log_from).count("event=db_prepare_failed")
        self.assertGreaterEqual(refusals, 1)
        self.assertEqual(self.db_counters()[0] - errors, refusals)
        self.assertStored(H.post_event(self.ep, body_of(event())), "once the function is back")

    def test_frozen_database_sessions_give_503_not_a_hung_worker(self):
        # The workers' sessions stop answering while their sockets stay open (a
        # frozen server, hung storage): the server's own timeouts cannot fire, so
        # the worker must stop waiting, answer 503 and use a new connection.
        self.warm_up()
        workers = H.worker_pids()
        # Idle workers reconnect on their own after an earlier test's outage.
        wait_until(lambda: len(H.sql(WORKER_SESSIONS)) == H.workers, timeout=60, interval=0.2,
                   what="a session for every worker")
        frozen = [int(row[0]) for row in H.sql(WORKER_SESSIONS)]
        log_from = os.path.getsize(H.serve_log)
        env = event()
        outcomes = []
        for pid in frozen:
            os.kill(pid, signal.SIGSTOP)
        try:
            for _ in range(H.workers + 1):       # whichever worker nginx picks
                r = H.post_event(self.ep, body_of(env), timeout=60)
                outcomes.append((r.status, r.json().get("error") if r.status != 200 else "stored"))
                if r.status == 200:
                    break
            self.assertIn((200, "stored"), outcomes)
            for status, code in outcomes[:-1]:
                self.assertEqual((status, code), (503, "database_unavailable"), outcomes)
            # A worker nginx had not sent a delivery to finds its frozen session only now.
            wait_until(lambda: H.get("/paddle/healthz", timeout=60).status == 200, timeout=60, interval=0.1,
                       what="healthz to answer 200 with the sessions frozen")
        finally:
            for pid in frozen:
                os.kill(pid, signal.SIGCONT)
        self.assertIn("event=db_timeout", H.serve_log_since(log_from))
        self.assertEqual(H.worker_pids(), workers, "workers were restarted")
        # The abandoned session may still run the first attempt once it thaws:
        # that can only ever be a duplicate.
        for _ in range(4 * H.workers):
            self.assertStored(H.post_event(self.ep, body_of(event())))
        self.assertEqual(H.event_rows_with_id(env["event_id"]), 1)

    def test_idle_workers_reconnect_without_waiting_for_a_delivery(self):
        # Each worker polls its database socket with the FastCGI sockets: a
        # connection closed while the worker is idle is replaced at once, not
        # on the next delivery (which would then pay for the reconnect).
        self.warm_up()
        # (nginx's kept connection may have sent every request to one worker.)
        old = set(H.sql(WORKER_SESSIONS))
        self.assertGreaterEqual(len(old), 1)
        log_at = os.path.getsize(H.serve_log)
        H.sql("SELECT pg_terminate_backend(pid) FROM (%s) b" % WORKER_SESSIONS)
        wait_until(lambda: len(set(H.sql(WORKER_SESSIONS)) - old) >= len(old), timeout=15, interval=0.1,
                   what="every idle worker to reconnect without a request")
        log = H.serve_log_since(log_at)
        self.assertEqual(log.count("event=db_connection_lost"), len(old))
        # The server's goodbye is a log line of ours, not libpq's raw text.
        self.assertIn('event=db_notice severity=FATAL message="terminating connection', log)
        self.assertNotRegex(log, r"(?m)^FATAL:")
        self.assertStored(H.post_event(self.ep, body_of(event())), "first delivery after the reconnect")

    def test_a_database_idle_session_timeout_does_not_end_idle_workers(self):
        H.sql("DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET idle_session_timeout = ''300ms''', "
              "current_database()); END $$")
        self.addCleanup(H.sql, "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I RESET idle_session_timeout', "
                               "current_database()); END $$")
        self.warm_up()
        old = set(H.sql(WORKER_SESSIONS))
        H.sql("SELECT pg_terminate_backend(pid) FROM (%s) b" % WORKER_SESSIONS)   # new sessions get the setting
        wait_until(lambda: len(set(H.sql(WORKER_SESSIONS)) - old) >= len(old), timeout=15, interval=0.1,
                   what="every idle worker to reconnect")
        sessions = set(H.sql(WORKER_SESSIONS))
        log_at = os.path.getsize(H.serve_log)
        time.sleep(1.5)   # five timeouts' worth of idleness
        self.assertEqual(set(H.sql(WORKER_SESSIONS)), sessions)
        self.assertNotIn("event=db_connection_lost", H.serve_log_since(log_at))

    def test_commands_commit_durably_whatever_synchronous_commit_says(self):
        # The harness's PostgreSQL runs with synchronous_commit = off: a commit is acknowledged before its WAL
        # is written, and a crash right after it loses the commit. A command that said "added" must not.
        for i in range(3):
            name = "durable-%d-%d" % (os.getpid(), i)
            ep = H.cli("endpoint", "add", name, "--environment", "sandbox",
                       input=harness.new_secret() + "\n").stdout.split()[-1]
            H.stop_postgres(mode="immediate")
            H.start_postgres()
            self.assertEqual(H.sql_value("SELECT count(*) FROM paddle.endpoints WHERE id = %s" % H.lit(ep)), "1",
                             "endpoint %s lost in the crash (round %d)" % (ep, i))

    def test_idle_workers_reconnect_after_an_outage_without_a_delivery(self):
        self.warm_up()
        before = len(H.sql(WORKER_SESSIONS))
        self.assertGreaterEqual(before, 1)
        workers = H.worker_pids()
        log_at = os.path.getsize(H.serve_log)
        H.stop_postgres()
        # Each worker that held a connection tries once when it sees it close,
        # then again on its timer while idle: two attempts each, no request.
        wait_until(lambda: H.serve_log_since(log_at).count("event=db_connect_failed") >= 2 * before, timeout=15,
                   interval=0.1, what="idle workers to retry while the database is down")
        H.start_postgres()
        wait_until(lambda: len(H.sql(WORKER_SESSIONS)) >= before, timeout=30, interval=0.2,
                   what="idle workers to reconnect after the restart without a request")
        self.assertEqual(H.worker_pids(), workers, "workers were restarted instead of reconnecting")
        self.assertStored(H.post_event(self.ep, body_of(event())), "first delivery after the outage")

    def test_bad_signature_is_401_even_with_db_down(self):
        # Verification needs no database: a forged request is rejected as such.
        self.warm_up()
        H.stop_postgres()
        for i in range(2 * H.workers):
            body = body_of(event())
            r = H.post_event(self.ep, body, signature=py_sign(body, harness.new_secret()))
            self.assertErrorResponse(r, 401, "invalid_signature", "#%d" % i)
            r = H.post(self.ep.path, body)
            self.assertErrorResponse(r, 401, "missing_signature", "#%d" % i)

    def test_endpoint_added_just_before_the_outage_is_503_not_404(self):
        # The workers have not seen the new endpoint yet and cannot look it up: an
        # endpoint that may exist is "retry later", never "unknown".
        self.warm_up()
        # A miss makes the worker reload now, so that its next reload is a second away,
        # inside the outage: the endpoint added next is unknown to it until then.
        for _ in range(2 * H.workers):
            H.post("/paddle/webhooks/ep_nosuchendpoint00000", body_of(event()))
        fresh = H.add_endpoint(wait=False)
        H.stop_postgres()
        for i in range(3 * H.workers):
            r = H.post_event(fresh, body_of(event()))
            self.assertErrorResponse(r, 503, "database_unavailable", "#%d" % i)
        H.start_postgres()
        r = wait_until(lambda: (lambda r: r if r.status != 503 else None)(
            H.post_event(fresh, body_of(event()))), timeout=30, interval=0.2,
            what="the new endpoint to work after postgres restarted")
        self.assertStored(r)

    def test_fast_db_restart_costs_at_most_one_503_per_worker(self):
        # Connections die while idle; each worker may fail the one request
        # that discovers it (503, Paddle retries), then must reconnect.
        self.warm_up()
        H.stop_postgres()
        H.start_postgres()
        unavailable = 0
        for i in range(4 * H.workers):
            r = H.post_event(self.ep, body_of(event()))
            if r.status == 503:
                self.assertErrorResponse(r, 503, "database_unavailable")
                unavailable += 1
                continue
            self.assertStored(r, "#%d" % i)
        self.assertLessEqual(unavailable, H.workers, "workers keep failing after the restart")

    def test_customer_event_after_recovery_is_projected(self):
        self.warm_up()
        H.stop_postgres()
        H.start_postgres()
        data = sample_customer()
        env = make_event("customer.created", data, as_dict=True)
        r = wait_until(lambda: (lambda r: r if r.status != 503 else None)(
            H.post_event(self.ep, body_of(env))), timeout=30, interval=0.2, what="recovery")
        self.assertStored(r)
        row = H.state_row("paddle.customers", data["id"])
        self.assertIsNotNone(row)
        self.assertEqual(row["event_id"], env["event_id"])
