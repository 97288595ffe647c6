"""The report tests' scenarios, and ReportDb: one test stack's report data and queries of its views.

Each scenario is a realistic Paddle sequence (built from paddledata's sample_* snapshots with stable ids,
amounts, dates and currencies) posted through nginx to its own endpoint. Scenarios keep to their own currency
(and customers), so the aggregated views of one never see another's rows. They load lazily, once per stack, so
that any subset of tests can run (-k).
"""

import copy
import datetime
import decimal
import json
import random

from harness import Harness, HarnessTestCase, make_event, paddle_id
from reportdata import NOW, Price, T, address, adjustment, customer, norm, subscription, transaction


class Feed:
    """Events of one scenario: collected, then posted (in order, or as given) to one endpoint."""

    def __init__(self, harness, environment="sandbox"):
        self.harness = harness
        self.ep = harness.add_endpoint(environment=environment)
        self.events = []

    def add(self, event_type, data, at):
        env = make_event(event_type, copy.deepcopy(data), occurred_at=T(at), as_dict=True)
        self.events.append(env)
        return env

    def post(self, events=None):
        for env in (self.events if events is None else events):
            r = self.harness.post_event(self.ep, json.dumps(env).encode())
            if r.status != 200 or (r.json() or {}).get("status") not in ("stored", "duplicate"):
                raise AssertionError("delivery of %s %s failed: %r" % (env["event_type"], env["event_id"], r))
        return self


class ReportDb:
    """One test stack's report data: the scenarios loaded into it (each once) and its views as rows."""

    def __init__(self, harness):
        self.harness = harness
        self.loaded = {}
        self.order_by = {}

    def feed(self, environment="sandbox"):
        return Feed(self.harness, environment)

    def load(self, name):
        if name not in self.loaded:
            self.loaded[name] = SCENARIOS[name](self)
        return self.loaded[name]

    def load_all(self):
        for name in SCENARIOS:
            self.load(name)

    def q(self, sql):
        """Rows of a SELECT as dicts; numerics are Decimal (exact, scale kept), so str() shows 30.00."""
        text = self.harness.sql_value("SELECT coalesce(json_agg(_r), '[]'::json)::text FROM (%s) _r"
                                      % sql.strip().rstrip(";"))
        return json.loads(text, parse_float=decimal.Decimal)

    def view(self, name, where="TRUE"):
        """A report view's rows (dicts) filtered by a WHERE clause, in the catalog's order."""
        if name not in self.order_by:
            self.order_by[name] = self.harness.sql_value(
                "SELECT order_by FROM paddle.report_catalog WHERE view_name = %s" % Harness.lit(name)) or "1"
        return self.q("SELECT * FROM paddle.%s WHERE %s ORDER BY %s" % (name, where, self.order_by[name]))

    @staticmethod
    def in_currency(code, environment="sandbox"):
        return "currency_code = %s AND environment = %s" % (Harness.lit(code), Harness.lit(environment))


def report_module(workers=4):
    """What a report test module starts from: a stack of its own (the harness; the module starts and stops it),
    that stack's report data, and the base class of its test cases."""
    harness = Harness(workers=workers)

    class ReportCase(HarnessTestCase):
        maxDiff = None

        def assertRows(self, actual, expected, what=""):
            """View rows compared by their exact text (30.00 is not 30)."""
            self.assertEqual(norm(actual), norm(expected), what)

    ReportCase.harness = harness
    return harness, ReportDb(harness), ReportCase


# --------------------------------------------------------------------------
# Scenarios (each keeps to its own currencies)
# --------------------------------------------------------------------------

def scenario_minor_units(db):
    """One-time purchases in JPY (exponent 0) and BHD (exponent 3)."""
    f = db.feed()
    s = {"cj": paddle_id("ctm"), "cb": paddle_id("ctm"), "tj1": paddle_id("txn"), "tj2": paddle_id("txn"),
         "tb": paddle_id("txn"), "pj1": Price(12000, "JPY", recurring=False),
         "pj2": Price(980, "JPY", recurring=False), "pb": Price(12345, "BHD", recurring=False)}
    f.add("customer.created", customer(s["cj"], "yuki@example.jp"), "2024-03-01 00:00")
    for status, minute in (("ready", 0), ("paid", 2), ("completed", 3)):
        f.add("transaction." + status, transaction(s["tj1"], s["cj"], "JPY", status, [(s["pj1"], 1)],
                                                   "2024-03-05 10:%02d" % minute), "2024-03-05 10:%02d" % minute)
    f.add("transaction.completed", transaction(s["tj2"], s["cj"], "JPY", "completed", [(s["pj2"], 3)],
                                               "2024-03-06 23:59"), "2024-03-06 23:59:30")
    f.add("transaction.completed", transaction(s["tb"], s["cb"], "BHD", "completed", [(s["pb"], 1)],
                                               "2024-03-05 11:00"), "2024-03-05 11:00")
    f.post()
    return s


def scenario_plans(db):
    """MRR normalisation: yearly, quarterly, monthly, weekly, daily plans, a price override, past_due,
    trialing, and a one-time item on a subscription."""
    f = db.feed()
    s = {}
    yearly, monthly = Price(120000, "CHF", "year"), Price(2500, "CHF")
    quarterly, setup = Price(30000, "CHF", "month", 3), Price(9900, "CHF", recurring=False)
    overridden = Price(1000, "USD", overrides=[(["CH", "LI"], 900, "CHF")])
    late, trial = Price(4000, "CHF"), Price(7000, "CHF")
    weekly, daily, odd = Price(3360, "NZD", "week"), Price(480, "NZD", "day"), Price(1000, "NZD", "week")
    plan = [
        ("yearly", "CHF", "active", [(yearly, 1)], "year", 1, "active"),
        ("monthly", "CHF", "active", [(monthly, 2), (setup, 1)], "month", 1, "active"),
        ("quarterly", "CHF", "active", [(quarterly, 1)], "month", 3, "active"),
        ("override", "CHF", "active", [(overridden, 1)], "month", 1, "active"),
        ("late", "CHF", "past_due", [(late, 1)], "month", 1, "active"),
        ("trial", "CHF", "trialing", [(trial, 1)], "month", 1, "trialing"),
        ("weekly", "NZD", "active", [(weekly, 1)], "week", 1, "active"),
        ("daily", "NZD", "active", [(daily, 1)], "day", 1, "active"),
        ("odd", "NZD", "active", [(odd, 1)], "week", 1, "active"),
    ]
    for i, (name, cur, status, items, interval, freq, item_status) in enumerate(plan):
        sid, cid = paddle_id("sub"), paddle_id("ctm")
        s[name] = sid
        f.add("subscription.created", subscription(sid, cid, cur, status, items, "2024-01-%02d 08:00" % (i + 2),
                                                   interval=interval, frequency=freq, item_status=item_status),
              "2024-01-%02d 08:00" % (i + 2))
    f.post()
    return s


def scenario_upgrade(db):
    """A mid-period upgrade (expansion), a downgrade (contraction) and an added item (expansion)."""
    f = db.feed()
    base, addon = Price(10000, "SEK"), Price(5000, "SEK")
    proration = Price(6000, "SEK", recurring=False)
    sid, cid, t0, t1 = paddle_id("sub"), paddle_id("ctm"), paddle_id("txn"), paddle_id("txn")
    f.add("transaction.completed", transaction(t0, cid, "SEK", "completed", [(base, 1)], "2024-01-10 09:00",
                                               sub=sid, origin="web"), "2024-01-10 09:00")
    f.add("subscription.created", subscription(sid, cid, "SEK", "active", [(base, 1)], "2024-01-10 09:01"),
          "2024-01-10 09:01")
    f.add("subscription.updated", subscription(sid, cid, "SEK", "active", [(base, 3)], "2024-02-15 12:00",
                                               created="2024-01-10 09:01"), "2024-02-15 12:00")
    f.add("transaction.completed", transaction(t1, cid, "SEK", "completed", [(proration, 1)], "2024-02-15 12:01",
                                               sub=sid, origin="subscription_update"), "2024-02-15 12:01")
    f.add("subscription.updated", subscription(sid, cid, "SEK", "active", [(base, 2)], "2024-03-20 12:00",
                                               created="2024-01-10 09:01"), "2024-03-20 12:00")
    f.add("subscription.updated", subscription(sid, cid, "SEK", "active", [(base, 2), (addon, 1)],
                                               "2024-04-01 12:00", created="2024-01-10 09:01"), "2024-04-01 12:00")
    f.post()
    return {"sub": sid, "customer": cid}


def scenario_pause(db):
    """A pause and resume (churned, then reactivated), and a scheduled pause that took effect."""
    f = db.feed()
    p1, p2 = Price(5000, "NOK"), Price(7000, "NOK")
    s1, s2, c1, c2 = paddle_id("sub"), paddle_id("sub"), paddle_id("ctm"), paddle_id("ctm")
    created = "2024-01-05 08:00"
    f.add("subscription.created", subscription(s1, c1, "NOK", "active", [(p1, 1)], created), created)
    f.add("subscription.created", subscription(s2, c2, "NOK", "active", [(p2, 1)], created), "2024-01-05 08:01")
    # Paddle marks the items of a paused subscription inactive (envelopes/subscription.paused.json).
    f.add("subscription.paused", subscription(s1, c1, "NOK", "paused", [(p1, 1)], "2024-02-05 08:00",
                                              created=created, paused_at="2024-02-05 08:00",
                                              item_status="inactive"), "2024-02-05 08:00")
    f.add("subscription.updated", subscription(s2, c2, "NOK", "active", [(p2, 1)], "2024-02-10 08:00",
                                               created=created, scheduled=("pause", "2024-03-01 00:00")),
          "2024-02-10 08:00")
    f.add("subscription.resumed", subscription(s1, c1, "NOK", "active", [(p1, 1)], "2024-03-05 08:00",
                                               created=created, period=("2024-03-05 08:00", "2030-04-05 08:00")),
          "2024-03-05 08:00")
    f.add("subscription.paused", subscription(s2, c2, "NOK", "paused", [(p2, 1)], "2024-03-01 00:00",
                                              created=created, paused_at="2024-03-01 00:00",
                                              item_status="inactive"), "2024-03-01 00:00")
    f.post()
    return {"resumed": s1, "paused": s2, "c_resumed": c1, "c_paused": c2, "p1": p1, "p2": p2}


def scenario_cancel(db):
    """Cancel at period end (scheduled, then canceled), a cancel still scheduled, and a canceled subscription
    whose paid period has not ended."""
    f = db.feed()
    pa, pb, pc = Price(8000, "DKK"), Price(6000, "DKK"), Price(5000, "DKK")
    s = {k: paddle_id("sub") for k in ("ended", "scheduled", "paid_through")}
    c = {k: paddle_id("ctm") for k in s}
    created = "2024-01-01 06:00"
    f.add("subscription.created", subscription(s["ended"], c["ended"], "DKK", "active", [(pa, 1)], created,
                                               period=("2024-01-01 06:00", "2024-02-01 06:00")), created)
    f.add("subscription.updated", subscription(s["ended"], c["ended"], "DKK", "active", [(pa, 1)],
                                               "2024-01-20 10:00", created=created,
                                               period=("2024-01-01 06:00", "2024-02-01 06:00"),
                                               scheduled=("cancel", "2024-02-01 06:00")), "2024-01-20 10:00")
    f.add("subscription.canceled", subscription(s["ended"], c["ended"], "DKK", "canceled", [(pa, 1)],
                                                "2024-02-01 06:00", created=created,
                                                canceled_at="2024-02-01 06:00"), "2024-02-01 06:00")
    f.add("subscription.created", subscription(s["scheduled"], c["scheduled"], "DKK", "active", [(pb, 1)],
                                               created), "2024-01-01 06:01")
    f.add("subscription.updated", subscription(s["scheduled"], c["scheduled"], "DKK", "active", [(pb, 1)],
                                               "2024-03-02 10:00", created=created,
                                               period=("2030-05-01 00:00", "2030-06-01 00:00"),
                                               scheduled=("cancel", "2030-06-01 00:00")), "2024-03-02 10:00")
    f.add("subscription.created", subscription(s["paid_through"], c["paid_through"], "DKK", "active", [(pc, 1)],
                                               created), "2024-01-01 06:02")
    f.add("subscription.canceled", subscription(s["paid_through"], c["paid_through"], "DKK", "canceled",
                                                [(pc, 1)], "2024-03-15 10:00", created=created,
                                                period=("2030-05-01 00:00", "2030-06-01 00:00"),
                                                canceled_at="2024-03-15 10:00"), "2024-03-15 10:00")
    f.post()
    s.update({"c_" + k: v for k, v in c.items()})
    return s


def scenario_dunning(db):
    """A renewal that failed and was recovered, one that failed twice and was lost (subscription canceled),
    a checkout payment that failed then succeeded, and one still open."""
    f = db.feed()
    pr, pl = Price(6000, "PLN"), Price(7000, "PLN")
    po, po2 = Price(4000, "PLN", recurring=False), Price(5000, "PLN", recurring=False)
    s = {k: paddle_id("sub") for k in ("rec", "lost")}
    s.update({k: paddle_id("txn") for k in ("t_rec", "t_lost", "t_checkout", "t_open")})
    s.update({k: paddle_id("ctm") for k in ("c_rec", "c_lost", "c_checkout", "c_open")})
    created = "2024-01-01 10:00"
    f.add("customer.created", customer(s["c_rec"], "rita@example.pl"), "2024-01-01 09:00")
    f.add("subscription.created", subscription(s["rec"], s["c_rec"], "PLN", "active", [(pr, 1)], created),
          created)
    f.add("subscription.created", subscription(s["lost"], s["c_lost"], "PLN", "active", [(pl, 1)], created),
          "2024-01-01 10:01")
    # recovered: 1 Feb failure, 4 Feb paid
    f.add("transaction.payment_failed", transaction(s["t_rec"], s["c_rec"], "PLN", "past_due", [(pr, 1)],
                                                    "2024-02-01 10:00", sub=s["rec"], billed_at="2024-02-01 10:00",
                                                    origin="subscription_recurring"), "2024-02-01 10:00")
    f.add("subscription.past_due", subscription(s["rec"], s["c_rec"], "PLN", "past_due", [(pr, 1)],
                                                "2024-02-01 10:00:05", created=created), "2024-02-01 10:00:05")
    f.add("transaction.completed", transaction(s["t_rec"], s["c_rec"], "PLN", "completed", [(pr, 1)],
                                               "2024-02-04 10:00", sub=s["rec"], billed_at="2024-02-01 10:00",
                                               origin="subscription_recurring"), "2024-02-04 10:00")
    f.add("subscription.updated", subscription(s["rec"], s["c_rec"], "PLN", "active", [(pr, 1)],
                                               "2024-02-04 10:00:05", created=created), "2024-02-04 10:00:05")
    # lost: two failed attempts, then canceled by dunning
    for at in ("2024-02-10 08:00", "2024-02-13 08:00"):
        f.add("transaction.payment_failed", transaction(s["t_lost"], s["c_lost"], "PLN", "past_due", [(pl, 1)],
                                                        at, sub=s["lost"], billed_at="2024-02-10 08:00",
                                                        origin="subscription_recurring"), at)
    f.add("subscription.past_due", subscription(s["lost"], s["c_lost"], "PLN", "past_due", [(pl, 1)],
                                                "2024-02-10 08:00:05", created=created), "2024-02-10 08:00:05")
    f.add("subscription.canceled", subscription(s["lost"], s["c_lost"], "PLN", "canceled", [(pl, 1)],
                                                "2024-03-01 00:00", created=created,
                                                canceled_at="2024-03-01 00:00"), "2024-03-01 00:00")
    # checkout: declined card, then another card 5 minutes later; and one abandoned
    f.add("transaction.payment_failed", transaction(s["t_checkout"], s["c_checkout"], "PLN", "ready", [(po, 1)],
                                                    "2024-02-20 12:00"), "2024-02-20 12:00")
    f.add("transaction.completed", transaction(s["t_checkout"], s["c_checkout"], "PLN", "completed", [(po, 1)],
                                               "2024-02-20 12:05"), "2024-02-20 12:05")
    f.add("transaction.payment_failed", transaction(s["t_open"], s["c_open"], "PLN", "ready", [(po2, 1)],
                                                    "2024-02-21 09:00"), "2024-02-21 09:00")
    f.post()
    return s


def scenario_dunning_owed(db):
    """Failed payments that owe nothing (a card update's zero-value transaction, an upgrade Paddle did not apply),
    a renewal whose case another paid transaction of the subscription must not close, and a past_due
    subscription that Paddle reports active again with no transaction event received."""
    f = db.feed()
    pm, pu, pc = Price(9000, "HKD"), Price(12000, "HKD"), Price(3000, "HKD", recurring=False)
    zero = Price(0, "HKD", recurring=False)
    subs = ("card", "upgrade", "renewal", "no_txn", "tie", "sub_only")
    s = {k: paddle_id("sub") for k in subs}
    s.update({k: paddle_id("txn") for k in ("t_card", "t_upgrade", "t_renewal", "t_charge", "t_tie", "t_sub_only")})
    s.update({"c_" + k: paddle_id("ctm") for k in subs})
    created = "2024-05-01 10:00"
    for key in subs:
        f.add("subscription.created", subscription(s[key], s["c_" + key], "HKD", "active", [(pm, 1)], created),
              created)
    # the card update's zero-value transaction is declined; the subscription stays active and owes nothing
    f.add("transaction.payment_failed", transaction(s["t_card"], s["c_card"], "HKD", "ready", [(zero, 1)],
                                                    "2024-05-15 10:00", sub=s["card"],
                                                    origin="subscription_payment_method_change"),
          "2024-05-15 10:00")
    # an upgrade charged at once is declined, and Paddle keeps the subscription as it was (prevent_change)
    f.add("transaction.payment_failed", transaction(s["t_upgrade"], s["c_upgrade"], "HKD", "ready", [(pu, 1)],
                                                    "2024-05-16 10:00", sub=s["upgrade"],
                                                    origin="subscription_update"), "2024-05-16 10:00")
    # the renewal fails on 1 Jun; a one-time charge is paid on 3 Jun; the renewal itself only on 5 Jun
    f.add("transaction.payment_failed", transaction(s["t_renewal"], s["c_renewal"], "HKD", "past_due", [(pm, 1)],
                                                    "2024-06-01 10:00", sub=s["renewal"],
                                                    billed_at="2024-06-01 10:00", origin="subscription_recurring"),
          "2024-06-01 10:00")
    f.add("subscription.past_due", subscription(s["renewal"], s["c_renewal"], "HKD", "past_due", [(pm, 1)],
                                                "2024-06-01 10:00:05", created=created), "2024-06-01 10:00:05")
    f.add("transaction.completed", transaction(s["t_charge"], s["c_renewal"], "HKD", "completed", [(pc, 1)],
                                               "2024-06-03 10:00", sub=s["renewal"], origin="subscription_charge"),
          "2024-06-03 10:00")
    f.add("transaction.completed", transaction(s["t_renewal"], s["c_renewal"], "HKD", "completed", [(pm, 1)],
                                               "2024-06-05 10:00", sub=s["renewal"], billed_at="2024-06-01 10:00",
                                               origin="subscription_recurring"), "2024-06-05 10:00")
    # only subscription events: past_due on 10 Jun, active again on 12 Jun
    f.add("subscription.past_due", subscription(s["no_txn"], s["c_no_txn"], "HKD", "past_due", [(pm, 1)],
                                                "2024-06-10 10:00", created=created), "2024-06-10 10:00")
    f.add("subscription.updated", subscription(s["no_txn"], s["c_no_txn"], "HKD", "active", [(pm, 1)],
                                               "2024-06-12 10:00", created=created), "2024-06-12 10:00")
    # an active snapshot at the very instant of a renewal's failure answers nothing: the case stays open
    f.add("transaction.payment_failed", transaction(s["t_tie"], s["c_tie"], "HKD", "past_due", [(pm, 1)],
                                                    "2024-07-01 10:00", sub=s["tie"], billed_at="2024-07-01 10:00",
                                                    origin="subscription_recurring"), "2024-07-01 10:00")
    f.add("subscription.updated", subscription(s["tie"], s["c_tie"], "HKD", "active", [(pm, 1)],
                                               "2024-07-01 10:00", created=created), "2024-07-01 10:00")
    f.add("subscription.past_due", subscription(s["tie"], s["c_tie"], "HKD", "past_due", [(pm, 1)],
                                                "2024-07-01 10:01", created=created), "2024-07-01 10:01")
    # a destination without subscription.updated nor the renewal's failure: its payment recovers the case
    f.add("subscription.past_due", subscription(s["sub_only"], s["c_sub_only"], "HKD", "past_due", [(pm, 1)],
                                                "2024-07-10 10:00", created=created), "2024-07-10 10:00")
    f.add("transaction.completed", transaction(s["t_sub_only"], s["c_sub_only"], "HKD", "completed", [(pm, 1)],
                                               "2024-07-12 10:00", sub=s["sub_only"], billed_at="2024-07-10 10:00",
                                               origin="subscription_recurring"), "2024-07-12 10:00")
    f.post()
    return s


def scenario_refunds(db):
    """A partial refund (approved a day after it was requested), a full refund, a chargeback and a rejected
    refund, each on a one-time purchase."""
    f = db.feed()
    p1, p2, p3 = (Price(a, "AUD", recurring=False) for a in (10000, 5000, 3000))
    s = {k: paddle_id("txn") for k in ("t1", "t2", "t3")}
    s.update({k: paddle_id("ctm") for k in ("cx", "cy", "cz")})
    s.update({k: paddle_id("adj") for k in ("partial", "full", "chargeback", "rejected")})
    s.update({"p1": p1, "p2": p2, "p3": p3})
    f.add("customer.created", customer(s["cx"], "xavier@example.com.au"), "2024-04-01 00:00")
    f.add("customer.created", customer(s["cy"], "yara@example.com.au"), "2024-04-01 00:00")
    f.add("transaction.completed", transaction(s["t1"], s["cx"], "AUD", "completed", [(p1, 1)], "2024-04-02 09:00"),
          "2024-04-02 09:00")
    f.add("transaction.completed", transaction(s["t2"], s["cy"], "AUD", "completed", [(p2, 1)], "2024-04-02 10:00"),
          "2024-04-02 10:00")
    f.add("transaction.completed", transaction(s["t3"], s["cz"], "AUD", "completed", [(p3, 1)], "2024-04-03 10:00"),
          "2024-04-03 10:00")
    f.add("adjustment.created", adjustment(s["partial"], s["t1"], s["cx"], "AUD", 2200, "pending_approval",
                                           "2024-04-05 10:00"), "2024-04-05 10:00")
    f.add("adjustment.updated", adjustment(s["partial"], s["t1"], s["cx"], "AUD", 2200, "approved",
                                           "2024-04-05 10:00"), "2024-04-06 10:00")
    f.add("adjustment.created", adjustment(s["full"], s["t2"], s["cy"], "AUD", 5500, "approved",
                                           "2024-04-07 10:00", kind="full"), "2024-04-07 10:00")
    f.add("adjustment.created", adjustment(s["chargeback"], s["t3"], s["cz"], "AUD", 3300, "approved",
                                           "2024-04-08 10:00", action="chargeback", kind="full"), "2024-04-08 10:00")
    f.add("adjustment.created", adjustment(s["rejected"], s["t3"], s["cz"], "AUD", 1000, "pending_approval",
                                           "2024-04-08 11:00"), "2024-04-08 11:00")
    f.add("adjustment.updated", adjustment(s["rejected"], s["t3"], s["cz"], "AUD", 1000, "rejected",
                                           "2024-04-08 11:00"), "2024-04-08 12:00")
    f.post()
    return s


def scenario_attribution(db):
    """utm keys on transactions and subscriptions: first and last touch."""
    f = db.feed()
    plan, other, single = Price(2000, "GBP"), Price(5000, "GBP"), Price(1000, "GBP", recurring=False)
    s = {k: paddle_id("sub") for k in ("su", "sw")}
    s.update({k: paddle_id("txn") for k in ("t1", "t2", "t3", "t4")})
    s.update({k: paddle_id("ctm") for k in ("cu", "cv", "cw")})
    google = {"utm_source": "google", "utm_medium": "cpc", "utm_campaign": "spring"}
    f.add("transaction.completed", transaction(s["t1"], s["cu"], "GBP", "completed", [(plan, 1)], "2024-05-01 09:05",
                                               sub=s["su"], created="2024-05-01 09:00", custom_data=google,
                                               origin="web"), "2024-05-01 09:05")
    f.add("subscription.created", subscription(s["su"], s["cu"], "GBP", "active", [(plan, 1)], "2024-05-01 09:06",
                                               custom_data=google), "2024-05-01 09:06")
    f.add("transaction.completed", transaction(s["t2"], s["cu"], "GBP", "completed", [(plan, 1)], "2024-06-01 09:05",
                                               sub=s["su"], created="2024-06-01 09:00",
                                               custom_data={"utm_source": "newsletter", "campaign": "june"}),
          "2024-06-01 09:05")
    f.add("transaction.completed", transaction(s["t3"], s["cv"], "GBP", "completed", [(single, 1)],
                                               "2024-05-10 15:00"), "2024-05-10 15:00")
    f.add("subscription.created", subscription(s["sw"], s["cw"], "GBP", "active", [(other, 1)], "2024-06-01 07:00",
                                               custom_data={"utm_source": "partner", "utm_medium": "referral"}),
          "2024-06-01 07:00")
    f.add("transaction.completed", transaction(s["t4"], s["cw"], "GBP", "completed", [(other, 1)],
                                               "2024-06-15 10:00", sub=s["sw"], custom_data={"team": "x"}),
          "2024-06-15 10:00")
    f.post()
    return s


def scenario_grace(db):
    """Entitlements that depend on now(): past_due grace, a second past_due run, trialing; one-time purchase
    and canceled subscription of the same price."""
    f = db.feed()
    p, q_, one = Price(9000, "CZK"), Price(4000, "CZK"), Price(20000, "CZK", recurring=False)
    s = {k: paddle_id("sub") for k in ("grace", "expired", "again", "trial", "canceled")}
    s.update({k: paddle_id("ctm") for k in ("c_grace", "c_expired", "c_again", "c_trial")})
    s.update({"t_one": paddle_id("txn"), "p": p, "q": q_, "one": one})
    d = lambda days: NOW - datetime.timedelta(days=days)   # noqa: E731
    f.add("customer.created", customer(s["c_grace"], "grace@example.cz"), d(60))
    f.add("subscription.created", subscription(s["grace"], s["c_grace"], "CZK", "active", [(p, 1)], d(40)), d(40))
    f.add("subscription.past_due", subscription(s["grace"], s["c_grace"], "CZK", "past_due", [(p, 1)], d(2),
                                                created=d(40)), d(2))
    f.add("subscription.created", subscription(s["expired"], s["c_expired"], "CZK", "active", [(p, 1)], d(40)),
          d(40))
    f.add("subscription.past_due", subscription(s["expired"], s["c_expired"], "CZK", "past_due", [(p, 1)], d(10),
                                                created=d(40)), d(10))
    f.add("subscription.updated", subscription(s["expired"], s["c_expired"], "CZK", "past_due", [(p, 1)], d(9),
                                               created=d(40)), d(9))
    f.add("subscription.created", subscription(s["again"], s["c_again"], "CZK", "active", [(p, 1)], d(30)), d(30))
    f.add("subscription.past_due", subscription(s["again"], s["c_again"], "CZK", "past_due", [(p, 1)], d(20),
                                                created=d(30)), d(20))
    f.add("subscription.updated", subscription(s["again"], s["c_again"], "CZK", "active", [(p, 1)], d(18),
                                               created=d(30)), d(18))
    f.add("subscription.past_due", subscription(s["again"], s["c_again"], "CZK", "past_due", [(p, 1)], d(1),
                                                created=d(30)), d(1))
    f.add("subscription.trialing", subscription(s["trial"], s["c_trial"], "CZK", "trialing", [(q_, 1)], d(3),
                                                period=(d(3), d(-11)), item_status="trialing"), d(3))
    # c_grace also bought `one` outright, and had a subscription to it that ended
    f.add("transaction.completed", transaction(s["t_one"], s["c_grace"], "CZK", "completed", [(one, 1)], d(50)),
          d(50))
    f.add("subscription.canceled", subscription(s["canceled"], s["c_grace"], "CZK", "canceled", [(one, 1)], d(45),
                                                canceled_at=d(45)), d(45))
    f.post()
    s["since"] = {"grace": d(2), "expired": d(10), "again": d(1)}
    s["trial_end"] = d(-11)
    return s


def scenario_schedule_ends(db):
    """COP subscriptions whose scheduled change took effect yesterday, with its event not received yet: an
    active one set to cancel, one set to pause, a trial set to cancel; one whose cancel is still ahead. And a
    past_due run that began on 2024-10-22 12:00 UTC, five days before Europe's clocks went back."""
    f = db.feed()
    p = Price(7000, "COP")
    d = lambda days: NOW - datetime.timedelta(days=days)   # noqa: E731
    s = {}
    # the pause's date comes before its period's end: the date decides
    for key, status, action, when, period_end in (("cancelled", "active", "cancel", d(1), d(1)),
                                                  ("paused", "active", "pause", d(1), d(-20)),
                                                  ("trial", "trialing", "cancel", d(1), d(1)),
                                                  ("ahead", "active", "cancel", d(-9), d(-9))):
        sid, cid = paddle_id("sub"), paddle_id("ctm")
        s[key], s["c_" + key], s["at_" + key] = sid, cid, when
        f.add("subscription.created", subscription(sid, cid, "COP", status, [(p, 1)], d(20),
                                                   period=(d(30), period_end), scheduled=(action, when),
                                                   item_status="trialing" if status == "trialing" else "active"),
              d(20))
    # past_due two days ago, within its grace days, and set to cancel yesterday
    sid, cid = paddle_id("sub"), paddle_id("ctm")
    s["past_due"], s["c_past_due"], s["at_past_due"] = sid, cid, d(1)
    f.add("subscription.created", subscription(sid, cid, "COP", "active", [(p, 1)], d(20), period=(d(30), d(1))),
          d(20))
    f.add("subscription.past_due", subscription(sid, cid, "COP", "past_due", [(p, 1)], d(2), created=d(20),
                                                period=(d(30), d(1)), scheduled=("cancel", d(1))), d(2))
    sid, cid = paddle_id("sub"), paddle_id("ctm")
    s["dst"], s["c_dst"] = sid, cid
    f.add("subscription.created", subscription(sid, cid, "COP", "active", [(p, 1)], "2024-09-22 12:00"),
          "2024-09-22 12:00")
    f.add("subscription.past_due", subscription(sid, cid, "COP", "past_due", [(p, 1)], "2024-10-22 12:00",
                                                created="2024-09-22 12:00"), "2024-10-22 12:00")
    f.post()
    return s


def lifecycle_events(f, currency):
    """One customer's life in `currency`, added to f (not posted): checkout with utm keys, upgrade with
    proration, failed renewal recovered, partial refund, cancel at period end; a second customer's one-time
    purchase fully refunded. Returns the ids by role."""
    plan, seat, once = Price(3000, currency), Price(1500, currency), Price(8000, currency, recurring=False)
    r = {"sub": paddle_id("sub"), "cust": paddle_id("ctm"), "cust2": paddle_id("ctm")}
    r.update({k: paddle_id("txn") for k in ("t0", "t_up", "t_renew", "t_once")})
    r.update({k: paddle_id("adj") for k in ("a_partial", "a_full")})
    r.update({"plan": plan.id, "seat": seat.id, "once": once.id, "plan_pro": plan.product_id,
              "seat_pro": seat.product_id, "once_pro": once.product_id})
    sid, cid, created = r["sub"], r["cust"], "2024-01-15 09:01"
    utm = {"utm_source": "ads", "utm_medium": "display", "utm_campaign": "launch"}

    def sub(status, items, at, **kw):
        return subscription(sid, cid, currency, status, items, at, created=created, custom_data=utm, **kw)

    f.add("customer.created", customer(cid, "olga@example.eu"), "2024-01-15 08:59")
    f.add("transaction.created", transaction(r["t0"], cid, currency, "ready", [(plan, 1)], "2024-01-15 08:59:30",
                                             custom_data=utm, created="2024-01-15 08:59:30"), "2024-01-15 08:59:30")
    f.add("transaction.completed", transaction(r["t0"], cid, currency, "completed", [(plan, 1)], "2024-01-15 09:00",
                                               sub=sid, custom_data=utm, created="2024-01-15 08:59:30"),
          "2024-01-15 09:00")
    f.add("subscription.created", sub("active", [(plan, 1)], created), created)
    f.add("subscription.updated", sub("active", [(plan, 1), (seat, 2)], "2024-02-10 14:00"), "2024-02-10 14:00")
    f.add("transaction.completed", transaction(r["t_up"], cid, currency, "completed", [(seat, 1)],
                                               "2024-02-10 14:01", sub=sid, origin="subscription_update"),
          "2024-02-10 14:01")
    f.add("transaction.payment_failed", transaction(r["t_renew"], cid, currency, "past_due",
                                                    [(plan, 1), (seat, 2)], "2024-03-15 09:01", sub=sid,
                                                    billed_at="2024-03-15 09:01", origin="subscription_recurring"),
          "2024-03-15 09:01")
    f.add("subscription.past_due", sub("past_due", [(plan, 1), (seat, 2)], "2024-03-15 09:02"), "2024-03-15 09:02")
    f.add("transaction.completed", transaction(r["t_renew"], cid, currency, "completed", [(plan, 1), (seat, 2)],
                                               "2024-03-17 18:30", sub=sid, billed_at="2024-03-15 09:01",
                                               origin="subscription_recurring"), "2024-03-17 18:30")
    f.add("subscription.updated", sub("active", [(plan, 1), (seat, 2)], "2024-03-17 18:31"), "2024-03-17 18:31")
    f.add("adjustment.created", adjustment(r["a_partial"], r["t0"], cid, currency, 1100, "pending_approval",
                                           "2024-03-20 10:00", sub=sid), "2024-03-20 10:00")
    f.add("adjustment.updated", adjustment(r["a_partial"], r["t0"], cid, currency, 1100, "approved",
                                           "2024-03-20 10:00", sub=sid), "2024-03-21 10:00")
    f.add("subscription.updated", sub("active", [(plan, 1), (seat, 2)], "2024-04-01 12:00",
                                      scheduled=("cancel", "2024-04-15 09:01")), "2024-04-01 12:00")
    f.add("subscription.canceled", sub("canceled", [(plan, 1), (seat, 2)], "2024-04-15 09:01",
                                       canceled_at="2024-04-15 09:01"), "2024-04-15 09:01")
    f.add("transaction.completed", transaction(r["t_once"], r["cust2"], currency, "completed", [(once, 1)],
                                               "2024-02-02 16:00"), "2024-02-02 16:00")
    f.add("adjustment.created", adjustment(r["a_full"], r["t_once"], r["cust2"], currency, 8800, "approved",
                                           "2024-02-05 16:00", kind="full"), "2024-02-05 16:00")
    return r


def scenario_out_of_order(db):
    """The same life twice in EUR: in order to a sandbox endpoint, shuffled with duplicates to a live one."""
    ordered = db.feed("sandbox")
    r_in = lifecycle_events(ordered, "EUR")
    ordered.post()
    shuffled = db.feed("live")
    r_out = lifecycle_events(shuffled, "EUR")
    rng = random.Random(20240521)
    events = list(shuffled.events)
    rng.shuffle(events)
    events += rng.sample(shuffled.events, 5)        # redeliveries
    rng.shuffle(events)
    shuffled.post(events)
    return {"in": r_in, "out": r_out, "order_in": [e["event_id"] for e in ordered.events],
            "order_out": [e["event_id"] for e in events]}


def scenario_checkout(db):
    """Checkouts that start a subscription and carry a one-time item, as Paddle sends them: transaction.paid
    before the subscription exists (no subscription_id), transaction.completed naming it."""
    f = db.feed()
    monthly, setup = Price(3000, "HUF"), Price(19900, "HUF", recurring=False)
    s = {"monthly": monthly, "setup": setup}
    for key, hour, completed in (("paid", 10, False), ("done", 11, True)):
        sid, cid, tid = paddle_id("sub"), paddle_id("ctm"), paddle_id("txn")
        s.update({"sub_" + key: sid, "c_" + key: cid, "t_" + key: tid})
        at = "2024-05-01 %02d:%%02d" % hour
        f.add("transaction.paid", transaction(tid, cid, "HUF", "paid", [(monthly, 1), (setup, 1)], at % 0),
              at % 0)
        f.add("subscription.created", subscription(sid, cid, "HUF", "active", [(monthly, 1)], at % 1), at % 1)
        if completed:
            f.add("transaction.completed", transaction(tid, cid, "HUF", "completed", [(monthly, 1), (setup, 1)],
                                                       at % 2, sub=sid), at % 2)
    f.post()
    return s


def scenario_churn_edges(db):
    """A trial cancelled before it paid (MXN), and a RON subscription whose price is in TRY, cancelled."""
    f = db.feed()
    trial, foreign = Price(4000, "MXN"), Price(2500, "TRY")
    s = {"trial": paddle_id("sub"), "foreign": paddle_id("sub")}
    for key, cur, price, status in (("trial", "MXN", trial, "trialing"), ("foreign", "RON", foreign, "active")):
        cid = paddle_id("ctm")
        f.add("subscription.created", subscription(s[key], cid, cur, status, [(price, 1)], "2024-06-01 08:00",
                                                   item_status=status), "2024-06-01 08:00")
        f.add("subscription.canceled", subscription(s[key], cid, cur, "canceled", [(price, 1)], "2024-06-10 08:00",
                                                    created="2024-06-01 08:00", canceled_at="2024-06-10 08:00"),
              "2024-06-10 08:00")
    f.post()
    return s


def scenario_reversed_chargebacks(db):
    """Two disputes Paddle won (ZAR): a chargeback approved on 05-08, then its chargeback_reverse on 05-20 and the
    chargeback set to reversed; and one whose approved snapshot was never stored (created 05-10, reversed 05-21)."""
    f = db.feed()
    p1, p2 = Price(3000, "ZAR", recurring=False), Price(5000, "ZAR", recurring=False)
    s = {"c": paddle_id("ctm"), "t1": paddle_id("txn"), "t2": paddle_id("txn")}
    s.update({k: paddle_id("adj") for k in ("cb1", "rev1", "cb2", "rev2")})
    for txn, price, at in (("t1", p1, "2024-05-02 09:00"), ("t2", p2, "2024-05-03 09:00")):
        f.add("transaction.completed", transaction(s[txn], s["c"], "ZAR", "completed", [(price, 1)], at), at)
    for cb, rev, txn, amount, created, reversed_at, known in (
            ("cb1", "rev1", "t1", 3300, "2024-05-08 10:00", "2024-05-20 10:00", True),
            ("cb2", "rev2", "t2", 5500, "2024-05-10 10:00", "2024-05-21 10:00", False)):
        if known:
            f.add("adjustment.created", adjustment(s[cb], s[txn], s["c"], "ZAR", amount, "approved", created,
                                                   action="chargeback", kind="full"), created)
        f.add("adjustment.created", adjustment(s[rev], s[txn], s["c"], "ZAR", amount, "approved", reversed_at,
                                               action="chargeback_reverse", kind="full"), reversed_at)
        f.add("adjustment.updated", adjustment(s[cb], s[txn], s["c"], "ZAR", amount, "reversed", created,
                                               action="chargeback", kind="full"), reversed_at[:-2] + "01")
    f.post()
    return s


def scenario_chargebacks(db):
    """Disputes the buyer won on one-time purchases (TWD): a full chargeback; one of type partial whose item of
    type full is one line of two; a partial one; one Paddle reversed, whose chargeback_reverse is stored but
    not the chargeback's reversed snapshot; and one disputed again after Paddle reversed the first dispute."""
    f = db.feed()
    s = {}
    for key, prices in (("full", (Price(3000, "TWD", recurring=False),)),
                        ("item", (Price(4000, "TWD", recurring=False), Price(5000, "TWD", recurring=False))),
                        ("partial", (Price(6000, "TWD", recurring=False),)),
                        ("reversed", (Price(7000, "TWD", recurring=False),)),
                        ("again", (Price(8000, "TWD", recurring=False),))):
        cid, tid, aid = paddle_id("ctm"), paddle_id("txn"), paddle_id("adj")
        s.update({"c_" + key: cid, "t_" + key: tid, "cb_" + key: aid, "p_" + key: prices})
        txn = transaction(tid, cid, "TWD", "completed", [(p, 1) for p in prices], "2024-09-02 09:00")
        f.add("transaction.completed", txn, "2024-09-02 09:00")
        amount = prices[0].amount * 11 // 10
        cb = adjustment(aid, tid, cid, "TWD", amount, "approved", "2024-09-05 10:00", action="chargeback",
                        kind="full" if key in ("full", "reversed", "again") else "partial")
        if key == "item":
            cb["items"][0]["item_id"] = txn["details"]["line_items"][0]["id"]
            cb["items"][0]["type"] = "full"
        f.add("adjustment.created", cb, "2024-09-05 10:00")
        if key in ("reversed", "again"):
            f.add("adjustment.created", adjustment(paddle_id("adj"), tid, cid, "TWD", amount, "approved",
                                                   "2024-09-20 10:00", action="chargeback_reverse", kind="full"),
                  "2024-09-20 10:00")
        if key == "again":
            f.add("adjustment.created", adjustment(paddle_id("adj"), tid, cid, "TWD", amount, "approved",
                                                   "2024-10-20 10:00", action="chargeback", kind="full"),
                  "2024-10-20 10:00")
    f.post()
    return s


def scenario_halves(db):
    """MRR at exact halves of a minor unit (CAD): six subscriptions of a yearly 99.97 price (6 x 9997/12 =
    4998.5 cents a month); two of a yearly 12.06 price (100.5 cents a month) cancelled in July, one after a
    failed payment."""
    f = db.feed()
    yearly, small = Price(9997, "CAD", interval="year"), Price(1206, "CAD", interval="year")
    s = {}
    for n in range(6):
        sid, cid = paddle_id("sub"), paddle_id("ctm")
        f.add("subscription.created", subscription(sid, cid, "CAD", "active", [(yearly, 1)], "2024-06-01 09:00",
                                                   interval="year"), "2024-06-01 09:00")
    for key, before in (("voluntary", "active"), ("failed", "past_due")):
        sid, cid = paddle_id("sub"), paddle_id("ctm")
        s[key] = sid
        f.add("subscription.created", subscription(sid, cid, "CAD", "active", [(small, 1)], "2024-06-01 09:00",
                                                   interval="year"), "2024-06-01 09:00")
        if before == "past_due":
            f.add("subscription.past_due", subscription(sid, cid, "CAD", "past_due", [(small, 1)],
                                                        "2024-07-01 09:00", created="2024-06-01 09:00",
                                                        interval="year"), "2024-07-01 09:00")
        f.add("subscription.canceled", subscription(sid, cid, "CAD", "canceled", [(small, 1)], "2024-07-02 09:00",
                                                    created="2024-06-01 09:00", interval="year",
                                                    canceled_at="2024-07-02 09:00"), "2024-07-02 09:00")
    f.post()
    return s


def scenario_currency_switch(db):
    """A subscription whose currency changes (BRL 20.00 a month, then ARS 18.00 from February) and one that is
    cancelled in BRL in the same month."""
    f = db.feed()
    brl, ars = Price(2000, "BRL"), Price(1800, "ARS")
    s = {}
    for key in ("switched", "canceled"):
        sid, cid = paddle_id("sub"), paddle_id("ctm")
        s[key] = sid
        f.add("subscription.created", subscription(sid, cid, "BRL", "active", [(brl, 1)], "2024-01-10 09:00"),
              "2024-01-10 09:00")
    f.add("subscription.updated", subscription(s["switched"], paddle_id("ctm"), "ARS", "active", [(ars, 1)],
                                               "2024-02-10 09:00", created="2024-01-10 09:00"), "2024-02-10 09:00")
    f.add("subscription.canceled", subscription(s["canceled"], paddle_id("ctm"), "BRL", "canceled", [(brl, 1)],
                                                "2024-02-12 09:00", created="2024-01-10 09:00",
                                                canceled_at="2024-02-12 09:00"), "2024-02-12 09:00")
    f.post()
    return s


def scenario_unpaid_trials(db):
    """Trials that never paid, cancelled a month later: one whose first payment failed (ILS: trialing, past_due,
    canceled), one paused at the end of its trial (THB: trialing, paused, canceled); one that paid once before it
    failed (PHP: trialing, active, past_due, canceled); and one whose first snapshot has no status (INR)."""
    f = db.feed()
    s = {}
    for cur, steps in (("ILS", ("trialing", "past_due", "canceled")), ("THB", ("trialing", "paused", "canceled")),
                       ("PHP", ("trialing", "active", "past_due", "canceled")),
                       ("INR", (None, "past_due", "canceled"))):
        sid, cid, price = paddle_id("sub"), paddle_id("ctm"), Price(5000, cur)
        s[cur] = sid
        days = ("06-05", "06-19", "07-03") if len(steps) == 3 else ("06-05", "06-12", "06-19", "07-03")
        for i, (day, status) in enumerate(zip(days, steps)):
            at = "2024-%s 08:00" % day
            data = subscription(sid, cid, cur, status or "active", [(price, 1)], at, created="2024-06-05 08:00",
                                item_status="trialing" if status == "trialing" else "active",
                                canceled_at=at if status == "canceled" else None)
            if status is None:
                del data["status"]
            f.add("subscription.created" if i == 0 else "subscription.updated", data, at)
    f.post()
    return s


def scenario_environments(db):
    """A live one-time purchase, and sandbox snapshots that name its transaction id: an approved full refund,
    and an earlier transaction.paid. Sandbox secrets are shared with developers; none of it may touch live."""
    live, sandbox = db.feed("live"), db.feed("sandbox")
    item = Price(8800, "MYR", recurring=False)
    s = {"c": paddle_id("ctm"), "t": paddle_id("txn"), "adj": paddle_id("adj"), "item": item}
    live.add("customer.created", customer(s["c"], "live@example.my"), "2024-07-01 09:00")
    live.add("transaction.completed", transaction(s["t"], s["c"], "MYR", "completed", [(item, 1)],
                                                  "2024-07-10 10:00"), "2024-07-10 10:00")
    sandbox.add("transaction.paid", transaction(s["t"], s["c"], "MYR", "paid", [(item, 1)], "2024-07-01 10:00"),
                "2024-07-01 10:00")
    sandbox.add("adjustment.created", adjustment(s["adj"], s["t"], s["c"], "MYR", 8800, "approved",
                                                 "2024-07-11 10:00", kind="full"), "2024-07-11 10:00")
    live.post()
    sandbox.post()
    # A sandbox snapshot that holds a live customer id before live sends it (with a later occurred_at).
    s["squatted"] = paddle_id("ctm")
    db.feed("sandbox").post([sandbox.add("customer.updated", customer(s["squatted"], "forged@example.my"),
                                      "2024-07-20 09:00")])
    db.feed("live").post([live.add("customer.created", customer(s["squatted"], "owner@example.my"),
                                "2024-07-02 09:00")])
    return s


def scenario_country_prices(db):
    """USD subscriptions to a price with a lower USD price for IN and PK and a EUR one for DE (purchasing-power
    pricing): the addresses' countries pick the price; an address that arrives after the subscription counts
    too; a live address says nothing of a sandbox subscription. And an SGD subscription to a USD price with an SGD
    override for SG, whose address is in MY: no override of its own, so the first one in SGD, as without one."""
    f, live = db.feed(), db.feed("live")
    price = Price(1000, "USD", overrides=[(["IN", "PK"], 500, "USD"), (["DE"], 900, "EUR")])
    s = {"price": price}
    for key, country in (("in", "IN"), ("us", "US"), ("none", None), ("de", "DE"), ("late_pk", "PK"),
                         ("live_in", "IN")):
        sid, cid, aid = paddle_id("sub"), paddle_id("ctm"), paddle_id("add")
        s.update({key: sid, "a_" + key: aid})
        if country and key not in ("late_pk", "live_in"):
            f.add("address.created", address(aid, cid, country), "2024-08-01 08:00")
        f.add("subscription.created", subscription(sid, cid, "USD", "active", [(price, 1)], "2024-08-01 09:00",
                                                   address_id=aid), "2024-08-01 09:00")
        if key == "late_pk":
            f.add("address.created", address(aid, cid, country, "2024-09-01 08:00"), "2024-09-01 08:00")
        if key == "live_in":
            live.add("address.created", address(aid, cid, country), "2024-08-01 08:00")
    sgd = Price(1000, "USD", overrides=[(["SG"], 1300, "SGD")])
    sid, cid, aid = paddle_id("sub"), paddle_id("ctm"), paddle_id("add")
    s["sgd_my"] = sid
    f.add("address.created", address(aid, cid, "MY"), "2024-08-01 08:00")
    f.add("subscription.created", subscription(sid, cid, "SGD", "active", [(sgd, 1)], "2024-08-01 09:00",
                                               address_id=aid), "2024-08-01 09:00")
    f.post()
    live.post()
    return s


SCENARIOS = {
    "country_prices": scenario_country_prices,
    "checkout": scenario_checkout,
    "environments": scenario_environments,
    "churn_edges": scenario_churn_edges,
    "reversed_chargebacks": scenario_reversed_chargebacks,
    "chargebacks": scenario_chargebacks,
    "halves": scenario_halves,
    "currency_switch": scenario_currency_switch,
    "unpaid_trials": scenario_unpaid_trials,
    "schedule_ends": scenario_schedule_ends,
    "minor_units": scenario_minor_units,
    "plans": scenario_plans,
    "upgrade": scenario_upgrade,
    "pause": scenario_pause,
    "cancel": scenario_cancel,
    "dunning": scenario_dunning,
    "dunning_owed": scenario_dunning_owed,
    "refunds": scenario_refunds,
    "attribution": scenario_attribution,
    "grace": scenario_grace,
    "out_of_order": scenario_out_of_order,
}
