-- paddlehook 0008_environments: sandbox never shapes live state or live reports.
--
-- Runs once, inside the migration runner's transaction (no BEGIN/COMMIT here). PostgreSQL 15.
--
-- Paddle's sandbox and live are separate accounts, but entity ids share one namespace in these tables, and
-- sandbox secrets are shared with developers.
--
-- 1. State: a sandbox snapshot carrying a live id that live had not sent yet wrote the row, and every live
--    snapshot of that id was then skipped by the environment guard of the upserts, without an error (also in
--    paddle.reproject, which replays in occurred_at order). paddle.project_event now lets a live snapshot
--    take over a sandbox row of the same id; a sandbox snapshot still never changes a live row.
-- 2. Reports: revenue_transactions and adjustment_facts took the first paid/approved time over the snapshots
--    of both environments (a sandbox transaction.paid with an early occurred_at moved a live paid_on, and so
--    revenue_daily), and dunning and refunds joined customers and transactions by id alone (another
--    environment's email or totals). Every window and join now includes the environment. paddle.entitlements
--    gets the same in 0006.
--
-- The function and views are redefined whole (CREATE OR REPLACE, same signature and columns): they are 0001's
-- and 0003's, changed only where described. Earlier migrations stay as they were applied.

CREATE OR REPLACE FUNCTION paddle.project_event(p_event_id text, p_event_type text, p_occurred_at timestamptz, p_data jsonb,
                                  p_environment text)
    RETURNS void
    LANGUAGE plpgsql
AS $$
DECLARE
    v_id text;
BEGIN
    IF p_event_id IS NULL OR p_occurred_at IS NULL OR jsonb_typeof(p_data) IS DISTINCT FROM 'object' THEN
        RETURN;
    END IF;
    v_id := paddle.to_key(p_data ->> 'id');
    IF v_id IS NULL THEN
        RETURN;
    END IF;
    -- A live snapshot takes over a row that a sandbox snapshot wrote under the same id: the row becomes the
    -- oldest possible live one, so the upsert below replaces it whole and rewrites its items. Paddle's ids are
    -- unique across both environments; only a forged or mistaken sandbox event can hold a live id first.
    IF p_environment = 'live' THEN
        CASE split_part(p_event_type, '.', 1)
            WHEN 'customer' THEN
                UPDATE paddle.customers SET environment = 'live', occurred_at = '-infinity', event_id = ''
                 WHERE id = v_id AND environment = 'sandbox';
            WHEN 'subscription' THEN
                UPDATE paddle.subscriptions
                   SET environment = 'live', occurred_at = '-infinity', event_id = '', items_digest = NULL
                 WHERE id = v_id AND environment = 'sandbox';
            WHEN 'transaction' THEN
                UPDATE paddle.transactions
                   SET environment = 'live', occurred_at = '-infinity', event_id = '', items_digest = NULL
                 WHERE id = v_id AND environment = 'sandbox';
            WHEN 'adjustment' THEN
                UPDATE paddle.adjustments
                   SET environment = 'live', occurred_at = '-infinity', event_id = '', items_digest = NULL
                 WHERE id = v_id AND environment = 'sandbox';
            ELSE NULL;
        END CASE;
    END IF;
    -- Keep this list in sync with the one in paddle.ingest_event.
    CASE split_part(p_event_type, '.', 1)
        WHEN 'customer'     THEN PERFORM paddle.project_customer(v_id, p_event_id, p_occurred_at, p_data, p_environment);
        WHEN 'subscription' THEN PERFORM paddle.project_subscription(v_id, p_event_id, p_occurred_at, p_data, p_environment);
        WHEN 'transaction'  THEN PERFORM paddle.project_transaction(v_id, p_event_id, p_occurred_at, p_data, p_environment);
        WHEN 'adjustment'   THEN PERFORM paddle.project_adjustment(v_id, p_event_id, p_occurred_at, p_data, p_environment);
        ELSE NULL;  -- other event types are stored only
    END CASE;
END
$$;

CREATE OR REPLACE VIEW paddle.revenue_transactions AS
WITH paid AS (
    -- for each transaction snapshot: when its transaction was first seen paid or completed. Every snapshot
    -- row is kept (the state row picks its own by event_id), so the join below is estimated right.
    SELECT s.event_id,
           min(s.occurred_at) FILTER (WHERE s.status IN ('paid', 'completed'))
               OVER (PARTITION BY s.environment, s.entity_id) AS first_paid_at
    FROM paddle.entity_snapshots s
    WHERE s.entity = 'transaction'
)
SELECT pe.environment,
       t.id AS transaction_id,
       t.status,
       t.origin,
       t.customer_id,
       t.subscription_id,
       coalesce(t.totals_currency_code, t.currency_code) AS currency_code,
       coalesce(p.first_paid_at, t.billed_at, t.occurred_at) AS paid_at,
       (coalesce(p.first_paid_at, t.billed_at, t.occurred_at) AT TIME ZONE 'UTC')::date AS paid_on,
       coalesce(t.created_at, t.occurred_at) AS created_at,
       t.custom_data,
       coalesce(t.grand_total, 0) AS gross_minor,
       coalesce(t.discount, 0) AS discount_minor,
       coalesce(t.tax, 0) AS tax_minor,
       coalesce(t.total, 0) - coalesce(t.tax, 0) AS net_of_tax_minor,
       coalesce(t.fee, 0) AS fee_minor,
       coalesce(t.earnings, 0) AS earnings_minor
FROM paddle.transactions t
JOIN paddle.payment_events pe ON pe.event_id = t.event_id
LEFT JOIN paid p ON p.event_id = t.event_id
WHERE t.status IN ('paid', 'completed');

COMMENT ON VIEW paddle.revenue_transactions IS
    'Building block: transactions whose latest snapshot is paid or completed, amounts in minor units; paid_at = occurred_at of the first stored snapshot with status paid or completed (else billed_at, else the snapshot''s occurred_at), paid_on = its UTC date; net_of_tax = total - tax (= subtotal - discount).';

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
       CASE WHEN a.status = 'approved' THEN coalesce(ap.first_approved_at, a.occurred_at) END AS approved_at
FROM paddle.adjustments a
JOIN paddle.payment_events pe ON pe.event_id = a.event_id
LEFT JOIN approved ap ON ap.event_id = a.event_id;

COMMENT ON VIEW paddle.adjustment_facts IS
    'Building block: adjustments (latest snapshot), amounts in minor units; approved_at = occurred_at of the first stored snapshot with status approved, NULL unless the adjustment is approved now.';

CREATE OR REPLACE VIEW paddle.dunning AS
WITH tx AS (
    SELECT s.environment, s.entity_id AS transaction_id,
           paddle.to_key(s.data ->> 'subscription_id') AS subscription_id,
           paddle.to_key(s.data ->> 'customer_id') AS customer_id,
           s.event_id, s.event_type, s.occurred_at, s.status,
           coalesce(s.data -> 'details' -> 'totals' ->> 'currency_code', s.data ->> 'currency_code') AS currency_code,
           paddle.to_amount(s.data -> 'details' -> 'totals' ->> 'grand_total') AS grand_total
    FROM paddle.entity_snapshots s
    WHERE s.entity = 'transaction'
),
tx_outcome AS (
    -- per transaction: when it was first seen paid/completed, first seen canceled; its subscription if any
    SELECT environment, transaction_id, max(subscription_id) AS subscription_id, max(customer_id) AS customer_id,
           min(occurred_at) FILTER (WHERE status IN ('paid', 'completed')) AS paid_at,
           min(occurred_at) FILTER (WHERE status = 'canceled') AS canceled_at
    FROM tx
    GROUP BY environment, transaction_id
),
sub AS (
    SELECT s.environment, s.entity_id AS subscription_id, paddle.to_key(s.data ->> 'customer_id') AS customer_id,
           s.data ->> 'currency_code' AS currency_code, s.event_id, s.event_type, s.occurred_at, s.status
    FROM paddle.entity_snapshots s
    WHERE s.entity = 'subscription'
),
signals AS (
    -- kind 0 = failure, 1 = recovery, 2 = loss; a case is a subscription, or a transaction without one
    SELECT environment, CASE WHEN subscription_id IS NULL THEN 'transaction' ELSE 'subscription' END AS case_type,
           coalesce(subscription_id, transaction_id) AS case_id, 0 AS kind, occurred_at AS at, event_id, event_type,
           transaction_id, subscription_id, customer_id, currency_code, grand_total
    FROM tx
    WHERE event_type = 'transaction.payment_failed' OR status = 'past_due'
    UNION ALL
    SELECT environment, 'subscription', subscription_id, 0, occurred_at, event_id, event_type,
           NULL, subscription_id, customer_id, currency_code, NULL
    FROM sub
    WHERE status = 'past_due'
    UNION ALL
    SELECT environment, 'transaction', transaction_id, 1, paid_at, NULL, NULL,
           transaction_id, subscription_id, customer_id, NULL, NULL
    FROM tx_outcome
    WHERE paid_at IS NOT NULL
    UNION ALL
    SELECT environment, 'subscription', subscription_id, 1, paid_at, NULL, NULL,
           transaction_id, subscription_id, customer_id, NULL, NULL
    FROM tx_outcome
    WHERE paid_at IS NOT NULL AND subscription_id IS NOT NULL
    UNION ALL
    SELECT environment, 'transaction', transaction_id, 2, canceled_at, NULL, NULL,
           transaction_id, subscription_id, customer_id, NULL, NULL
    FROM tx_outcome
    WHERE canceled_at IS NOT NULL
    UNION ALL
    SELECT environment, 'subscription', subscription_id, 2, min(occurred_at), NULL, NULL,
           NULL, subscription_id, max(customer_id), NULL, NULL
    FROM sub
    WHERE status = 'canceled'
    GROUP BY environment, subscription_id
),
numbered AS (
    -- episode k = the failures after the k-th recovery/loss of the case, closed by the (k+1)-th (if any)
    SELECT s.*,
           count(*) FILTER (WHERE s.kind > 0) OVER (
               PARTITION BY s.environment, s.case_type, s.case_id ORDER BY s.at, s.kind, s.event_id
               ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS episode
    FROM signals s
),
episodes AS (
    SELECT environment, case_type, case_id, episode,
           min(at) FILTER (WHERE kind = 0) AS failed_at,
           count(*) FILTER (WHERE kind = 0 AND event_type = 'transaction.payment_failed') AS failed_attempts,
           min(kind) FILTER (WHERE kind > 0) AS close_kind,
           min(at) FILTER (WHERE kind > 0) AS closed_at,
           (array_agg(transaction_id ORDER BY at, event_id)
                FILTER (WHERE kind = 0 AND transaction_id IS NOT NULL))[1] AS transaction_id,
           (array_agg(grand_total ORDER BY at, event_id)
                FILTER (WHERE kind = 0 AND transaction_id IS NOT NULL))[1] AS amount_minor,
           (array_agg(currency_code ORDER BY transaction_id IS NULL, at, event_id)
                FILTER (WHERE kind = 0 AND currency_code IS NOT NULL))[1] AS currency_code,
           (array_agg(customer_id ORDER BY kind, at, event_id) FILTER (WHERE customer_id IS NOT NULL))[1]
               AS customer_id,
           max(subscription_id) AS subscription_id
    FROM numbered
    GROUP BY environment, case_type, case_id, episode
    HAVING count(*) FILTER (WHERE kind = 0) > 0
)
SELECT (e.failed_at AT TIME ZONE 'UTC')::date AS failed_on,
       e.environment,
       e.case_type,
       e.case_id,
       e.subscription_id,
       e.transaction_id,
       e.customer_id,
       c.email AS customer_email,
       e.currency_code,
       paddle.to_major(e.amount_minor, e.currency_code) AS amount,
       e.failed_at,
       e.failed_attempts,
       CASE e.close_kind WHEN 1 THEN 'recovered' WHEN 2 THEN 'lost' ELSE 'open' END AS state,
       CASE WHEN e.close_kind = 1 THEN e.closed_at END AS recovered_at,
       CASE WHEN e.close_kind = 2 THEN e.closed_at END AS lost_at,
       CASE WHEN e.close_kind = 1 THEN e.closed_at - e.failed_at END AS time_to_recover
FROM episodes e
LEFT JOIN paddle.customers c ON c.id = e.customer_id AND c.environment = e.environment;

COMMENT ON VIEW paddle.dunning IS
    'Failed-payment cases, one row per episode: a case is a subscription (failures of its transactions, past_due snapshots) or a transaction without subscription. It opens at the first failure (transaction.payment_failed, a past_due transaction or subscription snapshot) and closes at the first later recovery (a transaction of the case first seen paid/completed) = recovered, or loss (subscription first seen canceled, transaction canceled) = lost; else open. amount = grand_total of the first failed transaction.';

CREATE OR REPLACE VIEW paddle.refunds AS
SELECT (a.created_at AT TIME ZONE 'UTC')::date AS created_on,
       a.environment,
       a.adjustment_id,
       a.action,
       a.type,
       a.status,
       a.reason,
       a.currency_code,
       paddle.to_major(a.total_minor, a.currency_code) AS amount,
       paddle.to_major(a.subtotal_minor, a.currency_code) AS subtotal,
       paddle.to_major(a.tax_minor, a.currency_code) AS tax,
       paddle.to_major(a.fee_minor, a.currency_code) AS fee,
       paddle.to_major(a.earnings_minor, a.currency_code) AS earnings,
       a.transaction_id,
       paddle.to_major(t.grand_total, coalesce(t.totals_currency_code, t.currency_code)) AS transaction_total,
       coalesce(a.subscription_id, t.subscription_id) AS subscription_id,
       coalesce(a.customer_id, t.customer_id) AS customer_id,
       c.email AS customer_email,
       a.created_at,
       a.approved_at
FROM paddle.adjustment_facts a
LEFT JOIN paddle.transactions t ON t.id = a.transaction_id AND t.environment = a.environment
LEFT JOIN paddle.customers c ON c.id = coalesce(a.customer_id, t.customer_id) AND c.environment = a.environment;

COMMENT ON VIEW paddle.refunds IS
    'Every adjustment (refund, credit, chargeback, chargeback_reverse, ...) with its action, type and status, amounts in major units (amount = totals.total), linked to its transaction (transaction_total = its grand_total), subscription and customer (with email when a customer event was stored). created_on = UTC date of created_at.';
