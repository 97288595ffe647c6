-- paddlehook 0026_backfill_filters: a backfill can be limited to some event types, and to events received since a
-- moment.
--
-- Runs once, inside the migration runner's transaction (no BEGIN/COMMIT here). PostgreSQL 14 or newer.
--
-- paddle.queue_stored_events(consumer, since) queues every stored event the consumer wants that occurred since a
-- moment. Two things an application needs could not be had from it:
--   - A consumer given more event types wants the earlier events of the new types; a backfill queued again those
--     of its old types too, which it had already acted on.
--   - An application that restores its own database from a backup taken at a moment must act again on what it
--     claimed since then: events received since then, which may have occurred days earlier (Paddle retries for
--     days), and which a moment of occurrence does not find.
-- paddle.queue_stored_events(consumer, since, event_types, received_since) takes both; NULL leaves a filter out.
-- The two-argument form is that with the two NULL. Like it, it runs with its owner's rights, is not granted to
-- PUBLIC, and locks the consumer's row until the caller's transaction ends (0019).

CREATE FUNCTION paddle.queue_stored_events(p_consumer text, p_since timestamptz, p_event_types text[],
                                           p_received_since timestamptz)
    RETURNS bigint
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_consumer paddle.consumers;
    v_count bigint;
BEGIN
    IF p_event_types IS NOT NULL AND NOT paddle.valid_event_type_patterns(p_event_types) THEN
        RAISE EXCEPTION 'paddle.queue_stored_events: p_event_types takes 1 to 100 event types or entity.* patterns'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
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
      AND (p_received_since IS NULL OR e.received_at >= p_received_since)
      AND paddle.consumer_wants(v_consumer.event_types, v_consumer.environment, e.event_type, e.environment)
      AND (p_event_types IS NULL OR paddle.consumer_wants(p_event_types, NULL, e.event_type, e.environment))
    ON CONFLICT (event_id, consumer) DO NOTHING;   -- still queued
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_count;
END
$$;
REVOKE EXECUTE ON FUNCTION paddle.queue_stored_events(text, timestamptz, text[], timestamptz) FROM PUBLIC;

COMMENT ON FUNCTION paddle.queue_stored_events(text, timestamptz, text[], timestamptz) IS
    'Queue for a consumer the stored events it wants that occurred at or after p_since, are of p_event_types (event types or entity.* patterns) and were received at or after p_received_since (each NULL: no such filter), also ones it claimed before; events still in its queue stay once. Returns how many were added. Runs with its owner''s rights. Locks the consumer''s row FOR NO KEY UPDATE until the caller''s transaction ends: another backfill of the same consumer, a change to the consumer and its deletion wait for it; claims and deliveries do not. EXECUTE is not granted to PUBLIC.';

CREATE OR REPLACE FUNCTION paddle.queue_stored_events(p_consumer text, p_since timestamptz)
    RETURNS bigint
    LANGUAGE sql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
RETURN paddle.queue_stored_events(p_consumer, p_since, NULL, NULL);
