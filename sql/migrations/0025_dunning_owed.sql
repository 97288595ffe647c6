-- paddlehook 0025_dunning_owed: a dunning case opens only where something is owed, and closes when it is paid.
--
-- Runs once, inside the migration runner's transaction (no BEGIN/COMMIT here). PostgreSQL 14 or newer.
--
-- paddle.dunning (0008) opened a subscription's case at any failed payment of any of its transactions, and closed it
-- at any later paid one. Two kinds of failed payment owe nothing, and a subscription stays active through them: the
-- zero-value transaction of a card update (origin subscription_payment_method_change), and a change charged at once
-- that Paddle does not apply when its payment fails (on_payment_failure = prevent_change, the default). Each opened
-- a case that an application chasing open cases would mail about, until the next renewal "recovered" it. And a
-- renewal's case was recovered by any other paid transaction of the subscription (a one-time charge) while the
-- renewal itself was still past_due, but never by the subscription turning active again when no transaction event
-- was received (a destination subscribed to subscription.* only).
--
-- Now a subscription's case opens at a past_due snapshot of it or of one of its transactions, or at a failed
-- payment of a renewal (origin subscription_recurring); it recovers when one of its failed transactions or one of
-- its renewals is paid, or when the subscription is seen active or trialing again (a snapshot at the very instant
-- of a failure closes only what was open before it). Cases of transactions without a subscription (checkouts)
-- are as before. The columns are the same; paddle.dunning_summary, which reads it, follows. Past cases change at
-- once: nothing to rebuild.
--
-- It stays a security_barrier view (0023).

CREATE OR REPLACE VIEW paddle.dunning WITH (security_barrier) AS
WITH tx AS (
    SELECT s.environment, s.entity_id AS transaction_id,
           paddle.to_key(s.data ->> 'subscription_id') AS subscription_id,
           paddle.to_key(s.data ->> 'customer_id') AS customer_id,
           s.event_id, s.event_type, s.occurred_at, s.status,
           coalesce(s.data -> 'details' -> 'totals' ->> 'currency_code', s.data ->> 'currency_code') AS currency_code,
           paddle.to_amount(s.data -> 'details' -> 'totals' ->> 'grand_total') AS grand_total,
           s.data ->> 'origin' AS origin
    FROM paddle.entity_snapshots s
    WHERE s.entity = 'transaction'
),
tx_outcome AS (
    -- per transaction: when it was first seen paid/completed, first seen canceled; its subscription if any
    SELECT environment, transaction_id, max(subscription_id) AS subscription_id, max(customer_id) AS customer_id,
           max(origin) AS origin,
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
failures AS (
    -- kind 0. A subscription owes where Paddle says so: a past_due snapshot of it or of one of its transactions,
    -- or a failed payment of a renewal. Other failed payments of its transactions owe nothing: a card update's
    -- zero-value transaction, or a change Paddle did not apply because its payment failed (prevent_change).
    SELECT environment, CASE WHEN subscription_id IS NULL THEN 'transaction' ELSE 'subscription' END AS case_type,
           coalesce(subscription_id, transaction_id) AS case_id, 0 AS kind, occurred_at AS at, 1 AS tie, event_id,
           event_type, transaction_id, subscription_id, customer_id, currency_code, grand_total
    FROM tx
    WHERE status = 'past_due'
       OR (event_type = 'transaction.payment_failed'
           AND (subscription_id IS NULL OR origin = 'subscription_recurring'))
    UNION ALL
    SELECT environment, 'subscription', subscription_id, 0, occurred_at, 1, event_id, event_type,
           NULL, subscription_id, customer_id, currency_code, NULL
    FROM sub
    WHERE status = 'past_due'
),
signals AS (
    -- kind 0 = failure, 1 = recovery, 2 = loss; a case is a subscription, or a transaction without one. At one
    -- instant, tie 0 comes before failures, the others after them.
    SELECT * FROM failures
    UNION ALL
    SELECT environment, 'transaction', transaction_id, 1, paid_at, 1, NULL, NULL,
           transaction_id, subscription_id, customer_id, NULL, NULL
    FROM tx_outcome
    WHERE paid_at IS NOT NULL
    UNION ALL
    -- A subscription recovers when a transaction that failed in it is paid, or a renewal (whose failure may not
    -- have been received), not when any other of its transactions is (a one-time charge, a card update) ...
    SELECT o.environment, 'subscription', o.subscription_id, 1, o.paid_at, 1, NULL, NULL,
           o.transaction_id, o.subscription_id, o.customer_id, NULL, NULL
    FROM tx_outcome o
    WHERE o.paid_at IS NOT NULL AND o.subscription_id IS NOT NULL
      AND EXISTS (SELECT FROM failures f
                  WHERE f.environment = o.environment AND f.case_type = 'subscription'
                    AND f.case_id = o.subscription_id
                    AND (f.transaction_id = o.transaction_id OR o.origin = 'subscription_recurring'))
    UNION ALL
    -- ... or when Paddle reports it active (or trialing) again, which it does once the debt is settled, also
    -- to a destination that receives no transaction events. Such a snapshot at the instant of a failure is no
    -- answer to it: it closes what was open before.
    SELECT s.environment, 'subscription', s.subscription_id, 1, s.occurred_at, 0, s.event_id, s.event_type,
           NULL, s.subscription_id, s.customer_id, NULL, NULL
    FROM sub s
    WHERE s.status IN ('active', 'trialing')
      AND EXISTS (SELECT FROM failures f
                  WHERE f.environment = s.environment AND f.case_type = 'subscription'
                    AND f.case_id = s.subscription_id)
    UNION ALL
    SELECT environment, 'transaction', transaction_id, 2, canceled_at, 1, NULL, NULL,
           transaction_id, subscription_id, customer_id, NULL, NULL
    FROM tx_outcome
    WHERE canceled_at IS NOT NULL
    UNION ALL
    SELECT environment, 'subscription', subscription_id, 2, min(occurred_at), 1, NULL, NULL,
           NULL, subscription_id, max(customer_id), NULL, NULL
    FROM sub
    WHERE status = 'canceled'
    GROUP BY environment, subscription_id
),
numbered AS (
    -- episode k = the failures after the k-th recovery/loss of the case, closed by the (k+1)-th (if any)
    SELECT s.*,
           count(*) FILTER (WHERE s.kind > 0) OVER (
               PARTITION BY s.environment, s.case_type, s.case_id ORDER BY s.at, s.tie, s.kind, s.event_id
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
    'Failed-payment cases, one row per episode: a case is a subscription or a transaction without subscription. It opens at the first failure where something is owed (a past_due transaction or subscription snapshot; transaction.payment_failed of a transaction without subscription or of a renewal) and closes at the first later recovery = recovered (a transaction without subscription first seen paid/completed; for a subscription, one of its failed transactions or renewals first seen paid/completed, or the subscription seen active or trialing after the failure), or loss (subscription first seen canceled, transaction canceled) = lost; else open. amount = grand_total of the first failed transaction.';
