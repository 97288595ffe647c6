"""`paddlehook simulate`: the compiled-in lifecycle scenarios, end to end.

Each scenario (fcgi/scenarios/NAME.json) is sent by the real binary through
nginx to a fresh endpoint; then the stored events are matched against the
scenario's template (every {{id:...}} bound to one fresh Paddle-style id,
every {{time:...}} and occurred_at at base + offset) and the projected end
state of THAT scenario is asserted exactly.  Entities are found through the
endpoint: payment_events.endpoint_id -> payload->'data'->>'id'.
The scenario files themselves are checked in test_scenario_files.
"""

import datetime
import http.server
import json
import os
import re
import secrets as _secrets
import socket
import threading
import unittest
from decimal import Decimal

from harness import Harness, HarnessTestCase, new_secret, parse_ts, ts_text
from simulate_scenarios import PLACEHOLDER, SCENARIOS, TABLES, offset

H = Harness(workers=2)

# simulate's ids: prefix _01 + 24 chars of its alphabet (no i, l, o, u)
ID_RE = r"([a-z]+_01[0-9a-hjkmnp-tv-z]{24})"
TS_RE = r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z)"
LINE = re.compile(r"^  ([a-z_.]+)\s+(\S+)  (\d{3}) (.*)$")


# --------------------------------------------------------------------------
# running a scenario and binding its stored events to the template
# --------------------------------------------------------------------------

class Run:
    """One scenario run as stored: ids[key] for every {{id:key}}, base time,
    the stored event rows in delivery order."""

    def __init__(self, name, rows):
        self.name, self.rows = name, rows
        self.events = SCENARIOS[name]["events"]
        self.ids = {}
        self.base = None

    def t(self, off):
        return self.base + datetime.timedelta(seconds=offset(off))

    def id(self, key):
        return self.ids[key]


def simulate(*args, secret=None):
    """Runs build/paddlehook simulate ARGS [--secret-file FILE] and returns the process."""
    argv = ["simulate"] + list(args)
    if secret is not None:
        path = os.path.join(H.tmpdir, "sim-secret-%s" % _secrets.token_hex(4))
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secret + "\n")
        argv += ["--secret-file", path]
    return H.cli(*argv, check=False, timeout=120)


def event_rows(ep):
    return H.sql_json(
        "SELECT event_id, event_type, %s AS occurred_at, payload -> 'data' AS data, projection_error "
        "FROM paddle.payment_events WHERE endpoint_id = %s ORDER BY received_at, event_id"
        % (ts_text("occurred_at"), H.lit(ep.id)))


class SimulateCase(HarnessTestCase):
    harness = H

    def url(self, ep):
        return H.base_url + ep.path

    def run_scenario(self, name, ep, secret=None):
        """simulate NAME against ep: exit 0, every delivery 200 stored."""
        p = simulate(name, "--url", self.url(ep), secret=secret or ep.secret)
        self.assertEqual(p.returncode, 0, "simulate %s: rc=%d\n%s%s" % (name, p.returncode, p.stdout, p.stderr))
        self.assertAllStored(p.stdout, len(SCENARIOS[name]["events"]))
        return p

    def assertAllStored(self, stdout, count):
        lines = [l for l in stdout.splitlines() if l.startswith("  ")]
        self.assertEqual(len(lines), count, stdout)
        for line in lines:
            m = LINE.match(line)
            self.assertIsNotNone(m, "unexpected output line %r" % line)
            self.assertEqual(m.group(3), "200", line)
            self.assertEqual(json.loads(m.group(4)), {"status": "stored"}, line)

    def bind(self, name, rows):
        """Matches stored rows (delivery order) against the scenario template."""
        run = Run(name, rows)
        events = run.events
        self.assertEqual([r["event_type"] for r in rows], [e["event_type"] for e in events],
                         "%s: stored event types/order differ from the scenario" % name)
        run.base = parse_ts(rows[0]["occurred_at"]) - datetime.timedelta(seconds=offset(events[0]["at"]))
        # the latest event happens "now" (within the test's patience)
        latest = max(offset(e["at"]) for e in events)
        now = datetime.datetime.now(datetime.timezone.utc)
        last = run.base + datetime.timedelta(seconds=latest)
        self.assertLess(abs((now - last).total_seconds()), 120, "%s: the latest event is not now" % name)
        for i, (e, r) in enumerate(zip(events, rows)):
            # occurred_at = base + offset, plus the event's position as microseconds (file order
            # breaks ties between events at the same offset).
            self.assertEqual(parse_ts(r["occurred_at"]), run.t(e["at"]) + datetime.timedelta(microseconds=i),
                             "%s event %d occurred_at" % (name, i))
            self.assertIsNone(r["projection_error"], "%s event %d" % (name, i))
            self.match(run, e["data"], r["data"], "%s events[%d].data" % (name, i))
        self.assertEqual(len(set(run.ids.values())), len(run.ids),
                         "%s: two placeholders got the same id: %r" % (name, run.ids))
        return run

    def match(self, run, t, v, path):
        if isinstance(t, dict):
            self.assertIsInstance(v, dict, path)
            self.assertEqual(sorted(v), sorted(t), path)
            for k in t:
                self.match(run, t[k], v[k], path + "." + k)
        elif isinstance(t, list):
            self.assertIsInstance(v, list, path)
            self.assertEqual(len(v), len(t), path)
            for i, (a, b) in enumerate(zip(t, v)):
                self.match(run, a, b, "%s[%d]" % (path, i))
        elif isinstance(t, str) and PLACEHOLDER.search(t):
            parts = PLACEHOLDER.split(t)          # literal, kind, key, literal, ...
            regex, keys = "", []
            for i in range(0, len(parts), 3):
                regex += re.escape(parts[i])
                if i + 1 < len(parts):
                    keys.append((parts[i + 1], parts[i + 2]))
                    regex += ID_RE if parts[i + 1] == "id" else TS_RE
            self.assertIsInstance(v, str, path)
            m = re.fullmatch(regex, v)
            self.assertIsNotNone(m, "%s: %r does not match template %r" % (path, v, t))
            for (kind, key), got in zip(keys, m.groups()):
                if kind == "time":
                    self.assertEqual(parse_ts(got), run.t(key), "%s: {{time:%s}}" % (path, key))
                    continue
                self.assertTrue(got.startswith(key.split(":")[0] + "_01"), "%s: %s for {{id:%s}}" % (path, got, key))
                self.assertEqual(run.ids.setdefault(key, got), got, "%s: {{id:%s}} not stable" % (path, key))
        else:
            self.assertEqual(type(v), type(t), path)
            self.assertEqual(v, t, path)

    def assertNewestSnapshots(self, run):
        """Every entity's state row holds its newest snapshot, whatever the delivery order."""
        newest = {}
        for r in run.rows:
            key = (r["event_type"].split(".")[0], r["data"]["id"])
            if key not in newest or parse_ts(r["occurred_at"]) > parse_ts(newest[key]["occurred_at"]):
                newest[key] = r
        for (kind, eid), r in newest.items():
            row = H.state_row(TABLES[kind], eid)
            self.assertIsNotNone(row, "%s: no %s row for %s" % (run.name, kind, eid))
            self.assertEqual(row["event_id"], r["event_id"], "%s: %s %s" % (run.name, kind, eid))
            self.assertEqual(row.get("status"), r["data"].get("status"), "%s: %s %s" % (run.name, kind, eid))

    def deliver(self, name):
        """Runs NAME against a fresh endpoint and checks everything generic."""
        ep = H.add_endpoint()
        self.run_scenario(name, ep)
        rows = event_rows(ep)
        self.assertEqual(len(rows), len(SCENARIOS[name]["events"]))
        run = self.bind(name, rows)
        self.assertNewestSnapshots(run)
        return run

    # -- state helpers ---------------------------------------------------

    def row(self, kind, run, key):
        r = H.state_row(TABLES[kind], run.id(key))
        self.assertIsNotNone(r, "no %s row for %s" % (kind, key))
        return r

    def items(self, table, column, entity_id, order):
        return H.sql_json("SELECT * FROM %s WHERE %s = %s ORDER BY %s" % (table, column, H.lit(entity_id), order))

    def sub_items(self, sub_id):
        return self.items("paddle.subscription_items", "subscription_id", sub_id, "price_id")

    def txn_items(self, txn_id):
        return self.items("paddle.transaction_items", "transaction_id", txn_id, "position")

    def assertTs(self, value, expected, what=""):
        self.assertEqual(parse_ts(value) if value is not None else None, expected, what)

    def assertPeriod(self, sub, start, end):
        self.assertTs(sub["current_billing_period_starts_at"], start, "current_billing_period.starts_at")
        self.assertTs(sub["current_billing_period_ends_at"], end, "current_billing_period.ends_at")

    def assertFields(self, row, **expected):
        got = {k: row.get(k) for k in expected}
        self.assertEqual(got, expected)

    def delivered_before(self, run, first, second):
        """Asserts the event at index `first` was delivered before `second` but happened later."""
        a, b = run.rows[first], run.rows[second]
        self.assertGreater(parse_ts(a["occurred_at"]), parse_ts(b["occurred_at"]),
                           "%s: %s should be the newer snapshot" % (run.name, a["event_type"]))
        self.assertEqual(a["data"]["id"], b["data"]["id"])


def setUpModule():
    H.start()


def tearDownModule():
    H.stop()


# --------------------------------------------------------------------------
# the command
# --------------------------------------------------------------------------

class Command(SimulateCase):

    def test_no_args_lists_every_scenario(self):
        p = simulate()
        self.assertEqual(p.returncode, 0, p.stderr)
        listed = {}
        for line in p.stdout.splitlines():
            m = re.match(r"^  (\S+)\s+(.*)$", line)
            if m:
                listed[m.group(1)] = m.group(2)
        self.assertEqual(listed, {n: sc["description"] for n, sc in SCENARIOS.items()})

    def test_unknown_scenario_is_a_usage_error(self):
        for options in (("--url", H.base_url + "/paddle/webhooks/x"), ()):
            p = simulate("no-such-scenario", *options, secret=new_secret())
            self.assertEqual((p.returncode, p.stdout), (2, ""))
            self.assertIn("paddlehook simulate: no scenario 'no-such-scenario'\nscenarios (", p.stderr)
            self.assertIn("\n  new-subscription ", p.stderr)

    def test_a_scenario_without_url_or_secret_says_what_is_missing(self):
        for args, secret, missing in ((("new-subscription",), None, "--url URL and --secret-file FILE"),
                                      (("new-subscription", "--url", H.base_url), None, "--secret-file FILE"),
                                      (("new-subscription",), new_secret(), "--url URL")):
            with self.subTest(missing=missing):
                p = simulate(*args, secret=secret)
                self.assertEqual((p.returncode, p.stdout), (2, ""), p.stderr)
                self.assertIn("new-subscription needs %s (" % missing, p.stderr)

    def test_a_receiver_that_cannot_be_reached_shows_no_status_line_of_curls(self):
        """curl's "000" (no answer) is its own line, not part of a reply to show."""
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]   # closed again before simulate connects: refused
        p = simulate("new-subscription", "--url", "http://127.0.0.1:%d/hook" % port, secret=new_secret())
        self.assertEqual(p.returncode, 1, p.stdout)
        lines = [l for l in p.stdout.splitlines() if l.startswith("  ")]
        self.assertEqual(len(lines), len(SCENARIOS["new-subscription"]["events"]), p.stdout)
        for line in lines:
            self.assertRegex(line, r"^  [a-z_.]+\s+\S+  0 $")
        self.assertIn("Failed to connect", p.stderr)

    def test_wrong_secret_exits_1_and_stores_nothing(self):
        ep = H.add_endpoint()
        p = simulate("new-subscription", "--url", self.url(ep), secret=new_secret())
        self.assertEqual(p.returncode, 1, p.stdout + p.stderr)
        codes = [LINE.match(l).group(3) for l in p.stdout.splitlines() if l.startswith("  ")]
        self.assertEqual(codes, ["401"] * len(SCENARIOS["new-subscription"]["events"]), p.stdout)
        self.assertEqual(event_rows(ep), [])

    def test_the_status_is_the_receivers_whatever_its_body_says(self):
        """A receiver of the user's choosing: a long body that ends like a status, or escape sequences, must
        neither pass for a 2xx nor reach the terminal."""
        replies = [(500, b"200 queued\n" * 10000), (200, b"x" * 100000), (500, b"\x1b[2J200"),
                   (500, "\u009b2J\u009d0;title\u009c200".encode()),   # C1 controls, as UTF-8
                   (500, b"\x9b2J\x9d0;title\x9c200")]                    # ... and as raw bytes

        class Receiver(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers["Content-Length"]))
                code, body = self.server.reply
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            for code, body in replies:
                server.reply = (code, body)
                p = simulate("new-subscription", "--url", "http://127.0.0.1:%d/hook" % server.server_address[1],
                             secret=new_secret())
                lines = [LINE.match(l) for l in p.stdout.splitlines() if LINE.match(l)]
                self.assertTrue(lines, p.stdout)
                self.assertEqual({int(m.group(3)) for m in lines}, {code}, p.stdout[:500])
                self.assertEqual(p.returncode, 0 if code == 200 else 1, p.stderr)
                self.assertNotRegex(p.stdout, "[\x1b\x80-\x9f]")
        finally:
            server.shutdown()
            server.server_close()

    def test_curl_gets_its_pipes_as_stdin_and_stdout_only(self):
        """curl is given the body's pipe as stdin and the answer's as stdout, and no stray copy of either
        (one passed on to whatever curl starts would keep a pipe open); a stand-in curl lists its descriptors."""
        bin_dir = os.path.join(H.tmpdir, "fake-curl-%s" % _secrets.token_hex(4))
        os.makedirs(bin_dir)
        fds = os.path.join(bin_dir, "fds")
        with open(os.path.join(bin_dir, "curl"), "w") as f:
            # The shell's own descriptors, listed by find into the file: a redirection would add its own.
            f.write('#!/bin/sh\nfind /proc/$$/fd/ -mindepth 1 -fprintf "%s" \'%%f -> %%l\\n\'\n'
                    'cat >/dev/null\nprintf \'{"status":"stored"}\\n200\'\n' % fds)
        os.chmod(os.path.join(bin_dir, "curl"), 0o755)
        secret_file = os.path.join(bin_dir, "secret")
        with open(secret_file, "w") as f:
            f.write(new_secret() + "\n")
        p = H._run([H.binary, "simulate", "new-subscription", "--url", "http://127.0.0.1:9/x",
                    "--secret-file", secret_file], env=dict(H.env(), PATH=bin_dir + ":" + os.environ["PATH"]),
                   check=False, timeout=120)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        with open(fds) as f:
            listed = f.read()
        pipes = set(re.findall(r"^(\d+) -> pipe:", listed, re.M))
        self.assertLessEqual({"0", "1"}, pipes, listed)
        self.assertLessEqual(pipes, {"0", "1", "2"}, listed)  # stderr is the test's own

    def test_a_curlrc_of_the_user_does_not_change_the_requests(self):
        ep = H.add_endpoint()
        home = os.path.join(H.tmpdir, "home-%s" % _secrets.token_hex(4))
        os.makedirs(home)
        with open(os.path.join(home, ".curlrc"), "w") as f:
            f.write('header = "Paddle-Signature: ts=1;h1=00"\n')   # a repeated header: 401 for every event
        secret_file = os.path.join(home, "secret")
        fd = os.open(secret_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(ep.secret + "\n")
        p = H._run([H.binary, "simulate", "new-subscription", "--url", self.url(ep), "--secret-file", secret_file],
                   env=dict(H.env(), HOME=home), check=False, timeout=120)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertEqual(len(event_rows(ep)), len(SCENARIOS["new-subscription"]["events"]))

    def test_all_sends_every_scenario_once_without_mixing_them(self):
        ep = H.add_endpoint()
        p = simulate("all", "--url", self.url(ep), secret=ep.secret)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        order = re.findall(r"^scenario (\S+): (\d+) events$", p.stdout, re.M)
        self.assertEqual(sorted(n for n, _ in order), sorted(SCENARIOS))
        total = sum(len(sc["events"]) for sc in SCENARIOS.values())
        self.assertAllStored(p.stdout, total)
        rows = event_rows(ep)
        self.assertEqual(len(rows), total)
        seen, start = {}, 0
        for name, count in order:
            self.assertEqual(int(count), len(SCENARIOS[name]["events"]), name)
            run = self.bind(name, rows[start:start + int(count)])
            start += int(count)
            for key, eid in run.ids.items():
                self.assertNotIn(eid, seen, "%s {{id:%s}} reuses an id of %s" % (name, key, seen.get(eid)))
                seen[eid] = name
            self.assertNewestSnapshots(run)

    def test_same_scenario_twice_creates_distinct_entities(self):
        ep = H.add_endpoint()
        self.run_scenario("new-subscription", ep)
        self.run_scenario("new-subscription", ep)
        rows = event_rows(ep)
        n = len(SCENARIOS["new-subscription"]["events"])
        self.assertEqual(len(rows), 2 * n)
        a, b = self.bind("new-subscription", rows[:n]), self.bind("new-subscription", rows[n:])
        self.assertEqual(set(a.ids), set(b.ids))
        self.assertEqual(set(a.ids.values()) & set(b.ids.values()), set())
        for run in (a, b):
            self.assertNewestSnapshots(run)
        emails = H.sql("SELECT email FROM paddle.customers WHERE id IN (%s, %s)"
                       % (H.lit(a.id("ctm:a")), H.lit(b.id("ctm:a"))))
        self.assertEqual(sorted(emails), [("ada@example.com",), ("ada@example.com",)])


# --------------------------------------------------------------------------
# each scenario's end state
# --------------------------------------------------------------------------

class Lifecycles(SimulateCase):

    def test_every_scenario_has_a_test(self):
        for name in SCENARIOS:
            self.assertTrue(hasattr(self, "test_" + name.replace("-", "_")), "no test for scenario %s" % name)

    def test_new_subscription(self):
        run = self.deliver("new-subscription")
        self.assertFields(self.row("customer", run, "ctm:a"), name="Ada Lovelace", email="ada@example.com",
                          status="active", marketing_consent=False)
        self.assertFields(self.row("address", run, "add:a"), country_code="US", city="New York", status="active")
        sub = self.row("subscription", run, "sub:a")
        self.assertFields(sub, status="active", customer_id=run.id("ctm:a"), currency_code="USD",
                          billing_cycle_interval="month", billing_cycle_frequency=1,
                          transaction_id=run.id("txn:first"), scheduled_change_action=None,
                          custom_data={"utm_source": "newsletter"})
        self.assertPeriod(sub, run.t("+1m"), run.t("+30d+1m"))
        self.assertTs(sub["next_billed_at"], run.t("+30d+1m"))
        [item] = self.sub_items(run.id("sub:a"))
        self.assertFields(item, price_id=run.id("pri:monthly"), product_id=run.id("pro:app"), quantity=1,
                          status="active", unit_price_amount=3000, unit_price_currency_code="USD")
        txn = self.row("transaction", run, "txn:first")
        self.assertFields(txn, status="completed", origin="web", subscription_id=run.id("sub:a"),
                          customer_id=run.id("ctm:a"), currency_code="USD", subtotal=3000, tax=300,
                          total=3300, grand_total=3300, fee=215, earnings=2785, payment_attempts=1,
                          last_payment_status="captured", last_payment_error_code=None)
        [li] = self.txn_items(run.id("txn:first"))
        self.assertFields(li, id=run.id("txnitm:first"), price_id=run.id("pri:monthly"), quantity=1, total=3300)

    @staticmethod
    def created_with(run, key):
        """transaction_id of the subscription.created snapshot of the run's subscription `key`."""
        [txn] = [r["data"].get("transaction_id") for r in run.rows
                 if r["event_type"] == "subscription.created" and r["data"]["id"] == run.id(key)]
        return txn

    def test_renewal(self):
        run = self.deliver("renewal")
        sub = self.row("subscription", run, "sub:g")
        # the creating transaction, sent in subscription.created only, outlives the renewal's snapshots
        self.assertFields(sub, status="active", transaction_id=self.created_with(run, "sub:g"))
        self.assertPeriod(sub, run.t("+30d+1m"), run.t("+60d+1m"))
        self.assertTs(sub["next_billed_at"], run.t("+60d+1m"))
        [item] = self.sub_items(run.id("sub:g"))
        self.assertFields(item, quantity=2, unit_price_amount=1200)
        self.assertTs(item["previously_billed_at"], run.t("+30d+1m"))
        txns = H.sql_json("SELECT id, origin, status, grand_total, billing_period_starts_at FROM paddle.transactions "
                          "WHERE subscription_id = %s ORDER BY billing_period_starts_at" % H.lit(run.id("sub:g")))
        self.assertEqual([(t["id"], t["origin"], t["status"], t["grand_total"]) for t in txns],
                         [(run.id("txn:first"), "web", "completed", 2613),
                          (run.id("txn:renewal"), "subscription_recurring", "completed", 2613)])
        self.assertTs(txns[1]["billing_period_starts_at"], run.t("+30d+1m"))
        self.assertFields(self.row("transaction", run, "txn:renewal"), tax=213, fee=181, earnings=2219,
                          payment_attempts=1, last_payment_status="captured")

    def test_upgrade(self):
        run = self.deliver("upgrade")
        self.delivered_before(run, 5, 6)      # transaction.completed sent before transaction.paid
        sub = self.row("subscription", run, "sub:t")
        self.assertFields(sub, status="active")
        self.assertPeriod(sub, run.t("+1m"), run.t("+30d+1m"))
        [item] = self.sub_items(run.id("sub:t"))
        self.assertFields(item, quantity=3, unit_price_amount=3000)
        txn = self.row("transaction", run, "txn:upgrade")
        self.assertFields(txn, status="completed", origin="subscription_update", subscription_id=run.id("sub:t"),
                          event_id=run.rows[5]["event_id"], subtotal=3000, tax=300, grand_total=3300,
                          fee=215, earnings=2785, last_payment_status="captured")
        [li] = self.txn_items(run.id("txn:upgrade"))
        self.assertFields(li, quantity=2, unit_price_amount=3000, unit_subtotal=1500, subtotal=3000, total=3300)
        self.assertEqual(li["proration"]["rate"], "0.5")
        self.assertTs(li["proration"]["billing_period"]["starts_at"], run.t("+15d+1m"))
        self.assertTs(li["proration"]["billing_period"]["ends_at"], run.t("+30d+1m"))

    def test_failed_payment_recovery(self):
        run = self.deliver("failed-payment-recovery")
        self.assertEqual([r["data"]["status"] for r in run.rows if r["data"]["id"] == run.id("sub:k")],
                         ["active", "past_due", "active"])
        failed = [r for r in run.rows if r["event_type"] == "transaction.payment_failed"][0]
        self.assertEqual([(p["status"], p["error_code"]) for p in failed["data"]["payments"]], [("error", "declined")])
        sub = self.row("subscription", run, "sub:k")
        self.assertFields(sub, status="active", currency_code="GBP")
        self.assertPeriod(sub, run.t("+30d+1m"), run.t("+60d+1m"))
        txn = self.row("transaction", run, "txn:renewal")
        self.assertFields(txn, status="completed", origin="subscription_recurring", grand_total=5880, fee=344,
                          earnings=4556, balance=0, payment_attempts=2, last_payment_status="captured",
                          last_payment_error_code=None, payout_currency_code="USD")
        self.assertTs(txn["last_payment_created_at"], run.t("+33d+1m"))

    def test_failed_payment_lost(self):
        run = self.deliver("failed-payment-lost")
        sub = self.row("subscription", run, "sub:c")
        self.assertFields(sub, status="canceled", next_billed_at=None, scheduled_change_action=None)
        self.assertPeriod(sub, None, None)
        self.assertTs(sub["canceled_at"], run.t("+44d+1m"))
        txn = self.row("transaction", run, "txn:renewal")
        self.assertFields(txn, status="past_due", origin="subscription_recurring", grand_total=5255,
                          balance=5255, fee=None, earnings=None, payout_total=None, payment_attempts=2,
                          last_payment_status="error", last_payment_error_code="not_enough_balance")
        self.assertTs(txn["last_payment_created_at"], run.t("+37d+1m"))

    def test_pause_resume(self):
        run = self.deliver("pause-resume")
        states = [(r["event_type"], r["data"]["status"], (r["data"]["scheduled_change"] or {}).get("action"))
                  for r in run.rows if r["event_type"].startswith("subscription.")]
        self.assertEqual(states, [("subscription.created", "active", None),
                                  ("subscription.updated", "active", "pause"),
                                  ("subscription.paused", "paused", None),
                                  ("subscription.resumed", "active", None)])
        sub = self.row("subscription", run, "sub:h")
        self.assertFields(sub, status="active", paused_at=None, canceled_at=None, scheduled_change_action=None)
        self.assertPeriod(sub, run.t("+45d"), run.t("+75d"))
        [item] = self.sub_items(run.id("sub:h"))
        self.assertFields(item, status="active", quantity=2)
        resume = self.row("transaction", run, "txn:resume")
        self.assertFields(resume, status="completed", origin="subscription_recurring", grand_total=6600)
        self.assertTs(resume["billing_period_starts_at"], run.t("+45d"))

    def test_cancel_at_period_end(self):
        run = self.deliver("cancel-at-period-end")
        scheduled = run.rows[4]["data"]["scheduled_change"]
        self.assertEqual(scheduled["action"], "cancel")
        self.assertEqual(parse_ts(scheduled["effective_at"]),
                         parse_ts(run.rows[4]["data"]["current_billing_period"]["ends_at"]))
        sub = self.row("subscription", run, "sub:m")
        self.assertFields(sub, status="canceled", scheduled_change_action=None, next_billed_at=None,
                          currency_code="EUR")
        self.assertTs(sub["canceled_at"], parse_ts(scheduled["effective_at"]))
        self.assertPeriod(sub, None, None)
        self.assertFields(self.row("customer", run, "ctm:m"), locale="de")
        self.assertFields(self.row("transaction", run, "txn:first"), grand_total=1428, tax=228, fee=121,
                          earnings=1079, payout_exchange_rate=1.08)

    def test_refund(self):
        run = self.deliver("refund")
        self.assertEqual([r["data"]["status"] for r in run.rows if r["event_type"].startswith("adjustment.")],
                         ["pending_approval", "approved", "pending_approval", "approved"])
        a, b = self.row("transaction", run, "txn:a"), self.row("transaction", run, "txn:b")
        self.assertFields(a, status="completed", subscription_id=None, currency_code="GBP", grand_total=8160, fee=458)
        self.assertFields(b, status="completed", subscription_id=None, grand_total=11880, fee=644, earnings=9256)
        part = self.row("adjustment", run, "adj:part")
        self.assertFields(part, action="refund", type="partial", status="approved", transaction_id=run.id("txn:a"),
                          customer_id=run.id("ctm:b"), subscription_id=None, currency_code="GBP",
                          subtotal=2000, tax=400, total=2400, fee=135, earnings=1865)
        self.assertTs(part["created_at"], run.t("+5d"))
        self.assertTs(part["updated_at"], run.t("+6d"))
        [pi] = self.items("paddle.adjustment_items", "adjustment_id", run.id("adj:part"), "position")
        self.assertFields(pi, item_id=run.id("txnitm:course"), type="partial", amount=2400)
        self.assertIn(pi["item_id"], [li["id"] for li in self.txn_items(run.id("txn:a"))])
        full = self.row("adjustment", run, "adj:full")
        self.assertFields(full, action="refund", type="full", status="approved", transaction_id=run.id("txn:b"),
                          total=b["grand_total"], tax=b["tax"], fee=b["fee"], earnings=b["earnings"])
        [fi] = self.items("paddle.adjustment_items", "adjustment_id", run.id("adj:full"), "position")
        self.assertFields(fi, item_id=run.id("txnitm:lifetime"), type="full", amount=11880)

    def test_one_time_jpy(self):
        run = self.deliver("one-time-jpy")
        self.assertFields(self.row("customer", run, "ctm:y"), name="山田 花子", locale="ja",
                          email="hanako@example.jp")
        txn = self.row("transaction", run, "txn:jp")
        self.assertFields(txn, status="completed", origin="web", subscription_id=None,
                          billing_period_starts_at=None, currency_code="JPY", totals_currency_code="JPY",
                          subtotal=4800, tax=480, total=5280, grand_total=5280, fee=339, earnings=4461,
                          payout_currency_code="USD", payout_total=3538, payout_earnings=2989,
                          payment_attempts=1, last_payment_status="captured")
        self.assertEqual(Decimal(str(txn["payout_exchange_rate"])), Decimal("0.0067"))
        [li] = self.txn_items(run.id("txn:jp"))
        self.assertFields(li, quantity=1, unit_price_amount=4800, unit_price_currency_code="JPY", tax_rate=0.1)

    def test_yearly_plan(self):
        run = self.deliver("yearly-plan")
        sub = self.row("subscription", run, "sub:r")
        self.assertFields(sub, status="active", billing_cycle_interval="year", billing_cycle_frequency=1,
                          discount_id=run.id("dsc:launch"), currency_code="EUR")
        self.assertPeriod(sub, run.t("+1m"), run.t("+365d+1m"))
        [item] = self.sub_items(run.id("sub:r"))
        self.assertFields(item, quantity=5, unit_price_amount=24000, billing_cycle_interval="year",
                          billing_cycle_frequency=1)
        txn = self.row("transaction", run, "txn:first")
        self.assertFields(txn, status="completed", discount_id=run.id("dsc:launch"), subtotal=120000,
                          discount=24000, tax=18240, total=114240, grand_total=114240, fee=5762, earnings=90238)

    def test_trial(self):
        run = self.deliver("trial")
        self.delivered_before(run, 6, 7)      # subscription.updated sent before subscription.activated
        trialing = [r for r in run.rows if r["event_type"] == "subscription.trialing"][0]["data"]
        self.assertEqual((trialing["status"], trialing["first_billed_at"]), ("trialing", None))
        sub = self.row("subscription", run, "sub:d")
        self.assertFields(sub, status="active", event_id=run.rows[6]["event_id"],
                          transaction_id=self.created_with(run, "sub:d"))
        self.assertTs(sub["first_billed_at"], run.t("+14d+1m"))
        self.assertTs(sub["started_at"], run.t("+1m"))
        self.assertPeriod(sub, run.t("+14d+1m"), run.t("+44d+1m"))
        [item] = self.sub_items(run.id("sub:d"))
        self.assertFields(item, status="active", trial_period_interval="day", trial_period_frequency=14)
        self.assertFields(self.row("transaction", run, "txn:checkout"), status="completed", grand_total=0,
                          fee=0, earnings=0, payment_attempts=0, last_payment_status=None)
        self.assertFields(self.row("transaction", run, "txn:first"), status="completed",
                          origin="subscription_recurring", grand_total=2200, earnings=1840)


if __name__ == "__main__":
    unittest.main()
