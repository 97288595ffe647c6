"""The chaos test's checks against the database and the logs after the load:
exactly once, acked means stored, state rows equal the newest snapshots
(tests/chaos.py)."""

import collections
import os
import re

import harness
from harness import ts_text


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

    def claimed_once(self, consumer, table):
        """Every stored event was taken from the consumer's queue (registered before the load) and recorded
        exactly once, by claims that ran during the faults and a drain after them: queue rows are written in
        the event's transaction, and a claim deletes them in the transaction that records them."""
        r = self.h.sql("SELECT (SELECT count(*) FROM paddle.payment_events), (SELECT count(*) FROM %s), "
                       "(SELECT count(DISTINCT event_id) FROM %s), "
                       "(SELECT count(*) FROM paddle.payment_events e WHERE NOT EXISTS "
                       "(SELECT FROM %s c WHERE c.event_id = e.event_id)), "
                       "(SELECT count(*) FROM paddle.consumer_queue WHERE consumer = %s)"
                       % (table, table, table, self.h.lit(consumer)))[0]
        stored, recorded, distinct, missing, left = (int(v) for v in r)
        self.figures["stored events claimed by a consumer"] = "%d of %d (twice %d, left in the queue %d)" % (
            stored - missing, stored, recorded - distinct, left)
        if missing or recorded != distinct or distinct != stored or left:
            self.fail("consumer queue: %d stored events never claimed, %d claimed more than once, %d claimed "
                      "that are not stored, %d left in the queue" % (
                          missing, recorded - distinct, distinct - (stored - missing), left))

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
            if kind == "subscription":
                # sent in subscription.created only: the row keeps that of the newest snapshot that had one
                sent = [e for e in self.events if e.kind == kind and e.entity_id == eid
                        and e.expect["transaction_id"] is not None]
                exp["transaction_id"] = (max(sent, key=lambda e: (e.occurred_at, e.event_id)).expect["transaction_id"]
                                         if sent else None)
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
