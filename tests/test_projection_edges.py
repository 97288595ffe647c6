"""Edges of the projection into the state tables and of the reports built on it: snapshots at the same
instant, late snapshots, environments that share an id, and the boundaries the report views draw.

Each test posts its own realistic Paddle snapshots (reportdata's builders) through nginx to an endpoint of its
own, in a currency no other test of this module uses, so the aggregated views see only its rows.
"""

import datetime
import json
import os

from harness import fixtures_dir, make_event, paddle_id
from report_scenarios import report_module
from reportdata import NOW, J, T, Price, adjustment, churn_row, customer, money_row, subscription, transaction

H, DB, ReportCase = report_module()
setUpModule, tearDownModule = H.start, H.stop
q, view, in_currency = DB.q, DB.view, DB.in_currency


def event_ids(n):
    """n event ids in ascending order (Paddle's ids sort by creation)."""
    return sorted(paddle_id("evt") for _ in range(n))


class SameInstant(ReportCase):
    """Paddle can stamp two snapshots of one entity with the same occurred_at: the one with the greater event id
    is the newer (ids sort by creation), whatever order they arrive in, as paddle.reproject replays them."""

    def assertGreaterEventIdWins(self, at, arrival):
        """Two snapshots stamped `at`; arrival(a, b) gives the order they are posted in (b has the greater id)."""
        sid, cid, price = paddle_id("sub"), paddle_id("ctm"), Price(2000, "USD")
        first_id, second_id = event_ids(2)
        feed = DB.feed()
        a = feed.add("subscription.updated", subscription(sid, cid, "USD", "active", [(price, 1)], at), at)
        b = feed.add("subscription.paused", subscription(sid, cid, "USD", "paused", [(price, 1)], at,
                                                         paused_at=at, item_status="inactive"), at)
        a["event_id"], b["event_id"] = first_id, second_id
        feed.post(arrival(a, b))
        self.assertEqual(q("SELECT status, event_id FROM paddle.subscriptions WHERE id = %s" % H.lit(sid)),
                         [{"status": "paused", "event_id": second_id}])

    def test_of_two_snapshots_at_one_instant_the_greater_event_id_wins_when_it_arrives_last(self):
        self.assertGreaterEventIdWins("2024-05-02 10:00", lambda a, b: [a, b])

    def test_of_two_snapshots_at_one_instant_the_greater_event_id_wins_when_it_arrives_first(self):
        self.assertGreaterEventIdWins("2024-05-02 11:00", lambda a, b: [b, a])


class CreatingTransaction(ReportCase):
    """subscriptions.transaction_id: the transaction that created the subscription, which Paddle sends in
    subscription.created only; later snapshots keep it, but only within their environment."""

    def test_a_live_snapshot_taking_over_a_sandbox_row_does_not_keep_the_sandbox_creating_transaction(self):
        sid, price = paddle_id("sub"), Price(2500, "USD")
        sandbox_txn = paddle_id("txn")
        sandbox, live = DB.feed("sandbox"), DB.feed("live")
        created = subscription(sid, paddle_id("ctm"), "USD", "active", [(price, 1)], "2024-05-03 09:00")
        created["transaction_id"] = sandbox_txn
        sandbox.post([sandbox.add("subscription.created", created, "2024-05-03 09:00")])
        self.assertEqual(q("SELECT environment, transaction_id FROM paddle.subscriptions WHERE id = %s" % H.lit(sid)),
                         [{"environment": "sandbox", "transaction_id": sandbox_txn}])
        live_cid = paddle_id("ctm")
        live.post([live.add("subscription.updated",
                            subscription(sid, live_cid, "USD", "active", [(price, 2)], "2024-05-04 09:00"),
                            "2024-05-04 09:00")])
        self.assertEqual(q("SELECT environment, customer_id, transaction_id FROM paddle.subscriptions WHERE id = %s"
                           % H.lit(sid)),
                         [{"environment": "live", "customer_id": live_cid, "transaction_id": None}])

    def test_a_late_sandbox_creation_does_not_fill_the_creating_transaction_of_a_live_row(self):
        sid, price = paddle_id("sub"), Price(2500, "USD")
        sandbox, live = DB.feed("sandbox"), DB.feed("live")
        live.post([live.add("subscription.updated",
                            subscription(sid, paddle_id("ctm"), "USD", "active", [(price, 1)], "2024-05-06 09:00"),
                            "2024-05-06 09:00")])
        created = subscription(sid, paddle_id("ctm"), "USD", "active", [(price, 1)], "2024-05-05 09:00")
        created["transaction_id"] = paddle_id("txn")
        sandbox.post([sandbox.add("subscription.created", created, "2024-05-05 09:00")])
        self.assertEqual(q("SELECT environment, transaction_id FROM paddle.subscriptions WHERE id = %s" % H.lit(sid)),
                         [{"environment": "live", "transaction_id": None}])

    def test_a_late_creation_fills_the_creating_transaction_of_its_own_environment(self):
        sid, cid, price, txn = paddle_id("sub"), paddle_id("ctm"), Price(2500, "USD"), paddle_id("txn")
        feed = DB.feed("live")
        created = subscription(sid, cid, "USD", "active", [(price, 1)], "2024-05-07 09:00")
        created["transaction_id"] = txn
        feed.add("subscription.updated", subscription(sid, cid, "USD", "active", [(price, 3)], "2024-05-08 09:00"),
                 "2024-05-08 09:00")
        feed.add("subscription.created", created, "2024-05-07 09:00")
        feed.post()
        self.assertEqual(q("SELECT environment, transaction_id, event_id = %s AS newer FROM paddle.subscriptions "
                           "WHERE id = %s" % (H.lit(feed.events[0]["event_id"]), H.lit(sid))),
                         [{"environment": "live", "transaction_id": txn, "newer": True}])


class ItemRows(ReportCase):
    """The item rows of a state row come from the snapshot it holds, or from an earlier one of its environment
    with the very same items."""

    def item_events(self, table, key, entity_id):
        return [r["event_id"] for r in q("SELECT DISTINCT event_id FROM paddle.%s WHERE %s = %s"
                                         % (table, key, H.lit(entity_id)))]

    def test_a_live_snapshot_taking_over_a_sandbox_row_rewrites_its_items_even_when_they_are_the_same(self):
        sid, price = paddle_id("sub"), Price(4100, "USD")
        sandbox, live = DB.feed("sandbox"), DB.feed("live")
        data = subscription(sid, paddle_id("ctm"), "USD", "active", [(price, 2)], "2024-05-09 09:00")
        sandbox.post([sandbox.add("subscription.created", data, "2024-05-09 09:00")])
        data = json.loads(json.dumps(data))
        data["customer_id"] = paddle_id("ctm")
        data["status"] = "past_due"
        taken = live.add("subscription.past_due", data, "2024-05-10 09:00")
        live.post()
        self.assertEqual(q("SELECT environment, status, items_event_id FROM paddle.subscriptions WHERE id = %s"
                           % H.lit(sid)),
                         [{"environment": "live", "status": "past_due", "items_event_id": taken["event_id"]}])
        self.assertEqual(self.item_events("subscription_items", "subscription_id", sid), [taken["event_id"]])

    def test_a_live_adjustment_taking_over_a_sandbox_row_rewrites_its_items_even_when_they_are_the_same(self):
        aid, tid, cid = paddle_id("adj"), paddle_id("txn"), paddle_id("ctm")
        sandbox, live = DB.feed("sandbox"), DB.feed("live")
        data = adjustment(aid, tid, cid, "USD", 1100, "pending_approval", "2024-05-09 10:00")
        sandbox.post([sandbox.add("adjustment.created", data, "2024-05-09 10:00")])
        data = json.loads(json.dumps(data))
        data["status"] = "approved"
        taken = live.add("adjustment.updated", data, "2024-05-10 10:00")
        live.post()
        self.assertEqual(q("SELECT environment, status, items_event_id FROM paddle.adjustments WHERE id = %s"
                           % H.lit(aid)),
                         [{"environment": "live", "status": "approved", "items_event_id": taken["event_id"]}])
        self.assertEqual(self.item_events("adjustment_items", "adjustment_id", aid), [taken["event_id"]])

    def test_a_live_transaction_taking_over_a_sandbox_row_rewrites_its_items_even_when_they_are_the_same(self):
        tid, cid, seat = paddle_id("txn"), paddle_id("ctm"), Price(1500, "USD")
        sandbox, live = DB.feed("sandbox"), DB.feed("live")
        data = transaction(tid, cid, "USD", "billed", [(seat, 3)], "2024-05-09 11:00")
        sandbox.post([sandbox.add("transaction.billed", data, "2024-05-09 11:00")])
        data = json.loads(json.dumps(data))
        data["status"] = "paid"
        taken = live.add("transaction.paid", data, "2024-05-10 11:00")
        live.post()
        self.assertEqual(q("SELECT environment, status, items_event_id FROM paddle.transactions WHERE id = %s"
                           % H.lit(tid)),
                         [{"environment": "live", "status": "paid", "items_event_id": taken["event_id"]}])
        self.assertEqual(self.item_events("transaction_items", "transaction_id", tid), [taken["event_id"]])

    def test_a_transaction_without_line_items_keeps_the_items_it_lists(self):
        tid, cid = paddle_id("txn"), paddle_id("ctm")
        seat, setup = Price(1500, "USD"), Price(9900, "USD", recurring=False)
        data = transaction(tid, cid, "USD", "draft", [(seat, 4), (setup, 1)], "2024-05-11 09:00")
        data["details"]["line_items"] = []
        feed = DB.feed()
        draft = feed.add("transaction.created", data, "2024-05-11 09:00")
        feed.post()
        self.assertEqual(q("SELECT position, price_id, product_id, quantity, unit_price_amount::text AS amount, "
                           "subtotal, event_id FROM paddle.transaction_items WHERE transaction_id = %s "
                           "ORDER BY position" % H.lit(tid)),
                         [{"position": 1, "price_id": seat.id, "product_id": seat.product_id, "quantity": 4,
                           "amount": "1500", "subtotal": None, "event_id": draft["event_id"]},
                          {"position": 2, "price_id": setup.id, "product_id": setup.product_id, "quantity": 1,
                           "amount": "9900", "subtotal": None, "event_id": draft["event_id"]}])


class PaymentAttempts(ReportCase):
    def test_the_last_payment_is_the_newest_attempt_paddle_lists_first(self):
        tid, cid, price = paddle_id("txn"), paddle_id("ctm"), Price(3000, "USD")
        data = transaction(tid, cid, "USD", "past_due", [(price, 1)], "2024-05-15 09:00")

        def attempt(at, code):
            return {"amount": "3300", "status": "error", "error_code": code, "created_at": T(at),
                    "captured_at": None, "payment_attempt_id": paddle_id("pay"), "method_details": {"type": "card"}}
        data["payments"] = [attempt("2024-05-15 09:00", "insufficient_funds"),
                            attempt("2024-05-12 09:00", "expired_card"),
                            attempt("2024-05-13 09:00", "declined")]
        feed = DB.feed()
        feed.post([feed.add("transaction.payment_failed", data, "2024-05-15 09:00")])
        self.assertEqual(q("SELECT payment_attempts, last_payment_status, last_payment_error_code, "
                           "last_payment_created_at = %s::timestamptz AS newest FROM paddle.transactions "
                           "WHERE id = %s" % (H.lit(T("2024-05-15 09:00")), H.lit(tid))),
                         [{"payment_attempts": 3, "last_payment_status": "error",
                           "last_payment_error_code": "insufficient_funds", "newest": True}])


def business(bid, cid, name, at):
    return {"id": bid, "customer_id": cid, "name": name, "company_number": "555775291485",
            "tax_identifier": None, "status": "active", "contacts": [{"name": "Parker Jones",
                                                                      "email": "parker@example.com"}],
            "custom_data": None, "import_meta": None, "created_at": T(at), "updated_at": T(at)}


def product(pid, name, at):
    return {"id": pid, "name": name, "description": None, "type": "standard", "tax_category": "standard",
            "image_url": None, "status": "active", "custom_data": None, "import_meta": None,
            "created_at": T(at), "updated_at": T(at)}


def price(pri, pid, amount, currency, at):
    return {"id": pri, "product_id": pid, "name": "Monthly", "description": "Monthly plan", "type": "standard",
            "status": "active", "billing_cycle": {"interval": "month", "frequency": 1}, "trial_period": None,
            "tax_mode": "account_setting", "unit_price": {"amount": str(amount), "currency_code": currency},
            "unit_price_overrides": [], "quantity": {"minimum": 1, "maximum": 100}, "custom_data": None,
            "import_meta": None, "created_at": T(at), "updated_at": T(at)}


def discount(dsc, code, amount, at):
    return {"id": dsc, "code": code, "description": "Spring sale", "type": "percentage", "mode": "standard",
            "status": "active", "amount": str(amount), "currency_code": None, "recur": True,
            "maximum_recurring_intervals": 3, "usage_limit": None, "times_used": 0, "restrict_to": None,
            "enabled_for_checkout": True, "expires_at": None, "discount_group_id": None, "custom_data": None,
            "import_meta": None, "created_at": T(at), "updated_at": T(at)}


def address_of(aid, cid, country, at):
    return {"id": aid, "customer_id": cid, "description": None, "first_line": "1 Test Street",
            "second_line": None, "city": "Testville", "postal_code": "00000", "region": None,
            "country_code": country, "status": "active", "custom_data": None, "import_meta": None,
            "created_at": T(at), "updated_at": T(at)}


class CatalogAndAccountEntities(ReportCase):
    """Addresses, businesses, products, prices and discounts: a snapshot delivered late (older occurred_at) never
    overwrites the newer one already stored."""

    CASES = [
        # (entity, table, column, older value, newer value, builder)
        ("address", "addresses", "country_code", "US", "DE",
         lambda i, v, at: address_of(i, "ctm_01hv8wt8nffez4p2t6typn4a5j", v, at)),
        ("business", "businesses", "name", "Old Name Ltd", "New Name GmbH",
         lambda i, v, at: business(i, "ctm_01hv8wt8nffez4p2t6typn4a5j", v, at)),
        ("product", "products", "name", "Starter", "Starter Plus", lambda i, v, at: product(i, v, at)),
        ("price", "prices", "unit_price_amount", "1000", "1200",
         lambda i, v, at: price(i, "pro_01hv8wt8nffez4p2t6typn4a5j", int(v), "USD", at)),
        ("discount", "discounts", "code", "SPRING10", "SPRING20", lambda i, v, at: discount(i, v, 10, at)),
    ]

    def test_a_late_older_snapshot_of_an_address_business_product_price_or_discount_changes_nothing(self):
        prefixes = {"address": "add", "business": "biz", "product": "pro", "price": "pri", "discount": "dsc"}
        for entity, table, column, older, newer, build in self.CASES:
            with self.subTest(entity=entity):
                eid, feed = paddle_id(prefixes[entity]), DB.feed()
                new = feed.add(entity + ".updated", build(eid, newer, "2024-05-20 10:00"), "2024-05-20 10:00")
                feed.add(entity + ".created", build(eid, older, "2024-05-19 10:00"), "2024-05-19 10:00")
                feed.post()
                self.assertEqual(q("SELECT %s::text AS value, event_id FROM paddle.%s WHERE id = %s"
                                   % (column, table, H.lit(eid))),
                                 [{"value": newer, "event_id": new["event_id"]}])

    def test_a_late_older_address_does_not_move_the_mrr_to_another_country_price(self):
        sid, cid, aid = paddle_id("sub"), paddle_id("ctm"), paddle_id("add")
        plan = Price(1000, "AUD", overrides=[(["NZ"], 1500, "AUD")])
        feed = DB.feed()
        feed.add("address.updated", address_of(aid, cid, "NZ", "2024-05-21 10:00"), "2024-05-21 10:00")
        feed.add("subscription.created", subscription(sid, cid, "AUD", "active", [(plan, 1)], "2024-05-21 11:00",
                                                      address_id=aid), "2024-05-21 11:00")
        feed.add("address.created", address_of(aid, cid, "AU", "2024-05-01 10:00"), "2024-05-01 10:00")
        feed.post()
        self.assertEqual([(r["active_subscriptions"], str(r["mrr"])) for r in view("mrr", in_currency("AUD"))],
                         [(1, "15.00")])


class PastDueGrace(ReportCase):
    def test_without_a_grace_setting_a_past_due_subscription_keeps_access_for_the_documented_7_days(self):
        sid, cid, plan = paddle_id("sub"), paddle_id("ctm"), Price(3900, "GBP")
        since = NOW - datetime.timedelta(days=3)
        feed = DB.feed()
        feed.add("subscription.created", subscription(sid, cid, "GBP", "active", [(plan, 1)],
                                                      since - datetime.timedelta(days=30)),
                 since - datetime.timedelta(days=30))
        feed.add("subscription.past_due", subscription(sid, cid, "GBP", "past_due", [(plan, 1)], since), since)
        feed.post()
        setting = H.sql_value("SELECT value FROM paddle.report_settings WHERE key = 'past_due_grace_days'")
        try:
            H.sql("DELETE FROM paddle.report_settings WHERE key = 'past_due_grace_days'")
            rows = view("entitlements", "subscription_id = %s" % H.lit(sid))
        finally:
            H.sql("INSERT INTO paddle.report_settings (key, value) VALUES ('past_due_grace_days', %s) "
                  "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value" % H.lit(setting))
        self.assertEqual([(r["granted"], r["reason"], r["access_until"]) for r in rows],
                         [(True, "past_due_grace", J(since + datetime.timedelta(days=7)))])


class Entitlements(ReportCase):
    def grants(self, where):
        return [(r["environment"], r["price_id"], r["granted"], r["forever"], r["reason"], r["access_until"])
                for r in view("entitlements", where)]

    def test_a_sandbox_chargeback_reverse_does_not_restore_a_live_purchase_charged_back(self):
        cid, tid, one = paddle_id("ctm"), paddle_id("txn"), Price(4900, "EUR", recurring=False)
        live, sandbox = DB.feed("live"), DB.feed("sandbox")
        live.add("transaction.completed", transaction(tid, cid, "EUR", "completed", [(one, 1)], "2024-06-01 09:00"),
                 "2024-06-01 09:00")
        live.add("adjustment.created", adjustment(paddle_id("adj"), tid, cid, "EUR", 5390, "approved",
                                                  "2024-06-05 10:00", action="chargeback", kind="full"),
                 "2024-06-05 10:00")
        live.post()
        sandbox.post([sandbox.add("adjustment.created",
                                  adjustment(paddle_id("adj"), tid, cid, "EUR", 5390, "approved", "2024-06-20 10:00",
                                             action="chargeback_reverse", kind="full"), "2024-06-20 10:00")])
        self.assertEqual(self.grants("customer_id = %s AND environment = 'live'" % H.lit(cid)),
                         [("live", one.id, False, False, "charged_back", J("2024-06-05 10:00"))])

    def test_a_renewal_whose_items_name_only_price_ids_grants_nothing_forever(self):
        sid, cid, plan = paddle_id("sub"), paddle_id("ctm"), Price(1900, "EUR")
        feed = DB.feed()
        txn = transaction(paddle_id("txn"), cid, "EUR", "completed", [(plan, 1)], "2024-06-02 09:00", sub=sid)
        txn["items"] = [{"price_id": plan.id, "quantity": 1, "proration": None}]
        feed.add("transaction.completed", txn, "2024-06-02 09:00")
        feed.post()
        self.assertEqual(self.grants("customer_id = %s" % H.lit(cid)), [])
        # the same line in a transaction without subscription is a one-time purchase
        cid2 = paddle_id("ctm")
        txn = transaction(paddle_id("txn"), cid2, "EUR", "completed", [(plan, 1)], "2024-06-02 10:00")
        txn["items"] = [{"price_id": plan.id, "quantity": 1, "proration": None}]
        feed.post([feed.add("transaction.completed", txn, "2024-06-02 10:00")])
        self.assertEqual(self.grants("customer_id = %s" % H.lit(cid2)),
                         [("sandbox", plan.id, True, True, "one_time_purchase", None)])

    def test_a_canceled_subscription_keeps_access_until_its_scheduled_cancel_date_without_a_period(self):
        sid, cid, plan = paddle_id("sub"), paddle_id("ctm"), Price(2900, "EUR")
        feed = DB.feed()
        feed.add("subscription.created", subscription(sid, cid, "EUR", "active", [(plan, 1)], "2024-06-03 09:00"),
                 "2024-06-03 09:00")
        feed.add("subscription.canceled", subscription(sid, cid, "EUR", "canceled", [(plan, 1)], "2024-06-10 09:00",
                                                       created="2024-06-03 09:00", canceled_at="2024-06-10 09:00",
                                                       scheduled=("cancel", "2030-07-03 09:00")),
                 "2024-06-10 09:00")
        feed.post()
        self.assertEqual(self.grants("customer_id = %s" % H.lit(cid)),
                         [("sandbox", plan.id, True, False, "canceled_until_period_end", J("2030-07-03 09:00"))])


class RecurringRevenue(ReportCase):
    def test_an_item_that_does_not_say_whether_it_recurs_counts_in_mrr_and_a_one_time_item_does_not(self):
        sid, cid = paddle_id("sub"), paddle_id("ctm")
        plan, addon, setup = Price(2000, "HKD"), Price(500, "HKD"), Price(9900, "HKD", recurring=False)
        data = subscription(sid, cid, "HKD", "active", [(plan, 1), (addon, 2), (setup, 1)], "2024-06-04 09:00")
        del data["items"][1]["recurring"]
        feed = DB.feed()
        feed.post([feed.add("subscription.created", data, "2024-06-04 09:00")])
        self.assertEqual([(r["active_subscriptions"], str(r["mrr"])) for r in view("mrr", in_currency("HKD"))],
                         [(1, "30.00")])


    def test_an_item_without_a_status_counts_as_active_and_a_trialing_item_does_not(self):
        sid, cid = paddle_id("sub"), paddle_id("ctm")
        plan, addon, trial = Price(3000, "INR"), Price(700, "INR"), Price(20000, "INR")
        data = subscription(sid, cid, "INR", "active", [(plan, 1), (addon, 1), (trial, 1)], "2024-06-04 10:00")
        del data["items"][1]["status"]
        data["items"][2]["status"] = "trialing"
        feed = DB.feed()
        feed.post([feed.add("subscription.created", data, "2024-06-04 10:00")])
        self.assertEqual([(r["active_subscriptions"], str(r["mrr"])) for r in view("mrr", in_currency("INR"))],
                         [(1, "37.00")])

class Churn(ReportCase):
    def test_a_subscription_canceled_while_paused_churns_voluntarily_with_no_mrr_lost(self):
        sid, cid, plan = paddle_id("sub"), paddle_id("ctm"), Price(4500, "SGD")
        created = "2024-03-04 09:00"
        feed = DB.feed()
        feed.add("subscription.created", subscription(sid, cid, "SGD", "active", [(plan, 1)], created), created)
        feed.add("subscription.paused", subscription(sid, cid, "SGD", "paused", [(plan, 1)], "2024-04-04 09:00",
                                                     created=created, paused_at="2024-04-04 09:00",
                                                     item_status="inactive"), "2024-04-04 09:00")
        feed.add("subscription.canceled", subscription(sid, cid, "SGD", "canceled", [(plan, 1)], "2024-05-06 09:00",
                                                       created=created, canceled_at="2024-05-06 09:00",
                                                       item_status="inactive"), "2024-05-06 09:00")
        feed.post()
        self.assertRows(view("churn_monthly", in_currency("SGD")),
                        [churn_row("2024-05-01", "SGD", voluntary=(1, 1, "0.00"))])

    def test_mrr_lost_in_a_second_currency_shows_although_the_cancellation_counts_in_the_first(self):
        # The subscription is in MXN; one item's price has no MXN amount and bills in ZAR (its own currency).
        sid, cid = paddle_id("sub"), paddle_id("ctm")
        plan, extra = Price(50000, "MXN"), Price(1000, "ZAR")
        created = "2024-03-05 09:00"
        feed = DB.feed()
        feed.add("subscription.created", subscription(sid, cid, "MXN", "active", [(plan, 1), (extra, 1)], created),
                 created)
        feed.add("subscription.canceled", subscription(sid, cid, "MXN", "canceled", [(plan, 1), (extra, 1)],
                                                       "2024-05-07 09:00", created=created,
                                                       canceled_at="2024-05-07 09:00"), "2024-05-07 09:00")
        feed.post()
        self.assertRows(view("churn_monthly", in_currency("MXN")),
                        [churn_row("2024-05-01", "MXN", voluntary=(1, 1, "500.00"))])
        self.assertRows(view("churn_monthly", in_currency("ZAR")),
                        [churn_row("2024-05-01", "ZAR", voluntary=(0, 0, "10.00"))])


class Chargebacks(ReportCase):
    def test_a_reversed_chargeback_stays_on_the_day_it_was_approved_not_the_day_it_was_created(self):
        cid, tid, aid = paddle_id("ctm"), paddle_id("txn"), paddle_id("adj")
        one = Price(100000, "CZK", recurring=False)
        feed = DB.feed()
        feed.add("transaction.completed", transaction(tid, cid, "CZK", "completed", [(one, 1)], "2024-07-01 08:00"),
                 "2024-07-01 08:00")
        for status, at in (("pending_approval", "2024-07-02 10:00"), ("approved", "2024-07-04 10:00"),
                           ("reversed", "2024-07-20 10:05")):
            cb = adjustment(aid, tid, cid, "CZK", 110000, status, at, action="chargeback", kind="full")
            cb["created_at"] = T("2024-07-02 10:00")
            feed.add("adjustment.created" if status == "pending_approval" else "adjustment.updated", cb, at)
        feed.add("adjustment.created", adjustment(paddle_id("adj"), tid, cid, "CZK", 110000, "approved",
                                                  "2024-07-20 10:00", action="chargeback_reverse", kind="full"),
                 "2024-07-20 10:00")
        feed.post()
        self.assertEqual([(r["status"], r["approved_at"]) for r in view("refunds", "adjustment_id = %s" % H.lit(aid))],
                         [("reversed", J("2024-07-04 10:00"))])
        self.assertRows(view("revenue_daily", in_currency("CZK")), [
            money_row("2024-07-01", "CZK", 1, "1100.00", "0.00", "100.00", "1000.00", "55.00", "945.00",
                      refunds="0.00", chargebacks="0.00"),
            money_row("2024-07-04", "CZK", chargeback_count=1, chargebacks="1100.00", gross="0.00", discount="0.00",
                      tax="0.00", net="0.00", fee="0.00", earnings="0.00", refunds="0.00"),
            money_row("2024-07-20", "CZK", chargebacks="-1100.00", gross="0.00", discount="0.00", tax="0.00",
                      net="0.00", fee="0.00", earnings="0.00", refunds="0.00"),
        ])


class EnvironmentsApart(ReportCase):
    def test_a_sandbox_snapshot_of_a_live_refund_does_not_move_its_approval_date(self):
        cid, tid, aid = paddle_id("ctm"), paddle_id("txn"), paddle_id("adj")
        one = Price(20000, "CZK", recurring=False)
        live, sandbox = DB.feed("live"), DB.feed("sandbox")
        live.add("transaction.completed", transaction(tid, cid, "CZK", "completed", [(one, 1)], "2024-08-01 08:00"),
                 "2024-08-01 08:00")
        live.add("adjustment.created", adjustment(aid, tid, cid, "CZK", 5500, "pending_approval", "2024-08-05 08:00"),
                 "2024-08-05 08:00")
        live.add("adjustment.updated", adjustment(aid, tid, cid, "CZK", 5500, "approved", "2024-08-10 08:00"),
                 "2024-08-10 08:00")
        live.post()
        sandbox.post([sandbox.add("adjustment.updated",
                                  adjustment(aid, tid, cid, "CZK", 5500, "approved", "2024-08-02 08:00"),
                                  "2024-08-02 08:00")])
        self.assertEqual([(r["environment"], r["approved_at"]) for r in
                          q("SELECT environment, approved_at FROM paddle.adjustment_facts WHERE adjustment_id = %s"
                            % H.lit(aid))],
                         [("live", J("2024-08-10 08:00"))])
        self.assertEqual([(r["day"], r["refund_count"], str(r["refunds"])) for r in
                          view("revenue_daily", in_currency("CZK", "live"))],
                         [("2024-08-01", 0, "0.00"), ("2024-08-10", 1, "55.00")])

    def test_a_sandbox_failed_payment_does_not_show_the_email_of_the_live_customer_with_that_id(self):
        cid, tid, one = paddle_id("ctm"), paddle_id("txn"), Price(150000, "HUF", recurring=False)
        live, sandbox = DB.feed("live"), DB.feed("sandbox")
        live.post([live.add("customer.created", customer(cid, "owner@example.hu"), "2024-08-01 08:00")])
        sandbox.post([sandbox.add("transaction.payment_failed",
                                  transaction(tid, cid, "HUF", "past_due", [(one, 1)], "2024-08-03 08:00"),
                                  "2024-08-03 08:00")])
        self.assertEqual([(r["environment"], r["case_id"], r["customer_id"], r["customer_email"], r["state"])
                          for r in view("dunning", "customer_id = %s" % H.lit(cid))],
                         [("sandbox", tid, cid, None, "open")])


class Dunning(ReportCase):
    def test_a_past_due_transaction_snapshot_opens_a_case_without_a_payment_failed_event(self):
        cid, tid, one = paddle_id("ctm"), paddle_id("txn"), Price(25000, "ILS", recurring=False)
        feed = DB.feed()
        feed.add("transaction.created", transaction(tid, cid, "ILS", "ready", [(one, 1)], "2024-08-05 08:00"),
                 "2024-08-05 08:00")
        feed.add("transaction.past_due", transaction(tid, cid, "ILS", "past_due", [(one, 1)], "2024-08-06 08:00"),
                 "2024-08-06 08:00")
        feed.add("transaction.completed", transaction(tid, cid, "ILS", "completed", [(one, 1)], "2024-08-09 08:00"),
                 "2024-08-09 08:00")
        feed.post()
        self.assertEqual([(r["failed_on"], r["case_type"], r["case_id"], str(r["amount"]), r["failed_attempts"],
                           r["state"], r["recovered_at"])
                          for r in view("dunning", "customer_id = %s" % H.lit(cid))],
                         [("2024-08-06", "transaction", tid, "275.00", 0, "recovered", J("2024-08-09 08:00"))])


class AmountConverter(ReportCase):
    """paddle.to_amount: Paddle's amounts are strings of an integer in the minor unit, up to 30 digits."""

    CASES = [("0", "0"), ("3000", "3000"), ("-1100", "-1100"), ("9" * 30, "9" * 30), ("-" + "9" * 30, "-" + "9" * 30),
             ("1" + "0" * 30, None), ("-" + "1" * 31, None), ("12.50", None), ("1e3", None), (" 1", None), ("", None),
             ("-", None), ("+5", None)]

    def test_integer_strings_of_up_to_30_digits_convert_exactly_and_anything_else_is_null(self):
        for text, want in self.CASES:
            with self.subTest(text=text):
                self.assertEqual(H.sql_value("SELECT paddle.to_amount(%s)::text" % H.lit(text)), want)


class Backfill(ReportCase):
    def test_a_backfill_since_an_instant_includes_the_event_that_occurred_at_that_instant(self):
        letters = paddle_id("t")[-10:].lower().translate(str.maketrans("0123456789", "abcdefghij"))
        etype, name = "customer.t_" + letters, "edge_backfill_" + letters
        feed = DB.feed()
        before = feed.add(etype, customer(paddle_id("ctm"), "before@example.com"), "2024-09-01 09:59:59")
        exact = feed.add(etype, customer(paddle_id("ctm"), "exact@example.com"), "2024-09-01 10:00")
        feed.post()
        H.sql("INSERT INTO paddle.consumers (name, event_types) VALUES (%s, ARRAY[%s]::text[])"
              % (H.lit(name), H.lit(etype)))
        self.assertEqual(H.sql_value("SELECT paddle.queue_stored_events(%s, %s)"
                                     % (H.lit(name), H.lit(exact["occurred_at"]))), "1")
        self.assertEqual([r["event_id"] for r in q("SELECT event_id FROM paddle.claim_events(%s, 10)" % H.lit(name))],
                         [exact["event_id"]])


def fixture_entity(name):
    """The data of Paddle's own fixture for an event type (tests/fixtures/paddle/entities/)."""
    with open(os.path.join(fixtures_dir(), "entities", name + ".json")) as f:
        return json.load(f)


class Payments(ReportCase):
    """transaction_payments, payment_methods and payouts: views over the snapshots the stored events hold, shaped
    by Paddle's own fixtures."""

    def test_each_payment_attempt_of_a_transactions_snapshot_shows_its_card(self):
        tid, cid, price = paddle_id("txn"), paddle_id("ctm"), Price(65215, "EUR")
        feed = DB.feed()
        failed = transaction(tid, cid, "EUR", "past_due", [(price, 1)], "2024-04-12 10:16")
        failed["payments"] = fixture_entity("transaction.payment_failed")["payments"]
        feed.post([feed.add("transaction.payment_failed", failed, "2024-04-12 10:16")])
        cols = ("position, newest, status, error_code, amount, currency_code, method_type, card_type, card_last4, "
                "card_expiry_month, card_expiry_year, captured_at IS NOT NULL AS captured, customer_id")
        where = "transaction_id = %s" % H.lit(tid)
        declined = {"position": 1, "newest": True, "status": "error", "error_code": "declined", "amount": 65215,
                    "currency_code": "EUR", "method_type": "card", "card_type": "visa", "card_last4": "0002",
                    "card_expiry_month": 1, "card_expiry_year": 2025, "captured": False, "customer_id": cid}
        self.assertEqual(q("SELECT %s FROM paddle.transaction_payments WHERE %s ORDER BY position" % (cols, where)),
                         [declined])
        completed = transaction(tid, cid, "EUR", "completed", [(price, 1)], "2024-04-12 10:19")
        completed["payments"] = fixture_entity("transaction.completed")["payments"]
        # An older snapshot arriving late changes nothing: the view follows the row's snapshot.
        feed.post([feed.add("transaction.completed", completed, "2024-04-12 10:19"),
                   feed.add("transaction.updated", failed, "2024-04-12 10:17")])
        self.assertEqual(q("SELECT %s FROM paddle.transaction_payments WHERE %s ORDER BY position" % (cols, where)),
                         [dict(declined, position=1, status="captured", error_code=None, card_last4="3184",
                               captured=True), dict(declined, position=2, newest=False)])

    def test_the_newest_attempt_is_the_latest_created_whatever_the_order_of_payments(self):
        """newest marks the attempt transactions.last_payment_status describes, also when payments[] lists the
        oldest first; entries that are not objects, and card fields of the wrong type, show as nothing."""
        tid, cid, price = paddle_id("txn"), paddle_id("ctm"), Price(65215, "EUR")
        d = transaction(tid, cid, "EUR", "completed", [(price, 1)], "2024-04-12 10:19")
        captured, failed = fixture_entity("transaction.completed")["payments"]
        failed["method_details"]["card"].update(expiry_month="January", last4=None)
        d["payments"] = [failed, "not an attempt", captured]
        feed = DB.feed()
        feed.post([feed.add("transaction.completed", d, "2024-04-12 10:19")])
        self.assertEqual(q("SELECT p.position, p.newest, p.status, p.card_last4, p.card_expiry_month, "
                           "t.last_payment_status FROM paddle.transaction_payments p JOIN paddle.transactions t "
                           "ON t.id = p.transaction_id WHERE p.transaction_id = %s ORDER BY p.position" % H.lit(tid)),
                         [{"position": 1, "newest": False, "status": "error", "card_last4": None,
                           "card_expiry_month": None, "last_payment_status": "captured"},
                          {"position": 3, "newest": True, "status": "captured", "card_last4": "3184",
                           "card_expiry_month": 1, "last_payment_status": "captured"}])
        d = transaction(paddle_id("txn"), cid, "EUR", "completed", [(price, 1)], "2024-04-12 10:20")
        d["payments"] = {"not": "a list"}
        feed.post([feed.add("transaction.completed", d, "2024-04-12 10:20")])
        self.assertEqual(q("SELECT (SELECT count(*) FROM paddle.transactions WHERE id = %s) AS transactions, "
                           "(SELECT count(*) FROM paddle.transaction_payments WHERE transaction_id = %s) AS payments"
                           % (H.lit(d["id"]), H.lit(d["id"]))), [{"transactions": 1, "payments": 0}])

    def test_a_saved_payment_method_shows_as_its_newest_event_does_per_environment(self):
        pid, cid = paddle_id("paymtd"), paddle_id("ctm")
        saved, deleted = fixture_entity("payment_method.saved"), fixture_entity("payment_method.deleted")
        for d in (saved, deleted):
            d.update(id=pid, customer_id=cid)
        live, sandbox = DB.feed("live"), DB.feed("sandbox")
        # Out of order: the deletion arrives before the save it follows.
        live.post([live.add("payment_method.deleted", deleted, "2024-05-03 12:24"),
                   live.add("payment_method.saved", saved, "2024-05-02 02:55")])
        sandbox.post([sandbox.add("payment_method.saved", saved, "2024-05-04 00:00")])
        self.assertEqual(q("SELECT environment, customer_id, type, origin, deleted, deletion_reason "
                           "FROM paddle.payment_methods WHERE id = %s ORDER BY environment" % H.lit(pid)),
                         [{"environment": "live", "customer_id": cid, "type": "card",
                           "origin": "saved_during_purchase", "deleted": True,
                           "deletion_reason": "replaced_by_newer_version"},
                          {"environment": "sandbox", "customer_id": cid, "type": "card",
                           "origin": "saved_during_purchase", "deleted": False, "deletion_reason": None}])

    def test_a_payout_shows_its_newest_status(self):
        pid = paddle_id("pay")
        created, paid = fixture_entity("payout.created"), fixture_entity("payout.paid")
        created["id"] = paid["id"] = pid
        feed = DB.feed("live")
        feed.post([feed.add("payout.paid", paid, "2023-06-02 10:00"),
                   feed.add("payout.created", created, "2023-06-01 13:30")])
        self.assertEqual(q("SELECT environment, status, amount, currency_code FROM paddle.payouts WHERE id = %s"
                           % H.lit(pid)),
                         [{"environment": "live", "status": "paid", "amount": 10000, "currency_code": "USD"}])

    def test_of_two_payout_events_at_one_instant_the_greater_event_id_wins_in_either_order(self):
        for arrival in ((0, 1), (1, 0)):
            with self.subTest(arrival=arrival):
                pid = paddle_id("pay")
                created, paid = fixture_entity("payout.created"), fixture_entity("payout.paid")
                created["id"] = paid["id"] = pid
                feed = DB.feed("live")
                events = [feed.add("payout.created", created, "2023-06-03 08:00"),
                          feed.add("payout.paid", paid, "2023-06-03 08:00")]
                events[0]["event_id"], events[1]["event_id"] = event_ids(2)
                feed.post([events[i] for i in arrival])
                self.assertEqual(q("SELECT status FROM paddle.payouts WHERE id = %s" % H.lit(pid)),
                                 [{"status": "paid"}])
