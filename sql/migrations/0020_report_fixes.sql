-- paddlehook 0020_report_fixes: chargebacks revoke, passed cancels leave MRR, the creating transaction stays.
--
-- Runs once, inside the migration runner's transaction (no BEGIN/COMMIT here). PostgreSQL 15.
--
-- 1. paddle.entitlements revoked a one-time purchase for an approved refund only: an approved chargeback (the
--    buyer disputed the payment and got the money back) left it granted forever. An approved full chargeback
--    (of the transaction, or an item of type full for that line) now revokes as a full refund does, with reason
--    charged_back, unless Paddle reversed it since (won the dispute: the chargeback's status is reversed, or an
--    approved chargeback_reverse of the transaction approved at or after it is stored). Partial chargebacks do
--    not revoke, as partial refunds do not. A past_due subscription whose scheduled cancel or pause has taken
--    effect no longer has access during its grace days (as an active one has none since 0016; reason
--    cancel_effective/pause_effective). Same columns; otherwise the view of 0016 (refunded_transactions,
--    refunded_items, the reason of one_time_grants and the past_due branch of sub_grants).
-- 2. paddle.mrr counted an active or past_due subscription whose scheduled cancel or pause had taken effect
--    until its subscription.canceled/paused event arrived (days later while Paddle retries), when entitlements
--    ended its access (0016; past_due ones from this migration on). It now leaves mrr, arr and the counts at that date (the effective
--    date, else the period end, as in entitlements). Same columns; otherwise the view of 0011.
-- 3. paddle.project_subscription overwrote subscriptions.transaction_id with NULL from every snapshot after
--    subscription.created (Paddle sends it there only). The row now keeps the transaction_id of the latest
--    snapshot of its environment that had one; a snapshot older than the row (delivered late) fills it when
--    the row has none, so the result does not depend on delivery order and reproject (which replays in
--    occurred_at order) gives the same. Same signature; otherwise the function of 0008.
-- 4. paddle.to_ts rounded a fraction of 7 to 9 digits to microseconds: 23:59:59.999999700Z became the next
--    day. The fraction is now cut to 6 digits before the cast. Same signature; otherwise the function of 0004.
-- 5. An amount of MRR at an exact half of a minor unit was rounded down: paddle.subscription_mrr_items divided
--    to about 20 digits, 9997/12 gave 833.0833...33, and six of them 4998.4999...98, which round() made 4998
--    (CAD 49.98 for six yearly 99.97 subscriptions, not 49.99). The division now runs to 30 decimals and the
--    sums are rounded to 20 decimals before the minor unit (the new paddle.round_minor), in mrr, mrr_movements
--    and churn_monthly; churn_monthly's mrr_lost is now the sum of voluntary_mrr_lost and
--    failed_payment_mrr_lost, each rounded once, as documented (it was rounded apart and could differ by one
--    minor unit). Same columns and signature; otherwise the function of 0011 and the views of 0003 and 0015.
-- 6. paddle.subscription_history (so mrr_movements) counted a subscription whose currency changed (Paddle allows
--    it; or an item moved to a price override in another currency) as churned in the old currency and new in the
--    new one, although it never stopped. MRR that leaves a currency while the subscription has MRR in another is
--    now a contraction, and MRR that arrives in a currency while it had MRR in another an expansion. Same
--    columns; otherwise the view of 0011.

-------------------------------------------------------------------------------------------------------------
-- 5. MRR rounding: the function the views below use (the rest of 5 is at the end)
-------------------------------------------------------------------------------------------------------------

CREATE FUNCTION paddle.round_minor(p numeric) RETURNS numeric
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN round(round(p, 20));

COMMENT ON FUNCTION paddle.round_minor(numeric) IS
    'Building block: a sum of monthly amounts (paddle.subscription_mrr_items, to 30 decimals) rounded half away from zero to a whole minor unit, through 20 decimals first: 6 x 9997/12 = 4998.5 rounds to 4999, not 4998.';

-------------------------------------------------------------------------------------------------------------
-- 1. entitlements
-------------------------------------------------------------------------------------------------------------

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
                   WHEN 'past_due' THEN now() < x.grace_end AND coalesce(now() < x.scheduled_end, true)
                   WHEN 'canceled' THEN coalesce(now() < x.paid_through, false)
                   ELSE false
               END AS granted,
               CASE s.status
                   WHEN 'active' THEN x.period_end
                   WHEN 'trialing' THEN x.period_end
                   WHEN 'past_due' THEN least(x.grace_end, x.scheduled_end)
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
                   WHEN 'past_due' THEN CASE WHEN now() >= x.scheduled_end
                                             THEN s.scheduled_change_action || '_effective'
                                             WHEN now() < x.grace_end THEN 'past_due_grace'
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
revoking AS (
    -- approved refunds, and approved chargebacks Paddle has not reversed: a reversed chargeback has status
    -- reversed, and its approved chargeback_reverse may be stored before that snapshot is
    SELECT a.*
    FROM paddle.adjustment_facts a
    WHERE a.status = 'approved'
      AND (a.action = 'refund'
           OR a.action = 'chargeback'
              AND NOT EXISTS (SELECT FROM paddle.adjustment_facts r
                              WHERE r.action = 'chargeback_reverse' AND r.status = 'approved'
                                AND r.transaction_id = a.transaction_id AND r.environment = a.environment
                                -- a reversal answers the dispute before it, not a later one
                                AND r.approved_at >= a.approved_at))
),
refunded_transactions AS (
    -- approved refunds (and chargebacks) of a whole transaction; the first one names the reason
    SELECT a.environment, a.transaction_id, min(a.approved_at) AS refunded_at,
           (array_agg(a.action ORDER BY a.approved_at, a.adjustment_id))[1] AS action
    FROM revoking a
    WHERE a.type = 'full'
    GROUP BY a.environment, a.transaction_id
),
refunded_items AS (
    -- approved refunds (and chargebacks) that refund one line item in full; the first one names the reason
    SELECT a.environment, a.transaction_id, ai.item_id, min(a.approved_at) AS refunded_at,
           (array_agg(a.action ORDER BY a.approved_at, a.adjustment_id))[1] AS action
    FROM revoking a
    JOIN paddle.adjustment_items ai ON ai.adjustment_id = a.adjustment_id AND ai.type = 'full'
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
                ELSE least(rt.refunded_at, ri.refunded_at) END AS refunded_at,
           CASE WHEN rt.refunded_at IS NULL THEN ri.action
                WHEN ri.refunded_at IS NULL OR rt.refunded_at <= ri.refunded_at THEN rt.action
                ELSE ri.action END AS refunded_by
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
           CASE WHEN o.refunded_at IS NULL THEN 'one_time_purchase'
                WHEN o.refunded_by = 'chargeback' THEN 'charged_back'
                ELSE 'refunded' END AS reason
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
    'Access per customer x product x price, decided by the best grant: subscriptions grant while active or trialing (items not inactive; until the period end, or until the date of a scheduled cancel/pause (the period end when it has none), which ends access even before its canceled/paused event arrives: reason cancel_effective/pause_effective), past_due during past_due_grace_days (report_settings, days of 24 hours) after the current past_due run began and until a scheduled cancel/pause takes effect, canceled until a period end still in the future; paused does not (its row says so). Paid/completed transactions grant forever, for each line whose price has no billing cycle (lines whose price the snapshot''s items[] do not show: only in transactions without subscription), unless an approved refund is full (type full, or a full item refund of that line: reason refunded), or an approved chargeback is, that Paddle has not reversed (no reversed status, no approved chargeback_reverse of the transaction at or after it: reason charged_back). access_until = when access ends or ended; NULL with forever = true for one-time purchases; the approval time of the first revoking refund or chargeback when revoked.';

-------------------------------------------------------------------------------------------------------------
-- 2. mrr
-------------------------------------------------------------------------------------------------------------

CREATE OR REPLACE VIEW paddle.mrr AS
WITH subs AS (
    SELECT pe.environment, s.id, s.status, s.customer_id,
           coalesce(m.currency_code, s.currency_code) AS currency_code,
           coalesce(sum(m.monthly_amount), 0) AS mrr_minor
    FROM paddle.subscriptions s
    JOIN paddle.payment_events pe ON pe.event_id = s.event_id
    LEFT JOIN paddle.addresses a ON a.id = s.address_id AND a.environment = pe.environment
    LEFT JOIN LATERAL paddle.subscription_mrr_items(pe.payload -> 'data', a.country_code) AS m ON true
    WHERE s.status IN ('active', 'past_due')
      -- a scheduled cancel or pause ends the MRR at its date (the period end when it has none), as it ends
      -- access in paddle.entitlements, even before its canceled/paused event arrives
      AND NOT coalesce(s.scheduled_change_action IN ('cancel', 'pause')
                       AND now() >= coalesce(s.scheduled_change_effective_at, s.current_billing_period_ends_at),
                       false)
    GROUP BY pe.environment, s.id, s.status, s.customer_id, coalesce(m.currency_code, s.currency_code)
)
SELECT environment,
       currency_code,
       count(DISTINCT id) FILTER (WHERE status = 'active') AS active_subscriptions,
       count(DISTINCT customer_id) FILTER (WHERE status = 'active') AS active_customers,
       paddle.to_major(paddle.round_minor(coalesce(sum(mrr_minor) FILTER (WHERE status = 'active'), 0)), currency_code) AS mrr,
       paddle.to_major(12 * paddle.round_minor(coalesce(sum(mrr_minor) FILTER (WHERE status = 'active'), 0)), currency_code) AS arr,
       count(DISTINCT id) FILTER (WHERE status = 'past_due') AS past_due_subscriptions,
       paddle.to_major(paddle.round_minor(coalesce(sum(mrr_minor) FILTER (WHERE status = 'past_due'), 0)), currency_code)
           AS past_due_mrr
FROM subs
GROUP BY environment, currency_code;

COMMENT ON VIEW paddle.mrr IS
    'Monthly recurring revenue now, per environment and currency: sum over active subscriptions (and separately past_due ones) of paddle.subscription_mrr_items of their latest snapshot at the prices of their address''s country, rounded half away from zero to the minor unit once per row (paddle.round_minor); arr = 12 x mrr. A subscription whose scheduled cancel or pause has taken effect (its date, else its period end, is past) counts nowhere, even before its canceled/paused event arrives.';

COMMENT ON VIEW paddle.mrr_movements IS
    'MRR movements per UTC month, environment and currency, from the subscription snapshot history (paddle.subscription_history): new, expansion, contraction, churned (cancellations and pauses), reactivated (resumes, and re-activations of subscriptions that had MRR before); net_new_mrr = new + expansion + reactivated - contraction - churned; ending_mrr = running sum of net_new_mrr (= mrr + past_due_mrr of paddle.mrr once no later snapshot exists, up to per-month rounding; a scheduled cancel or pause leaves paddle.mrr at its date, and the movements when its event arrives).';

-------------------------------------------------------------------------------------------------------------
-- 3. project_subscription
-------------------------------------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION paddle.project_subscription(p_id text, p_event_id text, p_occurred_at timestamptz, p_data jsonb,
                                  p_environment text)
    RETURNS void
    LANGUAGE plpgsql
AS $$
DECLARE
    v_items_digest bigint := hashtextextended(COALESCE((p_data -> 'items')::text, ''), 0);
    v_items_event  text;
    v_items jsonb;
BEGIN
    INSERT INTO paddle.subscriptions AS t
        (id, status, customer_id, address_id, business_id, currency_code, collection_mode,
         billing_cycle_interval, billing_cycle_frequency,
         current_billing_period_starts_at, current_billing_period_ends_at,
         next_billed_at, started_at, first_billed_at, paused_at, canceled_at,
         scheduled_change_action, scheduled_change_effective_at, scheduled_change_resume_at,
         discount_id, discount, custom_data, import_meta, billing_details, transaction_id,
         created_at, updated_at, items_digest, items_event_id, occurred_at, event_id, environment)
    SELECT p_id, r.status, paddle.to_key(r.customer_id), r.address_id, r.business_id, r.currency_code,
           r.collection_mode, r.billing_cycle ->> 'interval', paddle.to_int(r.billing_cycle ->> 'frequency'),
           paddle.to_ts(r.current_billing_period ->> 'starts_at'),
           paddle.to_ts(r.current_billing_period ->> 'ends_at'),
           paddle.to_ts(r.next_billed_at), paddle.to_ts(r.started_at), paddle.to_ts(r.first_billed_at),
           paddle.to_ts(r.paused_at), paddle.to_ts(r.canceled_at),
           r.scheduled_change ->> 'action', paddle.to_ts(r.scheduled_change ->> 'effective_at'),
           paddle.to_ts(r.scheduled_change ->> 'resume_at'),
           r.discount ->> 'id', r.discount, r.custom_data, r.import_meta, r.billing_details, r.transaction_id,
           paddle.to_ts(r.created_at), paddle.to_ts(r.updated_at),
           v_items_digest, p_event_id, p_occurred_at, p_event_id, p_environment
    FROM jsonb_to_record(paddle.as_object(p_data)) AS r(
        status text, customer_id text, address_id text, business_id text, currency_code text,
        collection_mode text, billing_cycle jsonb, current_billing_period jsonb, next_billed_at text,
        started_at text, first_billed_at text, paused_at text, canceled_at text, scheduled_change jsonb,
        discount jsonb, custom_data jsonb, import_meta jsonb, billing_details jsonb, transaction_id text,
        created_at text, updated_at text)
    ON CONFLICT (id) DO UPDATE SET
        status                           = EXCLUDED.status,
        customer_id                      = EXCLUDED.customer_id,
        address_id                       = EXCLUDED.address_id,
        business_id                      = EXCLUDED.business_id,
        currency_code                    = EXCLUDED.currency_code,
        collection_mode                  = EXCLUDED.collection_mode,
        billing_cycle_interval           = EXCLUDED.billing_cycle_interval,
        billing_cycle_frequency          = EXCLUDED.billing_cycle_frequency,
        current_billing_period_starts_at = EXCLUDED.current_billing_period_starts_at,
        current_billing_period_ends_at   = EXCLUDED.current_billing_period_ends_at,
        next_billed_at                   = EXCLUDED.next_billed_at,
        started_at                       = EXCLUDED.started_at,
        first_billed_at                  = EXCLUDED.first_billed_at,
        paused_at                        = EXCLUDED.paused_at,
        canceled_at                      = EXCLUDED.canceled_at,
        scheduled_change_action          = EXCLUDED.scheduled_change_action,
        scheduled_change_effective_at    = EXCLUDED.scheduled_change_effective_at,
        scheduled_change_resume_at       = EXCLUDED.scheduled_change_resume_at,
        discount_id                      = EXCLUDED.discount_id,
        discount                         = EXCLUDED.discount,
        custom_data                      = EXCLUDED.custom_data,
        import_meta                      = EXCLUDED.import_meta,
        billing_details                  = EXCLUDED.billing_details,
        -- sent in subscription.created only: a later snapshot without it keeps the row's (of its environment)
        transaction_id                   = COALESCE(EXCLUDED.transaction_id,
                                                    CASE WHEN t.environment = EXCLUDED.environment
                                                         THEN t.transaction_id END),
        created_at                       = EXCLUDED.created_at,
        updated_at                       = EXCLUDED.updated_at,
        items_digest                     = EXCLUDED.items_digest,
        items_event_id                   = CASE WHEN t.items_digest = EXCLUDED.items_digest
                                                        AND t.environment = EXCLUDED.environment
                                                  THEN t.items_event_id ELSE EXCLUDED.items_event_id END,
        occurred_at                      = EXCLUDED.occurred_at,
        event_id                         = EXCLUDED.event_id,
        environment                      = EXCLUDED.environment,
        updated_in_db_at                 = now()
    -- Newer wins within an environment; live takes over a sandbox row (paddle.snapshot_replaces).
    WHERE paddle.snapshot_replaces(t.environment, t.occurred_at, t.event_id,
                                   EXCLUDED.environment, EXCLUDED.occurred_at, EXCLUDED.event_id)
    RETURNING items_event_id INTO v_items_event;

    IF NOT FOUND THEN
        -- Not applied: an equal or newer snapshot is stored. One delivered late still gives the row the
        -- transaction_id it lacks, as it would have in occurred_at order (paddle.reproject's).
        UPDATE paddle.subscriptions AS t
        SET transaction_id   = paddle.as_object(p_data) ->> 'transaction_id',
            updated_in_db_at = now()
        WHERE t.id = p_id AND t.transaction_id IS NULL AND t.environment = p_environment
          AND paddle.as_object(p_data) ->> 'transaction_id' IS NOT NULL;
        RETURN;
    END IF;

    -- Applied with the items the row already holds: leave the item rows alone.
    IF v_items_event IS DISTINCT FROM p_event_id THEN
        RETURN;
    END IF;

    DELETE FROM paddle.subscription_items WHERE subscription_id = p_id;

    v_items := p_data -> 'items';

    INSERT INTO paddle.subscription_items
        (subscription_id, price_id, product_id, quantity, status, recurring,
         unit_price_amount, unit_price_currency_code, billing_cycle_interval, billing_cycle_frequency,
         trial_period_interval, trial_period_frequency, next_billed_at, previously_billed_at, trial_dates,
         created_at, updated_at, occurred_at, event_id)
    SELECT DISTINCT ON (x.price_id)
           p_id, x.price_id, COALESCE(x.price ->> 'product_id', x.product ->> 'id'), paddle.to_int(x.quantity),
           x.status, paddle.to_bool(x.recurring),
           paddle.to_amount(x.price -> 'unit_price' ->> 'amount'), x.price -> 'unit_price' ->> 'currency_code',
           x.price -> 'billing_cycle' ->> 'interval', paddle.to_int(x.price -> 'billing_cycle' ->> 'frequency'),
           x.price -> 'trial_period' ->> 'interval', paddle.to_int(x.price -> 'trial_period' ->> 'frequency'),
           paddle.to_ts(x.next_billed_at), paddle.to_ts(x.previously_billed_at), x.trial_dates,
           paddle.to_ts(x.created_at), paddle.to_ts(x.updated_at), p_occurred_at, p_event_id
    FROM (
        SELECT e.n, paddle.to_key(i.price ->> 'id') AS price_id, i.price, i.product, i.quantity, i.status,
               i.recurring, i.next_billed_at, i.previously_billed_at, i.trial_dates, i.created_at, i.updated_at
        FROM jsonb_array_elements(paddle.as_array(v_items)) WITH ORDINALITY AS e(item, n)
        CROSS JOIN LATERAL jsonb_to_record(paddle.as_object(e.item)) AS i(
            price jsonb, product jsonb, quantity text, status text, recurring text, next_billed_at text,
            previously_billed_at text, trial_dates jsonb, created_at text, updated_at text)
    ) AS x
    WHERE x.price_id IS NOT NULL
    ORDER BY x.price_id, x.n;
END
$$;

-------------------------------------------------------------------------------------------------------------
-- 4. to_ts
-------------------------------------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION paddle.to_ts(p text) RETURNS timestamptz
    LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
AS $$
DECLARE
    y integer;
    d integer;
BEGIN
    -- Paddle's own layout (microseconds, Z) with a day of month up to 28: digits and ranges checked
    -- without the regular expression below, which costs about as much as the rest of the projection of a
    -- timestamp. Days 29-31 and every other layout take the general path.
    IF translate(p, '123456789', '000000000') = '0000-00-00T00:00:00.000000Z'
       AND substr(p, 6, 2) BETWEEN '01' AND '12' AND substr(p, 9, 2) BETWEEN '01' AND '28'
       AND substr(p, 12, 2) <= '23' AND substr(p, 15, 2) <= '59' AND substr(p, 18, 2) <= '59'
       AND left(p, 4) <> '0000' THEN
        RETURN p::timestamptz;
    END IF;
    IF p !~ '^[0-9]{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])[Tt ](?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,9})?(?:[Zz]|[+-](?:0[0-9]|1[0-5]):[0-5][0-9])$' THEN
        RETURN NULL;
    END IF;
    IF substr(p, 9, 2)::integer > 28 OR left(p, 4) = '0000' THEN  -- rare: check the calendar
        y := substr(p, 1, 4)::integer;
        d := substr(p, 9, 2)::integer;
        IF y = 0
           OR d = 31 AND substr(p, 6, 2) IN ('02', '04', '06', '09', '11')
           OR d = 30 AND substr(p, 6, 2) = '02'
           OR d = 29 AND substr(p, 6, 2) = '02' AND (y % 4 <> 0 OR y % 100 = 0 AND y % 400 <> 0) THEN
            RETURN NULL;
        END IF;
    END IF;
    -- PostgreSQL keeps microseconds and would round the rest: .999999700 at the end of a day is the next day
    IF p ~ '\.[0-9]{7}' THEN
        p := regexp_replace(p, '(\.[0-9]{6})[0-9]+', '\1');
    END IF;
    RETURN p::timestamptz;
END
$$;

COMMENT ON FUNCTION paddle.to_ts(text) IS
    'RFC 3339 timestamp (0-9 fractional digits, Z or +hh:mm offset) -> timestamptz, fractions beyond microseconds cut (not rounded: a timestamp never moves to the next second or day); NULL for anything else, including impossible dates. Never raises.';

COMMENT ON COLUMN paddle.subscriptions.transaction_id IS
    'transaction_id of the subscription.created snapshot: the transaction that created the subscription. Paddle sends it there only; later snapshots keep it (those of the other environment do not), and one delivered late fills it in, so the final state does not depend on delivery order. NULL when that snapshot was never stored; the creating transaction is also findable as paddle.transactions.subscription_id = id, or in payment_events.';

-------------------------------------------------------------------------------------------------------------
-- 5. MRR rounding
-------------------------------------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION paddle.subscription_mrr_items(p_data jsonb, p_country_code text)
    RETURNS TABLE (price_id text, product_id text, quantity integer, currency_code text, unit_amount numeric,
                   billing_interval text, billing_frequency integer, monthly_amount numeric)
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    -- Runs once per subscription snapshot in the reports, so it is written for speed: the planner inlines it,
    -- and each OFFSET 0 evaluates a JSON extraction once instead of copying it into every use.
    SELECT x.price_id, x.product_id, x.quantity, coalesce(x.up ->> 'currency_code', x.sub_currency), x.amount,
           x.interval, x.frequency,
           -- exact rational factor per interval (see docs/reports.md): month 1, year 1/12,
           -- week 1461/336 (= 365.25 / 7 / 12), day 1461/48 (= 365.25 / 12)
           -- to 30 decimals (a quotient keeps the scale of its dividend), trailing zeros dropped: a sum of such
           -- amounts is exact to 20 decimals, which paddle.round_minor rounds to first
           trim_scale(
           round(x.amount * x.quantity * (CASE x.interval WHEN 'day' THEN 1461 WHEN 'week' THEN 1461 ELSE 1 END), 30)
               -- numeric before the product: a frequency near 2^31 times 336 overflows an integer
               / ((CASE x.interval WHEN 'day' THEN 48 WHEN 'week' THEN 336 WHEN 'month' THEN 1 ELSE 12 END)::numeric
                  * x.frequency))
    FROM (SELECT z.d ->> 'currency_code' AS sub_currency, z.d -> 'billing_cycle' AS sub_cycle, z.d -> 'items' AS items
          FROM (SELECT p_data AS d OFFSET 0) AS z
          OFFSET 0) AS sd
    CROSS JOIN LATERAL jsonb_array_elements(CASE jsonb_typeof(sd.items) WHEN 'array' THEN sd.items END) AS e(item)
    CROSS JOIN LATERAL (
        SELECT y.*, paddle.to_amount(y.up ->> 'amount') AS amount, y.bc ->> 'interval' AS interval,
               paddle.to_int(y.bc ->> 'frequency') AS frequency
        FROM (
            SELECT paddle.to_key(p.pr ->> 'id') AS price_id,
                   coalesce(p.pr ->> 'product_id', e.item -> 'product' ->> 'id') AS product_id,
                   coalesce(paddle.to_int(e.item ->> 'quantity'), 1) AS quantity,
                   e.item ->> 'status' AS status,
                   paddle.to_bool(e.item ->> 'recurring') AS recurring,
                   sd.sub_currency,
                   -- the unit price (see docs/reports.md): the override for the address's country in the
                   -- subscription's currency; else the base price when it is in that currency, else the first
                   -- override in that currency, else the base price in its own
                   coalesce(paddle.country_price(p.pr, sd.sub_currency, p_country_code),
                            CASE WHEN sd.sub_currency IS NULL
                                      OR p.pr -> 'unit_price' ->> 'currency_code' = sd.sub_currency
                                 THEN p.pr -> 'unit_price'
                                 ELSE coalesce(paddle.price_override(p.pr, sd.sub_currency), p.pr -> 'unit_price')
                            END) AS up,
                   -- the price's billing cycle; a recurring item without one follows the subscription's
                   coalesce(paddle.as_object(p.pr -> 'billing_cycle'),
                            CASE WHEN paddle.to_bool(e.item ->> 'recurring') THEN paddle.as_object(sd.sub_cycle) END)
                       AS bc
            FROM (SELECT paddle.as_object(e.item -> 'price') AS pr OFFSET 0) AS p
            OFFSET 0                                        -- up is read twice: its override search once
        ) AS y
        OFFSET 0
    ) AS x
    WHERE x.price_id IS NOT NULL
      AND coalesce(x.status, 'active') = 'active'          -- trialing and inactive items bring no revenue yet
      AND x.recurring IS NOT FALSE                          -- one-time charges are not recurring revenue
      AND x.interval IN ('day', 'week', 'month', 'year')
      AND x.frequency > 0
      AND x.amount IS NOT NULL
$$;

COMMENT ON FUNCTION paddle.subscription_mrr_items(jsonb, text) IS
    'Building block: the recurring items of a subscription snapshot (payment_events.payload->''data''), as listed, with their monthly amount in minor units (not rounded: exact, or to 30 decimals): unit price x quantity x factor / frequency, factor month 1, year 1/12, week 1461/336, day 1461/48. The unit price is the override for p_country_code (the country of the subscription''s address; NULL: unknown) in the subscription currency; else the base price when it is in that currency, else the first override in that currency, else the base price in its own. Items whose status is not active, with recurring = false, without price id, billing cycle or amount are left out. Never raises.';

CREATE OR REPLACE VIEW paddle.mrr_movements AS
WITH m AS (
    SELECT h.month, h.environment, h.currency_code,
           paddle.round_minor(coalesce(sum(h.delta_minor) FILTER (WHERE h.movement = 'new'), 0)) AS new_minor,
           paddle.round_minor(coalesce(sum(h.delta_minor) FILTER (WHERE h.movement = 'expansion'), 0)) AS expansion_minor,
           paddle.round_minor(coalesce(-sum(h.delta_minor) FILTER (WHERE h.movement = 'contraction'), 0)) AS contraction_minor,
           paddle.round_minor(coalesce(-sum(h.delta_minor) FILTER (WHERE h.movement = 'churned'), 0)) AS churned_minor,
           paddle.round_minor(coalesce(sum(h.delta_minor) FILTER (WHERE h.movement = 'reactivated'), 0)) AS reactivated_minor,
           count(*) FILTER (WHERE h.movement = 'new') AS new_subscriptions,
           count(*) FILTER (WHERE h.movement = 'expansion') AS expansions,
           count(*) FILTER (WHERE h.movement = 'contraction') AS contractions,
           count(*) FILTER (WHERE h.movement = 'churned') AS churned_subscriptions,
           count(*) FILTER (WHERE h.movement = 'reactivated') AS reactivations
    FROM paddle.subscription_history h
    WHERE h.movement IS NOT NULL
    GROUP BY h.month, h.environment, h.currency_code
),
n AS (
    SELECT m.*, m.new_minor + m.expansion_minor + m.reactivated_minor - m.contraction_minor - m.churned_minor
                    AS net_minor
    FROM m
)
SELECT n.month,
       n.environment,
       n.currency_code,
       paddle.to_major(n.new_minor, n.currency_code)         AS new_mrr,
       paddle.to_major(n.expansion_minor, n.currency_code)   AS expansion_mrr,
       paddle.to_major(n.contraction_minor, n.currency_code) AS contraction_mrr,
       paddle.to_major(n.churned_minor, n.currency_code)     AS churned_mrr,
       paddle.to_major(n.reactivated_minor, n.currency_code) AS reactivated_mrr,
       paddle.to_major(n.net_minor, n.currency_code)         AS net_new_mrr,
       paddle.to_major(sum(n.net_minor) OVER (PARTITION BY n.environment, n.currency_code ORDER BY n.month),
                       n.currency_code)                      AS ending_mrr,
       n.new_subscriptions,
       n.expansions,
       n.contractions,
       n.churned_subscriptions,
       n.reactivations
FROM n;

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
       -- the sum of the two parts below, each rounded once
       paddle.to_major(paddle.round_minor(coalesce(sum(c.prev_mrr_minor) FILTER (WHERE c.kind = 'voluntary'), 0))
                       + paddle.round_minor(coalesce(sum(c.prev_mrr_minor) FILTER (WHERE c.kind = 'failed_payment'), 0)),
                       c.currency_code) AS mrr_lost,
       count(DISTINCT c.customer_id) FILTER (WHERE c.counted AND c.kind = 'voluntary') AS voluntary_customers,
       count(*) FILTER (WHERE c.counted AND c.kind = 'voluntary') AS voluntary_subscriptions,
       paddle.to_major(paddle.round_minor(coalesce(sum(c.prev_mrr_minor) FILTER (WHERE c.kind = 'voluntary'), 0)), c.currency_code)
           AS voluntary_mrr_lost,
       count(DISTINCT c.customer_id) FILTER (WHERE c.counted AND c.kind = 'failed_payment') AS failed_payment_customers,
       count(*) FILTER (WHERE c.counted AND c.kind = 'failed_payment') AS failed_payment_subscriptions,
       paddle.to_major(paddle.round_minor(coalesce(sum(c.prev_mrr_minor) FILTER (WHERE c.kind = 'failed_payment'), 0)),
                       c.currency_code) AS failed_payment_mrr_lost
FROM c
GROUP BY c.month, c.environment, c.currency_code
HAVING bool_or(c.counted) OR sum(c.prev_mrr_minor) > 0;

COMMENT ON VIEW paddle.churn_monthly IS
    'Cancellations per UTC month, environment and currency: a subscription churns at its first snapshot with status canceled that follows an active, past_due or paused one, unless it was first seen trialing and had no active snapshot yet (a trial never paid is not churn); it counts once, in the currency its MRR was in (several: the largest in major units); mrr_lost = the MRR it counted in the snapshot before, per currency (0 if it was paused); failed_payment when that snapshot was past_due, else voluntary; mrr_lost = voluntary_mrr_lost + failed_payment_mrr_lost, each rounded once (paddle.round_minor).';

-------------------------------------------------------------------------------------------------------------
-- 6. A change of currency is no churn
-------------------------------------------------------------------------------------------------------------

CREATE OR REPLACE VIEW paddle.subscription_history AS
WITH snap AS (
    SELECT s.environment, s.entity_id AS subscription_id, paddle.to_key(s.data ->> 'customer_id') AS customer_id,
           s.event_id, s.event_type, s.occurred_at, s.status,
           -- list MRR of this snapshot per currency, {"USD": 3000, ...} (exact minor units); the subscription's
           -- own currency is always a key, with 0 when no recurring item is priced in it
           CASE WHEN s.data ->> 'currency_code' IS NOT NULL
                THEN jsonb_build_object(s.data ->> 'currency_code', 0) ELSE '{}'::jsonb END
               || coalesce(m.by_currency, '{}'::jsonb) AS list_mrr
    FROM paddle.entity_snapshots s
    LEFT JOIN paddle.addresses a ON a.id = paddle.to_key(s.data ->> 'address_id') AND a.environment = s.environment
    LEFT JOIN LATERAL (
        SELECT jsonb_object_agg(i.currency_code, i.amount) AS by_currency
        FROM (SELECT mi.currency_code, sum(mi.monthly_amount) AS amount
              FROM paddle.subscription_mrr_items(s.data, a.country_code) AS mi
              WHERE mi.currency_code IS NOT NULL
              GROUP BY mi.currency_code) AS i
    ) AS m ON true
    WHERE s.entity = 'subscription'
),
ordered AS (
    SELECT sn.*,
           row_number() OVER w AS seq,
           lag(sn.status) OVER w AS prev_status,
           lag(sn.list_mrr) OVER w AS prev_list_mrr
    FROM snap sn
    WINDOW w AS (PARTITION BY sn.environment, sn.subscription_id ORDER BY sn.occurred_at, sn.event_id)
),
per_currency AS (
    -- one row per currency present in this snapshot or the previous one: a currency that disappears
    -- still gets the row that records its drop
    SELECT o.environment, o.subscription_id, o.customer_id, c.currency_code, o.seq, o.event_id, o.event_type,
           o.occurred_at, o.status, o.prev_status,
           coalesce((o.list_mrr ->> c.currency_code)::numeric, 0) AS list_mrr_minor,
           CASE WHEN o.status IN ('active', 'past_due')
                THEN coalesce((o.list_mrr ->> c.currency_code)::numeric, 0) ELSE 0 END AS mrr_minor,
           CASE WHEN o.prev_status IN ('active', 'past_due')
                THEN coalesce((o.prev_list_mrr ->> c.currency_code)::numeric, 0) ELSE 0 END AS prev_mrr_minor,
           -- MRR in another currency, now and in the previous snapshot: a subscription that moves from one
           -- currency to another goes on
           o.status IN ('active', 'past_due') AND EXISTS (
               SELECT FROM jsonb_each_text(o.list_mrr) AS x(currency_code, amount)
               WHERE x.currency_code <> c.currency_code AND x.amount::numeric > 0) AS other_mrr,
           o.prev_status IN ('active', 'past_due') AND EXISTS (
               SELECT FROM jsonb_each_text(o.prev_list_mrr) AS x(currency_code, amount)
               WHERE x.currency_code <> c.currency_code AND x.amount::numeric > 0) AS prev_other_mrr
    FROM ordered o
    CROSS JOIN LATERAL (SELECT jsonb_object_keys(o.list_mrr)
                        UNION
                        SELECT jsonb_object_keys(coalesce(o.prev_list_mrr, '{}'::jsonb))) AS c(currency_code)
),
flagged AS (
    SELECT p.*,
           coalesce(bool_or(p.mrr_minor > 0) OVER (
               PARTITION BY p.environment, p.subscription_id, p.currency_code ORDER BY p.seq
               ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), false) AS had_mrr_before
    FROM per_currency p
)
SELECT f.environment, f.subscription_id, f.customer_id, f.currency_code, f.seq, f.event_id, f.event_type,
       f.occurred_at, (date_trunc('month', f.occurred_at AT TIME ZONE 'UTC'))::date AS month,
       f.status, f.prev_status, f.list_mrr_minor, f.mrr_minor, f.prev_mrr_minor,
       f.mrr_minor - f.prev_mrr_minor AS delta_minor,
       CASE
           WHEN f.prev_mrr_minor = 0 AND f.mrr_minor > 0 THEN
               CASE WHEN f.prev_other_mrr THEN 'expansion' WHEN f.had_mrr_before THEN 'reactivated' ELSE 'new' END
           WHEN f.prev_mrr_minor > 0 AND f.mrr_minor = 0 THEN
               CASE WHEN f.other_mrr THEN 'contraction' ELSE 'churned' END
           WHEN f.prev_mrr_minor > 0 AND f.mrr_minor > f.prev_mrr_minor THEN 'expansion'
           WHEN f.prev_mrr_minor > 0 AND f.mrr_minor < f.prev_mrr_minor THEN 'contraction'
       END AS movement
FROM flagged f;

COMMENT ON VIEW paddle.subscription_history IS
    'Building block: every subscription snapshot (seq = its position in (occurred_at, event_id) order) per currency present in it or in the previous snapshot, with list_mrr_minor (recurring items, monthly, minor units, exact, at the prices of the country of the subscription''s address as it is now), mrr_minor (list_mrr_minor when status is active or past_due, else 0), the previous snapshot''s status and mrr_minor, and the movement it causes: new, expansion, contraction, churned, reactivated or NULL. MRR that moves from one currency to another while the subscription has MRR in the other (a change of the subscription''s currency) is a contraction of the one and an expansion of the other, not churn and a new subscription.';
