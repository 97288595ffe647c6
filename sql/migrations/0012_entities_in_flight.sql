-- paddlehook 0012_entities_in_flight: the address, business, product, price and discount events that deliveries
-- stored while 0011_entities ran.
--
-- Runs once, inside the migration runner's transaction (no BEGIN/COMMIT here). PostgreSQL 15.
--
-- A delivery whose statement began before 0011 committed ran paddle.ingest_event as it was, which stores these
-- events without projecting them, and 0011's own projection of the stored events cannot see a delivery that
-- committed after it looked. Every delivery that began later projects them itself. So this migration
-- 1. waits until every worker statement that may have begun before 0011 committed has ended (the worker's
--    statement_timeout is 4 s; the runner applies this migration on 0011's connection right after it commits);
-- 2. locks the state tables, in paddle.reproject's order and before writing anything: a running rebuild
--    holds them, and anything else could deadlock with it;
-- 3. locks payment_events in SHARE mode, which waits for every transaction still open that stored an event and
--    holds new deliveries until this commits; it asks for at most 200 ms at a time, so that deliveries never
--    queue behind it while something else (a VACUUM) holds the table;
-- 4. projects the events of these types received since a minute before 0011 began. Projecting a snapshot a
--    second time changes nothing (paddle.snapshot_replaces wants a newer one).
-- The events are read once before the locks, so that the look under them finds them cached.

SELECT pg_sleep(greatest(0, 5 - extract(epoch FROM clock_timestamp() - now())))
WHERE EXISTS (SELECT FROM paddle.schema_migrations
              WHERE version = '0011_entities' AND applied_at > now() - interval '1 day')
  AND EXISTS (SELECT FROM paddle.payment_events);

LOCK TABLE paddle.customers, paddle.subscriptions, paddle.subscription_items, paddle.transactions,
           paddle.transaction_items, paddle.adjustments, paddle.adjustment_items, paddle.addresses,
           paddle.businesses, paddle.products, paddle.prices, paddle.discounts IN ROW EXCLUSIVE MODE;

SELECT count(*), sum(length(e.payload::text))
FROM paddle.payment_events e
WHERE split_part(e.event_type, '.', 1) IN ('address', 'business', 'product', 'price', 'discount')
  AND e.received_at >= coalesce((SELECT applied_at - interval '1 minute' FROM paddle.schema_migrations
                                 WHERE version = '0011_entities'), '-infinity');

DO $$
DECLARE
    v_lock_timeout text := current_setting('lock_timeout');
BEGIN
    LOOP
        BEGIN
            PERFORM set_config('lock_timeout', '200ms', true);
            LOCK TABLE paddle.payment_events IN SHARE MODE;
            EXIT;
        EXCEPTION WHEN lock_not_available THEN
            PERFORM pg_sleep(0.5);
        END;
    END LOOP;
    PERFORM set_config('lock_timeout', v_lock_timeout, true);
END
$$;

SELECT count(*) FILTER (WHERE e.data_error IS NULL) AS projected, count(e.data_error) AS data_errors
FROM (SELECT paddle.project_stored_event(p.event_id, p.event_type, p.occurred_at, p.payload -> 'data',
                                         p.environment, p.projection_error) AS data_error
      FROM paddle.payment_events p
      WHERE split_part(p.event_type, '.', 1) IN ('address', 'business', 'product', 'price', 'discount')
        AND p.received_at >= coalesce((SELECT applied_at - interval '1 minute' FROM paddle.schema_migrations
                                       WHERE version = '0011_entities'), '-infinity')
      ORDER BY p.occurred_at, p.event_id) AS e;
