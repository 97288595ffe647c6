"""Billing reports (sql/migrations/0003_reports.sql) through nginx -> worker -> PostgreSQL: each report's
exact numbers for the scenarios of report_scenarios.py (one per currency)."""

import datetime
import decimal
import json

from report_scenarios import report_module
from reportdata import J, churn_row, mrr_row, money_row, movement_row, norm

H, DB, ReportCase = report_module()
setUpModule, tearDownModule = H.start, H.stop
q, view, load, in_currency = DB.q, DB.view, DB.load, DB.in_currency


class Currencies(ReportCase):
    def test_exponents_of_paddle_currencies_and_iso_list(self):
        rows = {r["currency_code"]: r["exponent"] for r in q("SELECT currency_code, exponent FROM paddle.currencies")}
        self.assertEqual(len(rows), 168)
        paddle_supported = ("USD EUR GBP JPY AUD CAD CHF HKD SGD SEK ARS BRL CNY COP CZK DKK HUF ILS INR KRW MXN "
                            "NOK NZD PLN RUB THB TRY TWD UAH VND ZAR PEN").split()
        for code in paddle_supported:
            self.assertIn(code, rows)
        for code in "JPY KRW VND CLP ISK PYG UGX XAF XOF BIF".split():
            self.assertEqual(rows[code], 0, code)
        for code in "BHD KWD OMR JOD TND IQD LYD".split():
            self.assertEqual(rows[code], 3, code)
        for code in "USD EUR GBP HUF TWD INR ZAR".split():
            self.assertEqual(rows[code], 2, code)
        self.assertEqual(rows["CLF"], 4)
        self.assertEqual(rows["UYW"], 4)

    def test_to_major_is_exact_with_the_currency_scale(self):
        r = q("SELECT paddle.to_major(3000, 'USD') usd, paddle.to_major(1500, 'JPY') jpy, "
              "paddle.to_major(12345, 'BHD') bhd, paddle.to_major(-7, 'KWD') kwd, paddle.to_major(0, 'EUR') zero, "
              "paddle.to_major(5, 'QQQ') unknown, paddle.to_major(250, NULL) no_code, "
              "paddle.to_major(NULL, 'USD') no_amount, paddle.to_major(99999999999999999999999, 'USD') big, "
              "paddle.to_major(1461.5, 'JPY') fraction, pg_typeof(paddle.to_major(1, 'USD'))::text typ")[0]
        self.assertRows(r, {"usd": "30.00", "jpy": "1500", "bhd": "12.345", "kwd": "-0.007", "zero": "0.00",
                            "unknown": "0.05", "no_code": "2.50", "no_amount": None,
                            "big": "999999999999999999999.99", "fraction": "1461.5", "typ": "numeric"})


class MinorUnits(ReportCase):
    @classmethod
    def setUpClass(cls):
        cls.s = load("minor_units")

    def test_revenue_daily_jpy_and_bhd(self):
        self.assertRows(view("revenue_daily", in_currency("JPY")), [
            money_row("2024-03-05", "JPY", 1, "13200", "0", "1200", "12000", "660", "11340"),
            money_row("2024-03-06", "JPY", 1, "3234", "0", "294", "2940", "161", "2779"),
        ])
        self.assertRows(view("revenue_daily", in_currency("BHD")), [
            money_row("2024-03-05", "BHD", 1, "13.579", "0.000", "1.234", "12.345", "0.678", "11.667",
                      0, "0.000", 0, "0.000"),
        ])

    def test_one_time_purchases_grant_forever(self):
        s = self.s
        rows = view("entitlements", "customer_id = %s" % H.lit(s["cj"]))
        expected = sorted([(s["pj1"].product_id, s["pj1"].id, s["tj1"]), (s["pj2"].product_id, s["pj2"].id, s["tj2"])])
        self.assertRows(rows, [{"environment": "sandbox", "customer_id": s["cj"], "customer_email": "yuki@example.jp",
                                "product_id": pro, "price_id": pri, "granted": True, "access_until": None,
                                "forever": True, "reason": "one_time_purchase", "subscription_id": None,
                                "subscription_status": None, "transaction_id": txn}
                               for pro, pri, txn in expected])
        rows = view("entitlements", "customer_id = %s" % H.lit(s["cb"]))
        self.assertEqual([(r["granted"], r["forever"], r["customer_email"]) for r in rows], [(True, True, None)])


class Plans(ReportCase):
    @classmethod
    def setUpClass(cls):
        cls.s = load("plans")

    def test_mrr_normalises_every_billing_cycle(self):
        # CHF: yearly 1200.00/12 + monthly 2 x 25.00 (one-time setup item left out) + quarterly 300.00/3
        #      + 9.00 (CHF override of a USD price); past_due 40.00 apart; trialing counts nowhere.
        self.assertRows(view("mrr", in_currency("CHF")), [
            mrr_row("CHF", 4, 4, "259.00", "3108.00", 1, "40.00")])
        # NZD: weekly 33.60 x 1461/336 = 146.10, daily 4.80 x 1461/48 = 146.10, weekly 10.00 -> 43.482142...
        #      sum 33568.214... minor units, rounded once: 335.68
        self.assertRows(view("mrr", in_currency("NZD")), [mrr_row("NZD", 3, 3, "335.68", "4028.16")])

    def test_item_factors_are_exact(self):
        s = self.s
        rows = q("SELECT h.id AS subscription_id, m.* FROM paddle.subscriptions h "
                 "JOIN paddle.payment_events e ON e.event_id = h.event_id "
                 "CROSS JOIN LATERAL paddle.subscription_mrr_items(e.payload -> 'data') m "
                 "WHERE h.id IN (%s) ORDER BY m.monthly_amount"
                 % ", ".join(H.lit(s[k]) for k in ("yearly", "quarterly", "weekly", "daily", "override")))
        got = {r["subscription_id"]: r for r in rows}
        self.assertEqual(len(rows), 5)
        self.assertEqual(decimal.Decimal(got[s["yearly"]]["monthly_amount"]), 10000)
        self.assertEqual(decimal.Decimal(got[s["quarterly"]]["monthly_amount"]), 10000)
        self.assertEqual(decimal.Decimal(got[s["weekly"]]["monthly_amount"]), 14610)
        self.assertEqual(decimal.Decimal(got[s["daily"]]["monthly_amount"]), 14610)
        self.assertEqual(norm([got[s["override"]][k] for k in ("currency_code", "unit_amount", "billing_interval")]),
                         ["CHF", "900", "month"])

    def test_movements_all_new_and_ending_equals_mrr(self):
        self.assertRows(view("mrr_movements", in_currency("CHF")), [
            movement_row("2024-01-01", "CHF", new="299.00", net="299.00", ending="299.00", counts=(5, 0, 0, 0, 0))])
        self.assertRows(view("mrr_movements", in_currency("NZD")), [
            movement_row("2024-01-01", "NZD", new="335.68", net="335.68", ending="335.68", counts=(3, 0, 0, 0, 0))])


class CountryPrices(ReportCase):
    @classmethod
    def setUpClass(cls):
        cls.s = load("country_prices")

    def test_mrr_takes_the_price_of_the_address_country(self):
        # IN and PK (its address delivered a month after the subscription) pay 5.00; US, DE (its override is in
        # EUR, the subscription in USD), no known address and a live address of a sandbox subscription 10.00.
        self.assertRows(view("mrr", in_currency("USD")), [mrr_row("USD", 6, 6, "50.00", "600.00")])
        self.assertRows(view("mrr_movements", in_currency("USD")), [
            movement_row("2024-08-01", "USD", new="50.00", net="50.00", ending="50.00", counts=(6, 0, 0, 0, 0))])
        # MY has no override of its own: the SGD one (for SG) stands in, as for an unknown country.
        self.assertRows(view("mrr", in_currency("SGD")), [mrr_row("SGD", 1, 1, "13.00", "156.00")])

    def test_items_per_country(self):
        s = self.s
        rows = q("SELECT c.country, m.currency_code, m.unit_amount FROM paddle.subscriptions h "
                 "JOIN paddle.payment_events e ON e.event_id = h.event_id "
                 "CROSS JOIN (VALUES ('IN'), ('PK'), ('DE'), ('US'), (NULL)) AS c(country) "
                 "CROSS JOIN LATERAL paddle.subscription_mrr_items(e.payload -> 'data', c.country) m "
                 "WHERE h.id = %s ORDER BY c.country NULLS LAST" % H.lit(s["us"]))
        self.assertRows(rows, [{"country": c, "currency_code": "USD", "unit_amount": a}
                               for c, a in (("DE", "1000"), ("IN", "500"), ("PK", "500"), ("US", "1000"),
                                            (None, "1000"))])
        self.assertRows(q("SELECT paddle.country_price(%s::jsonb, 'EUR', 'DE') AS de, "
                          "paddle.country_price(%s::jsonb, 'USD', 'DE') AS none"
                          % (H.lit(json.dumps(s["price"].json())), H.lit(json.dumps(s["price"].json())))),
                        [{"de": {"amount": "900", "currency_code": "EUR"}, "none": None}])

    def test_addresses_are_state(self):
        s = self.s
        rows = q("SELECT id, environment, country_code, status FROM paddle.addresses WHERE id IN (%s) ORDER BY 3, 2"
                 % ", ".join(H.lit(s["a_" + k]) for k in ("in", "us", "de", "late_pk", "live_in", "none")))
        self.assertEqual([(r["id"], r["environment"], r["country_code"]) for r in rows], [
            (s["a_de"], "sandbox", "DE"), (s["a_live_in"], "live", "IN"), (s["a_in"], "sandbox", "IN"),
            (s["a_late_pk"], "sandbox", "PK"), (s["a_us"], "sandbox", "US")])


class Upgrade(ReportCase):
    @classmethod
    def setUpClass(cls):
        cls.s = load("upgrade")

    def test_expansion_contraction_movements(self):
        self.assertRows(view("mrr_movements", in_currency("SEK")), [
            movement_row("2024-01-01", "SEK", new="100.00", net="100.00", ending="100.00", counts=(1, 0, 0, 0, 0)),
            movement_row("2024-02-01", "SEK", expansion="200.00", net="200.00", ending="300.00",
                         counts=(0, 1, 0, 0, 0)),
            movement_row("2024-03-01", "SEK", contraction="100.00", net="-100.00", ending="200.00",
                         counts=(0, 0, 1, 0, 0)),
            movement_row("2024-04-01", "SEK", expansion="50.00", net="50.00", ending="250.00",
                         counts=(0, 1, 0, 0, 0)),
        ])
        self.assertRows(view("mrr", in_currency("SEK")), [mrr_row("SEK", 1, 1, "250.00", "3000.00")])

    def test_checkout_and_proration_revenue(self):
        self.assertRows(view("revenue_daily", in_currency("SEK")), [
            money_row("2024-01-10", "SEK", 1, "110.00", "0.00", "10.00", "100.00", "5.50", "94.50", 0, "0.00", 0,
                      "0.00"),
            money_row("2024-02-15", "SEK", 1, "66.00", "0.00", "6.00", "60.00", "3.30", "56.70", 0, "0.00", 0,
                      "0.00"),
        ])


class PauseResume(ReportCase):
    @classmethod
    def setUpClass(cls):
        cls.s = load("pause")

    def test_pause_churns_and_resume_reactivates(self):
        self.assertRows(view("mrr_movements", in_currency("NOK")), [
            movement_row("2024-01-01", "NOK", new="120.00", net="120.00", ending="120.00", counts=(2, 0, 0, 0, 0)),
            movement_row("2024-02-01", "NOK", churned="50.00", net="-50.00", ending="70.00", counts=(0, 0, 0, 1, 0)),
            movement_row("2024-03-01", "NOK", churned="70.00", reactivated="50.00", net="-20.00", ending="50.00",
                         counts=(0, 0, 0, 1, 1)),
        ])
        self.assertRows(view("mrr", in_currency("NOK")), [mrr_row("NOK", 1, 1, "50.00", "600.00")])
        self.assertEqual(view("churn_monthly", in_currency("NOK")), [], "a pause is not a cancellation")

    def test_paused_has_no_access_resumed_has(self):
        s = self.s
        rows = view("entitlements", "customer_id IN (%s, %s)" % (H.lit(s["c_resumed"]), H.lit(s["c_paused"])))
        got = {r["customer_id"]: (r["granted"], r["reason"], r["access_until"], r["subscription_status"])
               for r in rows}
        self.assertEqual(got, {
            s["c_resumed"]: (True, "active", J("2030-04-05 08:00"), "active"),
            s["c_paused"]: (False, "paused", J("2024-03-01 00:00"), "paused"),
        })


class CancelAtPeriodEnd(ReportCase):
    @classmethod
    def setUpClass(cls):
        cls.s = load("cancel")

    def test_churn_and_movements(self):
        self.assertRows(view("churn_monthly", in_currency("DKK")), [
            churn_row("2024-02-01", "DKK", voluntary=(1, 1, "80.00")),
            churn_row("2024-03-01", "DKK", voluntary=(1, 1, "50.00")),
        ])
        self.assertRows(view("mrr_movements", in_currency("DKK")), [
            movement_row("2024-01-01", "DKK", new="190.00", net="190.00", ending="190.00", counts=(3, 0, 0, 0, 0)),
            movement_row("2024-02-01", "DKK", churned="80.00", net="-80.00", ending="110.00", counts=(0, 0, 0, 1, 0)),
            movement_row("2024-03-01", "DKK", churned="50.00", net="-50.00", ending="60.00", counts=(0, 0, 0, 1, 0)),
        ])
        # the scheduled cancellation still pays until it takes effect
        self.assertRows(view("mrr", in_currency("DKK")), [mrr_row("DKK", 1, 1, "60.00", "720.00")])

    def test_access_until_period_end(self):
        s = self.s
        rows = view("entitlements", "customer_id IN (%s)" % ", ".join(
            H.lit(s[k]) for k in ("c_ended", "c_scheduled", "c_paid_through")))
        got = {r["subscription_id"]: (r["granted"], r["reason"], r["access_until"]) for r in rows}
        self.assertEqual(got, {
            s["ended"]: (False, "canceled", J("2024-02-01 06:00")),
            s["scheduled"]: (True, "cancel_scheduled", J("2030-06-01 00:00")),
            s["paid_through"]: (True, "canceled_until_period_end", J("2030-06-01 00:00")),
        })


def dunning_case(currency, case_type, case_id, sub, txn, cust, email, amount, failed_at, attempts, state,
                 recovered_at=None, lost_at=None, ttr=None):
    """A paddle.dunning row of the sandbox."""
    return {"failed_on": failed_at[:10], "environment": "sandbox", "case_type": case_type, "case_id": case_id,
            "subscription_id": sub, "transaction_id": txn, "customer_id": cust, "customer_email": email,
            "currency_code": currency, "amount": amount, "failed_at": J(failed_at), "failed_attempts": attempts,
            "state": state, "recovered_at": J(recovered_at) if recovered_at else None,
            "lost_at": J(lost_at) if lost_at else None, "time_to_recover": ttr}


class Dunning(ReportCase):
    @classmethod
    def setUpClass(cls):
        cls.s = load("dunning")

    def test_cases_recovered_lost_open(self):
        s = self.s

        def case(*columns, **kw):
            return dunning_case("PLN", *columns, **kw)

        self.assertRows(view("dunning", in_currency("PLN")), [
            case("subscription", s["rec"], s["rec"], s["t_rec"], s["c_rec"], "rita@example.pl", "66.00",
                 "2024-02-01 10:00", 1, "recovered", recovered_at="2024-02-04 10:00", ttr="3 days"),
            case("subscription", s["lost"], s["lost"], s["t_lost"], s["c_lost"], None, "77.00",
                 "2024-02-10 08:00", 2, "lost", lost_at="2024-03-01 00:00"),
            case("transaction", s["t_checkout"], None, s["t_checkout"], s["c_checkout"], None, "44.00",
                 "2024-02-20 12:00", 1, "recovered", recovered_at="2024-02-20 12:05", ttr="00:05:00"),
            case("transaction", s["t_open"], None, s["t_open"], s["c_open"], None, "55.00",
                 "2024-02-21 09:00", 1, "open"),
        ])

    def test_summary(self):
        self.assertRows(view("dunning_summary", in_currency("PLN")), [{
            "environment": "sandbox", "currency_code": "PLN", "cases": 4, "open_cases": 1, "recovered_cases": 2,
            "lost_cases": 1, "recovery_rate": "0.6667", "amount_failed": "242.00", "amount_recovered": "110.00",
            "amount_lost": "77.00", "median_time_to_recover": "1 day 12:02:30",
            "avg_time_to_recover": "1 day 12:02:30"}])

    def test_failed_payment_churn_and_revenue_on_payment_day(self):
        self.assertRows(view("churn_monthly", in_currency("PLN")), [
            churn_row("2024-03-01", "PLN", failed=(1, 1, "70.00"))])
        # the recovered renewal was billed on 1 Feb and counts on 4 Feb, when it was paid
        self.assertRows(view("revenue_daily", in_currency("PLN")), [
            money_row("2024-02-04", "PLN", 1, "66.00", "0.00", "6.00", "60.00", "3.30", "56.70", 0, "0.00", 0, "0.00"),
            money_row("2024-02-20", "PLN", 1, "44.00", "0.00", "4.00", "40.00", "2.20", "37.80", 0, "0.00", 0, "0.00"),
        ])
        # past_due keeps its MRR until the cancellation
        self.assertRows(view("mrr_movements", in_currency("PLN")), [
            movement_row("2024-01-01", "PLN", new="130.00", net="130.00", ending="130.00", counts=(2, 0, 0, 0, 0)),
            movement_row("2024-03-01", "PLN", churned="70.00", net="-70.00", ending="60.00", counts=(0, 0, 0, 1, 0)),
        ])


class DunningOwed(ReportCase):
    @classmethod
    def setUpClass(cls):
        cls.s = load("dunning_owed")

    def test_a_case_opens_only_where_something_is_owed_and_closes_when_it_is_paid(self):
        s = self.s

        def case(key, txn, amount, failed_at, attempts, recovered_at=None, ttr=None):
            return dunning_case("HKD", "subscription", s[key], s[key], txn, s["c_" + key], None, amount, failed_at,
                                attempts, "recovered" if recovered_at else "open", recovered_at=recovered_at, ttr=ttr)

        self.assertRows(view("dunning", in_currency("HKD")), [
            case("renewal", s["t_renewal"], "99.00", "2024-06-01 10:00", 1, "2024-06-05 10:00", "4 days"),
            case("no_txn", None, None, "2024-06-10 10:00", 0, "2024-06-12 10:00", "2 days"),
            case("tie", s["t_tie"], "99.00", "2024-07-01 10:00", 1),
            case("sub_only", None, None, "2024-07-10 10:00", 0, "2024-07-12 10:00", "2 days"),
        ])
        self.assertRows(view("dunning_summary", in_currency("HKD")), [{
            "environment": "sandbox", "currency_code": "HKD", "cases": 4, "open_cases": 1, "recovered_cases": 3,
            "lost_cases": 0, "recovery_rate": "1.0000", "amount_failed": "198.00", "amount_recovered": "99.00",
            "amount_lost": "0.00", "median_time_to_recover": "2 days", "avg_time_to_recover": "2 days 16:00:00"}])


class Refunds(ReportCase):
    @classmethod
    def setUpClass(cls):
        cls.s = load("refunds")

    def test_revenue_daily_counts_refunds_and_chargebacks_on_approval_day(self):
        self.assertRows(view("revenue_daily", in_currency("AUD")), [
            money_row("2024-04-02", "AUD", 2, "165.00", "0.00", "15.00", "150.00", "8.25", "141.75", 0, "0.00", 0,
                      "0.00"),
            money_row("2024-04-03", "AUD", 1, "33.00", "0.00", "3.00", "30.00", "1.65", "28.35", 0, "0.00", 0, "0.00"),
            money_row("2024-04-06", "AUD", 0, "0.00", "0.00", "0.00", "0.00", "0.00", "0.00", 1, "22.00", 0, "0.00"),
            money_row("2024-04-07", "AUD", 0, "0.00", "0.00", "0.00", "0.00", "0.00", "0.00", 1, "55.00", 0, "0.00"),
            money_row("2024-04-08", "AUD", 0, "0.00", "0.00", "0.00", "0.00", "0.00", "0.00", 0, "0.00", 1, "33.00"),
        ])

    def test_refunds_view(self):
        s = self.s

        def adj(key, created, action, kind, status, amount, subtotal, tax, fee, earnings, txn, total, cust, email,
                approved=None):
            return {"created_on": created[:10], "environment": "sandbox", "adjustment_id": s[key], "action": action,
                    "type": kind, "status": status, "reason": "error", "currency_code": "AUD", "amount": amount,
                    "subtotal": subtotal, "tax": tax, "fee": fee, "earnings": earnings, "transaction_id": s[txn],
                    "transaction_total": total, "subscription_id": None, "customer_id": s[cust],
                    "customer_email": email, "created_at": J(created), "approved_at": J(approved) if approved else None}

        self.assertRows(view("refunds", in_currency("AUD")), [
            adj("partial", "2024-04-05 10:00", "refund", "partial", "approved", "22.00", "20.00", "2.00", "1.10",
                "18.90", "t1", "110.00", "cx", "xavier@example.com.au", approved="2024-04-06 10:00"),
            adj("full", "2024-04-07 10:00", "refund", "full", "approved", "55.00", "50.00", "5.00", "2.75", "47.25",
                "t2", "55.00", "cy", "yara@example.com.au", approved="2024-04-07 10:00"),
            adj("chargeback", "2024-04-08 10:00", "chargeback", "full", "approved", "33.00", "30.00", "3.00", "1.65",
                "28.35", "t3", "33.00", "cz", None, approved="2024-04-08 10:00"),
            adj("rejected", "2024-04-08 11:00", "refund", "partial", "rejected", "10.00", "9.10", "0.90", "0.50",
                "8.60", "t3", "33.00", "cz", None),
        ])

    def test_full_refund_revokes_one_time_access(self):
        s = self.s
        rows = view("entitlements", "customer_id IN (%s)" % ", ".join(H.lit(s[k]) for k in ("cx", "cy", "cz")))
        got = {r["customer_id"]: (r["price_id"], r["granted"], r["forever"], r["reason"], r["access_until"])
               for r in rows}
        self.assertEqual(got, {
            s["cx"]: (s["p1"].id, True, True, "one_time_purchase", None),          # partial refund only
            s["cy"]: (s["p2"].id, False, False, "refunded", J("2024-04-07 10:00")),
            # an approved full chargeback revokes as a full refund does (the rejected refund does nothing)
            s["cz"]: (s["p3"].id, False, False, "charged_back", J("2024-04-08 10:00")),
        })


class Attribution(ReportCase):
    @classmethod
    def setUpClass(cls):
        cls.s = load("attribution")

    def test_first_and_last_touch(self):
        def row(month, model, src, med, camp, gross, net):
            return {"month": month, "environment": "sandbox", "currency_code": "GBP", "model": model,
                    "utm_source": src, "utm_medium": med, "utm_campaign": camp, "transactions": 1, "customers": 1,
                    "gross": gross, "net_of_tax": net}

        self.assertRows(view("attribution", in_currency("GBP")), [
            row("2024-05-01", "first_touch", "google", "cpc", "spring", "22.00", "20.00"),
            row("2024-05-01", "first_touch", None, None, None, "11.00", "10.00"),
            row("2024-05-01", "last_touch", "google", "cpc", "spring", "22.00", "20.00"),
            row("2024-05-01", "last_touch", None, None, None, "11.00", "10.00"),
            row("2024-06-01", "first_touch", "google", "cpc", "spring", "22.00", "20.00"),
            row("2024-06-01", "first_touch", "partner", "referral", None, "55.00", "50.00"),
            row("2024-06-01", "last_touch", "newsletter", None, "june", "22.00", "20.00"),
            row("2024-06-01", "last_touch", "partner", "referral", None, "55.00", "50.00"),
        ])

    def test_each_model_adds_up_to_revenue(self):
        rows = q("SELECT a.model, sum(a.gross) gross, (SELECT sum(gross) FROM paddle.revenue_daily r WHERE %s) rev "
                 "FROM paddle.attribution a WHERE %s GROUP BY a.model ORDER BY a.model"
                 % (in_currency("GBP"), in_currency("GBP")))
        self.assertRows(rows, [{"model": "first_touch", "gross": "110.00", "rev": "110.00"},
                               {"model": "last_touch", "gross": "110.00", "rev": "110.00"}])


class Entitlements(ReportCase):
    @classmethod
    def setUpClass(cls):
        cls.s = load("grace")

    def rows(self):
        s = self.s
        return {r["customer_id"] + " " + r["product_id"]: r for r in view(
            "entitlements", "customer_id IN (%s)" % ", ".join(
                H.lit(s[k]) for k in ("c_grace", "c_expired", "c_again", "c_trial")))}

    def grant(self, cust, price, **kw):
        s = self.s
        r = self.rows()[s[cust] + " " + s[price].product_id]
        return {k: r[k] for k in kw}, kw

    def test_past_due_grace_window(self):
        s = self.s
        days = datetime.timedelta(days=7)
        for cust, key, granted, reason in (("c_grace", "grace", True, "past_due_grace"),
                                           ("c_expired", "expired", False, "past_due_grace_expired"),
                                           ("c_again", "again", True, "past_due_grace")):
            got, want = self.grant(cust, "p", granted=granted, reason=reason, access_until=J(s["since"][key] + days),
                                   subscription_id=s[key], subscription_status="past_due", forever=False)
            self.assertEqual(got, want, cust)

    def test_grace_setting_is_read_live(self):
        s = self.s
        try:
            H.sql("UPDATE paddle.report_settings SET value = '14' WHERE key = 'past_due_grace_days'")
            got, want = self.grant("c_expired", "p", granted=True, reason="past_due_grace",
                                   access_until=J(s["since"]["expired"] + datetime.timedelta(days=14)))
            self.assertEqual(got, want)
            with self.assertRaises(Exception):
                H.sql("UPDATE paddle.report_settings SET value = 'a week' WHERE key = 'past_due_grace_days'")
        finally:
            H.sql("UPDATE paddle.report_settings SET value = '7' WHERE key = 'past_due_grace_days'")
        self.assertFalse(self.rows()[s["c_expired"] + " " + s["p"].product_id]["granted"])

    def test_trialing_and_best_grant_per_price(self):
        s = self.s
        got, want = self.grant("c_trial", "q", granted=True, reason="trialing", access_until=J(s["trial_end"]),
                               customer_email=None)
        self.assertEqual(got, want)
        # a one-time purchase (forever) beats an ended subscription to the same price
        got, want = self.grant("c_grace", "one", granted=True, forever=True, reason="one_time_purchase",
                               transaction_id=s["t_one"], subscription_id=None, access_until=None,
                               customer_email="grace@example.cz", price_id=s["one"].id)
        self.assertEqual(got, want)
        self.assertEqual(len(self.rows()), 5)


class ChurnEdges(ReportCase):
    @classmethod
    def setUpClass(cls):
        cls.s = load("churn_edges")

    def test_a_cancelled_trial_is_not_churn(self):
        self.assertEqual(view("churn_monthly", in_currency("MXN")), [])
        self.assertEqual([r for r in view("mrr_movements", in_currency("MXN")) if r["churned_subscriptions"]], [])

    def test_a_cancellation_counts_once_in_the_currency_of_its_mrr(self):
        self.assertEqual(view("churn_monthly", in_currency("RON")), [])
        self.assertRows(view("churn_monthly", in_currency("TRY")), [
            churn_row("2024-06-01", "TRY", voluntary=(1, 1, "25.00")),
        ])



class ReversedChargebacks(ReportCase):
    """A dispute Paddle won: the chargeback stays on its day, its reversal takes it back on its own."""

    @classmethod
    def setUpClass(cls):
        cls.s = load("reversed_chargebacks")

    def test_revenue_daily_nets_a_reversed_chargeback_to_zero(self):
        rows = view("revenue_daily", in_currency("ZAR"))
        self.assertRows(rows, [
            money_row("2024-05-02", "ZAR", 1, "33.00", "0.00", "3.00", "30.00", "1.65", "28.35", 0, "0.00", 0, "0.00"),
            money_row("2024-05-03", "ZAR", 1, "55.00", "0.00", "5.00", "50.00", "2.75", "47.25", 0, "0.00", 0, "0.00"),
            money_row("2024-05-08", "ZAR", 0, "0.00", "0.00", "0.00", "0.00", "0.00", "0.00", 0, "0.00", 1, "33.00"),
            money_row("2024-05-10", "ZAR", 0, "0.00", "0.00", "0.00", "0.00", "0.00", "0.00", 0, "0.00", 1, "55.00"),
            money_row("2024-05-20", "ZAR", 0, "0.00", "0.00", "0.00", "0.00", "0.00", "0.00", 0, "0.00", 0, "-33.00"),
            money_row("2024-05-21", "ZAR", 0, "0.00", "0.00", "0.00", "0.00", "0.00", "0.00", 0, "0.00", 0, "-55.00"),
        ])
        self.assertEqual(sum(decimal.Decimal(r["chargebacks"]) for r in rows), 0)

    def test_a_reversed_chargeback_keeps_its_approval_day(self):
        s = self.s
        got = {r["adjustment_id"]: (r["action"], r["status"], r["approved_at"])
               for r in view("refunds", in_currency("ZAR"))}
        self.assertEqual(got, {
            s["cb1"]: ("chargeback", "reversed", J("2024-05-08 10:00")),
            s["rev1"]: ("chargeback_reverse", "approved", J("2024-05-20 10:00")),
            s["cb2"]: ("chargeback", "reversed", J("2024-05-10 10:00")),   # approval never stored: created_at
            s["rev2"]: ("chargeback_reverse", "approved", J("2024-05-21 10:00")),
        })


class Chargebacks(ReportCase):
    """A chargeback the buyer won revokes a one-time purchase as a refund does: in full, or the line of an item
    of type full; not a partial one, nor one Paddle reversed."""

    @classmethod
    def setUpClass(cls):
        cls.s = load("chargebacks")

    def test_an_approved_chargeback_revokes_unless_reversed(self):
        s = self.s
        got = {(r["customer_id"], r["price_id"]): (r["granted"], r["forever"], r["reason"], r["access_until"])
               for r in view("entitlements", "customer_id IN (%s)"
                             % ", ".join(H.lit(s["c_" + k])
                                         for k in ("full", "item", "partial", "reversed", "again")))}
        revoked = (False, False, "charged_back", J("2024-09-05 10:00"))
        kept = (True, True, "one_time_purchase", None)
        self.assertEqual(got, {
            (s["c_full"], s["p_full"][0].id): revoked,
            (s["c_item"], s["p_item"][0].id): revoked,
            (s["c_item"], s["p_item"][1].id): kept,
            (s["c_partial"], s["p_partial"][0].id): kept,
            (s["c_reversed"], s["p_reversed"][0].id): kept,
            # the reversal answered the first dispute, not the second
            (s["c_again"], s["p_again"][0].id): (False, False, "charged_back", J("2024-10-20 10:00")),
        })

    def test_a_reversed_chargeback_revokes_nothing(self):
        s = load("reversed_chargebacks")
        got = {(r["granted"], r["reason"]) for r in view("entitlements", "customer_id = %s" % H.lit(s["c"]))}
        self.assertEqual(got, {(True, "one_time_purchase")})


class Halves(ReportCase):
    """An exact half of a minor unit rounds away from zero, however many amounts of a repeating decimal make it;
    churn's mrr_lost is the sum of its two rounded parts."""

    @classmethod
    def setUpClass(cls):
        cls.s = load("halves")

    def test_mrr_rounds_an_exact_half_up(self):
        # 6 x 9997/12 = 4998.5 cents
        self.assertRows(view("mrr", in_currency("CAD")), [mrr_row("CAD", 6, 6, "49.99", "599.88")])
        # June: 4998.5 + 2 x 100.5 = 5199.5 cents new; July: 2 x 100.5 = 201 churned
        self.assertRows(view("mrr_movements", in_currency("CAD")), [
            movement_row("2024-06-01", "CAD", new="52.00", net="52.00", ending="52.00", counts=(8, 0, 0, 0, 0)),
            movement_row("2024-07-01", "CAD", churned="2.01", net="-2.01", ending="49.99", counts=(0, 0, 0, 2, 0)),
        ])

    def test_churn_mrr_lost_is_the_sum_of_its_parts(self):
        # 100.5 cents each: 1.01 + 1.01, not 2.01
        self.assertRows(view("churn_monthly", in_currency("CAD")), [
            churn_row("2024-07-01", "CAD", voluntary=(1, 1, "1.01"), failed=(1, 1, "1.01")),
        ])


class CurrencySwitch(ReportCase):
    """A subscription that changes currency goes on: its MRR moves from one currency to the other, it does not
    churn in one and start anew in the other."""

    @classmethod
    def setUpClass(cls):
        cls.s = load("currency_switch")

    def test_a_change_of_currency_is_a_contraction_and_an_expansion(self):
        self.assertRows(view("mrr_movements", "currency_code IN ('BRL', 'ARS')"), [
            movement_row("2024-01-01", "BRL", new="40.00", net="40.00", ending="40.00", counts=(2, 0, 0, 0, 0)),
            movement_row("2024-02-01", "ARS", expansion="18.00", net="18.00", ending="18.00",
                         counts=(0, 1, 0, 0, 0)),
            movement_row("2024-02-01", "BRL", contraction="20.00", churned="20.00", net="-40.00", ending="0.00",
                         counts=(0, 0, 1, 1, 0)),
        ])
        self.assertRows(view("churn_monthly", "currency_code IN ('BRL', 'ARS')"), [
            churn_row("2024-02-01", "BRL", voluntary=(1, 1, "20.00")),
        ])


class UnpaidTrials(ReportCase):
    """A trial that never paid is not churn, whatever came between (a failed first payment, a pause at the end
    of the trial); one that paid once is."""

    @classmethod
    def setUpClass(cls):
        cls.s = load("unpaid_trials")

    def test_churn_counts_only_subscriptions_that_paid(self):
        self.assertEqual(view("churn_monthly", in_currency("ILS")), [])
        self.assertEqual(view("churn_monthly", in_currency("THB")), [])
        self.assertRows(view("churn_monthly", in_currency("PHP")), [
            churn_row("2024-07-01", "PHP", failed=(1, 1, "50.00")),
        ])
        # first seen without a status: not known to be a trial, so it counts as before
        self.assertRows(view("churn_monthly", in_currency("INR")), [
            churn_row("2024-07-01", "INR", failed=(1, 1, "50.00")),
        ])

    def test_movements_keep_the_mrr_of_a_past_due_trial(self):
        # documented: past_due keeps its MRR, an unpaid trial's too; the cancellation takes it out again
        self.assertRows(view("mrr_movements", in_currency("ILS")), [
            movement_row("2024-06-01", "ILS", new="50.00", net="50.00", ending="50.00", counts=(1, 0, 0, 0, 0)),
            movement_row("2024-07-01", "ILS", churned="50.00", net="-50.00", ending="0.00", counts=(0, 0, 0, 1, 0)),
        ])
        self.assertEqual(view("mrr_movements", in_currency("THB")), [])


class ScheduleEnds(ReportCase):
    """Access ends when a scheduled cancel or pause takes effect, whether or not its event has arrived; grace
    days are 24 hours whatever the session's time zone."""

    @classmethod
    def setUpClass(cls):
        cls.s = load("schedule_ends")

    def test_a_scheduled_change_ends_access_at_its_date(self):
        s = self.s
        got = {r["customer_id"]: (r["granted"], r["reason"], r["access_until"])
               for r in view("entitlements", "customer_id IN (%s)"
                             % ", ".join(H.lit(s["c_" + k])
                                         for k in ("cancelled", "paused", "trial", "ahead", "past_due")))}
        self.assertEqual(got, {
            s["c_cancelled"]: (False, "cancel_effective", J(s["at_cancelled"])),
            s["c_paused"]: (False, "pause_effective", J(s["at_paused"])),
            s["c_trial"]: (False, "cancel_effective", J(s["at_trial"])),
            s["c_ahead"]: (True, "cancel_scheduled", J(s["at_ahead"])),
            # within its grace days, but Paddle cancels it at the scheduled date whatever its payment
            s["c_past_due"]: (False, "cancel_effective", J(s["at_past_due"])),
        })

    def test_mrr_ends_at_the_scheduled_date(self):
        # the cancel and the pause that took effect yesterday count nowhere, as they grant nothing; the
        # cancel still ahead counts, the trial brings no MRR yet, the past_due one counts apart
        self.assertRows(view("mrr", in_currency("COP")),
                        [mrr_row("COP", 1, 1, "70.00", "840.00", past_due=1, past_due_mrr="70.00")])
        # the movements follow the snapshots: the change is there once its event arrives
        self.assertEqual([r["ending_mrr"] for r in view("mrr_movements", in_currency("COP"))][-1:],
                         [decimal.Decimal("350.00")])

    def test_grace_days_are_24_hours_in_every_time_zone(self):
        sql = ("SELECT extract(epoch FROM access_until) FROM paddle.entitlements WHERE customer_id = %s"
               % H.lit(self.s["c_dst"]))
        utc = H.sql_value(sql)
        self.assertEqual(H.sql_value("SET TimeZone = 'Europe/Berlin'; " + sql), utc)
        self.assertEqual(H.sql_value("SET TimeZone = 'America/New_York'; " + sql), utc)
        self.assertEqual(H.sql_value("SELECT extract(epoch FROM timestamptz '2024-10-29 12:00+00')"), utc)


class CheckoutWithOneTimeItem(ReportCase):
    """The one-time item of a subscription checkout grants forever; the recurring one grants through the
    subscription, before and after the transaction names it."""

    @classmethod
    def setUpClass(cls):
        cls.s = load("checkout")

    def test_one_time_line_forever_recurring_line_through_the_subscription(self):
        s = self.s
        for key in ("paid", "done"):
            rows = {r["price_id"]: r for r in view("entitlements", "customer_id = %s" % H.lit(s["c_" + key]))}
            got = {price: (r["granted"], r["forever"], r["reason"], r["subscription_id"], r["transaction_id"])
                   for price, r in rows.items()}
            self.assertEqual(got, {
                s["setup"].id: (True, True, "one_time_purchase", None, s["t_" + key]),
                s["monthly"].id: (True, False, "active", s["sub_" + key], None),
            }, key)

