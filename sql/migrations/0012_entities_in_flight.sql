-- paddlehook 0012_entities_in_flight: the address, business, product, price and discount events that deliveries
-- stored while 0011_entities ran.
--
-- Runs once, inside the migration runner's transaction (no BEGIN/COMMIT here). PostgreSQL 15.
--
-- A delivery that called paddle.ingest_event before 0011 committed ran the function as it was, which stores
-- these events without projecting them, and 0011's own projection of the stored events cannot see a delivery
-- that committed after it looked. Every delivery that started later projects them itself. The SHARE lock waits
-- for the deliveries still storing events (they hold ROW EXCLUSIVE on payment_events until they commit, and
-- the worker's statement_timeout ends them within seconds) and holds new ones until this commits; then the
-- events received since an hour before 0011 was applied are projected again. A second projection of the same
-- snapshot changes nothing (paddle.snapshot_replaces wants a newer one), so the hour's margin costs only time.

LOCK TABLE paddle.payment_events IN SHARE MODE;

SELECT count(paddle.project_stored_event(e.event_id, e.event_type, e.occurred_at, e.payload -> 'data',
                                         e.environment, e.projection_error))
FROM (SELECT * FROM paddle.payment_events
      WHERE split_part(event_type, '.', 1) IN ('address', 'business', 'product', 'price', 'discount')
        AND received_at >= coalesce((SELECT applied_at - interval '1 hour' FROM paddle.schema_migrations
                                     WHERE version = '0011_entities'), '-infinity')
      ORDER BY occurred_at, event_id) AS e;
