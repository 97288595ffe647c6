"""Delivery semantics: duplicates, out-of-order snapshots, concurrency, size.

Paddle delivers at least once, possibly concurrently and out of order; every
retry carries the same event_id.  These tests prove that each event is stored
exactly once and that a state row always holds the newest snapshot.
"""

import copy
import datetime
import http.client
import json
import random
import threading
import time

import harness
from harness import (Harness, HarnessTestCase, make_event, paddle_id, py_sign, rfc3339,
                     sample_subscription, sample_transaction)

H = Harness(workers=4)


def setUpModule():
    H.start()


def tearDownModule():
    H.stop()


def at(base, seconds):
    return rfc3339(base + datetime.timedelta(seconds=seconds))


BASE = datetime.datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=datetime.timezone.utc)


def items_count(table, key_column, entity_id):
    return int(H.sql_value("SELECT count(*) FROM %s WHERE %s = %s"
                           % (table, key_column, H.lit(entity_id))))


class Duplicates(HarnessTestCase):
    harness = H

    @classmethod
    def setUpClass(cls):
        cls.ep = H.add_endpoint()

    def test_redelivery_is_duplicate_and_changes_nothing(self):
        body = make_event("subscription.created", sample_subscription())
        self.assertStored(H.post_event(self.ep, body))
        before = H.digest()
        for _ in range(3):
            self.assertDuplicate(H.post_event(self.ep, body))
        self.assertEqual(H.digest(), before)

    def test_replay_with_new_notification_id_and_ts_is_duplicate(self):
        env = make_event("subscription.created", sample_subscription(), as_dict=True)
        first = json.dumps(env).encode()
        self.assertStored(H.post_event(self.ep, first))
        row = H.event_row(env["event_id"])
        before = H.digest()
        env["notification_id"] = paddle_id("ntf")          # replays get a new notification id
        replay = json.dumps(env, indent=2).encode()         # and may differ in bytes
        self.assertDuplicate(H.post_event(self.ep, replay, ts=int(time.time()) - 60))
        self.assertEqual(H.digest(), before)
        self.assertEqual(H.event_row(env["event_id"])["notification_id"], row["notification_id"])

    def test_same_event_on_two_endpoints_is_stored_once(self):
        other = H.add_endpoint()
        body = make_event("customer.created", harness.sample_customer())
        self.assertStored(H.post_event(self.ep, body))
        self.assertDuplicate(H.post_event(other, body))
        eid = json.loads(body)["event_id"]
        self.assertEqual(H.sql_value("SELECT endpoint_id FROM paddle.payment_events WHERE event_id = %s"
                                     % H.lit(eid)), self.ep.id)

    def test_event_records_endpoint_environment(self):
        live = H.add_endpoint(environment="live")
        env = make_event("customer.created", harness.sample_customer(), as_dict=True)
        self.assertStored(H.post_event(live, json.dumps(env).encode()))
        row = H.event_row(env["event_id"])
        self.assertEqual(row["environment"], "live")
        self.assertEqual(row["endpoint_id"], live.id)


class SnapshotCase(HarnessTestCase):
    """Posts snapshots at BASE + seconds to an endpoint of its own."""
    harness = H

    @classmethod
    def setUpClass(cls):
        cls.ep = H.add_endpoint()

    def post(self, event_type, data, seconds):
        env = make_event(event_type, data, occurred_at=at(BASE, seconds), as_dict=True)
        self.assertStored(H.post_event(self.ep, json.dumps(env).encode()), event_type)
        return env


class OutOfOrder(SnapshotCase):

    def test_older_created_after_newer_paused_keeps_paused(self):
        sid, cid = paddle_id("sub"), paddle_id("ctm")
        newer = self.post("subscription.paused",
                          sample_subscription(sid, "paused", cid, items=((500, 1),)), 3600)
        older = self.post("subscription.created",
                          sample_subscription(sid, "active", cid, items=((500, 1), (900, 2))), 0)
        row = H.state_row("paddle.subscriptions", sid)
        self.assertIsNotNone(row, "no subscriptions row")
        self.assertEqual(row["status"], "paused")
        self.assertEqual(row["event_id"], newer["event_id"])
        self.assertEqual(row["occurred_at_text"], newer["occurred_at"])
        self.assertEqual(row["customer_id"], cid)
        # Both events are kept in the log.
        self.assertIsNotNone(H.event_row(older["event_id"]))
        self.assertIsNotNone(H.event_row(newer["event_id"]))
        if "paddle.subscription_items" in H.existing_tables():
            self.assertEqual(items_count("paddle.subscription_items", "subscription_id", sid), 1,
                             "items of the older snapshot replaced the newer ones")

    def test_updated_before_created_lands_and_stays(self):
        sid, cid = paddle_id("sub"), paddle_id("ctm")
        upd = self.post("subscription.updated", sample_subscription(sid, "past_due", cid), 120)
        row = H.state_row("paddle.subscriptions", sid)
        self.assertIsNotNone(row, ".updated without a prior .created was not projected")
        self.assertEqual(row["status"], "past_due")
        self.post("subscription.created", sample_subscription(sid, "active", cid), 0)
        row = H.state_row("paddle.subscriptions", sid)
        self.assertEqual(row["status"], "past_due")
        self.assertEqual(row["event_id"], upd["event_id"])

    def test_newer_snapshot_replaces_older(self):
        sid, cid = paddle_id("sub"), paddle_id("ctm")
        self.post("subscription.created",
                  sample_subscription(sid, "active", cid, items=((500, 1), (900, 2))), 0)
        newer = self.post("subscription.canceled",
                          sample_subscription(sid, "canceled", cid, items=((500, 1),)), 10)
        row = H.state_row("paddle.subscriptions", sid)
        self.assertEqual(row["status"], "canceled")
        self.assertEqual(row["event_id"], newer["event_id"])
        if "paddle.subscription_items" in H.existing_tables():
            self.assertEqual(items_count("paddle.subscription_items", "subscription_id", sid), 1)

    def test_transaction_updated_before_created_keeps_newer(self):
        tid, cid = paddle_id("txn"), paddle_id("ctm")
        newer = self.post("transaction.completed",
                          sample_transaction(tid, "completed", cid, items=((3000, 2),)), 600)
        self.post("transaction.created", sample_transaction(tid, "draft", None, items=((3000, 1),)), 0)
        row = H.state_row("paddle.transactions", tid)
        self.assertIsNotNone(row, "no transactions row")
        self.assertEqual(row["status"], "completed")
        self.assertEqual(row["customer_id"], cid)
        self.assertEqual(row["event_id"], newer["event_id"])
        self.assertEqual(row["occurred_at_text"], newer["occurred_at"])

    def test_adjustment_approved_before_created_stays_approved(self):
        aid, tid = paddle_id("adj"), paddle_id("txn")
        newer = self.post("adjustment.updated",
                          harness.sample_adjustment(aid, "approved", tid, amount=2200), 300)
        self.post("adjustment.created",
                  harness.sample_adjustment(aid, "pending_approval", tid, amount=1100), 0)
        row = H.state_row("paddle.adjustments", aid)
        self.assertIsNotNone(row, "no adjustments row")
        self.assertEqual(row["status"], "approved")
        self.assertEqual(row["event_id"], newer["event_id"])
        self.assertEqual(str(row["total"]), "2200")
        self.assertEqual(row["transaction_id"], tid)

    def test_microsecond_newer_snapshot_wins(self):
        sid, cid = paddle_id("sub"), paddle_id("ctm")
        base = datetime.datetime(2024, 6, 1, 0, 0, 0, 1, tzinfo=datetime.timezone.utc)
        e2 = make_event("subscription.paused", sample_subscription(sid, "paused", cid),
                        occurred_at=rfc3339(base + datetime.timedelta(microseconds=1)), as_dict=True)
        e1 = make_event("subscription.activated", sample_subscription(sid, "active", cid),
                        occurred_at=rfc3339(base), as_dict=True)
        for e in (e2, e1):
            self.assertStored(H.post_event(self.ep, json.dumps(e).encode()))
        row = H.state_row("paddle.subscriptions", sid)
        self.assertEqual(row["status"], "paused", "a 1 microsecond newer snapshot lost")
        self.assertEqual(row["event_id"], e2["event_id"])



class UnchangedItems(SnapshotCase):
    """A newer snapshot with the same items updates the parent row only; other
    items, or a row written before items were tracked, rewrite the item rows."""

    def post(self, event_type, data, seconds):
        return super().post(event_type, data, seconds)["event_id"]

    def source(self, entity, entity_id):
        """items_event_id of the parent row: the snapshot that wrote its item rows."""
        return H.sql_value("SELECT items_event_id FROM paddle.%ss WHERE id = %s" % (entity, H.lit(entity_id)))

    def items(self, table, key_column, entity_id):
        return H.sql("SELECT event_id, ctid::text FROM %s WHERE %s = %s ORDER BY 2"
                     % (table, key_column, H.lit(entity_id)))

    def test_same_items_are_not_rewritten(self):
        tid, cid = paddle_id("txn"), paddle_id("ctm")
        data = sample_transaction(tid, "billed", cid, items=((3000, 2),))
        first = self.post("transaction.billed", data, 0)
        before = self.items("paddle.transaction_items", "transaction_id", tid)
        self.assertEqual([r[0] for r in before], [first])
        # Same items and line items in another key order: the same JSON value.
        data = json.loads(json.dumps(data, sort_keys=True))
        data["status"] = "paid"
        paid = self.post("transaction.paid", data, 10)
        row = H.state_row("paddle.transactions", tid)
        self.assertEqual((row["status"], row["event_id"]), ("paid", paid))
        self.assertEqual(self.source("transaction", tid), first)
        self.assertEqual(self.items("paddle.transaction_items", "transaction_id", tid), before,
                         "unchanged items were rewritten")

    def test_changed_quantity_is_rewritten(self):
        sid, cid = paddle_id("sub"), paddle_id("ctm")
        data = sample_subscription(sid, "active", cid, items=((500, 1),))
        self.post("subscription.created", data, 0)
        data = copy.deepcopy(data)
        data["items"][0]["quantity"] = 3
        upd = self.post("subscription.updated", data, 10)
        self.assertEqual(self.source("subscription", sid), upd)
        self.assertEqual(H.sql("SELECT event_id, quantity::text FROM paddle.subscription_items "
                               "WHERE subscription_id = %s" % H.lit(sid)), [(upd, "3")])

    def test_transaction_line_items_or_items_alone_changing_rewrites(self):
        tid, cid = paddle_id("txn"), paddle_id("ctm")
        data = sample_transaction(tid, "billed", cid, items=((3000, 2),))
        self.post("transaction.billed", data, 0)
        data = copy.deepcopy(data)
        data["details"]["line_items"][0]["tax_rate"] = "0.2"      # line_items only
        second = self.post("transaction.paid", data, 10)
        self.assertEqual(H.sql("SELECT event_id, tax_rate::text FROM paddle.transaction_items "
                               "WHERE transaction_id = %s" % H.lit(tid)), [(second, "0.2")])
        data = copy.deepcopy(data)
        data["items"][0]["price"]["unit_price"]["amount"] = "2999"  # items only
        third = self.post("transaction.completed", data, 20)
        self.assertEqual(H.sql("SELECT event_id, unit_price_amount::text FROM paddle.transaction_items "
                               "WHERE transaction_id = %s" % H.lit(tid)), [(third, "2999")])

    def test_late_older_snapshot_with_other_items_changes_nothing(self):
        sid, cid = paddle_id("sub"), paddle_id("ctm")
        newer = self.post("subscription.updated", sample_subscription(sid, "active", cid, items=((500, 1),)), 60)
        self.post("subscription.created",
                  sample_subscription(sid, "active", cid, items=((500, 1), (900, 2))), 0)
        self.assertEqual([r[0] for r in self.items("paddle.subscription_items", "subscription_id", sid)],
                         [newer])
        self.assertEqual(self.source("subscription", sid), newer)

    def test_rows_of_unknown_origin_get_their_items_rewritten(self):
        # As left by a version that did not record items: the next snapshot rewrites the items
        # even when they are the same, and removes them when it has none.
        aid, tid = paddle_id("adj"), paddle_id("txn")
        data = harness.sample_adjustment(aid, "pending_approval", tid, amount=1100)
        self.post("adjustment.created", data, 0)
        unknown = ("UPDATE paddle.adjustments SET items_digest = NULL, items_event_id = NULL WHERE id = %s"
                   % H.lit(aid))
        H.sql(unknown)
        data = copy.deepcopy(data)
        data["status"] = "approved"
        upd = self.post("adjustment.updated", data, 10)
        self.assertEqual(self.source("adjustment", aid), upd)
        self.assertEqual({r[0] for r in self.items("paddle.adjustment_items", "adjustment_id", aid)}, {upd})
        H.sql(unknown)
        del data["items"]
        self.post("adjustment.updated", data, 20)
        self.assertEqual(self.items("paddle.adjustment_items", "adjustment_id", aid), [])

    def test_absent_items_then_items(self):
        sid, cid = paddle_id("sub"), paddle_id("ctm")
        data = sample_subscription(sid, "active", cid, items=((500, 1),))
        items = data.pop("items")
        self.post("subscription.created", data, 0)
        self.post("subscription.activated", data, 5)
        self.assertEqual(self.items("paddle.subscription_items", "subscription_id", sid), [])
        data = dict(data, items=items)
        upd = self.post("subscription.updated", data, 10)
        self.assertEqual([r[0] for r in self.items("paddle.subscription_items", "subscription_id", sid)], [upd])

    def test_item_rows_come_from_the_items_of_the_stored_snapshot(self):
        # What the tests of this module left: the snapshot that wrote each parent's item rows carried
        # exactly the items of the snapshot the parent holds (the chaos test checks the same).
        self.assertEqual(H.sql(harness.ITEMS_FROM_OTHER_DATA), [])


class TimestampConverter(HarnessTestCase):
    """paddle.to_ts: Paddle's layout on its fast path, everything else on the
    general one; impossible dates are NULL, never an error."""
    harness = H

    CASES = [
        ("2024-04-12T10:18:47.635628Z", "2024-04-12 10:18:47.635628+00"),
        ("2024-02-28T23:59:59.999999Z", "2024-02-28 23:59:59.999999+00"),
        ("2024-02-29T00:00:00.000000Z", "2024-02-29 00:00:00+00"),
        ("2023-02-29T00:00:00.000000Z", None),
        ("2100-02-29T00:00:00.000000Z", None),
        ("2000-02-29T00:00:00.000000Z", "2000-02-29 00:00:00+00"),
        ("2024-04-31T00:00:00.000000Z", None),
        ("2024-01-31T12:00:00.000000Z", "2024-01-31 12:00:00+00"),
        ("0000-01-01T00:00:00.000000Z", None),
        ("2024-00-10T00:00:00.000000Z", None),
        ("2024-13-10T00:00:00.000000Z", None),
        ("2024-01-00T00:00:00.000000Z", None),
        ("2024-01-10T24:00:00.000000Z", None),
        ("2024-01-10T23:60:00.000000Z", None),
        ("2024-01-10T23:59:60.000000Z", None),
        ("2024-01-10T23:59:59.000000z", "2024-01-10 23:59:59+00"),
        ("2024-01-10 23:59:59.000000Z", "2024-01-10 23:59:59+00"),
        ("2024-01-10T23:59:59Z", "2024-01-10 23:59:59+00"),
        # digits past the microseconds are cut, not rounded: never the next second, or day
        ("2024-01-10T23:59:59.1234567Z", "2024-01-10 23:59:59.123456+00"),
        ("2024-01-31T23:59:59.999999700Z", "2024-01-31 23:59:59.999999+00"),
        ("2024-02-28T23:59:59.9999995+01:00", "2024-02-28 22:59:59.999999+00"),
        ("2024-01-10T23:59:59.000000+01:30", "2024-01-10 22:29:59+00"),
        ("2024-01-10T23:59:59.000000", None),
        ("\uff12024-01-10T23:59:59.000000Z", None),
        ("2024-01-10T23:59:59.000000Z ", None),
        ("2024-1-10T23:59:59.000000Z", None),
        ("", None),
    ]

    def test_cases(self):
        for text, expected in self.CASES:
            text = json.loads('"%s"' % text)
            with self.subTest(text=text):
                got = H.sql_value("SET TimeZone = 'UTC'; SELECT paddle.to_ts(%s)::text" % H.lit(text))
                self.assertEqual(got, expected)

def post_concurrently(bodies, endpoint, threads=8):
    """POST each body from its own thread, released together; return responses."""
    barrier = threading.Barrier(len(bodies))
    results = [None] * len(bodies)

    def worker(i, body):
        sig = py_sign(body, endpoint.secret)
        try:
            barrier.wait(10)
        except threading.BrokenBarrierError:
            pass
        try:
            results[i] = H.post_event(endpoint, body, signature=sig)
        except Exception as exc:  # noqa: BLE001 - reported by the test
            results[i] = exc
    ts = [threading.Thread(target=worker, args=(i, b)) for i, b in enumerate(bodies)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    return results


class Concurrency(HarnessTestCase):
    harness = H

    @classmethod
    def setUpClass(cls):
        cls.ep = H.add_endpoint()

    def test_concurrent_deliveries_of_one_event_store_exactly_once(self):
        for round_ in range(3):
            with self.subTest(round=round_):
                sid = paddle_id("sub")
                env = make_event("subscription.created", sample_subscription(sid), as_dict=True)
                body = json.dumps(env).encode()
                results = post_concurrently([body] * 8, self.ep)
                for r in results:
                    self.assertIsInstance(r, harness.Response, r)
                    self.assertEqual(r.status, 200, r)
                words = sorted(r.json().get("status") for r in results)
                self.assertEqual(words, ["duplicate"] * 7 + ["stored"], words)
                self.assertEqual(H.event_rows_with_id(env["event_id"]), 1)
                row = H.state_row("paddle.subscriptions", sid)
                self.assertIsNotNone(row)
                self.assertEqual(row["event_id"], env["event_id"])

    def test_concurrent_snapshots_of_one_entity_leave_the_newest(self):
        for round_ in range(3):
            with self.subTest(round=round_):
                sid, cid = paddle_id("sub"), paddle_id("ctm")
                statuses = ["active", "past_due", "paused", "active", "canceled", "paused",
                            "past_due", "active"]
                envs = [make_event("subscription.updated", sample_subscription(sid, st, cid),
                                   occurred_at=at(BASE, i * 7), as_dict=True)
                        for i, st in enumerate(statuses)]
                order = list(range(len(envs)))
                random.Random(round_).shuffle(order)
                results = post_concurrently([json.dumps(envs[i]).encode() for i in order], self.ep)
                for r in results:
                    self.assertIsInstance(r, harness.Response, r)
                    self.assertEqual(r.status, 200, r)
                    self.assertEqual(r.json().get("status"), "stored", r)
                row = H.state_row("paddle.subscriptions", sid)
                self.assertEqual(row["event_id"], envs[-1]["event_id"],
                                 "state holds %s, not the newest snapshot" % row["status"])
                self.assertEqual(row["status"], statuses[-1])


class BodySize(HarnessTestCase):
    harness = H

    @classmethod
    def setUpClass(cls):
        cls.ep = H.add_endpoint()

    def sized_event(self, size):
        env = make_event("subscription.created", {"id": paddle_id("sub"), "pad": ""}, as_dict=True)
        body = json.dumps(env, separators=(",", ":")).encode()
        env["data"]["pad"] = "x" * (size - len(body))
        body = json.dumps(env, separators=(",", ":")).encode()
        self.assertEqual(len(body), size)
        return env, body

    def test_body_of_exactly_1mib_is_stored(self):
        # nginx's client_max_body_size 1m and the worker's default --max-body
        # must agree: a body of exactly 1 MiB passes both.
        env, body = self.sized_event(1024 * 1024)
        self.assertStored(H.post_event(self.ep, body))
        self.assertEqual(len(H.event_row(env["event_id"])["payload"]["data"]["pad"]),
                         len(env["data"]["pad"]))

    def test_body_of_1mib_plus_one_is_413(self):
        env, body = self.sized_event(1024 * 1024 + 1)
        before = H.digest()
        sig = py_sign(body, self.ep.secret)
        raw = ("POST %s HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
               "Paddle-Signature: %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
               % (self.ep.path, sig, len(body))).encode() + body
        self.assertErrorResponse(H.raw_request(raw), 413, "body_too_large")
        self.assertEqual(H.digest(), before)

    def test_keepalive_connection_carries_several_events(self):
        conn = http.client.HTTPConnection("127.0.0.1", H.http_port, timeout=30)
        try:
            for _ in range(5):
                body = make_event("customer.created", harness.sample_customer())
                conn.request("POST", self.ep.path, body=body,
                             headers={"Paddle-Signature": py_sign(body, self.ep.secret),
                                      "Content-Type": "application/json"})
                r = harness._response_from(conn.getresponse())
                self.assertStored(r)
        finally:
            conn.close()


class Values(HarnessTestCase):
    """Envelope and snapshot values are kept exactly."""
    harness = H

    @classmethod
    def setUpClass(cls):
        cls.ep = H.add_endpoint()

    def deliver(self, env):
        self.assertStored(H.post_event(self.ep, json.dumps(env).encode()))
        return H.event_row(env["event_id"])

    def test_occurred_at_precision_and_offsets(self):
        cases = [
            ("2024-03-15T10:32:38.286848Z", "2024-03-15T10:32:38.286848Z"),
            ("2024-03-15T10:32:38Z", "2024-03-15T10:32:38.000000Z"),
            ("2024-03-15T10:32:38.1Z", "2024-03-15T10:32:38.100000Z"),
            ("2024-03-15T12:32:38.000001+02:00", "2024-03-15T10:32:38.000001Z"),
            ("2024-03-15T05:02:38.5-05:30", "2024-03-15T10:32:38.500000Z"),
        ]
        for sent, stored in cases:
            with self.subTest(occurred_at=sent):
                env = make_event("customer.created", harness.sample_customer(), occurred_at=sent,
                                 as_dict=True)
                row = self.deliver(env)
                self.assertEqual(row["occurred_at_text"], stored)
                self.assertEqual(row["payload"]["occurred_at"], sent)

    def test_snapshot_timestamps_with_0_to_9_fraction_digits_are_parsed(self):
        for stamp in ("2030-01-11T08:07:35Z", "2030-01-11T08:07:35.4Z", "2030-01-11T08:07:35.449Z",
                      "2030-01-11T08:07:35.449123Z", "2030-01-11T08:07:35.449123456Z"):
            with self.subTest(next_billed_at=stamp):
                data = sample_subscription()
                data["next_billed_at"] = stamp
                env = make_event("subscription.updated", data, as_dict=True)
                self.deliver(env)
                row = H.state_row("paddle.subscriptions", data["id"])
                self.assertIsNotNone(row["next_billed_at"], "next_billed_at %s not parsed" % stamp)
                self.assertEqual(harness.parse_ts(row["next_billed_at"]), harness.parse_ts(stamp))

    def test_money_amounts_are_exact(self):
        for currency, unit in (("USD", 3000), ("JPY", 4500), ("KWD", 12345),
                               ("USD", 123456789012345678)):
            with self.subTest(currency=currency, unit=unit):
                data = sample_transaction(currency=currency, items=((unit, 3),))
                env = make_event("transaction.completed", data, as_dict=True)
                self.deliver(env)
                row = H.state_row("paddle.transactions", data["id"])
                totals = data["details"]["totals"]
                for f in ("subtotal", "tax", "total", "grand_total", "fee", "earnings"):
                    self.assertEqual(str(row[f]), totals[f], f)
                self.assertEqual(row["currency_code"], currency)

    def test_missing_notification_id_is_stored_as_null(self):
        env = make_event("customer.created", harness.sample_customer(), as_dict=True)
        del env["notification_id"]
        row = self.deliver(env)
        self.assertIsNone(row["notification_id"])

    def test_odd_snapshot_values_are_stored_not_rejected(self):
        # Envelope valid, snapshot unusual: the event is kept (never lose a
        # delivery over data the projection cannot type).
        data = sample_transaction()
        data["details"]["totals"]["total"] = "12.50"       # not an integer amount
        data["items"] = "not-a-list"
        data["billed_at"] = "someday"
        env = make_event("transaction.billed", data, as_dict=True)
        row = self.deliver(env)
        self.assertEqual(row["payload"], env)
        state = H.state_row("paddle.transactions", data["id"])
        if state is not None:
            self.assertEqual(state["event_id"], env["event_id"])
        for data in ({"no_id": True}, {"id": 12}, {"id": ""}, {"id": None}):
            with self.subTest(data=data):
                env = make_event("subscription.updated", data, as_dict=True)
                self.deliver(env)
