-- paddlehook 0019_backfill_one_at_a_time: two backfills of one consumer no longer deadlock.
--
-- Runs once, inside the migration runner's transaction (no BEGIN/COMMIT here). PostgreSQL 15.
--
-- paddle.queue_stored_events locked the consumer's row FOR KEY SHARE, which two callers hold together. Each
-- then inserted its queue rows in the order its scan met the events, and waited for the other's uncommitted row
-- of the same event: two backfills of one consumer that met two events in opposite orders (two calls in one
-- transaction with different p_since, or the synchronised scans PostgreSQL starts on a large payment_events)
-- deadlocked, and one of them failed after deadlock_timeout. The row is now locked FOR NO KEY UPDATE, so the
-- second backfill waits for the first to end; claims (FOR KEY SHARE) and deliveries still run beside it.
-- Same signature, rights and search_path; otherwise the function of 0010.

CREATE OR REPLACE FUNCTION paddle.queue_stored_events(p_consumer text, p_since timestamptz)
    RETURNS bigint
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_consumer paddle.consumers;
    v_count bigint;
BEGIN
    -- Held until the caller's transaction ends: another backfill of this consumer, a change to it and its
    -- deletion wait for this one; claims do not.
    SELECT * INTO v_consumer FROM paddle.consumers c WHERE c.name = p_consumer FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'paddle.queue_stored_events: no consumer named % (paddle.consumers)',
            quote_nullable(p_consumer) USING ERRCODE = 'no_data_found';
    END IF;
    -- Events are not locked (that would deadlock with reproject, which updates them in another order): a row
    -- queued here for an event deleted or replaced meanwhile is dropped when claimed (paddle.claim_events).
    INSERT INTO paddle.consumer_queue (event_id, consumer, occurred_at)
    SELECT e.event_id, v_consumer.name, e.occurred_at
    FROM paddle.payment_events e
    WHERE (p_since IS NULL OR e.occurred_at >= p_since)
      AND paddle.consumer_wants(v_consumer.event_types, v_consumer.environment, e.event_type, e.environment)
    ON CONFLICT (event_id, consumer) DO NOTHING;   -- still queued
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_count;
END
$$;

COMMENT ON FUNCTION paddle.queue_stored_events(text, timestamptz) IS
    'Queue for a consumer the stored events it wants that occurred at or after p_since (NULL: all), also ones it claimed before; events still in its queue stay once. Returns how many were added. For a new consumer that must see the past, or to process a period again. Runs with its owner''s rights. Locks the consumer''s row FOR NO KEY UPDATE until the caller''s transaction ends: another backfill of the same consumer, a change to the consumer and its deletion wait for it; claims and deliveries do not. EXECUTE is not granted to PUBLIC.';
