-- paddlehook 0005_projection_errors: only the data's own faults become a projection_error.
--
-- Runs once, inside the migration runner's transaction (no BEGIN/COMMIT here). PostgreSQL 15.
--
-- Until now ingest_event recorded every projection failure on the event and answered 'stored', except a
-- list of contention and resource errors. A missing grant (42501, e.g. EXECUTE on the helper functions
-- revoked from PUBLIC), a table or function missing in the middle of a deploy (42P01, 42883), an I/O or
-- internal error (58xxx, XX000) were acknowledged too: Paddle stopped retrying and the state tables went
-- stale without a sound. Now only these classes are recorded, because retrying the same payload cannot
-- help them:
--
--   21  cardinality violation (e.g. a subquery over the payload's arrays giving more than one row)
--   22  data exception (bad value, number out of range, invalid text for a type, \u0000 in text)
--   23  integrity constraint violation (NOT NULL or CHECK on a state column the payload does not satisfy)
--   54  program limit exceeded (a value too large for an index row, nesting too deep)
--
-- Every other error fails the delivery as a whole: nothing is stored, the worker answers 5xx and Paddle
-- retries it later, when the cause has been mended. reproject_event and reproject apply the same rule
-- (before, reproject_event recorded even contention errors). reproject_event also locks the state tables
-- before the event row, as reproject does, so that the two cannot deadlock.
--
-- The functions are redefined whole (CREATE OR REPLACE): they are 0001's and 0003's, changed only in their
-- exception handlers. Earlier migrations stay as they were applied.

CREATE FUNCTION paddle.projection_failure_is_data(p_sqlstate text)
    RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN left(p_sqlstate, 2) IN ('21', '22', '23', '54');

COMMENT ON FUNCTION paddle.projection_failure_is_data(text) IS
    'True for the SQLSTATE classes a payload itself can cause (21 cardinality, 22 data exception, 23 integrity constraint, 54 program limit): such projection failures are recorded in payment_events.projection_error and the event is kept. Any other error aborts the ingest (the worker answers 5xx and Paddle retries) or the rebuild.';

CREATE OR REPLACE FUNCTION paddle.ingest_event(
        p_event_id        text,
        p_event_type      text,
        p_occurred_at     timestamptz,
        p_notification_id text,
        p_endpoint_id     text,
        p_environment     text,
        p_payload         jsonb)
    RETURNS text
    LANGUAGE plpgsql
AS $$
BEGIN
    INSERT INTO paddle.payment_events
        (event_id, endpoint_id, environment, notification_id, event_type, occurred_at, payload)
    VALUES
        (p_event_id, p_endpoint_id, p_environment, p_notification_id, p_event_type, p_occurred_at, p_payload)
    ON CONFLICT (event_id) DO NOTHING;

    IF NOT FOUND THEN
        RETURN 'duplicate';
    END IF;

    -- Only entity types that project pay for the subtransaction of the exception block.
    -- Keep this list in sync with the CASE in paddle.project_event.
    IF split_part(p_event_type, '.', 1) IN ('customer', 'subscription', 'transaction', 'adjustment') THEN
        BEGIN
            PERFORM paddle.project_event(p_event_id, p_event_type, p_occurred_at, p_payload -> 'data',
                                         p_environment);
        EXCEPTION WHEN OTHERS THEN
            -- Only the data's own faults are recorded. Anything else (contention, a missing grant or
            -- table, I/O) fails the whole delivery: the worker answers 5xx, Paddle retries, and the state
            -- is never acknowledged stale.
            IF NOT paddle.projection_failure_is_data(SQLSTATE) THEN
                RAISE;
            END IF;
            -- The block's savepoint was rolled back: no partial projection rows remain; keep the event.
            UPDATE paddle.payment_events
               SET projection_error = SQLSTATE || ': ' || SQLERRM
             WHERE event_id = p_event_id;
        END;
    END IF;

    RETURN 'stored';
END
$$;

CREATE OR REPLACE FUNCTION paddle.reproject_event(p_event_id text)
    RETURNS text
    LANGUAGE plpgsql
AS $$
DECLARE
    v_event paddle.payment_events%ROWTYPE;
BEGIN
    -- The state tables before the event row, in paddle.reproject's order: the other order could deadlock
    -- with a rebuild that holds the tables and then updates this event's projection_error.
    LOCK TABLE paddle.customers, paddle.subscriptions, paddle.subscription_items, paddle.transactions,
               paddle.transaction_items, paddle.adjustments, paddle.adjustment_items IN ROW EXCLUSIVE MODE;
    SELECT * INTO v_event FROM paddle.payment_events WHERE event_id = p_event_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    BEGIN
        PERFORM paddle.project_event(v_event.event_id, v_event.event_type, v_event.occurred_at,
                                     v_event.payload -> 'data', v_event.environment);
        UPDATE paddle.payment_events SET projection_error = NULL WHERE event_id = p_event_id;
        RETURN 'ok';
    EXCEPTION WHEN OTHERS THEN
        IF NOT paddle.projection_failure_is_data(SQLSTATE) THEN
            RAISE;
        END IF;
        UPDATE paddle.payment_events
           SET projection_error = SQLSTATE || ': ' || SQLERRM
         WHERE event_id = p_event_id;
        RETURN SQLSTATE || ': ' || SQLERRM;
    END;
END
$$;

CREATE OR REPLACE FUNCTION paddle.reproject(p_since timestamptz DEFAULT NULL)
    RETURNS bigint
    LANGUAGE plpgsql
AS $$
DECLARE
    v_event record;
    v_count bigint := 0;
BEGIN
    -- Later statements must see every event committed before the lock was granted: that needs a fresh
    -- snapshot per statement, i.e. READ COMMITTED.
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'paddle.reproject() must run in a READ COMMITTED transaction (this one is %)',
            current_setting('transaction_isolation') USING ERRCODE = 'invalid_transaction_state';
    END IF;

    -- Conflicts with the ROW EXCLUSIVE lock of every projecting ingest (and with itself), not with readers:
    -- ingests that already wrote state rows finish first, later ones wait for our commit and then apply
    -- their snapshot with the usual newer-wins guard. Taken before payment_events is read.
    LOCK TABLE paddle.customers, paddle.subscriptions, paddle.subscription_items, paddle.transactions,
               paddle.transaction_items, paddle.adjustments, paddle.adjustment_items
        IN SHARE ROW EXCLUSIVE MODE;

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

        INSERT INTO pg_temp.paddle_reproject_events (event_id)
        SELECT e.event_id FROM paddle.payment_events e
        WHERE split_part(e.event_type, '.', 1) IN ('customer', 'subscription', 'transaction', 'adjustment');
    ELSE
        -- Entities (type + id) with an event at or after p_since: deleted, then rebuilt from all their events.
        CREATE TEMPORARY TABLE IF NOT EXISTS pg_temp.paddle_reproject_entities (entity text, id text,
            PRIMARY KEY (entity, id)) ON COMMIT DROP;
        TRUNCATE pg_temp.paddle_reproject_entities;
        INSERT INTO pg_temp.paddle_reproject_entities (entity, id)
        SELECT DISTINCT split_part(e.event_type, '.', 1), paddle.to_key(e.payload -> 'data' ->> 'id')
        FROM paddle.payment_events e
        WHERE e.occurred_at >= p_since
          AND split_part(e.event_type, '.', 1) IN ('customer', 'subscription', 'transaction', 'adjustment')
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
        BEGIN
            PERFORM paddle.project_event(v_event.event_id, v_event.event_type, v_event.occurred_at,
                                         v_event.data, v_event.environment);
            IF v_event.projection_error IS NOT NULL THEN
                UPDATE paddle.payment_events SET projection_error = NULL WHERE event_id = v_event.event_id;
            END IF;
        EXCEPTION WHEN OTHERS THEN
            -- As in paddle.ingest_event: anything but the data's own fault aborts the whole rebuild
            -- (nothing changes); a data error is recorded on the event, its savepoint rolled back, and
            -- replay goes on.
            IF NOT paddle.projection_failure_is_data(SQLSTATE) THEN
                RAISE;
            END IF;
            UPDATE paddle.payment_events
               SET projection_error = SQLSTATE || ': ' || SQLERRM
             WHERE event_id = v_event.event_id;
        END;
    END LOOP;

    TRUNCATE pg_temp.paddle_reproject_events;
    RETURN v_count;
END
$$;

COMMENT ON FUNCTION paddle.ingest_event(text, text, timestamptz, text, text, text, jsonb) IS
    'The one call per webhook delivery. Stores the notification in payment_events (ON CONFLICT (event_id) DO NOTHING) and returns ''duplicate'' if the event was already stored (nothing else is touched). Otherwise projects payload->''data'' into the state tables; a projection failure the data causes (paddle.projection_failure_is_data) is recorded in payment_events.projection_error and the event kept. Returns ''stored''. Raises (nothing stored) on any other failure, and if the event row itself cannot be stored (NULL in a NOT NULL column, environment not sandbox/live).';

COMMENT ON FUNCTION paddle.reproject_event(text) IS
    'Run paddle.project_event again for a stored event (e.g. one with projection_error after a fix) and update its projection_error. Returns ''ok'', the error text of a failure the data causes (paddle.projection_failure_is_data), or NULL if the event is unknown; raises on any other failure. Has no effect on state rows already holding this or a newer snapshot.';
