-- paddlehook 0014_search_path: the rebuild functions resolve names in pg_catalog only.
--
-- Runs once, inside the migration runner's transaction (no BEGIN/COMMIT here). PostgreSQL 15.
--
-- A function that runs with its caller's rights resolves the names in its body through the caller's
-- search_path, and a function in an earlier schema beats a built-in whose arguments need a cast: the projection
-- calls hashtextextended(text, 0), and public.hashtextextended(text, integer) would win over
-- pg_catalog.hashtextextended(text, bigint). Any role that may create objects in public (every role before
-- PostgreSQL 15, and in databases upgraded from 14) could so run its own code with the rights of whoever calls
-- paddle.reproject() or paddle.reproject_event() from psql: the schema owner, as docs/reports.md and
-- `paddlehook status` advise. Both now run with search_path = pg_catalog, pg_temp, which their whole call tree
-- inherits. paddlehook's own sessions pin the same search_path themselves (the workers, migrate and every
-- command but report, whose views may be the user's own), so paddle.ingest_event, called once per delivery,
-- keeps no per-call setting.

ALTER FUNCTION paddle.reproject(timestamptz) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION paddle.reproject_event(text) SET search_path = pg_catalog, pg_temp;
