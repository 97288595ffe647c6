"""Every Paddle fixture notification, delivered through nginx.

For each file in envelopes/ and signed/ of the Paddle fixtures (real SDK
data), three generated tests:

  test_stored__<fixture>       200 stored; one payment_events row with the
                               fixture's event_type, occurred_at (to the
                               microsecond), notification_id, endpoint and
                               environment; payload equal to the JSON sent.
  test_projected__<fixture>    (customer/subscription/transaction/adjustment/
                               address/business/product/price/discount)
                               the state row holds the newest snapshot sent
                               for that entity, with its status, customer_id,
                               currency and totals, and its item rows.
  test_redelivery_is_duplicate__<fixture>
                               a second delivery answers 200 duplicate and
                               changes nothing.

All fixtures are delivered once, in file-name order, in setUpClass (that
order is already out of order for several entities, e.g. subscription.* and
transaction.*).  The Node SDK mocks reuse some event_ids across different
event types (e.g. customer.created and discount.created share
evt_01h8441jx8x1q971q9ksksqh82) and signed/webhook_payload.json is
standard_payload.json plus a newline; a later fixture whose event_id was
already used gets a fresh event_id (replaced in its raw bytes), so every
fixture is a distinct event.
"""

import collections
import decimal
import glob
import json
import os
import re

import harness
from harness import Harness, HarnessTestCase, paddle_id, parse_ts

H = Harness(workers=4)
FIXTURES_DIR = harness.fixtures_dir()

ENTITY_TABLES = {
    "customer": "paddle.customers",
    "subscription": "paddle.subscriptions",
    "transaction": "paddle.transactions",
    "adjustment": "paddle.adjustments",
    "address": "paddle.addresses",
    "business": "paddle.businesses",
    "product": "paddle.products",
    "price": "paddle.prices",
    "discount": "paddle.discounts",
}

Fixture = collections.namedtuple("Fixture", "name path raw env note")


def load_fixtures():
    if not FIXTURES_DIR:
        return []
    paths = sorted(glob.glob(os.path.join(FIXTURES_DIR, "envelopes", "*.json"))) + \
        sorted(glob.glob(os.path.join(FIXTURES_DIR, "signed", "*.json")))
    seen, out = set(), []
    for path in paths:
        with open(path, "rb") as f:
            raw = f.read()
        env = json.loads(raw)
        note = None
        eid = env["event_id"]
        if eid in seen:
            new = paddle_id("evt")
            assert raw.count(eid.encode()) == 1, path
            raw = raw.replace(eid.encode(), new.encode())
            env = json.loads(raw)
            note = "event_id %s already used by another fixture; sent as %s" % (eid, new)
        seen.add(env["event_id"])
        rel = os.path.relpath(path, FIXTURES_DIR)
        name = re.sub(r"[^a-z0-9]+", "_", rel[:-5].lower()).strip("_")
        out.append(Fixture(name, rel, raw, env, note))
    return out


FIXTURES = load_fixtures()


def setUpModule():
    if FIXTURES:
        H.start()


def tearDownModule():
    H.stop()


def entity_of(fx):
    """(state table, entity id) the fixture projects to, or None."""
    table = ENTITY_TABLES.get(fx.env["event_type"].split(".")[0])
    data = fx.env.get("data")
    if table and isinstance(data, dict) and isinstance(data.get("id"), str):
        return table, data["id"]
    return None


def amount(v):
    return None if v is None else decimal.Decimal(str(v))


class FixtureDelivery(HarnessTestCase):
    harness = H

    @classmethod
    def setUpClass(cls):
        if not FIXTURES:
            return
        cls.ep = H.add_endpoint(name="fixtures", environment="sandbox")
        cls.responses = {}
        for fx in FIXTURES:
            try:
                cls.responses[fx.name] = H.post_event(cls.ep, fx.raw)
            except Exception as exc:  # noqa: BLE001 - reported by the fixture's test
                cls.responses[fx.name] = exc
        # Newest snapshot(s) per entity among the fixtures that were stored.
        by_entity = collections.defaultdict(list)
        for fx in FIXTURES:
            ent = entity_of(fx)
            r = cls.responses[fx.name]
            if ent and isinstance(r, harness.Response) and r.status == 200:
                by_entity[ent].append(fx)
        cls.newest = {}
        for ent, fxs in by_entity.items():
            top = max(parse_ts(f.env["occurred_at"], envelope=True) for f in fxs)
            cls.newest[ent] = [f for f in fxs if parse_ts(f.env["occurred_at"], envelope=True) == top]

    def test_fixtures_found(self):
        if not FIXTURES:
            self.skipTest("Paddle fixtures not found (set PADDLEHOOK_FIXTURES)")
        self.assertGreaterEqual(len(FIXTURES), 60)

    # ---- generated bodies ----------------------------------------------

    def check_stored(self, fx):
        r = self.responses[fx.name]
        self.assertIsInstance(r, harness.Response, "delivery raised: %r" % (r,))
        self.assertStored(r, fx.path)
        env = fx.env
        rows = H.sql_json("SELECT e.*, %s AS occurred_at_text FROM paddle.payment_events e "
                          "WHERE event_id = %s" % (harness.ts_text("e.occurred_at"), H.lit(env["event_id"])))
        self.assertEqual(len(rows), 1)
        row = rows[0]
        self.assertEqual(row["event_type"], env["event_type"])
        self.assertEqual(row["occurred_at_text"],
                         parse_ts(env["occurred_at"]).strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
        self.assertEqual(row["notification_id"], env.get("notification_id"))
        self.assertEqual(row["endpoint_id"], self.ep.id)
        self.assertEqual(row["environment"], "sandbox")
        self.assertEqual(row["payload"], json.loads(fx.raw), "stored payload differs from the JSON sent")
        self.assertIsNone(row["projection_error"], "projection failed: %s" % row["projection_error"])

    def check_projected(self, fx):
        table, eid = entity_of(fx)
        newest = self.newest.get((table, eid))
        self.assertTrue(newest, "no stored snapshot for %s %s" % (table, eid))
        row = H.state_row(table, eid)
        self.assertIsNotNone(row, "no %s row for %s" % (table, eid))
        held = [f for f in newest if f.env["event_id"] == row["event_id"]]
        self.assertTrue(held, "%s %s holds event %s, not the newest snapshot (%s)"
                        % (table, eid, row["event_id"], [f.env["event_id"] for f in newest]))
        snap = held[0]
        self.assertEqual(parse_ts(row["occurred_at_text"]), parse_ts(snap.env["occurred_at"]))
        data = snap.env["data"]
        getattr(self, "check_" + table.split(".")[1])(row, data)

    def check_redelivery(self, fx):
        before = H.digest()
        r = H.post_event(self.ep, fx.raw)
        self.assertDuplicate(r, fx.path)
        self.assertEqual(H.digest(), before, "a duplicate delivery changed the tables")

    # ---- per-entity field checks ---------------------------------------

    def assertFields(self, row, data, fields):
        for f in fields:
            self.assertEqual(row[f], data.get(f), "column %s" % f)

    def assertTs(self, row_value, data_value, what):
        self.assertEqual(parse_ts(row_value) if row_value else None,
                         parse_ts(data_value) if data_value else None, what)

    def check_customers(self, row, data):
        self.assertFields(row, data, ("name", "email", "status", "locale", "marketing_consent"))

    def check_subscriptions(self, row, data):
        self.assertFields(row, data, ("status", "customer_id", "address_id", "business_id",
                                      "currency_code", "collection_mode"))
        cycle = data.get("billing_cycle") or {}
        self.assertEqual(row["billing_cycle_interval"], cycle.get("interval"))
        self.assertEqual(row["billing_cycle_frequency"], cycle.get("frequency"))
        for f in ("next_billed_at", "started_at", "first_billed_at", "paused_at", "canceled_at"):
            self.assertTs(row[f], data.get(f), f)
        self.assertEqual(row["scheduled_change_action"], (data.get("scheduled_change") or {}).get("action"))
        items = H.sql_json("SELECT price_id, quantity, status, unit_price_amount FROM paddle.subscription_items "
                           "WHERE subscription_id = %s ORDER BY price_id" % H.lit(row["id"]))
        expected = sorted(({"price_id": i["price"]["id"], "quantity": i["quantity"], "status": i["status"],
                            "unit_price_amount": amount(i["price"]["unit_price"]["amount"])}
                           for i in data.get("items") or []), key=lambda x: x["price_id"])
        for it in items:
            it["unit_price_amount"] = amount(it["unit_price_amount"])
        self.assertEqual(items, expected, "subscription_items")

    def check_transactions(self, row, data):
        self.assertFields(row, data, ("status", "origin", "customer_id", "address_id", "business_id",
                                      "subscription_id", "invoice_id", "currency_code", "collection_mode"))
        details = data.get("details") or {}
        totals = details.get("totals") or {}
        for f in ("subtotal", "discount", "tax", "total", "credit", "balance", "grand_total", "fee", "earnings"):
            self.assertEqual(amount(row[f]), amount(totals.get(f)), "details.totals.%s" % f)
        self.assertEqual(row["totals_currency_code"], totals.get("currency_code"))
        payout = details.get("payout_totals") or {}
        for f in ("subtotal", "discount", "tax", "total", "fee", "earnings"):
            self.assertEqual(amount(row["payout_" + f]), amount(payout.get(f)), "payout_totals.%s" % f)
        self.assertEqual(row["payout_currency_code"], payout.get("currency_code"))
        self.assertTs(row["billed_at"], data.get("billed_at"), "billed_at")
        items = H.sql_json("SELECT price_id, quantity, total FROM paddle.transaction_items "
                           "WHERE transaction_id = %s ORDER BY position" % H.lit(row["id"]))
        line_items = details.get("line_items") or []
        if line_items:
            expected = [{"price_id": l["price_id"], "quantity": l["quantity"],
                         "total": amount((l.get("totals") or {}).get("total"))} for l in line_items]
        else:
            expected = [{"price_id": i["price"]["id"], "quantity": i["quantity"], "total": None}
                        for i in data.get("items") or []]
        for it in items:
            it["total"] = amount(it["total"])
        self.assertEqual(items, expected, "transaction_items")

    def check_adjustments(self, row, data):
        self.assertFields(row, data, ("action", "type", "status", "transaction_id", "subscription_id",
                                      "customer_id", "currency_code"))
        totals = data.get("totals") or {}
        for f in ("subtotal", "tax", "total", "fee", "earnings"):
            self.assertEqual(amount(row[f]), amount(totals.get(f)), "totals.%s" % f)
        n = int(H.sql_value("SELECT count(*) FROM paddle.adjustment_items WHERE adjustment_id = %s"
                            % H.lit(row["id"])))
        self.assertEqual(n, len(data.get("items") or []), "adjustment_items")

    def check_addresses(self, row, data):
        self.assertFields(row, data, ("customer_id", "description", "first_line", "second_line", "city",
                                      "postal_code", "region", "country_code", "status", "custom_data",
                                      "import_meta"))
        self.assertTs(row["updated_at"], data.get("updated_at"), "updated_at")

    def check_businesses(self, row, data):
        self.assertFields(row, data, ("customer_id", "name", "company_number", "tax_identifier", "status",
                                      "contacts", "custom_data", "import_meta"))
        self.assertTs(row["updated_at"], data.get("updated_at"), "updated_at")

    def check_products(self, row, data):
        self.assertFields(row, data, ("name", "description", "type", "tax_category", "image_url", "status",
                                      "custom_data", "import_meta"))
        self.assertTs(row["created_at"], data.get("created_at"), "created_at")

    def check_prices(self, row, data):
        self.assertFields(row, data, ("product_id", "name", "description", "type", "status", "tax_mode",
                                      "unit_price_overrides", "import_meta"))
        self.assertEqual(amount(row["unit_price_amount"]), amount(data["unit_price"]["amount"]))
        self.assertEqual(row["unit_price_currency_code"], data["unit_price"]["currency_code"])
        for key in ("billing_cycle", "trial_period"):
            cycle = data.get(key) or {}
            self.assertEqual((row[key + "_interval"], row[key + "_frequency"]),
                             (cycle.get("interval"), cycle.get("frequency")), key)
        quantity = data.get("quantity") or {}
        self.assertEqual((row["quantity_minimum"], row["quantity_maximum"]),
                         (quantity.get("minimum"), quantity.get("maximum")))

    def check_discounts(self, row, data):
        self.assertFields(row, data, ("code", "description", "type", "mode", "status", "currency_code", "recur",
                                      "maximum_recurring_intervals", "usage_limit", "times_used", "restrict_to",
                                      "enabled_for_checkout", "discount_group_id"))
        self.assertEqual(amount(row["amount"]), amount(data.get("amount")))
        self.assertTs(row["expires_at"], data.get("expires_at"), "expires_at")
        self.assertTs(row["updated_at"], data.get("updated_at"), "updated_at")


def _add_tests():
    for fx in FIXTURES:
        def stored(self, fx=fx):
            self.check_stored(fx)

        def redelivered(self, fx=fx):
            self.check_redelivery(fx)
        doc = fx.path + (" (%s)" % fx.note if fx.note else "")
        stored.__doc__ = redelivered.__doc__ = doc
        setattr(FixtureDelivery, "test_stored__" + fx.name, stored)
        setattr(FixtureDelivery, "test_redelivery_is_duplicate__" + fx.name, redelivered)
        if entity_of(fx):
            def projected(self, fx=fx):
                self.check_projected(fx)
            projected.__doc__ = doc
            setattr(FixtureDelivery, "test_projected__" + fx.name, projected)


_add_tests()
