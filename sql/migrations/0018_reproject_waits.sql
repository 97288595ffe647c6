-- paddlehook 0018_reproject_waits: a rebuild waiting for a table no longer holds deliveries up.
--
-- Runs once, inside the migration runner's transaction (no BEGIN/COMMIT here). PostgreSQL 15.
--
-- paddle.reproject() locks the twelve state tables one after the other and waited as long as it took for each.
-- A VACUUM, ANALYZE or CREATE INDEX CONCURRENTLY on a later table (SHARE UPDATE EXCLUSIVE, which conflicts
-- with the rebuild's SHARE ROW EXCLUSIVE) kept it waiting while it held the earlier ones, and every delivery
-- that projects into those answered 503 after the worker's 3-second lock timeout, for as long as the other
-- command ran: minutes, before the rebuild had even begun. It now asks for the locks 200 ms at a time and
-- releases them between tries, as 0012 does, and says once in a while what it waits for; a caller's own
-- lock_timeout still bounds the whole wait. Same signature and search_path (0014); otherwise the function of
-- 0011.

CREATE OR REPLACE FUNCTION paddle.reproject(p_since timestamptz DEFAULT NULL)
    RETURNS bigint
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_event record;
    v_count bigint := 0;
    v_lock_timeout text := current_setting('lock_timeout');
    v_started timestamptz := clock_timestamp();
    v_tries integer := 0;
BEGIN
    -- Later statements must see every event committed before the lock was granted: that needs a fresh
    -- snapshot per statement, i.e. READ COMMITTED.
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'paddle.reproject() must run in a READ COMMITTED transaction (this one is %)',
            current_setting('transaction_isolation') USING ERRCODE = 'invalid_transaction_state';
    END IF;

    -- Conflicts with the ROW EXCLUSIVE lock of every projecting ingest (and with itself), not with readers:
    -- ingests that already wrote state rows finish first, later ones wait for our commit and then apply
    -- their snapshot with the usual newer-wins guard. Taken before payment_events is read. The tables are
    -- locked one after the other: asked for at most 200 ms at a time and all released between tries, so that
    -- deliveries never queue behind a rebuild that waits for a VACUUM, an index build or a long transaction.
    LOOP
        BEGIN
            PERFORM set_config('lock_timeout', '200ms', true);
            LOCK TABLE paddle.customers, paddle.subscriptions, paddle.subscription_items, paddle.transactions,
                       paddle.transaction_items, paddle.adjustments, paddle.adjustment_items, paddle.addresses,
                       paddle.businesses, paddle.products, paddle.prices, paddle.discounts
                IN SHARE ROW EXCLUSIVE MODE;
            EXIT;
        EXCEPTION WHEN lock_not_available THEN
            -- The caller's own lock_timeout, if any, still bounds the whole wait.
            IF v_lock_timeout <> '0' AND clock_timestamp() - v_started >= v_lock_timeout::interval THEN
                RAISE lock_not_available USING MESSAGE = format(
                    'paddle.reproject() waited %s (lock_timeout) for the state tables', v_lock_timeout);
            END IF;
            v_tries := v_tries + 1;
            IF v_tries % 50 = 1 THEN
                RAISE NOTICE 'waiting for the state tables (a VACUUM, an index build or a long transaction holds one); deliveries go on meanwhile';
            END IF;
            PERFORM pg_sleep(0.5);
        END;
    END LOOP;
    PERFORM set_config('lock_timeout', v_lock_timeout, true);

    -- The events to replay (their ids), chosen after the lock so that every committed event is seen.
    CREATE TEMPORARY TABLE IF NOT EXISTS pg_temp.paddle_reproject_events (event_id text PRIMARY KEY)
        ON COMMIT DROP;
    TRUNCATE pg_temp.paddle_reproject_events;

    IF p_since IS NULL THEN
        DELETE FROM paddle.subscription_items;
        DELETE FROM paddle.transaction_items;
        DELETE FROM paddle.adjustment_items;
        DELETE FROM paddle.customers;
        DELETE FROM paddle.subscriptions;
        DELETE FROM paddle.transactions;
        DELETE FROM paddle.adjustments;
        DELETE FROM paddle.addresses;
        DELETE FROM paddle.businesses;
        DELETE FROM paddle.products;
        DELETE FROM paddle.prices;
        DELETE FROM paddle.discounts;

        INSERT INTO pg_temp.paddle_reproject_events (event_id)
        SELECT e.event_id FROM paddle.payment_events e
        WHERE split_part(e.event_type, '.', 1) IN ('customer', 'subscription', 'transaction', 'adjustment', 'address',
                                                   'business', 'product', 'price', 'discount');
    ELSE
        -- Entities (type + id) with an event at or after p_since: deleted, then rebuilt from all their events.
        CREATE TEMPORARY TABLE IF NOT EXISTS pg_temp.paddle_reproject_entities (entity text, id text,
            PRIMARY KEY (entity, id)) ON COMMIT DROP;
        TRUNCATE pg_temp.paddle_reproject_entities;
        INSERT INTO pg_temp.paddle_reproject_entities (entity, id)
        SELECT DISTINCT split_part(e.event_type, '.', 1), paddle.to_key(e.payload -> 'data' ->> 'id')
        FROM paddle.payment_events e
        WHERE e.occurred_at >= p_since
          AND split_part(e.event_type, '.', 1) IN ('customer', 'subscription', 'transaction', 'adjustment', 'address',
                                                   'business', 'product', 'price', 'discount')
          AND paddle.to_key(e.payload -> 'data' ->> 'id') IS NOT NULL;

        DELETE FROM paddle.customers t USING pg_temp.paddle_reproject_entities r
            WHERE r.entity = 'customer' AND t.id = r.id;
        DELETE FROM paddle.subscription_items t USING pg_temp.paddle_reproject_entities r
            WHERE r.entity = 'subscription' AND t.subscription_id = r.id;
        DELETE FROM paddle.subscriptions t USING pg_temp.paddle_reproject_entities r
            WHERE r.entity = 'subscription' AND t.id = r.id;
        DELETE FROM paddle.transaction_items t USING pg_temp.paddle_reproject_entities r
            WHERE r.entity = 'transaction' AND t.transaction_id = r.id;
        DELETE FROM paddle.transactions t USING pg_temp.paddle_reproject_entities r
            WHERE r.entity = 'transaction' AND t.id = r.id;
        DELETE FROM paddle.adjustment_items t USING pg_temp.paddle_reproject_entities r
            WHERE r.entity = 'adjustment' AND t.adjustment_id = r.id;
        DELETE FROM paddle.adjustments t USING pg_temp.paddle_reproject_entities r
            WHERE r.entity = 'adjustment' AND t.id = r.id;
        DELETE FROM paddle.addresses t USING pg_temp.paddle_reproject_entities r
            WHERE r.entity = 'address' AND t.id = r.id;
        DELETE FROM paddle.businesses t USING pg_temp.paddle_reproject_entities r
            WHERE r.entity = 'business' AND t.id = r.id;
        DELETE FROM paddle.products t USING pg_temp.paddle_reproject_entities r
            WHERE r.entity = 'product' AND t.id = r.id;
        DELETE FROM paddle.prices t USING pg_temp.paddle_reproject_entities r
            WHERE r.entity = 'price' AND t.id = r.id;
        DELETE FROM paddle.discounts t USING pg_temp.paddle_reproject_entities r
            WHERE r.entity = 'discount' AND t.id = r.id;

        INSERT INTO pg_temp.paddle_reproject_events (event_id)
        SELECT e.event_id FROM paddle.payment_events e
        JOIN pg_temp.paddle_reproject_entities r
          ON r.entity = split_part(e.event_type, '.', 1) AND r.id = paddle.to_key(e.payload -> 'data' ->> 'id');
    END IF;

    FOR v_event IN
        SELECT e.event_id, e.event_type, e.occurred_at, e.payload -> 'data' AS data, e.environment,
               e.projection_error
        FROM paddle.payment_events e
        JOIN pg_temp.paddle_reproject_events r ON r.event_id = e.event_id
        ORDER BY e.occurred_at, e.event_id
    LOOP
        v_count := v_count + 1;
        PERFORM paddle.project_stored_event(v_event.event_id, v_event.event_type, v_event.occurred_at,
                                            v_event.data, v_event.environment, v_event.projection_error);
    END LOOP;

    TRUNCATE pg_temp.paddle_reproject_events;
    RETURN v_count;
END
$$;

COMMENT ON FUNCTION paddle.reproject(timestamptz) IS
    'Rebuild the state tables from payment_events in (occurred_at, event_id) order, inside the caller''s transaction (READ COMMITTED), while the receiver keeps running. p_since NULL: every state row is deleted and every customer/subscription/transaction/adjustment/address/business/product/price/discount event replayed. p_since given: only entities (entity type + data.id) with an event at or after p_since are deleted and rebuilt from all their events. Locks the state tables IN SHARE ROW EXCLUSIVE MODE first, asking 200 ms at a time and releasing them between tries so that deliveries never queue behind its wait (the caller''s lock_timeout, if set, bounds the whole wait); readers go on and see the old rows until commit; ingests wait, then apply newer-wins. projection_error is set or cleared per event as in ingest_event/reproject_event. Returns the number of events replayed.';
