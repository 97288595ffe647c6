-- paddlehook 0012_entities_in_flight: the address, business, product, price and discount events that deliveries
-- stored while 0011_entities ran.
--
-- Runs once, inside the migration runner's transaction (no BEGIN/COMMIT here). PostgreSQL 15.
--
-- A delivery whose statement began before 0011 committed ran paddle.ingest_event as it was, which stores these
-- events without projecting them, and 0011's own projection of the stored events cannot see a delivery that
-- committed after it looked. Every delivery that began later projects them itself. So this migration waits
-- until every worker statement that may have begun before 0011 committed has ended (the worker's
-- statement_timeout is 4 s), projects the events of these types received since an hour before 0011 began, then
-- takes the locks that wait for any transaction still open that stored an event, and projects them once more.
-- Projecting a snapshot a second time changes nothing (paddle.snapshot_replaces wants a newer one), so the
-- hour's margin and the second pass cost only time; the first pass makes the second one, which holds new
-- deliveries, short (what it reads is cached). The state tables are locked first, in paddle.reproject's order
-- (a running rebuild holds them, and locking payment_events first could deadlock with it).

-- Nothing is in flight in a database without events (a new installation): no wait there.
SELECT pg_sleep(greatest(0, 5 - extract(epoch FROM clock_timestamp() - m.applied_at)))
FROM paddle.schema_migrations m
WHERE m.version = '0011_entities' AND EXISTS (SELECT FROM paddle.payment_events);

CREATE TEMPORARY VIEW in_flight AS
SELECT e.event_id, e.event_type, e.occurred_at, e.payload -> 'data' AS data, e.environment, e.projection_error
FROM paddle.payment_events e
WHERE split_part(e.event_type, '.', 1) IN ('address', 'business', 'product', 'price', 'discount')
  AND e.received_at >= coalesce((SELECT applied_at - interval '1 hour' FROM paddle.schema_migrations
                                 WHERE version = '0011_entities'), '-infinity');

SELECT count(paddle.project_stored_event(event_id, event_type, occurred_at, data, environment, projection_error))
FROM (SELECT * FROM pg_temp.in_flight ORDER BY occurred_at, event_id) AS e;

LOCK TABLE paddle.customers, paddle.subscriptions, paddle.subscription_items, paddle.transactions,
           paddle.transaction_items, paddle.adjustments, paddle.adjustment_items, paddle.addresses,
           paddle.businesses, paddle.products, paddle.prices, paddle.discounts IN ROW EXCLUSIVE MODE;
LOCK TABLE paddle.payment_events IN SHARE MODE;

SELECT count(paddle.project_stored_event(event_id, event_type, occurred_at, data, environment, projection_error))
FROM (SELECT * FROM pg_temp.in_flight ORDER BY occurred_at, event_id) AS e;

DROP VIEW pg_temp.in_flight;
