"""make demo: paddlehook end to end on loopback, then what it stored.

Starts a throwaway PostgreSQL, `paddlehook serve` and nginx (tests/harness.py),
adds an endpoint, and has `paddlehook simulate all` deliver every billing
lifecycle it knows through nginx, signed as Paddle signs them: signups,
renewals, an upgrade, failed payments (recovered and lost), a pause, a
cancellation, refunds, a JPY one-time purchase, a yearly plan, a trial.
Then a Paddle retry (duplicate) and a forged delivery, the stored state, the
MRR, revenue and dunning reports, and an application taking the completed
transactions from its consumer queue. Stops everything it started.
"""

import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import Harness, HarnessError, make_event  # noqa: E402
from paddledata import sample_customer  # noqa: E402


def show(h, title, sql):
    print("\n== %s" % title)
    argv = [os.path.join(h.pg_bin, "psql"), "-X", "-q", "-P", "pager=off", h.conninfo, "-c", sql]
    sys.stdout.flush()
    subprocess.run(argv, check=True, env=dict(os.environ, PGTZ="UTC"))


def paddlehook(h, *args):
    print("\n$ paddlehook %s" % " ".join(args))
    sys.stdout.flush()
    return subprocess.run([h.binary] + list(args), env=h.env(), check=True)


def main():
    h = Harness(workers=2)
    print("starting PostgreSQL, paddlehook serve and nginx on 127.0.0.1 ...")
    h.start()
    try:
        ep = h.add_endpoint(name="demo-shop", environment="sandbox")
        url = h.base_url + ep.path
        secret_file = os.path.join(h.tmpdir, "demo-secret")
        fd = os.open(secret_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(ep.secret + "\n")
        print("endpoint %s  ->  %s" % (ep.name, url))

        # An application that mints licences acts once per completed transaction (docs/consumers.md).
        h.sql("INSERT INTO paddle.consumers (name, event_types) VALUES ('licences', '{transaction.completed}')")

        paddlehook(h, "simulate", "all", "--url", url, "--secret-file", secret_file)

        print("\n== Paddle retries an event, and someone forges one")
        body = make_event("customer.created", sample_customer(email="grace@example.com", name="Grace Hopper"))
        for label, secret in (("first delivery", ep.secret), ("Paddle retries it", ep.secret),
                              ("forged signature", "pdl_ntfset_not_the_secret")):
            r = h.post_event(ep, body, signature=h.sign(body, secret))
            print("%-20s %d %s" % (label, r.status, r.body.decode().strip()))

        show(h, "what was stored", "SELECT 'payment_events' AS table_name, count(*) FROM paddle.payment_events "
             "UNION ALL SELECT 'customers', count(*) FROM paddle.customers "
             "UNION ALL SELECT 'subscriptions', count(*) FROM paddle.subscriptions "
             "UNION ALL SELECT 'transactions', count(*) FROM paddle.transactions "
             "UNION ALL SELECT 'adjustments', count(*) FROM paddle.adjustments "
             "UNION ALL SELECT 'addresses', count(*) FROM paddle.addresses")
        show(h, "paddle.subscriptions (newest snapshot wins, whatever the delivery order)",
             "SELECT s.status, s.billing_cycle_interval AS cycle, s.currency_code, count(*) "
             "FROM paddle.subscriptions s GROUP BY 1, 2, 3 ORDER BY 1, 2, 3")
        paddlehook(h, "report", "mrr")
        paddlehook(h, "report", "revenue_daily")
        paddlehook(h, "report", "dunning")
        paddlehook(h, "report", "dunning_summary")
        show(h, "paddle.transaction_payments: the card behind each failed payment attempt, for the dunning mail",
             "SELECT p.transaction_id, p.created_at, p.error_code, p.card_type, p.card_last4, "
             "p.card_expiry_month || '/' || p.card_expiry_year AS expires "
             "FROM paddle.transaction_payments p WHERE p.status = 'error' ORDER BY p.created_at, p.transaction_id")
        show(h, "the application takes the completed transactions queued for it (docs/consumers.md)",
             "SELECT c.event_id, c.occurred_at, c.payload->'data'->>'id' AS transaction_id, "
             "c.payload->'data'->>'customer_id' AS customer_id "
             "FROM paddle.claim_events('licences', 5) c")
        show(h, "paddle.consumer_backlog", "SELECT consumer, queued, oldest_occurred_at FROM paddle.consumer_backlog")
    finally:
        h.stop()
    print("\nstopped; nothing left running.")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (HarnessError, subprocess.CalledProcessError) as exc:
        sys.stderr.write("demo failed: %s\n" % exc)
        sys.exit(1)
