-- paddlehook 0008_environments: sandbox never shapes live state or live reports.
--
-- Runs once, inside the migration runner's transaction (no BEGIN/COMMIT here). PostgreSQL 15.
--
-- Paddle's sandbox and live are separate accounts, but entity ids share one namespace in these tables, and
-- sandbox secrets are shared with developers.
--
-- 1. State: a sandbox snapshot carrying a live id that live had not sent yet wrote the row, and every live
--    snapshot of that id was then skipped by the environment guard of the upserts, without an error (also in
--    paddle.reproject, which replays in occurred_at order). The guard is now paddle.snapshot_replaces: a live
--    snapshot also replaces a sandbox row of the same id (and rewrites its items); a sandbox snapshot still
--    never changes a live row. Being the upserts' own ON CONFLICT condition, it holds against a concurrent
--    sandbox insert too. State rows written under the old guard are not revisited: run paddle.reproject()
--    once after this migration if sandbox and live endpoints share the database.
-- 2. Reports: revenue_transactions and adjustment_facts took the first paid/approved time over the snapshots
--    of both environments (a sandbox transaction.paid with an early occurred_at moved a live paid_on, and so
--    revenue_daily), and dunning and refunds joined customers and transactions by id alone (another
--    environment's email or totals). Every window and join now includes the environment. paddle.entitlements
--    gets the same in 0006.
--
-- The functions and views are redefined whole (CREATE OR REPLACE, same signatures and columns): they are the
-- latest of 0001, 0003 and 0004, changed only in the guard, `environment = EXCLUDED.environment` in the SET
-- lists, the items_event_id CASE (items are rewritten when the environment changes), and the windows and
-- joins. Earlier migrations stay as they were applied.

CREATE FUNCTION paddle.snapshot_replaces(p_row_environment text, p_row_occurred_at timestamptz,
                                         p_row_event_id text, p_new_environment text,
                                         p_new_occurred_at timestamptz, p_new_event_id text)
    RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN (p_row_environment = p_new_environment
        AND (p_row_occurred_at, p_row_event_id) < (p_new_occurred_at, p_new_event_id))
    OR (p_row_environment = 'sandbox' AND p_new_environment = 'live');

COMMENT ON FUNCTION paddle.snapshot_replaces(text, timestamptz, text, text, timestamptz, text) IS
    'Whether a snapshot (p_new_*) replaces the state row (p_row_*): a newer one (occurred_at, then event_id) of the same environment, or any live one over a sandbox row. A sandbox snapshot never replaces a live row. The guard of every state upsert (ON CONFLICT DO UPDATE ... WHERE), where the row is locked and re-checked after a concurrent insert commits.';

CREATE OR REPLACE FUNCTION paddle.project_customer(p_id text, p_event_id text, p_occurred_at timestamptz, p_data jsonb,
                                  p_environment text)
    RETURNS void
    LANGUAGE plpgsql
AS $$
BEGIN
    INSERT INTO paddle.customers AS t
        (id, name, email, status, locale, marketing_consent, custom_data, import_meta,
         created_at, updated_at, occurred_at, event_id, environment)
    SELECT p_id, r.name, r.email, r.status, r.locale, paddle.to_bool(r.marketing_consent), r.custom_data,
           r.import_meta,
           paddle.to_ts(r.created_at), paddle.to_ts(r.updated_at), p_occurred_at, p_event_id, p_environment
    FROM jsonb_to_record(paddle.as_object(p_data)) AS r(
        name text, email text, status text, locale text, marketing_consent text, custom_data jsonb,
        import_meta jsonb, created_at text, updated_at text)
    ON CONFLICT (id) DO UPDATE SET
        name              = EXCLUDED.name,
        email             = EXCLUDED.email,
        status            = EXCLUDED.status,
        locale            = EXCLUDED.locale,
        marketing_consent = EXCLUDED.marketing_consent,
        custom_data       = EXCLUDED.custom_data,
        import_meta       = EXCLUDED.import_meta,
        created_at        = EXCLUDED.created_at,
        updated_at        = EXCLUDED.updated_at,
        occurred_at       = EXCLUDED.occurred_at,
        event_id          = EXCLUDED.event_id,
        environment       = EXCLUDED.environment,
        updated_in_db_at  = now()
    -- Newer wins within an environment; live takes over a sandbox row (paddle.snapshot_replaces).
    WHERE paddle.snapshot_replaces(t.environment, t.occurred_at, t.event_id,
                                   EXCLUDED.environment, EXCLUDED.occurred_at, EXCLUDED.event_id);
END
$$;

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
        transaction_id                   = EXCLUDED.transaction_id,
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

    -- Not applied (an equal or newer snapshot is stored), or applied with the items the row already
    -- holds: leave the item rows alone.
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

CREATE OR REPLACE FUNCTION paddle.project_transaction(p_id text, p_event_id text, p_occurred_at timestamptz, p_data jsonb,
                                  p_environment text)
    RETURNS void
    LANGUAGE plpgsql
AS $$
DECLARE
    v_items_digest bigint := hashtextextended(COALESCE((p_data -> 'details' -> 'line_items')::text, ''), 0)
                              # hashtextextended(COALESCE((p_data -> 'items')::text, ''), 1);
    v_items_event  text;
    v_payments   jsonb;
    v_attempts   integer;
    v_last       jsonb;
    v_line_items jsonb;
    v_items      jsonb;
BEGIN
    -- Most recent payment attempt. Paddle lists payments[] newest first; with several attempts pick the
    -- greatest created_at anyway (ties and unparsable dates: first listed). None or one is the common case.
    v_payments := paddle.as_array(p_data -> 'payments');
    v_attempts := jsonb_array_length(v_payments);
    IF v_attempts = 1 THEN
        v_last := paddle.as_object(v_payments -> 0);
    ELSIF v_attempts > 1 THEN
        SELECT paddle.as_object(e.payment) INTO v_last
        FROM jsonb_array_elements(v_payments) WITH ORDINALITY AS e(payment, n)
        ORDER BY paddle.to_ts(e.payment ->> 'created_at') DESC NULLS LAST, e.n
        LIMIT 1;
    END IF;

    INSERT INTO paddle.transactions AS t
        (id, status, origin, customer_id, address_id, business_id, subscription_id, invoice_id, invoice_number,
         discount_id, currency_code, collection_mode, billing_period_starts_at, billing_period_ends_at,
         custom_data, billing_details, checkout_url, billed_at, revised_at, created_at, updated_at,
         subtotal, discount, tax, total, credit, credit_to_balance, balance, grand_total, grand_total_tax,
         fee, earnings, totals_currency_code,
         adjusted_subtotal, adjusted_tax, adjusted_total, adjusted_grand_total, adjusted_fee, adjusted_earnings,
         payout_subtotal, payout_discount, payout_tax, payout_total, payout_credit, payout_credit_to_balance,
         payout_balance, payout_grand_total, payout_fee, payout_earnings, payout_currency_code,
         payout_exchange_rate,
         payment_attempts, last_payment_status, last_payment_error_code, last_payment_created_at,
         items_digest, items_event_id, occurred_at, event_id, environment)
    SELECT p_id, r.status, r.origin, paddle.to_key(r.customer_id), r.address_id, r.business_id,
           paddle.to_key(r.subscription_id), r.invoice_id, r.invoice_number,
           r.discount_id, r.currency_code, r.collection_mode,
           paddle.to_ts(r.billing_period ->> 'starts_at'), paddle.to_ts(r.billing_period ->> 'ends_at'),
           r.custom_data, r.billing_details, r.checkout ->> 'url', paddle.to_ts(r.billed_at),
           paddle.to_ts(r.revised_at), paddle.to_ts(r.created_at), paddle.to_ts(r.updated_at),
           -- details.totals
           paddle.to_amount(d.totals ->> 'subtotal'), paddle.to_amount(d.totals ->> 'discount'),
           paddle.to_amount(d.totals ->> 'tax'), paddle.to_amount(d.totals ->> 'total'),
           paddle.to_amount(d.totals ->> 'credit'), paddle.to_amount(d.totals ->> 'credit_to_balance'),
           paddle.to_amount(d.totals ->> 'balance'), paddle.to_amount(d.totals ->> 'grand_total'),
           paddle.to_amount(d.totals ->> 'grand_total_tax'), paddle.to_amount(d.totals ->> 'fee'),
           paddle.to_amount(d.totals ->> 'earnings'), d.totals ->> 'currency_code',
           -- details.adjusted_totals
           paddle.to_amount(d.adjusted_totals ->> 'subtotal'), paddle.to_amount(d.adjusted_totals ->> 'tax'),
           paddle.to_amount(d.adjusted_totals ->> 'total'), paddle.to_amount(d.adjusted_totals ->> 'grand_total'),
           paddle.to_amount(d.adjusted_totals ->> 'fee'), paddle.to_amount(d.adjusted_totals ->> 'earnings'),
           -- details.payout_totals
           paddle.to_amount(d.payout_totals ->> 'subtotal'), paddle.to_amount(d.payout_totals ->> 'discount'),
           paddle.to_amount(d.payout_totals ->> 'tax'), paddle.to_amount(d.payout_totals ->> 'total'),
           paddle.to_amount(d.payout_totals ->> 'credit'), paddle.to_amount(d.payout_totals ->> 'credit_to_balance'),
           paddle.to_amount(d.payout_totals ->> 'balance'), paddle.to_amount(d.payout_totals ->> 'grand_total'),
           paddle.to_amount(d.payout_totals ->> 'fee'), paddle.to_amount(d.payout_totals ->> 'earnings'),
           d.payout_totals ->> 'currency_code', paddle.to_decimal(d.payout_totals ->> 'exchange_rate'),
           -- payments[]
           v_attempts, v_last ->> 'status', v_last ->> 'error_code', paddle.to_ts(v_last ->> 'created_at'),
           v_items_digest, p_event_id, p_occurred_at, p_event_id, p_environment
    FROM jsonb_to_record(paddle.as_object(p_data)) AS r(
        status text, origin text, customer_id text, address_id text, business_id text, subscription_id text,
        invoice_id text, invoice_number text, discount_id text, currency_code text, collection_mode text,
        billing_period jsonb, custom_data jsonb, billing_details jsonb, checkout jsonb, billed_at text,
        revised_at text, created_at text, updated_at text, details jsonb)
    CROSS JOIN LATERAL jsonb_to_record(paddle.as_object(r.details)) AS d(
        totals jsonb, adjusted_totals jsonb, payout_totals jsonb)
    ON CONFLICT (id) DO UPDATE SET
        status                   = EXCLUDED.status,
        origin                   = EXCLUDED.origin,
        customer_id              = EXCLUDED.customer_id,
        address_id               = EXCLUDED.address_id,
        business_id              = EXCLUDED.business_id,
        subscription_id          = EXCLUDED.subscription_id,
        invoice_id               = EXCLUDED.invoice_id,
        invoice_number           = EXCLUDED.invoice_number,
        discount_id              = EXCLUDED.discount_id,
        currency_code            = EXCLUDED.currency_code,
        collection_mode          = EXCLUDED.collection_mode,
        billing_period_starts_at = EXCLUDED.billing_period_starts_at,
        billing_period_ends_at   = EXCLUDED.billing_period_ends_at,
        custom_data              = EXCLUDED.custom_data,
        billing_details          = EXCLUDED.billing_details,
        checkout_url             = EXCLUDED.checkout_url,
        billed_at                = EXCLUDED.billed_at,
        revised_at               = EXCLUDED.revised_at,
        created_at               = EXCLUDED.created_at,
        updated_at               = EXCLUDED.updated_at,
        subtotal                 = EXCLUDED.subtotal,
        discount                 = EXCLUDED.discount,
        tax                      = EXCLUDED.tax,
        total                    = EXCLUDED.total,
        credit                   = EXCLUDED.credit,
        credit_to_balance        = EXCLUDED.credit_to_balance,
        balance                  = EXCLUDED.balance,
        grand_total              = EXCLUDED.grand_total,
        grand_total_tax          = EXCLUDED.grand_total_tax,
        fee                      = EXCLUDED.fee,
        earnings                 = EXCLUDED.earnings,
        totals_currency_code     = EXCLUDED.totals_currency_code,
        adjusted_subtotal        = EXCLUDED.adjusted_subtotal,
        adjusted_tax             = EXCLUDED.adjusted_tax,
        adjusted_total           = EXCLUDED.adjusted_total,
        adjusted_grand_total     = EXCLUDED.adjusted_grand_total,
        adjusted_fee             = EXCLUDED.adjusted_fee,
        adjusted_earnings        = EXCLUDED.adjusted_earnings,
        payout_subtotal          = EXCLUDED.payout_subtotal,
        payout_discount          = EXCLUDED.payout_discount,
        payout_tax               = EXCLUDED.payout_tax,
        payout_total             = EXCLUDED.payout_total,
        payout_credit            = EXCLUDED.payout_credit,
        payout_credit_to_balance = EXCLUDED.payout_credit_to_balance,
        payout_balance           = EXCLUDED.payout_balance,
        payout_grand_total       = EXCLUDED.payout_grand_total,
        payout_fee               = EXCLUDED.payout_fee,
        payout_earnings          = EXCLUDED.payout_earnings,
        payout_currency_code     = EXCLUDED.payout_currency_code,
        payout_exchange_rate     = EXCLUDED.payout_exchange_rate,
        payment_attempts         = EXCLUDED.payment_attempts,
        last_payment_status      = EXCLUDED.last_payment_status,
        last_payment_error_code  = EXCLUDED.last_payment_error_code,
        last_payment_created_at  = EXCLUDED.last_payment_created_at,
        items_digest             = EXCLUDED.items_digest,
        items_event_id           = CASE WHEN t.items_digest = EXCLUDED.items_digest
                                                AND t.environment = EXCLUDED.environment
                                          THEN t.items_event_id ELSE EXCLUDED.items_event_id END,
        occurred_at              = EXCLUDED.occurred_at,
        event_id                 = EXCLUDED.event_id,
        environment              = EXCLUDED.environment,
        updated_in_db_at         = now()
    -- Newer wins within an environment; live takes over a sandbox row (paddle.snapshot_replaces).
    WHERE paddle.snapshot_replaces(t.environment, t.occurred_at, t.event_id,
                                   EXCLUDED.environment, EXCLUDED.occurred_at, EXCLUDED.event_id)
    RETURNING items_event_id INTO v_items_event;

    -- Not applied (an equal or newer snapshot is stored), or applied with the items the row already
    -- holds: leave the item rows alone.
    IF v_items_event IS DISTINCT FROM p_event_id THEN
        RETURN;
    END IF;

    DELETE FROM paddle.transaction_items WHERE transaction_id = p_id;

    v_line_items := paddle.as_array(p_data -> 'details' -> 'line_items');
    v_items      := paddle.as_array(p_data -> 'items');

    IF jsonb_array_length(v_line_items) > 0 THEN
        -- details.line_items carry the per-line totals; items[] (same prices) carry the catalog unit price.
        INSERT INTO paddle.transaction_items
            (transaction_id, position, id, price_id, product_id, quantity, tax_rate,
             unit_price_amount, unit_price_currency_code, subtotal, discount, tax, total,
             unit_subtotal, unit_discount, unit_tax, unit_total, proration, occurred_at, event_id)
        SELECT p_id, li.n::integer, l.id, l.price_id, COALESCE(l.product ->> 'id', ip.price ->> 'product_id'),
               paddle.to_int(l.quantity), paddle.to_decimal(l.tax_rate),
               paddle.to_amount(ip.price -> 'unit_price' ->> 'amount'), ip.price -> 'unit_price' ->> 'currency_code',
               paddle.to_amount(l.totals ->> 'subtotal'), paddle.to_amount(l.totals ->> 'discount'),
               paddle.to_amount(l.totals ->> 'tax'), paddle.to_amount(l.totals ->> 'total'),
               paddle.to_amount(l.unit_totals ->> 'subtotal'), paddle.to_amount(l.unit_totals ->> 'discount'),
               paddle.to_amount(l.unit_totals ->> 'tax'), paddle.to_amount(l.unit_totals ->> 'total'),
               l.proration, p_occurred_at, p_event_id
        FROM jsonb_array_elements(v_line_items) WITH ORDINALITY AS li(line_item, n)
        CROSS JOIN LATERAL jsonb_to_record(paddle.as_object(li.line_item)) AS l(
            id text, price_id text, quantity text, tax_rate text, totals jsonb, unit_totals jsonb,
            product jsonb, proration jsonb)
        -- the price of the first items[] entry with the same price id (items[].price.id, or items[].price_id)
        CROSS JOIN LATERAL (
            SELECT CASE WHEN l.price_id IS NOT NULL THEN
                       jsonb_path_query_first(v_items, '$[*] ? (@.price.id == $id || @.price_id == $id).price',
                                              jsonb_build_object('id', l.price_id), true)
                   END AS price
        ) AS ip;
    ELSE
        -- No line items in this snapshot: keep what items[] says (no per-line totals).
        INSERT INTO paddle.transaction_items
            (transaction_id, position, price_id, product_id, quantity, unit_price_amount, unit_price_currency_code,
             proration, occurred_at, event_id)
        SELECT p_id, it.n::integer, COALESCE(i.price ->> 'id', i.price_id), i.price ->> 'product_id',
               paddle.to_int(i.quantity), paddle.to_amount(i.price -> 'unit_price' ->> 'amount'),
               i.price -> 'unit_price' ->> 'currency_code', i.proration, p_occurred_at, p_event_id
        FROM jsonb_array_elements(v_items) WITH ORDINALITY AS it(item, n)
        CROSS JOIN LATERAL jsonb_to_record(paddle.as_object(it.item)) AS i(
            price jsonb, price_id text, quantity text, proration jsonb);
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION paddle.project_adjustment(p_id text, p_event_id text, p_occurred_at timestamptz, p_data jsonb,
                                  p_environment text)
    RETURNS void
    LANGUAGE plpgsql
AS $$
DECLARE
    v_items_digest bigint := hashtextextended(COALESCE((p_data -> 'items')::text, ''), 0);
    v_items_event  text;
    v_items jsonb;
BEGIN
    INSERT INTO paddle.adjustments AS t
        (id, action, type, status, reason, transaction_id, subscription_id, customer_id, currency_code,
         credit_applied_to_balance, subtotal, tax, total, fee, earnings, retained_fee, totals_currency_code,
         payout_subtotal, payout_tax, payout_total, payout_fee, payout_earnings, payout_retained_fee,
         payout_chargeback_fee, payout_currency_code, created_at, updated_at, items_digest, items_event_id,
         occurred_at, event_id, environment)
    SELECT p_id, r.action, r.type, r.status, r.reason, paddle.to_key(r.transaction_id), r.subscription_id,
           r.customer_id, r.currency_code, paddle.to_bool(r.credit_applied_to_balance),
           -- totals
           paddle.to_amount(r.totals ->> 'subtotal'), paddle.to_amount(r.totals ->> 'tax'),
           paddle.to_amount(r.totals ->> 'total'), paddle.to_amount(r.totals ->> 'fee'),
           paddle.to_amount(r.totals ->> 'earnings'), paddle.to_amount(r.totals ->> 'retained_fee'),
           r.totals ->> 'currency_code',
           -- payout_totals
           paddle.to_amount(r.payout_totals ->> 'subtotal'), paddle.to_amount(r.payout_totals ->> 'tax'),
           paddle.to_amount(r.payout_totals ->> 'total'), paddle.to_amount(r.payout_totals ->> 'fee'),
           paddle.to_amount(r.payout_totals ->> 'earnings'), paddle.to_amount(r.payout_totals ->> 'retained_fee'),
           paddle.to_amount(r.payout_totals -> 'chargeback_fee' ->> 'amount'), r.payout_totals ->> 'currency_code',
           paddle.to_ts(r.created_at), paddle.to_ts(r.updated_at),
           v_items_digest, p_event_id, p_occurred_at, p_event_id, p_environment
    FROM jsonb_to_record(paddle.as_object(p_data)) AS r(
        action text, type text, status text, reason text, transaction_id text, subscription_id text,
        customer_id text, currency_code text, credit_applied_to_balance text, totals jsonb,
        payout_totals jsonb, created_at text, updated_at text)
    ON CONFLICT (id) DO UPDATE SET
        action                    = EXCLUDED.action,
        type                      = EXCLUDED.type,
        status                    = EXCLUDED.status,
        reason                    = EXCLUDED.reason,
        transaction_id            = EXCLUDED.transaction_id,
        subscription_id           = EXCLUDED.subscription_id,
        customer_id               = EXCLUDED.customer_id,
        currency_code             = EXCLUDED.currency_code,
        credit_applied_to_balance = EXCLUDED.credit_applied_to_balance,
        subtotal                  = EXCLUDED.subtotal,
        tax                       = EXCLUDED.tax,
        total                     = EXCLUDED.total,
        fee                       = EXCLUDED.fee,
        earnings                  = EXCLUDED.earnings,
        retained_fee              = EXCLUDED.retained_fee,
        totals_currency_code      = EXCLUDED.totals_currency_code,
        payout_subtotal           = EXCLUDED.payout_subtotal,
        payout_tax                = EXCLUDED.payout_tax,
        payout_total              = EXCLUDED.payout_total,
        payout_fee                = EXCLUDED.payout_fee,
        payout_earnings           = EXCLUDED.payout_earnings,
        payout_retained_fee       = EXCLUDED.payout_retained_fee,
        payout_chargeback_fee     = EXCLUDED.payout_chargeback_fee,
        payout_currency_code      = EXCLUDED.payout_currency_code,
        created_at                = EXCLUDED.created_at,
        updated_at                = EXCLUDED.updated_at,
        items_digest              = EXCLUDED.items_digest,
        items_event_id            = CASE WHEN t.items_digest = EXCLUDED.items_digest
                                                 AND t.environment = EXCLUDED.environment
                                           THEN t.items_event_id ELSE EXCLUDED.items_event_id END,
        occurred_at               = EXCLUDED.occurred_at,
        event_id                  = EXCLUDED.event_id,
        environment               = EXCLUDED.environment,
        updated_in_db_at          = now()
    -- Newer wins within an environment; live takes over a sandbox row (paddle.snapshot_replaces).
    WHERE paddle.snapshot_replaces(t.environment, t.occurred_at, t.event_id,
                                   EXCLUDED.environment, EXCLUDED.occurred_at, EXCLUDED.event_id)
    RETURNING items_event_id INTO v_items_event;

    -- Not applied (an equal or newer snapshot is stored), or applied with the items the row already
    -- holds: leave the item rows alone.
    IF v_items_event IS DISTINCT FROM p_event_id THEN
        RETURN;
    END IF;

    DELETE FROM paddle.adjustment_items WHERE adjustment_id = p_id;

    v_items := p_data -> 'items';

    INSERT INTO paddle.adjustment_items
        (adjustment_id, position, id, item_id, type, amount, subtotal, tax, total, proration, occurred_at, event_id)
    SELECT p_id, e.n::integer, i.id, i.item_id, i.type, paddle.to_amount(i.amount),
           paddle.to_amount(i.totals ->> 'subtotal'), paddle.to_amount(i.totals ->> 'tax'),
           paddle.to_amount(i.totals ->> 'total'),
           i.proration, p_occurred_at, p_event_id
    FROM jsonb_array_elements(paddle.as_array(v_items)) WITH ORDINALITY AS e(item, n)
    CROSS JOIN LATERAL jsonb_to_record(paddle.as_object(e.item)) AS i(
        id text, item_id text, type text, amount text, totals jsonb, proration jsonb);
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
