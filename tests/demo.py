"""make demo: paddlehook end to end on loopback, then what it stored.

Starts a throwaway PostgreSQL, `paddlehook serve` and nginx (tests/harness.py),
adds an endpoint, and delivers one customer's billing life through nginx,
each notification signed by `paddlehook sign`: signup, first payment, an
upgrade delivered before the subscription it updates, a failed renewal and
its recovery, a partial refund, a one-time purchase in JPY, a cancellation,
plus a Paddle retry (duplicate) and a forged delivery. Then prints the
stored state and stops everything it started.
"""

import datetime
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import Harness, HarnessError, make_event, paddle_id  # noqa: E402
from paddledata import (sample_adjustment, sample_customer, sample_subscription,  # noqa: E402
                        sample_transaction)

START = datetime.datetime(2026, 1, 5, 9, 0, tzinfo=datetime.timezone.utc)


def at(days, minutes=0):
    t = START + datetime.timedelta(days=days, minutes=minutes)
    return t.strftime("%Y-%m-%dT%H:%M:%S.%f") + "Z"


def lifecycle():
    """(label, event type, body) in the order Paddle delivers them here."""
    ctm, sub, pro = paddle_id("ctm"), paddle_id("sub"), paddle_id("pro")
    txn_first, txn_renewal, txn_jpy = paddle_id("txn"), paddle_id("txn"), paddle_id("txn")

    customer = sample_customer(ctm, email="ada@example.com", name="Ada Lovelace", at=at(0))
    sub_created = sample_subscription(sub, customer_id=ctm, items=((2900, 1),), at=at(0, 1))
    sub_created["transaction_id"] = txn_first
    sub_created["custom_data"] = {"utm_source": "newsletter"}
    first_payment = sample_transaction(txn_first, customer_id=ctm, subscription_id=sub,
                                       items=((2900, 1),), at=at(0, 1))
    first_payment["origin"] = "web"

    upgrade = sample_subscription(sub, customer_id=ctm, items=((2900, 3),), at=at(10))
    upgrade["custom_data"] = {"utm_source": "newsletter"}

    failed = sample_transaction(txn_renewal, status="past_due", customer_id=ctm,
                                subscription_id=sub, items=((2900, 3),), at=at(31))
    failed["payments"] = [{"status": "error", "error_code": "declined", "created_at": at(31)}]
    past_due = dict(upgrade, status="past_due", updated_at=at(31))
    recovered = sample_transaction(txn_renewal, customer_id=ctm, subscription_id=sub,
                                   items=((2900, 3),), at=at(33))
    recovered["payments"] = [{"status": "error", "error_code": "declined", "created_at": at(31)},
                             {"status": "captured", "error_code": None, "created_at": at(33)}]
    active_again = dict(upgrade, status="active", updated_at=at(33))

    refund = sample_adjustment(transaction_id=txn_first, customer_id=ctm, amount=1000,
                               status="approved", at=at(35))
    refund["subscription_id"] = sub
    jpy = sample_transaction(txn_jpy, customer_id=ctm, currency="JPY", items=((4800, 1),),
                             at=at(40))
    canceled = dict(upgrade, status="canceled", canceled_at=at(60), next_billed_at=None,
                    current_billing_period=None, updated_at=at(60))

    events = [
        ("new customer", "customer.created", make_event("customer.created", customer, occurred_at=at(0))),
        ("first payment", "transaction.completed", make_event("transaction.completed", first_payment, occurred_at=at(0, 1))),
        # The upgrade arrives before the subscription it updates: the older
        # snapshot must not overwrite it when it arrives next.
        ("upgrade to 3 seats (early)", "subscription.updated", make_event("subscription.updated", upgrade, occurred_at=at(10))),
        ("subscription created (late)", "subscription.created", make_event("subscription.created", sub_created, occurred_at=at(0, 1))),
        ("renewal payment fails", "transaction.payment_failed", make_event("transaction.payment_failed", failed, occurred_at=at(31))),
        ("subscription past due", "subscription.past_due", make_event("subscription.past_due", past_due, occurred_at=at(31, 1))),
        ("renewal recovered", "transaction.completed", make_event("transaction.completed", recovered, occurred_at=at(33))),
        ("subscription active again", "subscription.updated", make_event("subscription.updated", active_again, occurred_at=at(33, 1))),
        ("partial refund", "adjustment.created", make_event("adjustment.created", refund, occurred_at=at(35))),
        ("one-time purchase in JPY", "transaction.completed", make_event("transaction.completed", jpy, occurred_at=at(40))),
        ("cancellation", "subscription.canceled", make_event("subscription.canceled", canceled, occurred_at=at(60))),
        ("an event type not projected", "payout.paid", make_event("payout.paid", {"id": paddle_id("pay"),
                                                                   "status": "paid"}, occurred_at=at(61))),
    ]
    return events


def show(h, title, sql):
    print("\n== %s" % title)
    argv = [os.path.join(h.pg_bin, "psql"), "-X", "-q", "-P", "pager=off", h.conninfo, "-c", sql]
    sys.stdout.flush()
    subprocess.run(argv, check=True, env=dict(os.environ, PGTZ="UTC"))


def main():
    h = Harness(workers=2)
    print("starting PostgreSQL, paddlehook serve and nginx on 127.0.0.1 ...")
    h.start()
    try:
        ep = h.add_endpoint(name="demo-shop", environment="sandbox")
        print("endpoint %s  ->  %s%s" % (ep.name, h.base_url, ep.path))
        print("\n== deliveries through nginx (signed by `paddlehook sign`)")
        events = lifecycle()
        def deliver(label, event_type, body, secret=ep.secret):
            r = h.post_event(ep, body, signature=h.sign(body, secret))
            print("%-34s %-27s %d %s" % (label, event_type, r.status, r.body.decode().strip()))

        for label, event_type, body in events:
            deliver(label, event_type, body)
        label, event_type, body = events[6]
        deliver("Paddle retries: " + label, event_type, body)
        deliver("forged signature", event_type, body, secret="pdl_ntfset_not_the_secret")

        show(h, "paddle.payment_events", "SELECT event_type, occurred_at, environment, "
             "projection_error IS NOT NULL AS projection_failed FROM paddle.payment_events "
             "ORDER BY occurred_at")
        show(h, "paddle.customers", "SELECT id, email, name, status FROM paddle.customers")
        show(h, "paddle.subscriptions (newest snapshot wins, whatever the delivery order)",
             "SELECT s.id, s.status, s.billing_cycle_interval AS cycle, s.canceled_at, "
             "s.custom_data->>'utm_source' AS utm_source, sum(i.quantity) AS seats "
             "FROM paddle.subscriptions s LEFT JOIN paddle.subscription_items i "
             "ON i.subscription_id = s.id GROUP BY s.id")
        show(h, "paddle.transactions (amounts in the currency's minor unit)",
             "SELECT id, status, origin, currency_code, subtotal, tax, grand_total, fee, earnings, "
             "payment_attempts, last_payment_status FROM paddle.transactions ORDER BY created_at")
        show(h, "paddle.adjustments", "SELECT id, action, type, status, transaction_id, total "
             "FROM paddle.adjustments")
    finally:
        h.stop()
    print("\nstopped; nothing left running.")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except HarnessError as exc:
        sys.stderr.write("demo failed: %s\n" % exc)
        sys.exit(1)
