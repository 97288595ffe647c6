"""TLS to PostgreSQL (docs/deploy.md, "TLS to the database"): a server that accepts only encrypted connections
over TCP, which the workers and the commands verify with sslmode=verify-full against its certificate."""

import os
import pwd
import re
import subprocess

from harness import WORKER_SESSIONS, Endpoint, Harness, HarnessTestCase, make_event, sample_subscription, wait_until


def self_signed(cert, key):
    """A certificate for 127.0.0.1 that is its own authority."""
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", key, "-out", cert], check=True, capture_output=True, timeout=60)


class TlsHarness(Harness):
    """A stack whose PostgreSQL refuses unencrypted TCP and whose connection string verifies the server."""

    def init_postgres(self):
        super().init_postgres()
        cert, key = os.path.join(self.pg_data, "server.crt"), os.path.join(self.pg_data, "server.key")
        self_signed(cert, key)
        if self.is_root:
            pw = pwd.getpwnam("postgres")
            for path in (cert, key):
                os.chown(path, pw.pw_uid, pw.pw_gid)
        os.chmod(key, 0o600)
        self.root_cert = self._p("db-ca.crt")
        with open(cert) as f, open(self.root_cert, "w") as out:
            out.write(f.read())
        with open(os.path.join(self.pg_data, "postgresql.conf"), "a") as f:
            f.write("ssl = on\n")
        with open(os.path.join(self.pg_data, "pg_hba.conf"), "w") as f:
            f.write("local all all trust\nhostssl all all 127.0.0.1/32 trust\n")

    def conninfo_for(self, dbname):
        return super().conninfo_for(dbname) + " sslmode=verify-full sslrootcert=" + self.root_cert


H = TlsHarness(workers=2)
setUpModule, tearDownModule = H.start, H.stop


def other_authority():
    """A certificate authority that did not sign the server's certificate."""
    cert = H._p("other-ca.crt")
    if not os.path.exists(cert):
        self_signed(cert, H._p("other-ca.key"))
    return cert


class DatabaseOverTls(HarnessTestCase):
    harness = H

    def test_the_server_refuses_a_connection_without_tls(self):
        """What makes the other tests prove something: nothing reaches this server unencrypted."""
        r = H.cli("check-config", "--db", H.conninfo.replace("sslmode=verify-full", "sslmode=disable"), check=False)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn("no encryption", r.stdout + r.stderr)

    def test_workers_store_deliveries_over_verified_tls(self):
        ep = H.add_endpoint()
        H.wait_endpoint_known(ep)
        for _ in range(3):
            self.assertStored(H.post_event(ep, make_event("subscription.created", sample_subscription())))
        sessions = H.sql("SELECT s.ssl FROM pg_stat_ssl s WHERE s.pid IN (%s)" % WORKER_SESSIONS)
        self.assertEqual(sessions, [("t",)] * H.workers)

    def test_a_large_endpoint_table_loads_over_tls(self):
        """The workers' endpoint query, read through TLS records without blocking: 2,000 endpoints with a sealed
        secret each (copies of one, so each opens with the same secret), about 500 KB of result."""
        ep = H.add_endpoint()
        H.psql("INSERT INTO paddle.endpoints (id, name, environment) "
               "SELECT 'ep_tls' || lpad(i::text, 14, '0'), 'tls-' || i, 'sandbox' FROM generate_series(1, 2000) i; "
               "INSERT INTO paddle.endpoint_secrets (endpoint_id, sealed, hint) "
               "SELECT e.id, s.sealed, s.hint FROM paddle.endpoints e, paddle.endpoint_secrets s "
               "WHERE e.id LIKE 'ep_tls%%' AND s.endpoint_id = %s" % H.lit(ep.id))
        copy = Endpoint("ep_tls" + "2000".rjust(14, "0"), ep.secret, "tls-2000", "sandbox", None)
        H.wait_endpoint_known(copy)
        self.assertStored(H.post_event(copy, make_event("subscription.created", sample_subscription())))
        self.assertEqual(H.get("/paddle/healthz").status, 200)

    def test_commands_work_over_tls(self):
        r = H.cli("check-config")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        for args in (("status",), ("report", "mrr"), ("endpoint", "list"), ("reproject",)):
            with self.subTest(args=args):
                r = H.cli(*args)
                self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_a_server_certificate_it_cannot_verify_is_named(self):
        r = H.cli("check-config", "--db", H.conninfo.replace(H.root_cert, other_authority()), check=False)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertRegex(r.stdout + r.stderr, re.compile("certificate verify failed", re.I))

    def test_workers_that_cannot_verify_the_server_say_why_and_store_nothing(self):
        ep = H.add_endpoint()
        env = make_event("subscription.created", sample_subscription(), as_dict=True)
        offset = os.path.getsize(H.serve_log)
        kept, other = H.root_cert, other_authority()
        try:
            H.stop_serve()
            H.root_cert = other
            H.start_serve()
            wait_until(lambda: "certificate verify failed" in H.serve_log_since(offset),
                       what="the workers' log to say why they cannot connect")
            self.assertEqual(H.get("/paddle/healthz").status, 503)
            self.assertErrorResponse(H.post_event(ep, env), 503, "database_unavailable")
        finally:
            H.root_cert = kept
            H.stop_serve()
            H.start_serve()
            H.wait_healthy()
        self.assertEqual(H.event_rows_with_id(env["event_id"]), 0)
