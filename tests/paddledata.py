"""Paddle-shaped test data for paddlehook's tests: ids, envelopes, signatures,
entity snapshots modelled on the SDK fixtures, timestamps.

Pure functions, no processes; harness.py re-exports everything here.
"""

import base64
import collections
import datetime
import hashlib
import hmac
import json
import os
import re
import secrets as _secrets
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS_DIR = os.path.join(REPO_ROOT, "tests")


# --------------------------------------------------------------------------
# Paddle-shaped data
# --------------------------------------------------------------------------

_CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"


def paddle_id(prefix):
    """A fresh Paddle-style id: prefix_ + 26 lowercase Crockford base32 chars
    (10 from the millisecond clock, 16 random), like evt_01h7ht60jy5hpdv5x8tfsaxje4."""
    ms = int(time.time() * 1000)
    head = ""
    for _ in range(10):
        head = _CROCKFORD[ms % 32] + head
        ms //= 32
    rand = "".join(_CROCKFORD[b % 32] for b in _secrets.token_bytes(16))
    return "%s_%s%s" % (prefix, head, rand)


def rfc3339(dt=None):
    """RFC 3339 UTC with microseconds, as Paddle writes occurred_at."""
    if dt is None:
        dt = datetime.datetime.now(datetime.timezone.utc)
    dt = dt.astimezone(datetime.timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def make_event(event_type, data, event_id=None, occurred_at=None,
               notification_id=None, as_dict=False):
    """A notification envelope as compact JSON bytes (or the dict)."""
    env = collections.OrderedDict()
    env["event_id"] = event_id or paddle_id("evt")
    env["event_type"] = event_type
    env["occurred_at"] = occurred_at or rfc3339()
    env["notification_id"] = notification_id or paddle_id("ntf")
    env["data"] = data
    if as_dict:
        return env
    return json.dumps(env, separators=(",", ":")).encode()


def new_secret():
    """A fresh endpoint secret shaped like Paddle's (includes + and /)."""
    tail_ = base64.b64encode(_secrets.token_bytes(24)).decode()
    return "pdl_ntfset_%s_%s" % (paddle_id("x")[2:], tail_)


def hmac_h1(secret, ts, body):
    if isinstance(secret, str):
        secret = secret.encode()
    if isinstance(body, str):
        body = body.encode()
    return hmac.new(secret, str(ts).encode() + b":" + body, hashlib.sha256).hexdigest()


def py_sign(body, secrets, ts=None, extra=()):
    """Paddle-Signature computed in Python: ts=..;h1=.. (one h1 per secret).

    secrets: one secret or a list; extra: raw "k=v" parts appended.
    """
    if ts is None:
        ts = int(time.time())
    if isinstance(secrets, (str, bytes)):
        secrets = [secrets]
    parts = ["ts=%s" % ts] + ["h1=%s" % hmac_h1(s, ts, body) for s in secrets]
    parts.extend(extra)
    return ";".join(parts)


def fixtures_dir():
    """Where the Paddle fixtures live, or None.

    PADDLEHOOK_FIXTURES, else the copy in the repository, tests/fixtures/paddle
    (see its SOURCES.md).
    """
    candidates = [
        os.environ.get("PADDLEHOOK_FIXTURES"),
        os.path.join(TESTS_DIR, "fixtures", "paddle"),
    ]
    for c in candidates:
        if c and os.path.isdir(os.path.join(c, "envelopes")):
            return c
    return None


# --------------------------------------------------------------------------
# Paddle-shaped entity snapshots (modelled on the SDK fixtures)
# --------------------------------------------------------------------------

def _price(price_id, amount, currency="USD", product_id=None):
    return {
        "id": price_id,
        "product_id": product_id or paddle_id("pro"),
        "description": "Monthly (per seat)",
        "tax_mode": "account_setting",
        "billing_cycle": {"interval": "month", "frequency": 1},
        "trial_period": None,
        "unit_price": {"amount": str(amount), "currency_code": currency},
        "custom_data": None,
    }


def sample_customer(customer_id=None, status="active", email=None, name="Jo Tester",
                    at=None):
    at = at or rfc3339()
    customer_id = customer_id or paddle_id("ctm")
    return {
        "id": customer_id,
        "name": name,
        "email": email or "%s@example.com" % customer_id,
        "locale": "en",
        "status": status,
        "created_at": at,
        "updated_at": at,
        "custom_data": None,
        "import_meta": None,
        "marketing_consent": False,
    }


def sample_subscription(sub_id=None, status="active", customer_id=None, currency="USD",
                        items=((3240, 10), (10800, 1)), at=None):
    """A subscription snapshot; items are (unit amount, quantity) pairs."""
    at = at or rfc3339()
    sub_id = sub_id or paddle_id("sub")
    customer_id = customer_id or paddle_id("ctm")
    item_list = []
    for amount, qty in items:
        item_list.append({
            "status": "active",
            "quantity": qty,
            "recurring": True,
            "created_at": at,
            "updated_at": at,
            "trial_dates": None,
            "next_billed_at": "2030-01-11T08:07:35.449123Z",
            "previously_billed_at": "2029-12-11T08:07:35.449123Z",
            "price": _price(paddle_id("pri"), amount, currency),
        })
    return {
        "id": sub_id,
        "status": status,
        "customer_id": customer_id,
        "address_id": paddle_id("add"),
        "business_id": None,
        "currency_code": currency,
        "created_at": at,
        "updated_at": at,
        "started_at": at,
        "first_billed_at": at,
        "next_billed_at": None if status in ("paused", "canceled") else "2030-01-11T08:07:35.449123Z",
        "paused_at": at if status == "paused" else None,
        "canceled_at": at if status == "canceled" else None,
        "discount": None,
        "collection_mode": "automatic",
        "billing_details": None,
        "current_billing_period": {"starts_at": "2029-12-11T08:07:35.449123Z",
                                   "ends_at": "2030-01-11T08:07:35.449123Z"},
        "billing_cycle": {"interval": "month", "frequency": 1},
        "scheduled_change": None,
        "items": item_list,
        "custom_data": {"team": "qa"},
        "management_urls": None,
    }


def sample_transaction(txn_id=None, status="completed", customer_id=None, currency="USD",
                       subscription_id=None, items=((3000, 1),), tax_rate_bp=1000, at=None):
    """A transaction snapshot; totals follow from items (amount, quantity)."""
    at = at or rfc3339()
    txn_id = txn_id or paddle_id("txn")
    subtotal = sum(a * q for a, q in items)
    tax = subtotal * tax_rate_bp // 10000
    total = subtotal + tax
    fee = total * 5 // 100 if status in ("paid", "completed") else 0
    earnings = total - tax - fee if fee else 0
    totals = {
        "subtotal": str(subtotal), "discount": "0", "tax": str(tax), "total": str(total),
        "credit": "0", "credit_to_balance": "0", "balance": str(total), "grand_total": str(total),
        "fee": str(fee) if fee else None, "earnings": str(earnings) if fee else None,
        "currency_code": currency,
    }
    item_list, line_items = [], []
    for amount, qty in items:
        pr = _price(paddle_id("pri"), amount, currency)
        item_list.append({"price": pr, "quantity": qty, "proration": None})
        line_items.append({
            "id": paddle_id("txnitm"), "price_id": pr["id"], "quantity": qty,
            "totals": {"subtotal": str(amount * qty), "tax": str(amount * qty * tax_rate_bp // 10000),
                       "discount": "0",
                       "total": str(amount * qty + amount * qty * tax_rate_bp // 10000)},
            "product": {"id": pr["product_id"], "name": "Widget", "status": "active"},
            "tax_rate": "%.2f" % (tax_rate_bp / 10000.0),
            "unit_totals": {"subtotal": str(amount), "discount": "0", "tax": "0", "total": str(amount)},
        })
    return {
        "id": txn_id,
        "status": status,
        "customer_id": customer_id or paddle_id("ctm"),
        "address_id": paddle_id("add"),
        "business_id": None,
        "custom_data": None,
        "origin": "subscription_recurring" if subscription_id else "web",
        "collection_mode": "automatic",
        "subscription_id": subscription_id,
        "invoice_id": None,
        "invoice_number": None,
        "billing_details": None,
        "billing_period": None,
        "currency_code": currency,
        "discount_id": None,
        "created_at": at,
        "updated_at": at,
        "billed_at": at if status in ("billed", "paid", "completed") else None,
        "items": item_list,
        "details": {
            "tax_rates_used": [{"tax_rate": "%.2f" % (tax_rate_bp / 10000.0), "totals": {
                "subtotal": str(subtotal), "discount": "0", "tax": str(tax), "total": str(total)}}],
            "totals": totals,
            "adjusted_totals": {"subtotal": str(subtotal), "tax": str(tax), "total": str(total),
                                "grand_total": str(total), "fee": "0", "earnings": "0",
                                "currency_code": currency},
            "payout_totals": None,
            "adjusted_payout_totals": None,
            "line_items": line_items,
            "payment_terms": {"interval": "day", "frequency": 14},
        },
        "payments": [],
        "checkout": {"url": None},
    }


def sample_adjustment(adj_id=None, status="pending_approval", transaction_id=None,
                      customer_id=None, currency="USD", amount=1100, at=None):
    at = at or rfc3339()
    return {
        "id": adj_id or paddle_id("adj"),
        "action": "refund",
        "type": "partial",
        "transaction_id": transaction_id or paddle_id("txn"),
        "subscription_id": None,
        "customer_id": customer_id or paddle_id("ctm"),
        "reason": "error",
        "credit_applied_to_balance": None,
        "currency_code": currency,
        "status": status,
        "items": [{"id": paddle_id("adjitm"), "item_id": paddle_id("txnitm"), "type": "partial",
                   "amount": str(amount), "proration": None,
                   "totals": {"subtotal": str(amount - amount // 11), "tax": str(amount // 11),
                              "total": str(amount)}}],
        "totals": {"subtotal": str(amount - amount // 11), "tax": str(amount // 11),
                   "total": str(amount), "fee": str(amount // 20),
                   "earnings": str(amount - amount // 11 - amount // 20), "currency_code": currency},
        "payout_totals": None,
        "created_at": at,
        "updated_at": at,
    }


def parse_ts(text, envelope=False):
    """RFC 3339 (0-9 fractional digits, Z or +hh:mm) -> aware datetime cut to
    microseconds, as paddle.to_ts stores a snapshot's timestamps; envelope=True:
    rounded, as the cast of the envelope's occurred_at does; None for None."""
    if text is None:
        return None
    m = re.match(r"^(\d{4}-\d\d-\d\d)[Tt ](\d\d:\d\d:\d\d)(?:\.(\d+))?([Zz]|[+-]\d\d:?\d\d)$", text)
    if not m:
        raise ValueError("not an RFC 3339 timestamp: %r" % text)
    date, clock, frac, tz = m.groups()
    tz = "+00:00" if tz in ("Z", "z") else tz
    base = datetime.datetime.fromisoformat("%sT%s%s" % (date, clock, tz))
    frac = frac or "0"
    if len(frac) <= 6:
        micros = int(frac) * 10 ** (6 - len(frac))
    elif not envelope:
        micros = int(frac[:6])
    else:  # round half up to microseconds
        micros = (int(frac) * 10 ** 6 + 10 ** len(frac) // 2) // 10 ** len(frac)
    return (base + datetime.timedelta(microseconds=micros)).astimezone(datetime.timezone.utc)
