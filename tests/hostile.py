"""What the hostile-input tests share (test_hostile*.py, test_least_privilege.py; docs/security.md).

HostileHarness is a stack whose serve logs at --log-level debug, so that the log checks cover everything the
worker can write; it remembers every endpoint secret it made, for those checks, and its serve can connect as
another database role. HostileCase checks that a bad input answered its error and changed nothing.
"""

import datetime
import os
import re

from harness import Harness, HarnessTestCase, make_event, py_sign, rfc3339, sample_subscription

WORKERS = 2
LOG_LINE = re.compile(r'^ts=\S+ level=(error|warn|info|debug) pid=\d+( [a-z_]+=("[^"\n]*"|\S*))*$')


class HostileHarness(Harness):
    """A Harness at --log-level debug that remembers its endpoint secrets and whose serve can connect as another
    database role."""

    serve_conninfo = None

    def __init__(self):
        super().__init__(workers=WORKERS, serve_args=["--log-level", "debug"])
        self.secrets = []

    def env(self):
        e = super().env()
        if self.serve_conninfo:
            e["PADDLEHOOK_DB"] = self.serve_conninfo
        return e

    def add_endpoint(self, **kw):
        ep = super().add_endpoint(**kw)
        self.secrets.append(ep.secret)
        return ep

    def log_texts(self):
        """Every log of the stack, by name, as text."""
        logs = {"serve": self.serve_log, "nginx error": os.path.join(self.nginx_dir, "error.log"),
                "harness commands": self.commands_log, "postgres": self.pg_log}
        text = {}
        for name, path in logs.items():
            with open(path, "rb") as f:
                text[name] = f.read().decode("utf-8", "replace")
        return text


def at(t):
    """RFC 3339 of unix time t."""
    return rfc3339(datetime.datetime.fromtimestamp(t, datetime.timezone.utc))


def event(**kw):
    return make_event("subscription.created", sample_subscription(), **kw)


class HostileCase(HarnessTestCase):
    """Subclasses set `harness` to their module's harness (a HostileHarness for assertLogsClean)."""

    @classmethod
    def setUpClass(cls):
        cls.ep = cls.harness.add_endpoint()

    def setUp(self):
        self.before = self.harness.digest()

    def assertNothingChanged(self, what=""):
        self.assertEqual(self.harness.digest(), self.before, "payment_events/state tables changed %s" % what)

    def expect(self, r, status, code, what=""):
        self.assertErrorResponse(r, status, code, what)
        self.assertNothingChanged(what)

    def post_signed(self, body, ep=None):
        ep = ep or self.ep
        return self.harness.post(ep.path, body, signature=py_sign(body, ep.secret))

    def raw_post(self, path, body, header_lines, **kw):
        """POST with exact header bytes (http.client refuses some values)."""
        head = (b"POST " + path.encode() + b" HTTP/1.1\r\nHost: localhost\r\n"
                b"Content-Type: application/json\r\n" + b"".join(l + b"\r\n" for l in header_lines) +
                b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body))
        return self.harness.raw_request(head + body, **kw)

    def assertLogsClean(self):
        """No endpoint secret (nor its tail) and no master key in any log; every serve line one key=value
        record. Returns the logs' texts."""
        text = self.harness.log_texts()
        for name, t in text.items():
            for s in self.harness.secrets:
                self.assertNotIn(s, t, "an endpoint secret is in the %s log" % name)
                self.assertNotIn(s[-20:], t, "part of an endpoint secret is in the %s log" % name)
        with open(self.harness.key_file) as f:
            master = f.read().strip()
        for name, t in text.items():
            self.assertNotIn(master, t, "the master key is in the %s log" % name)
        bad = [l for l in text["serve"].splitlines() if not LOG_LINE.match(l)]
        self.assertEqual(bad, [], "serve log lines that are not one key=value record")
        return text
