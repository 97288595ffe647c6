-- paddlehook 0023_view_barriers: every view a reading role may be granted is a security_barrier view.
--
-- Runs once, inside the migration runner's transaction (no BEGIN/COMMIT here). PostgreSQL 15.
--
-- A role granted a view but not the events beneath it (the reporting role of docs/deploy.md) may still put a
-- function of its own in a WHERE clause; every role may create one in pg_temp. In a plain view the planner may run
-- that condition beneath the view's own, on snapshots the view then leaves out: a cheap enough function saw the
-- earlier statuses and ids of transactions that paddle.dunning and paddle.revenue_transactions do not return. A
-- security_barrier view runs a reader's condition only on the rows it returns; 0022's payment views already were.
--
-- Cost: none measured. EXPLAIN of each view, and of the reports' --since conditions, with and without: the same
-- plans, but for where revenue_daily's condition on adjustments' approval date runs (above the join, not in it).
-- Only a reader's own condition that is not leakproof now runs above the view. paddle.entity_snapshots stays as it
-- is: it shows whole payloads to whoever may read it, so it has nothing to hide from them, and a barrier there
-- would keep the views above from merging it (paddle.subscription_history lost a Memoize of its MRR pricing).
--
-- A later CREATE OR REPLACE VIEW of any of these must say WITH (security_barrier) again: without it PostgreSQL
-- drops the option.

-- Each view before those it reads, the order in which a report locks them, so that a report running meanwhile
-- waits for this transaction or finishes first, and never holds one view while waiting for another this holds.
ALTER VIEW paddle.revenue_daily SET (security_barrier = true);
ALTER VIEW paddle.refunds SET (security_barrier = true);
ALTER VIEW paddle.attribution SET (security_barrier = true);
ALTER VIEW paddle.mrr SET (security_barrier = true);
ALTER VIEW paddle.entitlements SET (security_barrier = true);
ALTER VIEW paddle.mrr_movements SET (security_barrier = true);
ALTER VIEW paddle.churn_monthly SET (security_barrier = true);
ALTER VIEW paddle.dunning_summary SET (security_barrier = true);
ALTER VIEW paddle.subscription_status_counts SET (security_barrier = true);
ALTER VIEW paddle.consumer_backlog SET (security_barrier = true);
ALTER VIEW paddle.endpoint_overview SET (security_barrier = true);
ALTER VIEW paddle.endpoint_last_events SET (security_barrier = true);
ALTER VIEW paddle.projection_failures SET (security_barrier = true);
ALTER VIEW paddle.dunning SET (security_barrier = true);
ALTER VIEW paddle.subscription_history SET (security_barrier = true);
ALTER VIEW paddle.revenue_transactions SET (security_barrier = true);
ALTER VIEW paddle.adjustment_facts SET (security_barrier = true);
