"""The worker's database role (docs/security.md, "Database role"): the workers connect as a role holding only
the GRANTs of the block in docs/security.md, and can store and project every event type, but cannot read or
change what they do not need."""

import glob
import json
import os
import re
import subprocess

import harness
import hostile
from harness import make_event, paddle_id, sample_customer
from hostile import HostileHarness, event

SECURITY_DOC = os.path.join(harness.REPO_ROOT, "docs", "security.md")
WORKER_ROLE = "paddlehook_worker"
REPORTER = "paddlehook_reporter"
# A reader's function that says which value of which column it is called with (its digest: one word, any text).
SPY = ("CREATE FUNCTION pg_temp.spy(c text, v text) RETURNS boolean LANGUAGE plpgsql COST 0.0000001 AS "
       "$$ BEGIN IF v IS NOT NULL THEN RAISE NOTICE 'spy % %', c, md5(v); END IF; RETURN true; END $$;")

H = HostileHarness()
setUpModule, tearDownModule = H.start, H.stop


class HostileCase(hostile.HostileCase):
    harness = H


def documented_grants(block="worker-role"):
    """The SQL between `-- BEGIN <block>` and `-- END <block>` in docs/security.md."""
    with open(SECURITY_DOC) as f:
        text = f.read()
    m = re.search(r"-- BEGIN %s\n(.*?)-- END %s" % (block, block), text, re.S)
    if not m:
        raise AssertionError("docs/security.md has no '-- BEGIN %s' ... '-- END %s' block" % (block, block))
    return m.group(1)


def reporting_role():
    """Creates the reporting role of docs/deploy.md section 11 with its GRANTs, run as written; the names of the
    paddle objects they grant."""
    with open(os.path.join(harness.REPO_ROOT, "docs", "deploy.md")) as f:
        m = re.search(r"```sql\n(GRANT USAGE ON SCHEMA paddle TO reporter;.*?)```", f.read(), re.S)
    if not m:
        raise AssertionError("docs/deploy.md has no reporting role block")
    H.psql("DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '%s') THEN CREATE ROLE %s LOGIN; "
           "END IF; END $$;" % (REPORTER, REPORTER))
    H.psql(re.sub(r"\breporter\b", REPORTER, m.group(1)))
    return sorted(set(re.findall(r"paddle\.(\w+)", re.sub(r"--[^\n]*", "", m.group(1)))) - {"paddle"})


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
                      "subscription_items", "transaction_items", "adjustment_items", "addresses", "businesses",
                      "products", "prices", "discounts"):
            n = int(H.sql_value("SELECT count(*) FROM paddle.%s WHERE %s IN (%s)"
                                % (table, "event_id", ",".join(H.lit(e) for e in stored))))
            self.assertGreater(n, 0, "nothing projected into paddle.%s" % table)
        self.assertEqual(H.get("/paddle/healthz").status, 200)

    def test_a_database_that_revokes_execute_from_public_needs_only_the_documented_grant(self):
        H.psql("REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA paddle FROM PUBLIC")
        try:
            H.psql(documented_grants("revoked-public"))
            sub = paddle_id("sub")
            body = make_event("subscription.created", harness.sample_subscription(sub))
            self.assertStored(self.post_signed(body))
            self.assertIsNone(H.event_row(json.loads(body)["event_id"])["projection_error"])
            self.assertIsNotNone(H.state_row("paddle.subscriptions", sub))
            for call in ("SELECT * FROM paddle.claim_events('licences', 1)",
                         "SELECT paddle.queue_stored_events('licences', NULL)",
                         "SELECT paddle.queue_stored_events('licences', NULL, NULL, NULL)"):
                rc, out = psql_as(WORKER_ROLE, call)
                self.assertNotEqual(rc, 0, call)
                self.assertIn("permission denied for function", out)
            # docs/consumers.md, Privileges: a role that registers consumers needs the pattern check too
            registrar = "paddlehook_registrar"
            H.psql("DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '%s') THEN CREATE ROLE %s LOGIN; "
                   "END IF; END $$; GRANT USAGE ON SCHEMA paddle TO %s; GRANT INSERT ON paddle.consumers TO %s;"
                   % ((registrar,) * 4))
            register = "INSERT INTO paddle.consumers (name, event_types) VALUES ('%s', '{customer.*}')"
            rc, out = psql_as(registrar, register % "registered_without")
            self.assertIn("permission denied for function valid_event_type_patterns", out)
            H.psql("GRANT EXECUTE ON FUNCTION paddle.valid_event_type_patterns(text[]) TO %s" % registrar)
            self.assertEqual(psql_as(registrar, register % "registered_with"), (0, ""))
            H.psql("DELETE FROM paddle.consumers WHERE name = 'registered_with'")
        finally:
            H.psql(documented_grants("revoked-public").replace("TO paddlehook_worker", "TO PUBLIC"))

    def test_worker_role_replaces_a_sandbox_event_with_its_live_delivery(self):
        live = H.add_endpoint(environment="live")
        sandbox = H.add_endpoint(environment="sandbox")
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

    def test_migrate_as_the_worker_role_says_whose_it_is_to_run(self):
        p = H.cli("migrate", "--db", worker_conninfo(), check=False)
        self.assertEqual(p.returncode, 1, p.stdout + p.stderr)
        self.assertIn("migrate runs as the role that owns schema paddle, postgres; this connection's role is %s"
                      % WORKER_ROLE, p.stderr)
        self.assertNothingChanged()

    def test_worker_role_loads_endpoint_changes(self):
        ep = H.add_endpoint(environment="live")
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
            # The endpoint functions run with the caller's rights; the views are granted to no one.
            "SELECT * FROM paddle.endpoint_overview",
            "SELECT paddle.endpoint_set_enabled('ep_x', false)",
            "SELECT paddle.endpoint_set_tolerance('ep_x', 60)",
            "SELECT paddle.endpoint_add_secret('ep_x', '\\x00', 'x', 5)",
            "SELECT paddle.endpoint_retire_older_secrets('ep_x')",
            "SELECT paddle.endpoint_reseal_secret(1, '\\x00')",
            "SELECT * FROM paddle.lock_endpoint_secrets(false)",   # would hold rekey and rotations up
            "SELECT * FROM paddle.projection_failures",
            "CREATE FUNCTION paddle.f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
            "CREATE OR REPLACE FUNCTION paddle.ingest_event(text, text, timestamptz, text, text, text, jsonb) "
            "RETURNS text LANGUAGE sql AS 'SELECT ''stored'''",
            "SELECT paddle.reproject()",
            "UPDATE paddle.payment_events SET payload = '{}'",
            # It reads the ids it deduplicates against, never what the events said.
            "SELECT payload FROM paddle.payment_events",
            "SELECT * FROM paddle.payment_events",
            # Consumer queues are the application's: the worker's events reach them through a trigger.
            "SELECT * FROM paddle.claim_events('x')",
            "SELECT * FROM paddle.consumer_queue",
            "INSERT INTO paddle.consumer_queue (consumer, event_id, occurred_at) VALUES ('x', 'evt_x', now())",
            "SELECT * FROM paddle.consumers",
            "INSERT INTO paddle.consumers (name) VALUES ('x')",
            "SELECT paddle.queue_stored_events('x', NULL)",
            "SELECT paddle.queue_stored_events('x', NULL, NULL, NULL)",
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


    def test_the_documented_reporting_role_reads_every_object_it_is_granted_and_no_payload(self):
        """docs/deploy.md section 11: the reporting role's GRANTs, run as written, let it read each object they
        name (the report views, the state tables, the payment views), and not the stored payloads."""
        granted = reporting_role()
        self.assertIn("transaction_payments", granted)
        for name in granted:
            with self.subTest(name=name):
                self.assertEqual(psql_as(REPORTER, "SELECT count(*) >= 0 FROM paddle.%s" % name), (0, "t\n"))
        rc, out = psql_as(REPORTER, "SELECT count(*) FROM paddle.payment_events")
        self.assertNotEqual(rc, 0)
        self.assertIn("permission denied", out)

    def test_a_readers_own_function_sees_only_the_rows_a_view_returns(self):
        """A function of the reporting role's own (pg_temp takes one from every role), made as cheap as can be so
        that the planner would run it first, sees no value of a row the view leaves out: the views it may read are
        security_barrier views. Otherwise its condition runs beneath theirs, on snapshots they filter out."""
        fx = harness.fixtures_dir()
        if fx is None:
            self.skipTest("Paddle fixtures not found")
        ep = H.add_endpoint()
        ingest, fresh = [], {}
        for path in sorted(glob.glob(os.path.join(fx, "envelopes", "*.json"))):
            with open(path) as f:
                # Ids of their own, so that these snapshots touch no other test's entity.
                text = re.sub(r"\b([a-z]+)_[0-9a-z]{26}\b",
                              lambda m: fresh.setdefault(m.group(0), paddle_id(m.group(1))), f.read())
            ingest.append(H.ingest_sql(json.loads(text), ep.id, "sandbox") + ";")
        H.psql("\n".join(ingest))
        views = [v for v in reporting_role()
                 if H.sql_value("SELECT relkind FROM pg_class WHERE oid = 'paddle.%s'::regclass" % v) == "v"]
        self.assertIn("dunning", views)
        spied = 0
        for view in views:
            with self.subTest(view=view):
                leaked, seen = self.spy_on(view)
                self.assertEqual(leaked[:5], [], "values of rows paddle.%s leaves out" % view)
                spied += seen
        self.assertGreater(spied, 100, "the function saw too little to prove anything")
        # The control: without its barrier, the same look sees rows the view leaves out.
        H.psql("ALTER VIEW paddle.revenue_transactions RESET (security_barrier)")
        try:
            self.assertNotEqual(self.spy_on("revenue_transactions")[0], [], "the look cannot see a leak")
        finally:
            H.psql("ALTER VIEW paddle.revenue_transactions SET (security_barrier = true)")

    def spy_on(self, view):
        """(the digests of values the reader's function saw that paddle.view does not return, how many it saw)."""
        columns = [c for (c,) in H.sql("SELECT attname FROM pg_attribute WHERE attnum > 0 AND NOT attisdropped "
                                       "AND attrelid = 'paddle.%s'::regclass ORDER BY attnum" % view)]
        rc, out = psql_as(REPORTER, SPY + "".join(
            "SELECT count(*) FROM paddle.%s v WHERE pg_temp.spy('%s', v.%s::text);" % (view, c, c) for c in columns))
        self.assertEqual(rc, 0, out)
        seen = set(re.findall(r"NOTICE:  spy (\S+ \S+)", out))
        rc, out = psql_as(REPORTER, "SELECT c FROM paddle.%s v, LATERAL (VALUES %s) AS x(c) WHERE c IS NOT NULL"
                          % (view, ", ".join("('%s ' || md5(v.%s::text))" % (c, c) for c in columns)))
        self.assertEqual(rc, 0, out)
        return sorted(seen - set(out.splitlines())), len(seen)

    def test_every_view_but_the_raw_snapshots_is_a_security_barrier(self):
        """So that a view added later cannot forget it (a CREATE OR REPLACE VIEW without WITH (security_barrier)
        drops it). paddle.entity_snapshots shows whole payloads to whoever may read it, so it has nothing to
        hide from them, and a barrier there would stop the planner from merging it into the views above."""
        views = H.sql("SELECT c.relname FROM pg_class c WHERE c.relnamespace = 'paddle'::regnamespace "
                      "AND c.relkind = 'v' AND c.relname <> 'entity_snapshots' AND NOT EXISTS (SELECT FROM "
                      "pg_options_to_table(c.reloptions) o WHERE o.option_name = 'security_barrier' "
                      "AND o.option_value::boolean) ORDER BY 1")
        self.assertEqual(views, [])

class Logs(HostileCase):
    """Runs last in the module (classes run in name order)."""

    def test_no_secret_or_malformed_line_reaches_the_logs(self):
        self.assertLogsClean()


INTRUDER = "paddlehook_intruder"

# A built-in stand-in, as a role that may create in public plants it: the projection calls hashtextextended(text, 0),
# and this exact match would beat pg_catalog.hashtextextended(text, bigint) on a search_path that has public. It
# counts its calls in a sequence, which a rollback (check-config's dry run) does not undo.
TRAP = """
CREATE SEQUENCE public.intruder_calls;
GRANT USAGE ON SEQUENCE public.intruder_calls TO PUBLIC;
CREATE FUNCTION public.hashtextextended(t text, seed integer) RETURNS bigint LANGUAGE plpgsql AS $$
BEGIN
    PERFORM nextval('public.intruder_calls');
    RETURN pg_catalog.hashtextextended(t, seed);
END $$;
"""


class SearchPath(HostileCase):
    """Where a role may create objects in public (every role before PostgreSQL 15), its functions must never run
    inside paddle's with another session's rights: not in the workers, not in `paddlehook reproject`, not in
    paddle.reproject_event() called from psql."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        H.psql("DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '%s') THEN CREATE ROLE %s LOGIN; "
               "END IF; END $$; GRANT CREATE ON SCHEMA public TO %s;" % (INTRUDER, INTRUDER, INTRUDER))
        rc, out = psql_as(INTRUDER, TRAP)
        if rc != 0:
            raise AssertionError(out)
        # Sessions that planned the projection before the trap existed keep their plans.
        H.stop_serve()
        H.start_serve()
        H.wait_healthy()
        H.wait_endpoint_known(cls.ep)

    @classmethod
    def tearDownClass(cls):
        H.psql("DROP FUNCTION public.hashtextextended(text, integer); DROP SEQUENCE public.intruder_calls; "
               "REVOKE CREATE ON SCHEMA public FROM %s;" % INTRUDER)

    def intruded(self):
        return int(H.sql_value("SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM public.intruder_calls"))

    def test_the_intruders_function_runs_for_no_session_of_paddlehook(self):
        H.psql("SELECT hashtextextended('x', 0)")   # psql's own search_path reaches the trap
        self.assertEqual(self.intruded(), 1, "the trap is not reachable; the test proves nothing")
        H.psql("SELECT setval('public.intruder_calls', 1, false)")

        sub = paddle_id("sub")
        body = make_event("subscription.created", dict(harness.sample_subscription(sub)))
        self.assertStored(self.post_signed(body), "delivery")
        event_id = json.loads(body)["event_id"]
        self.assertEqual(H.state_row("paddle.subscriptions", sub)["event_id"], event_id)
        H.cli("reproject", "--since", "2000-01-01")
        H.cli("check-config")                       # its dry run projects through paddle.ingest_event
        H.psql("SELECT paddle.reproject_event(%s)" % H.lit(event_id))
        self.assertEqual(self.intruded(), 0, "ran with the rights of a paddlehook session")

    def assert_check_config_names(self, opening, closing, problem, fine):
        """check-config fails and says `problem` after `opening`, and says `fine` once `closing` ran."""
        H.psql(opening)
        try:
            p = H.cli("check-config", check=False)
        finally:
            H.psql(closing)
        self.assertEqual(p.returncode, 1, p.stdout)
        self.assertIn(problem, p.stdout)
        self.assertIn(fine, H.cli("check-config", check=False).stdout)

    def test_check_config_does_not_take_a_failed_read_of_the_migrations_for_a_missing_schema(self):
        tag = "migrations_held_" + paddle_id("t")[-10:]
        holder = H.in_flight("LOCK paddle.schema_migrations IN ACCESS EXCLUSIVE MODE", 2, tag)
        try:
            p = H._run([H.binary, "check-config"], check=False,
                       env=dict(H.env(), PGOPTIONS="-c lock_timeout=100"))
        finally:
            holder.join(30)
        self.assertEqual(p.returncode, 1, p.stdout)
        self.assertIn("PROBLEM  schema: cannot read paddle.schema_migrations: ", p.stdout)
        self.assertIn("lock timeout", p.stdout)
        self.assertNotIn("run `paddlehook migrate`", p.stdout)

    def test_check_config_names_a_public_schema_every_role_may_create_in(self):
        self.assert_check_config_names("GRANT CREATE ON SCHEMA public TO PUBLIC",
                                       "REVOKE CREATE ON SCHEMA public FROM PUBLIC",
                                       "REVOKE CREATE ON SCHEMA public FROM PUBLIC",
                                       "schemas: no schema is open to every role")

    def test_check_config_names_a_function_with_its_owners_rights_that_every_role_may_call(self):
        """A restore into a cluster without the roles the dump grants to loses the revokes with the grants."""
        self.assert_check_config_names(
            "GRANT EXECUTE ON FUNCTION paddle.claim_events(text, integer) TO PUBLIC",
            "REVOKE EXECUTE ON FUNCTION paddle.claim_events(text, integer) FROM PUBLIC",
            "REVOKE EXECUTE ON FUNCTION paddle.claim_events(text,integer) FROM PUBLIC",
            "function grants: paddle's functions with their owner's rights are not granted to PUBLIC")

class PersonalData(HostileCase):
    def test_the_personal_data_table_of_security_md_names_real_columns(self):
        """Every table and column docs/security.md lists as holding personal data exists, so that the list
        stays a map of the schema as it is."""
        with open(os.path.join(harness.REPO_ROOT, "docs", "security.md")) as f:
            section = f.read().split("## Personal data\n")[1].split("\n## ")[0]
        named = []
        for line in section.splitlines():
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) != 2 or not cells[0].startswith("`paddle."):
                continue
            tables = re.findall(r"`paddle\.(\w+)(?:\.(\w+))?`", cells[0])
            columns = [c for c in re.findall(r"`(\w+)`", cells[1].split(";")[0])]
            for table, column in tables:
                named += [(table, column)] if column else [(table, c) for c in columns]
        self.assertGreater(len(named), 15, section)
        existing = set(H.sql("SELECT table_name, column_name FROM information_schema.columns "
                             "WHERE table_schema = 'paddle'"))
        self.assertEqual([n for n in named if n not in existing], [])
