-- paddlehook 0015_reversals_and_trials: a reversed chargeback nets to zero; an unpaid trial is not churn.
--
-- Runs once, inside the migration runner's transaction (no BEGIN/COMMIT here). PostgreSQL 15.
--
-- 1. When Paddle wins a dispute it creates a chargeback_reverse adjustment and sets the chargeback itself to
--    status reversed. revenue_daily subtracted the approved reversal on its day, but counted chargebacks only
--    while they were approved, and adjustment_facts.approved_at was NULL unless the adjustment was approved
--    now: once the chargeback's reversed snapshot arrived, it left its own day, and the dispute Paddle won
--    showed as a net gain of its amount. A chargeback now keeps the day it was first seen approved (its
--    created_at if no approved snapshot was stored) when it is later reversed, and still counts there; the
--    reversal counts on its own day, so the two net to zero. adjustment_facts (and so paddle.refunds) keeps
--    approved_at for a reversed adjustment. Same columns; otherwise the views of 0008 and 0003.
-- 2. churn_monthly says a trial cancelled before it was ever paid is not churn, but excluded only the direct
--    trialing -> canceled step. A trial whose first payment failed (trialing -> past_due -> canceled) counted as
--    a failed-payment churn, and one paused at the end of its trial (trialing -> paused -> canceled) as a
--    voluntary one. A subscription first seen trialing that had no active snapshot before its cancellation is
--    now not churn, whatever the steps between. One first seen in another status (its history starts after
--    paddlehook was installed) counts as before. mrr_movements is unchanged: a past_due subscription keeps its
--    MRR, an unpaid trial's too, and its cancellation shows that MRR leaving. Same columns; otherwise the view
--    of 0007.

CREATE OR REPLACE VIEW paddle.adjustment_facts AS
WITH approved AS (
    -- for each adjustment snapshot: when its adjustment was first seen approved (see revenue_transactions)
    SELECT s.event_id,
           min(s.occurred_at) FILTER (WHERE s.status = 'approved') OVER (PARTITION BY s.environment, s.entity_id)
               AS first_approved_at
    FROM paddle.entity_snapshots s
    WHERE s.entity = 'adjustment'
)
SELECT pe.environment,
       a.id AS adjustment_id,
       a.action,
       a.type,
       a.status,
       a.reason,
       a.transaction_id,
       a.subscription_id,
       a.customer_id,
       coalesce(a.totals_currency_code, a.currency_code) AS currency_code,
       coalesce(a.total, 0) AS total_minor,
       coalesce(a.subtotal, 0) AS subtotal_minor,
       coalesce(a.tax, 0) AS tax_minor,
       coalesce(a.fee, 0) AS fee_minor,
       coalesce(a.earnings, 0) AS earnings_minor,
       -- Paddle's docs example sends updated_at 0001-01-01; created_at is used, never updated_at.
       coalesce(a.created_at, a.occurred_at) AS created_at,
       CASE a.status
           WHEN 'approved' THEN coalesce(ap.first_approved_at, a.occurred_at)
           -- only an approved adjustment is reversed; its approval may not have been stored
           WHEN 'reversed' THEN coalesce(ap.first_approved_at, a.created_at, a.occurred_at)
       END AS approved_at
FROM paddle.adjustments a
JOIN paddle.payment_events pe ON pe.event_id = a.event_id
LEFT JOIN approved ap ON ap.event_id = a.event_id;

COMMENT ON VIEW paddle.adjustment_facts IS
    'Building block: adjustments (latest snapshot), amounts in minor units; approved_at = occurred_at of the first stored snapshot with status approved (for an adjustment reversed since: that, else its created_at), NULL unless the adjustment is approved or reversed now.';

CREATE OR REPLACE VIEW paddle.revenue_daily AS
WITH flows AS (
    SELECT r.environment, r.paid_on AS day, r.currency_code,
           1 AS transactions, r.gross_minor AS gross, r.discount_minor AS discount, r.tax_minor AS tax,
           r.net_of_tax_minor AS net_of_tax, r.fee_minor AS fee, r.earnings_minor AS earnings,
           0 AS refund_count, 0::numeric AS refunds, 0 AS chargeback_count, 0::numeric AS chargebacks
    FROM paddle.revenue_transactions r
    UNION ALL
    SELECT a.environment, (a.approved_at AT TIME ZONE 'UTC')::date, a.currency_code,
           0, 0, 0, 0, 0, 0, 0,
           CASE WHEN a.action = 'refund' THEN 1 ELSE 0 END,
           CASE WHEN a.action = 'refund' THEN a.total_minor ELSE 0 END,
           CASE WHEN a.action = 'chargeback' THEN 1 ELSE 0 END,
           CASE a.action WHEN 'chargeback' THEN a.total_minor WHEN 'chargeback_reverse' THEN -a.total_minor ELSE 0 END
    FROM paddle.adjustment_facts a
    WHERE (a.status = 'approved' AND a.action IN ('refund', 'chargeback', 'chargeback_reverse'))
       -- a chargeback Paddle reversed stays on its day; its chargeback_reverse takes it back on its own
       OR (a.status = 'reversed' AND a.action = 'chargeback')
)
SELECT f.day,
       f.environment,
       f.currency_code,
       sum(f.transactions)::bigint                      AS transactions,
       paddle.to_major(sum(f.gross), f.currency_code)      AS gross,
       paddle.to_major(sum(f.discount), f.currency_code)   AS discount,
       paddle.to_major(sum(f.tax), f.currency_code)        AS tax,
       paddle.to_major(sum(f.net_of_tax), f.currency_code) AS net_of_tax,
       paddle.to_major(sum(f.fee), f.currency_code)        AS fee,
       paddle.to_major(sum(f.earnings), f.currency_code)   AS earnings,
       sum(f.refund_count)::bigint                      AS refund_count,
       paddle.to_major(sum(f.refunds), f.currency_code)    AS refunds,
       sum(f.chargeback_count)::bigint                  AS chargeback_count,
       paddle.to_major(sum(f.chargebacks), f.currency_code) AS chargebacks
FROM flows f
GROUP BY f.day, f.environment, f.currency_code;

COMMENT ON VIEW paddle.revenue_daily IS
    'Revenue per UTC day, environment and currency. Transactions count on the day they were first seen paid/completed: gross = grand_total, discount, tax, net_of_tax = total - tax, fee, earnings. Approved adjustments count on the day they were first seen approved: refunds = total of refunds, chargebacks = total of chargebacks (also those reversed since) minus chargeback reversals.';

CREATE OR REPLACE VIEW paddle.churn_monthly AS
WITH h AS (
    SELECT h.*,
           -- first seen trialing, and not active yet: never paid (a snapshot without a status is not trialing)
           coalesce(first_value(h.status) OVER w = 'trialing' AND NOT bool_or(h.status = 'active') OVER w, false)
               AS unpaid_trial
    FROM paddle.subscription_history h
    WINDOW w AS (PARTITION BY h.environment, h.subscription_id ORDER BY h.seq
                 ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
),
c AS (
    SELECT h.*, CASE WHEN h.prev_status = 'past_due' THEN 'failed_payment' ELSE 'voluntary' END AS kind,
           -- subscription_history has a row per currency the snapshot has a price in, and one for the
           -- subscription's own currency: the cancellation counts once, in the currency its MRR was in (of
           -- its list price when it was paused). Should that be several, the largest amount in major units
           -- decides: a tie-break, not an exchange rate.
           row_number() OVER (PARTITION BY h.environment, h.event_id
                              ORDER BY paddle.to_major(h.prev_mrr_minor, h.currency_code) DESC,
                                       paddle.to_major(h.list_mrr_minor, h.currency_code) DESC,
                                       h.currency_code) = 1 AS counted
    FROM h
    -- a trial cancelled before it was ever paid: not churn
    WHERE h.status = 'canceled' AND h.prev_status IN ('active', 'past_due', 'paused') AND NOT h.unpaid_trial
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
    'Cancellations per UTC month, environment and currency: a subscription churns at its first snapshot with status canceled that follows an active, past_due or paused one, unless it was first seen trialing and had no active snapshot yet (a trial never paid is not churn); it counts once, in the currency its MRR was in (several: the largest in major units); mrr_lost = the MRR it counted in the snapshot before, per currency (0 if it was paused); failed_payment when that snapshot was past_due, else voluntary.';
