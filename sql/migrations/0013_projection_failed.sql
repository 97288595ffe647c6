-- paddlehook 0013_projection_failed: a delivery whose projection failed says so.
--
-- Runs once, inside the migration runner's transaction (no BEGIN/COMMIT here). PostgreSQL 15.
--
-- When projecting an event fails for a reason in its data (paddle.projection_failure_is_data), the event is
-- kept with the error in payment_events.projection_error, and Paddle gets its 200: a retry would fail the same
-- way. Until now paddle.ingest_event answered 'stored' all the same, so the worker logged and counted it as a
-- plain success while the state tables missed the change (a cancellation, a refund) the event carried. It
-- now answers 'projection_failed', which the worker logs as a warning and counts under that outcome
-- (paddlehook_deliveries_total{outcome="projection_failed"}); Paddle still gets {"status":"stored"}. This
-- outcome takes precedence over 'replaced_sandbox' for the rare live delivery that does both.
--
-- A worker older than this migration takes any answer but 'duplicate' and 'replaced_sandbox' as 'stored', so
-- old and new workers both run against it. The function is the one of 0011_entities, changed only there.
--
-- Also:
-- - paddle.dunning_summary averaged time_to_recover with avg(interval), which sums the intervals' 32-bit day
--   counts: some 590 cases spanning millennia (occurred_at may be any year from 1 to 9999, and whoever holds a
--   sandbox secret can send them) made the whole view fail with "interval out of range", for every
--   environment. It now averages seconds in numeric (exact to the microsecond, shown as days and hours).
--   Same columns and types; otherwise the view of 0003_reports.
-- - paddle.schema_migrations (made by the migration runner itself) gets the COMMENT every other table has.

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
    IF split_part(p_event_type, '.', 1) IN ('customer', 'subscription', 'transaction', 'adjustment', 'address',
                                            'business', 'product', 'price', 'discount') THEN
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
            -- Stored, but the state tables do not show it: the worker warns and counts it.
            v_result := 'projection_failed';
        END;
    END IF;

    RETURN v_result;
END
$$;

COMMENT ON FUNCTION paddle.ingest_event(text, text, timestamptz, text, text, text, jsonb) IS
    'The one call per webhook delivery. Stores the notification in payment_events and returns ''duplicate'' if the event_id was already stored (nothing else is touched), except that a live delivery replaces an event stored from a sandbox endpoint (and returns ''replaced_sandbox''). Otherwise projects payload->''data'' into the state tables and returns ''stored''; a projection failure the data causes (paddle.projection_failure_is_data) is recorded in payment_events.projection_error, the event kept, and the answer is ''projection_failed''. Raises (nothing stored) on any other failure, and if the event row itself cannot be stored (NULL in a NOT NULL column, environment not sandbox/live).';

COMMENT ON TABLE paddle.schema_migrations IS
    'The migrations paddlehook migrate has applied (version = file name without .sql), each once, in order, with when.';

CREATE OR REPLACE VIEW paddle.dunning_summary AS
SELECT d.environment,
       d.currency_code,
       count(*) AS cases,
       count(*) FILTER (WHERE d.state = 'open') AS open_cases,
       count(*) FILTER (WHERE d.state = 'recovered') AS recovered_cases,
       count(*) FILTER (WHERE d.state = 'lost') AS lost_cases,
       round(count(*) FILTER (WHERE d.state = 'recovered')::numeric
             / nullif(count(*) FILTER (WHERE d.state IN ('recovered', 'lost')), 0), 4) AS recovery_rate,
       coalesce(sum(d.amount), paddle.to_major(0, d.currency_code)) AS amount_failed,
       coalesce(sum(d.amount) FILTER (WHERE d.state = 'recovered'), paddle.to_major(0, d.currency_code))
           AS amount_recovered,
       coalesce(sum(d.amount) FILTER (WHERE d.state = 'lost'), paddle.to_major(0, d.currency_code)) AS amount_lost,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY d.time_to_recover) AS median_time_to_recover,
       -- avg(interval) would add up 32-bit day counts; numeric seconds cannot overflow. Whole days apart, so
       -- that the double that make_interval takes holds the rest to the microsecond.
       make_interval(days => floor(avg(extract(epoch FROM d.time_to_recover)) / 86400)::int,
                     secs => (avg(extract(epoch FROM d.time_to_recover))
                              - floor(avg(extract(epoch FROM d.time_to_recover)) / 86400) * 86400)::double precision)
           AS avg_time_to_recover
FROM paddle.dunning d
GROUP BY d.environment, d.currency_code;
