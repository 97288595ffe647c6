-- paddlehook 0010_consumers: queues of stored events for the application to act on, exactly once.
--
-- Runs once, inside the migration runner's transaction (no BEGIN/COMMIT here). PostgreSQL 15.
--
-- The state tables say what is true now; some work must happen once per event instead: mint a licence when a
-- transaction completes, send a welcome mail, tell the CRM. An application that polls payment_events for rows
-- newer than the last one it saw misses events whose delivery committed after a later one (received_at and any
-- sequence are assigned before commit, so they do not arrive in order). Instead, a consumer registered in
-- paddle.consumers gets a queue row for every stored event it wants, written by a trigger in the delivery's
-- own transaction: an event acknowledged to Paddle is queued, a delivery that failed queued nothing, and a
-- duplicate delivery queues nothing again. The application takes rows with paddle.claim_events in its own
-- transaction, which deletes them; if that transaction rolls back they are back in the queue, and claimers
-- running side by side skip each other's rows.
--
-- The trigger and the claim run with their owner's rights, so that the worker's role needs no new privilege
-- (it cannot read the queue or the consumers) and an application's role needs only EXECUTE on claim_events.
-- EXECUTE on every function here that runs with its owner's rights is revoked from PUBLIC: anyone may attach
-- a trigger function to a temporary table of their own, which would let the worker's role write queues.
-- With no consumer registered a stored event pays for the trigger call and one look at the empty consumers
-- table. From this migration on, events are stored, and deleted, in READ COMMITTED transactions only (the worker
-- sets it for its sessions): a queue's writers must see what committed while they waited for locks.
--
-- Adding, changing or deleting a consumer waits for the deliveries in flight and holds new ones until it
-- commits (paddle.consumer_change): a delivery reads the consumers before it commits, and without the lock
-- one that committed after a new consumer could miss it, or queue a row for a consumer deleted meanwhile.
-- Deleting a consumer also waits for its open claims and backfills, which lock its row.

CREATE FUNCTION paddle.valid_event_type_patterns(p_patterns text[])
    RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN cardinality(p_patterns) BETWEEN 1 AND 100
   AND NOT EXISTS (SELECT FROM unnest(p_patterns) AS t(pattern)
                   WHERE t.pattern IS NULL
                      OR t.pattern !~ '^[a-z][a-z_]{0,62}\.([a-z][a-z_.]{0,62}|\*)$');

COMMENT ON FUNCTION paddle.valid_event_type_patterns(text[]) IS
    'Whether every element is a Paddle event type (entity.action: lower case letters, _ and .) or entity.* (1 to 100 elements). The check of paddle.consumers.event_types.';

CREATE TABLE paddle.consumers (
    name        text PRIMARY KEY,
    event_types text[],
    environment text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT consumers_name_format CHECK (name ~ '^[a-z][a-z0-9_]{0,62}$'),
    CONSTRAINT consumers_environment CHECK (environment IN ('sandbox', 'live')),
    CONSTRAINT consumers_event_types CHECK (event_types IS NULL OR paddle.valid_event_type_patterns(event_types))
);

COMMENT ON TABLE paddle.consumers IS
    'Who acts on stored events: each row gets a queue (paddle.consumer_queue) of the events it wants that are stored after it commits; paddle.queue_stored_events adds earlier ones. Deleting a consumer deletes its queue; a consumer cannot be renamed. Changing this table waits for deliveries in flight and holds new ones until the change commits: keep such transactions short.';
COMMENT ON COLUMN paddle.consumers.name IS 'The name claim_events takes: lower case letters, digits and _, starting with a letter, at most 63 characters.';
COMMENT ON COLUMN paddle.consumers.event_types IS 'Event types queued, e.g. {transaction.completed,subscription.*} (entity.* matches every action of that entity); NULL: every type, also ones Paddle adds later.';
COMMENT ON COLUMN paddle.consumers.environment IS 'sandbox or live: only events of that environment; NULL: both.';

-- No foreign keys: each check would lock the consumer's row FOR KEY SHARE in every delivery, so that concurrent
-- deliveries would pile up MultiXacts on that one row, and lock each new event row as well. Triggers below do
-- the cascades instead.
CREATE TABLE paddle.consumer_queue (
    event_id    text NOT NULL,
    consumer    text NOT NULL,
    occurred_at timestamptz NOT NULL,
    queued_at   timestamptz NOT NULL DEFAULT now(),
    -- Leading event_id: the triggers find an event's rows by it.
    PRIMARY KEY (event_id, consumer)
);

-- claim_events takes the oldest events first.
CREATE INDEX consumer_queue_order ON paddle.consumer_queue (consumer, occurred_at, event_id);

COMMENT ON TABLE paddle.consumer_queue IS
    'Stored events a consumer has not claimed yet, one row per event and consumer, written in the transaction that stored the event (trigger paddle.queue_event). paddle.claim_events deletes the rows it returns; deleting a consumer or an event deletes its rows.';
COMMENT ON COLUMN paddle.consumer_queue.occurred_at IS 'The event''s occurred_at (claim order).';
COMMENT ON COLUMN paddle.consumer_queue.queued_at IS 'When the row was queued (transaction time).';

CREATE FUNCTION paddle.consumer_wants(p_event_types text[], p_environment text, p_event_type text,
                                      p_event_environment text)
    RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN (p_environment IS NULL OR p_environment = p_event_environment)
   AND (p_event_types IS NULL
        OR p_event_type = ANY (p_event_types)
        OR split_part(p_event_type, '.', 1) || '.*' = ANY (p_event_types));

COMMENT ON FUNCTION paddle.consumer_wants(text[], text, text, text) IS
    'Whether a consumer with these event_types and environment (paddle.consumers) wants an event of this type and environment.';

-- The queue's writers read the consumers, or delete queue rows, with a snapshot per statement: a later snapshot
-- must see what committed while they waited for locks. Under REPEATABLE READ or SERIALIZABLE it would not.
CREATE FUNCTION paddle.require_read_committed(p_what text)
    RETURNS void
    LANGUAGE plpgsql
AS $$
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION '% in READ COMMITTED transactions only (this one is %)',
            p_what, current_setting('transaction_isolation') USING ERRCODE = 'invalid_transaction_state';
    END IF;
END
$$;

COMMENT ON FUNCTION paddle.require_read_committed(text) IS
    'Raise (invalid_transaction_state) unless the transaction is READ COMMITTED; p_what names what needs it.';

CREATE FUNCTION paddle.queue_event()
    RETURNS trigger
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- The consumers are read with a snapshot taken after this transaction's lock on payment_events, which a
    -- change to paddle.consumers waits for; under REPEATABLE READ the snapshot can be older and miss a
    -- consumer added meanwhile (even the first one, so this comes before the look at the table). Written out
    -- rather than a call to paddle.require_read_committed: this runs for every stored event.
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'events are stored in READ COMMITTED transactions only (this one is %)',
            current_setting('transaction_isolation') USING ERRCODE = 'invalid_transaction_state';
    END IF;
    IF TG_OP = 'UPDATE' THEN
        -- A live delivery replaced a sandbox event of this id (paddle.replace_sandbox_event): the queues are
        -- those of the live event, which the consumers may already have seen as a sandbox one. A queue row
        -- an open claim holds is waited for.
        DELETE FROM paddle.consumer_queue WHERE event_id = NEW.event_id;
    END IF;
    -- Most databases have no consumer; this read is all a stored event costs them.
    IF NOT EXISTS (SELECT FROM paddle.consumers) THEN
        RETURN NULL;
    END IF;
    INSERT INTO paddle.consumer_queue (event_id, consumer, occurred_at)
    SELECT NEW.event_id, c.name, NEW.occurred_at
    FROM paddle.consumers c
    WHERE paddle.consumer_wants(c.event_types, c.environment, NEW.event_type, NEW.environment)
    -- A row already there: queue_stored_events ran beside a replacement, or beside the deletion of an event
    -- that is now delivered again.
    ON CONFLICT (event_id, consumer) DO UPDATE SET occurred_at = EXCLUDED.occurred_at, queued_at = EXCLUDED.queued_at;
    RETURN NULL;
END
$$;

COMMENT ON FUNCTION paddle.queue_event() IS
    'Trigger of paddle.payment_events: queues a stored event for every consumer that wants it (paddle.consumer_wants), and queues it anew when a live delivery replaces a sandbox event. Runs with its owner''s rights; EXECUTE is not granted to PUBLIC.';

CREATE TRIGGER queue_event AFTER INSERT ON paddle.payment_events
    FOR EACH ROW EXECUTE FUNCTION paddle.queue_event();

CREATE TRIGGER queue_replaced_event AFTER UPDATE OF environment ON paddle.payment_events
    FOR EACH ROW WHEN (OLD.environment IS DISTINCT FROM NEW.environment)
    EXECUTE FUNCTION paddle.queue_event();

-- The cascades the missing foreign keys would do (TG_ARGV[0]: the table's role). Deleting or truncating events
-- is rare (retention, tests).
CREATE FUNCTION paddle.queue_cascade()
    RETURNS trigger
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- The DELETE must see the queue rows of transactions that committed while this one waited for locks (a
    -- delivery in flight, a backfill).
    PERFORM paddle.require_read_committed(format('paddle.%s rows are deleted', TG_TABLE_NAME));
    IF TG_OP = 'TRUNCATE' THEN
        TRUNCATE paddle.consumer_queue;
    ELSIF TG_ARGV[0] = 'events' THEN
        DELETE FROM paddle.consumer_queue q USING deleted_rows d WHERE q.event_id = d.event_id;
    ELSE
        DELETE FROM paddle.consumer_queue q USING deleted_rows d WHERE q.consumer = d.name;
    END IF;
    RETURN NULL;
END
$$;

COMMENT ON FUNCTION paddle.queue_cascade() IS
    'Trigger of paddle.payment_events and paddle.consumers: deleting events or consumers deletes their queue rows, truncating payment_events empties every queue. Runs with its owner''s rights; EXECUTE is not granted to PUBLIC.';

CREATE TRIGGER events_deleted AFTER DELETE ON paddle.payment_events
    REFERENCING OLD TABLE AS deleted_rows FOR EACH STATEMENT EXECUTE FUNCTION paddle.queue_cascade('events');
CREATE TRIGGER events_truncated AFTER TRUNCATE ON paddle.payment_events
    FOR EACH STATEMENT EXECUTE FUNCTION paddle.queue_cascade('events');
CREATE TRIGGER consumers_deleted AFTER DELETE ON paddle.consumers
    REFERENCING OLD TABLE AS deleted_rows FOR EACH STATEMENT EXECUTE FUNCTION paddle.queue_cascade('consumers');

CREATE FUNCTION paddle.consumer_change()
    RETURNS trigger
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_lock_timeout text := current_setting('lock_timeout');
BEGIN
    -- The cascade after this lock must read with a snapshot taken after it (see paddle.queue_cascade).
    PERFORM paddle.require_read_committed('paddle.consumers is changed');
    -- After the statement's rows: a DELETE has waited for the open claims and backfills of its consumers
    -- (they lock the row FOR KEY SHARE) without holding deliveries up. SHARE conflicts with the ROW EXCLUSIVE
    -- lock every delivery takes on payment_events before it reads the consumers: deliveries in flight finish
    -- first, and later ones read the consumers after this commits. New deliveries queue behind this request,
    -- so it gives up soon rather than wait behind a long one (VACUUM, reproject) and make them time out.
    PERFORM set_config('lock_timeout', '200ms', true);
    BEGIN
        LOCK TABLE paddle.payment_events IN SHARE MODE;
    EXCEPTION WHEN lock_not_available THEN
        RAISE EXCEPTION 'paddle.consumers: deliveries kept paddle.payment_events busy for 200 ms; try again'
            USING ERRCODE = 'lock_not_available';
    END;
    PERFORM set_config('lock_timeout', v_lock_timeout, true);
    RETURN NULL;
END
$$;

COMMENT ON FUNCTION paddle.consumer_change() IS
    'Trigger of paddle.consumers: a change waits (at most 200 ms, then fails) for the deliveries in flight and holds new ones until it commits, so that every event committed after it is queued by the new definition and none for a deleted consumer. Runs with its owner''s rights; EXECUTE is not granted to PUBLIC.';

-- Fires before consumers_deleted (triggers of one event fire in name order): the cascade then sees the queue
-- rows of every delivery that read the consumers before the change.
CREATE TRIGGER consumer_change AFTER INSERT OR UPDATE OR DELETE ON paddle.consumers
    FOR EACH STATEMENT EXECUTE FUNCTION paddle.consumer_change();

CREATE FUNCTION paddle.consumer_not_renamed()
    RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    -- Queue rows carry the name.
    IF NEW.name IS DISTINCT FROM OLD.name THEN
        RAISE EXCEPTION 'a consumer cannot be renamed (% to %): delete it and insert the new one',
            OLD.name, NEW.name USING ERRCODE = 'feature_not_supported';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER consumer_renamed BEFORE UPDATE OF name ON paddle.consumers
    FOR EACH ROW EXECUTE FUNCTION paddle.consumer_not_renamed();

CREATE FUNCTION paddle.consumers_not_truncated()
    RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    -- TRUNCATE would hold the consumers while waiting for deliveries that are about to read them.
    RAISE EXCEPTION 'paddle.consumers cannot be truncated: delete its rows' USING ERRCODE = 'feature_not_supported';
END
$$;

CREATE TRIGGER consumers_truncate BEFORE TRUNCATE ON paddle.consumers
    FOR EACH STATEMENT EXECUTE FUNCTION paddle.consumers_not_truncated();

REVOKE EXECUTE ON FUNCTION paddle.queue_event(), paddle.queue_cascade(), paddle.consumer_change() FROM PUBLIC;

CREATE FUNCTION paddle.claim_events(p_consumer text, p_limit integer DEFAULT 100)
    RETURNS TABLE (event_id text, event_type text, environment text, occurred_at timestamptz,
                   received_at timestamptz, payload jsonb)
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_taken text[];
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
    -- rows other claimers hold).
    LOOP
        -- The rows locked here stay locked until the transaction ends, so their ctids are valid for the DELETE.
        WITH claimed AS (
            DELETE FROM paddle.consumer_queue q
            WHERE q.ctid = ANY (ARRAY(SELECT w.ctid FROM paddle.consumer_queue w
                                      WHERE w.consumer = p_consumer
                                      ORDER BY w.occurred_at, w.event_id
                                      LIMIT p_limit
                                      FOR UPDATE SKIP LOCKED))
            RETURNING q.event_id)
        SELECT array_agg(c.event_id) INTO v_taken FROM claimed c;
        IF v_taken IS NULL THEN
            RETURN;
        END IF;
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

REVOKE EXECUTE ON FUNCTION paddle.claim_events(text, integer) FROM PUBLIC;

COMMENT ON FUNCTION paddle.claim_events(text, integer) IS
    'Take up to p_limit (1-10000) events from a consumer''s queue, oldest occurred_at first, and delete them from it: they are gone once the calling transaction commits and back if it rolls back. Rows another transaction has claimed and not yet committed are skipped, so claimers can run side by side; taken rows whose event is gone or no longer one the consumer wants are dropped, not returned, and more are taken until one is returned or the queue is empty. Raises if the consumer does not exist or the transaction is not READ COMMITTED. Runs with its owner''s rights; EXECUTE is not granted to PUBLIC.';

CREATE FUNCTION paddle.queue_stored_events(p_consumer text, p_since timestamptz)
    RETURNS bigint
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_consumer paddle.consumers;
    v_count bigint;
BEGIN
    -- Held until the caller's transaction ends: deleting the consumer waits for this backfill.
    SELECT * INTO v_consumer FROM paddle.consumers c WHERE c.name = p_consumer FOR KEY SHARE;
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

REVOKE EXECUTE ON FUNCTION paddle.queue_stored_events(text, timestamptz) FROM PUBLIC;

COMMENT ON FUNCTION paddle.queue_stored_events(text, timestamptz) IS
    'Queue for a consumer the stored events it wants that occurred at or after p_since (NULL: all), also ones it claimed before; events still in its queue stay once. Returns how many were added. For a new consumer that must see the past, or to process a period again. Runs with its owner''s rights (it locks the consumer''s row FOR KEY SHARE, so that deleting the consumer waits for it); EXECUTE is not granted to PUBLIC.';

CREATE VIEW paddle.consumer_backlog AS
SELECT c.name AS consumer, c.event_types, c.environment, count(q.event_id) AS queued,
       min(q.occurred_at) AS oldest_occurred_at, min(q.queued_at) AS oldest_queued_at
FROM paddle.consumers c
LEFT JOIN paddle.consumer_queue q ON q.consumer = c.name
GROUP BY c.name, c.event_types, c.environment;

COMMENT ON VIEW paddle.consumer_backlog IS
    'Per consumer: how many events wait in its queue, the oldest occurred_at among them and when the longest-waiting one was queued (alert when that grows old: the application stopped claiming).';
