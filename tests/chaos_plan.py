"""The chaos test's plan: entities (customers, subscriptions, transactions,
adjustments, others), their snapshots in time, and the projection each entity's
newest snapshot must leave in the state tables (tests/chaos.py)."""

import collections
import datetime
import json
import re

import paddledata
from harness import (make_event, paddle_id, parse_ts, rfc3339, sample_adjustment, sample_customer,
                     sample_subscription, sample_transaction)


UTC = datetime.timezone.utc
T0 = datetime.datetime(2024, 1, 1, tzinfo=UTC)
DAY_US = 86400 * 10 ** 6
_CANONICAL_TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


def norm_ts(text):
    """A timestamp as PostgreSQL renders it back through ts_text()."""
    if not text:
        return None
    return text if _CANONICAL_TS.match(text) else rfc3339(parse_ts(text))


class Ids:
    """Paddle-shaped ids (prefix_ + 26 lowercase alphanumerics) from the
    plan's seeded generator: a seed reproduces a plan, and it is much faster
    than paddledata.paddle_id(), which reads the clock and os.urandom."""

    def __init__(self, rng):
        self.rng = rng

    def __call__(self, prefix):
        return "%s_%026x" % (prefix, self.rng.getrandbits(104))


def amount(v):
    return None if v is None else str(int(v))


class Event:
    __slots__ = ("event_id", "event_type", "kind", "entity_id", "occurred_at", "body",
                 "expect", "pos", "acked", "stored_answers", "deliveries")

    def __init__(self, ids, kind, entity_id, event_type, occurred_at, data, expect):
        self.kind = kind
        self.entity_id = entity_id
        self.event_type = event_type
        self.occurred_at = occurred_at
        env = make_event(event_type, data, event_id=ids("evt"), notification_id=ids("ntf"),
                         occurred_at=occurred_at, as_dict=True)
        self.event_id = env["event_id"]
        self.body = json.dumps(env, separators=(",", ":")).encode()
        self.expect = expect
        self.pos = 0.0
        self.acked = False
        self.stored_answers = 0
        self.deliveries = 0

    def replay_body(self):
        env = json.loads(self.body)
        env["notification_id"] = paddle_id("ntf")
        return json.dumps(env, indent=1).encode()   # other bytes, same event


def snapshot_times(rng, k, tie_rate):
    at = T0 + datetime.timedelta(microseconds=rng.randrange(300 * DAY_US))
    out = []
    for _ in range(k):
        out.append(at)
        at += datetime.timedelta(microseconds=rng.randrange(1, 20 * DAY_US))
    if k >= 2 and rng.random() < tie_rate:
        out[-1] = out[-2]      # same occurred_at: event_id decides
    return [rfc3339(t) for t in out]


def expect_subscription(d):
    return {
        "status": d["status"], "customer_id": d["customer_id"], "currency_code": d["currency_code"],
        "billing_cycle_interval": d["billing_cycle"]["interval"],
        "billing_cycle_frequency": d["billing_cycle"]["frequency"],
        "next_billed_at": norm_ts(d["next_billed_at"]), "paused_at": norm_ts(d["paused_at"]),
        "canceled_at": norm_ts(d["canceled_at"]),
        "scheduled_change_action": (d["scheduled_change"] or {}).get("action"),
        "scheduled_change_effective_at": norm_ts((d["scheduled_change"] or {}).get("effective_at")),
        "custom_data": d["custom_data"], "transaction_id": d.get("transaction_id"),
        "updated_at": norm_ts(d["updated_at"]),
        "items": sorted([i["price"]["id"], i["quantity"], i["status"],
                         amount(i["price"]["unit_price"]["amount"])] for i in d["items"]),
    }


def expect_transaction(d):
    t = d["details"]["totals"]
    pays = d["payments"]
    last = pays[0] if pays else {}
    return {
        "status": d["status"], "customer_id": d["customer_id"],
        "subscription_id": d["subscription_id"], "currency_code": d["currency_code"],
        "origin": d["origin"], "billed_at": norm_ts(d["billed_at"]),
        "subtotal": amount(t["subtotal"]), "tax": amount(t["tax"]),
        "grand_total": amount(t["grand_total"]), "fee": amount(t["fee"]),
        "earnings": amount(t["earnings"]), "payment_attempts": len(pays),
        "last_payment_status": last.get("status"), "last_payment_error_code": last.get("error_code"),
        "items": [[n + 1, li["id"], li["price_id"], li["quantity"], amount(li["totals"]["total"])]
                  for n, li in enumerate(d["details"]["line_items"])],
    }


def expect_customer(d):
    return {"name": d["name"], "email": d["email"], "status": d["status"],
            "marketing_consent": d["marketing_consent"], "updated_at": norm_ts(d["updated_at"])}


def expect_adjustment(d):
    return {"status": d["status"], "action": d["action"], "transaction_id": d["transaction_id"],
            "total": amount(d["totals"]["total"]),
            "items": [[n + 1, i["id"], amount(i["amount"])] for n, i in enumerate(d["items"])]}


SUB_NEXT = {  # status -> [(next status, event type)]
    "trialing": [("active", "subscription.activated"), ("trialing", "subscription.updated")],
    "active": [("active", "subscription.updated"), ("past_due", "subscription.past_due"),
               ("paused", "subscription.paused"), ("active", "subscription.updated")],
    "past_due": [("active", "subscription.updated"), ("past_due", "subscription.updated")],
    "paused": [("active", "subscription.resumed"), ("paused", "subscription.updated")],
}


def plan_subscription(rng, ids, k, tie_rate, customer_id):
    sub_id = ids("sub")
    currency = rng.choice(("USD", "USD", "EUR", "GBP", "JPY"))
    prices = [(ids("pri"), ids("pro"), rng.choice((900, 1500, 3240, 4900))),
              (ids("pri"), ids("pro"), rng.choice((500, 10800)))]
    times = snapshot_times(rng, k, tie_rate)
    status, out = rng.choice(("trialing", "active", "active")), []
    for j, at in enumerate(times):
        if j == 0:
            etype = "subscription.created"
        elif j == k - 1 and rng.random() < 0.25:
            status, etype = "canceled", "subscription.canceled"
        else:
            status, etype = rng.choice(SUB_NEXT[status])
        n_items = 2 if rng.random() < 0.5 else 1
        items = [(prices[i][2], rng.randint(1, 50) if i == 0 else rng.randint(1, 5))
                 for i in range(n_items)]
        d = sample_subscription(sub_id, status=status, customer_id=customer_id, currency=currency,
                                items=items, at=at)
        for i, item in enumerate(d["items"]):
            item["price"]["id"], item["price"]["product_id"] = prices[i][0], prices[i][1]
            if status == "trialing":
                item["status"] = "trialing"
                item["trial_dates"] = {"starts_at": times[0], "ends_at": at}
        d["created_at"] = d["started_at"] = d["first_billed_at"] = times[0]
        if d["next_billed_at"]:
            d["next_billed_at"] = rfc3339(parse_ts(at) + datetime.timedelta(days=30))
        if j == 0:
            d["transaction_id"] = ids("txn")
        if status == "active" and rng.random() < 0.2:
            d["scheduled_change"] = {"action": rng.choice(("cancel", "pause")),
                                     "effective_at": d["next_billed_at"], "resume_at": None}
        d["custom_data"] = {"team": "qa", "snapshot": j}
        out.append(Event(ids, "subscription", sub_id, etype, at, d, expect_subscription(d)))
    return sub_id, out


TXN_PATHS = (["draft", "ready", "billed", "paid", "completed"],
             ["ready", "past_due", "past_due", "paid", "completed"],
             ["ready", "paid", "completed"])


def plan_transaction(rng, ids, k, tie_rate, customer_id, sub_id):
    txn_id = ids("txn")
    currency = rng.choice(("USD", "EUR", "GBP"))
    items = [(rng.choice((900, 1500, 3000, 4900)), rng.randint(1, 10))
             for _ in range(rng.randint(1, 3))]
    keys = [(ids("pri"), ids("pro"), ids("txnitm")) for _ in items]
    path = rng.choice(TXN_PATHS)[:k]
    times = snapshot_times(rng, len(path), tie_rate)
    out, failures = [], 0
    for j, (status, at) in enumerate(zip(path, times)):
        if j == 0:
            etype = "transaction.created"
        elif status == "past_due" and failures:
            etype = "transaction.payment_failed"
        else:
            etype = "transaction." + status
        d = sample_transaction(txn_id, status=status, customer_id=customer_id, currency=currency,
                               subscription_id=sub_id, items=items, at=at)
        for it, li, (pri, pro, itm) in zip(d["items"], d["details"]["line_items"], keys):
            it["price"]["id"], it["price"]["product_id"] = pri, pro
            li["price_id"], li["id"], li["product"]["id"] = pri, itm, pro
        d["created_at"] = times[0]
        if status == "past_due":
            failures += 1
        pays = [{"payment_attempt_id": ids("pay"), "amount": d["details"]["totals"]["total"],
                 "status": "error", "error_code": "declined", "created_at": times[0],
                 "captured_at": None, "method_details": {"type": "card"}} for _ in range(failures)]
        if status in ("paid", "completed"):
            pays.append({"payment_attempt_id": ids("pay"), "amount": d["details"]["totals"]["total"],
                         "status": "captured", "error_code": None, "created_at": at,
                         "captured_at": at, "method_details": {"type": "card"}})
        for n, p in enumerate(pays):   # distinct times, newest first as Paddle lists them
            p["created_at"] = rfc3339(parse_ts(times[0]) + datetime.timedelta(seconds=n))
        d["payments"] = list(reversed(pays))
        out.append(Event(ids, "transaction", txn_id, etype, at, d, expect_transaction(d)))
    return txn_id, out


def plan_customer(rng, ids, k, tie_rate, customer_id):
    times = snapshot_times(rng, k, tie_rate)
    out = []
    for j, at in enumerate(times):
        d = sample_customer(customer_id, status="active" if j < k - 1 or rng.random() < 0.8 else "archived",
                            email="%s+%d@example.com" % (customer_id, j), name="Customer %d" % j, at=at)
        d["created_at"] = times[0]
        d["marketing_consent"] = rng.random() < 0.5
        out.append(Event(ids, "customer", customer_id, "customer.created" if j == 0 else "customer.updated",
                         at, d, expect_customer(d)))
    return out


def plan_adjustment(rng, ids, k, tie_rate, customer_id, txn_id):
    adj_id, item_id = ids("adj"), ids("adjitm")
    amt = rng.choice((500, 1100, 3000))
    times = snapshot_times(rng, k, tie_rate)
    final = rng.choice(("approved", "rejected"))
    out = []
    for j, at in enumerate(times):
        status = "pending_approval" if j == 0 else final
        d = sample_adjustment(adj_id, status=status, transaction_id=txn_id, customer_id=customer_id,
                              amount=amt, at=at)
        d["items"][0]["id"] = item_id
        d["created_at"] = times[0]
        out.append(Event(ids, "adjustment", adj_id, "adjustment.created" if j == 0 else "adjustment.updated",
                         at, d, expect_adjustment(d)))
    return out


OTHER_TYPES = ("address.created", "product.updated", "price.updated", "payout.paid",
               "payment_method.saved", "business.created")


def build_plan(n, rng, tie_rate):
    """n events over many entities; returns (events, {kind: entity count}).
    The sample builders' own ids (addresses, prices) come from Ids too."""
    ids = Ids(rng)
    saved, paddledata.paddle_id = paddledata.paddle_id, ids
    try:
        return _build_plan(n, rng, tie_rate, ids)
    finally:
        paddledata.paddle_id = saved


def _build_plan(n, rng, tie_rate, ids):
    events, counts = [], collections.Counter()
    customers, subs, txns = [], [], []
    while len(events) < n:
        r = rng.random()
        if r < 0.08 or not customers:
            cid = ids("ctm")
            customers.append(cid)
            group = plan_customer(rng, ids, rng.randint(1, 3), tie_rate, cid)
            kind = "customer"
        elif r < 0.45 or not subs:
            cid = rng.choice(customers)
            sid, group = plan_subscription(rng, ids, rng.randint(3, 8), tie_rate, cid)
            subs.append((sid, cid))
            kind = "subscription"
        elif r < 0.90 or not txns:
            sid, cid = rng.choice(subs)
            tid, group = plan_transaction(rng, ids, rng.randint(1, 5), tie_rate, cid, sid)
            txns.append((tid, cid))
            kind = "transaction"
        elif r < 0.97:
            tid, cid = rng.choice(txns)
            group = plan_adjustment(rng, ids, rng.randint(1, 2), tie_rate, cid, tid)
            kind = "adjustment"
        else:
            etype = rng.choice(OTHER_TYPES)
            oid = ids(etype.split(".")[0][:3])
            group = [Event(ids, "other", oid, etype, rfc3339(T0 + datetime.timedelta(
                microseconds=rng.randrange(300 * DAY_US))), {"id": oid, "status": "active"}, None)]
            kind = "other"
        group = group[:n - len(events)]
        counts[kind] += 1
        # Snapshots of one entity are delivered close together, in random order.
        base = rng.random()
        for ev in group:
            ev.pos = base + rng.uniform(0, 0.02)
        events.extend(group)
    return events, counts
