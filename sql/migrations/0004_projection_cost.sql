-- paddlehook 0004_projection_cost: the same projection for less database time per event.
--
-- Runs once, inside the migration runner's transaction (no BEGIN/COMMIT here). PostgreSQL 15.
-- Measured with callgrind on one backend (docs/performance.md, "Changes and their effect").
--
-- 1. Item rows are left alone when a snapshot's items did not change. Most notifications of an entity repeat
--    the items of the previous one (transaction.created -> ready -> paid -> completed, subscription status
--    changes); deleting and re-inserting them was the largest part of an update's projection.
--
--      items_digest    hashtextextended() (64 bits) of the text form of the items JSON of the snapshot the row
--                      holds: data.items, and for transactions data.details.line_items with another seed. The
--                      jsonb text form is canonical for key order and whitespace and keeps number spelling
--                      (1 vs 1.0), so equal digests mean item rows built the same way. Change detection of
--                      data Paddle signed, not a security boundary; a chance collision is 2^-64.
--      items_event_id  event_id of the snapshot that wrote the item rows (their event_id/occurred_at columns
--                      say the same): the parent's, or an earlier one with the same items.
--
--    The upsert computes items_event_id from the stored row it has locked (ON CONFLICT DO UPDATE), so a
--    concurrent snapshot of the same entity cannot make it skip a rewrite, and returns it: equal to this
--    event means "write the items". Rows written before this migration have NULL digests: their next snapshot
--    rewrites the items. A migration that changes how item rows are built must set items_digest to NULL (or
--    run paddle.reproject) so that existing rows are rebuilt. With deliveries out of order, items_event_id is
--    the first applied of several snapshots with the same items, so paddle.reproject (occurred_at order) may
--    name another one; the item rows are the same.
--
-- 2. paddle.to_ts checks the one layout Paddle sends (2024-04-12T10:18:47.635628Z) without a regular expression;
--    every other input takes the unchanged general path.
--
-- The functions are redefined whole (CREATE OR REPLACE): they are 0001's, changed where items_digest,
-- items_event_id and v_items_event appear and in to_ts's first IF. 0001 stays as it was applied.

ALTER TABLE paddle.subscriptions ADD COLUMN items_digest bigint, ADD COLUMN items_event_id text;
ALTER TABLE paddle.transactions  ADD COLUMN items_digest bigint, ADD COLUMN items_event_id text;
ALTER TABLE paddle.adjustments   ADD COLUMN items_digest bigint, ADD COLUMN items_event_id text;

COMMENT ON COLUMN paddle.subscriptions.items_digest IS 'hashtextextended(data.items::text, 0) of the snapshot this row holds; item rows are rewritten only when it changes. NULL: unknown (rewrite).';
COMMENT ON COLUMN paddle.subscriptions.items_event_id IS 'event_id of the snapshot that wrote the subscription_items rows: this row''s, or an earlier one with the same items.';
COMMENT ON COLUMN paddle.transactions.items_digest IS 'hashtextextended() of data.details.line_items::text (seed 0) XOR data.items::text (seed 1) of the snapshot this row holds; item rows are rewritten only when it changes. NULL: unknown (rewrite).';
COMMENT ON COLUMN paddle.transactions.items_event_id IS 'event_id of the snapshot that wrote the transaction_items rows: this row''s, or an earlier one with the same items.';
COMMENT ON COLUMN paddle.adjustments.items_digest IS 'hashtextextended(data.items::text, 0) of the snapshot this row holds; item rows are rewritten only when it changes. NULL: unknown (rewrite).';
COMMENT ON COLUMN paddle.adjustments.items_event_id IS 'event_id of the snapshot that wrote the adjustment_items rows: this row''s, or an earlier one with the same items.';
COMMENT ON COLUMN paddle.subscription_items.occurred_at IS 'occurred_at of the snapshot that wrote this row (subscriptions.items_event_id).';
COMMENT ON COLUMN paddle.subscription_items.event_id IS 'event_id of the snapshot that wrote this row (subscriptions.items_event_id).';
COMMENT ON COLUMN paddle.transaction_items.occurred_at IS 'occurred_at of the snapshot that wrote this row (transactions.items_event_id).';
COMMENT ON COLUMN paddle.transaction_items.event_id IS 'event_id of the snapshot that wrote this row (transactions.items_event_id).';
COMMENT ON COLUMN paddle.adjustment_items.occurred_at IS 'occurred_at of the snapshot that wrote this row (adjustments.items_event_id).';
COMMENT ON COLUMN paddle.adjustment_items.event_id IS 'event_id of the snapshot that wrote this row (adjustments.items_event_id).';

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
                                                  THEN t.items_event_id ELSE EXCLUDED.items_event_id END,
        occurred_at                      = EXCLUDED.occurred_at,
        event_id                         = EXCLUDED.event_id,
        updated_in_db_at                 = now()
    -- A snapshot from the other environment never touches this row (see environment).
    WHERE t.environment = EXCLUDED.environment
      AND (t.occurred_at, t.event_id) < (EXCLUDED.occurred_at, EXCLUDED.event_id)
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
                                          THEN t.items_event_id ELSE EXCLUDED.items_event_id END,
        occurred_at              = EXCLUDED.occurred_at,
        event_id                 = EXCLUDED.event_id,
        updated_in_db_at         = now()
    -- A snapshot from the other environment never touches this row (see environment).
    WHERE t.environment = EXCLUDED.environment
      AND (t.occurred_at, t.event_id) < (EXCLUDED.occurred_at, EXCLUDED.event_id)
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
                                           THEN t.items_event_id ELSE EXCLUDED.items_event_id END,
        occurred_at               = EXCLUDED.occurred_at,
        event_id                  = EXCLUDED.event_id,
        updated_in_db_at          = now()
    -- A snapshot from the other environment never touches this row (see environment).
    WHERE t.environment = EXCLUDED.environment
      AND (t.occurred_at, t.event_id) < (EXCLUDED.occurred_at, EXCLUDED.event_id)
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

COMMENT ON FUNCTION paddle.project_subscription(text, text, timestamptz, jsonb, text) IS
    'Upsert a subscription snapshot and, if it was applied and its data.items differ from those its item rows were built from, replace its subscription_items (called by paddle.project_event).';
COMMENT ON FUNCTION paddle.project_transaction(text, text, timestamptz, jsonb, text) IS
    'Upsert a transaction snapshot and, if it was applied and its details.line_items or items differ from those its item rows were built from, replace its transaction_items (called by paddle.project_event).';
COMMENT ON FUNCTION paddle.project_adjustment(text, text, timestamptz, jsonb, text) IS
    'Upsert an adjustment snapshot and, if it was applied and its data.items differ from those its item rows were built from, replace its adjustment_items (called by paddle.project_event).';

-- As in 0001, plus the fast path for the layout Paddle sends.
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
    RETURN p::timestamptz;
END
$$;
