-- paddlehook 0016_entitlement_ends: access ends when a scheduled cancel or pause takes effect.
--
-- Runs once, inside the migration runner's transaction (no BEGIN/COMMIT here). PostgreSQL 15.
--
-- 1. An active (or trialing) subscription with a scheduled cancel or pause kept granted = true after the
--    scheduled date, until its subscription.canceled/paused event arrived: hours or days later when the
--    receiver was down or Paddle was still retrying (live retries run for days). access_until showed the date
--    in the past next to granted = true. Now access ends at that date: granted = false, with reason
--    cancel_effective or pause_effective until the event arrives.
-- 2. past_due_grace_days were added as calendar days in the session's TimeZone: across a daylight-saving
--    change 7 days were 167 or 169 hours, and two sessions could disagree on granted for an hour. They are
--    days of 24 hours now.
--
-- The view is redefined whole (CREATE OR REPLACE VIEW, same columns): it is 0006's, changed in its settings,
-- the lateral x (scheduled_end) and the granted and reason of active and trialing subscriptions.

CREATE OR REPLACE VIEW paddle.entitlements AS
WITH settings AS (
    -- days of 24 hours: a day added to a timestamptz follows the session's TimeZone across a DST change
    SELECT make_interval(hours => 24 * coalesce(
               (SELECT paddle.to_int(value) FROM paddle.report_settings WHERE key = 'past_due_grace_days'), 7))
               AS grace
),
sub_runs AS (
    -- runs of consecutive past_due snapshots: run = number of non-past_due snapshots up to this one
    SELECT s.environment, s.entity_id AS subscription_id, s.event_id, s.occurred_at, s.status,
           count(*) FILTER (WHERE s.status IS DISTINCT FROM 'past_due')
               OVER (PARTITION BY s.environment, s.entity_id ORDER BY s.occurred_at, s.event_id) AS run
    FROM paddle.entity_snapshots s
    WHERE s.entity = 'subscription'
),
past_due_since AS (
    -- for each snapshot: when the past_due run it belongs to began (the state row picks its own by event_id)
    SELECT r.event_id,
           min(r.occurred_at) FILTER (WHERE r.status = 'past_due') OVER (PARTITION BY r.environment, r.subscription_id, r.run)
               AS since
    FROM sub_runs r
),
sub_grants AS (
    SELECT pe.environment, s.customer_id, i.product_id, i.price_id, s.id AS subscription_id, s.status,
           NULL::text AS transaction_id, g.granted, g.access_until, false AS forever, g.reason
    FROM paddle.subscriptions s
    JOIN paddle.payment_events pe ON pe.event_id = s.event_id
    JOIN paddle.subscription_items i ON i.subscription_id = s.id
    LEFT JOIN past_due_since pd ON pd.event_id = s.event_id
    CROSS JOIN settings
    CROSS JOIN LATERAL (
        SELECT CASE WHEN s.scheduled_change_action IN ('cancel', 'pause')
                    THEN coalesce(s.scheduled_change_effective_at, s.current_billing_period_ends_at)
                    ELSE s.current_billing_period_ends_at END AS period_end,
               coalesce(pd.since, s.occurred_at) + settings.grace AS grace_end,
               greatest(s.current_billing_period_ends_at,
                        CASE WHEN s.scheduled_change_action = 'cancel' THEN s.scheduled_change_effective_at END)
                   AS paid_through,
               CASE WHEN s.scheduled_change_action IN ('cancel', 'pause')
                    THEN coalesce(s.scheduled_change_effective_at, s.current_billing_period_ends_at) END
                   AS scheduled_end
    ) AS x
    CROSS JOIN LATERAL (
        SELECT CASE s.status
                   -- a scheduled cancel or pause ends access at its date, even before its event arrives
                   WHEN 'active' THEN coalesce(now() < x.scheduled_end, true)
                   WHEN 'trialing' THEN coalesce(now() < x.scheduled_end, true)
                   WHEN 'past_due' THEN now() < x.grace_end
                   WHEN 'canceled' THEN coalesce(now() < x.paid_through, false)
                   ELSE false
               END AS granted,
               CASE s.status
                   WHEN 'active' THEN x.period_end
                   WHEN 'trialing' THEN x.period_end
                   WHEN 'past_due' THEN x.grace_end
                   WHEN 'canceled' THEN CASE WHEN now() < x.paid_through THEN x.paid_through ELSE s.canceled_at END
                   WHEN 'paused' THEN s.paused_at
               END AS access_until,
               CASE s.status
                   WHEN 'active' THEN CASE WHEN now() >= x.scheduled_end THEN s.scheduled_change_action || '_effective'
                                           WHEN s.scheduled_change_action IN ('cancel', 'pause')
                                               THEN s.scheduled_change_action || '_scheduled'
                                           ELSE 'active' END
                   WHEN 'trialing' THEN CASE WHEN now() >= x.scheduled_end
                                             THEN s.scheduled_change_action || '_effective'
                                             ELSE 'trialing' END
                   WHEN 'past_due' THEN CASE WHEN now() < x.grace_end THEN 'past_due_grace'
                                             ELSE 'past_due_grace_expired' END
                   WHEN 'canceled' THEN CASE WHEN now() < x.paid_through THEN 'canceled_until_period_end'
                                             ELSE 'canceled' END
                   WHEN 'paused' THEN 'paused'
                   ELSE coalesce(s.status, 'unknown')
               END AS reason
    ) AS g
    WHERE s.customer_id IS NOT NULL
      -- Paddle marks every item of a paused subscription inactive; the pause itself is the answer there.
      AND (i.status IS DISTINCT FROM 'inactive' OR s.status = 'paused')
),
refunded_transactions AS (
    -- approved refunds of a whole transaction
    SELECT a.environment, a.transaction_id, min(a.approved_at) AS refunded_at
    FROM paddle.adjustment_facts a
    WHERE a.action = 'refund' AND a.status = 'approved' AND a.type = 'full'
    GROUP BY a.environment, a.transaction_id
),
refunded_items AS (
    -- approved refunds that refund one line item in full
    SELECT a.environment, a.transaction_id, ai.item_id, min(a.approved_at) AS refunded_at
    FROM paddle.adjustment_facts a
    JOIN paddle.adjustment_items ai ON ai.adjustment_id = a.adjustment_id AND ai.type = 'full'
    WHERE a.action = 'refund' AND a.status = 'approved'
    GROUP BY a.environment, a.transaction_id, ai.item_id
),
one_time_items AS (
    -- Lines whose price has no billing cycle (in the items[] of the transaction snapshot held), whether or not
    -- the transaction belongs to a subscription: a checkout that starts a subscription can carry one-time
    -- items, and its recurring lines grant through the subscription, never forever. A line whose price is
    -- not in items[] counts as one-time only in a transaction without a subscription.
    SELECT r.environment, r.customer_id, ti.product_id, ti.price_id, r.transaction_id,
           CASE WHEN rt.refunded_at IS NULL THEN ri.refunded_at
                WHEN ri.refunded_at IS NULL THEN rt.refunded_at
                ELSE least(rt.refunded_at, ri.refunded_at) END AS refunded_at
    FROM paddle.revenue_transactions r
    JOIN paddle.transactions t ON t.id = r.transaction_id
    JOIN paddle.payment_events pe ON pe.event_id = t.event_id
    JOIN paddle.transaction_items ti ON ti.transaction_id = r.transaction_id
    LEFT JOIN LATERAL (
        SELECT bool_or(jsonb_typeof(it -> 'price' -> 'billing_cycle') = 'object') AS recurring
        FROM jsonb_array_elements(CASE jsonb_typeof(pe.payload -> 'data' -> 'items')
                                      WHEN 'array' THEN pe.payload -> 'data' -> 'items' END) AS it
        WHERE ti.price_id IN (it -> 'price' ->> 'id', it ->> 'price_id')
    ) AS price ON true
    LEFT JOIN refunded_transactions rt ON rt.transaction_id = r.transaction_id AND rt.environment = r.environment
    LEFT JOIN refunded_items ri ON ri.transaction_id = r.transaction_id AND ri.item_id = ti.id
                               AND ri.environment = r.environment
    WHERE r.customer_id IS NOT NULL AND ti.price_id IS NOT NULL
      AND CASE WHEN price.recurring IS NULL THEN r.subscription_id IS NULL ELSE NOT price.recurring END
),
one_time_grants AS (
    SELECT o.environment, o.customer_id, o.product_id, o.price_id, NULL::text AS subscription_id,
           NULL::text AS status, o.transaction_id, o.refunded_at IS NULL AS granted,
           o.refunded_at AS access_until, o.refunded_at IS NULL AS forever,
           CASE WHEN o.refunded_at IS NULL THEN 'one_time_purchase' ELSE 'refunded' END AS reason
    FROM one_time_items o
),
grants AS (
    SELECT * FROM sub_grants
    UNION ALL
    SELECT * FROM one_time_grants
)
SELECT DISTINCT ON (g.environment, g.customer_id, g.product_id, g.price_id)
       g.environment,
       g.customer_id,
       c.email AS customer_email,
       g.product_id,
       g.price_id,
       g.granted,
       g.access_until,
       g.forever,
       g.reason,
       g.subscription_id,
       g.status AS subscription_status,
       g.transaction_id
FROM grants g
LEFT JOIN paddle.customers c ON c.id = g.customer_id AND c.environment = g.environment
ORDER BY g.environment, g.customer_id, g.product_id, g.price_id,
         g.granted DESC, g.forever DESC, g.access_until DESC NULLS LAST, g.subscription_id, g.transaction_id;

COMMENT ON VIEW paddle.entitlements IS
    'Access per customer x product x price, decided by the best grant: subscriptions grant while active or trialing (items not inactive; until the period end, or until the date of a scheduled cancel/pause (the period end when it has none), which ends access even before its canceled/paused event arrives: reason cancel_effective/pause_effective), past_due during past_due_grace_days (report_settings, days of 24 hours) after the current past_due run began, canceled until a period end still in the future; paused does not (its row says so). Paid/completed transactions grant forever, for each line whose price has no billing cycle (lines whose price the snapshot''s items[] do not show: only in transactions without subscription), unless an approved refund is full (type full, or a full item refund of that line). access_until = when access ends or ended; NULL with forever = true for one-time purchases.';
