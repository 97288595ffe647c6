-- paddlehook 0009_live_events: a sandbox delivery never stands in for a live event.
--
-- Runs once, inside the migration runner's transaction (no BEGIN/COMMIT here). PostgreSQL 15.
--
-- payment_events is keyed by event_id alone. Whoever holds a sandbox secret (sandbox secrets are shared with
-- developers) and learned the id of a live event before it was stored (a delivery Paddle is still retrying)
-- could send it first through a sandbox endpoint: the live delivery then answered 'duplicate' and was never
-- stored or projected. Now a live delivery whose event_id is stored from a sandbox endpoint replaces that row
-- and is projected as a new event (paddle.snapshot_replaces already lets a live snapshot replace sandbox
-- state); ingest_event returns 'replaced_sandbox' then, so that the worker can warn: the sandbox event was
-- forged or mistaken. A sandbox delivery of an id stored from a live endpoint is still a duplicate, as is any
-- delivery of an id already stored from its own environment.
--
-- The replacement is paddle.replace_sandbox_event, which runs with its owner's rights: the worker's role may
-- insert events and set projection_error, not rewrite stored payloads or delete state rows, and this function
-- touches only what a sandbox event wrote. It also deletes the state rows that still hold the sandbox event's
-- snapshot (with their items): the report views take an entity's environment from the event its row holds, so
-- once that event is live they would show a sandbox entity as live. (A sandbox entity whose row held
-- the replaced event is gone from the state tables until paddle.reproject rebuilds it from its earlier sandbox
-- events, if it had any.) Its EXECUTE is revoked from PUBLIC; this migration grants it to every role that may
-- both execute ingest_event and insert events (a worker's own role, whether its EXECUTE on ingest_event is its
-- own or PUBLIC's), and the worker-role block in docs/security.md grants it too. New events pay nothing for it:
-- ingest_event calls it only when a live delivery's insert finds the id taken.
--
-- ingest_event is redefined whole (CREATE OR REPLACE): it is 0005's, changed only where the insert finds the
-- id taken and in what it returns. Earlier migrations stay as they were applied.

CREATE FUNCTION paddle.replace_sandbox_event(p_event_id text, p_event_type text, p_occurred_at timestamptz,
                                             p_notification_id text, p_endpoint_id text, p_payload jsonb)
    RETURNS boolean
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- A live redelivery (the usual reason to get here) stops at this read, without locks.
    IF NOT EXISTS (SELECT FROM paddle.payment_events WHERE event_id = p_event_id AND environment = 'sandbox') THEN
        RETURN false;
    END IF;
    -- The state tables before the event row, in paddle.reproject's order: the other order could deadlock
    -- with a rebuild that holds the tables and then updates this event's projection_error.
    LOCK TABLE paddle.customers, paddle.subscriptions, paddle.subscription_items, paddle.transactions,
               paddle.transaction_items, paddle.adjustments, paddle.adjustment_items IN ROW EXCLUSIVE MODE;
    -- Under READ COMMITTED a concurrent replacement makes this one wait for the row and re-check it, and
    -- find it live: one of two live deliveries replaces, the other is a duplicate.
    UPDATE paddle.payment_events
       SET endpoint_id = p_endpoint_id, environment = 'live', notification_id = p_notification_id,
           event_type = p_event_type, occurred_at = p_occurred_at, received_at = now(), payload = p_payload,
           projection_error = NULL
     WHERE event_id = p_event_id AND environment = 'sandbox';
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    -- What the sandbox event's projection wrote and later snapshots have not replaced.
    WITH gone AS (DELETE FROM paddle.subscriptions
                   WHERE event_id = p_event_id AND environment = 'sandbox' RETURNING id)
    DELETE FROM paddle.subscription_items WHERE subscription_id IN (SELECT id FROM gone);
    WITH gone AS (DELETE FROM paddle.transactions
                   WHERE event_id = p_event_id AND environment = 'sandbox' RETURNING id)
    DELETE FROM paddle.transaction_items WHERE transaction_id IN (SELECT id FROM gone);
    WITH gone AS (DELETE FROM paddle.adjustments
                   WHERE event_id = p_event_id AND environment = 'sandbox' RETURNING id)
    DELETE FROM paddle.adjustment_items WHERE adjustment_id IN (SELECT id FROM gone);
    DELETE FROM paddle.customers WHERE event_id = p_event_id AND environment = 'sandbox';
    RETURN true;
END
$$;

REVOKE EXECUTE ON FUNCTION paddle.replace_sandbox_event(text, text, timestamptz, text, text, jsonb) FROM PUBLIC;

-- A worker that runs as its own role keeps working through the upgrade: every role that may run ingest_event and
-- insert events (not the owner, superusers or PostgreSQL's predefined roles) may execute this too.
DO $$
DECLARE
    v_role regrole;
BEGIN
    FOR v_role IN
        SELECT r.oid::regrole
        FROM pg_roles r
        CROSS JOIN (SELECT proowner FROM pg_proc
                    WHERE oid = 'paddle.ingest_event(text, text, timestamptz, text, text, text, jsonb)'::regprocedure)
                   AS f
        WHERE NOT r.rolsuper AND r.oid <> f.proowner AND r.rolname NOT LIKE 'pg\_%'
          AND has_function_privilege(r.oid, 'paddle.ingest_event(text, text, timestamptz, text, text, text, jsonb)',
                                     'EXECUTE')
          AND has_table_privilege(r.oid, 'paddle.payment_events', 'INSERT')
    LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION paddle.replace_sandbox_event(text, text, timestamptz, text, '
                       'text, jsonb) TO %s', v_role);
    END LOOP;
END
$$;

COMMENT ON FUNCTION paddle.replace_sandbox_event(text, text, timestamptz, text, text, jsonb) IS
    'Replace the payment_events row of p_event_id with a live delivery of it, if that row came from a sandbox endpoint, and delete the state rows (and their items) that still hold that sandbox event''s snapshot; true if it did. Called by paddle.ingest_event when a live insert finds the id taken. Runs with its owner''s rights (the worker''s role may not rewrite stored events); EXECUTE is not granted to PUBLIC.';

COMMENT ON COLUMN paddle.payment_events.endpoint_id IS 'paddlehook endpoint (notification destination configuration) that received the first stored delivery of this event; for a live event that replaced a sandbox event with its id (paddle.replace_sandbox_event), the live endpoint.';
COMMENT ON COLUMN paddle.payment_events.notification_id IS 'Paddle notification id (ntf_...) of the first stored delivery (or of the live delivery that replaced a sandbox event with its id); differs per destination and per replay, so later deliveries of the same event are not recorded.';
COMMENT ON COLUMN paddle.payment_events.received_at IS 'When paddlehook stored the event (transaction time of the insert, or of the live delivery that replaced a sandbox event with its id).';

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
DECLARE
    v_result text := 'stored';
BEGIN
    INSERT INTO paddle.payment_events
        (event_id, endpoint_id, environment, notification_id, event_type, occurred_at, payload)
    VALUES
        (p_event_id, p_endpoint_id, p_environment, p_notification_id, p_event_type, p_occurred_at, p_payload)
    ON CONFLICT (event_id) DO NOTHING;

    IF NOT FOUND THEN
        -- The id is taken. Separate IFs: SQL does not promise to evaluate OR's operands in order.
        IF p_environment <> 'live' THEN
            RETURN 'duplicate';
        END IF;
        IF NOT paddle.replace_sandbox_event(p_event_id, p_event_type, p_occurred_at, p_notification_id,
                                            p_endpoint_id, p_payload) THEN
            RETURN 'duplicate';
        END IF;
        v_result := 'replaced_sandbox';
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

    RETURN v_result;
END
$$;

COMMENT ON FUNCTION paddle.ingest_event(text, text, timestamptz, text, text, text, jsonb) IS
    'The one call per webhook delivery. Stores the notification in payment_events and returns ''duplicate'' if the event_id was already stored (nothing else is touched), except that a live delivery replaces an event stored from a sandbox endpoint (and returns ''replaced_sandbox''). Otherwise projects payload->''data'' into the state tables; a projection failure the data causes (paddle.projection_failure_is_data) is recorded in payment_events.projection_error and the event kept. Returns ''stored''. Raises (nothing stored) on any other failure, and if the event row itself cannot be stored (NULL in a NOT NULL column, environment not sandbox/live).';
