"""What must hold of the billing reports whatever the delivery: environments kept apart, delivery order
and redeliveries without effect, the reports consistent with each other, every report catalogued, and
`paddlehook report` printing the views."""

import csv
import decimal
import io
import json
import os
import subprocess

from harness import paddle_id
from report_scenarios import report_module
from reportdata import REPORT_VIEWS, Price, churn_row, customer, money_row, movement_row, mrr_row, norm, subscription

H, DB, ReportCase = report_module()
setUpModule, tearDownModule = H.start, H.stop
q, view, load, load_all, in_currency = DB.q, DB.view, DB.load, DB.load_all, DB.in_currency


class EnvironmentsApart(ReportCase):
    @classmethod
    def setUpClass(cls):
        cls.s = load("environments")

    def test_a_sandbox_refund_does_not_revoke_a_live_purchase(self):
        s = self.s
        rows = view("entitlements", "customer_id = %s" % H.lit(s["c"]))
        self.assertEqual([(r["environment"], r["granted"], r["forever"], r["reason"]) for r in rows],
                         [("live", True, True, "one_time_purchase")])

    def test_a_sandbox_snapshot_does_not_move_a_live_payment_date(self):
        s = self.s
        self.assertEqual(q("SELECT environment, paid_on FROM paddle.revenue_transactions WHERE transaction_id = %s"
                           % H.lit(s["t"])), [{"environment": "live", "paid_on": "2024-07-10"}])

    def test_a_live_snapshot_takes_over_an_id_a_sandbox_snapshot_held_first(self):
        s = self.s
        self.assertEqual(q("SELECT environment, email FROM paddle.customers WHERE id = %s" % H.lit(s["squatted"])),
                         [{"environment": "live", "email": "owner@example.my"}])
        self.assertEqual(q("SELECT environment, status FROM paddle.transactions WHERE id = %s" % H.lit(s["t"])),
                         [{"environment": "live", "status": "completed"}])

    def test_live_takes_over_while_a_sandbox_insert_of_the_id_is_in_flight(self):
        cid, sandbox = paddle_id("ctm"), DB.feed("sandbox")
        forged = sandbox.add("customer.updated", customer(cid, "forged@example.my"), "2024-07-21 09:00")
        held = H.in_flight(H.ingest_sql(forged, sandbox.ep.id, "sandbox"), 2, "sandbox_insert_" + cid[-10:])
        try:
            DB.feed("live").post([DB.feed("live").add("customer.created", customer(cid, "owner@example.my"),
                                                "2024-07-02 09:00")])
        finally:
            held.join(30)
        self.assertEqual(q("SELECT environment, email FROM paddle.customers WHERE id = %s" % H.lit(cid)),
                         [{"environment": "live", "email": "owner@example.my"}])

    def test_a_sandbox_adjustment_shows_nothing_of_the_live_transaction(self):
        s = self.s
        rows = view("refunds", "adjustment_id = %s" % H.lit(s["adj"]))
        self.assertEqual([(r["environment"], r["transaction_total"], r["customer_email"]) for r in rows],
                         [("sandbox", None, None)])



class HostileCycles(ReportCase):
    def test_a_huge_billing_frequency_counts_next_to_nothing_and_breaks_no_report(self):
        """A sandbox secret is shared with developers: whatever cycle a snapshot names, the MRR reports of every
        environment keep working (2^31 / 336 weeks overflowed an integer once)."""
        f = DB.feed()
        price = Price(1000, "KES", "week", 99999999)
        for interval in ("week", "day", "year"):
            f.add("subscription.created", subscription(paddle_id("sub"), paddle_id("ctm"), "KES", "active",
                                                       [(Price(1000, "KES", interval, 2147483647), 1), (price, 1)],
                                                       "2024-09-01 10:00", interval=interval, frequency=2147483647),
                  "2024-09-01 10:00")
        f.post()
        self.assertRows(view("mrr", in_currency("KES")), [mrr_row("KES", 3, 3, "0.00", "0.00")])
        self.assertTrue(view("mrr"))
        self.assertEqual(len(q("SELECT * FROM paddle.subscription_history WHERE currency_code = 'KES'")), 3)
        self.assertTrue(view("mrr_movements"))
        self.assertIsInstance(view("churn_monthly"), list)


    def test_dunning_cases_spanning_millennia_break_no_report(self):
        """occurred_at may be any year from 1 to 9999: some 600 such cases summed more days than an interval
        holds when dunning_summary averaged time_to_recover as intervals."""
        H.sql("SELECT paddle.ingest_event('evt_millennia_f' || g, 'transaction.payment_failed', "
              "'0001-01-01T00:00:00Z', NULL, 'ep_test', 'sandbox', jsonb_build_object('data', "
              "jsonb_build_object('id', 'txn_millennia' || g, 'status', 'past_due', 'currency_code', 'XAF'))), "
              "paddle.ingest_event('evt_millennia_c' || g, 'transaction.completed', '9999-12-31T23:59:59Z', NULL, "
              "'ep_test', 'sandbox', jsonb_build_object('data', jsonb_build_object('id', 'txn_millennia' || g, "
              "'status', 'completed', 'currency_code', 'XAF'))) FROM generate_series(1, 600) g")
        rows = q("SELECT cases, recovered_cases, avg_time_to_recover::text AS avg, "
                 "median_time_to_recover::text AS median FROM paddle.dunning_summary WHERE currency_code = 'XAF'")
        self.assertEqual(rows, [{"cases": 600, "recovered_cases": 600, "avg": "3652058 days 23:59:59",
                                 "median": "3652058 days 23:59:59"}])
        self.assertTrue(view("dunning_summary"))
        # Exact to the microsecond over centuries (a double of seconds is not).
        H.sql("SELECT paddle.ingest_event('evt_centuries_f', 'transaction.payment_failed', '1700-01-01T00:00:00Z', "
              "NULL, 'ep_test', 'sandbox', '{\"data\":{\"id\":\"txn_centuries\",\"status\":\"past_due\","
              "\"currency_code\":\"XOF\"}}'), paddle.ingest_event('evt_centuries_c', 'transaction.completed', "
              "'2024-01-01T00:00:00.000001Z', NULL, 'ep_test', 'sandbox', '{\"data\":{\"id\":\"txn_centuries\","
              "\"status\":\"completed\",\"currency_code\":\"XOF\"}}')")
        rows = q("SELECT avg_time_to_recover::text AS avg, median_time_to_recover::text AS median "
                 "FROM paddle.dunning_summary WHERE currency_code = 'XOF'")
        self.assertEqual(rows, [{"avg": "118338 days 00:00:00.000001", "median": "118338 days 00:00:00.000001"}])


class StatusCounts(ReportCase):
    def counts(self):
        return {(r["environment"], r["status"]): r["count"] for r in view("subscription_status_counts")}

    def test_counts_per_environment_and_status(self):
        before = self.counts()
        f = DB.feed("live")
        price = Price(1000, "HKD")
        for i, status in enumerate(("active", "active", "past_due", "paused", "canceled", "trialing")):
            at = "2024-07-01 10:%02d" % i
            f.add("subscription.created", subscription(paddle_id("sub"), paddle_id("ctm"), "HKD", status,
                                                       [(price, 1)], at), at)
        sid, cid = paddle_id("sub"), paddle_id("ctm")
        f.add("subscription.created", subscription(sid, cid, "HKD", "active", [(price, 1)], "2024-07-02 10:00"),
              "2024-07-02 10:00")
        f.add("subscription.canceled", subscription(sid, cid, "HKD", "canceled", [(price, 1)], "2024-07-03 10:00",
                                                    canceled_at="2024-07-03 10:00"), "2024-07-03 10:00")
        f.post()
        after = self.counts()
        delta = {k: after.get(k, 0) - before.get(k, 0) for k in set(after) | set(before)}
        self.assertEqual({k: v for k, v in delta.items() if v}, {
            ("live", "active"): 2, ("live", "past_due"): 1, ("live", "paused"): 1, ("live", "canceled"): 2,
            ("live", "trialing"): 1})


class OutOfOrder(ReportCase):
    @classmethod
    def setUpClass(cls):
        cls.s = load("out_of_order")

    def test_in_order_numbers(self):
        self.assertRows(view("revenue_daily", in_currency("EUR")), [
            money_row("2024-01-15", "EUR", 1, "33.00", "0.00", "3.00", "30.00", "1.65", "28.35", 0, "0.00", 0, "0.00"),
            money_row("2024-02-02", "EUR", 1, "88.00", "0.00", "8.00", "80.00", "4.40", "75.60", 0, "0.00", 0, "0.00"),
            money_row("2024-02-05", "EUR", 0, "0.00", "0.00", "0.00", "0.00", "0.00", "0.00", 1, "88.00", 0, "0.00"),
            money_row("2024-02-10", "EUR", 1, "16.50", "0.00", "1.50", "15.00", "0.82", "14.18", 0, "0.00", 0, "0.00"),
            money_row("2024-03-17", "EUR", 1, "66.00", "0.00", "6.00", "60.00", "3.30", "56.70", 0, "0.00", 0, "0.00"),
            money_row("2024-03-21", "EUR", 0, "0.00", "0.00", "0.00", "0.00", "0.00", "0.00", 1, "11.00", 0, "0.00"),
        ])
        self.assertRows(view("mrr_movements", in_currency("EUR")), [
            movement_row("2024-01-01", "EUR", new="30.00", net="30.00", ending="30.00", counts=(1, 0, 0, 0, 0)),
            movement_row("2024-02-01", "EUR", expansion="30.00", net="30.00", ending="60.00", counts=(0, 1, 0, 0, 0)),
            movement_row("2024-04-01", "EUR", churned="60.00", net="-60.00", ending="0.00", counts=(0, 0, 0, 1, 0)),
        ])
        self.assertRows(view("churn_monthly", in_currency("EUR")), [
            churn_row("2024-04-01", "EUR", voluntary=(1, 1, "60.00"))])
        d = view("dunning", in_currency("EUR"))
        self.assertEqual(norm([(r["state"], r["amount"], r["failed_attempts"], r["time_to_recover"]) for r in d]),
                         [["recovered", "66.00", "1", "2 days 09:29:00"]])
        self.assertEqual(view("mrr", in_currency("EUR")), [])

    def test_shuffled_delivery_gives_the_same_reports(self):
        s = self.s
        self.assertNotEqual(s["order_out"][:len(s["order_in"])], s["order_in"])
        roles = {}
        for side in ("in", "out"):
            for role, value in s[side].items():
                roles[value] = role

        def canon(rows):
            out = []
            for r in rows:
                r = {k: roles.get(v, v) if isinstance(v, str) else v for k, v in r.items() if k != "environment"}
                out.append(json.dumps(norm(r), sort_keys=True))
            return sorted(out)

        for v in REPORT_VIEWS + ("subscription_history",):
            if v == "subscription_status_counts":
                continue
            if v == "subscription_history":
                cols = "subscription_id, customer_id, currency_code, seq, event_type, occurred_at, month, status, " \
                       "prev_status, list_mrr_minor, mrr_minor, prev_mrr_minor, delta_minor, movement"
                where = "currency_code = 'EUR' AND subscription_id IN (%s, %s)" % (H.lit(s["in"]["sub"]),
                                                                                   H.lit(s["out"]["sub"]))
                sandbox = q("SELECT %s FROM paddle.%s WHERE %s AND environment = 'sandbox'" % (cols, v, where))
                live = q("SELECT %s FROM paddle.%s WHERE %s AND environment = 'live'" % (cols, v, where))
            elif v == "entitlements":
                ids = lambda side: ", ".join(H.lit(s[side][k]) for k in ("cust", "cust2"))  # noqa: E731
                sandbox = view(v, "customer_id IN (%s)" % ids("in"))
                live = view(v, "customer_id IN (%s)" % ids("out"))
            else:
                sandbox, live = view(v, in_currency("EUR")), view(v, in_currency("EUR", "live"))
            if v != "mrr":                              # the subscription ended: no MRR left
                self.assertTrue(sandbox, v)
            self.assertEqual(canon(sandbox), canon(live), v)


class Consistency(ReportCase):
    """Identities between the reports, over every scenario."""

    @classmethod
    def setUpClass(cls):
        load_all()

    def test_ending_mrr_is_current_mrr(self):
        rows = H.sql("""
            WITH last AS (
                SELECT DISTINCT ON (environment, currency_code) environment, currency_code, ending_mrr
                FROM paddle.mrr_movements ORDER BY environment, currency_code, month DESC)
            SELECT coalesce(l.environment, m.environment), coalesce(l.currency_code, m.currency_code),
                   coalesce(l.ending_mrr, 0)::text, coalesce(m.mrr + m.past_due_mrr, 0)::text
            FROM last l FULL JOIN paddle.mrr m USING (environment, currency_code)
            -- mrr ends a subscription at the date of its scheduled cancel or pause; the movements when its
            -- canceled/paused event arrives
            WHERE NOT EXISTS (SELECT FROM paddle.subscriptions s JOIN paddle.payment_events e USING (event_id)
                              WHERE e.environment = coalesce(l.environment, m.environment)
                                AND s.currency_code = coalesce(l.currency_code, m.currency_code)
                                AND s.status IN ('active', 'past_due')
                                AND s.scheduled_change_action IN ('cancel', 'pause')
                                AND s.scheduled_change_effective_at <= now())
            ORDER BY 1, 2""")
        self.assertGreaterEqual(len(rows), 8)
        for env, cur, ending, now in rows:
            self.assertEqual(decimal.Decimal(ending), decimal.Decimal(now), (env, cur))

    def test_models_and_days_add_up_to_revenue(self):
        rows = H.sql("""
            WITH r AS (SELECT environment, currency_code, sum(gross_minor) g, sum(net_of_tax_minor) n, count(*) c
                       FROM paddle.revenue_transactions GROUP BY 1, 2),
                 d AS (SELECT environment, currency_code, sum(gross) g, sum(net_of_tax) n, sum(transactions) c
                       FROM paddle.revenue_daily GROUP BY 1, 2),
                 a AS (SELECT environment, currency_code, model, sum(gross) g, sum(net_of_tax) n,
                              sum(transactions) c FROM paddle.attribution GROUP BY 1, 2, 3)
            SELECT r.environment, r.currency_code, a.model,
                   (paddle.to_major(r.g, r.currency_code) = d.g AND paddle.to_major(r.n, r.currency_code) = d.n
                    AND r.c = d.c AND d.g = a.g AND d.n = a.n AND d.c = a.c)::text
            FROM r JOIN d USING (environment, currency_code) JOIN a USING (environment, currency_code)
            ORDER BY 1, 2, 3""")
        self.assertGreaterEqual(len(rows), 16)
        self.assertEqual([r for r in rows if r[3] != "true"], [])


class Catalog(ReportCase):
    def test_every_report_is_catalogued_and_runs_as_the_cli_runs_it(self):
        cat = q("SELECT * FROM paddle.report_catalog ORDER BY name")
        self.assertEqual(sorted(r["name"] for r in cat), sorted(REPORT_VIEWS))
        for r in cat:
            cols = dict(H.sql("SELECT column_name, data_type FROM information_schema.columns WHERE "
                              "table_schema = 'paddle' AND table_name = %s" % H.lit(r["view_name"])))
            self.assertEqual(cols.get("environment"), "text", r["name"])
            if r["time_column"] is not None:
                self.assertEqual(cols.get(r["time_column"]), "date", r["name"])
            terms = [t.split() for t in r["order_by"].split(", ")]
            for t in terms:
                self.assertIn(t[0], cols, r["name"])
            self.assertTrue(r["description"].strip())
            # The statement `paddlehook report` builds (identifiers quoted, NULL-able parameters).
            sql = 'SELECT * FROM paddle."%s" WHERE ($1::text IS NULL OR environment = $1)' % r["view_name"]
            sql += (' AND ($2::date IS NULL OR "%s" >= $2::date)' % r["time_column"] if r["time_column"]
                    else " AND $2::date IS NULL")
            sql += " ORDER BY " + ", ".join('"%s"%s' % (t[0], " DESC" if t[1:] == ["DESC"] else "") for t in terms)
            H.sql("PREPARE r AS %s; EXECUTE r(NULL, NULL); EXECUTE r('live', %s); DEALLOCATE r"
                  % (sql, "'2024-01-01'" if r["time_column"] else "NULL"))

    def test_catalog_rejects_unsafe_entries(self):
        for bad in ("'x; DROP TABLE paddle.customers', NULL, 'day'", "'mrr', 'day)--', 'day'",
                    "'mrr', NULL, 'day; SELECT 1'", "'mrr', NULL, 'day NULLS FIRST'"):
            with self.assertRaises(Exception, msg=bad):
                H.sql("INSERT INTO paddle.report_catalog (name, view_name, time_column, order_by, description) "
                      "VALUES ('bad', %s, 'x')" % bad)



class Cli(ReportCase):
    @classmethod
    def setUpClass(cls):
        load("plans")
        load("minor_units")
        load("dunning")

    def test_report_lists_every_report(self):
        out = H.cli("report").stdout
        for name in REPORT_VIEWS:
            self.assertIn(name, out)

    def test_mrr_csv_prints_the_view(self):
        out = H.cli("report", "mrr", "--format", "csv").stdout
        rows = list(csv.reader(io.StringIO(out)))
        cols = [r[0] for r in H.sql("SELECT column_name FROM information_schema.columns WHERE table_schema = "
                                    "'paddle' AND table_name = 'mrr' ORDER BY ordinal_position")]
        self.assertEqual(rows[0], cols)
        want = [["" if v is None else v for v in r]
                for r in H.sql("SELECT * FROM paddle.mrr ORDER BY environment, currency_code")]
        self.assertEqual(rows[1:], want)
        self.assertIn(["sandbox", "CHF", "4", "4", "259.00", "3108.00", "1", "40.00"], rows)

    def test_a_report_that_cannot_be_written_fails(self):
        """A full disk under the output is an error, not an empty report and exit 0."""
        for fmt in ("json", "csv", "table"):
            with self.subTest(format=fmt), open("/dev/full", "w") as full:
                p = subprocess.run([H.binary, "report", "mrr", "--format", fmt], stdout=full, stderr=subprocess.PIPE,
                                   text=True, env=H.env(), timeout=60)
                self.assertEqual(p.returncode, 1, p.stderr)
                self.assertIn("paddlehook report: cannot write to standard output: No space left on device", p.stderr)

    def catalog_view(self, name, select):
        """A report of one's own for the test's length; removed by cleanup. It is ordered by its environment
        column, a constant in these views, so PostgreSQL sends the rows as it makes them (no sort first)."""
        H.sql("CREATE VIEW paddle.%s AS %s; INSERT INTO paddle.report_catalog (name, view_name, time_column, "
              "order_by, description) VALUES ('%s', '%s', NULL, 'environment', 'test')" % (name, select, name, name))
        self.addCleanup(H.sql, "DELETE FROM paddle.report_catalog WHERE name = '%s'; DROP VIEW paddle.%s"
                        % (name, name))

    def test_csv_and_json_of_any_length_take_the_memory_of_a_row(self):
        """Written as PostgreSQL sends the rows, not after all of them arrived: 300,000 rows of 200 bytes
        (60 MB) pass through a command whose peak memory stays far below that."""
        self.catalog_view("test_long", "SELECT 'live'::text AS environment, g AS n, repeat('x', 200) AS filler "
                                       "FROM generate_series(1, 300000) g")
        self.catalog_view("test_fails_at_the_end", "SELECT 'live'::text AS environment, 1 / (300000 - g) AS n "
                                                   "FROM generate_series(1, 300000) g")

        def peak_kib(name, fmt):
            proc = subprocess.Popen([H.binary, "report", name, "--format", fmt], stdout=subprocess.PIPE,
                                    stderr=subprocess.DEVNULL, env=H.env())
            lines = sum(1 for _ in proc.stdout)
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            self.assertEqual(proc.returncode, 0)
            return lines, usage.ru_maxrss
        for fmt in ("csv", "json"):
            with self.subTest(format=fmt):
                lines, peak = peak_kib("test_long", fmt)
                self.assertGreaterEqual(lines, 300001)
                _, small = peak_kib("mrr", fmt)
                self.assertLess(peak - small, 16 * 1024, "KiB more than a report of a few rows takes")
                # Once the output is lost the rows are left unread: the failing one at the end is never reached.
                with open("/dev/full", "w") as full:
                    p = subprocess.run([H.binary, "report", "test_fails_at_the_end", "--format", fmt], stdout=full,
                                       stderr=subprocess.PIPE, text=True, env=H.env(), timeout=60)
                self.assertEqual(p.returncode, 1)
                self.assertRegex(p.stderr, r"\Apaddlehook report: cannot write to standard output(: No space left on "
                                           r"device)?\n\Z")

    def test_a_query_that_fails_part_way_fails_the_command(self):
        self.catalog_view("test_fails_late", "SELECT 'live'::text AS environment, g AS n, 1 / (g - 5000) AS broken "
                                             "FROM generate_series(1, 10000) g")
        outputs = {}
        for fmt in ("csv", "json", "table"):
            with self.subTest(format=fmt):
                p = H.cli("report", "test_fails_late", "--format", fmt, check=False)
                self.assertEqual(p.returncode, 1)
                self.assertIn("division by zero", p.stderr)
                outputs[fmt] = p.stdout
        # csv and json were on their way (the rows before the failing one); a table waits for every row.
        self.assertEqual(outputs["csv"].splitlines()[0], "environment,n,broken")
        self.assertEqual(len(outputs["csv"].splitlines()), 1 + 4999)
        self.assertEqual(outputs["table"], "")

    def test_environment_and_since_filters(self):
        out = H.cli("report", "revenue_daily", "--environment", "sandbox", "--since", "2024-03-06",
                    "--format", "csv").stdout
        rows = list(csv.reader(io.StringIO(out)))[1:]
        want = [["" if v is None else v for v in r] for r in H.sql(
            "SELECT * FROM paddle.revenue_daily WHERE environment = 'sandbox' AND day >= '2024-03-06' "
            "ORDER BY day, environment, currency_code")]
        self.assertEqual(rows, want)
        self.assertTrue(rows and all(r[0] >= "2024-03-06" and r[1] == "sandbox" for r in rows))
        for args, message in ((("mrr", "--since", "2024-01-01"), "paddlehook report: 'mrr' has no time column; "
                                                                  "--since does not apply"),
                              (("no_such_report",), "paddlehook report: no report named 'no_such_report'")):
            p = H.cli("report", *args, check=False)
            self.assertEqual((p.returncode, p.stdout), (2, ""), args)
            self.assertIn(message, p.stderr)

    def test_text_from_checkout_forms_cannot_drive_a_terminal_or_a_spreadsheet(self):
        """utm_* values and names come from buyers: in the table, and in CSV
        on a terminal, a control character is shown as \\xNN; JSON writes
        DEL and C1 ones as \\u escapes (as it does C0 ones), which read back
        the same; in CSV a text cell that starts like a formula gets a leading
        '; numbers stay as they are."""
        self.catalog_view("test_hostile_text",
                          "SELECT 'live'::text AS environment, "
                          "E'\\x1b[2J\\x1b[31mred' AS clear, '=HYPERLINK(\"http://evil.example/\",\"x\")'::text AS formula, "
                          "'-1+1'::text AS dash, -1.5::numeric AS amount, E'fake\\nrow' AS two_lines, U&'\\009B2J' AS c1, "
                          "'-1 day'::interval AS back, 'café-newsletter'::text AS source, ' =1+1'::text AS blank_first, "
                          "E'\\n@SUM(A1)' AS break_first, '＝1+1'::text AS wide, E'del\\x7f' AS del")
        table = H.cli("report", "test_hostile_text").stdout
        csv_out = H.cli("report", "test_hostile_text", "--format", "csv").stdout
        rc, csv_on_terminal, _ = H.cli_on_terminal("report", "test_hostile_text", "--format", "csv")
        self.assertEqual(rc, 0)
        json_text = H.cli("report", "test_hostile_text", "--format", "json").stdout
        rows = json.loads(json_text, parse_float=decimal.Decimal)
        self.assertNotRegex(table, "[\x00-\x09\x0b-\x1f\x7f\x80-\x9f]")
        lines = table.splitlines()
        self.assertEqual(len(lines), 4, table)
        self.assertIn("\\x1b[2J\\x1b[31mred", lines[2])
        self.assertIn("fake\\x0arow", lines[2])
        self.assertIn("\\xc2\\x9b2J", lines[2])
        self.assertEqual(lines[3], "(1 row)")
        self.assertEqual(len(lines[0]), len(lines[2]), "columns line up, in characters")
        got = list(csv.reader(io.StringIO(csv_out)))
        self.assertEqual(got[1], ["live", "\x1b[2J\x1b[31mred", "'=HYPERLINK(\"http://evil.example/\",\"x\")", "'-1+1",
                                  "-1.5", "fake\nrow", "\u009b2J", "-1 days", "café-newsletter", "' =1+1",
                                  "'\n@SUM(A1)", "'＝1+1", "del\x7f"])
        self.assertNotRegex(csv_on_terminal, "[\x00-\x09\x0b\x0c\x0e-\x1f\x7f\x80-\x9f]")
        self.assertIn("live,\\x1b[2J\\x1b[31mred,", csv_on_terminal)
        self.assertIn(",fake\\x0arow,\\xc2\\x9b2J,", csv_on_terminal)
        self.assertIn(",café-newsletter,' =1+1,", csv_on_terminal)
        self.assertIn(",'＝1+1,del\\x7f\r", csv_on_terminal)
        self.assertNotRegex(json_text, "[\x00-\x09\x0b-\x1f\x7f\x80-\x9f]")
        self.assertIn('"c1": "\\u009b2J"', json_text)
        self.assertIn('"del": "del\\u007f"', json_text)
        self.assertEqual(rows, [{"environment": "live", "clear": "\x1b[2J\x1b[31mred",
                                 "formula": '=HYPERLINK("http://evil.example/","x")', "dash": "-1+1",
                                 "amount": decimal.Decimal("-1.5"), "two_lines": "fake\nrow", "c1": "\u009b2J",
                                 "back": "-1 days", "source": "café-newsletter", "blank_first": " =1+1",
                                 "break_first": "\n@SUM(A1)", "wide": "＝1+1", "del": "del\x7f"}])

    def test_a_report_of_ones_own_runs_in_the_roles_search_path(self):
        """A view added to the catalog may call functions written for the usual search_path (public here)."""
        H.sql("CREATE TABLE public.test_fx (rate numeric); INSERT INTO public.test_fx VALUES (1.1); "
              "CREATE FUNCTION public.test_fx_rate() RETURNS numeric LANGUAGE sql AS 'SELECT rate FROM test_fx'; "
              "CREATE VIEW paddle.test_custom_fx AS SELECT 'live'::text AS environment, public.test_fx_rate() AS rate; "
              "INSERT INTO paddle.report_catalog (name, view_name, time_column, order_by, description) "
              "VALUES ('test_custom_fx', 'test_custom_fx', NULL, 'environment', 'test')")
        try:
            p = H.cli("report", "test_custom_fx", "--format", "csv", check=False)
        finally:
            H.sql("DELETE FROM paddle.report_catalog WHERE name = 'test_custom_fx'; DROP VIEW paddle.test_custom_fx; "
                  "DROP FUNCTION public.test_fx_rate(); DROP TABLE public.test_fx")
        self.assertEqual((p.returncode, p.stdout), (0, "environment,rate\nlive,1.1\n"), p.stderr)

    def test_json_writes_nan_and_infinity_as_strings(self):
        """NaN and ±Infinity (numeric or float) are no JSON numbers; a strict parser must take the output."""
        H.sql("CREATE VIEW paddle.test_not_finite AS SELECT 'live'::text AS environment, 'NaN'::numeric AS n, "
              "'Infinity'::float8 AS up, '-Infinity'::float8 AS down, -0.5::float8 AS half, 1e300::float8 AS big; "
              "INSERT INTO paddle.report_catalog (name, view_name, time_column, order_by, description) "
              "VALUES ('test_not_finite', 'test_not_finite', NULL, 'environment', 'test')")
        try:
            out = H.cli("report", "test_not_finite", "--format", "json").stdout
        finally:
            H.sql("DELETE FROM paddle.report_catalog WHERE name = 'test_not_finite'; DROP VIEW paddle.test_not_finite")

        def refuse(word):
            raise ValueError("not JSON: " + word)
        self.assertEqual(json.loads(out, parse_constant=refuse),
                         [{"environment": "live", "n": "NaN", "up": "Infinity", "down": "-Infinity", "half": -0.5,
                           "big": 1e300}])

    def test_json_keeps_numbers_exact(self):
        out = H.cli("report", "revenue_daily", "--environment", "sandbox", "--format", "json").stdout
        rows = json.loads(out, parse_float=decimal.Decimal)
        bhd = [r for r in rows if r["currency_code"] == "BHD"]
        self.assertEqual(norm([(r["day"], r["gross"], r["net_of_tax"]) for r in bhd]),
                         [["2024-03-05", "13.579", "12.345"]])
