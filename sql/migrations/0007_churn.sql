-- paddlehook 0007_churn: paddle.churn_monthly counted too much.
--
-- Runs once, inside the migration runner's transaction (no BEGIN/COMMIT here). PostgreSQL 15.
--
-- 1. A trial cancelled before it was ever paid (trialing -> canceled) counted as a voluntary churn with
--    mrr_lost 0, while mrr_movements rightly shows no churn for it. Churn now needs a previous status of
--    active, past_due or paused.
-- 2. A subscription whose price is in another currency than its own (no price override for that currency)
--    counted twice, once in each currency's row (one of them with mrr_lost 0.00): subscription_history has
--    a row for each. Each cancellation now counts once, in the currency its MRR was in; mrr_lost is still
--    summed per currency.
--
-- The view is redefined whole (CREATE OR REPLACE VIEW, same columns): it is 0003's, changed in its first
-- CTE, its counts and a HAVING. 0003 stays as it was applied.

CREATE OR REPLACE VIEW paddle.churn_monthly AS
WITH c AS (
    SELECT h.*, CASE WHEN h.prev_status = 'past_due' THEN 'failed_payment' ELSE 'voluntary' END AS kind,
           -- subscription_history has a row per currency the snapshot has a price in, and one for the
           -- subscription's own currency: the cancellation counts once, in the currency its MRR was in (of
           -- its list price when it was paused). Should that be several, the largest amount in major units
           -- decides: a tie-break, not an exchange rate.
           row_number() OVER (PARTITION BY h.environment, h.event_id
                              ORDER BY paddle.to_major(h.prev_mrr_minor, h.currency_code) DESC,
                                       paddle.to_major(h.list_mrr_minor, h.currency_code) DESC,
                                       h.currency_code) = 1 AS counted
    FROM paddle.subscription_history h
    -- a cancelled trial never paid: not churn
    WHERE h.status = 'canceled' AND h.prev_status IN ('active', 'past_due', 'paused')
)
SELECT c.month,
       c.environment,
       c.currency_code,
       count(DISTINCT c.customer_id) FILTER (WHERE c.counted) AS churned_customers,
       count(*) FILTER (WHERE c.counted) AS churned_subscriptions,
       paddle.to_major(round(sum(c.prev_mrr_minor)), c.currency_code) AS mrr_lost,
       count(DISTINCT c.customer_id) FILTER (WHERE c.counted AND c.kind = 'voluntary') AS voluntary_customers,
       count(*) FILTER (WHERE c.counted AND c.kind = 'voluntary') AS voluntary_subscriptions,
       paddle.to_major(round(coalesce(sum(c.prev_mrr_minor) FILTER (WHERE c.kind = 'voluntary'), 0)), c.currency_code)
           AS voluntary_mrr_lost,
       count(DISTINCT c.customer_id) FILTER (WHERE c.counted AND c.kind = 'failed_payment') AS failed_payment_customers,
       count(*) FILTER (WHERE c.counted AND c.kind = 'failed_payment') AS failed_payment_subscriptions,
       paddle.to_major(round(coalesce(sum(c.prev_mrr_minor) FILTER (WHERE c.kind = 'failed_payment'), 0)),
                       c.currency_code) AS failed_payment_mrr_lost
FROM c
GROUP BY c.month, c.environment, c.currency_code
HAVING bool_or(c.counted) OR sum(c.prev_mrr_minor) > 0;

COMMENT ON VIEW paddle.churn_monthly IS
    'Cancellations per UTC month, environment and currency: a subscription churns at its first snapshot with status canceled that follows an active, past_due or paused one (a cancelled trial is not churn); it counts once, in the currency its MRR was in (several: the largest in major units); mrr_lost = the MRR it counted in the snapshot before, per currency (0 if it was paused); failed_payment when that snapshot was past_due, else voluntary.';
