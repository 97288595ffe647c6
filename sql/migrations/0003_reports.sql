-- paddlehook 0003_reports: billing reports over the event log and the state tables.
--
-- Runs once, inside the migration runner's transaction (no BEGIN/COMMIT here). PostgreSQL 15, plain SQL views.
-- The reference with definitions, formulas and example output is docs/reports.md.
--
-- Overview
--   paddle.currencies           ISO 4217 minor-unit exponent per currency; paddle.to_major(amount, currency)
--   paddle.report_settings      tunables read by the views (past_due_grace_days)
--   paddle.report_catalog       the reports `paddlehook report NAME` runs: view, date column, ORDER BY
--   report views (all have an environment column; money in major units as exact numeric):
--     revenue_daily, mrr, mrr_movements, subscription_status_counts, churn_monthly, dunning, dunning_summary,
--     refunds, entitlements, attribution
--   building blocks (minor units): views entity_snapshots, subscription_history, revenue_transactions,
--     adjustment_facts; functions subscription_mrr_items(data), price_override(price, currency),
--     currency_exponent(currency)
--   paddle.reproject(p_since)   rebuild the state tables from payment_events while the receiver keeps running
--
-- Conventions
--   * Money in views is in the currency's major unit, numeric with exactly the currency's exponent as scale
--     (30.00 USD, 1500 JPY, 12.345 BHD), converted from exact minor-unit sums: never float.
--   * Days and months are UTC calendar dates (date columns), whatever the session TimeZone.
--   * environment is always the one of the payment_events row that carried the snapshot (sandbox and live never mix).
--   * Snapshot order is (occurred_at, event_id), the same order as the newer-snapshot-wins guard of 0001.
--   * Scale: payment_events is read once per entity type (LIKE 'entity.%' branches), each payload decompressed
--     once; derived sets are joined only on event_id or replaced by window functions, so that no plan depends
--     on a row estimate of a JSON predicate (a misestimate there turned joins into nested loops).

-------------------------------------------------------------------------------------------------------------
-- Currencies
-------------------------------------------------------------------------------------------------------------

CREATE TABLE paddle.currencies (
    currency_code text     PRIMARY KEY CHECK (currency_code ~ '^[A-Z]{3}$'),
    exponent      smallint NOT NULL CHECK (exponent BETWEEN 0 AND 4),
    name          text
);

COMMENT ON TABLE paddle.currencies IS
    'ISO 4217 (list one) active currencies with their minor-unit exponent: amount in minor units / 10^exponent = amount in major units. Codes whose minor unit is N.A. (XAU, XDR, XTS, ...) are left out. Add or fix rows with INSERT/UPDATE; unknown currencies convert with exponent 2.';
COMMENT ON COLUMN paddle.currencies.exponent IS 'Number of decimals of the major unit: 2 for USD, 0 for JPY, 3 for BHD, 4 for CLF.';

INSERT INTO paddle.currencies (currency_code, exponent, name) VALUES
    ('AED', 2, 'UAE Dirham'),
    ('AFN', 2, 'Afghani'),
    ('ALL', 2, 'Lek'),
    ('AMD', 2, 'Armenian Dram'),
    ('ANG', 2, 'Netherlands Antillean Guilder'),
    ('AOA', 2, 'Kwanza'),
    ('ARS', 2, 'Argentine Peso'),
    ('AUD', 2, 'Australian Dollar'),
    ('AWG', 2, 'Aruban Florin'),
    ('AZN', 2, 'Azerbaijan Manat'),
    ('BAM', 2, 'Convertible Mark'),
    ('BBD', 2, 'Barbados Dollar'),
    ('BDT', 2, 'Taka'),
    ('BGN', 2, 'Bulgarian Lev'),
    ('BHD', 3, 'Bahraini Dinar'),
    ('BIF', 0, 'Burundi Franc'),
    ('BMD', 2, 'Bermudian Dollar'),
    ('BND', 2, 'Brunei Dollar'),
    ('BOB', 2, 'Boliviano'),
    ('BOV', 2, 'Mvdol'),
    ('BRL', 2, 'Brazilian Real'),
    ('BSD', 2, 'Bahamian Dollar'),
    ('BTN', 2, 'Ngultrum'),
    ('BWP', 2, 'Pula'),
    ('BYN', 2, 'Belarusian Ruble'),
    ('BZD', 2, 'Belize Dollar'),
    ('CAD', 2, 'Canadian Dollar'),
    ('CDF', 2, 'Congolese Franc'),
    ('CHE', 2, 'WIR Euro'),
    ('CHF', 2, 'Swiss Franc'),
    ('CHW', 2, 'WIR Franc'),
    ('CLF', 4, 'Unidad de Fomento'),
    ('CLP', 0, 'Chilean Peso'),
    ('CNY', 2, 'Yuan Renminbi'),
    ('COP', 2, 'Colombian Peso'),
    ('COU', 2, 'Unidad de Valor Real'),
    ('CRC', 2, 'Costa Rican Colon'),
    ('CUC', 2, 'Peso Convertible'),
    ('CUP', 2, 'Cuban Peso'),
    ('CVE', 2, 'Cabo Verde Escudo'),
    ('CZK', 2, 'Czech Koruna'),
    ('DJF', 0, 'Djibouti Franc'),
    ('DKK', 2, 'Danish Krone'),
    ('DOP', 2, 'Dominican Peso'),
    ('DZD', 2, 'Algerian Dinar'),
    ('EGP', 2, 'Egyptian Pound'),
    ('ERN', 2, 'Nakfa'),
    ('ETB', 2, 'Ethiopian Birr'),
    ('EUR', 2, 'Euro'),
    ('FJD', 2, 'Fiji Dollar'),
    ('FKP', 2, 'Falkland Islands Pound'),
    ('GBP', 2, 'Pound Sterling'),
    ('GEL', 2, 'Lari'),
    ('GHS', 2, 'Ghana Cedi'),
    ('GIP', 2, 'Gibraltar Pound'),
    ('GMD', 2, 'Dalasi'),
    ('GNF', 0, 'Guinean Franc'),
    ('GTQ', 2, 'Quetzal'),
    ('GYD', 2, 'Guyana Dollar'),
    ('HKD', 2, 'Hong Kong Dollar'),
    ('HNL', 2, 'Lempira'),
    ('HTG', 2, 'Gourde'),
    ('HUF', 2, 'Forint'),
    ('IDR', 2, 'Rupiah'),
    ('ILS', 2, 'New Israeli Sheqel'),
    ('INR', 2, 'Indian Rupee'),
    ('IQD', 3, 'Iraqi Dinar'),
    ('IRR', 2, 'Iranian Rial'),
    ('ISK', 0, 'Iceland Krona'),
    ('JMD', 2, 'Jamaican Dollar'),
    ('JOD', 3, 'Jordanian Dinar'),
    ('JPY', 0, 'Yen'),
    ('KES', 2, 'Kenyan Shilling'),
    ('KGS', 2, 'Som'),
    ('KHR', 2, 'Riel'),
    ('KMF', 0, 'Comorian Franc'),
    ('KPW', 2, 'North Korean Won'),
    ('KRW', 0, 'Won'),
    ('KWD', 3, 'Kuwaiti Dinar'),
    ('KYD', 2, 'Cayman Islands Dollar'),
    ('KZT', 2, 'Tenge'),
    ('LAK', 2, 'Lao Kip'),
    ('LBP', 2, 'Lebanese Pound'),
    ('LKR', 2, 'Sri Lanka Rupee'),
    ('LRD', 2, 'Liberian Dollar'),
    ('LSL', 2, 'Loti'),
    ('LYD', 3, 'Libyan Dinar'),
    ('MAD', 2, 'Moroccan Dirham'),
    ('MDL', 2, 'Moldovan Leu'),
    ('MGA', 2, 'Malagasy Ariary'),
    ('MKD', 2, 'Denar'),
    ('MMK', 2, 'Kyat'),
    ('MNT', 2, 'Tugrik'),
    ('MOP', 2, 'Pataca'),
    ('MRU', 2, 'Ouguiya'),
    ('MUR', 2, 'Mauritius Rupee'),
    ('MVR', 2, 'Rufiyaa'),
    ('MWK', 2, 'Malawi Kwacha'),
    ('MXN', 2, 'Mexican Peso'),
    ('MXV', 2, 'Mexican Unidad de Inversion (UDI)'),
    ('MYR', 2, 'Malaysian Ringgit'),
    ('MZN', 2, 'Mozambique Metical'),
    ('NAD', 2, 'Namibia Dollar'),
    ('NGN', 2, 'Naira'),
    ('NIO', 2, 'Cordoba Oro'),
    ('NOK', 2, 'Norwegian Krone'),
    ('NPR', 2, 'Nepalese Rupee'),
    ('NZD', 2, 'New Zealand Dollar'),
    ('OMR', 3, 'Rial Omani'),
    ('PAB', 2, 'Balboa'),
    ('PEN', 2, 'Sol'),
    ('PGK', 2, 'Kina'),
    ('PHP', 2, 'Philippine Peso'),
    ('PKR', 2, 'Pakistan Rupee'),
    ('PLN', 2, 'Zloty'),
    ('PYG', 0, 'Guarani'),
    ('QAR', 2, 'Qatari Rial'),
    ('RON', 2, 'Romanian Leu'),
    ('RSD', 2, 'Serbian Dinar'),
    ('RUB', 2, 'Russian Ruble'),
    ('RWF', 0, 'Rwanda Franc'),
    ('SAR', 2, 'Saudi Riyal'),
    ('SBD', 2, 'Solomon Islands Dollar'),
    ('SCR', 2, 'Seychelles Rupee'),
    ('SDG', 2, 'Sudanese Pound'),
    ('SEK', 2, 'Swedish Krona'),
    ('SGD', 2, 'Singapore Dollar'),
    ('SHP', 2, 'Saint Helena Pound'),
    ('SLE', 2, 'Leone'),
    ('SLL', 2, 'Leone'),
    ('SOS', 2, 'Somali Shilling'),
    ('SRD', 2, 'Surinam Dollar'),
    ('SSP', 2, 'South Sudanese Pound'),
    ('STN', 2, 'Dobra'),
    ('SVC', 2, 'El Salvador Colon'),
    ('SYP', 2, 'Syrian Pound'),
    ('SZL', 2, 'Lilangeni'),
    ('THB', 2, 'Baht'),
    ('TJS', 2, 'Somoni'),
    ('TMT', 2, 'Turkmenistan New Manat'),
    ('TND', 3, 'Tunisian Dinar'),
    ('TOP', 2, 'Pa’anga'),
    ('TRY', 2, 'Turkish Lira'),
    ('TTD', 2, 'Trinidad and Tobago Dollar'),
    ('TWD', 2, 'New Taiwan Dollar'),
    ('TZS', 2, 'Tanzanian Shilling'),
    ('UAH', 2, 'Hryvnia'),
    ('UGX', 0, 'Uganda Shilling'),
    ('USD', 2, 'US Dollar'),
    ('USN', 2, 'US Dollar (Next day)'),
    ('UYI', 0, 'Uruguay Peso en Unidades Indexadas (UI)'),
    ('UYU', 2, 'Peso Uruguayo'),
    ('UYW', 4, 'Unidad Previsional'),
    ('UZS', 2, 'Uzbekistan Sum'),
    ('VED', 2, 'Bolívar Soberano'),
    ('VES', 2, 'Bolívar Soberano'),
    ('VND', 0, 'Dong'),
    ('VUV', 0, 'Vatu'),
    ('WST', 2, 'Tala'),
    ('XAF', 0, 'CFA Franc BEAC'),
    ('XCD', 2, 'East Caribbean Dollar'),
    ('XCG', 2, 'Caribbean Guilder'),
    ('XOF', 0, 'CFA Franc BCEAO'),
    ('XPF', 0, 'CFP Franc'),
    ('YER', 2, 'Yemeni Rial'),
    ('ZAR', 2, 'Rand'),
    ('ZMW', 2, 'Zambian Kwacha'),
    ('ZWG', 2, 'Zimbabwe Gold');

-- Transition periods: ANG (replaced by XCG), SLL (replaced by SLE) and CUC stay listed so older data converts.

CREATE FUNCTION paddle.currency_exponent(p_currency_code text) RETURNS smallint
    LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT coalesce((SELECT c.exponent FROM paddle.currencies c WHERE c.currency_code = upper(p_currency_code)),
                    2::smallint)
$$;

COMMENT ON FUNCTION paddle.currency_exponent(text) IS
    'Minor-unit exponent of a currency from paddle.currencies (case-insensitive code); 2 when the currency is unknown or NULL.';

CREATE FUNCTION paddle.to_major(amount numeric, currency_code text) RETURNS numeric
    LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    -- Multiplying by 10^-e is exact; the rounding only fixes the scale: an integer amount gets exactly e decimals,
    -- a fractional one keeps all its digits (scale(amount) + e).
    SELECT round(amount * power(10::numeric, -x.e), scale(amount) + x.e)
    FROM (SELECT paddle.currency_exponent(currency_code) AS e) AS x
$$;

COMMENT ON FUNCTION paddle.to_major(numeric, text) IS
    'Minor-unit amount -> major units, exact numeric with the currency''s exponent as scale: to_major(3000, ''USD'') = 30.00, to_major(1500, ''JPY'') = 1500, to_major(12345, ''BHD'') = 12.345. Unknown currency: exponent 2. NULL amount -> NULL.';

-------------------------------------------------------------------------------------------------------------
-- Settings
-------------------------------------------------------------------------------------------------------------

CREATE TABLE paddle.report_settings (
    key   text PRIMARY KEY,
    value text NOT NULL,
    CONSTRAINT report_settings_grace_days CHECK (key <> 'past_due_grace_days' OR value ~ '^[0-9]{1,4}$')
);

COMMENT ON TABLE paddle.report_settings IS
    'Tunables of the report views; change with UPDATE paddle.report_settings SET value = ''14'' WHERE key = ''past_due_grace_days''.';

INSERT INTO paddle.report_settings (key, value) VALUES ('past_due_grace_days', '7');

-------------------------------------------------------------------------------------------------------------
-- Building blocks
-------------------------------------------------------------------------------------------------------------

-- Every stored snapshot of a projected entity, in the shape the reports need: one branch per entity, each
-- selecting its event types with LIKE 'entity.%' (estimated from the event_type statistics; an index range
-- scan under the C collation), so that a filter on entity prunes the other branches. payload -> 'data' is
-- evaluated once per row (OFFSET 0 keeps the planner from copying the expression into each use, which would
-- decompress the payload again every time). Data that is not an object has no id: such events are left out,
-- as paddle.project_event leaves them out.
CREATE VIEW paddle.entity_snapshots AS
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
) AS x
CROSS JOIN LATERAL (SELECT x.payload -> 'data' AS data OFFSET 0) AS d
WHERE paddle.to_key(d.data ->> 'id') IS NOT NULL;

COMMENT ON VIEW paddle.entity_snapshots IS
    'Building block: every stored customer/subscription/transaction/adjustment snapshot (event types customer.*, subscription.*, transaction.*, adjustment.*; entity_id = data.id, rows without a usable id left out), with its environment, occurred_at, data.status and data.';

-- Recurring amount of one subscription snapshot, per item, normalised to a month.
CREATE FUNCTION paddle.price_override(p_price jsonb, p_currency_code text) RETURNS jsonb
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT ov.o -> 'unit_price'
    FROM jsonb_array_elements(paddle.as_array(p_price -> 'unit_price_overrides')) WITH ORDINALITY AS ov(o, k)
    WHERE ov.o -> 'unit_price' ->> 'currency_code' = p_currency_code
      AND paddle.to_amount(ov.o -> 'unit_price' ->> 'amount') IS NOT NULL
    ORDER BY ov.k
    LIMIT 1
$$;

COMMENT ON FUNCTION paddle.price_override(jsonb, text) IS
    'Building block: the unit_price ({amount, currency_code}) of the first unit_price_overrides entry of a Paddle price object in the given currency, NULL if none.';

CREATE FUNCTION paddle.subscription_mrr_items(p_data jsonb)
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
               / ((CASE x.interval WHEN 'day' THEN 48 WHEN 'week' THEN 336 WHEN 'month' THEN 1 ELSE 12 END)
                  * x.frequency)::numeric
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
                   -- the unit price in the subscription's currency: the base price, else the first override in
                   -- that currency, else the base price in its own currency (see docs/reports.md)
                   CASE WHEN sd.sub_currency IS NULL OR p.pr -> 'unit_price' ->> 'currency_code' = sd.sub_currency
                        THEN p.pr -> 'unit_price'
                        ELSE coalesce(paddle.price_override(p.pr, sd.sub_currency), p.pr -> 'unit_price')
                   END AS up,
                   -- the price's billing cycle; a recurring item without one follows the subscription's
                   coalesce(paddle.as_object(p.pr -> 'billing_cycle'),
                            CASE WHEN paddle.to_bool(e.item ->> 'recurring') THEN paddle.as_object(sd.sub_cycle) END)
                       AS bc
            FROM (SELECT paddle.as_object(e.item -> 'price') AS pr OFFSET 0) AS p
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

COMMENT ON FUNCTION paddle.subscription_mrr_items(jsonb) IS
    'Building block: the recurring items of a subscription snapshot (payment_events.payload->''data''), as listed, with their monthly amount in minor units (exact, not rounded): unit price (in the subscription currency when an override exists) x quantity x factor / frequency, factor month 1, year 1/12, week 1461/336, day 1461/48. Items whose status is not active, with recurring = false, without price id, billing cycle or amount are left out. Never raises.';

-- Every subscription snapshot in order, with the MRR it counts and the movement it causes. Built without
-- joins (window functions over one pass of the log) so that its cost grows like a sort of the events.
CREATE VIEW paddle.subscription_history AS
WITH snap AS (
    SELECT s.environment, s.entity_id AS subscription_id, paddle.to_key(s.data ->> 'customer_id') AS customer_id,
           s.event_id, s.event_type, s.occurred_at, s.status,
           -- list MRR of this snapshot per currency, {"USD": 3000, ...} (exact minor units); the subscription's
           -- own currency is always a key, with 0 when no recurring item is priced in it
           CASE WHEN s.data ->> 'currency_code' IS NOT NULL
                THEN jsonb_build_object(s.data ->> 'currency_code', 0) ELSE '{}'::jsonb END
               || coalesce(m.by_currency, '{}'::jsonb) AS list_mrr
    FROM paddle.entity_snapshots s
    LEFT JOIN LATERAL (
        SELECT jsonb_object_agg(i.currency_code, i.amount) AS by_currency
        FROM (SELECT mi.currency_code, sum(mi.monthly_amount) AS amount
              FROM paddle.subscription_mrr_items(s.data) AS mi
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
    'Building block: every subscription snapshot (seq = its position in (occurred_at, event_id) order) per currency present in it or in the previous snapshot, with list_mrr_minor (recurring items, monthly, minor units, exact), mrr_minor (list_mrr_minor when status is active or past_due, else 0), the previous snapshot''s status and mrr_minor, and the movement it causes: new, expansion, contraction, churned, reactivated or NULL.';

-- Transactions that count as revenue (status paid or completed) with the moment they were paid.
CREATE VIEW paddle.revenue_transactions AS
WITH paid AS (
    -- for each transaction snapshot: when its transaction was first seen paid or completed. Every snapshot
    -- row is kept (the state row picks its own by event_id), so the join below is estimated right.
    SELECT s.event_id,
           min(s.occurred_at) FILTER (WHERE s.status IN ('paid', 'completed'))
               OVER (PARTITION BY s.entity_id) AS first_paid_at
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

-- Adjustments with the moment they were approved.
CREATE VIEW paddle.adjustment_facts AS
WITH approved AS (
    -- for each adjustment snapshot: when its adjustment was first seen approved (see revenue_transactions)
    SELECT s.event_id,
           min(s.occurred_at) FILTER (WHERE s.status = 'approved') OVER (PARTITION BY s.entity_id)
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

-------------------------------------------------------------------------------------------------------------
-- Report views
-------------------------------------------------------------------------------------------------------------

CREATE VIEW paddle.revenue_daily AS
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
    WHERE a.status = 'approved' AND a.action IN ('refund', 'chargeback', 'chargeback_reverse')
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
    'Revenue per UTC day, environment and currency. Transactions count on the day they were first seen paid/completed: gross = grand_total, discount, tax, net_of_tax = total - tax, fee, earnings. Approved adjustments count on the day they were first seen approved: refunds = total of refunds, chargebacks = total of chargebacks minus chargeback reversals.';

CREATE VIEW paddle.mrr AS
WITH subs AS (
    SELECT pe.environment, s.id, s.status, s.customer_id,
           coalesce(m.currency_code, s.currency_code) AS currency_code,
           coalesce(sum(m.monthly_amount), 0) AS mrr_minor
    FROM paddle.subscriptions s
    JOIN paddle.payment_events pe ON pe.event_id = s.event_id
    LEFT JOIN LATERAL paddle.subscription_mrr_items(pe.payload -> 'data') AS m ON true
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
    'Monthly recurring revenue now, per environment and currency: sum over active subscriptions (and separately past_due ones) of paddle.subscription_mrr_items of their latest snapshot, rounded half away from zero to the minor unit once per row; arr = 12 x mrr.';

CREATE VIEW paddle.mrr_movements AS
WITH m AS (
    SELECT h.month, h.environment, h.currency_code,
           round(coalesce(sum(h.delta_minor) FILTER (WHERE h.movement = 'new'), 0)) AS new_minor,
           round(coalesce(sum(h.delta_minor) FILTER (WHERE h.movement = 'expansion'), 0)) AS expansion_minor,
           round(coalesce(-sum(h.delta_minor) FILTER (WHERE h.movement = 'contraction'), 0)) AS contraction_minor,
           round(coalesce(-sum(h.delta_minor) FILTER (WHERE h.movement = 'churned'), 0)) AS churned_minor,
           round(coalesce(sum(h.delta_minor) FILTER (WHERE h.movement = 'reactivated'), 0)) AS reactivated_minor,
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

COMMENT ON VIEW paddle.mrr_movements IS
    'MRR movements per UTC month, environment and currency, from the subscription snapshot history (paddle.subscription_history): new, expansion, contraction, churned (cancellations and pauses), reactivated (resumes, and re-activations of subscriptions that had MRR before); net_new_mrr = new + expansion + reactivated - contraction - churned; ending_mrr = running sum of net_new_mrr (= mrr + past_due_mrr of paddle.mrr once no later snapshot exists, up to per-month rounding).';

CREATE VIEW paddle.subscription_status_counts AS
SELECT pe.environment, s.status, count(*) AS count
FROM paddle.subscriptions s
JOIN paddle.payment_events pe ON pe.event_id = s.event_id
GROUP BY pe.environment, s.status;

COMMENT ON VIEW paddle.subscription_status_counts IS
    'Number of subscriptions per environment and current status (active, canceled, past_due, paused, trialing).';

CREATE VIEW paddle.churn_monthly AS
WITH c AS (
    SELECT h.*, CASE WHEN h.prev_status = 'past_due' THEN 'failed_payment' ELSE 'voluntary' END AS kind
    FROM paddle.subscription_history h
    WHERE h.status = 'canceled' AND h.prev_status IS NOT NULL AND h.prev_status <> 'canceled'
)
SELECT c.month,
       c.environment,
       c.currency_code,
       count(DISTINCT c.customer_id) AS churned_customers,
       count(*) AS churned_subscriptions,
       paddle.to_major(round(sum(c.prev_mrr_minor)), c.currency_code) AS mrr_lost,
       count(DISTINCT c.customer_id) FILTER (WHERE c.kind = 'voluntary') AS voluntary_customers,
       count(*) FILTER (WHERE c.kind = 'voluntary') AS voluntary_subscriptions,
       paddle.to_major(round(coalesce(sum(c.prev_mrr_minor) FILTER (WHERE c.kind = 'voluntary'), 0)), c.currency_code)
           AS voluntary_mrr_lost,
       count(DISTINCT c.customer_id) FILTER (WHERE c.kind = 'failed_payment') AS failed_payment_customers,
       count(*) FILTER (WHERE c.kind = 'failed_payment') AS failed_payment_subscriptions,
       paddle.to_major(round(coalesce(sum(c.prev_mrr_minor) FILTER (WHERE c.kind = 'failed_payment'), 0)),
                       c.currency_code) AS failed_payment_mrr_lost
FROM c
GROUP BY c.month, c.environment, c.currency_code;

COMMENT ON VIEW paddle.churn_monthly IS
    'Cancellations per UTC month, environment and currency: a subscription churns at its first snapshot with status canceled that follows a non-canceled one; mrr_lost = the MRR it counted in the snapshot before (0 if it was paused); failed_payment when that snapshot was past_due, else voluntary.';

CREATE VIEW paddle.dunning AS
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
LEFT JOIN paddle.customers c ON c.id = e.customer_id;

COMMENT ON VIEW paddle.dunning IS
    'Failed-payment cases, one row per episode: a case is a subscription (failures of its transactions, past_due snapshots) or a transaction without subscription. It opens at the first failure (transaction.payment_failed, a past_due transaction or subscription snapshot) and closes at the first later recovery (a transaction of the case first seen paid/completed) = recovered, or loss (subscription first seen canceled, transaction canceled) = lost; else open. amount = grand_total of the first failed transaction.';

CREATE VIEW paddle.dunning_summary AS
SELECT d.environment,
       d.currency_code,
       count(*) AS cases,
       count(*) FILTER (WHERE d.state = 'open') AS open_cases,
       count(*) FILTER (WHERE d.state = 'recovered') AS recovered_cases,
       count(*) FILTER (WHERE d.state = 'lost') AS lost_cases,
       round(count(*) FILTER (WHERE d.state = 'recovered')::numeric
             / nullif(count(*) FILTER (WHERE d.state IN ('recovered', 'lost')), 0), 4) AS recovery_rate,
       coalesce(sum(d.amount), paddle.to_major(0, d.currency_code)) AS amount_failed,
       coalesce(sum(d.amount) FILTER (WHERE d.state = 'recovered'), paddle.to_major(0, d.currency_code))
           AS amount_recovered,
       coalesce(sum(d.amount) FILTER (WHERE d.state = 'lost'), paddle.to_major(0, d.currency_code)) AS amount_lost,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY d.time_to_recover) AS median_time_to_recover,
       avg(d.time_to_recover) AS avg_time_to_recover
FROM paddle.dunning d
GROUP BY d.environment, d.currency_code;

COMMENT ON VIEW paddle.dunning_summary IS
    'Dunning per environment and currency: cases by state, recovery_rate = recovered / (recovered + lost) rounded to 4 decimals (NULL while none is closed), amounts, median and average time_to_recover of recovered cases.';

CREATE VIEW paddle.refunds AS
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
LEFT JOIN paddle.transactions t ON t.id = a.transaction_id
LEFT JOIN paddle.customers c ON c.id = coalesce(a.customer_id, t.customer_id);

COMMENT ON VIEW paddle.refunds IS
    'Every adjustment (refund, credit, chargeback, chargeback_reverse, ...) with its action, type and status, amounts in major units (amount = totals.total), linked to its transaction (transaction_total = its grand_total), subscription and customer (with email when a customer event was stored). created_on = UTC date of created_at.';

CREATE VIEW paddle.entitlements AS
WITH settings AS (
    SELECT make_interval(days => coalesce(
               (SELECT paddle.to_int(value) FROM paddle.report_settings WHERE key = 'past_due_grace_days'), 7))
               AS grace
),
sub_runs AS (
    -- runs of consecutive past_due snapshots: run = number of non-past_due snapshots up to this one
    SELECT s.entity_id AS subscription_id, s.event_id, s.occurred_at, s.status,
           count(*) FILTER (WHERE s.status IS DISTINCT FROM 'past_due')
               OVER (PARTITION BY s.entity_id ORDER BY s.occurred_at, s.event_id) AS run
    FROM paddle.entity_snapshots s
    WHERE s.entity = 'subscription'
),
past_due_since AS (
    -- for each snapshot: when the past_due run it belongs to began (the state row picks its own by event_id)
    SELECT r.event_id,
           min(r.occurred_at) FILTER (WHERE r.status = 'past_due') OVER (PARTITION BY r.subscription_id, r.run)
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
                   AS paid_through
    ) AS x
    CROSS JOIN LATERAL (
        SELECT CASE s.status
                   WHEN 'active' THEN true
                   WHEN 'trialing' THEN true
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
                   WHEN 'active' THEN CASE s.scheduled_change_action WHEN 'cancel' THEN 'cancel_scheduled'
                                                                     WHEN 'pause' THEN 'pause_scheduled'
                                                                     ELSE 'active' END
                   WHEN 'trialing' THEN 'trialing'
                   WHEN 'past_due' THEN CASE WHEN now() < x.grace_end THEN 'past_due_grace'
                                             ELSE 'past_due_grace_expired' END
                   WHEN 'canceled' THEN CASE WHEN now() < x.paid_through THEN 'canceled_until_period_end'
                                             ELSE 'canceled' END
                   WHEN 'paused' THEN 'paused'
                   ELSE coalesce(s.status, 'unknown')
               END AS reason
    ) AS g
    WHERE s.customer_id IS NOT NULL
      AND i.status IS DISTINCT FROM 'inactive'
),
refunded_transactions AS (
    -- approved refunds of a whole transaction
    SELECT a.transaction_id, min(a.approved_at) AS refunded_at
    FROM paddle.adjustment_facts a
    WHERE a.action = 'refund' AND a.status = 'approved' AND a.type = 'full'
    GROUP BY a.transaction_id
),
refunded_items AS (
    -- approved refunds that refund one line item in full
    SELECT a.transaction_id, ai.item_id, min(a.approved_at) AS refunded_at
    FROM paddle.adjustment_facts a
    JOIN paddle.adjustment_items ai ON ai.adjustment_id = a.adjustment_id AND ai.type = 'full'
    WHERE a.action = 'refund' AND a.status = 'approved'
    GROUP BY a.transaction_id, ai.item_id
),
one_time_items AS (
    SELECT r.environment, r.customer_id, ti.product_id, ti.price_id, r.transaction_id,
           CASE WHEN rt.refunded_at IS NULL THEN ri.refunded_at
                WHEN ri.refunded_at IS NULL THEN rt.refunded_at
                ELSE least(rt.refunded_at, ri.refunded_at) END AS refunded_at
    FROM paddle.revenue_transactions r
    JOIN paddle.transaction_items ti ON ti.transaction_id = r.transaction_id
    LEFT JOIN refunded_transactions rt ON rt.transaction_id = r.transaction_id
    LEFT JOIN refunded_items ri ON ri.transaction_id = r.transaction_id AND ri.item_id = ti.id
    WHERE r.subscription_id IS NULL AND r.customer_id IS NOT NULL AND ti.price_id IS NOT NULL
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
LEFT JOIN paddle.customers c ON c.id = g.customer_id
ORDER BY g.environment, g.customer_id, g.product_id, g.price_id,
         g.granted DESC, g.forever DESC, g.access_until DESC NULLS LAST, g.subscription_id, g.transaction_id;

COMMENT ON VIEW paddle.entitlements IS
    'Access per customer x product x price, decided by the best grant: subscriptions (items not inactive) grant while active or trialing (until the period end or the scheduled cancel/pause), past_due during past_due_grace_days (report_settings) after the current past_due run began, canceled until a period end still in the future; paused does not. Paid/completed transactions without subscription grant forever unless an approved refund is full (type full, or a full item refund of that line). access_until = when access ends or ended; NULL with forever = true for one-time purchases.';

CREATE VIEW paddle.attribution AS
WITH touches AS (
    SELECT pe.environment, t.customer_id, 'transaction' AS kind, t.id AS entity_id,
           coalesce(t.created_at, t.occurred_at) AS at, k.utm_source, k.utm_medium, k.utm_campaign
    FROM paddle.transactions t
    JOIN paddle.payment_events pe ON pe.event_id = t.event_id
    CROSS JOIN LATERAL (
        SELECT nullif(t.custom_data ->> 'utm_source', '') AS utm_source,
               nullif(t.custom_data ->> 'utm_medium', '') AS utm_medium,
               coalesce(nullif(t.custom_data ->> 'utm_campaign', ''), nullif(t.custom_data ->> 'campaign', ''))
                   AS utm_campaign
    ) AS k
    WHERE jsonb_typeof(t.custom_data) = 'object'
      AND (k.utm_source IS NOT NULL OR k.utm_medium IS NOT NULL OR k.utm_campaign IS NOT NULL)
    UNION ALL
    SELECT pe.environment, s.customer_id, 'subscription', s.id,
           coalesce(s.created_at, s.occurred_at), k.utm_source, k.utm_medium, k.utm_campaign
    FROM paddle.subscriptions s
    JOIN paddle.payment_events pe ON pe.event_id = s.event_id
    CROSS JOIN LATERAL (
        SELECT nullif(s.custom_data ->> 'utm_source', '') AS utm_source,
               nullif(s.custom_data ->> 'utm_medium', '') AS utm_medium,
               coalesce(nullif(s.custom_data ->> 'utm_campaign', ''), nullif(s.custom_data ->> 'campaign', ''))
                   AS utm_campaign
    ) AS k
    WHERE jsonb_typeof(s.custom_data) = 'object'
      AND (k.utm_source IS NOT NULL OR k.utm_medium IS NOT NULL OR k.utm_campaign IS NOT NULL)
),
stream AS (
    -- per customer (or, without one, per entity), touches and payments in time order; a touch at the same
    -- moment as a payment comes first
    SELECT th.environment, coalesce(th.customer_id, th.kind || ':' || th.entity_id) AS who,
           th.at, 0 AS ord, th.kind, th.entity_id,
           jsonb_build_array(th.utm_source, th.utm_medium, th.utm_campaign) AS keys,
           NULL::jsonb AS own_keys, NULL::text AS customer_id, NULL::text AS currency_code,
           NULL::numeric AS gross_minor, NULL::numeric AS net_of_tax_minor
    FROM touches th
    UNION ALL
    SELECT r.environment, coalesce(r.customer_id, 'transaction:' || r.transaction_id),
           r.paid_at, 1, 'payment', r.transaction_id, NULL,
           -- the paying transaction's own keys, when it has any and was created by then
           CASE WHEN r.created_at <= r.paid_at AND jsonb_typeof(r.custom_data) = 'object'
                 AND (nullif(r.custom_data ->> 'utm_source', '') IS NOT NULL
                      OR nullif(r.custom_data ->> 'utm_medium', '') IS NOT NULL
                      OR coalesce(nullif(r.custom_data ->> 'utm_campaign', ''),
                                  nullif(r.custom_data ->> 'campaign', '')) IS NOT NULL)
                THEN jsonb_build_array(nullif(r.custom_data ->> 'utm_source', ''),
                                       nullif(r.custom_data ->> 'utm_medium', ''),
                                       coalesce(nullif(r.custom_data ->> 'utm_campaign', ''),
                                                nullif(r.custom_data ->> 'campaign', '')))
           END,
           r.customer_id, r.currency_code, r.gross_minor, r.net_of_tax_minor
    FROM paddle.revenue_transactions r
),
walked AS (
    SELECT st.*,
           count(*) FILTER (WHERE st.ord = 0) OVER (
               PARTITION BY st.environment, st.who ORDER BY st.at, st.ord, st.kind, st.entity_id
               ROWS UNBOUNDED PRECEDING) AS touches_so_far
    FROM stream st
),
picked AS (
    -- first touch: the first row of the rows that follow at least one touch; last touch: the first row of
    -- the rows that follow the same number of touches (that touch itself)
    SELECT w.*,
           CASE WHEN w.touches_so_far > 0 THEN first_value(w.keys) OVER (
               PARTITION BY w.environment, w.who, w.touches_so_far > 0
               ORDER BY w.at, w.ord, w.kind, w.entity_id) END AS first_keys,
           CASE WHEN w.touches_so_far > 0 THEN first_value(w.keys) OVER (
               PARTITION BY w.environment, w.who, w.touches_so_far
               ORDER BY w.at, w.ord, w.kind, w.entity_id) END AS last_keys
    FROM walked w
),
attributed AS (
    SELECT p.environment, p.customer_id, p.currency_code, p.at AS paid_at, p.gross_minor, p.net_of_tax_minor,
           m.model, m.keys ->> 0 AS utm_source, m.keys ->> 1 AS utm_medium, m.keys ->> 2 AS utm_campaign
    FROM picked p
    CROSS JOIN LATERAL (VALUES ('first_touch', p.first_keys),
                               ('last_touch', coalesce(p.own_keys, p.last_keys))) AS m(model, keys)
    WHERE p.ord = 1
)
SELECT (date_trunc('month', a.paid_at AT TIME ZONE 'UTC'))::date AS month,
       a.environment,
       a.currency_code,
       a.model,
       a.utm_source,
       a.utm_medium,
       a.utm_campaign,
       count(*) AS transactions,
       count(DISTINCT a.customer_id) AS customers,
       paddle.to_major(sum(a.gross_minor), a.currency_code) AS gross,
       paddle.to_major(sum(a.net_of_tax_minor), a.currency_code) AS net_of_tax
FROM attributed a
GROUP BY 1, a.environment, a.currency_code, a.model, a.utm_source, a.utm_medium, a.utm_campaign;

COMMENT ON VIEW paddle.attribution IS
    'Revenue (paddle.revenue_transactions) per UTC month of payment, environment, currency, model and (utm_source, utm_medium, utm_campaign). A touch is a transaction or subscription of the customer whose custom_data has utm_source, utm_medium or utm_campaign (campaign when utm_campaign is absent), dated by its created_at and taken as a whole. first_touch = the customer''s earliest touch up to the payment; last_touch = the paying transaction''s own keys, else the latest touch up to the payment. No touch: all three NULL.';

-------------------------------------------------------------------------------------------------------------
-- Catalog read by `paddlehook report`
-------------------------------------------------------------------------------------------------------------

CREATE TABLE paddle.report_catalog (
    name        text PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_]*$'),
    view_name   text NOT NULL CHECK (view_name ~ '^[a-z_][a-z0-9_]*$'),
    time_column text CHECK (time_column ~ '^[a-z_][a-z0-9_]*$'),
    order_by    text NOT NULL CHECK (order_by ~ '^[a-z_][a-z0-9_]*( (ASC|DESC))?(, [a-z_][a-z0-9_]*( (ASC|DESC))?){0,7}$'),
    description text NOT NULL
);

COMMENT ON TABLE paddle.report_catalog IS
    '`paddlehook report NAME` runs SELECT * FROM paddle.<view_name> WHERE ($1::text IS NULL OR environment = $1) [AND ($2::date IS NULL OR <time_column> >= $2)] ORDER BY <order_by>. Every view has an environment column; time_column is a date column (UTC day or first day of a UTC month), NULL when the report has no time axis. The CHECK constraints keep the three interpolated fields to plain identifiers.';
COMMENT ON COLUMN paddle.report_catalog.name IS 'Report name given on the command line.';
COMMENT ON COLUMN paddle.report_catalog.view_name IS 'View in schema paddle (unqualified, a plain lower-case identifier).';
COMMENT ON COLUMN paddle.report_catalog.time_column IS 'date column that --since filters on (>=); NULL: the report has none.';
COMMENT ON COLUMN paddle.report_catalog.order_by IS 'Trusted ORDER BY list giving a deterministic order: 1 to 8 comma+space separated column names, each optionally followed by " ASC" or " DESC" (NULLs sort last ascending, first descending).';

INSERT INTO paddle.report_catalog (name, view_name, time_column, order_by, description) VALUES
    ('revenue_daily', 'revenue_daily', 'day', 'day, environment, currency_code',
     'Revenue per UTC day and currency: gross, discount, tax, net of tax, fee, earnings, refunds, chargebacks'),
    ('mrr', 'mrr', NULL, 'environment, currency_code',
     'Monthly recurring revenue now, per currency: active and past_due subscriptions'),
    ('mrr_movements', 'mrr_movements', 'month', 'month, environment, currency_code',
     'MRR movements per month: new, expansion, contraction, churned, reactivated, ending MRR'),
    ('subscription_status_counts', 'subscription_status_counts', NULL, 'environment, status',
     'Subscriptions per current status'),
    ('churn_monthly', 'churn_monthly', 'month', 'month, environment, currency_code',
     'Cancellations per month: customers, subscriptions, MRR lost; voluntary vs failed payment'),
    ('dunning', 'dunning', 'failed_on', 'failed_at, environment, case_type, case_id',
     'Failed-payment cases: open, recovered or lost, time to recover, amount'),
    ('dunning_summary', 'dunning_summary', NULL, 'environment, currency_code',
     'Failed-payment recovery rate, amounts, median and average time to recover per currency'),
    ('refunds', 'refunds', 'created_on', 'created_on, created_at, adjustment_id',
     'Adjustments (refunds, credits, chargebacks) with transaction, subscription and customer'),
    ('entitlements', 'entitlements', NULL, 'environment, customer_id, product_id, price_id',
     'Access per customer, product and price now, and until when'),
    ('attribution', 'attribution', 'month',
     'month, environment, currency_code, model, utm_source, utm_medium, utm_campaign',
     'Revenue per month by first-touch and last-touch utm_source, utm_medium, utm_campaign');

-------------------------------------------------------------------------------------------------------------
-- Rebuilding the state tables
-------------------------------------------------------------------------------------------------------------

CREATE FUNCTION paddle.reproject(p_since timestamptz DEFAULT NULL)
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
               paddle.transaction_items, paddle.adjustments, paddle.adjustment_items
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

        INSERT INTO pg_temp.paddle_reproject_events (event_id)
        SELECT e.event_id FROM paddle.payment_events e
        WHERE split_part(e.event_type, '.', 1) IN ('customer', 'subscription', 'transaction', 'adjustment');
    ELSE
        -- Entities (type + id) with an event at or after p_since: deleted, then rebuilt from all their events.
        CREATE TEMPORARY TABLE IF NOT EXISTS pg_temp.paddle_reproject_entities (entity text, id text,
            PRIMARY KEY (entity, id)) ON COMMIT DROP;
        TRUNCATE pg_temp.paddle_reproject_entities;
        INSERT INTO pg_temp.paddle_reproject_entities (entity, id)
        SELECT DISTINCT split_part(e.event_type, '.', 1), paddle.to_key(e.payload -> 'data' ->> 'id')
        FROM paddle.payment_events e
        WHERE e.occurred_at >= p_since
          AND split_part(e.event_type, '.', 1) IN ('customer', 'subscription', 'transaction', 'adjustment')
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
        BEGIN
            PERFORM paddle.project_event(v_event.event_id, v_event.event_type, v_event.occurred_at,
                                         v_event.data, v_event.environment);
            IF v_event.projection_error IS NOT NULL THEN
                UPDATE paddle.payment_events SET projection_error = NULL WHERE event_id = v_event.event_id;
            END IF;
        EXCEPTION WHEN OTHERS THEN
            -- As in paddle.ingest_event: contention and resource errors abort the whole rebuild (nothing
            -- changes); a data error is recorded on the event, its savepoint rolled back, and replay goes on.
            IF SQLSTATE IN ('40001', '40P01', '55P03', '57014') OR left(SQLSTATE, 2) IN ('53', '08', '57') THEN
                RAISE;
            END IF;
            UPDATE paddle.payment_events
               SET projection_error = SQLSTATE || ': ' || SQLERRM
             WHERE event_id = v_event.event_id;
        END;
    END LOOP;

    TRUNCATE pg_temp.paddle_reproject_events;
    RETURN v_count;
END
$$;

COMMENT ON FUNCTION paddle.reproject(timestamptz) IS
    'Rebuild the state tables from payment_events in (occurred_at, event_id) order, inside the caller''s transaction (READ COMMITTED), while the receiver keeps running. p_since NULL: every state row is deleted and every customer/subscription/transaction/adjustment event replayed. p_since given: only entities (entity type + data.id) with an event at or after p_since are deleted and rebuilt from all their events. Locks the state tables IN SHARE ROW EXCLUSIVE MODE first (readers go on and see the old rows until commit; ingests wait, then apply newer-wins). projection_error is set or cleared per event as in ingest_event/reproject_event. Returns the number of events replayed.';
