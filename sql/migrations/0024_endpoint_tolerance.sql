-- paddlehook 0024_endpoint_tolerance: an endpoint's signature tolerance can be changed after it was added.
--
-- Runs once, inside the migration runner's transaction (no BEGIN/COMMIT here). PostgreSQL 14 or newer.
--
-- The tolerance was set by `endpoint add` only; an endpoint whose senders' clocks drift, or whose deliveries wait in
-- a queue before they reach nginx, had to be changed in SQL. Like 0021's functions, this one runs with the caller's
-- rights (the schema's owner; the worker's role cannot change endpoints), and 0021's trigger tells running workers
-- when the change commits.

CREATE FUNCTION paddle.endpoint_set_tolerance(p_endpoint_id text, p_tolerance_seconds integer)
    RETURNS boolean
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    UPDATE paddle.endpoints SET tolerance_seconds = p_tolerance_seconds, updated_at = now()
    WHERE id = p_endpoint_id;
    RETURN FOUND;
END
$$;
COMMENT ON FUNCTION paddle.endpoint_set_tolerance(text, integer) IS
    'Set the largest accepted distance, in seconds (1 to 604800), between a signature''s ts and the worker''s clock; false if there is no such endpoint.';
