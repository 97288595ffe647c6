"""Billing reports (sql/migrations/0003_reports.sql) through nginx -> worker -> PostgreSQL.

Each scenario is a realistic Paddle sequence (built from paddledata's sample_* snapshots with stable ids,
amounts, dates and currencies) posted through nginx to its own endpoint, then every report view is
checked against exact numbers. Scenarios keep to their own currency (and customers), so the aggregated
views of one never see another's rows; subscription_status_counts, which has no currency, is checked by
difference. Then paddle.reproject() must leave every view unchanged, also while deliveries keep arriving.

The scenarios load lazily (once per module) so that any subset of tests can run (-k), and the reproject
tests load all of them first.
"""

import copy
import csv
import datetime
import decimal
import io
import json
import random
import threading
import time
import unittest

from harness import (ITEMS_FROM_OTHER_DATA, Harness, HarnessTestCase, make_event, paddle_id, rfc3339,
                     sample_adjustment, sample_customer, sample_subscription, sample_transaction, wait_until)

H = Harness(workers=4)


def setUpModule():
    H.start()


def tearDownModule():
    H.stop()


UTC = datetime.timezone.utc
NOW = datetime.datetime.now(UTC).replace(microsecond=0)

REPORT_VIEWS = ("revenue_daily", "mrr", "mrr_movements", "subscription_status_counts", "churn_monthly",
                "dunning", "dunning_summary", "refunds", "entitlements", "attribution")
HELPER_VIEWS = ("entity_snapshots", "subscription_history", "revenue_transactions", "adjustment_facts")
STATE_TABLES = ("customers", "subscriptions", "subscription_items", "transactions", "transaction_items",
                "adjustments", "adjustment_items")


# --------------------------------------------------------------------------
# time, queries
# --------------------------------------------------------------------------

def dt(value):
    """'2024-02-01 10:00' (UTC) or a datetime -> aware datetime."""
    if isinstance(value, datetime.datetime):
        return value
    fmt = "%Y-%m-%d %H:%M:%S" if value.count(":") == 2 else "%Y-%m-%d %H:%M"
    return datetime.datetime.strptime(value, fmt).replace(tzinfo=UTC)


def T(value):
    """RFC 3339 text (microseconds, Z) of dt(value)."""
    return rfc3339(dt(value))


def J(value):
    """How PostgreSQL's json renders a timestamptz in UTC: 2024-02-01T10:00:00+00:00."""
    return dt(value).strftime("%Y-%m-%dT%H:%M:%S+00:00")


def q(sql):
    """Rows of a SELECT as dicts; numerics are Decimal (exact, scale kept), so str() shows 30.00."""
    text = H.sql_value("SELECT coalesce(json_agg(_r), '[]'::json)::text FROM (%s) _r" % sql.strip().rstrip(";"))
    return json.loads(text, parse_float=decimal.Decimal)


def norm(value):
    """Numbers as their exact text (30.00 stays '30.00', 1500 is '1500'), recursively."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, decimal.Decimal)):
        return str(value)
    if isinstance(value, dict):
        return {k: norm(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [norm(v) for v in value]
    return value


_order_by = {}


def order_of(view):
    if view not in _order_by:
        _order_by[view] = H.sql_value("SELECT order_by FROM paddle.report_catalog WHERE view_name = %s"
                                      % H.lit(view)) or "1"
    return _order_by[view]


def view(name, where="TRUE"):
    """A report view's rows (dicts) filtered by a WHERE clause, in the catalog's order."""
    return q("SELECT * FROM paddle.%s WHERE %s ORDER BY %s" % (name, where, order_of(name)))


def in_currency(code, environment="sandbox"):
    return "currency_code = %s AND environment = %s" % (H.lit(code), H.lit(environment))


# --------------------------------------------------------------------------
# Paddle-shaped snapshots with stable ids (paddledata's builders + overrides)
# --------------------------------------------------------------------------

class Price:
    """A catalog price; the same ids in every snapshot that uses it."""

    def __init__(self, amount, currency, interval="month", frequency=1, recurring=True, overrides=None):
        self.id = paddle_id("pri")
        self.product_id = paddle_id("pro")
        self.amount = amount
        self.currency = currency
        self.interval = interval
        self.frequency = frequency
        self.recurring = recurring
        self.overrides = overrides or []     # [(country codes, amount, currency)]

    def json(self):
        return {
            "id": self.id, "product_id": self.product_id, "description": "test price",
            "tax_mode": "account_setting",
            "billing_cycle": ({"interval": self.interval, "frequency": self.frequency}
                              if self.recurring else None),
            "trial_period": None,
            "unit_price": {"amount": str(self.amount), "currency_code": self.currency},
            "unit_price_overrides": [{"country_codes": list(cc), "unit_price": {"amount": str(a),
                                                                               "currency_code": c}}
                                     for cc, a, c in self.overrides],
            "custom_data": None,
        }


def subscription(sid, cid, currency, status, items, at, created=None, period=None, interval="month",
                 frequency=1, scheduled=None, canceled_at=None, paused_at=None, custom_data=None,
                 item_status="active"):
    """A subscription snapshot; items = [(Price, quantity)]; period = (starts, ends) or None."""
    d = sample_subscription(sid, status, cid, currency, items=[(p.amount, qty) for p, qty in items], at=T(at))
    for it, (p, qty) in zip(d["items"], items):
        it["price"] = p.json()
        it["quantity"] = qty
        it["recurring"] = p.recurring
        it["status"] = item_status
        it["created_at"] = T(created or at)
    d["created_at"] = d["started_at"] = d["first_billed_at"] = T(created or at)
    d["billing_cycle"] = {"interval": interval, "frequency": frequency}
    if period is None and status in ("active", "past_due", "trialing"):
        period = ("2030-01-01 00:00", "2030-02-01 00:00")
    d["current_billing_period"] = ({"starts_at": T(period[0]), "ends_at": T(period[1])} if period else None)
    d["next_billed_at"] = d["current_billing_period"]["ends_at"] if period and status != "canceled" else None
    d["scheduled_change"] = ({"action": scheduled[0], "effective_at": T(scheduled[1]), "resume_at": None}
                             if scheduled else None)
    d["canceled_at"] = T(canceled_at) if canceled_at else None
    d["paused_at"] = T(paused_at) if paused_at else None
    d["custom_data"] = custom_data
    return d


def transaction(tid, cid, currency, status, items, at, sub=None, billed_at=None, created=None,
                custom_data=None, origin=None, tax_bp=1000):
    """A transaction snapshot; items = [(Price, quantity)]; totals follow paddledata's arithmetic
    (tax = subtotal x tax_bp / 10000 rounded down, fee = 5 % of total rounded down once paid)."""
    d = sample_transaction(tid, status, cid, currency, subscription_id=sub,
                           items=[(p.amount, qty) for p, qty in items], tax_rate_bp=tax_bp, at=T(at))
    for it, li, (p, qty) in zip(d["items"], d["details"]["line_items"], items):
        it["price"] = p.json()
        li["price_id"] = p.id
        li["product"]["id"] = p.product_id
    d["created_at"] = T(created or at)
    d["billed_at"] = T(billed_at) if billed_at else (T(at) if status in ("billed", "paid", "completed") else None)
    d["custom_data"] = custom_data
    if origin:
        d["origin"] = origin
    if status in ("past_due", "ready"):
        d["payments"] = [{"amount": d["details"]["totals"]["grand_total"], "status": "error",
                          "error_code": "declined", "created_at": T(at), "captured_at": None,
                          "payment_attempt_id": paddle_id("x"), "method_details": {"type": "card"}}]
    return d


def adjustment(aid, txn_id, cid, currency, amount, status, at, action="refund", kind="partial", sub=None):
    d = sample_adjustment(aid, status, txn_id, cid, currency, amount=amount, at=T(at))
    d["action"] = action
    d["type"] = kind
    d["subscription_id"] = sub
    for it in d["items"]:
        it["type"] = kind
    return d


def customer(cid, email, at="2024-01-01 00:00"):
    return sample_customer(cid, email=email, at=T(at))


class Feed:
    """Events of one scenario: collected, then posted (in order, or as given) to one endpoint."""

    def __init__(self, environment="sandbox"):
        self.ep = H.add_endpoint(environment=environment)
        self.events = []

    def add(self, event_type, data, at):
        env = make_event(event_type, copy.deepcopy(data), occurred_at=T(at), as_dict=True)
        self.events.append(env)
        return env

    def post(self, events=None):
        for env in (self.events if events is None else events):
            r = H.post_event(self.ep, json.dumps(env).encode())
            if r.status != 200 or (r.json() or {}).get("status") not in ("stored", "duplicate"):
                raise AssertionError("delivery of %s %s failed: %r" % (env["event_type"], env["event_id"], r))
        return self


# --------------------------------------------------------------------------
# Scenarios (each loads once; each keeps to its own currencies)
# --------------------------------------------------------------------------

_loaded = {}


def load(name):
    if name not in _loaded:
        _loaded[name] = SCENARIOS[name]()
    return _loaded[name]


def scenario_minor_units():
    """One-time purchases in JPY (exponent 0) and BHD (exponent 3)."""
    f = Feed()
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


def scenario_plans():
    """MRR normalisation: yearly, quarterly, monthly, weekly, daily plans, a price override, past_due,
    trialing, and a one-time item on a subscription."""
    f = Feed()
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


def scenario_upgrade():
    """A mid-period upgrade (expansion), a downgrade (contraction) and an added item (expansion)."""
    f = Feed()
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


def scenario_pause():
    """A pause and resume (churned, then reactivated), and a scheduled pause that took effect."""
    f = Feed()
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


def scenario_cancel():
    """Cancel at period end (scheduled, then canceled), a cancel still scheduled, and a canceled subscription
    whose paid period has not ended."""
    f = Feed()
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


def scenario_dunning():
    """A renewal that failed and was recovered, one that failed twice and was lost (subscription canceled),
    a checkout payment that failed then succeeded, and one still open."""
    f = Feed()
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


def scenario_refunds():
    """A partial refund (approved a day after it was requested), a full refund, a chargeback and a rejected
    refund, each on a one-time purchase."""
    f = Feed()
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


def scenario_attribution():
    """utm keys on transactions and subscriptions: first and last touch."""
    f = Feed()
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


def scenario_grace():
    """Entitlements that depend on now(): past_due grace, a second past_due run, trialing; one-time purchase
    and canceled subscription of the same price."""
    f = Feed()
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


def scenario_out_of_order():
    """The same life twice in EUR: in order to a sandbox endpoint, shuffled with duplicates to a live one."""
    ordered = Feed("sandbox")
    r_in = lifecycle_events(ordered, "EUR")
    ordered.post()
    shuffled = Feed("live")
    r_out = lifecycle_events(shuffled, "EUR")
    rng = random.Random(20240521)
    events = list(shuffled.events)
    rng.shuffle(events)
    events += rng.sample(shuffled.events, 5)        # redeliveries
    rng.shuffle(events)
    shuffled.post(events)
    return {"in": r_in, "out": r_out, "order_in": [e["event_id"] for e in ordered.events],
            "order_out": [e["event_id"] for e in events]}


def scenario_checkout():
    """Checkouts that start a subscription and carry a one-time item, as Paddle sends them: transaction.paid
    before the subscription exists (no subscription_id), transaction.completed naming it."""
    f = Feed()
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


def scenario_churn_edges():
    """A trial cancelled before it paid (MXN), and a RON subscription whose price is in TRY, cancelled."""
    f = Feed()
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


def scenario_environments():
    """A live one-time purchase, and sandbox snapshots that name its transaction id: an approved full refund,
    and an earlier transaction.paid. Sandbox secrets are shared with developers; none of it may touch live."""
    live, sandbox = Feed("live"), Feed("sandbox")
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
    Feed("sandbox").post([sandbox.add("customer.updated", customer(s["squatted"], "forged@example.my"),
                                      "2024-07-20 09:00")])
    Feed("live").post([live.add("customer.created", customer(s["squatted"], "owner@example.my"),
                                "2024-07-02 09:00")])
    return s


SCENARIOS = {
    "checkout": scenario_checkout,
    "environments": scenario_environments,
    "churn_edges": scenario_churn_edges,
    "minor_units": scenario_minor_units,
    "plans": scenario_plans,
    "upgrade": scenario_upgrade,
    "pause": scenario_pause,
    "cancel": scenario_cancel,
    "dunning": scenario_dunning,
    "refunds": scenario_refunds,
    "attribution": scenario_attribution,
    "grace": scenario_grace,
    "out_of_order": scenario_out_of_order,
}


def load_all():
    for name in SCENARIOS:
        load(name)


# --------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------

def money_row(day, currency, transactions=0, gross="0", discount="0", tax="0", net="0", fee="0", earnings="0",
              refund_count=0, refunds="0", chargeback_count=0, chargebacks="0", environment="sandbox"):
    return {"day": day, "environment": environment, "currency_code": currency, "transactions": transactions,
            "gross": gross, "discount": discount, "tax": tax, "net_of_tax": net, "fee": fee, "earnings": earnings,
            "refund_count": refund_count, "refunds": refunds, "chargeback_count": chargeback_count,
            "chargebacks": chargebacks}


def movement_row(month, currency, new="0.00", expansion="0.00", contraction="0.00", churned="0.00",
                 reactivated="0.00", net="0.00", ending="0.00", counts=(0, 0, 0, 0, 0), environment="sandbox"):
    return {"month": month, "environment": environment, "currency_code": currency, "new_mrr": new,
            "expansion_mrr": expansion, "contraction_mrr": contraction, "churned_mrr": churned,
            "reactivated_mrr": reactivated, "net_new_mrr": net, "ending_mrr": ending,
            "new_subscriptions": counts[0], "expansions": counts[1], "contractions": counts[2],
            "churned_subscriptions": counts[3], "reactivations": counts[4]}


def mrr_row(currency, active, customers, mrr, arr, past_due=0, past_due_mrr="0.00", environment="sandbox"):
    return {"environment": environment, "currency_code": currency, "active_subscriptions": active,
            "active_customers": customers, "mrr": mrr, "arr": arr, "past_due_subscriptions": past_due,
            "past_due_mrr": past_due_mrr}


def churn_row(month, currency, voluntary=(0, 0, "0.00"), failed=(0, 0, "0.00"), environment="sandbox"):
    total = decimal.Decimal(voluntary[2]) + decimal.Decimal(failed[2])
    return {"month": month, "environment": environment, "currency_code": currency,
            "churned_customers": voluntary[0] + failed[0], "churned_subscriptions": voluntary[1] + failed[1],
            "mrr_lost": str(total), "voluntary_customers": voluntary[0], "voluntary_subscriptions": voluntary[1],
            "voluntary_mrr_lost": voluntary[2], "failed_payment_customers": failed[0],
            "failed_payment_subscriptions": failed[1], "failed_payment_mrr_lost": failed[2]}


class ReportCase(HarnessTestCase):
    harness = H
    maxDiff = None

    def assertRows(self, actual, expected, what=""):
        self.assertEqual(norm(actual), norm(expected), what)


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


class Dunning(ReportCase):
    @classmethod
    def setUpClass(cls):
        cls.s = load("dunning")

    def test_cases_recovered_lost_open(self):
        s = self.s

        def case(case_type, case_id, sub, txn, cust, email, amount, failed_at, attempts, state,
                 recovered_at=None, lost_at=None, ttr=None):
            return {"failed_on": failed_at[:10], "environment": "sandbox", "case_type": case_type,
                    "case_id": case_id, "subscription_id": sub, "transaction_id": txn, "customer_id": cust,
                    "customer_email": email, "currency_code": "PLN", "amount": amount, "failed_at": J(failed_at),
                    "failed_attempts": attempts, "state": state,
                    "recovered_at": J(recovered_at) if recovered_at else None,
                    "lost_at": J(lost_at) if lost_at else None, "time_to_recover": ttr}

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
            s["cz"]: (s["p3"].id, True, True, "one_time_purchase", None),          # chargeback, rejected refund
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
        cid, sandbox = paddle_id("ctm"), Feed("sandbox")
        forged = sandbox.add("customer.updated", customer(cid, "forged@example.my"), "2024-07-21 09:00")
        held = threading.Thread(target=H.sql, args=(
            "BEGIN; %s; SELECT pg_sleep(2); COMMIT;" % H.ingest_sql(forged, sandbox.ep.id, "sandbox"),))
        held.start()
        try:
            wait_until(lambda: H.sql_value("SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
                                           "WHERE c.relname = 'customers' AND l.mode = 'RowExclusiveLock' "
                                           "AND l.pid <> pg_backend_pid()") != "0",
                       timeout=10, interval=0.02, what="the sandbox insert to be in flight")
            Feed("live").post([Feed("live").add("customer.created", customer(cid, "owner@example.my"),
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


class StatusCounts(ReportCase):
    def counts(self):
        return {(r["environment"], r["status"]): r["count"] for r in view("subscription_status_counts")}

    def test_counts_per_environment_and_status(self):
        before = self.counts()
        f = Feed("live")
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


def view_texts():
    """Every report and building-block view and every state table, in full, as text."""
    out = {}
    for v in REPORT_VIEWS + HELPER_VIEWS:
        out[v] = H.sql("SELECT t::text FROM paddle.%s t ORDER BY 1" % v)
    for t in STATE_TABLES:
        # Which of several snapshots with equal items wrote the item rows depends on the order they were
        # applied in (paddle.reproject replays by occurred_at): compare the rows, not that provenance.
        out[t] = H.sql("SELECT (to_jsonb(t) - 'updated_in_db_at' - 'items_event_id'%s)::text "
                       "FROM paddle.%s t ORDER BY 1"
                       % (" - 'event_id' - 'occurred_at'" if t.endswith("_items") else "", t))
    return out


NEWEST_MISMATCHES = """
WITH newest AS (
    -- the newest snapshot; a live one wins over any sandbox one with the same id
    SELECT DISTINCT ON (entity, entity_id) entity, entity_id, event_id
    FROM paddle.entity_snapshots WHERE projection_error IS NULL
    ORDER BY entity, entity_id, environment = 'live' DESC, occurred_at DESC, event_id DESC
), state AS (
    SELECT 'customer' AS entity, id, event_id FROM paddle.customers
    UNION ALL SELECT 'subscription', id, event_id FROM paddle.subscriptions
    UNION ALL SELECT 'transaction', id, event_id FROM paddle.transactions
    UNION ALL SELECT 'adjustment', id, event_id FROM paddle.adjustments
)
SELECT coalesce(n.entity, s.entity), coalesce(n.entity_id, s.id), n.event_id, s.event_id
FROM newest n FULL JOIN state s ON s.entity = n.entity AND s.id = n.entity_id
WHERE n.event_id IS DISTINCT FROM s.event_id
UNION ALL
SELECT 'subscription_items', i.subscription_id, p.items_event_id, i.event_id
FROM paddle.subscription_items i LEFT JOIN paddle.subscriptions p ON p.id = i.subscription_id
WHERE p.items_event_id IS DISTINCT FROM i.event_id
UNION ALL
SELECT 'transaction_items', i.transaction_id, p.items_event_id, i.event_id
FROM paddle.transaction_items i LEFT JOIN paddle.transactions p ON p.id = i.transaction_id
WHERE p.items_event_id IS DISTINCT FROM i.event_id
UNION ALL
SELECT 'adjustment_items', i.adjustment_id, p.items_event_id, i.event_id
FROM paddle.adjustment_items i LEFT JOIN paddle.adjustments p ON p.id = i.adjustment_id
WHERE p.items_event_id IS DISTINCT FROM i.event_id
UNION ALL
SELECT 'items_source', entity || ' ' || id, event_id, items_event_id FROM ({items}) AS mismatched
""".replace("{items}", ITEMS_FROM_OTHER_DATA)


def rebuild_differences():
    """Rebuild everything with paddle.reproject() in a transaction that is rolled back; the rows that differ
    from the current state tables (updated_in_db_at aside), per table."""
    parts = ["BEGIN;"]
    for t in STATE_TABLES:
        parts.append("CREATE TEMP TABLE before_%s AS SELECT to_jsonb(t) - 'updated_in_db_at' AS j FROM paddle.%s t;"
                     % (t, t))
    parts.append("SELECT paddle.reproject() AS replayed \\gset")
    parts.append(" UNION ALL ".join(
        "SELECT %s, ((SELECT count(*) FROM (SELECT j FROM before_%s EXCEPT ALL SELECT to_jsonb(t) - "
        "'updated_in_db_at' FROM paddle.%s t) a) + (SELECT count(*) FROM (SELECT to_jsonb(t) - 'updated_in_db_at' "
        "FROM paddle.%s t EXCEPT ALL SELECT j FROM before_%s) b))::text" % (H.lit(t), t, t, t, t)
        for t in STATE_TABLES) + ";")
    parts.append("ROLLBACK;")
    return {r[0]: int(r[1]) for r in H.sql("\n".join(parts))}


class Reproject(ReportCase):
    @classmethod
    def setUpClass(cls):
        load_all()

    def test_full_reproject_leaves_every_view_unchanged(self):
        before = view_texts()
        self.assertTrue(all(before[v] for v in REPORT_VIEWS), "a report is empty")
        expected = int(H.sql_value("SELECT count(*) FROM paddle.payment_events WHERE split_part(event_type, '.', 1) "
                                   "IN ('customer', 'subscription', 'transaction', 'adjustment')"))
        self.assertEqual(int(H.sql_value("SELECT paddle.reproject()")), expected)
        after = view_texts()
        for k in before:
            self.assertEqual(before[k], after[k], k)
        self.assertEqual(H.sql(NEWEST_MISMATCHES), [])

    def test_reproject_since_rebuilds_only_recent_entities(self):
        s_min, s_ref = load("minor_units"), load("refunds")
        before = view_texts()
        since = "2024-04-05 00:00:00+00"
        untouched = H.sql_value("SELECT updated_in_db_at::text FROM paddle.transactions WHERE id = %s"
                                % H.lit(s_min["tj1"]))
        # lose a state row of an entity with a recent event: the partial rebuild restores it
        H.sql("DELETE FROM paddle.adjustments WHERE id = %s" % H.lit(s_ref["partial"]))
        expected = int(H.sql_value(
            "SELECT count(*) FROM paddle.entity_snapshots s WHERE EXISTS (SELECT 1 FROM paddle.entity_snapshots r "
            "WHERE r.entity = s.entity AND r.entity_id = s.entity_id AND r.occurred_at >= '%s')" % since))
        self.assertEqual(int(H.sql_value("SELECT paddle.reproject('%s')" % since)), expected)
        after = view_texts()
        for k in before:
            self.assertEqual(before[k], after[k], k)
        self.assertEqual(H.sql_value("SELECT updated_in_db_at::text FROM paddle.transactions WHERE id = %s"
                                     % H.lit(s_min["tj1"])), untouched)
        self.assertEqual(H.sql(NEWEST_MISMATCHES), [])

    def test_projection_error_bookkeeping(self):
        s = load("upgrade")
        eid = H.sql_value("SELECT event_id FROM paddle.subscriptions WHERE id = %s" % H.lit(s["sub"]))
        H.sql("UPDATE paddle.payment_events SET projection_error = 'XX000: stale' WHERE event_id = %s" % H.lit(eid))
        H.sql("SELECT paddle.reproject()")
        self.assertIsNone(H.sql_value("SELECT projection_error FROM paddle.payment_events WHERE event_id = %s"
                                      % H.lit(eid)))

    def test_refuses_snapshot_isolation(self):
        with self.assertRaises(Exception) as cm:
            H.sql("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT paddle.reproject(); COMMIT;")
        self.assertIn("READ COMMITTED", str(cm.exception))


class ReprojectWhileDelivering(ReportCase):
    SEED = 1500

    @classmethod
    def setUpClass(cls):
        cls.ep = H.add_endpoint()
        template = make_event("subscription.updated", sample_subscription(currency="ZAR", items=((2500, 1),)),
                              as_dict=True)
        # A log big enough that a rebuild takes a moment; stored straight through paddle.ingest_event.
        H.sql("SELECT count(paddle.ingest_event('evt_seed' || g, 'subscription.updated', t, 'ntf_seed' || g, %s, "
              "'sandbox', jsonb_set(%s::jsonb, '{data,id}', to_jsonb('sub_seed' || g %% 1000)))) "
              "FROM generate_series(1, %d) g, LATERAL (SELECT '2023-06-01'::timestamptz + g * interval '1 minute') x(t)"
              % (H.lit(cls.ep.id), H.lit(json.dumps(template)), cls.SEED))

    def test_rebuild_while_deliveries_continue(self):
        stop = threading.Event()
        log, failures = [], []
        lock = threading.Lock()

        def deliver(worker):
            rng = random.Random(worker)
            subs = [(paddle_id("sub"), paddle_id("ctm")) for _ in range(8)]
            txns = [(paddle_id("txn"), paddle_id("ctm")) for _ in range(6)]
            adjs = [(paddle_id("adj"), paddle_id("txn"), paddle_id("ctm")) for _ in range(3)]
            price = Price(3000, "ZAR")
            base = datetime.datetime(2025, 1, 1, tzinfo=UTC)
            while not stop.is_set():
                at = base + datetime.timedelta(seconds=rng.randrange(0, 86400 * 30))   # often older: out of order
                kind = rng.random()
                if kind < 0.6:
                    sid, cid = rng.choice(subs)
                    status = rng.choice(("active", "active", "past_due", "paused", "canceled"))
                    env = make_event("subscription.updated", subscription(sid, cid, "ZAR", status,
                                                                          [(price, rng.randint(1, 5))], at),
                                     occurred_at=rfc3339(at), as_dict=True)
                elif kind < 0.9:
                    tid, cid = rng.choice(txns)
                    status = rng.choice(("ready", "paid", "completed", "past_due"))
                    env = make_event("transaction.updated", transaction(tid, cid, "ZAR", status,
                                                                        [(price, rng.randint(1, 3))], at),
                                     occurred_at=rfc3339(at), as_dict=True)
                else:
                    aid, tid, cid = rng.choice(adjs)
                    env = make_event("adjustment.updated", adjustment(aid, tid, cid, "ZAR", rng.randint(100, 900),
                                                                      rng.choice(("pending_approval", "approved")), at),
                                     occurred_at=rfc3339(at), as_dict=True)
                body = json.dumps(env).encode()
                for _attempt in range(20):               # like Paddle: retry what was not acknowledged
                    t0 = time.monotonic()
                    r = H.post_event(self.ep, body)
                    t1 = time.monotonic()
                    with lock:
                        log.append((t0, t1, r.status))
                    if r.status == 200:
                        break
                    time.sleep(0.2)
                else:
                    with lock:
                        failures.append((env["event_id"], r))

        threads = [threading.Thread(target=deliver, args=(i,), daemon=True) for i in range(3)]
        for t in threads:
            t.start()
        windows, counts = [], []
        try:
            time.sleep(0.3)
            for since in (None, None, "2025-01-10 00:00:00+00", None):
                t0 = time.monotonic()
                counts.append(int(H.sql_value("SELECT paddle.reproject(%s)" % (H.lit(since) if since else ""))))
                windows.append((t0, time.monotonic()))
                time.sleep(0.15)
        finally:
            stop.set()
            for t in threads:
                t.join(30)
        self.assertEqual(failures, [])
        self.assertGreaterEqual(counts[0], self.SEED)
        during = [e for e in log if any(w0 <= e[0] < w1 for w0, w1 in windows)]
        self.assertGreater(len(during), 0, "no delivery overlapped a rebuild (windows %r)" % windows)
        self.assertTrue(all(status in (200, 503) for _, _, status in log), set(s for _, _, s in log))
        # Every state row holds the newest snapshot of its entity, items included ...
        self.assertEqual(H.sql(NEWEST_MISMATCHES), [])
        # ... and is exactly what projecting that snapshot gives (a quiet full rebuild changes nothing).
        self.assertEqual(rebuild_differences(), {t: 0 for t in STATE_TABLES})


class Cli(ReportCase):
    @classmethod
    def setUpClass(cls):
        p = H.cli("report", check=False)
        if p.returncode != 0 or "revenue_daily" not in p.stdout:
            raise unittest.SkipTest("this paddlehook has no `report` command")
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

    def test_environment_and_since_filters(self):
        out = H.cli("report", "revenue_daily", "--environment", "sandbox", "--since", "2024-03-06",
                    "--format", "csv").stdout
        rows = list(csv.reader(io.StringIO(out)))[1:]
        want = [["" if v is None else v for v in r] for r in H.sql(
            "SELECT * FROM paddle.revenue_daily WHERE environment = 'sandbox' AND day >= '2024-03-06' "
            "ORDER BY day, environment, currency_code")]
        self.assertEqual(rows, want)
        self.assertTrue(rows and all(r[0] >= "2024-03-06" and r[1] == "sandbox" for r in rows))
        self.assertNotEqual(H.cli("report", "mrr", "--since", "2024-01-01", check=False).returncode, 0)
        self.assertNotEqual(H.cli("report", "no_such_report", check=False).returncode, 0)

    def test_json_keeps_numbers_exact(self):
        out = H.cli("report", "revenue_daily", "--environment", "sandbox", "--format", "json").stdout
        rows = json.loads(out, parse_float=decimal.Decimal)
        bhd = [r for r in rows if r["currency_code"] == "BHD"]
        self.assertEqual(norm([(r["day"], r["gross"], r["net_of_tax"]) for r in bhd]),
                         [["2024-03-05", "13.579", "12.345"]])

    def test_reproject_command(self):
        before = view_texts()
        out = H.cli("reproject").stdout
        self.assertRegex(out, r"replayed \d+ event")
        out = H.cli("reproject", "--since", "2024-03-01T00:00:00Z").stdout
        self.assertRegex(out, r"replayed \d+ event")
        self.assertEqual(view_texts(), before)
