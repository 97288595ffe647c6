"""Paddle-shaped snapshots with stable ids, and the expected rows of the report views.

Shared by the report tests (test_reports.py, test_report_invariants.py, test_reproject.py) and their
scenarios (report_scenarios.py). Nothing here talks to a database.
"""

import datetime
import decimal

from harness import paddle_id, rfc3339, sample_adjustment, sample_customer, sample_subscription, sample_transaction

UTC = datetime.timezone.utc
NOW = datetime.datetime.now(UTC).replace(microsecond=0)

REPORT_VIEWS = ("revenue_daily", "mrr", "mrr_movements", "subscription_status_counts", "churn_monthly",
                "dunning", "dunning_summary", "refunds", "entitlements", "attribution")
HELPER_VIEWS = ("entity_snapshots", "subscription_history", "revenue_transactions", "adjustment_facts")
STATE_TABLES = ("customers", "subscriptions", "subscription_items", "transactions", "transaction_items",
                "adjustments", "adjustment_items", "addresses", "businesses", "products", "prices", "discounts")


# --------------------------------------------------------------------------
# time, numbers
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
                 item_status="active", address_id=None):
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
    if address_id:
        d["address_id"] = address_id
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


def address(aid, cid, country, at="2024-01-01 00:00"):
    """An address snapshot in the shape of Paddle's address.* events."""
    return {"id": aid, "customer_id": cid, "description": None, "first_line": "1 Test Street", "second_line": None,
            "city": "Testville", "postal_code": "00000", "region": None, "country_code": country,
            "status": "active", "custom_data": None, "created_at": T(at), "updated_at": T(at)}


# --------------------------------------------------------------------------
# Expected rows
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
