-- paddlehook 0001_core: event log + typed state tables for Paddle Billing webhooks.
--
-- Runs once, inside the migration runner's transaction (no BEGIN/COMMIT here).
-- PostgreSQL 15, plain SQL + PL/pgSQL, no extensions.
--
-- Overview
--   paddle.payment_events    one row per distinct Paddle event_id (the full notification, verbatim jsonb)
--   paddle.customers         latest customer snapshot per ctm_ id
--   paddle.subscriptions     latest subscription snapshot per sub_ id   (+ paddle.subscription_items)
--   paddle.transactions      latest transaction snapshot per txn_ id    (+ paddle.transaction_items)
--   paddle.adjustments       latest adjustment snapshot per adj_ id     (+ paddle.adjustment_items)
--
--   paddle.ingest_event(...)  the one call the worker makes per delivery (store + project, one round trip)
--   paddle.project_event(...) snapshot -> state tables; never raises for odd data
--   paddle.reproject_event(event_id) re-run the projection of a stored event (e.g. after projection_error)
--
-- Conventions
--   * State tables are keyed by Paddle's id in a column named "id"; other columns are named after Paddle's
--     field names (nested objects flattened with "_": billing_cycle.interval -> billing_cycle_interval).
--   * Money: Paddle sends strings of integers in the currency's minor unit ("3000" = 30.00 USD, JPY has no
--     minor unit). Stored as numeric holding that exact integer, never float. Rates ("0.08875") are numeric.
--     Totals: transactions' details.totals.* and adjustments' totals.* are plain columns (subtotal, tax, total,
--     ...); details.adjusted_totals.* -> adjusted_*; payout_totals.* -> payout_*.
--   * Every state row records the snapshot it holds: occurred_at + event_id of the notification, and
--     updated_in_db_at = when paddlehook last wrote the row (database time, unlike Paddle's updated_at).
--     An upsert only applies when (occurred_at, event_id) is strictly greater than the stored pair, so
--     late/out-of-order/replayed deliveries never overwrite newer state. Item rows are replaced only when
--     their parent row was written by the same snapshot.
--   * No foreign keys between state tables: deliveries arrive out of order.
--   * Values that do not parse (amount "abc", timestamp "nope", ...) become NULL; they never raise.

CREATE SCHEMA IF NOT EXISTS paddle;

COMMENT ON SCHEMA paddle IS 'paddlehook: Paddle Billing webhook events (payment_events) and the latest entity snapshots projected from them.';

-------------------------------------------------------------------------------------------------------------
-- Helpers: total (never-raising) converters from the text Paddle sends. Any input gives a value or NULL.
--
-- Cost notes (this is the hot path; a transaction snapshot has ~40 amounts and ~10 timestamps):
--  * A LANGUAGE sql function with a single expression is inlined by the planner, but every call site then
--    carries its own copy of the expression, which the executor re-initialises on every execution; that is
--    cheap for tiny bodies (to_bool, to_key, as_object, as_array) and expensive for big ones.
--    Inlining also requires that a STRICT function has a strict body, so these CASE-based ones are not
--    declared STRICT although they return NULL for NULL input.
--  * PL/pgSQL bodies are compiled once per session and their expressions once per transaction, shared by all
--    call sites: cheaper for the bigger checks (to_amount, to_int, to_decimal, to_ts).
--  * Regular expressions cost microseconds per match; only to_ts uses one (to_amount, to_int and
--    to_decimal strip the digits with rtrim instead).
-------------------------------------------------------------------------------------------------------------

CREATE FUNCTION paddle.to_amount(p text) RETURNS numeric
    LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
AS $$
DECLARE
    r text := rtrim(p, '0123456789');   -- what is left after stripping the trailing digits
BEGIN
    IF r = '' THEN
        IF length(p) BETWEEN 1 AND 30 THEN
            RETURN p::numeric;
        END IF;
    ELSIF r = '-' AND length(p) BETWEEN 2 AND 31 THEN
        RETURN p::numeric;
    END IF;
    RETURN NULL;
END
$$;

COMMENT ON FUNCTION paddle.to_amount(text) IS
    'Paddle money amount (string of an integer in the minor unit, e.g. ''3000'') -> exact numeric; NULL unless it matches ^-?[0-9]{1,30}$. Never raises.';

CREATE FUNCTION paddle.to_int(p text) RETURNS integer
    LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
AS $$
DECLARE
    r text := rtrim(p, '0123456789');
BEGIN
    IF r = '' THEN
        IF length(p) BETWEEN 1 AND 9 THEN
            RETURN p::integer;
        END IF;
    ELSIF r = '-' AND length(p) BETWEEN 2 AND 10 THEN
        RETURN p::integer;
    END IF;
    RETURN NULL;
END
$$;

COMMENT ON FUNCTION paddle.to_int(text) IS
    'Integer (quantity, frequency) -> integer; NULL unless it matches ^-?[0-9]{1,9}$. Never raises.';

CREATE FUNCTION paddle.to_decimal(p text) RETURNS numeric
    LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
AS $$
DECLARE
    i text := split_part(p, '.', 1);           -- integer part (up to the first dot)
    f text := substr(p, length(i) + 2);        -- fraction (after the first dot), '' if none
BEGIN
    IF paddle.to_amount(i) IS NULL THEN
        RETURN NULL;
    END IF;
    IF f = '' THEN
        IF length(p) = length(i) THEN         -- no dot at all
            RETURN p::numeric;
        END IF;
        RETURN NULL;                           -- '5.'
    END IF;
    IF length(f) <= 30 AND rtrim(f, '0123456789') = '' THEN
        RETURN p::numeric;
    END IF;
    RETURN NULL;
END
$$;

COMMENT ON FUNCTION paddle.to_decimal(text) IS
    'Decimal string such as a tax or exchange rate (''0.08875'') -> numeric; NULL unless it matches ^-?[0-9]{1,30}(\.[0-9]{1,30})?$. Never raises.';

-- RFC 3339 timestamp -> timestamptz. One regex checks the shape and the field ranges (month 01-12, day 01-31,
-- hour 00-23, minute/second 00-59, 0-9 fractional digits, Z/z or +hh:mm/-hh:mm with hh <= 15, which is
-- PostgreSQL's limit); then year 0000 and days past the end of the month (Feb 30, Apr 31, Feb 29 outside leap
-- years) are rejected, so the final cast cannot fail. The cast is exact and independent of the session:
-- the offset is always explicit (TimeZone is not used) and the ISO layout is not affected by DateStyle,
-- hence IMMUTABLE. Fractions beyond microseconds are rounded (PostgreSQL keeps microseconds).
CREATE FUNCTION paddle.to_ts(p text) RETURNS timestamptz
    LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
AS $$
DECLARE
    y integer;
    d integer;
BEGIN
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

COMMENT ON FUNCTION paddle.to_ts(text) IS
    'RFC 3339 timestamp (0-9 fractional digits, Z or +hh:mm offset) -> timestamptz, rounded to microseconds; NULL for anything else, including impossible dates. Never raises.';

CREATE FUNCTION paddle.to_bool(p text) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT CASE p WHEN 'true' THEN true WHEN 'false' THEN false END $$;

COMMENT ON FUNCTION paddle.to_bool(text) IS
    'JSON boolean as text (''true''/''false'') -> boolean; anything else NULL. Never raises.';

CREATE FUNCTION paddle.to_key(p text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT CASE WHEN length(p) BETWEEN 1 AND 255 THEN p END $$;

COMMENT ON FUNCTION paddle.to_key(text) IS
    'Paddle id used as a key or in an index: NULL when empty or longer than 255 characters (such a value could not be indexed). Never raises.';

CREATE FUNCTION paddle.as_object(j jsonb) RETURNS jsonb
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT CASE WHEN jsonb_typeof(j) = 'object' THEN j END $$;

COMMENT ON FUNCTION paddle.as_object(jsonb) IS
    'j if it is a JSON object, else NULL (safe argument for jsonb_to_record, which raises on non-objects).';

CREATE FUNCTION paddle.as_array(j jsonb) RETURNS jsonb
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT CASE WHEN jsonb_typeof(j) = 'array' THEN j END $$;

COMMENT ON FUNCTION paddle.as_array(jsonb) IS
    'j if it is a JSON array, else NULL (safe argument for jsonb_array_elements, which raises on non-arrays).';

-------------------------------------------------------------------------------------------------------------
-- Event log
-------------------------------------------------------------------------------------------------------------

CREATE TABLE paddle.payment_events (
    event_id         text        PRIMARY KEY,
    endpoint_id      text        NOT NULL,
    environment      text        NOT NULL CHECK (environment IN ('sandbox', 'live')),
    notification_id  text,
    event_type       text        NOT NULL,
    occurred_at      timestamptz NOT NULL,
    received_at      timestamptz NOT NULL DEFAULT now(),
    payload          jsonb       NOT NULL,
    projection_error text
);

-- Payloads are 0.5-15 kB; above ~2 kB PostgreSQL compresses them on insert. lz4 does that several times faster
-- than the default pglz (measurable on the hot path); use it when the server is built with lz4 (the Debian,
-- Ubuntu and PGDG packages are), otherwise keep the default.
DO $$
BEGIN
    ALTER TABLE paddle.payment_events ALTER COLUMN payload SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
    RAISE NOTICE 'lz4 not available, payment_events.payload keeps the default compression';
END
$$;

-- Per-type time ranges ("transaction.payment_failed last week"). No index on occurred_at alone: reports
-- are per type, and every index costs on the hot insert path; add one later if cross-type scans matter.
CREATE INDEX payment_events_event_type_occurred_at_idx ON paddle.payment_events (event_type, occurred_at);

-- Events whose projection failed (monitoring / re-projection). Partial: normal inserts add no entry.
CREATE INDEX payment_events_projection_error_idx ON paddle.payment_events (received_at)
    WHERE projection_error IS NOT NULL;

COMMENT ON TABLE paddle.payment_events IS
    'Every Paddle notification received, one row per distinct event_id (retries, replays and deliveries to other destinations of the same event are not stored again). Written by paddle.ingest_event.';
COMMENT ON COLUMN paddle.payment_events.event_id IS 'Paddle event id (evt_...); the same for retries and replays of one event.';
COMMENT ON COLUMN paddle.payment_events.endpoint_id IS 'paddlehook endpoint (notification destination configuration) that received the first stored delivery of this event.';
COMMENT ON COLUMN paddle.payment_events.environment IS 'Paddle environment of that endpoint: sandbox or live.';
COMMENT ON COLUMN paddle.payment_events.notification_id IS 'Paddle notification id (ntf_...) of the first stored delivery; differs per destination and per replay, so later deliveries of the same event are not recorded.';
COMMENT ON COLUMN paddle.payment_events.event_type IS 'Paddle event type, e.g. transaction.completed. Unknown types are stored too (only projection is type-specific).';
COMMENT ON COLUMN paddle.payment_events.occurred_at IS 'Envelope occurred_at: when the event happened at Paddle (orders snapshots of one entity).';
COMMENT ON COLUMN paddle.payment_events.received_at IS 'When paddlehook stored the event (transaction time of the insert).';
COMMENT ON COLUMN paddle.payment_events.payload IS 'The whole notification as received (event_id, event_type, occurred_at, notification_id, data). Note: jsonb normalises key order and whitespace; signatures were checked on the raw bytes before storing.';
COMMENT ON COLUMN paddle.payment_events.projection_error IS 'NULL when projecting into the state tables succeeded or was not applicable; otherwise "SQLSTATE: message" of the error (the event is kept, no partial projection rows remain; retry with paddle.reproject_event).';

-------------------------------------------------------------------------------------------------------------
-- State tables (latest snapshot per Paddle id)
-------------------------------------------------------------------------------------------------------------

CREATE TABLE paddle.customers (
    id                text        PRIMARY KEY,
    name              text,
    email             text,
    status            text,
    locale            text,
    marketing_consent boolean,
    custom_data       jsonb,
    import_meta       jsonb,
    created_at        timestamptz,
    updated_at        timestamptz,
    occurred_at       timestamptz NOT NULL,
    environment       text        NOT NULL CHECK (environment IN ('sandbox', 'live')),
    event_id          text        NOT NULL,
    updated_in_db_at  timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE paddle.customers IS 'Latest known snapshot of each Paddle customer (ctm_...), from customer.* events.';
COMMENT ON COLUMN paddle.customers.import_meta IS 'Paddle import_meta (external_id, imported_from) for customers imported from another billing platform.';
COMMENT ON COLUMN paddle.customers.created_at IS 'Paddle created_at of the customer.';
COMMENT ON COLUMN paddle.customers.updated_at IS 'Paddle updated_at of the customer.';
COMMENT ON COLUMN paddle.customers.environment IS 'sandbox or live: environment of the endpoint that delivered the snapshot. A snapshot from the other environment never changes this row (a sandbox secret cannot alter live state).';
COMMENT ON COLUMN paddle.customers.occurred_at IS 'occurred_at of the event whose snapshot this row holds; older snapshots never overwrite it.';
COMMENT ON COLUMN paddle.customers.event_id IS 'event_id (paddle.payment_events) of the snapshot this row holds; breaks occurred_at ties.';
COMMENT ON COLUMN paddle.customers.updated_in_db_at IS 'When paddlehook last wrote this row (not a Paddle time).';

CREATE TABLE paddle.subscriptions (
    id                               text        PRIMARY KEY,
    status                           text,
    customer_id                      text,
    address_id                       text,
    business_id                      text,
    currency_code                    text,
    collection_mode                  text,
    billing_cycle_interval           text,
    billing_cycle_frequency          integer,
    current_billing_period_starts_at timestamptz,
    current_billing_period_ends_at   timestamptz,
    next_billed_at                   timestamptz,
    started_at                       timestamptz,
    first_billed_at                  timestamptz,
    paused_at                        timestamptz,
    canceled_at                      timestamptz,
    scheduled_change_action          text,
    scheduled_change_effective_at    timestamptz,
    scheduled_change_resume_at       timestamptz,
    discount_id                      text,
    discount                         jsonb,
    custom_data                      jsonb,
    import_meta                      jsonb,
    billing_details                  jsonb,
    transaction_id                   text,
    created_at                       timestamptz,
    updated_at                       timestamptz,
    occurred_at                      timestamptz NOT NULL,
    environment                      text        NOT NULL CHECK (environment IN ('sandbox', 'live')),
    event_id                         text        NOT NULL,
    updated_in_db_at                 timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX subscriptions_customer_id_idx ON paddle.subscriptions (customer_id);

COMMENT ON TABLE paddle.subscriptions IS 'Latest known snapshot of each Paddle subscription (sub_...), from subscription.* events. Items are in paddle.subscription_items.';
COMMENT ON COLUMN paddle.subscriptions.status IS 'active, canceled, past_due, paused or trialing.';
COMMENT ON COLUMN paddle.subscriptions.billing_cycle_interval IS 'billing_cycle.interval: day, week, month or year.';
COMMENT ON COLUMN paddle.subscriptions.billing_cycle_frequency IS 'billing_cycle.frequency: number of intervals per billing cycle.';
COMMENT ON COLUMN paddle.subscriptions.current_billing_period_starts_at IS 'current_billing_period.starts_at (NULL when there is no current period, e.g. canceled or paused).';
COMMENT ON COLUMN paddle.subscriptions.current_billing_period_ends_at IS 'current_billing_period.ends_at.';
COMMENT ON COLUMN paddle.subscriptions.scheduled_change_action IS 'scheduled_change.action: cancel, pause or resume; NULL when no change is scheduled.';
COMMENT ON COLUMN paddle.subscriptions.scheduled_change_effective_at IS 'scheduled_change.effective_at.';
COMMENT ON COLUMN paddle.subscriptions.scheduled_change_resume_at IS 'scheduled_change.resume_at (for a scheduled pause).';
COMMENT ON COLUMN paddle.subscriptions.discount_id IS 'discount.id (dsc_...) of the discount applied, if any.';
COMMENT ON COLUMN paddle.subscriptions.discount IS 'The discount object as sent (id, starts_at, ends_at).';
COMMENT ON COLUMN paddle.subscriptions.billing_details IS 'billing_details as sent (manually-collected subscriptions: payment_terms, purchase_order_number, ...).';
COMMENT ON COLUMN paddle.subscriptions.transaction_id IS 'transaction_id of the snapshot: the transaction that created the subscription. Paddle sends it in subscription.created only, so it is NULL once a later snapshot is stored (kept a pure snapshot so the final state does not depend on delivery order); the creating transaction is also findable as paddle.transactions.subscription_id = id, or in payment_events.';
COMMENT ON COLUMN paddle.subscriptions.created_at IS 'Paddle created_at of the subscription.';
COMMENT ON COLUMN paddle.subscriptions.updated_at IS 'Paddle updated_at of the subscription.';
COMMENT ON COLUMN paddle.subscriptions.environment IS 'sandbox or live: environment of the endpoint that delivered the snapshot. A snapshot from the other environment never changes this row (a sandbox secret cannot alter live state).';
COMMENT ON COLUMN paddle.subscriptions.occurred_at IS 'occurred_at of the event whose snapshot this row holds; older snapshots never overwrite it.';
COMMENT ON COLUMN paddle.subscriptions.event_id IS 'event_id (paddle.payment_events) of the snapshot this row holds; breaks occurred_at ties.';
COMMENT ON COLUMN paddle.subscriptions.updated_in_db_at IS 'When paddlehook last wrote this row (not a Paddle time).';

CREATE TABLE paddle.subscription_items (
    subscription_id          text        NOT NULL,
    price_id                 text        NOT NULL,
    product_id               text,
    quantity                 integer,
    status                   text,
    recurring                boolean,
    unit_price_amount        numeric,
    unit_price_currency_code text,
    billing_cycle_interval   text,
    billing_cycle_frequency  integer,
    trial_period_interval    text,
    trial_period_frequency   integer,
    next_billed_at           timestamptz,
    previously_billed_at     timestamptz,
    trial_dates              jsonb,
    created_at               timestamptz,
    updated_at               timestamptz,
    occurred_at              timestamptz NOT NULL,
    event_id                 text        NOT NULL,
    PRIMARY KEY (subscription_id, price_id)
);

COMMENT ON TABLE paddle.subscription_items IS 'items[] of the subscription snapshot held in paddle.subscriptions; replaced as a whole when that row is replaced. One row per price (Paddle allows each price once per subscription; a duplicate in odd data keeps the first).';
COMMENT ON COLUMN paddle.subscription_items.price_id IS 'items[].price.id (pri_...).';
COMMENT ON COLUMN paddle.subscription_items.product_id IS 'items[].price.product_id (pro_...), else items[].product.id.';
COMMENT ON COLUMN paddle.subscription_items.status IS 'Item status: active, inactive or trialing.';
COMMENT ON COLUMN paddle.subscription_items.recurring IS 'Whether the item recurs (false for one-time charges).';
COMMENT ON COLUMN paddle.subscription_items.unit_price_amount IS 'items[].price.unit_price.amount: exact integer in the minor unit of unit_price_currency_code.';
COMMENT ON COLUMN paddle.subscription_items.billing_cycle_interval IS 'Price billing_cycle.interval (NULL for one-time prices).';
COMMENT ON COLUMN paddle.subscription_items.billing_cycle_frequency IS 'Price billing_cycle.frequency.';
COMMENT ON COLUMN paddle.subscription_items.trial_period_interval IS 'Price trial_period.interval (NULL when the price has no trial).';
COMMENT ON COLUMN paddle.subscription_items.trial_period_frequency IS 'Price trial_period.frequency.';
COMMENT ON COLUMN paddle.subscription_items.trial_dates IS 'trial_dates object as sent (starts_at, ends_at), NULL when not trialing.';
COMMENT ON COLUMN paddle.subscription_items.occurred_at IS 'occurred_at of the snapshot that wrote this row (equals the parent row''s).';
COMMENT ON COLUMN paddle.subscription_items.event_id IS 'event_id of the snapshot that wrote this row (equals the parent row''s).';

CREATE TABLE paddle.transactions (
    id                       text        PRIMARY KEY,
    status                   text,
    origin                   text,
    customer_id              text,
    address_id               text,
    business_id              text,
    subscription_id          text,
    invoice_id               text,
    invoice_number           text,
    discount_id              text,
    currency_code            text,
    collection_mode          text,
    billing_period_starts_at timestamptz,
    billing_period_ends_at   timestamptz,
    custom_data              jsonb,
    billing_details          jsonb,
    checkout_url             text,
    billed_at                timestamptz,
    revised_at               timestamptz,
    created_at               timestamptz,
    updated_at               timestamptz,
    -- details.totals
    subtotal                 numeric,
    discount                 numeric,
    tax                      numeric,
    total                    numeric,
    credit                   numeric,
    credit_to_balance        numeric,
    balance                  numeric,
    grand_total              numeric,
    grand_total_tax          numeric,
    fee                      numeric,
    earnings                 numeric,
    totals_currency_code     text,
    -- details.adjusted_totals
    adjusted_subtotal        numeric,
    adjusted_tax             numeric,
    adjusted_total           numeric,
    adjusted_grand_total     numeric,
    adjusted_fee             numeric,
    adjusted_earnings        numeric,
    -- details.payout_totals
    payout_subtotal          numeric,
    payout_discount          numeric,
    payout_tax               numeric,
    payout_total             numeric,
    payout_credit            numeric,
    payout_credit_to_balance numeric,
    payout_balance           numeric,
    payout_grand_total       numeric,
    payout_fee               numeric,
    payout_earnings          numeric,
    payout_currency_code     text,
    payout_exchange_rate     numeric,
    -- payments[]
    payment_attempts         integer,
    last_payment_status      text,
    last_payment_error_code  text,
    last_payment_created_at  timestamptz,
    occurred_at              timestamptz NOT NULL,
    environment              text        NOT NULL CHECK (environment IN ('sandbox', 'live')),
    event_id                 text        NOT NULL,
    updated_in_db_at         timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX transactions_customer_id_idx ON paddle.transactions (customer_id);
CREATE INDEX transactions_subscription_id_idx ON paddle.transactions (subscription_id);

COMMENT ON TABLE paddle.transactions IS 'Latest known snapshot of each Paddle transaction (txn_...), from transaction.* events. Amounts are exact integers in the minor unit of their currency. Line items are in paddle.transaction_items.';
COMMENT ON COLUMN paddle.transactions.status IS 'draft, ready, billed, paid, completed, canceled or past_due.';
COMMENT ON COLUMN paddle.transactions.origin IS 'web, api, subscription_charge, subscription_payment_method_change, subscription_recurring, subscription_update, ...';
COMMENT ON COLUMN paddle.transactions.billing_period_starts_at IS 'billing_period.starts_at (NULL for one-time transactions).';
COMMENT ON COLUMN paddle.transactions.billing_period_ends_at IS 'billing_period.ends_at.';
COMMENT ON COLUMN paddle.transactions.billing_details IS 'billing_details as sent (manual collection: payment_terms, purchase_order_number, enable_checkout, ...).';
COMMENT ON COLUMN paddle.transactions.checkout_url IS 'checkout.url.';
COMMENT ON COLUMN paddle.transactions.revised_at IS 'revised_at: when customer/address/business details were last revised.';
COMMENT ON COLUMN paddle.transactions.subtotal IS 'details.totals.subtotal (before discount and tax), minor unit of totals_currency_code.';
COMMENT ON COLUMN paddle.transactions.discount IS 'details.totals.discount.';
COMMENT ON COLUMN paddle.transactions.tax IS 'details.totals.tax.';
COMMENT ON COLUMN paddle.transactions.total IS 'details.totals.total (subtotal - discount + tax).';
COMMENT ON COLUMN paddle.transactions.credit IS 'details.totals.credit (customer credit applied).';
COMMENT ON COLUMN paddle.transactions.credit_to_balance IS 'details.totals.credit_to_balance.';
COMMENT ON COLUMN paddle.transactions.balance IS 'details.totals.balance (still due).';
COMMENT ON COLUMN paddle.transactions.grand_total IS 'details.totals.grand_total (total - credit).';
COMMENT ON COLUMN paddle.transactions.grand_total_tax IS 'details.totals.grand_total_tax.';
COMMENT ON COLUMN paddle.transactions.fee IS 'details.totals.fee (Paddle fee); NULL until the transaction is paid.';
COMMENT ON COLUMN paddle.transactions.earnings IS 'details.totals.earnings (total - tax - fee); NULL until the transaction is paid.';
COMMENT ON COLUMN paddle.transactions.totals_currency_code IS 'details.totals.currency_code (currency of the totals).';
COMMENT ON COLUMN paddle.transactions.adjusted_total IS 'details.adjusted_totals.total: total after refunds/credits/chargebacks (likewise the other adjusted_* columns).';
COMMENT ON COLUMN paddle.transactions.payout_total IS 'details.payout_totals.total, in payout_currency_code (likewise the other payout_* amounts); NULL until paid or when Paddle omits payout totals.';
COMMENT ON COLUMN paddle.transactions.payout_currency_code IS 'details.payout_totals.currency_code (your payout currency).';
COMMENT ON COLUMN paddle.transactions.payout_exchange_rate IS 'details.payout_totals.exchange_rate (decimal, not an amount).';
COMMENT ON COLUMN paddle.transactions.payment_attempts IS 'Number of elements in payments[] (payment attempts, including failed ones); NULL when payments[] is absent.';
COMMENT ON COLUMN paddle.transactions.last_payment_status IS 'status of the most recent payments[] attempt (greatest created_at; Paddle lists newest first): captured, error, ...';
COMMENT ON COLUMN paddle.transactions.last_payment_error_code IS 'error_code of the most recent payment attempt (declined, authentication_failed, ...), NULL if it did not fail.';
COMMENT ON COLUMN paddle.transactions.last_payment_created_at IS 'created_at of the most recent payment attempt.';
COMMENT ON COLUMN paddle.transactions.environment IS 'sandbox or live: environment of the endpoint that delivered the snapshot. A snapshot from the other environment never changes this row (a sandbox secret cannot alter live state).';
COMMENT ON COLUMN paddle.transactions.occurred_at IS 'occurred_at of the event whose snapshot this row holds; older snapshots never overwrite it.';
COMMENT ON COLUMN paddle.transactions.event_id IS 'event_id (paddle.payment_events) of the snapshot this row holds; breaks occurred_at ties.';
COMMENT ON COLUMN paddle.transactions.updated_in_db_at IS 'When paddlehook last wrote this row (not a Paddle time).';

CREATE TABLE paddle.transaction_items (
    transaction_id           text        NOT NULL,
    position                 integer     NOT NULL,
    id                       text,
    price_id                 text,
    product_id               text,
    quantity                 integer,
    tax_rate                 numeric,
    unit_price_amount        numeric,
    unit_price_currency_code text,
    subtotal                 numeric,
    discount                 numeric,
    tax                      numeric,
    total                    numeric,
    unit_subtotal            numeric,
    unit_discount            numeric,
    unit_tax                 numeric,
    unit_total               numeric,
    proration                jsonb,
    occurred_at              timestamptz NOT NULL,
    event_id                 text        NOT NULL,
    PRIMARY KEY (transaction_id, position)
);

COMMENT ON TABLE paddle.transaction_items IS 'Line items of the transaction snapshot held in paddle.transactions (details.line_items[], which carry the per-line totals; items[] only when a snapshot has no line_items); replaced as a whole when that row is replaced.';
COMMENT ON COLUMN paddle.transaction_items.position IS '1-based position in details.line_items[] (or items[] when line_items is absent). Key together with transaction_id, so odd data (repeated prices, missing ids) never fails.';
COMMENT ON COLUMN paddle.transaction_items.id IS 'details.line_items[].id (txnitm_...): the transaction item id that adjustment items refer to as item_id. NULL for rows taken from items[].';
COMMENT ON COLUMN paddle.transaction_items.price_id IS 'line_items[].price_id (pri_...).';
COMMENT ON COLUMN paddle.transaction_items.product_id IS 'line_items[].product.id, else the matching items[].price.product_id.';
COMMENT ON COLUMN paddle.transaction_items.tax_rate IS 'line_items[].tax_rate as a decimal (0.08875 = 8.875 %).';
COMMENT ON COLUMN paddle.transaction_items.unit_price_amount IS 'unit_price.amount of the price in items[] with the same price id (catalog unit price, minor unit of unit_price_currency_code).';
COMMENT ON COLUMN paddle.transaction_items.subtotal IS 'line_items[].totals.subtotal (quantity x unit price, before discount and tax).';
COMMENT ON COLUMN paddle.transaction_items.discount IS 'line_items[].totals.discount.';
COMMENT ON COLUMN paddle.transaction_items.tax IS 'line_items[].totals.tax.';
COMMENT ON COLUMN paddle.transaction_items.total IS 'line_items[].totals.total.';
COMMENT ON COLUMN paddle.transaction_items.unit_subtotal IS 'line_items[].unit_totals.subtotal (per unit; likewise unit_discount, unit_tax, unit_total).';
COMMENT ON COLUMN paddle.transaction_items.proration IS 'line_items[].proration as sent (rate, billing_period), NULL when not prorated.';
COMMENT ON COLUMN paddle.transaction_items.occurred_at IS 'occurred_at of the snapshot that wrote this row (equals the parent row''s).';
COMMENT ON COLUMN paddle.transaction_items.event_id IS 'event_id of the snapshot that wrote this row (equals the parent row''s).';

CREATE TABLE paddle.adjustments (
    id                        text        PRIMARY KEY,
    action                    text,
    type                      text,
    status                    text,
    reason                    text,
    transaction_id            text,
    subscription_id           text,
    customer_id               text,
    currency_code             text,
    credit_applied_to_balance boolean,
    -- totals
    subtotal                  numeric,
    tax                       numeric,
    total                     numeric,
    fee                       numeric,
    earnings                  numeric,
    retained_fee              numeric,
    totals_currency_code      text,
    -- payout_totals
    payout_subtotal           numeric,
    payout_tax                numeric,
    payout_total              numeric,
    payout_fee                numeric,
    payout_earnings           numeric,
    payout_retained_fee       numeric,
    payout_chargeback_fee     numeric,
    payout_currency_code      text,
    created_at                timestamptz,
    updated_at                timestamptz,
    occurred_at               timestamptz NOT NULL,
    environment               text        NOT NULL CHECK (environment IN ('sandbox', 'live')),
    event_id                  text        NOT NULL,
    updated_in_db_at          timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX adjustments_transaction_id_idx ON paddle.adjustments (transaction_id);

COMMENT ON TABLE paddle.adjustments IS 'Latest known snapshot of each Paddle adjustment (adj_...: refunds, credits, chargebacks), from adjustment.* events. Amounts are exact positive integers in the minor unit. Items are in paddle.adjustment_items.';
COMMENT ON COLUMN paddle.adjustments.action IS 'refund, credit, chargeback, chargeback_reverse, chargeback_warning, credit_reverse, ...';
COMMENT ON COLUMN paddle.adjustments.type IS 'full or partial.';
COMMENT ON COLUMN paddle.adjustments.status IS 'pending_approval, approved, rejected or reversed (refunds only take effect when approved).';
COMMENT ON COLUMN paddle.adjustments.credit_applied_to_balance IS 'Whether a credit was added to the customer balance (may be NULL).';
COMMENT ON COLUMN paddle.adjustments.subtotal IS 'totals.subtotal (likewise tax, total, fee, earnings, retained_fee), minor unit of totals_currency_code.';
COMMENT ON COLUMN paddle.adjustments.totals_currency_code IS 'totals.currency_code.';
COMMENT ON COLUMN paddle.adjustments.payout_total IS 'payout_totals.total in payout_currency_code (likewise the other payout_* amounts); NULL when absent.';
COMMENT ON COLUMN paddle.adjustments.payout_chargeback_fee IS 'payout_totals.chargeback_fee.amount (chargebacks).';
COMMENT ON COLUMN paddle.adjustments.updated_at IS 'Paddle updated_at. Note: Paddle''s docs example for adjustment.created sends 0001-01-01T00:00:00Z (an unset Go time); it is stored as is.';
COMMENT ON COLUMN paddle.adjustments.environment IS 'sandbox or live: environment of the endpoint that delivered the snapshot. A snapshot from the other environment never changes this row (a sandbox secret cannot alter live state).';
COMMENT ON COLUMN paddle.adjustments.occurred_at IS 'occurred_at of the event whose snapshot this row holds; older snapshots never overwrite it.';
COMMENT ON COLUMN paddle.adjustments.event_id IS 'event_id (paddle.payment_events) of the snapshot this row holds; breaks occurred_at ties.';
COMMENT ON COLUMN paddle.adjustments.updated_in_db_at IS 'When paddlehook last wrote this row (not a Paddle time).';

CREATE TABLE paddle.adjustment_items (
    adjustment_id text        NOT NULL,
    position      integer     NOT NULL,
    id            text,
    item_id       text,
    type          text,
    amount        numeric,
    subtotal      numeric,
    tax           numeric,
    total         numeric,
    proration     jsonb,
    occurred_at   timestamptz NOT NULL,
    event_id      text        NOT NULL,
    PRIMARY KEY (adjustment_id, position)
);

COMMENT ON TABLE paddle.adjustment_items IS 'items[] of the adjustment snapshot held in paddle.adjustments; replaced as a whole when that row is replaced.';
COMMENT ON COLUMN paddle.adjustment_items.position IS '1-based position in items[]; key together with adjustment_id.';
COMMENT ON COLUMN paddle.adjustment_items.id IS 'items[].id (adjitm_...).';
COMMENT ON COLUMN paddle.adjustment_items.item_id IS 'Transaction item adjusted (txnitm_...) = paddle.transaction_items.id.';
COMMENT ON COLUMN paddle.adjustment_items.type IS 'full, partial, tax or proration.';
COMMENT ON COLUMN paddle.adjustment_items.amount IS 'items[].amount, minor unit of the adjustment currency.';
COMMENT ON COLUMN paddle.adjustment_items.subtotal IS 'items[].totals.subtotal (likewise tax, total).';
COMMENT ON COLUMN paddle.adjustment_items.proration IS 'items[].proration as sent, NULL when not prorated.';
COMMENT ON COLUMN paddle.adjustment_items.occurred_at IS 'occurred_at of the snapshot that wrote this row (equals the parent row''s).';
COMMENT ON COLUMN paddle.adjustment_items.event_id IS 'event_id of the snapshot that wrote this row (equals the parent row''s).';

-------------------------------------------------------------------------------------------------------------
-- Projection: one function per entity. Each takes the already-validated id and the data object, upserts the
-- parent row only if the snapshot is newer, and replaces the child rows only if the parent was written.
-- Each JSON object is read once with jsonb_to_record (typed column list = the Paddle field names used), not
-- with repeated x->>'k' extractions; nested objects go through paddle.as_object first because
-- jsonb_to_record raises on non-objects (and returns one all-NULL row for SQL NULL, which is what we want).
-------------------------------------------------------------------------------------------------------------

CREATE FUNCTION paddle.project_customer(p_id text, p_event_id text, p_occurred_at timestamptz, p_data jsonb,
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
        updated_in_db_at  = now()
    -- A snapshot from the other environment never touches this row (see environment).
    WHERE t.environment = EXCLUDED.environment
      AND (t.occurred_at, t.event_id) < (EXCLUDED.occurred_at, EXCLUDED.event_id);
END
$$;

COMMENT ON FUNCTION paddle.project_customer(text, text, timestamptz, jsonb, text) IS
    'Upsert a customer snapshot (called by paddle.project_event) unless a newer or equal snapshot is stored.';

CREATE FUNCTION paddle.project_subscription(p_id text, p_event_id text, p_occurred_at timestamptz, p_data jsonb,
                                  p_environment text)
    RETURNS void
    LANGUAGE plpgsql
AS $$
DECLARE
    v_items jsonb;
BEGIN
    INSERT INTO paddle.subscriptions AS t
        (id, status, customer_id, address_id, business_id, currency_code, collection_mode,
         billing_cycle_interval, billing_cycle_frequency,
         current_billing_period_starts_at, current_billing_period_ends_at,
         next_billed_at, started_at, first_billed_at, paused_at, canceled_at,
         scheduled_change_action, scheduled_change_effective_at, scheduled_change_resume_at,
         discount_id, discount, custom_data, import_meta, billing_details, transaction_id,
         created_at, updated_at, occurred_at, event_id, environment)
    SELECT p_id, r.status, paddle.to_key(r.customer_id), r.address_id, r.business_id, r.currency_code,
           r.collection_mode, r.billing_cycle ->> 'interval', paddle.to_int(r.billing_cycle ->> 'frequency'),
           paddle.to_ts(r.current_billing_period ->> 'starts_at'),
           paddle.to_ts(r.current_billing_period ->> 'ends_at'),
           paddle.to_ts(r.next_billed_at), paddle.to_ts(r.started_at), paddle.to_ts(r.first_billed_at),
           paddle.to_ts(r.paused_at), paddle.to_ts(r.canceled_at),
           r.scheduled_change ->> 'action', paddle.to_ts(r.scheduled_change ->> 'effective_at'),
           paddle.to_ts(r.scheduled_change ->> 'resume_at'),
           r.discount ->> 'id', r.discount, r.custom_data, r.import_meta, r.billing_details, r.transaction_id,
           paddle.to_ts(r.created_at), paddle.to_ts(r.updated_at), p_occurred_at, p_event_id, p_environment
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
        occurred_at                      = EXCLUDED.occurred_at,
        event_id                         = EXCLUDED.event_id,
        updated_in_db_at                 = now()
    -- A snapshot from the other environment never touches this row (see environment).
    WHERE t.environment = EXCLUDED.environment
      AND (t.occurred_at, t.event_id) < (EXCLUDED.occurred_at, EXCLUDED.event_id);

    IF NOT FOUND THEN
        RETURN;  -- an equal or newer snapshot is stored: leave its items alone
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

COMMENT ON FUNCTION paddle.project_subscription(text, text, timestamptz, jsonb, text) IS
    'Upsert a subscription snapshot and, if it was applied, replace its subscription_items (called by paddle.project_event).';

CREATE FUNCTION paddle.project_transaction(p_id text, p_event_id text, p_occurred_at timestamptz, p_data jsonb,
                                  p_environment text)
    RETURNS void
    LANGUAGE plpgsql
AS $$
DECLARE
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
         occurred_at, event_id, environment)
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
           p_occurred_at, p_event_id, p_environment
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
        occurred_at              = EXCLUDED.occurred_at,
        event_id                 = EXCLUDED.event_id,
        updated_in_db_at         = now()
    -- A snapshot from the other environment never touches this row (see environment).
    WHERE t.environment = EXCLUDED.environment
      AND (t.occurred_at, t.event_id) < (EXCLUDED.occurred_at, EXCLUDED.event_id);

    IF NOT FOUND THEN
        RETURN;  -- an equal or newer snapshot is stored: leave its items alone
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

COMMENT ON FUNCTION paddle.project_transaction(text, text, timestamptz, jsonb, text) IS
    'Upsert a transaction snapshot and, if it was applied, replace its transaction_items (called by paddle.project_event).';

CREATE FUNCTION paddle.project_adjustment(p_id text, p_event_id text, p_occurred_at timestamptz, p_data jsonb,
                                  p_environment text)
    RETURNS void
    LANGUAGE plpgsql
AS $$
DECLARE
    v_items jsonb;
BEGIN
    INSERT INTO paddle.adjustments AS t
        (id, action, type, status, reason, transaction_id, subscription_id, customer_id, currency_code,
         credit_applied_to_balance, subtotal, tax, total, fee, earnings, retained_fee, totals_currency_code,
         payout_subtotal, payout_tax, payout_total, payout_fee, payout_earnings, payout_retained_fee,
         payout_chargeback_fee, payout_currency_code, created_at, updated_at, occurred_at, event_id, environment)
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
           paddle.to_ts(r.created_at), paddle.to_ts(r.updated_at), p_occurred_at, p_event_id, p_environment
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
        occurred_at               = EXCLUDED.occurred_at,
        event_id                  = EXCLUDED.event_id,
        updated_in_db_at          = now()
    -- A snapshot from the other environment never touches this row (see environment).
    WHERE t.environment = EXCLUDED.environment
      AND (t.occurred_at, t.event_id) < (EXCLUDED.occurred_at, EXCLUDED.event_id);

    IF NOT FOUND THEN
        RETURN;  -- an equal or newer snapshot is stored: leave its items alone
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

COMMENT ON FUNCTION paddle.project_adjustment(text, text, timestamptz, jsonb, text) IS
    'Upsert an adjustment snapshot and, if it was applied, replace its adjustment_items (called by paddle.project_event).';

-------------------------------------------------------------------------------------------------------------
-- Dispatch, ingest, re-projection
-------------------------------------------------------------------------------------------------------------

CREATE FUNCTION paddle.project_event(p_event_id text, p_event_type text, p_occurred_at timestamptz, p_data jsonb,
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

COMMENT ON FUNCTION paddle.project_event(text, text, timestamptz, jsonb, text) IS
    'Project the data snapshot of one event into the state tables by the event type''s entity (part before the first dot): customer, subscription, transaction, adjustment; other types do nothing. Data that is not an object or lacks an id projects nothing. Older snapshots never overwrite newer ones.';

CREATE FUNCTION paddle.ingest_event(
        p_event_id        text,
        p_event_type      text,
        p_occurred_at     timestamptz,
        p_notification_id text,
        p_endpoint_id     text,
        p_environment     text,
        p_payload         jsonb)
    RETURNS text
    LANGUAGE plpgsql
AS $$
BEGIN
    INSERT INTO paddle.payment_events
        (event_id, endpoint_id, environment, notification_id, event_type, occurred_at, payload)
    VALUES
        (p_event_id, p_endpoint_id, p_environment, p_notification_id, p_event_type, p_occurred_at, p_payload)
    ON CONFLICT (event_id) DO NOTHING;

    IF NOT FOUND THEN
        RETURN 'duplicate';
    END IF;

    -- Only entity types that project pay for the subtransaction of the exception block.
    -- Keep this list in sync with the CASE in paddle.project_event.
    IF split_part(p_event_type, '.', 1) IN ('customer', 'subscription', 'transaction', 'adjustment') THEN
        BEGIN
            PERFORM paddle.project_event(p_event_id, p_event_type, p_occurred_at, p_payload -> 'data',
                                         p_environment);
        EXCEPTION WHEN OTHERS THEN
            -- Contention and resource errors are not the data's fault: fail the whole delivery so
            -- the worker answers 503 and Paddle retries, instead of acknowledging stale state.
            IF SQLSTATE IN ('40001', '40P01', '55P03', '57014') OR left(SQLSTATE, 2) IN ('53', '08', '57') THEN
                RAISE;
            END IF;
            -- The block's savepoint was rolled back: no partial projection rows remain; keep the event.
            UPDATE paddle.payment_events
               SET projection_error = SQLSTATE || ': ' || SQLERRM
             WHERE event_id = p_event_id;
        END;
    END IF;

    RETURN 'stored';
END
$$;

COMMENT ON FUNCTION paddle.ingest_event(text, text, timestamptz, text, text, text, jsonb) IS
    'The one call per webhook delivery. Stores the notification in payment_events (ON CONFLICT (event_id) DO NOTHING) and returns ''duplicate'' if the event was already stored (nothing else is touched). Otherwise projects payload->''data'' into the state tables; a projection error is recorded in payment_events.projection_error instead of failing. Returns ''stored''. Raises only if the event row itself cannot be stored (NULL in a NOT NULL column, environment not sandbox/live).';

CREATE FUNCTION paddle.reproject_event(p_event_id text)
    RETURNS text
    LANGUAGE plpgsql
AS $$
DECLARE
    v_event paddle.payment_events%ROWTYPE;
BEGIN
    SELECT * INTO v_event FROM paddle.payment_events WHERE event_id = p_event_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    BEGIN
        PERFORM paddle.project_event(v_event.event_id, v_event.event_type, v_event.occurred_at,
                                     v_event.payload -> 'data', v_event.environment);
        UPDATE paddle.payment_events SET projection_error = NULL WHERE event_id = p_event_id;
        RETURN 'ok';
    EXCEPTION WHEN OTHERS THEN
        UPDATE paddle.payment_events
           SET projection_error = SQLSTATE || ': ' || SQLERRM
         WHERE event_id = p_event_id;
        RETURN SQLSTATE || ': ' || SQLERRM;
    END;
END
$$;

COMMENT ON FUNCTION paddle.reproject_event(text) IS
    'Run paddle.project_event again for a stored event (e.g. one with projection_error after a fix) and update its projection_error. Returns ''ok'', the error text, or NULL if the event is unknown. Has no effect on state rows already holding this or a newer snapshot.';
