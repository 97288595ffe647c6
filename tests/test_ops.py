"""Operations: metrics, status, check-config, rekey, JSON logs, config file layering."""

import json
import os
import re
import secrets as _secrets
import shutil
import signal
import subprocess
import threading
import time

from harness import (Harness, HarnessError, HarnessTestCase, make_event, metric_values, new_secret, sample_customer,
                     UNREACHABLE_DB, wait_until)

H = None


def setUpModule():
    global H
    H = Harness(workers=2)
    H.start()
    HarnessTestCase.harness = H


def tearDownModule():
    H.stop()


def wait_every_worker_logged(H, offset, text):
    """Until each worker has logged a line with text since offset in serve's log."""
    def done():
        log = H.serve_log_since(offset)
        return all(re.search(r"pid=%d .*%s" % (pid, re.escape(text)), log) for pid in H.worker_pids())
    wait_until(done, timeout=15, interval=0.05, what="every worker to log %r" % text)


class Metrics(HarnessTestCase):
    def scrape(self):
        r = self.H.get("/paddle/metrics")
        self.assertEqual(r.status, 200, r)
        self.assertIn("text/plain", r.headers.get("content-type", ""))
        return r.body.decode()

    def test_metrics_count_each_outcome_exactly(self):
        ep = self.H.add_endpoint()
        before = metric_values(self.scrape(), "paddlehook_deliveries_total")
        body = make_event("customer.created", sample_customer())
        for _ in range(2):
            self.H.post_event(ep, body)                       # stored, then duplicate
        for _ in range(3):
            self.H.post_event(ep, make_event("customer.created", sample_customer()), secret="pdl_wrong")
        self.H.post_event(ep, b'{"not": "an event"}')        # missing_field
        text = self.scrape()
        after = metric_values(text, "paddlehook_deliveries_total")

        def delta(event_type, outcome):
            key = '{endpoint="%s",event_type="%s",outcome="%s"}' % (ep.id, event_type, outcome)
            return after.get(key, 0) - before.get(key, 0)

        self.assertEqual(delta("customer.created", "stored"), 1)
        self.assertEqual(delta("customer.created", "duplicate"), 1)
        self.assertEqual(delta("", "invalid_signature"), 3)
        self.assertEqual(delta("", "missing_field"), 1)
        secrets = metric_values(text, "paddlehook_endpoint_secrets")
        self.assertEqual(secrets.get('{endpoint="%s",enabled="true"}' % ep.id), 1)
        hist = metric_values(text, "paddlehook_ingest_duration_seconds_count")
        self.assertGreaterEqual(hist[""], 2)
        buckets = metric_values(text, "paddlehook_ingest_duration_seconds_bucket")
        self.assertEqual(buckets['{le="+Inf"}'], hist[""], "the +Inf bucket is the count")

    def test_metrics_are_for_local_scrapers_only_however_the_path_is_spelt(self):
        for path in ("/paddle/metrics", "/paddle/metrics%3F", "/paddle/metrics%3Fx=1", "/paddle/metrics/",
                     "/paddle//metrics", "/paddle/./metrics", "/paddle/%6detrics", "/paddle/metrics%3F?x=1"):
            r = self.H.get(path, source="127.0.0.2")
            self.assertErrorResponse(r, 403, "forbidden", "%s from another address" % path)
            self.assertNotIn(b"paddlehook_", r.body, path)
        # From the scraper's own host, only the path itself is the metrics page.
        for path in ("/paddle/metrics%3F", "/paddle/metrics%3Fx=1", "/paddle/metrics%3F?x=1"):
            self.assertErrorResponse(self.H.get(path), 404, "not_found", path)
        self.scrape()

    def test_endpoints_the_database_refuses_to_read_count_as_db_errors(self):
        before = metric_values(self.scrape(), "paddlehook_db_errors_total")[""]
        log_at = os.path.getsize(self.H.serve_log)
        self.H.sql("ALTER TABLE paddle.endpoints RENAME TO endpoints_test_gone; NOTIFY paddlehook_endpoints")
        self.addCleanup(self.H.sql, "ALTER TABLE IF EXISTS paddle.endpoints_test_gone RENAME TO endpoints; "
                                    "NOTIFY paddlehook_endpoints")
        wait_until(lambda: "event=endpoints_load_failed" in self.H.serve_log_since(log_at), timeout=10,
                   what="a worker to fail to read the endpoints")
        after = metric_values(self.scrape(), "paddlehook_db_errors_total")[""]
        failed = self.H.serve_log_since(log_at).count("event=endpoints_load_failed")
        self.assertGreaterEqual(after - before, 1)
        self.assertLessEqual(after - before, failed, "counted once per failed reload")

    def test_more_endpoints_than_the_limit_are_refused_as_such(self):
        """MAX_ENDPOINTS counts endpoints, not their secrets: one endpoint too many (no secrets, one row each)
        is refused, and the reason says so."""
        have = int(self.H.sql_value("SELECT count(*) FROM paddle.endpoints"))
        log_at = os.path.getsize(self.H.serve_log)
        self.H.sql("INSERT INTO paddle.endpoints (id, name, environment) SELECT 'ep_many_' || i, 'many ' || i, "
                   "'sandbox' FROM generate_series(1, %d) i; NOTIFY paddlehook_endpoints" % (4097 - have))
        self.addCleanup(self.H.sql, "DELETE FROM paddle.endpoints WHERE id LIKE 'ep\\_many\\_%'; "
                                    "NOTIFY paddlehook_endpoints")
        wait_until(lambda: 'reason="more than 4096 endpoints"' in self.H.serve_log_since(log_at), timeout=10,
                   what="a worker to refuse the 4097th endpoint")

    def test_healthz_fails_while_deliveries_would(self):
        """A load balancer or a monitor asks healthz: it must not say ok while events cannot be stored."""
        ep = self.H.add_endpoint()

        def health():
            return self.H.get("/paddle/healthz")

        def healthz_says(message):
            return lambda: health().status == 503 and message in health().body.decode()

        self.assertEqual(health().status, 200)
        self.H.sql("ALTER SYSTEM SET default_transaction_read_only = on")
        self.H.sql("SELECT pg_reload_conf()")
        try:
            wait_until(healthz_says("the database accepts no writes"), timeout=10, what="healthz to see read-only")
            self.assertErrorResponse(self.H.post_event(ep, make_event("customer.created", sample_customer())),
                                     503, "database_unavailable")
        finally:
            self.H.sql("ALTER SYSTEM RESET default_transaction_read_only")
            self.H.sql("SELECT pg_reload_conf()")
        wait_until(lambda: health().status == 200, timeout=10, what="healthz ok again")
        self.H.sql("ALTER TABLE paddle.endpoints RENAME TO endpoints_test_gone; NOTIFY paddlehook_endpoints")
        try:
            wait_until(healthz_says("endpoints cannot be loaded"), timeout=10, what="healthz to see the endpoints")
        finally:
            self.H.sql("ALTER TABLE paddle.endpoints_test_gone RENAME TO endpoints; NOTIFY paddlehook_endpoints")
        wait_until(lambda: all(health().status == 200 for _ in range(4)), timeout=10, what="healthz ok again")

    def test_unknown_endpoint_ids_never_become_labels(self):
        self.H.post("/paddle/webhooks/ep_attacker_chosen_label", b"{}", signature="ts=1;h1=00")
        self.assertNotIn("ep_attacker_chosen_label", self.scrape())

    def test_worker_restarts_are_counted(self):
        before = metric_values(self.scrape(), "paddlehook_worker_restarts_total")[""]
        victim = self.H.worker_pids()[0]
        os.kill(victim, 9)
        self.H.wait_workers(count=2, exclude=(victim,))
        # Scrape until the supervisor's count shows (it is written when reaped).
        deadline = time.time() + 10
        while time.time() < deadline:
            now = metric_values(self.scrape(), "paddlehook_worker_restarts_total")[""]
            if now >= before + 1:
                break
            time.sleep(0.05)
        self.assertEqual(now, before + 1)


class Status(HarnessTestCase):
    def test_status_shows_outcomes_per_endpoint(self):
        ep = self.H.add_endpoint(name="status-check")

        def columns():
            line = next(l for l in self.H.cli("status").stdout.splitlines() if l.startswith(ep.id))
            return line, line.split()[-4:]   # STORED, DUPS, SIG FAIL, ERRORS as hour/day
        _, (_, _, sig_before, errors_before) = columns()   # add_endpoint's readiness probes are unsigned
        body = make_event("customer.created", sample_customer())
        for _ in range(2):
            self.H.post_event(ep, make_event("customer.created", sample_customer()))
        self.H.post_event(ep, body)
        self.H.post_event(ep, body)                                               # duplicate
        self.H.post_event(ep, body, secret="pdl_wrong")                           # invalid_signature
        self.H.post_event(ep, body, ts=int(time.time()) - 3600)                   # timestamp_out_of_range
        self.H.post(ep.path, body)                                                # missing_signature
        self.H.post_event(ep, b'{"not": "an event"}')                             # missing_field
        line, cols = columns()
        self.assertIn("status-check", line.split())
        self.assertIn("ago)", line, "last event time is shown")

        def plus(before, n):
            h, d = (int(x) for x in before.split("/"))
            return "%d/%d" % (h + n, d + n)
        self.assertEqual(cols, ["3/3", "1/1", plus(sig_before, 3), plus(errors_before, 1)])

    def test_status_names_stored_events_whose_projection_failed_until_they_are_replayed(self):
        out = self.H.cli("status").stdout
        self.assertIn("\nprojection errors: none\n", out)
        ep = self.H.add_endpoint()
        cust = sample_customer()
        body = make_event("customer.created", cust)
        self.H.sql("ALTER TABLE paddle.customers ADD CONSTRAINT test_status_email CHECK (email <> %s)"
                   % self.H.lit(cust["email"]))
        try:
            self.assertStored(self.H.post_event(ep, body))
        finally:
            self.H.sql("ALTER TABLE paddle.customers DROP CONSTRAINT test_status_email")
        eid = json.loads(body)["event_id"]
        out = self.H.cli("status").stdout
        self.assertRegex(out, r"\nprojection errors: 1 stored event\(s\) missing from the state tables; "
                              r"newest %s customer\.created, received \S+Z \(\d+s ago\)\n" % eid)
        line = next(l for l in out.splitlines() if l.startswith(ep.id))
        self.assertEqual(line.split()[-4], "1/1", "a projection failure is a stored delivery")
        # The remedy the status line names.
        self.assertEqual(self.H.sql_value("SELECT paddle.reproject_event(%s)" % self.H.lit(eid)), "ok")
        self.assertIsNotNone(self.H.state_row("paddle.customers", cust["id"]))
        self.assertIn("\nprojection errors: none\n", self.H.cli("status").stdout)

    def test_status_says_since_when_it_counts_and_shows_the_counters_with_the_database_down(self):
        """The counters start over with each serve: status says since when, or a restart reads as a receiver
        that got nothing. With the database unreachable they are what status can still show."""
        ep = self.H.add_endpoint()
        self.assertStored(self.H.post_event(ep, make_event("customer.created", sample_customer())))
        serve_started = os.stat("/proc/%d" % self.H.serve_pid()).st_mtime
        m = re.search(r"^live counters \((.*)\) since serve started at (\S+Z) \(\d+[smh] ago\)\n",
                      self.H.cli("status").stdout, re.M)
        self.assertIsNotNone(m)
        self.assertEqual(m.group(1), self.H._p("stats"))
        started = time.mktime(time.strptime(m.group(2), "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
        self.assertLess(abs(started - serve_started), 5, "the time serve started, not the time of the call")
        # A copy no serve holds: counters of the past, said so.
        copy = os.path.join(self.H.tmpdir, "stats-of-the-past")
        shutil.copyfile(self.H._p("stats"), copy)
        self.assertRegex(self.H.cli("status", "--stats-file", copy).stdout,
                         r"^counters \(%s\) that no serve holds: .*; it started at \S+Z " % re.escape(copy))
        p = self.H.cli("status", "--db", UNREACHABLE_DB, check=False)
        self.assertEqual(p.returncode, 1, p.stdout + p.stderr)
        self.assertIn("cannot connect to the database", p.stderr)
        self.assertIn("note: showing the counters only: the endpoints with deliveries since serve started",
                      p.stdout)
        line = next(l for l in p.stdout.splitlines() if l.startswith(ep.id))
        self.assertEqual(line.split()[1:5], ["?"] * 4)
        self.assertIn("ago)", line)
        self.assertEqual(line.split()[-4], "1/1")

    def test_status_without_live_counters_falls_back_to_the_database_and_says_why(self):
        short = os.path.join(self.H.tmpdir, "short-stats")
        with open(short, "wb") as f:
            f.write(b"\0" * 64)
        for path, why in ((os.path.join(self.H.tmpdir, "no-such-stats"),
                           "no such file: is `paddlehook serve` running with this --stats-file?"),
                          (self.H.tmpdir, "Is a directory"),
                          (short, "shorter than the counters: is serve starting?")):
            with self.subTest(why=why):
                p = self.H.cli("status", "--stats-file", path)
                self.assertIn("note: no live counters at %s (%s);\n      showing the last stored event only\n"
                              % (path, why), p.stdout)
        size = os.path.getsize(self.H._p("stats"))
        with open(short, "wb") as f:
            f.write(b"\0" * size)
        p = self.H.cli("status", "--stats-file", short)
        self.assertIn("(not counters of this version of paddlehook: restart serve after an upgrade)", p.stdout)

    def test_status_survives_a_serve_recreating_the_stats_file(self):
        # A serve that starts truncates the file and sizes it again; a status
        # between its open and its reads must not touch pages past the end.
        path = os.path.join(self.H.tmpdir, "stats-recreated")
        with open(self.H._p("stats"), "rb") as f:
            content = f.read()
        with open(path, "wb") as f:
            f.write(content)
        stop = threading.Event()

        def recreate():
            fd = os.open(path, os.O_RDWR)
            try:
                while not stop.is_set():
                    os.ftruncate(fd, 0)
                    time.sleep(0.002)
                    os.pwrite(fd, content, 0)
                    time.sleep(0.002)
            finally:
                os.close(fd)
        t = threading.Thread(target=recreate)
        t.start()
        try:
            runs = [self.H.cli("status", "--stats-file", path, check=False) for _ in range(40)]
        finally:
            stop.set()
            t.join()
        self.assertEqual([p.returncode for p in runs if p.returncode != 0], [])
        self.assertTrue(all(p.stdout.startswith(("note: no live counters", "counters (%s) that no serve holds"
                                                 % path)) for p in runs))


class CheckConfig(HarnessTestCase):
    def test_good_configuration_passes(self):
        before = self.H.digest()
        p = self.H.cli("check-config")
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertIn("configuration is good", p.stdout)
        self.assertRegex(p.stdout, r"ok +deliveries: this role can store and project every entity type")
        self.assertEqual(self.H.digest(), before, "the deliveries dry run left rows behind")

    def test_a_trigger_of_ones_own_that_relies_on_the_search_path_is_named(self):
        """deploy.md (0014): paddlehook's sessions search pg_catalog only, so the user's own trigger must
        qualify its names; the dry run shows one that does not."""
        self.H.sql("CREATE TABLE public.test_audit (id text); "
                   "CREATE FUNCTION public.test_audit_customer() RETURNS trigger LANGUAGE plpgsql AS "
                   "$$ BEGIN INSERT INTO test_audit VALUES (NEW.id); RETURN NULL; END $$; "
                   "CREATE TRIGGER test_audit AFTER INSERT ON paddle.customers FOR EACH ROW "
                   "EXECUTE FUNCTION public.test_audit_customer()")
        try:
            p = self.H.cli("check-config", check=False)
        finally:
            self.H.sql("DROP TRIGGER test_audit ON paddle.customers; DROP FUNCTION public.test_audit_customer(); "
                       "DROP TABLE public.test_audit")
        self.assertEqual(p.returncode, 1, p.stdout)
        self.assertRegex(p.stdout, r"PROBLEM +deliveries: customer\.created: .*test_audit.* does not exist")

    def test_a_projection_the_database_refuses_is_a_problem(self):
        """A constraint or trigger of the user's own that refuses what Paddle
        sends leaves state tables stale; the dry run names it."""
        self.H.sql("ALTER TABLE paddle.customers ADD CONSTRAINT test_check_email "
                   "CHECK (email <> 'check@example.com')")
        try:
            p = self.H.cli("check-config", check=False)
        finally:
            self.H.sql("ALTER TABLE paddle.customers DROP CONSTRAINT test_check_email")
        self.assertEqual(p.returncode, 1, p.stdout + p.stderr)
        self.assertRegex(p.stdout, r"PROBLEM +deliveries: customer\.created: paddle\.ingest_event answered "
                                   r"projection_failed, not stored")

    def test_problems_are_named_in_plain_words(self):
        loose = os.path.join(self.H.tmpdir, "loose.key")
        with open(self.H.key_file) as src, open(loose, "w") as dst:
            dst.write(src.read())
        os.chmod(loose, 0o644)
        p = self.H.cli("check-config", "--key-file", loose, "--db", UNREACHABLE_DB,
                       check=False)
        self.assertEqual(p.returncode, 1)
        self.assertRegex(p.stdout, r"PROBLEM +master key: .*is open to group or others \(mode 6\d\d\); chmod 600 it")
        self.assertRegex(p.stdout, r"PROBLEM +database connection")
        self.assertIn("configuration has problems", p.stdout)

    def test_an_environment_serve_refuses_is_a_problem(self):
        """serve refuses to start with FCGI_WEB_SERVER_ADDRS set (docs/security.md); the check before a deploy
        says so rather than passing a configuration that will not start."""
        p = self.H._run([self.H.binary, "check-config"], check=False,
                        env=dict(self.H.env(), FCGI_WEB_SERVER_ADDRS="127.0.0.1"))
        self.assertEqual(p.returncode, 1, p.stdout + p.stderr)
        self.assertRegex(p.stdout, r"PROBLEM +listen: FCGI_WEB_SERVER_ADDRS is not supported")
        self.assertRegex(self.H.cli("check-config").stdout, r"ok +listen: ")

    def test_a_secret_sealed_with_another_key_is_reported(self):
        self.H.add_endpoint()
        other = os.path.join(self.H.tmpdir, "other-%d.key" % time.time_ns())
        self.H.cli("keygen", "--out", other)
        p = self.H.cli("check-config", "--key-file", other, check=False)
        self.assertEqual(p.returncode, 1)
        self.assertRegex(p.stdout, r"PROBLEM +endpoint secrets: \d+ of \d+ active secrets were sealed with another")

    def test_an_enabled_endpoint_left_without_a_secret_is_a_problem(self):
        """deploy.md's lost master key deletes the secrets in SQL: an endpoint not given a new one answers every
        delivery 503. check-config names it, and the workers log why, until it is disabled."""
        ep = self.H.add_endpoint()
        offset = os.path.getsize(self.H.serve_log)
        self.H.sql("DELETE FROM paddle.endpoint_secrets WHERE endpoint_id = '%s'" % ep.id)
        try:
            wait_every_worker_logged(self.H, offset, "event=endpoint_without_secret endpoint=%s" % ep.id)
            r = self.H.post_event(ep, make_event("customer.created", sample_customer()))
            self.assertEqual((r.status, json.loads(r.body)["error"]), (503, "secrets_unavailable"))
            p = self.H.cli("check-config", check=False)
            self.assertEqual(p.returncode, 1, p.stdout)
            self.assertRegex(p.stdout, r"PROBLEM +endpoints: enabled without an active secret, so every delivery "
                                       r"to it gets 503 secrets_unavailable: (ep_\w+, )*%s[,;]" % ep.id)
        finally:
            self.H.cli("endpoint", "disable", ep.id)
        p = self.H.cli("check-config", check=False)
        self.assertEqual(p.returncode, 0, p.stdout)
        self.assertRegex(p.stdout, r"ok +endpoints: every enabled endpoint has an active secret")

    def test_what_serve_can_run_with_but_not_as_meant_is_a_warning(self):
        """A socket nginx cannot connect through, a stats file status cannot read: serve runs, so check-config
        warns and still exits 0."""
        sock = os.path.join(self.H.tmpdir, "warn.sock")
        p = self.H.cli("check-config", "--listen", "unix:" + sock, "--socket-mode", "0600",
                       "--stats-file", os.path.join(self.H.tmpdir, "no-such-dir", "stats"), check=False)
        self.assertEqual(p.returncode, 0, p.stdout)
        self.assertRegex(p.stdout, r"WARN +socket mode: 0600: only serve's own user may connect")
        self.assertRegex(p.stdout, r"WARN +stats file: .*no-such-dir/stats: its directory is not writable")
        p = self.H.cli("check-config", "--listen", "unix:" + sock, "--socket-mode", "0660", check=False)
        self.assertRegex(p.stdout, r"ok +socket mode: 0660\n")
        self.assertNotIn("WARN", p.stdout)


class Rekey(HarnessTestCase):
    def reload_serve(self):
        """SIGHUP to serve, then until every worker has reloaded."""
        offset = os.path.getsize(self.H.serve_log)
        os.kill(self.H.serve_pid(), signal.SIGHUP)
        wait_every_worker_logged(self.H, offset, "event=reloaded")

    def saved_and_new_key(self):
        """A copy of the key in use (to rekey back to) and a new key, both 0600 files."""
        stamp = time.time_ns()
        original, new_key = (os.path.join(self.H.tmpdir, "%s-%d.key" % (n, stamp)) for n in ("orig", "new"))
        self.H.cli("keygen", "--out", new_key)
        fd = os.open(original, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f, open(self.H.key_file) as src:
            f.write(src.read())
        return original, new_key

    def replace_key_file(self, source):
        with open(source) as src:
            text = src.read()
        with open(self.H.key_file, "w") as dst:
            dst.write(text)

    def test_rekey_rotates_the_master_key_without_rejecting_a_delivery(self):
        ep = self.H.add_endpoint()
        # Every worker has seen the endpoint (with its secret) before the rotation.
        self.reload_serve()
        original, new_key = self.saved_and_new_key()

        def delivered():
            self.assertStored(self.H.post_event(ep, make_event("customer.created", sample_customer())))

        p = self.H.cli("rekey", "--old-key-file", self.H.key_file, "--key-file", new_key)
        self.assertIn("re-sealed", p.stdout)
        self.assertIn("active secrets open with this master key",
                      self.H.cli("check-config", "--key-file", new_key, check=False).stdout)
        # Workers still hold the old key: they keep the secrets they had.
        for _ in range(4):
            delivered()
        # The new key goes where serve reads it; SIGHUP makes serve and workers re-read it.
        self.replace_key_file(new_key)
        self.reload_serve()
        for _ in range(4):
            delivered()
        # A worker forked after the reload gets the new key from the supervisor.
        victim = self.H.worker_pids()[0]
        os.kill(victim, 9)
        self.H.wait_workers(count=2, exclude=(victim,))
        for _ in range(4):
            delivered()
        # Back to the harness key for the other tests.
        self.H.cli("rekey", "--old-key-file", new_key, "--key-file", original)
        self.replace_key_file(original)
        self.reload_serve()
        delivered()
        self.assertEqual(self.H.cli("check-config", check=False).returncode, 0)

    def test_a_rekey_whose_commit_answer_is_lost_finds_out_that_it_took_effect(self):
        """Rekey must not tell the operator to keep the old key when the commit took place: neither when the
        session ended (the commit visible at once) nor when only the client lost it (the commit still waiting
        for a synchronous standby, done a second later)."""
        self.H.add_endpoint()
        for cut in ("server", "client"):
            original, new_key = self.saved_and_new_key()
            # Back to the harness key for the other tests, whatever happens here.
            self.addCleanup(self.H.cli, "rekey", "--old-key-file", new_key, "--key-file", original, check=False)
            proc = self.H.cli_losing_commit_answer(["rekey", "--old-key-file", self.H.key_file, "--key-file",
                                                    new_key], cut=cut)
            self.assertEqual(proc.returncode, 0, proc.stderr)
            self.assertIn("the connection was lost while committing", proc.stderr)
            self.assertIn("asking the database what became of the transaction", proc.stderr)
            self.assertIn("re-sealed", proc.stdout)
            self.assertEqual(self.H.cli("check-config", "--key-file", new_key, check=False).returncode, 0, cut)
            self.H.cli("rekey", "--old-key-file", new_key, "--key-file", original)
            self.assertEqual(self.H.cli("check-config", check=False).returncode, 0)

    def test_a_rekey_that_cannot_reach_the_database_after_a_lost_answer_says_so_in_bounded_time(self):
        """Each new connection hangs until its connect_timeout (5 s here): the asking must still end, saying it
        cannot tell; the commit lands afterwards, and the new key is the one to keep."""
        self.H.add_endpoint()
        original, new_key = self.saved_and_new_key()
        self.addCleanup(self.H.cli, "rekey", "--old-key-file", new_key, "--key-file", original, check=False)
        proc = self.H.cli_losing_commit_answer(["rekey", "--old-key-file", self.H.key_file, "--key-file", new_key],
                                               cut="client-unreachable")
        self.assertEqual(proc.returncode, 1, proc.stderr)
        self.assertIn("the database cannot tell", proc.stderr)
        self.assertIn("the rekey may or may not have taken effect: keep both key files", proc.stderr)
        self.assertEqual(self.H.cli("check-config", "--key-file", new_key, check=False).returncode, 0)

    def test_an_endpoint_change_whose_answer_is_lost_is_found_out_or_said_unknown(self):
        name = "lost-answer-%d" % time.time_ns()
        # In a transaction: asked again, found committed.
        proc = self.H.cli_losing_commit_answer(["endpoint", "add", name, "--environment", "sandbox"],
                                               input=new_secret() + "\n")
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertIn("asking the database what became of the transaction", proc.stderr)
        ep_id = proc.stdout.split()[-1]
        self.assertIn(ep_id, self.H.list_endpoints())
        # A statement of its own: nothing to ask about, so said.
        proc = self.H.cli_losing_commit_answer(["endpoint", "disable", ep_id])
        self.assertEqual(proc.returncode, 1)
        self.assertIn("the change may or may not have been made; `paddlehook endpoint list` shows what is stored",
                      proc.stderr)
        self.H.cli("endpoint", "enable", ep_id)

    def test_a_lost_answer_is_settled_by_the_change_not_by_the_transaction_id(self):
        """After a failover the transaction id of a lost commit may name another's transaction, committed. Here
        the commit does take place, and another session removes its new secret before the command can look: the
        id says committed, the change is not there, and the change decides."""
        ep = self.H.add_endpoint()
        newest = self.H.sql_value("SELECT max(id) FROM paddle.endpoint_secrets WHERE endpoint_id = %s"
                                  % self.H.lit(ep.id))
        remover = []

        def remove_the_new_secret_once_committed():
            # Queued behind the command's lock on the table, it runs first once the commit ends; the command's
            # look at the table then waits for it.
            sql = ("SET application_name = 'test_remover'; BEGIN; "
                   "LOCK TABLE paddle.endpoint_secrets IN ACCESS EXCLUSIVE MODE; "
                   "DELETE FROM paddle.endpoint_secrets WHERE endpoint_id = %s AND id > %s; COMMIT;"
                   % (self.H.lit(ep.id), newest))
            remover.append(threading.Thread(target=self.H.sql, args=(sql,)))
            remover[0].start()
            wait_until(lambda: self.H.sql_value("SELECT wait_event_type FROM pg_stat_activity "
                                                "WHERE application_name = 'test_remover'") == "Lock",
                       timeout=10, what="the remover to wait for the command's lock")
        try:
            proc = self.H.cli_losing_commit_answer(["endpoint", "rotate", ep.id], input=new_secret() + "\n",
                                                   cut="client", before_release=remove_the_new_secret_once_committed)
        finally:
            for t in remover:
                t.join(30)
        self.assertEqual(proc.returncode, 1, proc.stderr)
        self.assertIn("the database does not hold the change: it did not commit", proc.stderr)

    def test_a_read_whose_answer_is_lost_says_nothing_of_changes(self):
        tag = "test_endpoints_locked"
        held = self.H.in_flight("LOCK TABLE paddle.endpoints IN ACCESS EXCLUSIVE MODE", 3, tag)
        try:
            proc = subprocess.Popen([self.H.binary, "endpoint", "list"], env=dict(self.H.env(), PGAPPNAME="test_list"),
                                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True)
            listing = "SELECT pid FROM pg_stat_activity WHERE application_name = 'test_list' " \
                      "AND wait_event_type = 'Lock'"
            wait_until(lambda: self.H.sql(listing), timeout=10, what="endpoint list to wait for the lock")
            self.H.sql("SELECT pg_terminate_backend(pid) FROM (%s) l" % listing)
            _, err = proc.communicate(timeout=30)
        finally:
            held.join(30)
        self.assertEqual(proc.returncode, 1)
        self.assertNotIn("may or may not", err)

    def test_secret_retired_before_the_new_key_is_loaded_stops_verifying(self):
        # After rekey the workers (still on the old key) cannot open any secret and keep the ones they
        # held; a secret retired in that window must not be among them.
        ep = self.H.add_endpoint()
        retired = ep.secret
        kept = self.H.rotate_endpoint(ep)
        self.reload_serve()
        original, new_key = self.saved_and_new_key()

        def post(secret):
            return self.H.post_event(ep, make_event("customer.created", sample_customer()), secret=secret)

        self.H.cli("rekey", "--old-key-file", self.H.key_file, "--key-file", new_key)
        log_at = os.path.getsize(self.H.serve_log)
        self.H.retire_secrets(ep)
        # Every worker reloads on the retirement's NOTIFY and keeps one secret: the active one.
        wait_every_worker_logged(self.H, log_at, "event=endpoint_secret_unreadable endpoint=%s kept=1" % ep.id)
        streak = [0]

        def refused():
            streak[0] = streak[0] + 1 if post(retired).status == 401 else 0
            return streak[0] >= 2 * self.H.workers
        try:
            wait_until(refused, timeout=10, interval=0.05, what="the retired secret to be refused by every worker")
            for _ in range(2 * self.H.workers):
                self.assertStored(post(kept))
        finally:
            self.H.cli("rekey", "--old-key-file", new_key, "--key-file", original)
            self.reload_serve()
        self.assertStored(post(kept))

    def test_endpoint_whose_secrets_do_not_open_answers_503_not_401(self):
        # Its secret does not open with serve's master key: a configuration fault, not the sender's.
        # (endpoint add refuses a key that does not open the stored secrets, so the row is written here,
        # with a ciphertext of the right size that no key opens.)
        ep_id = "ep_" + _secrets.token_hex(10)
        secret = new_secret()
        log_at = os.path.getsize(self.H.serve_log)
        self.H.sql("INSERT INTO paddle.endpoints (id, name, environment, tolerance_seconds) "
                   "VALUES (%s, 'sealed-elsewhere', 'sandbox', 300); "
                   "INSERT INTO paddle.endpoint_secrets (endpoint_id, sealed, hint) "
                   "VALUES (%s, decode(%s, 'hex'), 'xxxx')"
                   % (self.H.lit(ep_id), self.H.lit(ep_id), self.H.lit(_secrets.token_hex(40 + len(secret)))))
        path = "/paddle/webhooks/" + ep_id
        body = make_event("customer.created", sample_customer())
        try:
            # (kept=0 from a worker that reloads twice: once per table the statement changes)
            wait_every_worker_logged(self.H, log_at, "event=endpoint_secret_unreadable endpoint=%s " % ep_id)
            for _ in range(2 * self.H.workers):
                r = self.H.post(path, body, signature=self.H.sign(body, secret))
                self.assertErrorResponse(r, 503, "secrets_unavailable")
                self.assertIsNotNone(r.headers.get("retry-after"))
        finally:
            # rekey (other tests) re-seals every stored secret and refuses one it cannot open
            self.H.sql("DELETE FROM paddle.endpoint_secrets WHERE endpoint_id = %s; "
                       "DELETE FROM paddle.endpoints WHERE id = %s" % (self.H.lit(ep_id), self.H.lit(ep_id)))

    def test_a_change_made_in_sql_reaches_every_running_worker(self):
        """Not only the commands: the endpoint tables' trigger tells the workers of any change when it commits
        (here an endpoint disabled by hand, as an operator might in psql)."""
        ep = self.H.add_endpoint()
        self.assertStored(self.H.post_event(ep, make_event("customer.created", sample_customer())))
        self.H.sql("UPDATE paddle.endpoints SET enabled = false WHERE id = %s" % self.H.lit(ep.id))
        try:
            def every_worker_refuses():
                codes = [self.H.post_event(ep, make_event("customer.created", sample_customer())).status
                         for _ in range(2 * self.H.workers)]
                return all(c == 410 for c in codes)
            wait_until(every_worker_refuses, timeout=10, interval=0.1, what="every worker to see the endpoint disabled")
        finally:
            self.H.sql("UPDATE paddle.endpoints SET enabled = true WHERE id = %s" % self.H.lit(ep.id))

    def test_the_secrets_lock_refuses_a_transaction_that_would_read_rows_older_than_its_wait(self):
        """Under REPEATABLE READ the rows read after the lock wait would be those of the snapshot before it."""
        for level in ("REPEATABLE READ", "SERIALIZABLE"):
            with self.subTest(level=level):
                with self.assertRaises(HarnessError) as cm:
                    self.H.sql("BEGIN ISOLATION LEVEL %s; SELECT * FROM paddle.lock_endpoint_secrets(false); "
                               "COMMIT" % level)
                self.assertIn("must run in a READ COMMITTED transaction", str(cm.exception))
        self.assertIsNotNone(self.H.sql("BEGIN; SELECT count(*) FROM paddle.lock_endpoint_secrets(true); COMMIT"))

    def test_a_secret_sealed_with_another_key_than_the_stored_ones_is_refused(self):
        ep = self.H.add_endpoint()
        other = os.path.join(self.H.tmpdir, "other-%d.key" % time.time_ns())
        self.H.cli("keygen", "--out", other)
        before = self.H.sql_value("SELECT count(*) FROM paddle.endpoint_secrets")
        for argv in (("endpoint", "add", "wrong-key"), ("endpoint", "rotate", ep.id)):
            p = self.H.cli(*argv, "--key-file", other, input=new_secret() + "\n", check=False)
            self.assertEqual(p.returncode, 1, argv)
            self.assertIn("none of the stored secrets opens with this master key", p.stderr)
        self.assertEqual(self.H.sql_value("SELECT count(*) FROM paddle.endpoint_secrets"), before)
        self.assertEqual(self.H.sql_value("SELECT count(*) FROM paddle.endpoints WHERE name = 'wrong-key'"), "0")

    def test_a_secret_added_while_rekey_runs_is_not_left_on_the_old_key(self):
        """rekey waits here on a secret row another session holds; an
        endpoint add with the old key, started meanwhile, must either be
        re-sealed by the rekey or refused, never stored on the old key, also
        where sessions default to REPEATABLE READ."""
        self.H.add_endpoint()
        original, new_key = self.saved_and_new_key()

        secret_file = os.path.join(self.H.tmpdir, "racer-%d.secret" % time.time_ns())
        with open(secret_file, "w") as f:
            f.write(new_secret() + "\n")
        # A role or database whose default isolation is stricter (supported: the commands choose their own).
        env = dict(self.H.env(), PGOPTIONS="-c default_transaction_isolation=repeatable\\ read")
        rekey = add = None
        holder = self.H.in_flight("SELECT id FROM paddle.endpoint_secrets ORDER BY id LIMIT 1 FOR UPDATE", 3,
                                  "test_row_holder")
        try:
            rekey = subprocess.Popen([self.H.binary, "rekey", "--old-key-file", self.H.key_file, "--key-file",
                                      new_key], env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
            self.H.wait_lock_waiters("SELECT paddle.endpoint_reseal_secret", what="rekey waiting on the row")
            with open(secret_file) as stdin:
                add = subprocess.Popen([self.H.binary, "endpoint", "add", "racer"], env=env, stdin=stdin,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            self.H.wait_lock_waiters("SELECT sealed_hex FROM paddle.lock_endpoint_secrets",
                                     what="endpoint add waiting for rekey")
            holder.join()
            _, rekey_err = rekey.communicate(timeout=30)
            add_out, add_err = add.communicate(timeout=30)
            self.assertEqual(rekey.returncode, 0, rekey_err)
            self.assertEqual(add.returncode, 1, add_out + add_err)
            self.assertIn("none of the stored secrets opens with this master key", add_err)
            p = self.H.cli("check-config", "--key-file", new_key, check=False)
            self.assertNotIn("sealed with another master key", p.stdout)
        finally:
            holder.join()
            for proc in (rekey, add):
                if proc is not None and proc.poll() is None:
                    proc.communicate(timeout=30)
            if rekey is not None and rekey.returncode == 0:
                self.H.cli("rekey", "--old-key-file", new_key, "--key-file", original)
            self.reload_serve()

    def test_rekey_with_the_wrong_old_key_changes_nothing(self):
        wrong = os.path.join(self.H.tmpdir, "wrong-%d.key" % time.time_ns())
        self.H.cli("keygen", "--out", wrong)
        p = self.H.cli("rekey", "--old-key-file", wrong, "--key-file", self.H.key_file, check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("nothing changed", p.stderr)
        self.assertEqual(self.H.cli("check-config", check=False).returncode, 0)


class ConfigLayers(HarnessTestCase):
    def write_config(self, text):
        path = os.path.join(self.H.tmpdir, "paddlehook-%d.conf" % time.time_ns())
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_option_beats_environment_beats_file(self):
        conf = self.write_config("# comment\ntolerance = 111\nworkers = 3\n")
        secret = new_secret()
        p = self.H.cli("endpoint", "add", "layer-file-%d" % time.time_ns(), "--config", conf, input=secret + "\n")
        self.assertIn("tolerance 111s", p.stdout)
        env = dict(self.H.env(), PADDLEHOOK_CONFIG=conf, PADDLEHOOK_TOLERANCE="222")
        p = self.H._run([self.H.binary, "endpoint", "add", "layer-env-%d" % time.time_ns()],
                        input=secret + "\n", env=env, check=False)
        self.assertIn("tolerance 222s", p.stdout, p.stderr)
        p = self.H._run([self.H.binary, "endpoint", "add", "layer-opt-%d" % time.time_ns(), "--tolerance", "333"],
                        input=secret + "\n", env=env, check=False)
        self.assertIn("tolerance 333s", p.stdout, p.stderr)

    def test_config_file_errors_name_the_line(self):
        conf = self.write_config("workers = 2\nwrokers = 3\n")
        p = self.H.cli("check-config", "--config", conf, check=False)
        self.assertEqual(p.returncode, 2)
        self.assertIn(":2: unknown setting 'wrokers'", p.stderr)
        # Set twice: which would win is no rule to rely on.
        conf = self.write_config("workers = 2\n# more workers\nworkers = 8\n")
        p = self.H.cli("check-config", "--config", conf, check=False)
        self.assertEqual((p.returncode, p.stdout), (2, ""), p.stderr)
        self.assertIn("%s:3: workers is set already, on line 1" % conf, p.stderr)

    def test_invalid_values_stop_the_command_with_exit_2(self):
        for option, value, message in (("--socket-mode", "-0", "socket_mode takes an octal mode"),
                                       ("--socket-mode", " +660", "socket_mode takes an octal mode"),
                                       ("--socket-mode", "0999", "socket_mode takes an octal mode"),
                                       ("--socket-mode", "01000", "socket_mode takes an octal mode"),
                                       ("--workers", "0", "workers must be from 1 to 256"),
                                       ("--workers", "12abc", "workers must be from 1 to 256"),
                                       ("--max-body", "67108865", "max_body must be from 1 to 67108864"),
                                       ("--tolerance", "-5", "tolerance takes seconds"),
                                       ("--log-level", "loud", "log_level must be"),
                                       ("--format", "xml", "--format must be")):
            p = self.H.cli("check-config", option, value, check=False)
            self.assertEqual((p.returncode, p.stdout), (2, ""), (option, value))
            self.assertIn(message, p.stderr, (option, value))
        self.assertEqual(self.H.cli("check-config", "--socket-mode", "0660", check=False).returncode, 0)

    def test_a_bad_value_names_where_it_came_from(self):
        conf = self.write_config("tolerance = 60\nworkers = 4  # four\n")
        p = self.H.cli("check-config", "--config", conf, check=False)
        self.assertEqual(p.returncode, 2)
        self.assertIn("workers must be from 1 to 256 (%s:2: '4  # four'; a comment goes on a line of its own)"
                      % conf, p.stderr)
        p = self.H._run([self.H.binary, "check-config"], env=dict(self.H.env(), PADDLEHOOK_MAX_BODY="0"),
                        check=False)
        self.assertEqual(p.returncode, 2)
        self.assertIn("max_body must be from 1 to 67108864 bytes (PADDLEHOOK_MAX_BODY: '0')", p.stderr)
        p = self.H.cli("check-config", "--log-level", "loud", check=False)
        self.assertIn("log_level must be error, warn, info or debug (--log-level: 'loud')", p.stderr)

    def test_a_connection_string_libpq_cannot_read_stops_every_command_without_showing_it(self):
        """libpq quotes a connection string it cannot read, password and all; paddlehook says why without it, and
        before serve could write it to a log."""
        password = "S3cret-%d" % time.time_ns()
        for value in ("postgresql://paddlehook:%s@[db.internal/billing" % password,
                      "postgresql://paddlehook:%s@db.internal/billing?bogus=1" % password,
                      "postgresql://paddlehook:%s%%zz@db.internal/billing" % password,
                      "postgres:/paddlehook:%s@db.internal/billing" % password,
                      "host=db.internal password=%s extra" % password,
                      "host=db.internal password='%s" % password,
                      # A raw @ or / in the password: libpq would read its tail as the host, port or database.
                      "postgresql://paddlehook:Pa@%s@db.internal/billing" % password,
                      "postgresql://paddlehook:%s/x@db.internal/billing" % password,
                      "postgresql://paddlehook:%s/x@db.internal" % password,
                      "postgresql://paddlehook:x?y@%s@db.internal/billing" % password,
                      "postgresql://paddlehook:x?y@c/%s@db.internal/billing" % password,
                      "postgresql://paddlehook:2024/%s@db.internal" % password):
            conf = self.write_config("db = %s\n" % value)
            for argv, env in ((["check-config", "--db", value], {}),
                              (["serve", "--listen", "unix:" + os.path.join(self.H.tmpdir, "unused.sock")],
                               {"PADDLEHOOK_DB": value}),
                              (["report", "mrr", "--config", conf], {"PADDLEHOOK_DB": ""})):
                with self.subTest(value=value, argv=argv[0]):
                    p = self.H._run([self.H.binary] + argv, env=dict(self.H.env(), **env), check=False)
                    self.assertEqual((p.returncode, p.stdout), (2, ""), p.stderr)
                    self.assertIn("db is not a connection string libpq can read: ", p.stderr)
                    self.assertNotIn(password, p.stderr)
        p = self.H.cli("check-config", "--db", "postgresql://paddlehook:%s@[db" % password, check=False)
        self.assertIn("in IPv6 host address in URI: '...' (--db)", p.stderr)
        p = self.H.cli("check-config", "--db", "postgres:/paddlehook:%s@db" % password, check=False)
        self.assertIn("a connection URI starts with postgresql:// or postgres:// (--db)", p.stderr)
        p = self.H.cli("check-config", "--db", "postgresql://paddlehook:%s/x@db" % password, check=False)
        self.assertIn("write them percent-encoded in a user name or password (%40, %2F) (--db)", p.stderr)
        # An @ in a database name or a query value is no password's tail.
        for value in ("postgresql://postgres@127.0.0.1:%d/paddlehook?sslkey=/etc/ssl/u@h.key" % self.H.pg_port,
                      "postgresql://127.0.0.1:%d/paddlehook?user=postgres&application_name=a@b" % self.H.pg_port,
                      "postgresql://postgres@[::1],127.0.0.1:1,%d/my@db" % self.H.pg_port):
            with self.subTest(value=value):
                p = self.H.cli("check-config", "--db", value, check=False)
                self.assertNotEqual(p.returncode, 2, p.stderr)
        # Encoded, they are the password's (which the test server, trusting every local session, does not ask).
        p = self.H.cli("check-config", "--db", "postgresql://postgres:Pa%%40%s%%2F?@127.0.0.1:%d/paddlehook"
                       % (password, self.H.pg_port), check=False)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        # A name alone is the name of a database, as libpq takes it.
        p = self.H.cli("check-config", "--db", "no_such_database", check=False)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertEqual(self.H.cli("check-config", "--db", self.H.conninfo, check=False).returncode, 0)

    def test_usage_errors_exit_2_and_help_exits_0(self):
        for argv, message in ((("frobnicate",), "unknown command 'frobnicate'"),
                              (("status", "--frob"), "unknown or incomplete option '--frob'"),
                              ((), "usage: paddlehook COMMAND")):
            p = self.H._run([self.H.binary] + list(argv), env=self.H.env(), check=False)
            self.assertEqual((p.returncode, p.stdout), (2, ""), argv)
            self.assertIn(message, p.stderr, argv)
        p = self.H._run([self.H.binary, "--help"], env=self.H.env(), check=False)
        self.assertEqual((p.returncode, p.stderr), (0, ""))
        self.assertTrue(p.stdout.startswith("usage: paddlehook COMMAND"), p.stdout)

    def test_missing_explicit_config_file_is_an_error(self):
        # Every spelling getopt takes names the file, abbreviations too.
        for argv in (("--config", "/nonexistent/paddlehook.conf"), ("--config=/nonexistent/paddlehook.conf",),
                     ("--conf", "/nonexistent/paddlehook.conf"), ("--con=/nonexistent/paddlehook.conf",)):
            p = self.H.cli("check-config", *argv, check=False)
            self.assertEqual(p.returncode, 2, argv)
            self.assertIn("cannot read config file /nonexistent/paddlehook.conf", p.stderr, argv)


class JsonLogs(HarnessTestCase):
    def test_request_log_lines_never_carry_secrets_or_payloads(self):
        ep = self.H.add_endpoint()
        marker = "payload-marker-%d" % time.time_ns()
        body = make_event("customer.created", sample_customer(name=marker))
        self.assertStored(self.H.post_event(ep, body))
        with open(self.H.serve_log) as f:
            log = f.read()
        self.assertNotIn(marker, log)
        self.assertNotIn(ep.secret, log)
        self.assertRegex(log, r"event=request endpoint=%s event_id=evt_\w+ event_type=customer.created "
                              r"status=200 outcome=stored duration_ms=[\d.]+" % ep.id)


class Durability(HarnessTestCase):
    def test_synchronous_commit_off_is_raised_for_the_worker_sessions(self):
        # The harness runs PostgreSQL with synchronous_commit = off for speed;
        # a 2xx must still mean the commit reached WAL on disk.
        self.assertEqual(self.H.sql_value("SHOW synchronous_commit"), "off")
        with open(self.H.serve_log) as f:
            log = f.read()
        self.assertIn("event=synchronous_commit_raised from=off to=local", log)

    def test_a_reload_applies_a_synchronous_commit_raised_on_the_server(self):
        """The workers raised off to local when they connected; synchronous replication turned on since must
        apply from the next reload (SIGHUP), not only from the next connection."""
        ep = self.H.add_endpoint()
        self.H.sql("ALTER SYSTEM SET synchronous_standby_names = 'no_such_standby'")
        self.H.sql("ALTER SYSTEM SET synchronous_commit = 'on'")
        # The workers' sessions must have the new setting before they look at it, or they raise a stale `off`.
        self.H.reload_conf("synchronous_commit", "on")
        try:
            offset = os.path.getsize(self.H.serve_log)
            os.kill(self.H.serve_pid(), signal.SIGHUP)
            wait_every_worker_logged(self.H, offset, "event=reloaded")
            # The commit now waits for the standby that never answers: 503 once the worker gives up.
            self.assertErrorResponse(self.H.post_event(ep, make_event("customer.created", sample_customer())),
                                     503, "database_unavailable")
        finally:
            self.H.sql("ALTER SYSTEM RESET synchronous_standby_names")
            self.H.sql("ALTER SYSTEM RESET synchronous_commit")
            self.H.reload_conf("synchronous_commit", "off")
        offset = os.path.getsize(self.H.serve_log)
        os.kill(self.H.serve_pid(), signal.SIGHUP)
        wait_every_worker_logged(self.H, offset, "event=synchronous_commit_raised from=off to=local")
        self.assertStored(self.H.post_event(ep, make_event("customer.created", sample_customer())))
