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
-- insert events and set projection_error, not rewrite stored payloads, and this function rewrites only sandbox
-- rows. Its EXECUTE is revoked from PUBLIC and granted to the worker's role (docs/security.md). New events pay
-- nothing for it: ingest_event calls it only when a live delivery's insert finds the id taken.
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
    -- Under READ COMMITTED a concurrent replacement makes this one re-check the row it waited for and
    -- find it live: one of two live deliveries replaces, the other is a duplicate.
    UPDATE paddle.payment_events
       SET endpoint_id = p_endpoint_id, environment = 'live', notification_id = p_notification_id,
           event_type = p_event_type, occurred_at = p_occurred_at, received_at = now(), payload = p_payload,
           projection_error = NULL
     WHERE event_id = p_event_id AND environment = 'sandbox';
    RETURN FOUND;
END
$$;

REVOKE EXECUTE ON FUNCTION paddle.replace_sandbox_event(text, text, timestamptz, text, text, jsonb) FROM PUBLIC;

COMMENT ON FUNCTION paddle.replace_sandbox_event(text, text, timestamptz, text, text, jsonb) IS
    'Replace the payment_events row of p_event_id with a live delivery of it, if that row came from a sandbox endpoint; true if it did. Called by paddle.ingest_event when a live insert finds the id taken. Runs with its owner''s rights (the worker''s role may not rewrite stored events); EXECUTE is not granted to PUBLIC.';

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
