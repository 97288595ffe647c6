-- paddlehook 0021_endpoint_functions: endpoint administration as functions of the schema, and every change to the
-- endpoint tables announced to the workers.
--
-- Runs once, inside the migration runner's transaction (no BEGIN/COMMIT here). PostgreSQL 14 or newer.
--
-- 1. The rules of endpoint administration (an endpoint starts with its first secret; at most a given number of
--    active secrets each; retiring keeps the newest; storing and re-sealing hold the secrets table against each
--    other) were statements inside the paddlehook binary. They are functions here, beside the tables they guard;
--    `paddlehook endpoint …`, `rekey` and `status` call them. They run with the caller's rights: the role that owns
--    the schema, as before (the worker's role can read endpoints, not change them).
-- 2. Workers reload their endpoints when told on the channel paddlehook_endpoints. Only the commands told them, so
--    a change made in SQL (deleting secrets after a lost master key, disabling an endpoint by hand) reached running
--    workers only at their next reconnect or reload. Triggers on both tables now tell them whenever their rows
--    change, when the change commits.

CREATE FUNCTION paddle.endpoints_changed()
    RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- The channel the workers LISTEN on (fcgi/db.h). The payload is not read: any change reloads every endpoint.
    PERFORM pg_notify('paddlehook_endpoints', '');
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION paddle.endpoints_changed() IS
    'Trigger of paddle.endpoints and paddle.endpoint_secrets: NOTIFY paddlehook_endpoints, so running workers reload their endpoints when the change commits.';

-- Per row, so that a statement that changes nothing (a retire with nothing to retire) reloads no worker; the
-- notifications of one transaction are sent once however many rows it changes. TRUNCATE has no rows.
CREATE TRIGGER endpoints_changed AFTER INSERT OR UPDATE OR DELETE ON paddle.endpoints
    FOR EACH ROW EXECUTE FUNCTION paddle.endpoints_changed();
CREATE TRIGGER endpoints_truncated AFTER TRUNCATE ON paddle.endpoints
    FOR EACH STATEMENT EXECUTE FUNCTION paddle.endpoints_changed();
CREATE TRIGGER endpoint_secrets_changed AFTER INSERT OR UPDATE OR DELETE ON paddle.endpoint_secrets
    FOR EACH ROW EXECUTE FUNCTION paddle.endpoints_changed();
CREATE TRIGGER endpoint_secrets_truncated AFTER TRUNCATE ON paddle.endpoint_secrets
    FOR EACH STATEMENT EXECUTE FUNCTION paddle.endpoints_changed();

CREATE FUNCTION paddle.lock_endpoint_secrets(p_with_retired boolean)
    RETURNS TABLE (id bigint, sealed_hex text)
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- The rows are read after the lock is granted, with a snapshot of their own: only READ COMMITTED takes one
    -- per statement. Under REPEATABLE READ the calling statement's snapshot, older than the wait, would hide
    -- what the session that held the lock committed.
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'paddle.lock_endpoint_secrets must run in a READ COMMITTED transaction (this one is %)',
            current_setting('transaction_isolation') USING ERRCODE = 'invalid_transaction_state';
    END IF;
    -- Self-conflicting and held to the end of the caller's transaction: storing a secret and re-sealing them all
    -- (rekey) never miss each other's rows. Deliveries only read the table and do not wait for it.
    LOCK TABLE paddle.endpoint_secrets IN SHARE ROW EXCLUSIVE MODE;
    RETURN QUERY
        SELECT s.id, encode(s.sealed, 'hex')
        FROM paddle.endpoint_secrets s
        WHERE p_with_retired OR s.retired_at IS NULL
        ORDER BY s.id;
END
$$;
COMMENT ON FUNCTION paddle.lock_endpoint_secrets(boolean) IS
    'Lock paddle.endpoint_secrets against other changes until the caller''s transaction ends (reads go on), and return its sealed secrets in hex: the active ones, or all with p_with_retired. Called first by every transaction that stores or re-seals a secret; raises outside READ COMMITTED.';

CREATE FUNCTION paddle.endpoint_add(p_id text, p_name text, p_environment text, p_tolerance_seconds integer,
                                    p_sealed bytea, p_hint text)
    RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    INSERT INTO paddle.endpoints (id, name, environment, tolerance_seconds)
    VALUES (p_id, p_name, p_environment, p_tolerance_seconds);
    INSERT INTO paddle.endpoint_secrets (endpoint_id, sealed, hint) VALUES (p_id, p_sealed, p_hint);
END
$$;
COMMENT ON FUNCTION paddle.endpoint_add(text, text, text, integer, bytea, text) IS
    'Create an endpoint with its first secret (sealed with the master key; p_hint its last characters). Fails if the id or name is taken.';

CREATE FUNCTION paddle.endpoint_add_secret(p_endpoint_id text, p_sealed bytea, p_hint text, p_max_active integer)
    RETURNS boolean
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    INSERT INTO paddle.endpoint_secrets (endpoint_id, sealed, hint)
    SELECT e.id, p_sealed, p_hint
    FROM paddle.endpoints e
    WHERE e.id = p_endpoint_id
      AND (SELECT count(*) FROM paddle.endpoint_secrets s
           WHERE s.endpoint_id = e.id AND s.retired_at IS NULL) < p_max_active;
    RETURN FOUND;
END
$$;
COMMENT ON FUNCTION paddle.endpoint_add_secret(text, bytea, text, integer) IS
    'Add an active secret to an endpoint (a rotation: old and new verify until the older are retired). False if there is no such endpoint or it already has p_max_active active secrets. Call paddle.lock_endpoint_secrets first in the same transaction, so that two additions cannot both pass the limit.';

CREATE FUNCTION paddle.endpoint_retire_older_secrets(p_endpoint_id text)
    RETURNS integer
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_retired integer;
BEGIN
    UPDATE paddle.endpoint_secrets s SET retired_at = now()
    WHERE s.endpoint_id = p_endpoint_id AND s.retired_at IS NULL
      AND s.id < (SELECT max(n.id) FROM paddle.endpoint_secrets n
                  WHERE n.endpoint_id = p_endpoint_id AND n.retired_at IS NULL);
    GET DIAGNOSTICS v_retired = ROW_COUNT;
    RETURN v_retired;
END
$$;
COMMENT ON FUNCTION paddle.endpoint_retire_older_secrets(text) IS
    'Retire every active secret of an endpoint but the newest; returns how many were retired (0: none older, or no such endpoint).';

CREATE FUNCTION paddle.endpoint_set_enabled(p_endpoint_id text, p_enabled boolean)
    RETURNS boolean
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    UPDATE paddle.endpoints SET enabled = p_enabled, updated_at = now() WHERE id = p_endpoint_id;
    RETURN FOUND;
END
$$;
COMMENT ON FUNCTION paddle.endpoint_set_enabled(text, boolean) IS
    'Enable or disable an endpoint (a disabled one answers 410 and stores nothing); false if there is no such endpoint.';

CREATE FUNCTION paddle.endpoint_reseal_secret(p_secret_id bigint, p_sealed bytea)
    RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    UPDATE paddle.endpoint_secrets SET sealed = p_sealed WHERE id = p_secret_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'paddle.endpoint_reseal_secret: no secret %', p_secret_id USING ERRCODE = 'no_data_found';
    END IF;
END
$$;
COMMENT ON FUNCTION paddle.endpoint_reseal_secret(bigint, bytea) IS
    'Replace one secret''s sealed bytes (the same secret sealed with a new master key: paddlehook rekey, after paddle.lock_endpoint_secrets(true)).';

CREATE FUNCTION paddle.endpoint_secret_stored(p_sealed_hex text)
    RETURNS boolean
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- Volatile: the query reads with a snapshot taken when it runs, after any wait for its lock on the table
    -- (behind a session holding it exclusively); a stable function reads with the calling statement's, older
    -- than that. The caller asks only once the transaction in question is no longer in progress.
    RETURN EXISTS (SELECT FROM paddle.endpoint_secrets WHERE sealed = decode(p_sealed_hex, 'hex'));
END
$$;
COMMENT ON FUNCTION paddle.endpoint_secret_stored(text) IS
    'Whether a secret sealed exactly so (hex) is stored. After a lost answer to the commit that stored or re-sealed it, this tells whether the commit took effect: every sealing has a nonce of its own, so no other row holds the same bytes.';

CREATE VIEW paddle.endpoint_overview AS
SELECT e.id,
       e.name,
       e.environment,
       e.tolerance_seconds,
       e.enabled,
       count(s.id)::integer AS active_secrets,
       string_agg('...' || s.hint, ' ' ORDER BY s.id) AS active_secret_hints,
       e.created_at
FROM paddle.endpoints e
LEFT JOIN paddle.endpoint_secrets s ON s.endpoint_id = e.id AND s.retired_at IS NULL
GROUP BY e.id;
COMMENT ON VIEW paddle.endpoint_overview IS
    'One row per endpoint: its settings, how many secrets verify, and their hints (last characters, oldest first; NULL if none). Secrets themselves are not shown.';

CREATE VIEW paddle.endpoint_last_events AS
SELECT endpoint_id, max(received_at) AS last_received_at
FROM paddle.payment_events
GROUP BY endpoint_id;
COMMENT ON VIEW paddle.endpoint_last_events IS
    'When each endpoint last stored an event (received_at). Reads every stored event: for an occasional look, not for polling.';

CREATE VIEW paddle.projection_failures AS
SELECT event_id, event_type, environment, occurred_at, received_at, projection_error
FROM paddle.payment_events
WHERE projection_error IS NOT NULL;
COMMENT ON VIEW paddle.projection_failures IS
    'Stored events whose state rows could not be written (projection_error says why); the event itself is stored. After a fix, paddle.reproject_event(event_id) or `paddlehook reproject` writes them.';
