-- paddlehook 0011_entities: addresses, businesses and the catalog (products, prices, discounts) as state, and
-- country prices in MRR.
--
-- Runs once, inside the migration runner's transaction (no BEGIN/COMMIT here). PostgreSQL 15.
--
-- 1. State: address.*, business.*, product.*, price.* and discount.* events were stored only. They now project
--    into paddle.addresses, paddle.businesses, paddle.products, paddle.prices and paddle.discounts like
--    customers do (newest snapshot per id wins within an environment; a live snapshot replaces a sandbox row;
--    a sandbox snapshot never changes a live row), so that an application can read a customer's country or
--    tax number, or a product's name, without parsing the event log. paddle.reproject,
--    paddle.reproject_event and paddle.replace_sandbox_event cover the new tables; they come last in those
--    functions' lock lists, which keeps every list in one order. The events of these types stored before this
--    migration are projected at its end.
-- 2. MRR: Paddle charges a customer in a country listed in a price's unit_price_overrides that override's
--    price. The reports used the base price whenever it was in the subscription's currency, so a lower price
--    for some countries in the same currency (purchasing-power pricing, e.g. USD 10 with USD 5 for India)
--    counted at the base price. paddle.subscription_mrr_items now takes the country of the subscription's
--    address (paddle.addresses, same environment) and prefers the override that lists it, in the
--    subscription's currency; without a known address it works as before. paddle.mrr and
--    paddle.subscription_history (and so mrr_movements and churn_monthly) pass the country; history uses the
--    address as it is now for every snapshot.
-- 3. Roles: every role that may write paddle.customers may write the new tables (a worker running as its
--    own role keeps storing these events through the upgrade), and every role that may read
--    paddle.customers may read them. The worker-role block in docs/security.md grants the same.
--
-- Deliveries in flight while this migration runs still run the old ingest_event, which stores these events
-- without projecting them; 0012_entities_in_flight, applied right after, projects them.
--
-- The functions and views are redefined whole (CREATE OR REPLACE, same signatures and columns): they are the
-- latest of 0001, 0003, 0005 and 0009, changed only in their entity lists, lock lists and deletions, in the
-- country passed to the MRR items, and in the projection of one stored event, which paddle.reproject's loop
-- and paddle.reproject_event each wrote out and which is paddle.project_stored_event now (this migration and
-- 0012 use it too). Earlier migrations stay as they were applied.

-------------------------------------------------------------------------------------------------------------
-- State tables
-------------------------------------------------------------------------------------------------------------

CREATE TABLE paddle.addresses (
    id                text        PRIMARY KEY,
    customer_id       text,
    description       text,
    first_line        text,
    second_line       text,
    city              text,
    postal_code       text,
    region            text,
    country_code      text,
    status            text,
    custom_data       jsonb,
    import_meta       jsonb,
    created_at        timestamptz,
    updated_at        timestamptz,
    occurred_at       timestamptz NOT NULL,
    environment       text        NOT NULL CHECK (environment IN ('sandbox', 'live')),
    event_id          text        NOT NULL,
    updated_in_db_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX addresses_customer_id_idx ON paddle.addresses (customer_id);

COMMENT ON TABLE paddle.addresses IS 'Latest known snapshot of each Paddle address (add_...), from address.* events. Subscriptions and transactions name theirs in address_id.';
COMMENT ON COLUMN paddle.addresses.customer_id IS 'customer_id (ctm_...) of the customer the address belongs to, when the payload has it (Paddle''s newer API versions).';
COMMENT ON COLUMN paddle.addresses.country_code IS 'ISO 3166-1 alpha-2 country code; decides which unit_price_overrides entry of a price applies (paddle.country_price).';
COMMENT ON COLUMN paddle.addresses.status IS 'active or archived.';

CREATE TABLE paddle.businesses (
    id                text        PRIMARY KEY,
    customer_id       text,
    name              text,
    company_number    text,
    tax_identifier    text,
    status            text,
    contacts          jsonb,
    custom_data       jsonb,
    import_meta       jsonb,
    created_at        timestamptz,
    updated_at        timestamptz,
    occurred_at       timestamptz NOT NULL,
    environment       text        NOT NULL CHECK (environment IN ('sandbox', 'live')),
    event_id          text        NOT NULL,
    updated_in_db_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX businesses_customer_id_idx ON paddle.businesses (customer_id);

COMMENT ON TABLE paddle.businesses IS 'Latest known snapshot of each Paddle business (biz_...), from business.* events. Subscriptions and transactions name theirs in business_id.';
COMMENT ON COLUMN paddle.businesses.customer_id IS 'customer_id (ctm_...) of the customer the business belongs to, when the payload has it (Paddle''s newer API versions).';
COMMENT ON COLUMN paddle.businesses.tax_identifier IS 'The business''s tax or VAT number, as Paddle holds it.';
COMMENT ON COLUMN paddle.businesses.contacts IS 'Paddle contacts: [{name, email}, ...].';
COMMENT ON COLUMN paddle.businesses.status IS 'active or archived.';

CREATE TABLE paddle.products (
    id                text        PRIMARY KEY,
    name              text,
    description       text,
    type              text,
    tax_category      text,
    image_url         text,
    status            text,
    custom_data       jsonb,
    import_meta       jsonb,
    created_at        timestamptz,
    updated_at        timestamptz,
    occurred_at       timestamptz NOT NULL,
    environment       text        NOT NULL CHECK (environment IN ('sandbox', 'live')),
    event_id          text        NOT NULL,
    updated_in_db_at  timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE paddle.products IS 'Latest known snapshot of each Paddle product (pro_...), from product.* events: the catalog''s names for the product_id columns elsewhere.';
COMMENT ON COLUMN paddle.products.type IS 'standard (in the catalog) or custom (made for one transaction).';
COMMENT ON COLUMN paddle.products.status IS 'active or archived.';

CREATE TABLE paddle.prices (
    id                        text        PRIMARY KEY,
    product_id                text,
    name                      text,
    description               text,
    type                      text,
    status                    text,
    billing_cycle_interval    text,
    billing_cycle_frequency   integer,
    trial_period_interval     text,
    trial_period_frequency    integer,
    tax_mode                  text,
    unit_price_amount         numeric,
    unit_price_currency_code  text,
    unit_price_overrides      jsonb,
    quantity_minimum          integer,
    quantity_maximum          integer,
    custom_data               jsonb,
    import_meta               jsonb,
    created_at                timestamptz,
    updated_at                timestamptz,
    occurred_at               timestamptz NOT NULL,
    environment               text        NOT NULL CHECK (environment IN ('sandbox', 'live')),
    event_id                  text        NOT NULL,
    updated_in_db_at          timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX prices_product_id_idx ON paddle.prices (product_id);

COMMENT ON TABLE paddle.prices IS 'Latest known snapshot of each Paddle price (pri_...), from price.* events.';
COMMENT ON COLUMN paddle.prices.billing_cycle_interval IS 'billing_cycle.interval: day, week, month or year; NULL for a one-time price.';
COMMENT ON COLUMN paddle.prices.trial_period_interval IS 'trial_period.interval; NULL without a trial.';
COMMENT ON COLUMN paddle.prices.unit_price_amount IS 'unit_price.amount in the minor unit of unit_price_currency_code (exact integer).';
COMMENT ON COLUMN paddle.prices.unit_price_overrides IS 'Paddle unit_price_overrides: [{country_codes, unit_price {amount, currency_code}}, ...], the prices for some countries (paddle.country_price).';
COMMENT ON COLUMN paddle.prices.status IS 'active or archived.';

CREATE TABLE paddle.discounts (
    id                           text        PRIMARY KEY,
    code                         text,
    description                  text,
    type                         text,
    mode                         text,
    status                       text,
    amount                       numeric,
    currency_code                text,
    recur                        boolean,
    maximum_recurring_intervals  integer,
    usage_limit                  integer,
    times_used                   integer,
    restrict_to                  jsonb,
    enabled_for_checkout         boolean,
    expires_at                   timestamptz,
    discount_group_id            text,
    custom_data                  jsonb,
    import_meta                  jsonb,
    created_at                   timestamptz,
    updated_at                   timestamptz,
    occurred_at                  timestamptz NOT NULL,
    environment                  text        NOT NULL CHECK (environment IN ('sandbox', 'live')),
    event_id                     text        NOT NULL,
    updated_in_db_at             timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE paddle.discounts IS 'Latest known snapshot of each Paddle discount (dsc_...), from discount.* events. Subscriptions and transactions name theirs in discount_id.';
COMMENT ON COLUMN paddle.discounts.type IS 'flat (amount in minor units of currency_code, once per transaction), flat_per_seat, or percentage (amount is the percentage, e.g. 12.5).';
COMMENT ON COLUMN paddle.discounts.amount IS 'Minor units for flat discounts, a percentage for percentage discounts (exact).';
COMMENT ON COLUMN paddle.discounts.times_used IS 'times_used when the payload carries it (Paddle''s current discount webhooks do not): NULL otherwise.';
COMMENT ON COLUMN paddle.discounts.restrict_to IS 'Paddle restrict_to: the product and price ids the discount applies to; NULL = all.';
COMMENT ON COLUMN paddle.discounts.status IS 'active, archived, expired or used.';

-- The columns every new table shares, explained once.
DO $$
DECLARE
    v_table text;
BEGIN
    FOREACH v_table IN ARRAY ARRAY['addresses', 'businesses', 'products', 'prices', 'discounts'] LOOP
        EXECUTE format($f$
            COMMENT ON COLUMN paddle.%1$I.import_meta IS 'Paddle import_meta (external_id, imported_from) for entities imported from another billing platform.';
            COMMENT ON COLUMN paddle.%1$I.created_at IS 'Paddle created_at.';
            COMMENT ON COLUMN paddle.%1$I.updated_at IS 'Paddle updated_at.';
            COMMENT ON COLUMN paddle.%1$I.environment IS 'sandbox or live: environment of the endpoint that delivered the snapshot. A snapshot from the other environment never changes this row (a sandbox secret cannot alter live state).';
            COMMENT ON COLUMN paddle.%1$I.occurred_at IS 'occurred_at of the event whose snapshot this row holds; older snapshots never overwrite it.';
            COMMENT ON COLUMN paddle.%1$I.event_id IS 'event_id (paddle.payment_events) of the snapshot this row holds; breaks occurred_at ties.';
            COMMENT ON COLUMN paddle.%1$I.updated_in_db_at IS 'When paddlehook last wrote this row (not a Paddle time).';
        $f$, v_table);
    END LOOP;
END
$$;

-- Who may write customers may write these; who may read customers may read these.
DO $$
DECLARE
    v_role regrole;
BEGIN
    FOR v_role IN
        SELECT r.oid::regrole FROM pg_roles r
        CROSS JOIN (SELECT relowner FROM pg_class WHERE oid = 'paddle.customers'::regclass) AS t
        WHERE NOT r.rolsuper AND r.oid <> t.relowner AND r.rolname NOT LIKE 'pg\_%'
          AND has_table_privilege(r.oid, 'paddle.customers', 'INSERT')
          AND has_table_privilege(r.oid, 'paddle.customers', 'UPDATE')
    LOOP
        EXECUTE format('GRANT SELECT, INSERT, UPDATE ON paddle.addresses, paddle.businesses, paddle.products, '
                       'paddle.prices, paddle.discounts TO %s', v_role);
    END LOOP;
    FOR v_role IN
        SELECT r.oid::regrole FROM pg_roles r
        CROSS JOIN (SELECT relowner FROM pg_class WHERE oid = 'paddle.customers'::regclass) AS t
        WHERE NOT r.rolsuper AND r.oid <> t.relowner AND r.rolname NOT LIKE 'pg\_%'
          AND has_table_privilege(r.oid, 'paddle.customers', 'SELECT')
    LOOP
        EXECUTE format('GRANT SELECT ON paddle.addresses, paddle.businesses, paddle.products, paddle.prices, '
                       'paddle.discounts TO %s', v_role);
    END LOOP;
END
$$;

-------------------------------------------------------------------------------------------------------------
-- Projection
-------------------------------------------------------------------------------------------------------------

CREATE FUNCTION paddle.project_address(p_id text, p_event_id text, p_occurred_at timestamptz, p_data jsonb,
                                       p_environment text)
    RETURNS void
    LANGUAGE plpgsql
AS $$
BEGIN
    INSERT INTO paddle.addresses AS t
        (id, customer_id, description, first_line, second_line, city, postal_code, region, country_code, status,
         custom_data, import_meta, created_at, updated_at, occurred_at, event_id, environment)
    SELECT p_id, paddle.to_key(r.customer_id), r.description, r.first_line, r.second_line, r.city, r.postal_code,
           r.region, r.country_code, r.status, r.custom_data, r.import_meta,
           paddle.to_ts(r.created_at), paddle.to_ts(r.updated_at), p_occurred_at, p_event_id, p_environment
    FROM jsonb_to_record(paddle.as_object(p_data)) AS r(
        customer_id text, description text, first_line text, second_line text, city text, postal_code text,
        region text, country_code text, status text, custom_data jsonb, import_meta jsonb, created_at text,
        updated_at text)
    ON CONFLICT (id) DO UPDATE SET
        customer_id       = EXCLUDED.customer_id,
        description       = EXCLUDED.description,
        first_line        = EXCLUDED.first_line,
        second_line       = EXCLUDED.second_line,
        city              = EXCLUDED.city,
        postal_code       = EXCLUDED.postal_code,
        region            = EXCLUDED.region,
        country_code      = EXCLUDED.country_code,
        status            = EXCLUDED.status,
        custom_data       = EXCLUDED.custom_data,
        import_meta       = EXCLUDED.import_meta,
        created_at        = EXCLUDED.created_at,
        updated_at        = EXCLUDED.updated_at,
        occurred_at       = EXCLUDED.occurred_at,
        event_id          = EXCLUDED.event_id,
        environment       = EXCLUDED.environment,
        updated_in_db_at  = now()
    WHERE paddle.snapshot_replaces(t.environment, t.occurred_at, t.event_id,
                                   EXCLUDED.environment, EXCLUDED.occurred_at, EXCLUDED.event_id);
END
$$;

COMMENT ON FUNCTION paddle.project_address(text, text, timestamptz, jsonb, text) IS
    'Upsert one address snapshot into paddle.addresses (paddle.snapshot_replaces decides over an existing row).';

CREATE FUNCTION paddle.project_business(p_id text, p_event_id text, p_occurred_at timestamptz, p_data jsonb,
                                        p_environment text)
    RETURNS void
    LANGUAGE plpgsql
AS $$
BEGIN
    INSERT INTO paddle.businesses AS t
        (id, customer_id, name, company_number, tax_identifier, status, contacts, custom_data, import_meta,
         created_at, updated_at, occurred_at, event_id, environment)
    SELECT p_id, paddle.to_key(r.customer_id), r.name, r.company_number, r.tax_identifier, r.status,
           paddle.as_array(r.contacts), r.custom_data, r.import_meta,
           paddle.to_ts(r.created_at), paddle.to_ts(r.updated_at), p_occurred_at, p_event_id, p_environment
    FROM jsonb_to_record(paddle.as_object(p_data)) AS r(
        customer_id text, name text, company_number text, tax_identifier text, status text, contacts jsonb,
        custom_data jsonb, import_meta jsonb, created_at text, updated_at text)
    ON CONFLICT (id) DO UPDATE SET
        customer_id       = EXCLUDED.customer_id,
        name              = EXCLUDED.name,
        company_number    = EXCLUDED.company_number,
        tax_identifier    = EXCLUDED.tax_identifier,
        status            = EXCLUDED.status,
        contacts          = EXCLUDED.contacts,
        custom_data       = EXCLUDED.custom_data,
        import_meta       = EXCLUDED.import_meta,
        created_at        = EXCLUDED.created_at,
        updated_at        = EXCLUDED.updated_at,
        occurred_at       = EXCLUDED.occurred_at,
        event_id          = EXCLUDED.event_id,
        environment       = EXCLUDED.environment,
        updated_in_db_at  = now()
    WHERE paddle.snapshot_replaces(t.environment, t.occurred_at, t.event_id,
                                   EXCLUDED.environment, EXCLUDED.occurred_at, EXCLUDED.event_id);
END
$$;

COMMENT ON FUNCTION paddle.project_business(text, text, timestamptz, jsonb, text) IS
    'Upsert one business snapshot into paddle.businesses (paddle.snapshot_replaces decides over an existing row).';

CREATE FUNCTION paddle.project_product(p_id text, p_event_id text, p_occurred_at timestamptz, p_data jsonb,
                                       p_environment text)
    RETURNS void
    LANGUAGE plpgsql
AS $$
BEGIN
    INSERT INTO paddle.products AS t
        (id, name, description, type, tax_category, image_url, status, custom_data, import_meta, created_at,
         updated_at, occurred_at, event_id, environment)
    SELECT p_id, r.name, r.description, r.type, r.tax_category, r.image_url, r.status, r.custom_data,
           r.import_meta, paddle.to_ts(r.created_at), paddle.to_ts(r.updated_at), p_occurred_at, p_event_id,
           p_environment
    FROM jsonb_to_record(paddle.as_object(p_data)) AS r(
        name text, description text, type text, tax_category text, image_url text, status text,
        custom_data jsonb, import_meta jsonb, created_at text, updated_at text)
    ON CONFLICT (id) DO UPDATE SET
        name              = EXCLUDED.name,
        description       = EXCLUDED.description,
        type              = EXCLUDED.type,
        tax_category      = EXCLUDED.tax_category,
        image_url         = EXCLUDED.image_url,
        status            = EXCLUDED.status,
        custom_data       = EXCLUDED.custom_data,
        import_meta       = EXCLUDED.import_meta,
        created_at        = EXCLUDED.created_at,
        updated_at        = EXCLUDED.updated_at,
        occurred_at       = EXCLUDED.occurred_at,
        event_id          = EXCLUDED.event_id,
        environment       = EXCLUDED.environment,
        updated_in_db_at  = now()
    WHERE paddle.snapshot_replaces(t.environment, t.occurred_at, t.event_id,
                                   EXCLUDED.environment, EXCLUDED.occurred_at, EXCLUDED.event_id);
END
$$;

COMMENT ON FUNCTION paddle.project_product(text, text, timestamptz, jsonb, text) IS
    'Upsert one product snapshot into paddle.products (paddle.snapshot_replaces decides over an existing row).';

CREATE FUNCTION paddle.project_price(p_id text, p_event_id text, p_occurred_at timestamptz, p_data jsonb,
                                     p_environment text)
    RETURNS void
    LANGUAGE plpgsql
AS $$
BEGIN
    INSERT INTO paddle.prices AS t
        (id, product_id, name, description, type, status, billing_cycle_interval, billing_cycle_frequency,
         trial_period_interval, trial_period_frequency, tax_mode, unit_price_amount, unit_price_currency_code,
         unit_price_overrides, quantity_minimum, quantity_maximum, custom_data, import_meta, created_at,
         updated_at, occurred_at, event_id, environment)
    SELECT p_id, paddle.to_key(r.product_id), r.name, r.description, r.type, r.status,
           r.billing_cycle ->> 'interval', paddle.to_int(r.billing_cycle ->> 'frequency'),
           r.trial_period ->> 'interval', paddle.to_int(r.trial_period ->> 'frequency'), r.tax_mode,
           paddle.to_amount(r.unit_price ->> 'amount'), r.unit_price ->> 'currency_code',
           paddle.as_array(r.unit_price_overrides), paddle.to_int(r.quantity ->> 'minimum'),
           paddle.to_int(r.quantity ->> 'maximum'), r.custom_data, r.import_meta, paddle.to_ts(r.created_at),
           paddle.to_ts(r.updated_at), p_occurred_at, p_event_id, p_environment
    FROM jsonb_to_record(paddle.as_object(p_data)) AS r(
        product_id text, name text, description text, type text, status text, billing_cycle jsonb,
        trial_period jsonb, tax_mode text, unit_price jsonb, unit_price_overrides jsonb, quantity jsonb,
        custom_data jsonb, import_meta jsonb, created_at text, updated_at text)
    ON CONFLICT (id) DO UPDATE SET
        product_id                = EXCLUDED.product_id,
        name                      = EXCLUDED.name,
        description               = EXCLUDED.description,
        type                      = EXCLUDED.type,
        status                    = EXCLUDED.status,
        billing_cycle_interval    = EXCLUDED.billing_cycle_interval,
        billing_cycle_frequency   = EXCLUDED.billing_cycle_frequency,
        trial_period_interval     = EXCLUDED.trial_period_interval,
        trial_period_frequency    = EXCLUDED.trial_period_frequency,
        tax_mode                  = EXCLUDED.tax_mode,
        unit_price_amount         = EXCLUDED.unit_price_amount,
        unit_price_currency_code  = EXCLUDED.unit_price_currency_code,
        unit_price_overrides      = EXCLUDED.unit_price_overrides,
        quantity_minimum          = EXCLUDED.quantity_minimum,
        quantity_maximum          = EXCLUDED.quantity_maximum,
        custom_data               = EXCLUDED.custom_data,
        import_meta               = EXCLUDED.import_meta,
        created_at                = EXCLUDED.created_at,
        updated_at                = EXCLUDED.updated_at,
        occurred_at               = EXCLUDED.occurred_at,
        event_id                  = EXCLUDED.event_id,
        environment               = EXCLUDED.environment,
        updated_in_db_at          = now()
    WHERE paddle.snapshot_replaces(t.environment, t.occurred_at, t.event_id,
                                   EXCLUDED.environment, EXCLUDED.occurred_at, EXCLUDED.event_id);
END
$$;

COMMENT ON FUNCTION paddle.project_price(text, text, timestamptz, jsonb, text) IS
    'Upsert one price snapshot into paddle.prices (paddle.snapshot_replaces decides over an existing row).';

CREATE FUNCTION paddle.project_discount(p_id text, p_event_id text, p_occurred_at timestamptz, p_data jsonb,
                                        p_environment text)
    RETURNS void
    LANGUAGE plpgsql
AS $$
BEGIN
    INSERT INTO paddle.discounts AS t
        (id, code, description, type, mode, status, amount, currency_code, recur, maximum_recurring_intervals,
         usage_limit, times_used, restrict_to, enabled_for_checkout, expires_at, discount_group_id, custom_data,
         import_meta, created_at, updated_at, occurred_at, event_id, environment)
    SELECT p_id, r.code, r.description, r.type, r.mode, r.status, paddle.to_decimal(r.amount), r.currency_code,
           paddle.to_bool(r.recur), paddle.to_int(r.maximum_recurring_intervals), paddle.to_int(r.usage_limit),
           paddle.to_int(r.times_used), paddle.as_array(r.restrict_to), paddle.to_bool(r.enabled_for_checkout),
           paddle.to_ts(r.expires_at), r.discount_group_id, r.custom_data, r.import_meta,
           paddle.to_ts(r.created_at), paddle.to_ts(r.updated_at), p_occurred_at, p_event_id, p_environment
    FROM jsonb_to_record(paddle.as_object(p_data)) AS r(
        code text, description text, type text, mode text, status text, amount text, currency_code text,
        recur text, maximum_recurring_intervals text, usage_limit text, times_used text, restrict_to jsonb,
        enabled_for_checkout text, expires_at text, discount_group_id text, custom_data jsonb, import_meta jsonb,
        created_at text, updated_at text)
    ON CONFLICT (id) DO UPDATE SET
        code                         = EXCLUDED.code,
        description                  = EXCLUDED.description,
        type                         = EXCLUDED.type,
        mode                         = EXCLUDED.mode,
        status                       = EXCLUDED.status,
        amount                       = EXCLUDED.amount,
        currency_code                = EXCLUDED.currency_code,
        recur                        = EXCLUDED.recur,
        maximum_recurring_intervals  = EXCLUDED.maximum_recurring_intervals,
        usage_limit                  = EXCLUDED.usage_limit,
        times_used                   = EXCLUDED.times_used,
        restrict_to                  = EXCLUDED.restrict_to,
        enabled_for_checkout         = EXCLUDED.enabled_for_checkout,
        expires_at                   = EXCLUDED.expires_at,
        discount_group_id            = EXCLUDED.discount_group_id,
        custom_data                  = EXCLUDED.custom_data,
        import_meta                  = EXCLUDED.import_meta,
        created_at                   = EXCLUDED.created_at,
        updated_at                   = EXCLUDED.updated_at,
        occurred_at                  = EXCLUDED.occurred_at,
        event_id                     = EXCLUDED.event_id,
        environment                  = EXCLUDED.environment,
        updated_in_db_at             = now()
    WHERE paddle.snapshot_replaces(t.environment, t.occurred_at, t.event_id,
                                   EXCLUDED.environment, EXCLUDED.occurred_at, EXCLUDED.event_id);
END
$$;

COMMENT ON FUNCTION paddle.project_discount(text, text, timestamptz, jsonb, text) IS
    'Upsert one discount snapshot into paddle.discounts (paddle.snapshot_replaces decides over an existing row).';

-------------------------------------------------------------------------------------------------------------
-- Dispatch, ingest, replacement, re-projection: the five entities added to their lists
-------------------------------------------------------------------------------------------------------------

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
    -- Keep this list in sync with the one in paddle.ingest_event.
    CASE split_part(p_event_type, '.', 1)
        WHEN 'customer'     THEN PERFORM paddle.project_customer(v_id, p_event_id, p_occurred_at, p_data, p_environment);
        WHEN 'subscription' THEN PERFORM paddle.project_subscription(v_id, p_event_id, p_occurred_at, p_data, p_environment);
        WHEN 'transaction'  THEN PERFORM paddle.project_transaction(v_id, p_event_id, p_occurred_at, p_data, p_environment);
        WHEN 'adjustment'   THEN PERFORM paddle.project_adjustment(v_id, p_event_id, p_occurred_at, p_data, p_environment);
        WHEN 'address'      THEN PERFORM paddle.project_address(v_id, p_event_id, p_occurred_at, p_data, p_environment);
        WHEN 'business'     THEN PERFORM paddle.project_business(v_id, p_event_id, p_occurred_at, p_data, p_environment);
        WHEN 'product'      THEN PERFORM paddle.project_product(v_id, p_event_id, p_occurred_at, p_data, p_environment);
        WHEN 'price'        THEN PERFORM paddle.project_price(v_id, p_event_id, p_occurred_at, p_data, p_environment);
        WHEN 'discount'     THEN PERFORM paddle.project_discount(v_id, p_event_id, p_occurred_at, p_data, p_environment);
        ELSE NULL;  -- other event types are stored only
    END CASE;
END
$$;

COMMENT ON FUNCTION paddle.project_event(text, text, timestamptz, jsonb, text) IS
    'Project the data snapshot of one event into the state tables by the event type''s entity (part before the first dot): customer, subscription, transaction, adjustment, address, business, product, price, discount; other types do nothing. Data that is not an object or lacks an id projects nothing. Older snapshots never overwrite newer ones.';

CREATE OR REPLACE FUNCTION paddle.ingest_event(
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
DECLARE
    v_result text := 'stored';
BEGIN
    INSERT INTO paddle.payment_events
        (event_id, endpoint_id, environment, notification_id, event_type, occurred_at, payload)
    VALUES
        (p_event_id, p_endpoint_id, p_environment, p_notification_id, p_event_type, p_occurred_at, p_payload)
    ON CONFLICT (event_id) DO NOTHING;

    IF NOT FOUND THEN
        -- The id is taken. Separate IFs: SQL does not promise to evaluate OR's operands in order.
        IF p_environment <> 'live' THEN
            RETURN 'duplicate';
        END IF;
        IF NOT paddle.replace_sandbox_event(p_event_id, p_event_type, p_occurred_at, p_notification_id,
                                            p_endpoint_id, p_payload) THEN
            RETURN 'duplicate';
        END IF;
        v_result := 'replaced_sandbox';
    END IF;

    -- Only entity types that project pay for the subtransaction of the exception block.
    -- Keep this list in sync with the CASE in paddle.project_event.
    IF split_part(p_event_type, '.', 1) IN ('customer', 'subscription', 'transaction', 'adjustment', 'address',
                                            'business', 'product', 'price', 'discount') THEN
        BEGIN
            PERFORM paddle.project_event(p_event_id, p_event_type, p_occurred_at, p_payload -> 'data',
                                         p_environment);
        EXCEPTION WHEN OTHERS THEN
            -- Only the data's own faults are recorded. Anything else (contention, a missing grant or
            -- table, I/O) fails the whole delivery: the worker answers 5xx, Paddle retries, and the state
            -- is never acknowledged stale.
            IF NOT paddle.projection_failure_is_data(SQLSTATE) THEN
                RAISE;
            END IF;
            -- The block's savepoint was rolled back: no partial projection rows remain; keep the event.
            UPDATE paddle.payment_events
               SET projection_error = SQLSTATE || ': ' || SQLERRM
             WHERE event_id = p_event_id;
        END;
    END IF;

    RETURN v_result;
END
$$;

CREATE OR REPLACE FUNCTION paddle.replace_sandbox_event(p_event_id text, p_event_type text, p_occurred_at timestamptz,
                                             p_notification_id text, p_endpoint_id text, p_payload jsonb)
    RETURNS boolean
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- A live redelivery (the usual reason to get here) stops at this read, without locks.
    IF NOT EXISTS (SELECT FROM paddle.payment_events WHERE event_id = p_event_id AND environment = 'sandbox') THEN
        RETURN false;
    END IF;
    -- The state tables before the event row, in paddle.reproject's order: the other order could deadlock
    -- with a rebuild that holds the tables and then updates this event's projection_error.
    LOCK TABLE paddle.customers, paddle.subscriptions, paddle.subscription_items, paddle.transactions,
               paddle.transaction_items, paddle.adjustments, paddle.adjustment_items, paddle.addresses,
               paddle.businesses, paddle.products, paddle.prices, paddle.discounts IN ROW EXCLUSIVE MODE;
    -- Under READ COMMITTED a concurrent replacement makes this one wait for the row and re-check it, and
    -- find it live: one of two live deliveries replaces, the other is a duplicate.
    UPDATE paddle.payment_events
       SET endpoint_id = p_endpoint_id, environment = 'live', notification_id = p_notification_id,
           event_type = p_event_type, occurred_at = p_occurred_at, received_at = now(), payload = p_payload,
           projection_error = NULL
     WHERE event_id = p_event_id AND environment = 'sandbox';
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    -- What the sandbox event's projection wrote and later snapshots have not replaced.
    WITH gone AS (DELETE FROM paddle.subscriptions
                   WHERE event_id = p_event_id AND environment = 'sandbox' RETURNING id)
    DELETE FROM paddle.subscription_items WHERE subscription_id IN (SELECT id FROM gone);
    WITH gone AS (DELETE FROM paddle.transactions
                   WHERE event_id = p_event_id AND environment = 'sandbox' RETURNING id)
    DELETE FROM paddle.transaction_items WHERE transaction_id IN (SELECT id FROM gone);
    WITH gone AS (DELETE FROM paddle.adjustments
                   WHERE event_id = p_event_id AND environment = 'sandbox' RETURNING id)
    DELETE FROM paddle.adjustment_items WHERE adjustment_id IN (SELECT id FROM gone);
    DELETE FROM paddle.customers WHERE event_id = p_event_id AND environment = 'sandbox';
    DELETE FROM paddle.addresses WHERE event_id = p_event_id AND environment = 'sandbox';
    DELETE FROM paddle.businesses WHERE event_id = p_event_id AND environment = 'sandbox';
    DELETE FROM paddle.products WHERE event_id = p_event_id AND environment = 'sandbox';
    DELETE FROM paddle.prices WHERE event_id = p_event_id AND environment = 'sandbox';
    DELETE FROM paddle.discounts WHERE event_id = p_event_id AND environment = 'sandbox';
    RETURN true;
END
$$;

-- One stored event projected again, its outcome recorded on it: what paddle.reproject's replay loop and
-- paddle.reproject_event each wrote out until now, shared with them and with this migration's projection of
-- the events already stored.
CREATE FUNCTION paddle.project_stored_event(p_event_id text, p_event_type text, p_occurred_at timestamptz,
                                            p_data jsonb, p_environment text, p_projection_error text)
    RETURNS text
    LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM paddle.project_event(p_event_id, p_event_type, p_occurred_at, p_data, p_environment);
    IF p_projection_error IS NOT NULL THEN
        UPDATE paddle.payment_events SET projection_error = NULL WHERE event_id = p_event_id;
    END IF;
    RETURN NULL;
EXCEPTION WHEN OTHERS THEN
    -- As in paddle.ingest_event: anything but the data's own fault is raised (a rebuild then changes
    -- nothing); a data error is recorded on the event, with its savepoint rolled back.
    IF NOT paddle.projection_failure_is_data(SQLSTATE) THEN
        RAISE;
    END IF;
    UPDATE paddle.payment_events
       SET projection_error = SQLSTATE || ': ' || SQLERRM
     WHERE event_id = p_event_id;
    RETURN SQLSTATE || ': ' || SQLERRM;
END
$$;

COMMENT ON FUNCTION paddle.project_stored_event(text, text, timestamptz, jsonb, text, text) IS
    'Project one stored event (paddle.project_event) and record the outcome in its projection_error (p_projection_error: the value stored now, cleared on success); returns NULL, or the error text of a failure the data causes (paddle.projection_failure_is_data). Raises on any other failure.';

CREATE OR REPLACE FUNCTION paddle.reproject_event(p_event_id text)
    RETURNS text
    LANGUAGE plpgsql
AS $$
DECLARE
    v_event paddle.payment_events%ROWTYPE;
BEGIN
    -- The state tables before the event row, in paddle.reproject's order: the other order could deadlock
    -- with a rebuild that holds the tables and then updates this event's projection_error.
    LOCK TABLE paddle.customers, paddle.subscriptions, paddle.subscription_items, paddle.transactions,
               paddle.transaction_items, paddle.adjustments, paddle.adjustment_items, paddle.addresses,
               paddle.businesses, paddle.products, paddle.prices, paddle.discounts IN ROW EXCLUSIVE MODE;
    SELECT * INTO v_event FROM paddle.payment_events WHERE event_id = p_event_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    RETURN coalesce(paddle.project_stored_event(v_event.event_id, v_event.event_type, v_event.occurred_at,
                                                v_event.payload -> 'data', v_event.environment,
                                                v_event.projection_error),
                    'ok');
END
$$;

CREATE OR REPLACE FUNCTION paddle.reproject(p_since timestamptz DEFAULT NULL)
    RETURNS bigint
    LANGUAGE plpgsql
AS $$
DECLARE
    v_event record;
    v_count bigint := 0;
BEGIN
    -- Later statements must see every event committed before the lock was granted: that needs a fresh
    -- snapshot per statement, i.e. READ COMMITTED.
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'paddle.reproject() must run in a READ COMMITTED transaction (this one is %)',
            current_setting('transaction_isolation') USING ERRCODE = 'invalid_transaction_state';
    END IF;

    -- Conflicts with the ROW EXCLUSIVE lock of every projecting ingest (and with itself), not with readers:
    -- ingests that already wrote state rows finish first, later ones wait for our commit and then apply
    -- their snapshot with the usual newer-wins guard. Taken before payment_events is read.
    LOCK TABLE paddle.customers, paddle.subscriptions, paddle.subscription_items, paddle.transactions,
               paddle.transaction_items, paddle.adjustments, paddle.adjustment_items, paddle.addresses,
               paddle.businesses, paddle.products, paddle.prices, paddle.discounts
        IN SHARE ROW EXCLUSIVE MODE;

    -- The events to replay (their ids), chosen after the lock so that every committed event is seen.
    CREATE TEMPORARY TABLE IF NOT EXISTS pg_temp.paddle_reproject_events (event_id text PRIMARY KEY)
        ON COMMIT DROP;
    TRUNCATE pg_temp.paddle_reproject_events;

    IF p_since IS NULL THEN
        DELETE FROM paddle.subscription_items;
        DELETE FROM paddle.transaction_items;
        DELETE FROM paddle.adjustment_items;
        DELETE FROM paddle.customers;
        DELETE FROM paddle.subscriptions;
        DELETE FROM paddle.transactions;
        DELETE FROM paddle.adjustments;
        DELETE FROM paddle.addresses;
        DELETE FROM paddle.businesses;
        DELETE FROM paddle.products;
        DELETE FROM paddle.prices;
        DELETE FROM paddle.discounts;

        INSERT INTO pg_temp.paddle_reproject_events (event_id)
        SELECT e.event_id FROM paddle.payment_events e
        WHERE split_part(e.event_type, '.', 1) IN ('customer', 'subscription', 'transaction', 'adjustment', 'address',
                                                   'business', 'product', 'price', 'discount');
    ELSE
        -- Entities (type + id) with an event at or after p_since: deleted, then rebuilt from all their events.
        CREATE TEMPORARY TABLE IF NOT EXISTS pg_temp.paddle_reproject_entities (entity text, id text,
            PRIMARY KEY (entity, id)) ON COMMIT DROP;
        TRUNCATE pg_temp.paddle_reproject_entities;
        INSERT INTO pg_temp.paddle_reproject_entities (entity, id)
        SELECT DISTINCT split_part(e.event_type, '.', 1), paddle.to_key(e.payload -> 'data' ->> 'id')
        FROM paddle.payment_events e
        WHERE e.occurred_at >= p_since
          AND split_part(e.event_type, '.', 1) IN ('customer', 'subscription', 'transaction', 'adjustment', 'address',
                                                   'business', 'product', 'price', 'discount')
          AND paddle.to_key(e.payload -> 'data' ->> 'id') IS NOT NULL;

        DELETE FROM paddle.customers t USING pg_temp.paddle_reproject_entities r
            WHERE r.entity = 'customer' AND t.id = r.id;
        DELETE FROM paddle.subscription_items t USING pg_temp.paddle_reproject_entities r
            WHERE r.entity = 'subscription' AND t.subscription_id = r.id;
        DELETE FROM paddle.subscriptions t USING pg_temp.paddle_reproject_entities r
            WHERE r.entity = 'subscription' AND t.id = r.id;
        DELETE FROM paddle.transaction_items t USING pg_temp.paddle_reproject_entities r
            WHERE r.entity = 'transaction' AND t.transaction_id = r.id;
        DELETE FROM paddle.transactions t USING pg_temp.paddle_reproject_entities r
            WHERE r.entity = 'transaction' AND t.id = r.id;
        DELETE FROM paddle.adjustment_items t USING pg_temp.paddle_reproject_entities r
            WHERE r.entity = 'adjustment' AND t.adjustment_id = r.id;
        DELETE FROM paddle.adjustments t USING pg_temp.paddle_reproject_entities r
            WHERE r.entity = 'adjustment' AND t.id = r.id;
        DELETE FROM paddle.addresses t USING pg_temp.paddle_reproject_entities r
            WHERE r.entity = 'address' AND t.id = r.id;
        DELETE FROM paddle.businesses t USING pg_temp.paddle_reproject_entities r
            WHERE r.entity = 'business' AND t.id = r.id;
        DELETE FROM paddle.products t USING pg_temp.paddle_reproject_entities r
            WHERE r.entity = 'product' AND t.id = r.id;
        DELETE FROM paddle.prices t USING pg_temp.paddle_reproject_entities r
            WHERE r.entity = 'price' AND t.id = r.id;
        DELETE FROM paddle.discounts t USING pg_temp.paddle_reproject_entities r
            WHERE r.entity = 'discount' AND t.id = r.id;

        INSERT INTO pg_temp.paddle_reproject_events (event_id)
        SELECT e.event_id FROM paddle.payment_events e
        JOIN pg_temp.paddle_reproject_entities r
          ON r.entity = split_part(e.event_type, '.', 1) AND r.id = paddle.to_key(e.payload -> 'data' ->> 'id');
    END IF;

    FOR v_event IN
        SELECT e.event_id, e.event_type, e.occurred_at, e.payload -> 'data' AS data, e.environment,
               e.projection_error
        FROM paddle.payment_events e
        JOIN pg_temp.paddle_reproject_events r ON r.event_id = e.event_id
        ORDER BY e.occurred_at, e.event_id
    LOOP
        v_count := v_count + 1;
        PERFORM paddle.project_stored_event(v_event.event_id, v_event.event_type, v_event.occurred_at,
                                            v_event.data, v_event.environment, v_event.projection_error);
    END LOOP;

    TRUNCATE pg_temp.paddle_reproject_events;
    RETURN v_count;
END
$$;

COMMENT ON FUNCTION paddle.reproject(timestamptz) IS
    'Rebuild the state tables from payment_events in (occurred_at, event_id) order, inside the caller''s transaction (READ COMMITTED), while the receiver keeps running. p_since NULL: every state row is deleted and every customer/subscription/transaction/adjustment/address/business/product/price/discount event replayed. p_since given: only entities (entity type + data.id) with an event at or after p_since are deleted and rebuilt from all their events. Locks the state tables IN SHARE ROW EXCLUSIVE MODE first (readers go on and see the old rows until commit; ingests wait, then apply newer-wins). projection_error is set or cleared per event as in ingest_event/reproject_event. Returns the number of events replayed.';

CREATE OR REPLACE VIEW paddle.entity_snapshots AS
SELECT x.environment,
       x.entity,
       paddle.to_key(d.data ->> 'id') AS entity_id,
       x.event_id,
       x.event_type,
       x.occurred_at,
       d.data ->> 'status'           AS status,
       d.data,
       x.projection_error
FROM (
    SELECT 'customer'::text AS entity, e.* FROM paddle.payment_events e WHERE e.event_type LIKE 'customer.%'
    UNION ALL
    SELECT 'subscription', e.* FROM paddle.payment_events e WHERE e.event_type LIKE 'subscription.%'
    UNION ALL
    SELECT 'transaction', e.* FROM paddle.payment_events e WHERE e.event_type LIKE 'transaction.%'
    UNION ALL
    SELECT 'adjustment', e.* FROM paddle.payment_events e WHERE e.event_type LIKE 'adjustment.%'
    UNION ALL
    SELECT 'address', e.* FROM paddle.payment_events e WHERE e.event_type LIKE 'address.%'
    UNION ALL
    SELECT 'business', e.* FROM paddle.payment_events e WHERE e.event_type LIKE 'business.%'
    UNION ALL
    SELECT 'product', e.* FROM paddle.payment_events e WHERE e.event_type LIKE 'product.%'
    UNION ALL
    SELECT 'price', e.* FROM paddle.payment_events e WHERE e.event_type LIKE 'price.%'
    UNION ALL
    SELECT 'discount', e.* FROM paddle.payment_events e WHERE e.event_type LIKE 'discount.%'
) AS x
CROSS JOIN LATERAL (SELECT x.payload -> 'data' AS data OFFSET 0) AS d
WHERE paddle.to_key(d.data ->> 'id') IS NOT NULL;

COMMENT ON VIEW paddle.entity_snapshots IS
    'Building block: every stored customer/subscription/transaction/adjustment/address/business/product/price/discount snapshot (event types customer.*, subscription.*, transaction.*, adjustment.*, address.*, business.*, product.*, price.*, discount.*; entity_id = data.id, rows without a usable id left out), with its environment, occurred_at, data.status and data.';

-------------------------------------------------------------------------------------------------------------
-- MRR at the price of the customer's country
-------------------------------------------------------------------------------------------------------------

-- One expression of immutable functions, which the planner inlines into each call site: it runs for every item
-- of every subscription snapshot whose country is known.
CREATE FUNCTION paddle.country_price(p_price jsonb, p_currency_code text, p_country_code text) RETURNS jsonb
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE WHEN p_currency_code IS NOT NULL AND p_country_code IS NOT NULL THEN jsonb_path_query_first(
    p_price,
    'strict $.unit_price_overrides[*] ? (@.unit_price.currency_code == $currency && @.country_codes[*] == $country
                                         && @.unit_price.amount like_regex "^-?[0-9]{1,30}$").unit_price',
    jsonb_object(ARRAY['currency', p_currency_code, 'country', p_country_code]),
    true) END;

COMMENT ON FUNCTION paddle.country_price(jsonb, text, text) IS
    'Building block: the unit_price ({amount, currency_code}) of the first unit_price_overrides entry of a Paddle price object that lists the country, is in the given currency and has an amount that is a string of an integer; NULL if none (or the country or currency is NULL, or the price is malformed). Never raises.';

CREATE FUNCTION paddle.subscription_mrr_items(p_data jsonb, p_country_code text)
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
           x.amount * x.quantity * (CASE x.interval WHEN 'day' THEN 1461 WHEN 'week' THEN 1461 ELSE 1 END)
               -- numeric before the product: a frequency near 2^31 times 336 overflows an integer
               / ((CASE x.interval WHEN 'day' THEN 48 WHEN 'week' THEN 336 WHEN 'month' THEN 1 ELSE 12 END)::numeric
                  * x.frequency)
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
    'Building block: the recurring items of a subscription snapshot (payment_events.payload->''data''), as listed, with their monthly amount in minor units (exact, not rounded): unit price x quantity x factor / frequency, factor month 1, year 1/12, week 1461/336, day 1461/48. The unit price is the override for p_country_code (the country of the subscription''s address; NULL: unknown) in the subscription currency; else the base price when it is in that currency, else the first override in that currency, else the base price in its own. Items whose status is not active, with recurring = false, without price id, billing cycle or amount are left out. Never raises.';

CREATE OR REPLACE FUNCTION paddle.subscription_mrr_items(p_data jsonb)
    RETURNS TABLE (price_id text, product_id text, quantity integer, currency_code text, unit_amount numeric,
                   billing_interval text, billing_frequency integer, monthly_amount numeric)
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT * FROM paddle.subscription_mrr_items(p_data, NULL::text)
$$;

COMMENT ON FUNCTION paddle.subscription_mrr_items(jsonb) IS
    'Building block: paddle.subscription_mrr_items(data, NULL), for a subscription whose country is not known.';

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
                THEN coalesce((o.prev_list_mrr ->> c.currency_code)::numeric, 0) ELSE 0 END AS prev_mrr_minor
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
               CASE WHEN f.had_mrr_before THEN 'reactivated' ELSE 'new' END
           WHEN f.prev_mrr_minor > 0 AND f.mrr_minor = 0 THEN 'churned'
           WHEN f.prev_mrr_minor > 0 AND f.mrr_minor > f.prev_mrr_minor THEN 'expansion'
           WHEN f.prev_mrr_minor > 0 AND f.mrr_minor < f.prev_mrr_minor THEN 'contraction'
       END AS movement
FROM flagged f;

COMMENT ON VIEW paddle.subscription_history IS
    'Building block: every subscription snapshot (seq = its position in (occurred_at, event_id) order) per currency present in it or in the previous snapshot, with list_mrr_minor (recurring items, monthly, minor units, exact, at the prices of the country of the subscription''s address as it is now), mrr_minor (list_mrr_minor when status is active or past_due, else 0), the previous snapshot''s status and mrr_minor, and the movement it causes: new, expansion, contraction, churned, reactivated or NULL.';

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
    GROUP BY pe.environment, s.id, s.status, s.customer_id, coalesce(m.currency_code, s.currency_code)
)
SELECT environment,
       currency_code,
       count(DISTINCT id) FILTER (WHERE status = 'active') AS active_subscriptions,
       count(DISTINCT customer_id) FILTER (WHERE status = 'active') AS active_customers,
       paddle.to_major(round(coalesce(sum(mrr_minor) FILTER (WHERE status = 'active'), 0)), currency_code) AS mrr,
       paddle.to_major(12 * round(coalesce(sum(mrr_minor) FILTER (WHERE status = 'active'), 0)), currency_code) AS arr,
       count(DISTINCT id) FILTER (WHERE status = 'past_due') AS past_due_subscriptions,
       paddle.to_major(round(coalesce(sum(mrr_minor) FILTER (WHERE status = 'past_due'), 0)), currency_code)
           AS past_due_mrr
FROM subs
GROUP BY environment, currency_code;

COMMENT ON VIEW paddle.mrr IS
    'Monthly recurring revenue now, per environment and currency: sum over active subscriptions (and separately past_due ones) of paddle.subscription_mrr_items of their latest snapshot at the prices of their address''s country, rounded half away from zero to the minor unit once per row; arr = 12 x mrr.';

-------------------------------------------------------------------------------------------------------------
-- The events of the new entities stored so far (a data error is recorded on its event as for a delivery).
-- Deliveries in flight meanwhile run the functions as they were and project nothing: 0012 catches them.
-------------------------------------------------------------------------------------------------------------

SELECT count(*) FILTER (WHERE e.data_error IS NULL) AS projected, count(e.data_error) AS data_errors
FROM (SELECT paddle.project_stored_event(p.event_id, p.event_type, p.occurred_at, p.payload -> 'data',
                                         p.environment, p.projection_error) AS data_error
      FROM paddle.payment_events p
      WHERE split_part(p.event_type, '.', 1) IN ('address', 'business', 'product', 'price', 'discount')
      ORDER BY p.occurred_at, p.event_id) AS e;
