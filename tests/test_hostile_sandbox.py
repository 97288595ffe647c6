"""Sandbox deliveries and live state (docs/security.md, "Sandbox -> live confusion"): whoever holds a sandbox
secret must not change live state, nor keep a live event from being stored by sending its id first."""

import json
import os
import threading
import time

import harness
import hostile
from harness import make_event, paddle_id, sample_adjustment, sample_customer, sample_subscription, sample_transaction
from hostile import HostileHarness, at

H = HostileHarness()
setUpModule, tearDownModule = H.start, H.stop


class HostileCase(hostile.HostileCase):
    harness = H


class LiveAndSandbox(HostileCase):

    def test_sandbox_snapshot_never_changes_live_state(self):
        live = H.add_endpoint(environment="live")
        sandbox = H.add_endpoint(environment="sandbox")
        t0 = time.time()
        cust = sample_customer(email="live@example.com")
        self.assertStored(self.post_signed(make_event(
            "customer.created", cust, occurred_at=at(t0 - 60)), ep=live))
        forged = dict(cust, email="attacker@example.com", status="archived")
        self.assertStored(self.post_signed(make_event(
            "customer.updated", forged, occurred_at=at(t0)), ep=sandbox))
        row = H.state_row("paddle.customers", cust["id"])
        self.assertEqual((row["environment"], row["email"], row["status"]),
                         ("live", "live@example.com", "active"))


    @staticmethod
    def one_id_two_environments(**decoy_kw):
        """A live and a sandbox endpoint, a live customer and a sandbox decoy
        event about it (later, other email) under one event id."""
        live = H.add_endpoint(environment="live")
        sandbox = H.add_endpoint(environment="sandbox")
        eid = paddle_id("evt")
        cust = sample_customer(email="live@example.com")
        decoy = make_event("customer.updated", dict(cust, email="decoy@example.com"), event_id=eid,
                           occurred_at=at(time.time() + 3600), **decoy_kw)
        return live, sandbox, eid, cust, decoy

    def test_live_delivery_replaces_a_sandbox_event_with_the_same_id(self):
        """Whoever holds a sandbox secret and learns the id of a live event
        before it is stored (a delivery Paddle is still retrying) can send it
        first through a sandbox endpoint; the live delivery must still be
        stored and projected, not taken for a duplicate."""
        live, sandbox, eid, cust, decoy = self.one_id_two_environments()
        self.assertStored(self.post_signed(decoy, ep=sandbox))
        genuine = make_event("customer.created", cust, event_id=eid)
        log_at = os.path.getsize(H.serve_log)
        self.assertStored(self.post_signed(genuine, ep=live), "the live delivery after the sandbox decoy")
        # Stored for Paddle; a warning for the operator, who has a sandbox secret to look into.
        harness.wait_until(lambda: "event_id=%s" % eid in H.serve_log_since(log_at), timeout=10,
                           what="the delivery's log line")
        line = next(l for l in H.serve_log_since(log_at).splitlines() if "event_id=%s" % eid in l)
        self.assertIn("level=warn", line)
        self.assertIn("outcome=replaced_sandbox", line)
        self.assertIn('endpoint="%s",event_type="customer.created",outcome="replaced_sandbox"' % live.id,
                      H.get("/paddle/metrics").body.decode())
        row = H.event_row(eid)
        self.assertEqual((row["environment"], row["endpoint_id"], row["event_type"], row["payload"]),
                         ("live", live.id, "customer.created", json.loads(genuine)))
        self.assertIsNone(row["projection_error"])
        state = H.state_row("paddle.customers", cust["id"])
        self.assertEqual((state["environment"], state["email"], state["event_id"]), ("live", cust["email"], eid))
        # Once live, the id is taken for both environments.
        self.before = H.digest()
        self.assertDuplicate(self.post_signed(decoy, ep=sandbox), "the sandbox decoy again")
        self.assertDuplicate(self.post_signed(genuine, ep=live), "the live delivery again")
        self.assertNothingChanged("by the redeliveries")

    def test_what_a_replaced_sandbox_event_projected_is_removed(self):
        """The report views take an entity's environment from the event its
        row holds: a sandbox subscription left under an event id that is now
        live would count as a live entitlement and live revenue."""
        live, sandbox, eid, cust, _ = self.one_id_two_environments()
        forged = sample_subscription()
        self.assertStored(self.post_signed(make_event("subscription.created", forged, event_id=eid), ep=sandbox))
        self.assertEqual(int(H.sql_value("SELECT count(*) FROM paddle.subscription_items WHERE subscription_id = %s"
                                         % H.lit(forged["id"]))), 2)
        self.assertStored(self.post_signed(make_event("customer.created", cust, event_id=eid), ep=live))
        self.assertIsNone(H.state_row("paddle.subscriptions", forged["id"]))
        self.assertEqual(H.sql("SELECT price_id FROM paddle.subscription_items WHERE subscription_id = %s"
                               % H.lit(forged["id"])), [])
        self.assertEqual(H.sql("SELECT environment FROM paddle.entitlements WHERE subscription_id = %s"
                               % H.lit(forged["id"])), [])
        self.assertEqual(H.state_row("paddle.customers", cust["id"])["environment"], "live")

    def test_replaced_sandbox_transactions_and_adjustments_go_with_their_items(self):
        for event_type, data, table, id_column in (
                ("transaction.completed", sample_transaction(), "transactions", "transaction_id"),
                ("adjustment.created", sample_adjustment(), "adjustments", "adjustment_id")):
            with self.subTest(table=table):
                live, sandbox, eid, cust, _ = self.one_id_two_environments()
                self.assertStored(self.post_signed(make_event(event_type, data, event_id=eid), ep=sandbox))
                items = "SELECT count(*) FROM paddle.%s_items WHERE %s = %s" % (table[:-1], id_column,
                                                                             H.lit(data["id"]))
                self.assertGreater(int(H.sql_value(items)), 0)
                self.assertStored(self.post_signed(make_event("customer.created", cust, event_id=eid), ep=live))
                self.assertIsNone(H.state_row("paddle." + table, data["id"]))
                self.assertEqual(H.sql_value(items), "0")

    def test_replaced_sandbox_addresses_businesses_and_catalog_rows_are_removed(self):
        for event_type, data, table in (
                ("address.created", {"id": paddle_id("add"), "country_code": "IN", "status": "active"}, "addresses"),
                ("business.created", {"id": paddle_id("biz"), "name": "Forged Ltd", "status": "active"},
                 "businesses"),
                ("product.created", {"id": paddle_id("pro"), "name": "Forged", "status": "active"}, "products"),
                ("price.created", {"id": paddle_id("pri"), "unit_price": {"amount": "1", "currency_code": "USD"}},
                 "prices"),
                ("discount.created", {"id": paddle_id("dsc"), "code": "FREE", "type": "percentage", "amount": "100"},
                 "discounts")):
            with self.subTest(table=table):
                live, sandbox, eid, cust, _ = self.one_id_two_environments()
                self.assertStored(self.post_signed(make_event(event_type, data, event_id=eid), ep=sandbox))
                self.assertEqual(H.state_row("paddle." + table, data["id"])["environment"], "sandbox")
                self.assertStored(self.post_signed(make_event("customer.created", cust, event_id=eid), ep=live))
                self.assertIsNone(H.state_row("paddle." + table, data["id"]))

    def test_a_sandbox_row_holding_a_later_sandbox_event_stays(self):
        live, sandbox, eid, cust, _ = self.one_id_two_environments()
        sub = sample_subscription()
        t0 = time.time()
        self.assertStored(self.post_signed(make_event("subscription.created", sub, event_id=eid,
                                                      occurred_at=at(t0 - 60)), ep=sandbox))
        later = paddle_id("evt")
        self.assertStored(self.post_signed(make_event("subscription.updated", dict(sub, status="past_due"),
                                                      event_id=later, occurred_at=at(t0)), ep=sandbox))
        self.assertStored(self.post_signed(make_event("customer.created", cust, event_id=eid), ep=live))
        row = H.state_row("paddle.subscriptions", sub["id"])
        self.assertEqual((row["environment"], row["event_id"], row["status"]), ("sandbox", later, "past_due"))

    def test_sandbox_delivery_of_a_live_event_id_is_a_duplicate(self):
        live, sandbox, eid, cust, decoy = self.one_id_two_environments()
        self.assertStored(self.post_signed(make_event("customer.created", cust, event_id=eid), ep=live))
        self.before = H.digest()
        self.assertDuplicate(self.post_signed(decoy, ep=sandbox))
        self.assertNothingChanged("by a sandbox delivery of a live id")

    def test_live_deliveries_wait_for_a_sandbox_insert_of_the_id_in_flight_and_one_replaces_it(self):
        """Two deliveries of the live event (Paddle retries, several destinations) arrive while the
        sandbox insert is uncommitted: one replaces it, the other is a duplicate."""
        live, sandbox, eid, cust, decoy = self.one_id_two_environments(as_dict=True)
        held = H.in_flight(H.ingest_sql(decoy, sandbox.id, "sandbox"), 2, "sandbox_insert_" + eid[-10:])
        try:
            genuine = make_event("customer.created", cust, event_id=eid)
            answers = []
            posts = [threading.Thread(target=lambda: answers.append(self.post_signed(genuine, ep=live)))
                     for _ in range(2)]
            for t in posts:
                t.start()
            for t in posts:
                t.join(30)
        finally:
            held.join(30)
        self.assertEqual(sorted((r.status, json.loads(r.body)["status"]) for r in answers),
                         [(200, "duplicate"), (200, "stored")])
        self.assertEqual(H.event_row(eid)["environment"], "live")
        self.assertEqual(H.state_row("paddle.customers", cust["id"])["email"], cust["email"])


class Logs(HostileCase):
    """Runs last in the module (classes run in name order)."""

    def test_no_secret_or_malformed_line_reaches_the_logs(self):
        self.assertLogsClean()
