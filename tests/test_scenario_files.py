"""The `simulate` scenario files (fcgi/scenarios/*.json), checked without a
server: every placeholder and offset parses, amounts add up (totals = line
items, total = subtotal - discount + tax, earnings = total - tax - fee),
field sets match the real Paddle fixtures, and no entity has two snapshots at
the same instant (the tie would be broken by random event ids)."""

import glob
import json
import os
import unittest
from decimal import Decimal

from harness import fixtures_dir
from simulate_scenarios import PLACEHOLDER, SCENARIOS, TABLES, offset, walk

# Nested objects whose inner fields differ by case (null or object, free-form):
# only their presence is compared with the fixtures.
OPAQUE = {"custom_data", "scheduled_change", "discount", "proration", "billing_cycle", "trial_period",
          "billing_period", "trial_dates", "import_meta", "billing_details", "current_billing_period"}
# Fields real Paddle sends that the fixture set happens not to show.
NOT_IN_FIXTURES = {"transaction": {"details.line_items[].proration"}}


def shape(data):
    out = set()
    for path, _ in walk(data):
        if path and not any(seg.rstrip("[]") in OPAQUE for seg in path.split(".")[:-1]):
            out.add(path)
    return out


def amounts_ok(test, where, totals, items, keys=("subtotal", "discount", "tax", "total")):
    for k in keys:
        if k in totals:
            test.assertEqual(int(totals[k]), sum(int(i[k]) for i in items), "%s: %s" % (where, k))


class ScenarioFiles(unittest.TestCase):
    """Static checks of fcgi/scenarios/*.json (no server needed)."""

    def test_scenarios_exist_and_parse(self):
        expected = {"new-subscription", "renewal", "upgrade", "failed-payment-recovery", "failed-payment-lost",
                    "pause-resume", "cancel-at-period-end", "refund", "one-time-jpy", "yearly-plan", "trial"}
        self.assertLessEqual(expected, set(SCENARIOS))
        for name, sc in SCENARIOS.items():
            self.assertIsInstance(sc.get("description"), str, name)
            self.assertTrue(sc["events"], name)
            for i, e in enumerate(sc["events"]):
                self.assertEqual(set(e), {"at", "event_type", "data"}, "%s[%d]" % (name, i))
                offset(e["at"])
                self.assertIn(e["event_type"].split(".")[0], TABLES, "%s[%d]" % (name, i))
                for path, v in walk(e["data"]):
                    if isinstance(v, str):
                        for kind, key in PLACEHOLDER.findall(v):
                            if kind == "time":
                                offset(key)
                            else:
                                self.assertRegex(key, r"^[a-z]{1,8}:[a-z0-9_-]+$", "%s[%d] %s" % (name, i, path))
                        self.assertNotIn("{{", PLACEHOLDER.sub("", v), "%s[%d] %s" % (name, i, path))

    def test_no_entity_has_two_snapshots_at_one_instant(self):
        for name, sc in SCENARIOS.items():
            seen = set()
            for e in sc["events"]:
                key = (e["data"]["id"], offset(e["at"]))
                self.assertNotIn(key, seen, "%s: %s twice at %s" % (name, key[0], e["at"]))
                seen.add(key)

    def test_amounts_add_up(self):
        for name, sc in SCENARIOS.items():
            for i, e in enumerate(sc["events"]):
                d, where = e["data"], "%s[%d] %s" % (name, i, e["event_type"])
                if e["event_type"].startswith("transaction."):
                    self.check_transaction(where, d)
                elif e["event_type"].startswith("adjustment."):
                    self.check_adjustment(where, d)

    def check_transaction(self, where, d):
        det = d["details"]
        t = {k: int(v) if v is not None else None for k, v in det["totals"].items() if k != "currency_code"}
        self.assertEqual(det["totals"]["currency_code"], d["currency_code"], where)
        lines = [li["totals"] for li in det["line_items"]]
        amounts_ok(self, where + " totals vs line_items", det["totals"], lines)
        amounts_ok(self, where + " tax_rates_used", det["totals"], [r["totals"] for r in det["tax_rates_used"]])
        for li in det["line_items"]:
            lt = {k: int(v) for k, v in li["totals"].items()}
            self.assertEqual(lt["total"], lt["subtotal"] - lt["discount"] + lt["tax"], where)
        self.assertEqual(t["total"], t["subtotal"] - t["discount"] + t["tax"], where)
        self.assertEqual(t["grand_total"], t["total"] - t["credit"], where)
        if t["fee"] is not None:
            self.assertEqual(t["earnings"], t["total"] - t["tax"] - t["fee"], where + " earnings")
            self.assertEqual(t["balance"], 0, where)
        else:
            self.assertNotEqual(d["status"], "completed", where)
            self.assertEqual(t["balance"], t["grand_total"], where)
        self.assertEqual(sorted(li["price_id"] for li in det["line_items"]),
                         sorted(it["price"]["id"] for it in d["items"]), where)
        p = det["payout_totals"]
        if p is not None:
            pt = {k: int(p[k]) for k in ("subtotal", "discount", "tax", "total", "fee", "earnings", "grand_total")}
            self.assertEqual(pt["total"], pt["subtotal"] - pt["discount"] + pt["tax"], where + " payout")
            self.assertEqual(pt["earnings"], pt["total"] - pt["tax"] - pt["fee"], where + " payout earnings")
            rate = Decimal(p["exchange_rate"])
            scale = Decimal(100) if d["currency_code"] == "JPY" else Decimal(1)
            self.assertLessEqual(abs(Decimal(t["total"]) * rate * scale - pt["total"]), 2, where + " payout rate")
        for pay in d["payments"]:
            self.assertEqual(int(pay["amount"]), t["grand_total"], where + " payment amount")
        captured = [pay for pay in d["payments"] if pay["status"] == "captured"]
        self.assertEqual(bool(captured), d["status"] in ("paid", "completed") and t["grand_total"] > 0, where)
        created = [pay["created_at"] for pay in d["payments"]]
        self.assertEqual(created, sorted(created, key=lambda s: offset(PLACEHOLDER.match(s).group(2)),
                                         reverse=True), where + " payments newest first")

    def check_adjustment(self, where, d):
        t = {k: int(v) for k, v in d["totals"].items() if k != "currency_code"}
        amounts_ok(self, where, d["totals"], [it["totals"] for it in d["items"]], ("subtotal", "tax", "total"))
        self.assertEqual(t["total"], t["subtotal"] + t["tax"], where)
        self.assertEqual(t["earnings"], t["total"] - t["tax"] - t["fee"], where + " earnings")
        for it in d["items"]:
            self.assertEqual(int(it["amount"]), int(it["totals"]["total"]), where)
        self.assertEqual(d["currency_code"], d["totals"]["currency_code"], where)

    def test_field_sets_match_real_paddle_payloads(self):
        fx = fixtures_dir()
        if fx is None:
            self.skipTest("Paddle fixtures not found (set PADDLEHOOK_FIXTURES)")
        shapes = {}
        for path in glob.glob(os.path.join(fx, "envelopes", "*.json")):
            kind = os.path.basename(path).split(".")[0]
            if kind in TABLES:
                with open(path, encoding="utf-8") as f:
                    shapes.setdefault(kind, []).append(shape(json.load(f)["data"]))
        for name, sc in SCENARIOS.items():
            for i, e in enumerate(sc["events"]):
                kind = e["event_type"].split(".")[0]
                got = shape(e["data"])
                union = set().union(*shapes[kind]) | NOT_IN_FIXTURES.get(kind, set())
                common = set.intersection(*shapes[kind])
                where = "%s[%d] %s" % (name, i, e["event_type"])
                self.assertEqual(got - union, set(), where + ": fields real Paddle payloads do not have")
                self.assertEqual(common - got, set(), where + ": fields every real Paddle payload has")
