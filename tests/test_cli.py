"""The paddlehook command line: migrate, keygen, endpoint management, --db."""

import base64
import binascii
import json
import os
import pty
import select
import signal
import stat
import subprocess
import termios
import time

import harness
from harness import Harness, HarnessTestCase, new_secret

H = Harness(workers=1)


def setUpModule():
    H.start(serve=False, nginx=False)


def tearDownModule():
    H.stop()


def key_bytes(data):
    """The 32-byte key in raw, hex or base64 form; None if none of them."""
    if len(data) == 32:
        return data
    text = data.strip()
    for decode in (binascii.unhexlify, base64.b64decode):
        try:
            raw = decode(text)
        except (binascii.Error, ValueError):
            continue
        if len(raw) == 32:
            return raw
    return None


class Migrate(HarnessTestCase):
    harness = H

    def test_a_database_not_encoded_utf8_is_refused_by_every_command(self):
        """Paddle sends names and addresses in every script: a SQL_ASCII or LATIN1 database would refuse the
        deliveries that carry them, each time Paddle retried, while the others went through."""
        for encoding in ("SQL_ASCII", "LATIN1"):
            db = "enc_%s" % encoding.lower()
            H.sql("CREATE DATABASE %s ENCODING '%s' TEMPLATE template0" % (db, encoding))
            try:
                for argv in (("migrate",), ("check-config",), ("status",)):
                    with self.subTest(encoding=encoding, command=argv[0]):
                        p = H.cli(*argv, "--db", H.conninfo_for(db), check=False)
                        self.assertEqual(p.returncode, 1, p.stdout + p.stderr)
                        self.assertIn("database %s is encoded %s; paddlehook needs a UTF8 database" % (db, encoding),
                                      p.stdout + p.stderr)
                self.assertEqual(H.sql_value("SELECT count(*) FROM pg_namespace WHERE nspname = 'paddle'", db=db), "0")
            finally:
                H.sql("DROP DATABASE %s" % db)

    def test_migrate_is_idempotent_and_recorded(self):
        before = H.sql("SELECT * FROM paddle.schema_migrations ORDER BY 1")
        self.assertTrue(before, "paddle.schema_migrations is empty after migrate")
        files = sorted(f for f in os.listdir(os.path.join(harness.REPO_ROOT, "sql", "migrations"))
                       if f.endswith(".sql"))
        self.assertEqual(len(before), len(files), "one schema_migrations row per migration file")
        digest = H.digest()
        H.migrate()
        H.migrate()
        self.assertEqual(H.sql("SELECT * FROM paddle.schema_migrations ORDER BY 1"), before)
        self.assertEqual(H.digest(), digest)

    def test_an_empty_database_is_migrated_one_logged_step_at_a_time_and_check_config_names_what_is_missing(self):
        db = "paddlehook_empty"
        H.psql("DROP DATABASE IF EXISTS %s" % db, db="postgres")
        self.addCleanup(H.psql, "DROP DATABASE IF EXISTS %s" % db, db="postgres")
        H.psql("CREATE DATABASE %s" % db, db="postgres")
        conninfo = H.conninfo_for(db)
        p = H.cli("check-config", "--db", conninfo, check=False)
        self.assertEqual(p.returncode, 1, p.stdout)
        self.assertIn("paddle.schema_migrations is missing: run `paddlehook migrate`", p.stdout)

        p = H.cli("migrate", "--db", conninfo, "--log-format", "json")
        names = sorted(f[:-4] for f in os.listdir(os.path.join(harness.REPO_ROOT, "sql", "migrations"))
                       if f.endswith(".sql"))
        lines = [json.loads(line) for line in p.stderr.splitlines()]
        self.assertEqual([(l["level"], l["event"], l["version"]) for l in lines],
                         [("info", "migration_applied", name) for name in names])
        self.assertTrue(all(isinstance(l["pid"], int) and l["ts"] for l in lines), lines)

        H.psql("DELETE FROM paddle.schema_migrations WHERE version IN (%s, %s)"
               % (H.lit(names[0]), H.lit(names[-1])), db=db)
        p = H.cli("check-config", "--db", conninfo, check=False)
        self.assertEqual(p.returncode, 1, p.stdout)
        self.assertIn("not applied: %s, %s; run `paddlehook migrate`" % (names[0], names[-1]), p.stdout)


    def upgrade(self, roles, before, until="9999"):
        """Applies every migration to a fresh database as `paddlehook migrate` does (each in a transaction that
        records it in paddle.schema_migrations), running before[prefix] (SQL) before the migration whose file
        name starts with prefix, and stopping before the one that starts with until; returns the database's
        name. The roles exist first; the database is dropped at the end of the test."""
        db = "paddlehook_upgrade"
        mig = os.path.join(harness.REPO_ROOT, "sql", "migrations")
        H.psql("DROP DATABASE IF EXISTS %s" % db, db="postgres")
        self.addCleanup(H.psql, "DROP DATABASE IF EXISTS %s" % db, db="postgres")
        H.psql("CREATE DATABASE %s" % db, db="postgres")
        for role in roles:
            H.psql("DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '%s') THEN "
                   "CREATE ROLE %s; END IF; END $$;" % (role, role), db=db)
        H.psql("CREATE SCHEMA paddle; CREATE TABLE paddle.schema_migrations (version text PRIMARY KEY, "
               "applied_at timestamptz NOT NULL DEFAULT now())", db=db)
        for name in sorted(f for f in os.listdir(mig) if f.endswith(".sql") and f[:4] < until):
            if name[:4] in before:
                H.psql(before[name[:4]], db=db)
            with open(os.path.join(mig, name)) as f:
                H.psql("BEGIN;\n%s\nINSERT INTO paddle.schema_migrations (version) VALUES (%s);\nCOMMIT;"
                       % (f.read(), H.lit(name[:-4])), db=db)
        return db

    def test_upgrade_to_0009_grants_its_function_to_a_worker_role(self):
        """A worker that runs as its own role calls paddle.replace_sandbox_event
        from 0009 on: the migration must grant it to whoever may execute
        ingest_event, or that worker fails on every live redelivery until an
        operator re-runs the grants."""
        worker, public_worker, reader = ("paddlehook_upgrade_worker", "paddlehook_upgrade_public_worker",
                                         "paddlehook_upgrade_reader")
        # The documented worker (EXECUTE of its own), one that relies on PUBLIC's EXECUTE, and a role that may
        # run ingest_event but not insert events.
        db = self.upgrade((worker, public_worker, reader), {"0009": (
            "GRANT INSERT ON paddle.payment_events TO %s, %s;"
            "GRANT EXECUTE ON FUNCTION paddle.ingest_event(text, text, timestamptz, text, text, text, jsonb) "
            "TO %s, %s" % (worker, public_worker, worker, reader))})
        fn = "paddle.replace_sandbox_event(text, text, timestamptz, text, text, jsonb)"
        for role, expected in ((worker, "t"), (public_worker, "t"), (reader, "f"), ("public", "f")):
            with self.subTest(role=role):
                self.assertEqual(H.psql("SELECT has_function_privilege('%s', '%s', 'EXECUTE')" % (role, fn),
                                        db=db).strip(), expected)

    def test_migrate_sees_deliveries_that_commit_while_it_waits_whatever_the_default_isolation(self):
        """0012 waits for deliveries that began before 0011 and projects what they stored. Under a database
        default of repeatable read its snapshot would predate their commits: migrate runs every migration in
        read committed."""
        db = self.upgrade((), {}, until="0011")
        H.psql("ALTER DATABASE %s SET default_transaction_isolation = 'repeatable read'" % db, db="postgres")
        conninfo = H.conninfo_for(db)
        delivery = ("SET TRANSACTION ISOLATION LEVEL READ COMMITTED; SELECT paddle.ingest_event('evt_in_flight', "
                    "'address.created', '2024-02-01', NULL, 'ep_upgrade', 'live', %s)"
                    % H.lit(json.dumps({"data": {"id": "add_in_flight", "country_code": "FR"}})))
        in_flight = H.in_flight(delivery, 3, "test_delivery_in_flight", db=db)
        try:
            H.cli("migrate", "--db", conninfo)
        finally:
            in_flight.join()
        self.assertEqual(H.psql("SELECT string_agg(id || ' ' || country_code, ', ') FROM paddle.addresses",
                                db=db).strip(), "add_in_flight FR")

    def test_a_migrate_waiting_for_the_lock_says_who_holds_it(self):
        """The lock is per database: the same key held in another database is nobody's business here."""
        lock = "SELECT pg_advisory_lock(hashtext('paddlehook.migrate'))"
        elsewhere = H.in_flight(lock, 2, "test_migrate_lock_elsewhere", db="postgres")
        holder = H.in_flight(lock, 2, "test_migrate_lock_holder")
        try:
            pid = H.sql_value("SELECT pid FROM pg_stat_activity WHERE application_name = 'test_migrate_lock_holder'")
            p = H.cli("migrate")
        finally:
            holder.join()
            elsewhere.join()
        self.assertIn("event=migrate_waiting holder_pid=%s reason=" % pid, p.stderr)
        self.assertIn("schema is current", p.stdout)
        self.assertNotIn("migrate_waiting", H.cli("migrate").stderr)

    def test_a_database_statement_timeout_cuts_off_neither_migrate_nor_reproject(self):
        """A guard many databases set: migrate waits for the lock (or for deliveries, as 0012 does) and a
        rebuild waits for its tables, each longer than the timeout."""
        db = "paddlehook_timeout"
        H.psql("DROP DATABASE IF EXISTS %s" % db, db="postgres")
        self.addCleanup(H.psql, "DROP DATABASE IF EXISTS %s" % db, db="postgres")
        H.psql("CREATE DATABASE %s" % db, db="postgres")
        conninfo = H.conninfo_for(db)
        H.cli("migrate", "--db", conninfo)
        H.psql("ALTER DATABASE %s SET statement_timeout = '300ms'" % db, db="postgres")

        def behind(lock, *command):
            """command, while another session holds lock for 1.5 s"""
            holder = H.in_flight("SET statement_timeout = 0; " + lock, 1.5, "test_timeout_holder", db=db)
            try:
                p = H.cli(*command, "--db", conninfo, check=False)
            finally:
                holder.join()
            self.assertEqual(p.returncode, 0, p.stderr)
            return p
        p = behind("SELECT pg_advisory_lock(hashtext('paddlehook.migrate'))", "migrate")
        self.assertIn("migrate_waiting", p.stderr)
        p = behind("LOCK TABLE paddle.customers IN SHARE UPDATE EXCLUSIVE MODE", "reproject")
        self.assertIn("replayed 0 event(s)", p.stdout)

    def test_a_migration_whose_commit_answer_is_lost_is_not_called_failed(self):
        """Two migrations to apply: the first one's commit is found to have taken place, and migrate stops there
        (its connection is gone) saying so; run again, it applies the second."""
        names = sorted(f[:-4] for f in os.listdir(os.path.join(harness.REPO_ROOT, "sql", "migrations"))
                       if f.endswith(".sql"))
        db = self.upgrade((), {}, until=names[-2][:4])
        conninfo = H.conninfo_for(db)
        p = H.cli_losing_commit_answer(["migrate", "--db", conninfo])
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn("asking the database what became of the transaction", p.stderr)
        self.assertIn("event=migration_applied version=%s" % names[-2], p.stderr)
        self.assertIn("the connection was lost after migration %s was applied; run migrate again" % names[-2],
                      p.stderr)
        p = H.cli("migrate", "--db", conninfo)
        self.assertIn("applied 1 migration(s); schema is current", p.stdout)
        self.assertEqual(H.psql("SELECT count(*) FROM paddle.schema_migrations WHERE version IN (%s, %s)"
                                % (H.lit(names[-2]), H.lit(names[-1])), db=db).strip(), "2")

    def test_what_a_migration_says_reaches_the_log(self):
        """A migration that waits tells the operator why (0012's NOTICE); "already exists, skipping" does not
        clutter the log. Here the database's own event trigger speaks while the last migration runs."""
        names = sorted(f[:-4] for f in os.listdir(os.path.join(harness.REPO_ROOT, "sql", "migrations"))
                       if f.endswith(".sql"))
        db = self.upgrade((), {}, until=names[-1][:4])
        H.psql("CREATE FUNCTION public.say_ddl() RETURNS event_trigger LANGUAGE plpgsql AS $$ BEGIN "
               "RAISE NOTICE 'the database saw %', tg_tag; END $$; "
               "CREATE EVENT TRIGGER say_ddl ON ddl_command_end EXECUTE FUNCTION public.say_ddl()", db=db)
        conninfo = H.conninfo_for(db)
        p = H.cli("migrate", "--db", conninfo)
        self.assertRegex(p.stderr, r"level=info pid=\d+ event=db_notice severity=NOTICE message=\"the database saw ")
        self.assertIn("event=migration_applied version=%s" % names[-1], p.stderr)

    def test_upgrade_to_0011_projects_stored_events_and_grants_their_tables(self):
        """address.*, business.*, product.*, price.* and discount.* events stored before 0011 become state rows,
        and so do those a delivery that started before 0011 committed stored without projecting them (0012); a
        worker running as its own role may write the new tables (or it would fail on every such event until the
        grants are re-run); a role that may read customers may read them."""
        worker, reader, other = ("paddlehook_upgrade_worker", "paddlehook_upgrade_reader",
                                 "paddlehook_upgrade_other")
        stored = "".join(
            "SELECT paddle.ingest_event('evt_upgrade_%d', '%s', '2024-01-0%d', NULL, 'ep_upgrade', 'live', %s);"
            % (i, event_type, i, H.lit(json.dumps({"data": data}))) for i, (event_type, data) in enumerate((
                ("address.created", {"id": "add_upgrade", "country_code": "DE"}),
                ("address.updated", {"id": "add_upgrade", "country_code": "IN"}),
                ("business.created", {"id": "biz_upgrade", "name": "Acme"}),
                ("product.created", {"id": "pro_upgrade", "name": "Pro"}),
                ("price.created", {"id": "pri_upgrade", "product_id": "pro_upgrade",
                                   "unit_price": {"amount": "1000", "currency_code": "USD"}}),
                ("discount.created", {"id": "dsc_upgrade", "code": "LAUNCH", "type": "percentage",
                                      "amount": "12.5"})), 1))
        # What a delivery running the old ingest_event stores when it commits after 0011's look: no projection
        # (received two hours ago: its commit waited, e.g. for a synchronous standby).
        in_flight = ("INSERT INTO paddle.payment_events (event_id, endpoint_id, environment, event_type, occurred_at, "
                     "received_at, payload) VALUES ('evt_upgrade_in_flight', 'ep_upgrade', 'live', 'address.created', "
                     "'2024-02-01', now() - interval '2 hours', %s)"
                     % H.lit(json.dumps({"data": {"id": "add_in_flight", "country_code": "FR"}})))
        db = self.upgrade((worker, reader, other), {
            "0011": "GRANT SELECT, INSERT, UPDATE ON paddle.customers TO %s; GRANT SELECT ON paddle.customers TO %s; %s"
                    % (worker, reader, stored),
            "0012": in_flight})
        self.assertEqual(H.psql("SELECT string_agg(id || ' ' || environment || ' ' || coalesce(country_code, '-'), "
                                "', ' ORDER BY id) FROM paddle.addresses", db=db).strip(),
                         "add_in_flight live FR, add_upgrade live IN")
        self.assertEqual(H.psql("SELECT string_agg(id || ' ' || name, ', ') FROM paddle.businesses", db=db).strip(),
                         "biz_upgrade Acme")
        self.assertEqual(H.psql("SELECT (SELECT name FROM paddle.products) || ' ' || (SELECT product_id || ' ' || "
                                "unit_price_amount FROM paddle.prices) || ' ' || (SELECT code || ' ' || amount "
                                "FROM paddle.discounts)", db=db).strip(), "Pro pro_upgrade 1000 LAUNCH 12.5")
        for role, privilege, expected in ((worker, "INSERT", "t"), (worker, "UPDATE", "t"), (worker, "SELECT", "t"),
                                          (reader, "SELECT", "t"), (reader, "INSERT", "f"), (other, "SELECT", "f")):
            for table in ("paddle.addresses", "paddle.businesses", "paddle.products", "paddle.prices",
                          "paddle.discounts"):
                with self.subTest(role=role, privilege=privilege, table=table):
                    self.assertEqual(H.psql("SELECT has_table_privilege('%s', '%s', '%s')" % (role, table, privilege),
                                            db=db).strip(), expected)


    def test_upgrade_to_0022_grants_its_views_to_readers_not_to_the_worker(self):
        """A role granted SELECT on transactions may read the payment views 0022 adds; the worker's role, which
        stores events, gets none of them, and neither does a role with no read of transactions. A member of a
        reader group reads them through the group only, so that leaving the group ends its access."""
        worker, reader, member, other = ("paddlehook_upgrade_worker", "paddlehook_upgrade_reader",
                                         "paddlehook_upgrade_member", "paddlehook_upgrade_other")
        db = self.upgrade((worker, reader, member, other), {"0022": (
            "GRANT SELECT, INSERT, UPDATE ON paddle.transactions TO %s; GRANT INSERT ON paddle.payment_events TO %s;"
            "GRANT SELECT ON paddle.transactions TO %s; GRANT %s TO %s" % (worker, worker, reader, reader, member))})
        for view in ("paddle.transaction_payments", "paddle.payment_methods", "paddle.payouts"):
            with self.subTest(view=view):
                self.assertEqual(H.psql("SELECT string_agg(DISTINCT a.grantee::regrole::text, ',') FROM pg_class c, "
                                        "aclexplode(c.relacl) a WHERE c.oid = '%s'::regclass AND a.grantee <> c.relowner"
                                        % view, db=db).strip(), reader)
                self.assertEqual(H.psql("SELECT has_table_privilege('%s', '%s', 'SELECT')" % (member, view),
                                        db=db).strip(), "t")

class Keygen(HarnessTestCase):
    harness = H

    def test_keygen_writes_a_32_byte_key_with_mode_0600(self):
        path = os.path.join(H.tmpdir, "k1.key")
        H.cli("keygen", "--out", path)
        st = os.stat(path)
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o600)
        with open(path, "rb") as f:
            k1 = key_bytes(f.read())
        self.assertIsNotNone(k1, "not a 32-byte key (raw, hex or base64)")
        path2 = os.path.join(H.tmpdir, "k2.key")
        H.cli("keygen", "--out", path2)
        with open(path2, "rb") as f:
            self.assertNotEqual(key_bytes(f.read()), k1, "two keygens wrote the same key")

    def test_keygen_never_overwrites_an_existing_key(self):
        path = os.path.join(H.tmpdir, "k3.key")
        H.cli("keygen", "--out", path)
        with open(path, "rb") as f:
            first = f.read()
        p = H.cli("keygen", "--out", path, check=False)
        self.assertNotEqual(p.returncode, 0, "keygen overwrote an existing key file")
        with open(path, "rb") as f:
            self.assertEqual(f.read(), first)

    def test_key_file_readable_by_others_is_refused(self):
        path = os.path.join(H.tmpdir, "loose.key")
        with open(H.key_file, "rb") as src, open(path, "wb") as dst:
            dst.write(src.read())
        os.chmod(path, 0o644)
        p = H.cli("endpoint", "add", "loose-key", "--key-file", path, input=new_secret() + "\n",
                  check=False)
        self.assertNotEqual(p.returncode, 0, "a world-readable key file was accepted")


    def test_no_key_file_names_every_place_to_set_one(self):
        p = H.cli("check-config", "--key-file", "", check=False)
        self.assertEqual(p.returncode, 1, p.stdout)
        self.assertIn("no key file: set key_file in the configuration file, pass --key-file or set "
                      "PADDLEHOOK_KEY_FILE", p.stdout)


class Version(HarnessTestCase):
    harness = H

    def test_version_prints_the_version_built_in(self):
        """`--version` and `version` print what the Makefile compiled in (git describe, or "unknown" outside
        git), read no configuration and need no database."""
        for arg in ("--version", "version"):
            with self.subTest(arg=arg):
                p = subprocess.run([H.binary, arg], capture_output=True, text=True, timeout=30,
                                   env=dict(H.env(), PADDLEHOOK_CONFIG="/nonexistent/paddlehook.conf",
                                            PADDLEHOOK_DB="host=/nonexistent"))
                self.assertEqual((p.returncode, p.stderr), (0, ""))
                self.assertRegex(p.stdout, r"^paddlehook [0-9A-Za-z][0-9A-Za-z.+_-]*\n$")
        with open(os.path.join(harness.REPO_ROOT, "build", "version.h")) as f:
            built = f.read()
        self.assertIn('"%s"' % p.stdout.split()[1], built)
        p = H.cli("--help")
        self.assertIn("--version", p.stdout)


class Sign(HarnessTestCase):
    harness = H

    def test_a_body_that_cannot_be_read_is_not_signed(self):
        """A read error is not the end of the body: what came before it is not what was meant to be signed."""
        path = os.path.join(H.tmpdir, "sign-secret")
        with open(path, "w") as f:
            f.write(new_secret() + "\n")
        directory = os.open(H.tmpdir, os.O_RDONLY)  # read() fails with EISDIR
        try:
            p = subprocess.run([H.binary, "sign", "--secret-file", path], stdin=directory, capture_output=True,
                               text=True, env=H.env(), timeout=30)
        finally:
            os.close(directory)
        self.assertEqual(p.returncode, 1, p.stdout)
        self.assertEqual(p.stdout, "")
        self.assertIn("cannot read the body: standard input: Is a directory", p.stderr)


class Endpoints(HarnessTestCase):
    harness = H

    def test_endpoint_add_prints_a_distinct_id_on_its_last_line(self):
        a = H.add_endpoint()
        b = H.add_endpoint(environment="live", tolerance=60)
        self.assertNotEqual(a.id, b.id)
        for ep in (a, b):
            self.assertRegex(ep.id, r"^[A-Za-z0-9_-]{4,64}$")
        rows = dict(H.sql("SELECT id, environment FROM paddle.endpoints WHERE id IN (%s, %s)"
                          % (H.lit(a.id), H.lit(b.id))))
        self.assertEqual(rows, {a.id: "sandbox", b.id: "live"})
        self.assertEqual(H.sql_value("SELECT tolerance_seconds FROM paddle.endpoints WHERE id = %s"
                                     % H.lit(b.id)), "60")
        out = H.list_endpoints()
        self.assertIn(a.id, out)
        self.assertIn(b.id, out)

    def test_endpoint_names_reach_the_terminal_escaped(self):
        """Whoever may add an endpoint names it; the operator's terminal must not obey the name."""
        ep = H.add_endpoint(name="shop\x1b[2J\x1b]0;owned\x07\u009b1A", wait=False)
        for args in (("endpoint", "list"), ("status",)):
            out = H.cli(*args).stdout
            self.assertNotRegex(out, "[\x07\x1b\x80-\x9f]", args)
            line = next(l for l in out.splitlines() if l.startswith(ep.id))
            self.assertIn("shop\\x1b[2J\\x1b]0;owned\\x07\\xc2\\x9b1A", line, args)

    def test_ids_and_secret_hints_reach_the_terminal_escaped(self):
        """Anyone who may write the endpoint tables chooses these too."""
        H.sql("INSERT INTO paddle.endpoints (id, name, environment) VALUES (E'ep_\\x1b[2Jraw', 'raw-id', 'sandbox'); "
              "INSERT INTO paddle.endpoint_secrets (endpoint_id, sealed, hint) "
              "VALUES (E'ep_\\x1b[2Jraw', '\\x00', E'\\x1b]0;t\\x07')")
        try:
            outputs = [H.cli("endpoint", "list").stdout, H.cli("status").stdout]
        finally:
            H.sql("DELETE FROM paddle.endpoints WHERE name = 'raw-id'")
        for out in outputs:
            self.assertNotRegex(out, "[\x07\x1b\x80-\x9f]")
            self.assertIn("ep_\\x1b[2Jraw", out)
        self.assertIn("...\\x1b]0;t\\x07", outputs[0])

    def test_secrets_are_not_stored_in_clear(self):
        ep = H.add_endpoint()
        dump = H.psql("SELECT row_to_json(s)::text FROM paddle.endpoint_secrets s; "
                      "SELECT row_to_json(e)::text FROM paddle.endpoints e;")
        self.assertNotIn(ep.secret, dump)
        self.assertNotIn(ep.secret[-20:], dump)

    def test_a_signal_at_the_secret_prompt_leaves_echo_on(self):
        """The prompt turns terminal echo off; ^C (or a kill, a hangup) there must not leave the operator's
        terminal without it."""
        signals = (signal.SIGTSTP, signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

        def as_from_a_terminal():
            # A signal ignored at start stays ignored at the prompt, and a run started in the background
            # (`make check &`, nohup) passes SIGINT and SIGHUP on ignored: give the command an operator's.
            for s in signals:
                signal.signal(s, signal.SIG_DFL)
        for sig in signals:
            with self.subTest(signal=sig.name):
                master, slave = pty.openpty()
                try:
                    # A group of its own whose parent is in the session: a stop is not discarded as it is
                    # in an orphaned group.
                    proc = subprocess.Popen([H.binary, "endpoint", "add", "prompted-" + sig.name], env=H.env(),
                                            stdin=slave, stdout=slave, stderr=slave, process_group=0,
                                            preexec_fn=as_from_a_terminal)
                    try:
                        shown = b""
                        deadline = time.monotonic() + 20
                        while b"Endpoint secret" not in shown and time.monotonic() < deadline:
                            if select.select([master], [], [], 1)[0]:
                                shown += os.read(master, 1024)
                        self.assertIn(b"Endpoint secret", shown)
                        harness.wait_until(lambda: not termios.tcgetattr(slave)[3] & termios.ECHO, timeout=10,
                                           what="echo off at the prompt")
                        if sig == signal.SIGTSTP:
                            # Stopped, echo is on; continued, off again for the rest of the secret.
                            proc.send_signal(sig)
                            harness.wait_until(lambda: os.waitpid(proc.pid, os.WUNTRACED | os.WNOHANG)[0],
                                               timeout=10, what="the command to stop")
                            self.assertTrue(termios.tcgetattr(slave)[3] & termios.ECHO, "echo off while stopped")
                            proc.send_signal(signal.SIGCONT)
                            harness.wait_until(lambda: not termios.tcgetattr(slave)[3] & termios.ECHO,
                                               timeout=10, what="echo off again once continued")
                            os.write(master, (new_secret() + "\n").encode())
                            self.assertEqual(proc.wait(timeout=20), 0)
                        else:
                            proc.send_signal(sig)
                            self.assertEqual(proc.wait(timeout=20), -sig)
                    finally:
                        if proc.poll() is None:
                            proc.kill()
                            proc.wait()
                    self.assertTrue(termios.tcgetattr(slave)[3] & termios.ECHO, "echo left off")
                finally:
                    os.close(master)
                    os.close(slave)

    def test_commands_on_unknown_endpoint_fail(self):
        for args in (("rotate", "ep_doesnotexist"), ("retire-secret", "ep_doesnotexist"),
                     ("disable", "ep_doesnotexist"), ("enable", "ep_doesnotexist"),
                     ("set-tolerance", "ep_doesnotexist", "60")):
            with self.subTest(args=args):
                p = H.cli("endpoint", *args, input=new_secret() + "\n", check=False)
                self.assertNotEqual(p.returncode, 0, "endpoint %s succeeded" % " ".join(args))

    def test_a_name_in_use_is_refused_before_the_secret_is_asked_for(self):
        ep = H.add_endpoint()
        before = H.list_endpoints()
        p = H.cli("endpoint", "add", ep.name, input="", check=False)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn("endpoint %s is named %s already; choose another name, or give it a new secret with "
                      "'paddlehook endpoint rotate %s'" % (ep.id, ep.name, ep.id), p.stderr)
        self.assertNotIn("no secret on standard input", p.stderr)
        self.assertEqual(H.list_endpoints(), before)

    def test_rotate_says_which_secrets_verify(self):
        ep = H.add_endpoint()
        p = H.cli("endpoint", "rotate", ep.id, input=new_secret() + "\n")
        self.assertIn("old and new secrets both verify until 'paddlehook endpoint retire-secret %s'" % ep.id, p.stdout)
        # deploy.md's lost master key: the secrets are deleted in SQL, then each endpoint gets a new one.
        H.sql("DELETE FROM paddle.endpoint_secrets WHERE endpoint_id = %s" % H.lit(ep.id))
        p = H.cli("endpoint", "rotate", ep.id, input=new_secret() + "\n")
        self.assertRegex(p.stdout, r"^endpoint %s: secret \.\.\.\S{4} added; it is the only one that verifies\n$"
                         % ep.id)

    def test_a_schema_older_than_the_binary_is_named_with_the_fix(self):
        """A command run before `migrate` (here: the view it reads is missing) says what to run."""
        H.sql("ALTER VIEW paddle.endpoint_overview RENAME TO endpoint_overview_test_gone")
        try:
            p = H.cli("endpoint", "list", check=False)
        finally:
            H.sql("ALTER VIEW paddle.endpoint_overview_test_gone RENAME TO endpoint_overview")
        self.assertEqual(p.returncode, 1, p.stdout)
        self.assertIn("relation 'paddle.endpoint_overview' does not exist", p.stderr)
        self.assertIn("`paddlehook migrate` applies what is missing", p.stderr)

    def test_db_option_overrides_environment(self):
        env_bad = harness.UNREACHABLE_DB
        argv = [H.binary, "endpoint", "list", "--db", H.conninfo]
        env = dict(H.env(), PADDLEHOOK_DB=env_bad)
        p = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30)
        self.assertEqual(p.returncode, 0, "--db ignored: %s" % p.stderr)
        env = H.env()
        p = subprocess.run([H.binary, "endpoint", "list", "--db", env_bad], env=env,
                                   capture_output=True, text=True, timeout=30)
        self.assertNotEqual(p.returncode, 0, "--db did not override PADDLEHOOK_DB")


class Usage(HarnessTestCase):
    """Usage is judged before anything is done: a stray operand or a missing one exits 2, without a database."""
    harness = H
    def run_nowhere(self, *args, input=""):
        return subprocess.run([H.binary] + list(args), input=input, capture_output=True, text=True, timeout=30,
                              env=dict(H.env(), PADDLEHOOK_DB=harness.UNREACHABLE_DB))

    def test_a_stray_argument_is_a_usage_error_not_ignored(self):
        """`reproject 2024-06-01` must not rebuild everything as if the date were not there."""
        secret_file = os.path.join(H.tmpdir, "usage-secret")
        with open(secret_file, "w") as f:
            f.write(new_secret() + "\n")
        key = os.path.join(H.tmpdir, "usage-never-written.key")
        for args, stray in ((("reproject", "2024-06-01"), "2024-06-01"), (("status", "now"), "now"),
                            (("migrate", "all"), "all"), (("check-config", "x"), "x"), (("serve", "x"), "x"),
                            (("sign", "--secret-file", secret_file, "body"), "body"),
                            (("keygen", "--out", key, "again"), "again"),
                            (("rekey", "x", "--old-key-file", key), "x"),
                            (("report", "mrr", "extra"), "extra"), (("simulate", "all", "twice"), "twice"),
                            (("help", "report"), "report"), (("--version", "--db"), "--db")):
            with self.subTest(args=args):
                p = self.run_nowhere(*args)
                self.assertEqual((p.returncode, p.stdout), (2, ""), p.stderr)
                self.assertIn("paddlehook %s: unexpected argument '%s'" % (args[0], stray), p.stderr)
        self.assertFalse(os.path.exists(key))

    def test_endpoint_usage_is_checked_before_connecting(self):
        for args, message in ((("add",), "usage: paddlehook endpoint add NAME"),
                              (("add", "a", "b"), "usage: paddlehook endpoint add NAME"),
                              (("add", ""), "a name is 1 to 128 bytes long"),
                              (("add", "n" * 129), "a name is 1 to 128 bytes long"),
                              (("list", "x"), "usage: paddlehook endpoint list"),
                              (("rotate",), "usage: paddlehook endpoint rotate ID"),
                              (("enable", "a", "b"), "usage: paddlehook endpoint enable ID"),
                              (("set-tolerance", "ep_x"), "usage: paddlehook endpoint set-tolerance ID SECONDS"),
                              (("set-tolerance", "ep_x", "0"), "a tolerance is 1 to 604800 seconds"),
                              (("set-tolerance", "ep_x", "604801"), "a tolerance is 1 to 604800 seconds"),
                              (("set-tolerance", "ep_x", "+60"), "a tolerance is 1 to 604800 seconds"),
                              (("set-tolerance", "ep_x", "60s"), "a tolerance is 1 to 604800 seconds"),
                              (("frob",), "usage: paddlehook endpoint add|list|"),
                              ((), "usage: paddlehook endpoint add|list|")):
            with self.subTest(args=args):
                p = self.run_nowhere("endpoint", *args, input=new_secret() + "\n")
                self.assertEqual((p.returncode, p.stdout), (2, ""), p.stderr)
                self.assertIn(message, p.stderr)
        self.assertEqual(self.run_nowhere("endpoint", "add", "n" * 128, input=new_secret() + "\n").returncode, 1,
                         "a name of 128 bytes is allowed (it fails on the database here)")

    def test_since_that_is_not_a_date_is_a_usage_error(self):
        for args, message in ((("report", "revenue_daily", "--since", "yesterdayish"),
                               'paddlehook report: --since: invalid input syntax for type date: "yesterdayish"'),
                              (("report", "revenue_daily", "--since", "2024-02-30"),
                               'paddlehook report: --since: date/time field value out of range: "2024-02-30"'),
                              (("report", "--since", "yesterdayish"),
                               'paddlehook report: --since: invalid input syntax for type date: "yesterdayish"'),
                              (("reproject", "--since", "garbage"),
                               'paddlehook reproject: --since: invalid input syntax for type timestamp with time '
                               'zone: "garbage"')):
            with self.subTest(args=args):
                p = H.cli(*args, check=False)
                self.assertEqual((p.returncode, p.stdout), (2, ""), p.stderr)
                self.assertIn(message, p.stderr)


class Secrets(HarnessTestCase):
    """A secret is read whole or refused: nothing is cut from it silently."""
    harness = H

    def test_a_nul_or_cr_in_a_secret_is_refused_not_cut_at(self):
        secret = new_secret()
        before = H.sql_value("SELECT count(*) FROM paddle.endpoints")
        for inside in ("\0", "\r"):
            with self.subTest(inside=inside):
                p = H.cli("endpoint", "add", "cut-secret", input=secret[:20] + inside + secret[20:] + "\n",
                          check=False)
                self.assertEqual((p.returncode, p.stdout), (1, ""), p.stderr)
                self.assertIn("the secret must be printable ASCII without spaces", p.stderr)
        self.assertEqual(H.sql_value("SELECT count(*) FROM paddle.endpoints"), before)
        path = os.path.join(H.tmpdir, "nul-secret")
        with open(path, "w") as f:
            f.write(secret[:20] + "\0" + secret[20:] + "\n")
        p = H.cli("sign", "--secret-file", path, input="{}", check=False)
        self.assertEqual((p.returncode, p.stdout), (1, ""), p.stderr)
        self.assertIn("%s: the secret must be printable ASCII without spaces" % path, p.stderr)

    def test_a_secret_line_may_end_in_crlf_at_the_longest(self):
        secret = "pdl_ntfset_" + "a" * (256 - len("pdl_ntfset_"))
        ep = H.add_endpoint(secret=secret + "\r", wait=False)
        self.assertIn("...aaaa", H.list_endpoints())
        p = H.cli("endpoint", "rotate", ep.id, input=secret + "a\n", check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("the secret is longer than 256 characters", p.stderr)

    def test_a_secret_that_cannot_be_read_is_said_so(self):
        directory = os.open(H.tmpdir, os.O_RDONLY)  # read() fails with EISDIR
        try:
            p = subprocess.run([H.binary, "endpoint", "add", "unreadable"], stdin=directory, capture_output=True,
                               text=True, env=H.env(), timeout=30)
        finally:
            os.close(directory)
        self.assertEqual((p.returncode, p.stdout), (1, ""), p.stderr)
        self.assertIn("cannot read the secret: Is a directory", p.stderr)
        p = H.cli("sign", "--secret-file", os.path.join(H.tmpdir, "no-such-secret"), input="{}", check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("no-such-secret: No such file or directory", p.stderr)


class Output(HarnessTestCase):
    """Output that cannot be written (a full disk) is a failure, not exit 0."""
    harness = H

    def run_into_full(self, *args, input=""):
        with open("/dev/full", "w") as full:
            return subprocess.run([H.binary] + list(args), input=input, stdout=full, stderr=subprocess.PIPE,
                                  text=True, env=H.env(), timeout=60)

    def test_a_command_whose_output_is_lost_fails(self):
        secret_file = os.path.join(H.tmpdir, "full-secret")
        with open(secret_file, "w") as f:
            f.write(new_secret() + "\n")
        for args, input in ((("sign", "--secret-file", secret_file), "{}"), (("endpoint", "list"), ""),
                            (("status",), ""), (("migrate",), ""), (("simulate",), ""), (("help",), ""),
                            (("--version",), "")):
            with self.subTest(args=args):
                p = self.run_into_full(*args, input=input)
                self.assertEqual(p.returncode, 1, p.stderr)
                self.assertIn("paddlehook %s: cannot write to standard output: No space left on device" % args[0],
                              p.stderr)

    def test_an_endpoint_added_whose_id_is_lost_is_named_on_stderr(self):
        """The endpoint is stored by then: the operator must still learn its id."""
        p = self.run_into_full("endpoint", "add", "full-output", input=new_secret() + "\n")
        self.assertEqual(p.returncode, 1, p.stderr)
        stored = H.sql_value("SELECT id FROM paddle.endpoints WHERE name = 'full-output'")
        self.assertIn("endpoint %s was added, but its id could not be written out" % stored, p.stderr)

    def test_a_change_whose_report_is_lost_says_it_was_made(self):
        ep = H.add_endpoint(wait=False)
        for args, input in ((("disable", ep.id), ""), (("enable", ep.id), ""), (("rotate", ep.id), new_secret() + "\n"),
                            (("retire-secret", ep.id), "")):
            with self.subTest(action=args[0]):
                p = self.run_into_full("endpoint", *args, input=input)
                self.assertEqual(p.returncode, 1, p.stderr)
                self.assertEqual(p.stderr, "paddlehook endpoint %s: done, but its output could not be written; "
                                           "'paddlehook endpoint list' shows the endpoint\n" % args[0])
                if args[0] == "disable":
                    self.assertEqual(H.sql_value("SELECT enabled FROM paddle.endpoints WHERE id = %s"
                                                 % H.lit(ep.id)), "f")
        self.assertEqual(H.sql_value("SELECT count(*) FROM paddle.endpoint_secrets WHERE endpoint_id = %s "
                                     "AND retired_at IS NULL" % H.lit(ep.id)), "1")
