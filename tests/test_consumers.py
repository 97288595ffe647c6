"""Consumer queues (sql/migrations/0010_consumers.sql, docs/consumers.md).

Events are delivered through nginx and the worker; the application's side is
plain SQL (paddle.claim_events) in psql sessions, as an application would run
it.  Each test registers its own consumers, so the queues it checks hold only
its own events.
"""

import datetime
import json
import os
import sys
import threading
import unittest

if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402
from harness import (Harness, HarnessTestCase, make_event, paddle_id, py_sign, rfc3339,  # noqa: E402
                     sample_customer, sample_subscription, sample_transaction)

H = Harness(workers=2)


def setUpModule():
    H.start()


def tearDownModule():
    H.stop()


def consumer(name, event_types=None, environment=None):
    """Register a consumer; its name gets a unique suffix."""
    name = "%s_%s" % (name, paddle_id("c")[-8:])
    types = "NULL" if event_types is None else "ARRAY[%s]::text[]" % ",".join(H.lit(t) for t in event_types)
    H.sql("INSERT INTO paddle.consumers (name, event_types, environment) VALUES (%s, %s, %s)"
          % (H.lit(name), types, H.lit(environment)))
    return name


def own_type(entity):
    """An event type no other test stores (stored and projected as its entity):
    a consumer of it sees only this test's events."""
    # Event types have no digits: spell them as letters.
    return "%s.t_%s" % (entity, paddle_id("t")[-10:].lower().translate(str.maketrans("0123456789", "abcdefghij")))


def queued(name):
    """Event ids in a consumer's queue, in claim order."""
    return [r[0] for r in H.sql("SELECT event_id FROM paddle.consumer_queue WHERE consumer = %s "
                                "ORDER BY occurred_at, event_id" % H.lit(name))]


def claim(name, limit=100):
    """Claim and commit: [(event_id, event_type, environment, payload)]."""
    return [(r["event_id"], r["event_type"], r["environment"], r["payload"])
            for r in H.sql_json("SELECT * FROM paddle.claim_events(%s, %d)" % (H.lit(name), limit))]


def from_now(seconds):
    return datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=seconds)


def at(seconds):
    """RFC 3339 of now + seconds."""
    return rfc3339(from_now(seconds))


class ConsumerCase(HarnessTestCase):
    harness = H

    @classmethod
    def setUpClass(cls):
        cls.sandbox = H.add_endpoint(environment="sandbox")
        cls.live = H.add_endpoint(environment="live")

    def deliver(self, env, ep=None):
        ep = ep or self.sandbox
        body = json.dumps(env).encode()
        return H.post(ep.path, body, signature=py_sign(body, ep.secret))

    def store(self, event_type, data, ep=None, **kw):
        env = make_event(event_type, data, as_dict=True, **kw)
        self.assertStored(self.deliver(env, ep), event_type)
        return env


class Queueing(ConsumerCase):

    def test_each_stored_event_is_queued_once_for_every_consumer_that_wants_it(self):
        licences = consumer("licences", ["transaction.completed", "subscription.*"])
        everything = consumer("everything")
        txn = sample_transaction()
        sub = sample_subscription()
        created = self.store("transaction.created", dict(txn, status="draft"), occurred_at=at(-40))
        completed = self.store("transaction.completed", txn, occurred_at=at(-30))
        sub_created = self.store("subscription.created", sub, occurred_at=at(-20))
        customer = self.store("customer.created", sample_customer(), occurred_at=at(-10))
        self.assertDuplicate(self.deliver(completed), "a redelivery")
        self.assertEqual(queued(licences), [completed["event_id"], sub_created["event_id"]])
        self.assertEqual(queued(everything), [e["event_id"] for e in (created, completed, sub_created, customer)])

        got = claim(licences)
        self.assertEqual(got, [(completed["event_id"], "transaction.completed", "sandbox", completed),
                               (sub_created["event_id"], "subscription.created", "sandbox", sub_created)])
        self.assertEqual(claim(licences), [], "claimed events are gone once the claim commits")
        self.assertEqual(len(queued(everything)), 4, "another consumer's queue is its own")

    def test_environment_filter(self):
        live_only = consumer("live_only", environment="live")
        sandbox_only = consumer("sandbox_only", environment="sandbox")
        s = self.store("customer.created", sample_customer(), ep=self.sandbox)
        li = self.store("customer.created", sample_customer(), ep=self.live)
        self.assertEqual(queued(live_only), [li["event_id"]])
        self.assertEqual(queued(sandbox_only), [s["event_id"]])

    def test_a_live_delivery_replacing_a_sandbox_event_is_queued_as_the_live_event(self):
        """docs/security.md: a sandbox endpoint stored an event under a live
        id first. Consumers must get the live event, and a sandbox-only
        consumer must not get it at all."""
        live_only = consumer("live_only", environment="live")
        sandbox_only = consumer("sandbox_only", environment="sandbox")
        both = consumer("both")
        eid = paddle_id("evt")
        decoy = self.store("customer.updated", sample_customer(email="decoy@example.com"), ep=self.sandbox,
                           event_id=eid, occurred_at=at(3600))
        self.assertEqual((queued(live_only), queued(sandbox_only)), ([], [eid]))
        self.assertEqual(claim(both), [(eid, "customer.updated", "sandbox", decoy)])
        genuine = self.store("customer.created", sample_customer(), ep=self.live, event_id=eid)
        self.assertEqual(queued(sandbox_only), [], "the event is live now")
        self.assertEqual(claim(live_only), [(eid, "customer.created", "live", genuine)])
        self.assertEqual(claim(both), [(eid, "customer.created", "live", genuine)],
                         "a consumer that saw the sandbox event gets the live one")

    def test_a_backfill_beside_a_live_replacement_leaves_one_queue_row(self):
        eid, etype = paddle_id("evt"), own_type("customer")
        self.store(etype, sample_customer(), ep=self.sandbox, event_id=eid, occurred_at=at(3600))
        late = consumer("late", [etype])
        backfill = H.in_flight("SELECT paddle.queue_stored_events(%s, NULL)" % H.lit(late), 1,
                                  "backfill_" + paddle_id("t")[-10:])
        try:
            genuine = self.store(etype, sample_customer(), ep=self.live, event_id=eid)
        finally:
            backfill.join(30)
        self.assertEqual(claim(late), [(eid, etype, "live", genuine)])
        self.assertEqual(claim(late), [])

    def test_a_delivery_that_fails_queues_nothing(self):
        everything = consumer("everything")
        env = make_event("customer.created", sample_customer(), as_dict=True)
        H.sql("ALTER TABLE paddle.customers RENAME TO customers_moved")
        try:
            r = self.deliver(env)
        finally:
            H.sql("ALTER TABLE paddle.customers_moved RENAME TO customers")
        self.assertErrorResponse(r, 500, "internal_error")
        self.assertEqual(queued(everything), [])
        self.assertStored(self.deliver(env), "Paddle's retry")
        self.assertEqual(queued(everything), [env["event_id"]])

    def test_an_event_whose_projection_failed_is_still_queued(self):
        """The event is stored (with projection_error), so it is acknowledged and must reach consumers."""
        everything = consumer("everything")
        env = make_event("customer.created", sample_customer(), as_dict=True)
        H.sql("ALTER TABLE paddle.customers ADD CONSTRAINT test_consumers_no_email CHECK (email <> %s)"
              % H.lit(env["data"]["email"]))
        try:
            self.assertStored(self.deliver(env))
        finally:
            H.sql("ALTER TABLE paddle.customers DROP CONSTRAINT test_consumers_no_email")
        self.assertTrue(H.event_row(env["event_id"])["projection_error"])
        self.assertEqual(queued(everything), [env["event_id"]])

    def test_queue_stored_events_adds_the_past_once(self):
        etype = own_type("subscription")
        first = self.store(etype, sample_subscription(), occurred_at=at(-7200))
        second = self.store(etype, sample_subscription(), occurred_at=at(-60))
        late = consumer("late", [etype])
        self.assertEqual(queued(late), [])
        since = from_now(-3600).isoformat()
        self.assertEqual(H.sql_value("SELECT paddle.queue_stored_events(%s, %s)" % (H.lit(late), H.lit(since))),
                         "1")
        self.assertEqual(queued(late), [second["event_id"]])
        self.assertEqual(H.sql_value("SELECT paddle.queue_stored_events(%s, NULL)" % H.lit(late)), "1",
                         "the earlier one; the one still queued is not queued twice")
        self.assertEqual(queued(late), [first["event_id"], second["event_id"]])
        claim(late)
        self.assertEqual(H.sql_value("SELECT paddle.queue_stored_events(%s, NULL)" % H.lit(late)), "2",
                         "claimed events can be queued again")

    def test_a_consumer_given_more_types_backfills_only_the_new_ones(self):
        """Its old types' events are acted on already: queueing them again would mint a second licence."""
        old, new = own_type("transaction"), own_type("subscription")
        done = self.store(old, sample_transaction(), occurred_at=at(-7200))
        wanted = self.store(new, sample_subscription(), occurred_at=at(-3600))
        name = consumer("wider", [old])
        self.assertEqual(H.sql_value("SELECT paddle.queue_stored_events(%s, NULL)" % H.lit(name)), "1")
        self.assertEqual([c[0] for c in claim(name)], [done["event_id"]])
        H.sql("UPDATE paddle.consumers SET event_types = ARRAY[%s, %s] WHERE name = %s"
              % (H.lit(old), H.lit(new), H.lit(name)))
        self.assertEqual(H.sql_value("SELECT paddle.queue_stored_events(%s, NULL, ARRAY[%s], NULL)"
                                     % (H.lit(name), H.lit(new.split(".")[0] + ".*"))), "1")
        self.assertEqual(queued(name), [wanted["event_id"]])
        # A type the consumer does not want is not queued for it either.
        self.assertEqual(H.sql_value("SELECT paddle.queue_stored_events(%s, NULL, '{customer.*}', NULL)"
                                     % H.lit(name)), "0")

    def test_a_backfill_by_reception_finds_what_paddle_delivered_late(self):
        """An application restored from a backup must act again on what it claimed since: an event received then
        may have occurred days before, where a moment of occurrence does not look."""
        etype = own_type("customer")
        late = self.store(etype, sample_customer(), occurred_at=at(-3 * 86400))
        name = consumer("restored", [etype])
        H.sql("SELECT paddle.queue_stored_events(%s, NULL)" % H.lit(name))
        claim(name)
        backup = from_now(-300).isoformat()
        self.assertEqual(H.sql_value("SELECT paddle.queue_stored_events(%s, %s)" % (H.lit(name), H.lit(backup))),
                         "0")
        self.assertEqual(H.sql_value("SELECT paddle.queue_stored_events(%s, NULL, NULL, %s)"
                                     % (H.lit(name), H.lit(backup))), "1")
        self.assertEqual(queued(name), [late["event_id"]])

    def test_two_backfills_of_one_consumer_do_not_deadlock(self):
        """One backfill holds the queue row of the event the other's scan meets last, then queues all: before
        0019 each waited for the other's uncommitted row and one failed with a deadlock."""
        etype = own_type("customer")
        for _ in range(5):   # the event queued first must come last in the heap, which a sequential scan follows
            early = self.store(etype, sample_customer(), occurred_at=at(-7200))
            late = self.store(etype, sample_customer(), occurred_at=at(-60))
            pages = H.sql("SELECT (ctid::text::point)[0], (ctid::text::point)[1] FROM paddle.payment_events "
                          "WHERE event_id IN (%s, %s) ORDER BY event_id = %s"
                          % (H.lit(early["event_id"]), H.lit(late["event_id"]), H.lit(early["event_id"])))
            if [float(v) for v in pages[0]] > [float(v) for v in pages[1]]:
                break
        else:
            self.fail("no pair of events stored in occurred_at order in the heap")
        name = consumer("twice", [etype])
        since = from_now(-3600).isoformat()
        tag = "backfill_" + paddle_id("t")[-10:]
        first_rows = []
        first = threading.Thread(target=lambda: first_rows.extend(H.sql(
            "SET application_name = %s; BEGIN; SELECT paddle.queue_stored_events(%s, %s); SELECT pg_sleep(2); "
            "SELECT paddle.queue_stored_events(%s, NULL); COMMIT;"
            % (H.lit(tag), H.lit(name), H.lit(since), H.lit(name)))))
        second_rows = []
        second = threading.Thread(target=lambda: second_rows.extend(H.sql(
            "SET enable_indexscan = off; SET enable_bitmapscan = off; "
            "SELECT paddle.queue_stored_events(%s, NULL)" % H.lit(name))))
        first.start()
        try:
            harness.wait_until(lambda: H.sleeping(tag), timeout=10, interval=0.02, what="the first backfill")
            second.start()
            second.join(30)
        finally:
            first.join(30)
        # psql prints each statement's rows on lines of their own
        self.assertEqual((" ".join(v for r in first_rows for v in r).split(), second_rows), (["1", "1"], [("0",)]),
                         "both end without an error: the first queues both events, the second waits and finds "
                         "them queued")
        self.assertEqual(queued(name), [early["event_id"], late["event_id"]])

    def test_deleting_a_consumer_or_an_event_deletes_its_queue_rows(self):
        a, b = consumer("a"), consumer("b")
        env = self.store("customer.created", sample_customer())
        H.sql("DELETE FROM paddle.consumers WHERE name = %s" % H.lit(a))
        self.assertEqual(queued(a), [])
        self.assertEqual(queued(b), [env["event_id"]])
        H.sql("DELETE FROM paddle.payment_events WHERE event_id = %s" % H.lit(env["event_id"]))
        self.assertEqual(queued(b), [])

    def change_during_a_delivery(self, change):
        """Runs the SQL `change` while a delivery's transaction stays open
        (its event stored and queued, not committed) for longer than a change
        to the consumers waits: the change must fail and change nothing."""
        env = make_event("customer.created", sample_customer(), as_dict=True)
        delivery = H.in_flight(H.ingest_sql(env, self.sandbox.id, "sandbox"), 2, "delivery_" + paddle_id("t")[-10:])
        try:
            with self.assertRaises(harness.HarnessError, msg="the change did not wait for the delivery") as cm:
                H.sql(change)
        finally:
            delivery.join(30)
        self.assertIn("deliveries kept paddle.payment_events busy for 200 ms; try again", str(cm.exception))
        return env["event_id"]

    def test_adding_a_consumer_waits_for_deliveries_in_flight(self):
        """Without the wait, a delivery that read the consumers before the new one committed, and committed
        after it, would not be queued for it."""
        name = "added_%s" % paddle_id("c")[-8:]
        insert = "INSERT INTO paddle.consumers (name) VALUES (%s)" % H.lit(name)
        self.change_during_a_delivery(insert)
        self.assertEqual(H.sql_value("SELECT count(*) FROM paddle.consumers WHERE name = %s" % H.lit(name)), "0")
        H.sql(insert)
        env = self.store("customer.created", sample_customer())
        self.assertEqual(queued(name), [env["event_id"]])

    def test_deleting_a_consumer_waits_for_deliveries_in_flight(self):
        """Without the wait, the delivery's queue row would outlive its consumer."""
        name = consumer("deleted")
        delete = "DELETE FROM paddle.consumers WHERE name = %s" % H.lit(name)
        eid = self.change_during_a_delivery(delete)
        self.assertEqual(queued(name), [eid], "the consumer and its queue are still there")
        H.sql(delete)
        self.assertEqual(H.sql_value("SELECT count(*) FROM paddle.consumer_queue WHERE consumer = %s"
                                     % H.lit(name)), "0")

    def test_deleting_a_consumer_waits_for_its_open_claims_without_holding_deliveries(self):
        free = consumer("free")          # before the claimed one in the table: the DELETE locks it first
        name = consumer("claimed", ["customer.created"])
        for _ in range(2):
            self.store("customer.created", sample_customer())
        tag = "claim_" + paddle_id("t")[-10:]
        # Open for longer than the worker's 3 s lock timeout: a delivery held up meanwhile would fail.
        claimer = H.in_flight("SELECT count(*) FROM paddle.claim_events(%s, 1)" % H.lit(name), 4, tag)
        deleter = threading.Thread(target=H.sql, args=("SET application_name = %s; DELETE FROM paddle.consumers "
                                                       "WHERE name IN (%s, %s)"
                                                       % (H.lit(tag + "_d"), H.lit(free), H.lit(name)),))
        deleter.start()
        try:
            harness.wait_until(lambda: H.sql_value(
                "SELECT wait_event_type FROM pg_stat_activity WHERE application_name = %s" % H.lit(tag + "_d"))
                == "Lock", timeout=10, interval=0.02, what="the delete to wait for the claim")
            # Waiting for the consumer's row, the delete holds nothing deliveries need.
            self.store("customer.created", sample_customer())
        finally:
            claimer.join(30)
            deleter.join(30)
        self.assertEqual(H.sql_value("SELECT count(*) FROM paddle.consumers WHERE name IN (%s, %s)"
                                     % (H.lit(free), H.lit(name))), "0")
        self.assertEqual(H.sql_value("SELECT count(*) FROM paddle.consumer_queue WHERE consumer IN (%s, %s)"
                                     % (H.lit(free), H.lit(name))), "0")

    def test_a_long_queue_emptied_in_batches_as_documented_holds_no_delivery(self):
        """docs/consumers.md's way to delete a consumer with a long queue."""
        with open(os.path.join(harness.REPO_ROOT, "docs", "consumers.md")) as f:
            recipe = f.read().split("-- BEGIN empty-queue\n")[1].split("-- END empty-queue")[0]
        name = consumer("abandoned", ["customer.*"])
        H.sql("INSERT INTO paddle.consumer_queue (event_id, consumer, occurred_at) "
              "SELECT 'evt_abandoned_' || g, %s, now() FROM generate_series(1, 25000) g" % H.lit(name))
        batch = ("DELETE FROM paddle.consumer_queue WHERE consumer = %s AND event_id IN "
                 "(SELECT event_id FROM paddle.consumer_queue WHERE consumer = %s LIMIT 10000)"
                 % (H.lit(name), H.lit(name)))
        # One batch open for longer than the worker's 3 s lock timeout: a delivery held up meanwhile would fail.
        held = H.in_flight(batch, 4, "batch_" + paddle_id("t")[-10:])
        try:
            event_id = self.store("customer.created", sample_customer())["event_id"]
        finally:
            held.join(30)
        self.assertIn(event_id, queued(name))
        # Which transactions delete how many of its queue rows: the recipe's point is many small ones, and none
        # left for the consumer's own DELETE, which holds deliveries meanwhile.
        H.sql("CREATE TABLE public.test_queue_deletes (xid xid8, consumer_deleted boolean, n bigint); "
              "CREATE FUNCTION public.test_count_queue_deletes() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
              "INSERT INTO public.test_queue_deletes SELECT pg_catalog.pg_current_xact_id(), "
              "NOT EXISTS (SELECT FROM paddle.consumers WHERE name = %s), pg_catalog.count(*) FROM gone; "
              "RETURN NULL; END $$; "
              "CREATE TRIGGER test_count_queue_deletes AFTER DELETE ON paddle.consumer_queue "
              "REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION public.test_count_queue_deletes()"
              % H.lit(name))
        self.addCleanup(H.sql, "DROP TRIGGER test_count_queue_deletes ON paddle.consumer_queue; "
                               "DROP FUNCTION public.test_count_queue_deletes(); DROP TABLE public.test_queue_deletes")
        H.sql(recipe.replace("'licences'", H.lit(name)))
        self.assertEqual(H.sql_value("SELECT count(*) FROM paddle.consumers WHERE name = %s" % H.lit(name)), "0")
        self.assertEqual(queued(name), [])
        batches = H.sql("SELECT xid::text, bool_or(consumer_deleted), sum(n) FROM public.test_queue_deletes "
                        "WHERE n > 0 GROUP BY xid ORDER BY min(n) DESC")
        self.assertGreaterEqual(len(batches), 2, batches)   # 15,001 rows left after the batch held above
        self.assertTrue(all(int(n) <= 10000 and flag == "f" for _, flag, n in batches), batches)

    def test_an_event_deleted_beside_a_backfill_is_never_claimed(self):
        """The deletion's trigger cannot see the backfill's uncommitted row; the claim drops it."""
        etype = own_type("customer")
        env = self.store(etype, sample_customer())
        name = consumer("backfill", [etype])
        backfill = H.in_flight("SELECT paddle.queue_stored_events(%s, NULL)" % H.lit(name), 1,
                                  "backfill_" + paddle_id("t")[-10:])
        try:
            H.sql("DELETE FROM paddle.payment_events WHERE event_id = %s" % H.lit(env["event_id"]))
        finally:
            backfill.join(30)
        self.assertEqual(queued(name), [env["event_id"]], "the row the backfill left")
        self.assertEqual(claim(name), [])
        self.assertEqual(queued(name), [])

    def test_a_backfill_beside_a_live_replacement_never_hands_a_sandbox_only_consumer_the_live_event(self):
        eid, etype = paddle_id("evt"), own_type("customer")
        self.store(etype, sample_customer(), ep=self.sandbox, event_id=eid)
        name = consumer("sandbox_backfill", [etype], environment="sandbox")
        backfill = H.in_flight("SELECT paddle.queue_stored_events(%s, NULL)" % H.lit(name), 1,
                                  "backfill_" + paddle_id("t")[-10:])
        try:
            self.store(etype, sample_customer(), ep=self.live, event_id=eid)
        finally:
            backfill.join(30)
        self.assertEqual(queued(name), [eid], "the row the backfill left")
        self.assertEqual(claim(name), [])

    def test_consumers_and_events_are_changed_in_read_committed_transactions_only(self):
        """A later statement of the change must see the queue rows of deliveries that committed meanwhile."""
        for sql in ("INSERT INTO paddle.consumers (name) VALUES ('rr')",
                    "DELETE FROM paddle.payment_events WHERE event_id = 'evt_none'"):
            with self.subTest(sql=sql):
                with self.assertRaises(harness.HarnessError) as cm:
                    H.sql("BEGIN ISOLATION LEVEL REPEATABLE READ; %s; COMMIT;" % sql)
                self.assertIn("READ COMMITTED transactions only", str(cm.exception))

    def test_consumers_cannot_be_truncated(self):
        with self.assertRaises(harness.HarnessError) as cm:
            H.sql("TRUNCATE paddle.consumers")
        self.assertIn("cannot be truncated", str(cm.exception))

    def test_events_are_queued_in_read_committed_transactions_only(self):
        consumer("isolation")
        env = make_event("customer.created", sample_customer(), as_dict=True)
        with self.assertRaises(harness.HarnessError) as cm:
            H.sql("BEGIN ISOLATION LEVEL REPEATABLE READ; %s; COMMIT;" % H.ingest_sql(env, self.sandbox.id, "sandbox"))
        self.assertIn("READ COMMITTED transactions only", str(cm.exception))
        self.assertIsNone(H.event_row(env["event_id"]))
        # The worker sets READ COMMITTED for its sessions, whatever the role's default.
        H.sql("ALTER ROLE postgres SET default_transaction_isolation = 'repeatable read'")
        try:
            H.stop_serve()
            H.start_serve()
            H.wait_healthy()
            self.assertStored(self.deliver(env))
        finally:
            H.sql("ALTER ROLE postgres RESET default_transaction_isolation")

    def test_a_consumer_cannot_be_renamed(self):
        name = consumer("renamed")
        with self.assertRaises(harness.HarnessError) as cm:
            H.sql("UPDATE paddle.consumers SET name = 'other' WHERE name = %s" % H.lit(name))
        self.assertIn("cannot be renamed", str(cm.exception))
        H.sql("UPDATE paddle.consumers SET event_types = '{customer.*}' WHERE name = %s" % H.lit(name))

    def test_backlog_view(self):
        name = consumer("backlog", ["customer.created"])
        first = self.store("customer.created", sample_customer(), occurred_at=at(-300))
        self.store("customer.created", sample_customer(), occurred_at=at(-100))
        row = H.sql_json("SELECT queued, oldest_occurred_at FROM paddle.consumer_backlog WHERE consumer = %s"
                         % H.lit(name))
        self.assertEqual(len(row), 1)
        self.assertEqual(row[0]["queued"], 2)
        self.assertEqual(harness.parse_ts(row[0]["oldest_occurred_at"]), harness.parse_ts(first["occurred_at"], envelope=True))
        claim(name)
        row = H.sql_json("SELECT queued, oldest_occurred_at FROM paddle.consumer_backlog WHERE consumer = %s"
                         % H.lit(name))
        self.assertEqual((row[0]["queued"], row[0]["oldest_occurred_at"]), (0, None))

    def test_status_shows_each_queue(self):
        name = consumer("status", ["customer.created"], environment="live")
        for _ in range(2):
            self.store("customer.created", sample_customer(), ep=self.live)
        out = H.cli("status").stdout
        line = next((l for l in out.splitlines() if l.startswith(name + " ")), None)
        self.assertIsNotNone(line, out)
        self.assertEqual(line.split()[1], "2")
        self.assertIn("ago)", line, "when the oldest row was queued")
        claim(name)
        line = next(l for l in H.cli("status").stdout.splitlines() if l.startswith(name + " "))
        self.assertEqual(line.split()[1:], ["0", "-"])


class Claiming(ConsumerCase):

    def fill(self, n, event_types=("customer.created",)):
        name = consumer("claims", list(event_types))
        events = [self.store("customer.created", sample_customer(), occurred_at=at(-100 + i)) for i in range(n)]
        return name, [e["event_id"] for e in events]

    def test_claims_come_oldest_first_up_to_the_limit(self):
        name, ids = self.fill(5)
        self.assertEqual([e[0] for e in claim(name, 2)], ids[:2])
        self.assertEqual([e[0] for e in claim(name, 10)], ids[2:])

    def test_rows_no_longer_wanted_are_dropped_and_the_claim_goes_on(self):
        name = consumer("narrowed", ["customer.*"])
        older = [self.store("customer.created", sample_customer(), occurred_at=at(-300 + i))["event_id"]
                 for i in range(2)]
        wanted = self.store("customer.updated", sample_customer(), occurred_at=at(-100))
        H.sql("UPDATE paddle.consumers SET event_types = '{customer.updated}' WHERE name = %s" % H.lit(name))
        self.assertEqual(queued(name), older + [wanted["event_id"]])
        self.assertEqual([e[0] for e in claim(name, 1)], [wanted["event_id"]],
                         "an empty answer must mean an empty queue")
        self.assertEqual(queued(name), [])

    def test_a_queue_of_only_unwanted_rows_is_emptied_and_answered_empty(self):
        name = consumer("unwanted", ["customer.*"])
        for i in range(3):
            self.store("customer.created", sample_customer(), occurred_at=at(-300 + i))
        H.sql("UPDATE paddle.consumers SET event_types = '{customer.updated}' WHERE name = %s" % H.lit(name))
        self.assertEqual(claim(name, 1), [])
        self.assertEqual(queued(name), [])

    def test_dropping_many_unwanted_rows_takes_linear_work(self):
        """A narrowed consumer with 2,000 rows it no longer wants ahead of one it does: a claim of 1 walks the
        queue's index once, not once per pass (each pass used to start over, across the entries the earlier
        passes had deleted: some 2,000,000 index reads here)."""
        name = consumer("backlog", ["customer.*"])
        H.sql("DO $$ BEGIN FOR i IN 1..2000 LOOP PERFORM paddle.ingest_event('evt_backlog_' || %s || '_' || i, "
              "'customer.created', timestamptz '2020-01-01' + i * interval '1 second', NULL, 'ep_backlog', 'live', "
              "'{\"data\": {}}'); END LOOP; END $$" % H.lit(name))
        wanted = self.store("customer.updated", sample_customer(), occurred_at=at(-100))
        H.sql("UPDATE paddle.consumers SET event_types = '{customer.updated}' WHERE name = %s" % H.lit(name))
        reads = ("SELECT idx_tup_read FROM pg_stat_user_indexes WHERE schemaname = 'paddle' "
                 "AND indexrelname = 'consumer_queue_order'")
        before = int(H.sql_value(reads))
        self.assertEqual([e[0] for e in claim(name, 1)], [wanted["event_id"]])
        read = int(harness.wait_until(lambda: int(H.sql_value(reads)) - before or None, timeout=10,
                                      what="the claim's index reads in the statistics"))
        self.assertLess(read, 20 * 2000, "index entries read by one claim")
        self.assertEqual(queued(name), [])

    def test_the_documented_rename_keeps_the_queue_as_it_is(self):
        """docs/consumers.md's rename: what the old name claimed is not queued again, what it had not claimed is
        all there, even an event that occurred before one already claimed."""
        with open(os.path.join(harness.REPO_ROOT, "docs", "consumers.md")) as f:
            recipe = f.read().split("-- BEGIN rename-consumer\n")[1].split("-- END rename-consumer")[0]
        old = consumer("old_name", ["customer.*"])
        new = old.replace("old_name", "new_name")
        late = self.store("customer.created", sample_customer(), occurred_at=at(-50))["event_id"]
        self.assertEqual([e[0] for e in claim(old)], [late])
        early = self.store("customer.created", sample_customer(), occurred_at=at(-60))["event_id"]
        # How long it has waited stays with it, or the backlog alert would start over at the rename.
        H.sql("UPDATE paddle.consumer_queue SET queued_at = now() - interval '2 days' WHERE consumer = %s" % H.lit(old))
        H.sql(recipe.replace("'licences_v2'", H.lit(new)).replace("'licences'", H.lit(old)))
        self.assertEqual(H.sql_value("SELECT now() - queued_at > interval '1 day' FROM paddle.consumer_queue "
                                     "WHERE consumer = %s" % H.lit(new)), "t")
        self.assertEqual(H.sql("SELECT name, event_types::text FROM paddle.consumers WHERE name IN (%s, %s)"
                               % (H.lit(old), H.lit(new))), [(new, "{customer.*}")])
        self.assertEqual([e[0] for e in claim(new)], [early])
        later = self.store("customer.updated", sample_customer(), occurred_at=at(-10))["event_id"]
        self.assertEqual([e[0] for e in claim(new)], [later])

    def test_a_claim_rolled_back_is_claimed_again(self):
        name, ids = self.fill(2)
        H.sql("BEGIN; SELECT count(*) FROM paddle.claim_events(%s, 10); ROLLBACK;" % H.lit(name))
        self.assertEqual(queued(name), ids)
        self.assertEqual([e[0] for e in claim(name)], ids)

    def test_claimers_side_by_side_never_get_the_same_event(self):
        name, ids = self.fill(4)
        held_rows = []
        held = H.in_flight("SELECT event_id FROM paddle.claim_events(%s, 2)" % H.lit(name), 5, name, rows=held_rows)
        try:
            second = [e[0] for e in claim(name, 10)]
            self.assertTrue(H.sleeping(name), "the second claim waited for the first to commit")
        finally:
            held.join(30)
        self.assertEqual(second, ids[2:], "the rows the first claimer holds are skipped")
        self.assertEqual([r[0].strip() for r in held_rows], ids[:2])
        self.assertEqual(queued(name), [])

    def test_claim_errors(self):
        name, _ = self.fill(1)
        for sql, message in (
                ("SELECT * FROM paddle.claim_events('no_such_consumer')", "no consumer named 'no_such_consumer'"),
                ("SELECT * FROM paddle.claim_events(%s, 0)" % H.lit(name), "between 1 and 10000"),
                ("SELECT * FROM paddle.claim_events(%s, 10001)" % H.lit(name), "between 1 and 10000"),
                ("SELECT paddle.queue_stored_events('no_such_consumer', NULL)", "no consumer named"),
                ("SELECT paddle.queue_stored_events(%s, NULL, '{Customer.Created}', NULL)" % H.lit(name),
                 "p_event_types takes 1 to 100 event types"),
                # Another claimer's committed delete would be a serialization failure, not a skipped row.
                ("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT * FROM paddle.claim_events(%s); COMMIT;"
                 % H.lit(name), "READ COMMITTED transactions only")):
            with self.subTest(sql=sql):
                with self.assertRaises(harness.HarnessError) as cm:
                    H.sql(sql)
                self.assertIn(message, str(cm.exception))
        self.assertEqual(len(queued(name)), 1)

    def test_consumer_definitions_are_checked(self):
        for name, types, environment in (("Upper", None, None), ("9lives", None, None), ("x" * 64, None, None),
                                         ("ok", [], None), ("ok", ["transaction"], None),
                                         ("ok", ["Transaction.completed"], None), ("ok", ["*"], None),
                                         ("ok", ["transaction.completed", None], None),
                                         ("ok", ["transaction.completed subscription.created"], None),
                                         ("ok", None, "production")):
            with self.subTest(name=name, types=types, environment=environment):
                t = "NULL" if types is None else "ARRAY[%s]::text[]" % ",".join(
                    "NULL" if x is None else H.lit(x) for x in types)
                with self.assertRaises(harness.HarnessError) as cm:
                    H.sql("INSERT INTO paddle.consumers (name, event_types, environment) VALUES (%s, %s, %s)"
                          % (H.lit(name), t, H.lit(environment)))
                self.assertIn("violates check constraint", str(cm.exception))


if __name__ == "__main__":
    unittest.main()
