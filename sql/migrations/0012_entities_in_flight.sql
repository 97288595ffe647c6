-- paddlehook 0012_entities_in_flight: the address, business, product, price and discount events that deliveries
-- stored while 0011_entities ran.
--
-- Runs once, inside the migration runner's transaction (no BEGIN/COMMIT here). PostgreSQL 15.
--
-- A delivery whose statement began before 0011 committed ran paddle.ingest_event as it was, which stores these
-- events without projecting them, and 0011's own projection of the stored events cannot see a delivery that
-- committed after it looked (a commit can take long: it may wait for a synchronous standby). Every delivery
-- that began later projects them itself. So this migration
-- 1. waits until every worker statement that may have begun before 0011 committed has ended (the worker's
--    statement_timeout is 4 s; the runner applies this migration on 0011's connection right after it commits);
-- 2. locks the state tables (in paddle.reproject's order: a running rebuild holds them, and another order
--    could deadlock with it) and then payment_events in EXCLUSIVE mode, which waits for every transaction still
--    open that stored an event, holds new deliveries until this commits and lets plain reads through (EXCLUSIVE,
--    not SHARE, keeps out paddle.reproject_event's row lock, which would deadlock with step 3). It asks for at
--    most 200 ms at a time, releasing both between tries, so that deliveries never queue behind it while
--    something else (a VACUUM, a rebuild) holds a table;
-- 3. projects every event of these types that its state row does not hold yet and would take (missing row, or
--    paddle.snapshot_replaces), which is exactly what such deliveries left behind, however old.
-- The events are read once before the locks, so that the look under them finds them cached.

-- The events of the new entities whose snapshot their state row lacks and would take.
CREATE FUNCTION paddle.entity_events_not_projected()
    RETURNS SETOF paddle.payment_events
    LANGUAGE sql STABLE
AS $$
    WITH state AS (
        SELECT 'address'::text AS entity, id, environment, occurred_at, event_id FROM paddle.addresses
        UNION ALL SELECT 'business', id, environment, occurred_at, event_id FROM paddle.businesses
        UNION ALL SELECT 'product', id, environment, occurred_at, event_id FROM paddle.products
        UNION ALL SELECT 'price', id, environment, occurred_at, event_id FROM paddle.prices
        UNION ALL SELECT 'discount', id, environment, occurred_at, event_id FROM paddle.discounts
    )
    SELECT e.*
    FROM paddle.payment_events e
    LEFT JOIN state s ON s.entity = split_part(e.event_type, '.', 1)
                     AND s.id = paddle.to_key(e.payload -> 'data' ->> 'id')
    WHERE split_part(e.event_type, '.', 1) IN ('address', 'business', 'product', 'price', 'discount')
      AND e.projection_error IS NULL
      AND paddle.to_key(e.payload -> 'data' ->> 'id') IS NOT NULL
      AND (s.id IS NULL OR paddle.snapshot_replaces(s.environment, s.occurred_at, s.event_id,
                                                    e.environment, e.occurred_at, e.event_id))
$$;

SELECT pg_sleep(greatest(0, 5 - extract(epoch FROM clock_timestamp() - now())))
WHERE EXISTS (SELECT FROM paddle.schema_migrations
              WHERE version = '0011_entities' AND applied_at > now() - interval '1 day')
  AND EXISTS (SELECT FROM paddle.payment_events);

SELECT count(*) FROM paddle.entity_events_not_projected();

DO $$
DECLARE
    v_lock_timeout text := current_setting('lock_timeout');
    v_tries integer := 0;
BEGIN
    LOOP
        BEGIN
            PERFORM set_config('lock_timeout', '200ms', true);
            LOCK TABLE paddle.customers, paddle.subscriptions, paddle.subscription_items, paddle.transactions,
                       paddle.transaction_items, paddle.adjustments, paddle.adjustment_items, paddle.addresses,
                       paddle.businesses, paddle.products, paddle.prices, paddle.discounts IN ROW EXCLUSIVE MODE;
            LOCK TABLE paddle.payment_events IN EXCLUSIVE MODE;
            EXIT;
        EXCEPTION WHEN lock_not_available THEN
            v_tries := v_tries + 1;
            IF v_tries % 50 = 0 THEN
                RAISE NOTICE 'waiting for the state tables and paddle.payment_events (a rebuild, a VACUUM or a long transaction holds one)';
            END IF;
            PERFORM pg_sleep(0.5);
        END;
    END LOOP;
    PERFORM set_config('lock_timeout', v_lock_timeout, true);
END
$$;

SELECT count(*) FILTER (WHERE e.data_error IS NULL) AS projected, count(e.data_error) AS data_errors
FROM (SELECT paddle.project_stored_event(p.event_id, p.event_type, p.occurred_at, p.payload -> 'data',
                                         p.environment, p.projection_error) AS data_error
      FROM paddle.entity_events_not_projected() p
      ORDER BY p.occurred_at, p.event_id) AS e;

DROP FUNCTION paddle.entity_events_not_projected();
