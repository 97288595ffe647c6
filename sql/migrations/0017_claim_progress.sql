-- paddlehook 0017_claim_progress: a claim that drops many unwanted rows no longer takes quadratic time.
--
-- Runs once, inside the migration runner's transaction (no BEGIN/COMMIT here). PostgreSQL 15.
--
-- paddle.claim_events drops the rows it takes that the consumer no longer wants (its event_types were
-- narrowed, as docs/consumers.md describes) and takes more, until it has something to return. Each pass began
-- at the start of the consumer's queue again and walked over the index entries of every row the earlier passes
-- of the same transaction had deleted (they cannot be removed before it ends): 10,000 unwanted rows ahead of a
-- wanted one took 6 s to claim with a limit of 1, 100,000 more than ten minutes, so a claim under any statement
-- timeout rolled back every time and the queue never drained. Each pass now starts after the last row the
-- previous one took, and one last pass from the start before an empty answer finds rows queued meanwhile
-- ahead of them. Same signature, rights and search_path; otherwise the function of 0010.

CREATE OR REPLACE FUNCTION paddle.claim_events(p_consumer text, p_limit integer DEFAULT 100)
    RETURNS TABLE (event_id text, event_type text, environment text, occurred_at timestamptz,
                   received_at timestamptz, payload jsonb)
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_taken text[];
    -- The last key a pass of this call took: the next pass starts after it (the first after every key: event
    -- ids are never empty). A condition the index always answers, so that the pass skips what lies before.
    v_after_at timestamptz := '-infinity';
    v_after_id text := '';
    v_last_at timestamptz;  -- the last key of the pass just made
    v_last_id text;
BEGIN
    -- Under REPEATABLE READ or SERIALIZABLE, a row another claimer deleted after this transaction's snapshot
    -- raises a serialization failure instead of being skipped.
    PERFORM paddle.require_read_committed('paddle.claim_events runs');
    IF p_limit IS NULL OR p_limit NOT BETWEEN 1 AND 10000 THEN
        RAISE EXCEPTION 'paddle.claim_events: the limit must be between 1 and 10000, not %', p_limit
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- Held until the caller's transaction ends: deleting the consumer waits for its open claims.
    PERFORM FROM paddle.consumers c WHERE c.name = p_consumer FOR KEY SHARE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'paddle.claim_events: no consumer named % (paddle.consumers)', quote_nullable(p_consumer)
            USING ERRCODE = 'no_data_found';
    END IF;
    -- Until something is returned or nothing is left to take: an empty result means an empty queue (but for
    -- rows other claimers hold). Each pass starts after the rows the previous one took: it would otherwise walk
    -- again over their index entries, deleted but not removable before this transaction ends, and a queue of N
    -- rows the consumer no longer wants would take N^2/limit steps to drop. Before it answers empty, one more
    -- pass looks from the start, for rows queued meanwhile with an earlier key.
    LOOP
        -- The rows locked here stay locked until the transaction ends, so their ctids are valid for the DELETE.
        WITH claimed AS (
            DELETE FROM paddle.consumer_queue q
            WHERE q.ctid = ANY (ARRAY(SELECT w.ctid FROM paddle.consumer_queue w
                                      WHERE w.consumer = p_consumer
                                        AND (w.occurred_at, w.event_id) > (v_after_at, v_after_id)
                                      ORDER BY w.occurred_at, w.event_id
                                      LIMIT p_limit
                                      FOR UPDATE SKIP LOCKED))
            RETURNING q.event_id, q.occurred_at)
        SELECT array_agg(c.event_id),
               (array_agg(c.occurred_at ORDER BY c.occurred_at DESC, c.event_id DESC))[1],
               (array_agg(c.event_id ORDER BY c.occurred_at DESC, c.event_id DESC))[1]
          INTO v_taken, v_last_at, v_last_id
          FROM claimed c;
        IF v_taken IS NULL AND v_after_at = '-infinity' THEN
            RETURN;
        ELSIF v_taken IS NULL THEN
            v_after_at := '-infinity';
            v_after_id := '';
            CONTINUE;
        END IF;
        v_after_at := v_last_at;
        v_after_id := v_last_id;
        -- Taken rows whose event is gone, or no longer one the consumer wants, are dropped: a backfill that
        -- ran beside the event's deletion, or beside a live delivery replacing a sandbox event, can leave such
        -- a row (their triggers do not see its uncommitted rows), and the consumer's definition may have
        -- changed. The definition is read here, not before the DELETE: a row queued under a newer one was
        -- committed before the DELETE's snapshot, so this later one sees that definition too.
        RETURN QUERY
        SELECT e.event_id, e.event_type, e.environment, e.occurred_at, e.received_at, e.payload
        FROM paddle.payment_events e
        JOIN paddle.consumers k ON k.name = p_consumer
        WHERE e.event_id = ANY (v_taken)
          AND paddle.consumer_wants(k.event_types, k.environment, e.event_type, e.environment)
        ORDER BY e.occurred_at, e.event_id;
        IF FOUND THEN
            RETURN;
        END IF;
    END LOOP;
END
$$;
