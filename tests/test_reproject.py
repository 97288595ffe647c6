"""paddle.reproject() and `paddlehook reproject`: rebuilding the state tables from the stored events leaves
every report view unchanged, also while deliveries keep arriving."""

import datetime
import json
import random
import signal
import subprocess
import threading
import time

import harness
from harness import (ITEMS_FROM_OTHER_DATA, make_event, paddle_id, rfc3339, sample_customer, sample_subscription,
                     wait_until)
from report_scenarios import report_module
from reportdata import HELPER_VIEWS, REPORT_VIEWS, STATE_TABLES, UTC, Price, adjustment, subscription, transaction

H, DB, ReportCase = report_module()
setUpModule, tearDownModule = H.start, H.stop
load, load_all = DB.load, DB.load_all


def view_texts():
    """Every report and building-block view and every state table, in full, as text."""
    out = {}
    for v in REPORT_VIEWS + HELPER_VIEWS:
        out[v] = H.sql("SELECT t::text FROM paddle.%s t ORDER BY 1" % v)
    for t in STATE_TABLES:
        # Which of several snapshots with equal items wrote the item rows depends on the order they were
        # applied in (paddle.reproject replays by occurred_at): compare the rows, not that provenance.
        out[t] = H.sql("SELECT (to_jsonb(t) - 'updated_in_db_at' - 'items_event_id'%s)::text "
                       "FROM paddle.%s t ORDER BY 1"
                       % (" - 'event_id' - 'occurred_at'" if t.endswith("_items") else "", t))
    return out


NEWEST_MISMATCHES = """
WITH newest AS (
    -- the newest snapshot; a live one wins over any sandbox one with the same id
    SELECT DISTINCT ON (entity, entity_id) entity, entity_id, event_id
    FROM paddle.entity_snapshots WHERE projection_error IS NULL
    ORDER BY entity, entity_id, environment = 'live' DESC, occurred_at DESC, event_id DESC
), state AS (
    SELECT 'customer' AS entity, id, event_id FROM paddle.customers
    UNION ALL SELECT 'subscription', id, event_id FROM paddle.subscriptions
    UNION ALL SELECT 'transaction', id, event_id FROM paddle.transactions
    UNION ALL SELECT 'adjustment', id, event_id FROM paddle.adjustments
    UNION ALL SELECT 'address', id, event_id FROM paddle.addresses
    UNION ALL SELECT 'business', id, event_id FROM paddle.businesses
    UNION ALL SELECT 'product', id, event_id FROM paddle.products
    UNION ALL SELECT 'price', id, event_id FROM paddle.prices
    UNION ALL SELECT 'discount', id, event_id FROM paddle.discounts
)
SELECT coalesce(n.entity, s.entity), coalesce(n.entity_id, s.id), n.event_id, s.event_id
FROM newest n FULL JOIN state s ON s.entity = n.entity AND s.id = n.entity_id
WHERE n.event_id IS DISTINCT FROM s.event_id
UNION ALL
SELECT 'subscription_items', i.subscription_id, p.items_event_id, i.event_id
FROM paddle.subscription_items i LEFT JOIN paddle.subscriptions p ON p.id = i.subscription_id
WHERE p.items_event_id IS DISTINCT FROM i.event_id
UNION ALL
SELECT 'transaction_items', i.transaction_id, p.items_event_id, i.event_id
FROM paddle.transaction_items i LEFT JOIN paddle.transactions p ON p.id = i.transaction_id
WHERE p.items_event_id IS DISTINCT FROM i.event_id
UNION ALL
SELECT 'adjustment_items', i.adjustment_id, p.items_event_id, i.event_id
FROM paddle.adjustment_items i LEFT JOIN paddle.adjustments p ON p.id = i.adjustment_id
WHERE p.items_event_id IS DISTINCT FROM i.event_id
UNION ALL
SELECT 'items_source', entity || ' ' || id, event_id, items_event_id FROM ({items}) AS mismatched
""".replace("{items}", ITEMS_FROM_OTHER_DATA)


def rebuild_differences():
    """Rebuild everything with paddle.reproject() in a transaction that is rolled back; the rows that differ
    from the current state tables (updated_in_db_at aside), per table."""
    parts = ["BEGIN;"]
    for t in STATE_TABLES:
        parts.append("CREATE TEMP TABLE before_%s AS SELECT to_jsonb(t) - 'updated_in_db_at' AS j FROM paddle.%s t;"
                     % (t, t))
    parts.append("SELECT paddle.reproject() AS replayed \\gset")
    parts.append(" UNION ALL ".join(
        "SELECT %s, ((SELECT count(*) FROM (SELECT j FROM before_%s EXCEPT ALL SELECT to_jsonb(t) - "
        "'updated_in_db_at' FROM paddle.%s t) a) + (SELECT count(*) FROM (SELECT to_jsonb(t) - 'updated_in_db_at' "
        "FROM paddle.%s t EXCEPT ALL SELECT j FROM before_%s) b))::text" % (H.lit(t), t, t, t, t)
        for t in STATE_TABLES) + ";")
    parts.append("ROLLBACK;")
    return {r[0]: int(r[1]) for r in H.sql("\n".join(parts))}


class Reproject(ReportCase):
    @classmethod
    def setUpClass(cls):
        load_all()

    def test_full_reproject_leaves_every_view_unchanged(self):
        before = view_texts()
        self.assertTrue(all(before[v] for v in REPORT_VIEWS), "a report is empty")
        expected = int(H.sql_value("SELECT count(*) FROM paddle.payment_events WHERE split_part(event_type, '.', 1) "
                                   "IN ('customer', 'subscription', 'transaction', 'adjustment', 'address', 'business', "
                                   "'product', 'price', 'discount')"))
        self.assertEqual(int(H.sql_value("SELECT paddle.reproject()")), expected)
        after = view_texts()
        for k in before:
            self.assertEqual(before[k], after[k], k)
        self.assertEqual(H.sql(NEWEST_MISMATCHES), [])

    def test_the_creating_transaction_outlives_later_snapshots(self):
        # Paddle sends transaction_id in subscription.created only; subscription.activated follows 54 ms later
        # without it. In order, and the other way round; a rebuild (occurred_at order) gives the same.
        p = Price(2500, "UAH")
        f = DB.feed()
        created_at = datetime.datetime(2024, 3, 1, 9, 0, tzinfo=UTC)
        subs = {}
        for key in ("in_order", "reversed"):
            sid, cid, tid = paddle_id("sub"), paddle_id("ctm"), paddle_id("txn")
            subs[sid] = tid
            created = subscription(sid, cid, "UAH", "active", [(p, 1)], created_at)
            created["transaction_id"] = tid
            activated = dict(created, transaction_id=None)
            events = [f.add("subscription.created", created, created_at),
                      f.add("subscription.activated", activated, created_at + datetime.timedelta(milliseconds=54))]
            f.post(events if key == "in_order" else events[::-1])

        def stored():
            return dict(H.sql("SELECT id, transaction_id FROM paddle.subscriptions WHERE id IN (%s)"
                              % ", ".join(H.lit(sid) for sid in subs)))

        self.assertEqual(stored(), subs)
        H.sql("SELECT paddle.reproject()")
        self.assertEqual(stored(), subs)

    def test_reproject_since_rebuilds_only_recent_entities(self):
        s_min, s_ref = load("minor_units"), load("refunds")
        before = view_texts()
        since = "2024-04-05 00:00:00+00"
        untouched = H.sql_value("SELECT updated_in_db_at::text FROM paddle.transactions WHERE id = %s"
                                % H.lit(s_min["tj1"]))
        # lose a state row of an entity with a recent event: the partial rebuild restores it
        H.sql("DELETE FROM paddle.adjustments WHERE id = %s" % H.lit(s_ref["partial"]))
        expected = int(H.sql_value(
            "SELECT count(*) FROM paddle.entity_snapshots s WHERE EXISTS (SELECT 1 FROM paddle.entity_snapshots r "
            "WHERE r.entity = s.entity AND r.entity_id = s.entity_id AND r.occurred_at >= '%s')" % since))
        self.assertEqual(int(H.sql_value("SELECT paddle.reproject('%s')" % since)), expected)
        after = view_texts()
        for k in before:
            self.assertEqual(before[k], after[k], k)
        self.assertEqual(H.sql_value("SELECT updated_in_db_at::text FROM paddle.transactions WHERE id = %s"
                                     % H.lit(s_min["tj1"])), untouched)
        self.assertEqual(H.sql(NEWEST_MISMATCHES), [])

    def test_projection_error_bookkeeping(self):
        s = load("upgrade")
        eid = H.sql_value("SELECT event_id FROM paddle.subscriptions WHERE id = %s" % H.lit(s["sub"]))
        H.sql("UPDATE paddle.payment_events SET projection_error = 'XX000: stale' WHERE event_id = %s" % H.lit(eid))
        H.sql("SELECT paddle.reproject()")
        self.assertIsNone(H.sql_value("SELECT projection_error FROM paddle.payment_events WHERE event_id = %s"
                                      % H.lit(eid)))

    def test_refuses_snapshot_isolation(self):
        with self.assertRaises(Exception) as cm:
            H.sql("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT paddle.reproject(); COMMIT;")
        self.assertIn("READ COMMITTED", str(cm.exception))

    def test_reproject_command(self):
        before = view_texts()
        out = H.cli("reproject").stdout
        self.assertRegex(out, r"replayed \d+ event")
        out = H.cli("reproject", "--since", "2024-03-01T00:00:00Z").stdout
        self.assertRegex(out, r"replayed \d+ event")
        self.assertEqual(view_texts(), before)


class ReprojectWhileDelivering(ReportCase):
    SEED = 1500

    @classmethod
    def setUpClass(cls):
        cls.ep = H.add_endpoint()
        template = make_event("subscription.updated", sample_subscription(currency="ZAR", items=((2500, 1),)),
                              as_dict=True)
        # A log big enough that a rebuild takes a moment; stored straight through paddle.ingest_event.
        H.sql("SELECT count(paddle.ingest_event('evt_seed' || g, 'subscription.updated', t, 'ntf_seed' || g, %s, "
              "'sandbox', jsonb_set(%s::jsonb, '{data,id}', to_jsonb('sub_seed' || g %% 1000)))) "
              "FROM generate_series(1, %d) g, LATERAL (SELECT '2023-06-01'::timestamptz + g * interval '1 minute') x(t)"
              % (H.lit(cls.ep.id), H.lit(json.dumps(template)), cls.SEED))

    def test_rebuild_while_deliveries_continue(self):
        stop = threading.Event()
        log, failures = [], []
        lock = threading.Lock()

        def deliver(worker):
            rng = random.Random(worker)
            subs = [(paddle_id("sub"), paddle_id("ctm")) for _ in range(8)]
            txns = [(paddle_id("txn"), paddle_id("ctm")) for _ in range(6)]
            adjs = [(paddle_id("adj"), paddle_id("txn"), paddle_id("ctm")) for _ in range(3)]
            price = Price(3000, "ZAR")
            base = datetime.datetime(2025, 1, 1, tzinfo=UTC)
            while not stop.is_set():
                at = base + datetime.timedelta(seconds=rng.randrange(0, 86400 * 30))   # often older: out of order
                kind = rng.random()
                if kind < 0.6:
                    sid, cid = rng.choice(subs)
                    status = rng.choice(("active", "active", "past_due", "paused", "canceled"))
                    env = make_event("subscription.updated", subscription(sid, cid, "ZAR", status,
                                                                          [(price, rng.randint(1, 5))], at),
                                     occurred_at=rfc3339(at), as_dict=True)
                elif kind < 0.9:
                    tid, cid = rng.choice(txns)
                    status = rng.choice(("ready", "paid", "completed", "past_due"))
                    env = make_event("transaction.updated", transaction(tid, cid, "ZAR", status,
                                                                        [(price, rng.randint(1, 3))], at),
                                     occurred_at=rfc3339(at), as_dict=True)
                else:
                    aid, tid, cid = rng.choice(adjs)
                    env = make_event("adjustment.updated", adjustment(aid, tid, cid, "ZAR", rng.randint(100, 900),
                                                                      rng.choice(("pending_approval", "approved")), at),
                                     occurred_at=rfc3339(at), as_dict=True)
                body = json.dumps(env).encode()
                for _attempt in range(20):               # like Paddle: retry what was not acknowledged
                    t0 = time.monotonic()
                    r = H.post_event(self.ep, body)
                    t1 = time.monotonic()
                    with lock:
                        log.append((t0, t1, r.status))
                    if r.status == 200:
                        break
                    time.sleep(0.2)
                else:
                    with lock:
                        failures.append((env["event_id"], r))

        threads = [threading.Thread(target=deliver, args=(i,), daemon=True) for i in range(3)]
        for t in threads:
            t.start()
        windows, counts = [], []
        try:
            time.sleep(0.3)
            for since in (None, None, "2025-01-10 00:00:00+00", None):
                t0 = time.monotonic()
                counts.append(int(H.sql_value("SELECT paddle.reproject(%s)" % (H.lit(since) if since else ""))))
                windows.append((t0, time.monotonic()))
                time.sleep(0.15)
        finally:
            stop.set()
            for t in threads:
                t.join(30)
        self.assertEqual(failures, [])
        self.assertGreaterEqual(counts[0], self.SEED)
        during = [e for e in log if any(w0 <= e[0] < w1 for w0, w1 in windows)]
        self.assertGreater(len(during), 0, "no delivery overlapped a rebuild (windows %r)" % windows)
        self.assertTrue(all(status in (200, 503) for _, _, status in log), set(s for _, _, s in log))
        # Every state row holds the newest snapshot of its entity, items included ...
        self.assertEqual(H.sql(NEWEST_MISMATCHES), [])
        # ... and is exactly what projecting that snapshot gives (a quiet full rebuild changes nothing).
        self.assertEqual(rebuild_differences(), {t: 0 for t in STATE_TABLES})


REPROJECT_SESSIONS = ("SELECT count(*) FROM pg_stat_activity "
                      "WHERE query LIKE 'SELECT paddle.reproject(%' AND pid <> pg_backend_pid()")


class ReprojectWaitingForATable(ReportCase):
    """A rebuild that waits for a table (a VACUUM, an index build, a long transaction holds it) must not hold
    the deliveries that project into the tables it has locked meanwhile, and a rebuild whose command is
    interrupted must not go on by itself."""

    def start_rebuild(self, holder_tag):
        """`paddlehook reproject` behind a SHARE UPDATE EXCLUSIVE lock (what VACUUM and CREATE INDEX
        CONCURRENTLY take) on paddle.transactions, the fourth table it locks; returns it once it waits."""
        holder = H.in_flight("LOCK TABLE paddle.transactions IN SHARE UPDATE EXCLUSIVE MODE", 8, holder_tag)
        self.addCleanup(holder.join, 30)
        proc = subprocess.Popen([H.binary, "reproject"], env=H.env(), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                preexec_fn=harness._set_pdeathsig)
        self.addCleanup(lambda: proc.poll() is not None or (proc.kill(), proc.communicate()))
        wait_until(lambda: H.sql_value(REPROJECT_SESSIONS) == "1", timeout=10, what="the rebuild to start")
        time.sleep(0.5)   # past its first try at the locks
        return holder, proc

    def test_deliveries_go_on_while_a_rebuild_waits_for_a_table(self):
        ep = H.add_endpoint()
        holder, proc = self.start_rebuild("test_vacuum_stand_in")
        customer = sample_customer()
        sub = sample_subscription()
        # customers and subscriptions come before transactions in the rebuild's order
        self.assertStored(H.post_event(ep, make_event("customer.created", customer)))
        self.assertStored(H.post_event(ep, make_event("subscription.created", sub)))
        self.assertEqual(H.sql_value(REPROJECT_SESSIONS), "1", "the rebuild is still waiting")
        holder.join(30)
        out, err = proc.communicate(timeout=60)
        self.assertEqual(proc.returncode, 0, err)
        self.assertRegex(out, r"replayed \d+ event")
        self.assertIn("waiting for the state tables", err)
        self.assertIsNotNone(H.state_row("paddle.customers", customer["id"]))
        self.assertIsNotNone(H.state_row("paddle.subscriptions", sub["id"]))

    def test_a_callers_lock_timeout_still_bounds_the_whole_wait(self):
        holder = H.in_flight("LOCK TABLE paddle.transactions IN SHARE UPDATE EXCLUSIVE MODE", 4,
                             "test_bounded_wait_holder")
        try:
            with self.assertRaises(harness.HarnessError) as raised:
                H.sql("SET lock_timeout = '1s'; SELECT paddle.reproject()")
        finally:
            holder.join(30)
        self.assertIn("paddle.reproject() waited 1s (lock_timeout) for the state tables", str(raised.exception))

    def test_an_interrupted_rebuild_ends_its_session(self):
        _, proc = self.start_rebuild("test_long_holder")
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=10)
        # while the holder still holds its lock (8 s)
        wait_until(lambda: H.sql_value(REPROJECT_SESSIONS) == "0", timeout=4, interval=0.1,
                   what="the server to end the rebuild of an interrupted command")


class ReprojectLosingItsCommitAnswer(ReportCase):
    def test_a_rebuild_whose_commit_answer_is_lost_is_not_called_failed(self):
        ep = H.add_endpoint()
        self.assertStored(H.post_event(ep, make_event("customer.created", sample_customer())))
        p = H.cli_losing_commit_answer(["reproject"])
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("asking the database what became of the transaction", p.stderr)
        self.assertRegex(p.stdout, r"replayed \d+ event")
