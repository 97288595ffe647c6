#!/usr/bin/env python3
"""Chaos test: every acknowledged event is stored, exactly once, under faults.

    python3 tests/chaos.py [--events 20000] [--threads 16] [--workers 4] [--seed S]
                           [--max-seconds 540] [--kinds K,K] [--json FILE] [--keep]
    python3 tests/chaos.py --short          # what tests/test_chaos.py runs
    python3 tests/chaos.py --async-commit   # shows what a crash loses with synchronous_commit=off

A load generator plays Paddle against a real stack (tests/harness.py:
PostgreSQL + `paddlehook serve` + nginx on loopback): N unique signed events
for many customers, subscriptions, transactions and adjustments, several
snapshots per entity with distinct occurred_at (for 4% of the entities the
two newest share it, so event_id decides), delivered in random order over
16+ persistent connections; every delivery that does not get a 2xx is sent
again with backoff (50 ms doubling to 1 s, bounded attempts and age).  About
10% of the events are delivered a second time: at the same moment as the
original (both wait on a barrier), later, or later as a replay with a new
notification_id.

Meanwhile tests/faults.py SIGKILLs workers, crashes PostgreSQL (SIGKILL of the
postmaster; immediate shutdown), restarts nginx, blocks the database (SIGSTOP
of all its processes; an ACCESS EXCLUSIVE lock on payment_events) and
terminates its connections, one fault at a time, waiting for the first 2xx
after each.

Then it checks: every event is in payment_events exactly once; every 2xx was
for a stored event; no event got two "stored" answers; every state row holds
the projection of its entity's newest snapshot by (occurred_at, event_id); no
item row is orphaned or from another snapshot than the one its parent names; no projection
errors; no signed event got a 4xx; the serve supervisor survived and has all
its workers, healthz 200; no worker died other than those killed.  It prints
the figures and exits 1 when anything failed (the logs are kept then).  A
seed reproduces the plan and the fault order, not the timing.
`make chaos` runs this (tests/chaos.mk); tests/test_chaos.py runs the short
version inside `make check`.
"""

import argparse
import bisect
import collections
import datetime
import heapq
import http.client
import json
import os
import random
import re
import signal
import statistics
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402
import paddledata  # noqa: E402
from faults import FAULT_KINDS, ChaosHarness, Faults  # noqa: E402
from harness import (make_event, paddle_id, parse_ts, py_sign, rfc3339,  # noqa: E402
                     sample_adjustment, sample_customer, sample_subscription,
                     sample_transaction, ts_text)

UTC = datetime.timezone.utc
T0 = datetime.datetime(2024, 1, 1, tzinfo=UTC)
DAY_US = 86400 * 10 ** 6


class Options:
    """Knobs of one chaos run (the command line maps onto these)."""

    def __init__(self, **kw):
        self.events = 20000
        self.threads = 16
        self.workers = 4
        self.seed = None
        self.dup_rate = 0.10          # share of events delivered again
        self.tie_rate = 0.04          # entities whose two newest snapshots share occurred_at
        self.kinds = FAULT_KINDS
        self.max_faults = 60
        self.min_faults = 0           # fail if fewer were injected (the short test wants all kinds)
        self.fault_gap = (0.5, 2.0)   # seconds between a fault's recovery and the next fault
        self.block_seconds = (2.0, 4.0)
        self.warmup = 0.02            # share of events acknowledged before the first fault
        self.tail = 0.04              # no fault once fewer fresh deliveries than this share remain
        self.rate = None              # cap on first deliveries per second (None: as fast as it goes)
        self.max_seconds = 540        # whole run, including start-up and checks
        self.reserve = None           # seconds kept for draining retries, and again for the checks
        self.max_attempts = 80        # per delivery
        self.max_age = 120.0          # seconds per delivery
        self.backoff = (0.05, 1.0)
        self.http_timeout = 40.0      # > nginx's fastcgi_read_timeout (30 s)
        self.async_commit = False
        self.keep = False
        self.quiet = False
        self.before_check = None      # callable(harness), run before the checks (to test the checker)
        for k, v in kw.items():
            if not hasattr(self, k):
                raise TypeError("unknown option %s" % k)
            setattr(self, k, v)
        if self.seed is None:
            self.seed = random.SystemRandom().randrange(1 << 32)
        if self.reserve is None:
            self.reserve = min(60.0, 0.15 * self.max_seconds)


def short_options(**kw):
    """The short version that tests/test_chaos.py runs inside `make check`
    (under a minute): ~1,500 events, every fault kind at least once.  The
    first deliveries are spread over the fault schedule (~20 s) so that each
    fault hits deliveries in flight; retries and bursts are not capped."""
    base = dict(events=1500, threads=16, workers=3, rate=75, tail=0.1, warmup=0.03,
                min_faults=len(FAULT_KINDS), max_faults=2 * len(FAULT_KINDS),
                block_seconds=(1.0, 2.0), fault_gap=(0.2, 0.6), max_seconds=55, max_age=30.0)
    base.update(kw)
    return Options(**base)


# --------------------------------------------------------------------------
# The plan: entities, their snapshots, the expected projection
# --------------------------------------------------------------------------

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


# --------------------------------------------------------------------------
# Deliveries and the scheduler that plays Paddle's retries
# --------------------------------------------------------------------------

class Delivery:
    __slots__ = ("event", "body", "kind", "barrier", "attempts", "first_start", "spans", "done")

    def __init__(self, event, kind, body=None, barrier=None):
        self.event = event
        self.kind = kind              # original, dup_concurrent, dup_late, replay
        self.body = body or event.body
        self.barrier = barrier
        self.attempts = 0
        self.first_start = None
        self.spans = []               # (start, end) of the first attempt, for overlap figures
        self.done = None              # "acked" or "gave_up"


def build_deliveries(events, rng, dup_rate):
    jobs = []
    for ev in events:
        jobs.append((ev.pos, Delivery(ev, "original")))
        if rng.random() >= dup_rate:
            continue
        r = rng.random()
        if r < 0.4:
            # Sent at the same moment as the original: both wait on a barrier.
            b = threading.Barrier(2)
            jobs[-1][1].barrier = b
            jobs.append((ev.pos, Delivery(ev, "dup_concurrent", barrier=b)))
        elif r < 0.8:
            jobs.append((ev.pos + rng.uniform(0.001, 0.3), Delivery(ev, "dup_late")))
        else:
            jobs.append((ev.pos + rng.uniform(0.001, 0.3), Delivery(ev, "replay", body=ev.replay_body())))
    jobs.sort(key=lambda j: j[0])       # stable: a concurrent pair stays adjacent
    return [d for _, d in jobs]


class Scheduler:
    """Fresh deliveries in plan order; failed ones come back after their
    backoff and take precedence once due.  take() returns None when nothing
    is left or the scheduler was closed."""

    def __init__(self, deliveries, rate=None):
        self.fresh = collections.deque(deliveries)
        self.total = len(deliveries)
        self.retry = []
        self.seq = 0
        self.inflight = 0
        self.closed = False
        self.rate = rate
        self.started = None
        self.dispatched = 0
        self.cond = threading.Condition()

    def take(self):
        with self.cond:
            while True:
                if self.closed:
                    return None
                now = time.monotonic()
                if self.started is None:
                    self.started = now
                if self.retry and self.retry[0][0] <= now:
                    self.inflight += 1
                    return heapq.heappop(self.retry)[2]
                wait = 0.5
                if self.fresh:
                    due = self.started + self.dispatched / self.rate if self.rate else now
                    if due <= now:
                        self.dispatched += 1
                        self.inflight += 1
                        return self.fresh.popleft()
                    wait = due - now
                elif not self.retry and self.inflight == 0:
                    return None
                if self.retry:
                    wait = min(wait, self.retry[0][0] - now)
                self.cond.wait(max(wait, 0.001))

    def again(self, d, due):
        with self.cond:
            self.seq += 1
            self.inflight -= 1
            heapq.heappush(self.retry, (due, self.seq, d))
            self.cond.notify()

    def finish(self, d):
        with self.cond:
            self.inflight -= 1
            self.cond.notify_all()

    def close(self):
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    def fresh_left(self):
        with self.cond:
            return len(self.fresh)


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.requests = 0
        self.retries = 0
        self.ok = collections.Counter()         # stored / duplicate
        self.non2xx = collections.Counter()     # "503 database_unavailable", "conn ConnectionRefusedError"
        self.ok_spans = []                      # (start, end) of every 2xx, in order of end
        self.ok_ends = []
        self.fail_spans = []                    # (start, end, key)
        self.gave_up = []
        self.acked_at = []                      # end time of each event's first 2xx

    def first_ok_after(self, t):
        """End time of the first 2xx of a request sent at or after t."""
        with self.lock:
            for i in range(bisect.bisect_left(self.ok_ends, t), len(self.ok_spans)):
                if self.ok_spans[i][0] >= t:
                    return self.ok_spans[i][1]
            return None


class Load:
    """The Paddle side: threads with persistent http.client connections."""

    def __init__(self, h, endpoint, deliveries, opts):
        self.h = h
        self.ep = endpoint
        self.opts = opts
        self.sched = Scheduler(deliveries, rate=opts.rate)
        self.stats = Stats()
        self.rng = random.Random(opts.seed ^ 0x5eed)
        self.threads = []
        self.t_start = self.t_end = None

    def start(self):
        self.t_start = time.monotonic()
        for i in range(self.opts.threads):
            t = threading.Thread(target=self._run, name="paddle-%d" % i, daemon=True)
            t.start()
            self.threads.append(t)

    def join(self, deadline):
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))
        alive = [t.name for t in self.threads if t.is_alive()]
        if alive:
            self.sched.close()
            for t in self.threads:
                t.join(self.opts.http_timeout + 5)
        self.t_end = time.monotonic()
        return not alive

    def finished(self):
        return all(not t.is_alive() for t in self.threads)

    def _backoff(self, attempt):
        lo, hi = self.opts.backoff
        return min(hi, lo * 2 ** (attempt - 1)) * self.rng.uniform(0.8, 1.2)

    def _post(self, conn, body):
        sig = py_sign(body, self.ep.secret)
        conn.request("POST", self.ep.path, body=body,
                     headers={"Content-Type": "application/json", "Paddle-Signature": sig})
        resp = conn.getresponse()
        data = resp.read()
        try:
            j = json.loads(data.decode("utf-8"))
        except ValueError:
            j = None
        word = (j.get("status") or j.get("error")) if isinstance(j, dict) else "non-json"
        return resp.status, word, resp.will_close

    def _run(self):
        conn = None
        st, sched = self.stats, self.sched
        while True:
            d = sched.take()
            if d is None:
                break
            if d.barrier is not None and d.attempts == 0:
                try:
                    d.barrier.wait(2.0)
                except threading.BrokenBarrierError:
                    pass
            t0 = time.monotonic()
            if d.first_start is None:
                d.first_start = t0
            d.attempts += 1
            status = word = None
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.h.http_port,
                                                      timeout=self.opts.http_timeout)
                status, word, close = self._post(conn, d.body)
                if close:
                    conn.close()
                    conn = None
            except Exception as exc:  # noqa: BLE001 - a failed delivery; Paddle retries
                word = type(exc).__name__
                if conn is not None:
                    conn.close()
                conn = None
            t1 = time.monotonic()
            ok = status is not None and 200 <= status < 300
            if d.attempts == 1:
                d.spans.append((t0, t1))
            with st.lock:
                st.requests += 1
                d.event.deliveries += 1
                if d.attempts > 1:
                    st.retries += 1
                if ok:
                    st.ok[word] += 1
                    st.ok_spans.append((t0, t1))
                    st.ok_ends.append(t1)
                    if word == "stored":
                        d.event.stored_answers += 1
                    if not d.event.acked:
                        d.event.acked = True
                        st.acked_at.append(t1)
                else:
                    key = "%s %s" % (status, word) if status else "conn %s" % word
                    st.non2xx[key] += 1
                    st.fail_spans.append((t0, t1, key))
            if ok:
                d.done = "acked"
                sched.finish(d)
            elif d.attempts >= self.opts.max_attempts or t1 - d.first_start >= self.opts.max_age:
                d.done = "gave_up"
                with st.lock:
                    st.gave_up.append((d.event.event_id, d.kind, d.attempts))
                sched.finish(d)
            else:
                sched.again(d, t1 + self._backoff(d.attempts))
        if conn is not None:
            conn.close()


# --------------------------------------------------------------------------
# The fault injector
# --------------------------------------------------------------------------

class Injector(threading.Thread):
    def __init__(self, faults, load, opts, total_events, deadline):
        super().__init__(name="faults", daemon=True)
        self.faults = faults
        self.load = load
        self.opts = opts
        self.total_events = total_events
        self.deadline = deadline
        self.records = []
        self.recovery = {}         # index -> seconds from fault end to the first 2xx sent after it
        self.unrecovered = []      # indexes of faults after which no 2xx came for 30 s
        self.stop = threading.Event()
        self.rng = random.Random(opts.seed ^ 0xfa17)

    def _kinds(self):
        while True:
            cycle = list(self.opts.kinds)
            self.rng.shuffle(cycle)
            yield from cycle

    def _may_go_on(self):
        tail = self.opts.tail * self.load.sched.total
        return (not self.stop.is_set() and time.monotonic() < self.deadline
                and len(self.records) < self.opts.max_faults
                and self.load.sched.fresh_left() > tail and not self.load.finished())

    def run(self):
        if not self.opts.kinds:
            return
        warm = max(1, int(self.opts.warmup * self.total_events))
        while not self.stop.is_set() and len(self.load.stats.acked_at) < warm:
            if self.load.finished() or time.monotonic() > self.deadline:
                return
            time.sleep(0.05)
        kinds = self._kinds()
        while self._may_go_on():
            rec = self.faults.inject(next(kinds))
            self.records.append(rec)
            # One fault at a time: wait for the first 2xx sent after this one ended.
            limit = time.monotonic() + 30
            while not self.stop.is_set():
                t = self.load.stats.first_ok_after(rec.ended)
                if t is not None:
                    self.recovery[len(self.records) - 1] = t - rec.ended
                    break
                if self.load.finished():
                    break
                if time.monotonic() >= limit:
                    self.unrecovered.append(len(self.records) - 1)
                    break
                time.sleep(0.02)
            self.stop.wait(self.rng.uniform(*self.opts.fault_gap))


# --------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------

def _int(v):
    return None if v is None else int(v)


def _ts(col):
    return ts_text(col) + " AS " + col.split(".")[-1]


class Checker:
    def __init__(self, h, events):
        self.h = h
        self.events = events
        self.failures = []
        self.figures = collections.OrderedDict()

    def fail(self, msg):
        self.failures.append(msg)

    def events_stored_once(self):
        h = self.h
        rows = h.sql("SELECT event_id, count(*), min(event_type), min(%s), "
                     "count(projection_error) FROM paddle.payment_events GROUP BY event_id"
                     % ts_text("occurred_at"))
        stored = {r[0]: r for r in rows}
        by_id = {e.event_id: e for e in self.events}
        twice = [r[0] for r in rows if r[1] != "1"]
        missing = [e for e in self.events if e.event_id not in stored]
        extra = [k for k in stored if k not in by_id]
        acked_missing = [e.event_id for e in missing if e.acked]
        wrong = [k for k, r in stored.items() if k in by_id and
                 (r[2] != by_id[k].event_type or r[3] != by_id[k].occurred_at)]
        proj_err = int(h.sql_value("SELECT count(*) FROM paddle.payment_events "
                                   "WHERE projection_error IS NOT NULL"))
        stored_twice = [e.event_id for e in self.events if e.stored_answers > 1]
        self.figures["events stored"] = "%d of %d (missing %d, extra %d, more than once %d)" % (
            len(stored) - len(extra), len(self.events), len(missing), len(extra), len(twice))
        self.figures["acked but not stored"] = len(acked_missing)
        self.figures["events answered \"stored\" twice"] = len(stored_twice)
        self.figures["projection errors"] = proj_err
        if acked_missing:
            self.fail("%d acknowledged events are not stored: %s" % (len(acked_missing), acked_missing[:5]))
        if missing:
            self.fail("%d events are not stored (%d of them acknowledged): %s" % (
                len(missing), len(acked_missing), [e.event_id for e in missing[:5]]))
        if twice:
            self.fail("events stored more than once: %s" % twice[:5])
        if extra:
            self.fail("%d unexpected events in payment_events: %s" % (len(extra), extra[:5]))
        if wrong:
            self.fail("%d events stored with another type/occurred_at: %s" % (len(wrong), wrong[:5]))
        if stored_twice:
            self.fail("%d events answered \"stored\" more than once: %s" % (len(stored_twice), stored_twice[:5]))
        if proj_err:
            errs = h.sql("SELECT event_id, projection_error FROM paddle.payment_events "
                         "WHERE projection_error IS NOT NULL LIMIT 5")
            self.fail("%d events have a projection_error: %s" % (proj_err, errs))

    def newest(self, kind):
        best = {}
        for e in self.events:
            if e.kind == kind:
                cur = best.get(e.entity_id)
                if cur is None or (e.occurred_at, e.event_id) > (cur.occurred_at, cur.event_id):
                    best[e.entity_id] = e
        return best

    def _compare(self, kind, table, rows, items, item_key):
        want = self.newest(kind)
        got = {r["id"]: r for r in rows}
        bad = []
        for eid, ev in want.items():
            r = got.get(eid)
            if r is None:
                bad.append((eid, "row missing", ev.event_id))
                continue
            exp = dict(ev.expect, occurred_at=ev.occurred_at, event_id=ev.event_id)
            for k, v in exp.items():
                have = r.get(k)
                if k == "items":   # NULLs may be anywhere in a broken row: sort as text
                    have, v = sorted(items.get(eid, []), key=repr), sorted(v, key=repr)
                if have != v:
                    bad.append((eid, k, "want %r got %r" % (v, have)))
        extra = set(got) - set(want)
        self.figures["%s rows = newest snapshot" % kind] = "%d of %d" % (
            len(want) - len({b[0] for b in bad}), len(want))
        if bad:
            self.fail("%d %s mismatches (%s), e.g. %s" % (len(bad), table, len({b[0] for b in bad}), bad[:4]))
        if extra:
            self.fail("%d unexpected rows in %s" % (len(extra), table))

    def state(self):
        h = self.h
        subs = h.sql_json(
            "SELECT id, status, customer_id, currency_code, billing_cycle_interval, billing_cycle_frequency, "
            "%s, %s, %s, scheduled_change_action, %s, custom_data, transaction_id, %s, %s, event_id "
            "FROM paddle.subscriptions" % tuple(_ts(c) for c in (
                "next_billed_at", "paused_at", "canceled_at", "scheduled_change_effective_at",
                "updated_at", "occurred_at")))
        items = collections.defaultdict(list)
        for r in h.sql("SELECT subscription_id, price_id, quantity, status, unit_price_amount::text "
                       "FROM paddle.subscription_items"):
            items[r[0]].append([r[1], _int(r[2]), r[3], r[4]])
        self._compare("subscription", "paddle.subscriptions", subs, items, "price")

        txns = h.sql_json(
            "SELECT id, status, customer_id, subscription_id, currency_code, origin, %s, subtotal::text, "
            "tax::text, grand_total::text, fee::text, earnings::text, payment_attempts, last_payment_status, "
            "last_payment_error_code, %s, event_id FROM paddle.transactions"
            % (_ts("billed_at"), _ts("occurred_at")))
        items = collections.defaultdict(list)
        for r in h.sql("SELECT transaction_id, position, id, price_id, quantity, total::text "
                       "FROM paddle.transaction_items"):
            items[r[0]].append([_int(r[1]), r[2], r[3], _int(r[4]), r[5]])
        self._compare("transaction", "paddle.transactions", txns, items, "position")

        custs = h.sql_json("SELECT id, name, email, status, marketing_consent, %s, %s, event_id "
                           "FROM paddle.customers" % (_ts("updated_at"), _ts("occurred_at")))
        self._compare("customer", "paddle.customers", custs, {}, None)

        adjs = h.sql_json("SELECT id, status, action, transaction_id, total::text, %s, event_id "
                          "FROM paddle.adjustments" % _ts("occurred_at"))
        items = collections.defaultdict(list)
        for r in h.sql("SELECT adjustment_id, position, id, amount::text FROM paddle.adjustment_items"):
            items[r[0]].append([_int(r[1]), r[2], r[3]])
        self._compare("adjustment", "paddle.adjustments", adjs, items, "position")

    def orphans(self):
        q = []
        for child, parent, key in (("subscription_items", "subscriptions", "subscription_id"),
                                   ("transaction_items", "transactions", "transaction_id"),
                                   ("adjustment_items", "adjustments", "adjustment_id")):
            # Item rows were written by the snapshot items_event_id names (later ones with equal items
            # leave them) ...
            q.append("SELECT '%s', count(*) FROM paddle.%s i LEFT JOIN paddle.%s p ON p.id = i.%s "
                     "LEFT JOIN paddle.payment_events e ON e.event_id = p.items_event_id "
                     "WHERE p.id IS NULL OR p.items_event_id IS DISTINCT FROM i.event_id "
                     "OR e.occurred_at IS DISTINCT FROM i.occurred_at" % (child, child, parent, key))
        # ... which carried exactly the items of the snapshot the parent holds.
        q.append("SELECT 'parents whose items came from other data', count(*) FROM (%s) AS m"
                 % harness.ITEMS_FROM_OTHER_DATA)
        rows = self.h.sql(" UNION ALL ".join(q))
        total = sum(int(r[1]) for r in rows)
        self.figures["orphan or mismatched item rows"] = total
        if total:
            self.fail("orphan or mismatched item rows (parent missing, or written from other items "
                      "than the parent's snapshot has): %s" % rows)


def log_counts(h):
    """What the component logs say about the run."""
    def read(path):
        try:
            with open(path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""
    serve = read(h.serve_log)
    pg = read(h.pg_log)
    nginx = read(os.path.join(h.nginx_dir, "error.log"))
    exited = re.findall(r"event=worker_exited worker=(\d+) (signal|status)=(\d+)", serve)
    return {
        "worker_exits": exited,
        "serve": collections.Counter(re.findall(r"event=(db_\w+|accept_\w+|fork_failed)", serve)),
        "db_error_reasons": collections.Counter(
            re.sub(r"\d+", "N", m)[:90] for m in re.findall(r"event=db_error outcome=\w+ reason=\"([^\"]*)", serve)),
        "pg_recoveries": len(re.findall(r"automatic recovery in progress", pg)),
        "nginx_upstream_errors": len(re.findall(r"\[error\].*upstream", nginx)),
    }


# --------------------------------------------------------------------------
# One run
# --------------------------------------------------------------------------

class Result:
    def __init__(self):
        self.failures = []
        self.warnings = []
        self.figures = collections.OrderedDict()
        self.faults = []
        self.report = ""

    @property
    def ok(self):
        return not self.failures


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else 0


def _by_entity(events):
    g = collections.defaultdict(list)
    for e in events:
        if e.kind != "other":
            g[(e.kind, e.entity_id)].append(e)
    return g


def _inverted(ents, first_sent):
    """True if the entity's snapshots were first sent in another order than occurred_at."""
    seq = [first_sent[e.event_id] for e in sorted(ents, key=lambda e: (e.occurred_at, e.event_id))]
    return seq != sorted(seq)


def _overlap(a, b):
    """True if the first attempts of two deliveries were in flight at the same time."""
    return bool(a.spans and b.spans and a.spans[0][0] < b.spans[0][1] and b.spans[0][0] < a.spans[0][1])


class Run:
    """One chaos run: plan + stack, storm (load and faults), health, checks,
    figures.  run() below is the entry point."""

    def __init__(self, opts, out):
        self.opts = opts
        self.out = out
        self.res = Result()
        self.t_begin = time.monotonic()
        self.deadline = self.t_begin + opts.max_seconds
        self.load_deadline = self.deadline - opts.reserve     # then the checks
        self.H = ChaosHarness(workers=opts.workers, async_commit=opts.async_commit, keep_tmp=opts.keep)
        self.faults = None

    def say(self, msg):
        if not self.opts.quiet:
            self.out.write(msg + "\n")
            self.out.flush()

    def prepare(self):
        """Builds the plan while the stack starts (the stack from this thread,
        so that its processes die with us)."""
        opts, plan = self.opts, {}

        def make_plan():
            try:
                rng = random.Random(opts.seed)
                plan["events"], plan["entities"] = build_plan(opts.events, rng, opts.tie_rate)
                plan["deliveries"] = build_deliveries(plan["events"], rng, opts.dup_rate)
                plan["seconds"] = time.monotonic() - self.t_begin
            except BaseException as exc:  # noqa: BLE001 - re-raised below
                plan["error"] = exc

        self.say("chaos: seed %d, %d events, %d threads, %d workers, faults %s"
                 % (opts.seed, opts.events, opts.threads, opts.workers, ",".join(opts.kinds)))
        planner = threading.Thread(target=make_plan, name="plan", daemon=True)
        planner.start()
        self.H.start()
        planner.join()
        if "error" in plan:
            raise plan["error"]
        self.events, self.entity_counts, self.deliveries = plan["events"], plan["entities"], plan["deliveries"]
        self.dup_kinds = collections.Counter(d.kind for d in self.deliveries if d.kind != "original")
        self.say("plan: %d events over %s; %d deliveries (%d duplicates) built in %.1fs" % (
            len(self.events), ", ".join("%d %ss" % (v, k) for k, v in sorted(self.entity_counts.items())),
            len(self.deliveries), sum(self.dup_kinds.values()), plan["seconds"]))
        self.ep = self.H.add_endpoint(name="chaos")
        self.serve_pid = self.H.serve_pid()
        self.faults = Faults(self.H, random.Random(opts.seed ^ 0xbad), block_seconds=opts.block_seconds)
        self.say("stack up in %.1fs (%s)" % (time.monotonic() - self.t_begin, self.H.tmpdir))

    def storm(self):
        """The load, with the injector running beside it until the tail."""
        self.load = load = Load(self.H, self.ep, self.deliveries, self.opts)
        self.inj = inj = Injector(self.faults, load, self.opts, len(self.events),
                                  self.load_deadline - self.opts.reserve)
        load.start()
        inj.start()
        last = time.monotonic()
        while not load.finished() and time.monotonic() < self.load_deadline:
            time.sleep(0.25)
            if time.monotonic() - last >= 10:
                last = time.monotonic()
                self.say("  +%5.1fs acked %d/%d, requests %d, faults %d, fresh left %d" % (
                    last - load.t_start, len(load.stats.acked_at), len(self.events), load.stats.requests,
                    len(inj.records), load.sched.fresh_left()))
        inj.stop.set()
        inj.join(60)
        if not load.join(self.load_deadline):
            self.res.failures.append("the load did not finish within the time limit")
        self.faults.repair()

    def health(self):
        """serve and all its workers are back without any manual restart."""
        H, t0 = self.H, time.monotonic()
        self.healthy = "ok"
        try:
            if H.serve_pid() != self.serve_pid or not harness.pid_alive(self.serve_pid):
                raise AssertionError("serve supervisor %d is gone" % self.serve_pid)
            H.wait_workers(self.opts.workers, timeout=30)
            for i in range(3 * self.opts.workers):
                r = H.get("/paddle/healthz", timeout=10)
                if r.status != 200:
                    raise AssertionError("healthz #%d answered %s" % (i, r))
        except Exception as exc:  # noqa: BLE001
            self.healthy = str(exc)
            self.res.failures.append("not healthy after the faults: %s" % exc)
        self.healthy_after = time.monotonic() - t0

    def judge(self):
        """The invariants in the database, then what the client and logs saw."""
        res, st, inj = self.res, self.load.stats, self.inj
        if self.opts.before_check:
            self.opts.before_check(self.H)
        self.ck = ck = Checker(self.H, self.events)
        ck.events_stored_once()
        ck.state()
        ck.orphans()
        res.failures.extend(ck.failures)
        if st.gave_up:
            res.failures.append("%d deliveries gave up without a 2xx: %s" % (len(st.gave_up), st.gave_up[:5]))
        for k, v in st.non2xx.items():
            if k.startswith(("503 ", "502 ", "conn ")):
                continue
            if k.startswith("4"):
                res.failures.append("a signed, well-formed event was refused: %s x%d" % (k, v))
            else:
                res.warnings.append("unexpected answer under faults: %s x%d" % (k, v))
        self.logs = logs = log_counts(self.H)
        killed = {int(m.group(1)) for r in inj.records if r.kind == "worker_kill"
                  for m in [re.match(r"worker (\d+)", r.detail)] if m}
        self.died = [(int(p), how, int(n)) for p, how, n in logs["worker_exits"]]
        self.strange = [d for d in self.died if d[0] not in killed]
        if self.strange:
            res.failures.append("workers died that were not killed: %s" % self.strange[:5])
        crashes = sum(1 for r in inj.records if r.kind in ("pg_crash", "pg_immediate") and not r.error)
        if logs["pg_recoveries"] < crashes:
            res.warnings.append("postgres log shows %d crash recoveries for %d crashes"
                                % (logs["pg_recoveries"], crashes))
        for r in inj.records:
            if r.error:
                res.failures.append("fault %s could not be injected: %s" % (r.kind, r.error))
        if len(inj.records) < self.opts.min_faults:
            res.failures.append("only %d faults injected (wanted %d): the load ended too soon"
                                % (len(inj.records), self.opts.min_faults))
        if inj.unrecovered:
            res.failures.append("no 2xx within 30 s after fault(s) %s" % [
                "%d %s" % (i + 1, inj.records[i].kind) for i in inj.unrecovered])

    def figures(self):
        events, deliveries, st, inj, load = self.events, self.deliveries, self.load.stats, self.inj, self.load
        f = self.res.figures
        dur = (load.t_end or time.monotonic()) - load.t_start
        f["seed"] = self.opts.seed
        f["events"] = "%d (%s)" % (len(events), ", ".join("%s %d" % kv for kv in sorted(
            collections.Counter(e.kind for e in events).items())))
        f["entities"] = ", ".join("%d %ss" % (v, k) for k, v in sorted(self.entity_counts.items()))
        first_sent = {d.event.event_id: i for i, d in enumerate(deliveries) if d.kind == "original"}
        f["entities delivered out of order"] = sum(
            1 for ents in _by_entity(events).values() if _inverted(ents, first_sent))
        f["deliveries"] = "%d planned (%d originals + %d duplicates: %s)" % (
            len(deliveries), len(events), sum(self.dup_kinds.values()),
            ", ".join("%s %d" % kv for kv in sorted(self.dup_kinds.items())))
        originals = {d.event.event_id: d for d in deliveries if d.kind == "original"}
        f["concurrent duplicates in flight together"] = "%d of %d" % (
            sum(1 for d in deliveries if d.kind == "dup_concurrent" and _overlap(d, originals[d.event.event_id])),
            self.dup_kinds["dup_concurrent"])
        f["HTTP requests"] = "%d (first attempts %d, retries %d)" % (
            st.requests, st.requests - st.retries, st.retries)
        f["2xx"] = "%d (%s)" % (sum(st.ok.values()), ", ".join("%s %d" % kv for kv in sorted(st.ok.items())))
        f["events whose \"stored\" answer was lost"] = "%d (committed, answer cut off; the retry said duplicate)" % (
            sum(1 for e in events if e.acked and e.stored_answers == 0))
        f["non-2xx"] = "%d: %s" % (sum(st.non2xx.values()), ", ".join(
            "%s x%d" % kv for kv in st.non2xx.most_common())) if st.non2xx else "0"
        attempts = [d.attempts for d in deliveries if d.attempts]
        f["attempts per delivery"] = "max %d, p99 %d, deliveries retried %d" % (
            max(attempts or [0]), pct(attempts, 0.99), sum(1 for a in attempts if a > 1))
        f["faults"] = "%d: %s" % (len(inj.records), ", ".join("%s %d" % kv for kv in sorted(
            collections.Counter(r.kind for r in inj.records).items())))
        by_kind = collections.defaultdict(list)
        for i, secs in inj.recovery.items():
            by_kind[inj.records[i].kind].append(secs)
        f["recovery (fault end -> first 2xx sent after it)"] = "; ".join(
            "%s min %.2fs median %.2fs max %.2fs" % (k, min(v), statistics.median(v), max(v))
            for k, v in sorted(by_kind.items()))
        f["load duration"] = "%.1fs" % dur
        per_second = collections.Counter(int(t - load.t_start) for t in st.acked_at)
        f["throughput"] = "%.0f events/s acknowledged (best second %d, worst second %d), %.0f requests/s" % (
            len(st.acked_at) / dur if dur else 0, max(per_second.values() or [0]),
            min(per_second.get(i, 0) for i in range(max(1, int(dur)))), st.requests / dur if dur else 0)
        f["healthy after the load"] = "%s (workers %d/%d, serve pid %s same) in %.2fs" % (
            self.healthy, len(self.H.worker_pids()), self.opts.workers, self.serve_pid, self.healthy_after)
        f.update(self.ck.figures)
        f["worker exits logged"] = "%d (all killed by the injector: %s)" % (len(self.died), not self.strange)
        f["postgres crash recoveries logged"] = self.logs["pg_recoveries"]
        f["serve log"] = ", ".join("%s %d" % kv for kv in sorted(self.logs["serve"].items()))
        f["db_error reasons"] = "; ".join("%s x%d" % kv for kv in self.logs["db_error_reasons"].most_common(6))
        f["nginx upstream errors logged"] = self.logs["nginx_upstream_errors"]
        f["run time"] = "%.1fs" % (time.monotonic() - self.t_begin)

    def report(self):
        res, inj, st = self.res, self.inj, self.load.stats
        lines = ["", "==== chaos figures ===="]
        lines += ["%-48s %s" % (k + ":", v) for k, v in res.figures.items()]
        lines.append("---- faults (t from load start; recovery = fault end -> first 2xx sent after it)")
        for i, r in enumerate(inj.records):
            errs = sum(1 for s, e, k in st.fail_spans if r.started <= s <= r.ended + inj.recovery.get(i, 0))
            lines.append("  %2d +%6.1fs %-13s %5.2fs  recovery %s  non-2xx %4d  %s%s" % (
                i + 1, r.started - self.load.t_start, r.kind, r.ended - r.started,
                "%.2fs" % inj.recovery[i] if i in inj.recovery else "none ",
                errs, r.detail, "  ERROR " + r.error if r.error else ""))
        lines += ["warning: " + w for w in res.warnings]
        lines += ["FAIL: " + fl for fl in res.failures]
        lines.append("RESULT: %s" % ("PASS" if res.ok else "FAIL (%d problems)" % len(res.failures)))
        if not res.ok:
            self.H.keep_tmp = True
            lines.append(self.H.log_report(lines=30))
        res.report = "\n".join(lines)
        res.faults = [r.as_dict() for r in inj.records]


def run(opts, out=sys.stdout):
    """One chaos run; returns a Result (failures, warnings, figures, report)."""
    r = Run(opts, out)
    try:
        r.prepare()
        r.storm()
        r.health()
        r.judge()
        r.figures()
        r.report()
        r.say(r.res.report)
    except Exception as exc:  # noqa: BLE001 - reported as a failed run
        if r.faults is None:
            raise
        r.H.keep_tmp = True
        r.res.failures.append("chaos run crashed: %r" % exc)
        r.res.report = "chaos run crashed: %r\n%s" % (exc, r.H.log_report(lines=30))
        r.say(r.res.report)
    finally:
        if r.faults is not None:
            r.faults.repair()      # never leave a frozen postgres behind
        r.H.stop()
    return r.res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--short", action="store_true",
                    help="the settings of tests/test_chaos.py (other options still apply)")
    ap.add_argument("--events", type=int, default=20000)
    ap.add_argument("--threads", type=int, default=16)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--seed", type=int)
    ap.add_argument("--max-seconds", type=float, default=540)
    ap.add_argument("--max-faults", type=int, default=60)
    ap.add_argument("--min-faults", type=int, default=0)
    ap.add_argument("--kinds", default=",".join(FAULT_KINDS), help="fault kinds, comma-separated")
    ap.add_argument("--rate", type=float, help="cap on first deliveries per second")
    ap.add_argument("--dup-rate", type=float, default=0.10)
    ap.add_argument("--async-commit", action="store_true",
                    help="keep the harness's synchronous_commit=off (shows what a crash then loses)")
    ap.add_argument("--json", metavar="FILE", help="write figures and failures as JSON")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args(argv)
    kinds = tuple(k for k in args.kinds.split(",") if k)
    bad = [k for k in kinds if k not in FAULT_KINDS]
    if bad:
        ap.error("unknown fault kinds %s (known: %s)" % (bad, ", ".join(FAULT_KINDS)))

    def on_term(signum, frame):
        raise KeyboardInterrupt("SIGTERM")
    signal.signal(signal.SIGTERM, on_term)

    given = {k: v for k, v in (("events", args.events), ("threads", args.threads),
                               ("workers", args.workers), ("max_seconds", args.max_seconds),
                               ("max_faults", args.max_faults), ("min_faults", args.min_faults),
                               ("rate", args.rate), ("dup_rate", args.dup_rate))
             if v != ap.get_default(k)}
    common = dict(seed=args.seed, kinds=kinds, async_commit=args.async_commit, keep=args.keep)
    opts = short_options(**given, **common) if args.short else Options(
        **dict({k: getattr(args, k) for k in ("events", "threads", "workers", "max_seconds", "max_faults",
                                              "min_faults", "rate", "dup_rate")}, **common))
    try:
        res = run(opts)
    except KeyboardInterrupt as exc:
        sys.stderr.write("chaos: interrupted (%s); everything started was stopped\n" % (exc or "Ctrl-C"))
        return 130
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"ok": res.ok, "failures": res.failures, "warnings": res.warnings,
                       "figures": res.figures, "faults": getattr(res, "faults", [])}, f, indent=2,
                      default=str)
    return 0 if res.ok else 1


if __name__ == "__main__":
    sys.exit(main())
