-- paddlehook 0022_payments: the payment attempts of each transaction, saved payment methods and payouts, as
-- views over the stored events.
--
-- Runs once, inside the migration runner's transaction (no BEGIN/COMMIT here). PostgreSQL 15.
--
-- paddle.transactions keeps the newest payment attempt's status and error code only. Chasing a failed payment
-- ("your Visa ending 0002 was declined; it expires 01/2025") needs the card of each attempt, which the snapshot a
-- transaction row holds carries in payments[]. payment_method.* and payout.* events were stored only.
--
-- These are views, not state tables: each reads the snapshot the stored events already hold, so nothing is
-- projected, no delivery does more work, a delivery in flight while this runs needs no catching up, and
-- paddle.reproject has nothing new to rebuild. A saved payment method and a payout are keyed by environment and
-- id: a sandbox event never shows in the live row.
--
-- Roles: every role granted SELECT on paddle.transactions itself (not through a role it is a member of, so that
-- leaving that group still ends its access), and that does not store events, may read the new views; they read
-- the events with their owner's rights, as the other views do. The worker's role stores events and needs none
-- of them. Roles created later get them from the GRANT in docs/deploy.md section 11.

-- security_barrier: a condition of the reader's own runs only on the rows the view returns, never on another
-- event it reads on the way.
CREATE VIEW paddle.transaction_payments WITH (security_barrier) AS
SELECT t.environment,
       t.id                                               AS transaction_id,
       t.customer_id,
       t.subscription_id,
       t.status                                           AS transaction_status,
       p.n::integer                                       AS position,
       p.n = newest.n                                     AS newest,
       p.payment ->> 'payment_attempt_id'                 AS payment_attempt_id,
       p.payment ->> 'status'                             AS status,
       p.payment ->> 'error_code'                         AS error_code,
       paddle.to_amount(p.payment ->> 'amount')           AS amount,
       t.currency_code,
       p.payment ->> 'payment_method_id'                  AS payment_method_id,
       p.payment -> 'method_details' ->> 'type'           AS method_type,
       p.payment -> 'method_details' -> 'card' ->> 'type' AS card_type,
       p.payment -> 'method_details' -> 'card' ->> 'last4' AS card_last4,
       paddle.to_int(p.payment -> 'method_details' -> 'card' ->> 'expiry_month') AS card_expiry_month,
       paddle.to_int(p.payment -> 'method_details' -> 'card' ->> 'expiry_year')  AS card_expiry_year,
       paddle.to_ts(p.payment ->> 'created_at')           AS created_at,
       paddle.to_ts(p.payment ->> 'captured_at')          AS captured_at,
       t.occurred_at,
       t.event_id
FROM paddle.transactions t
JOIN paddle.payment_events e ON e.event_id = t.event_id
CROSS JOIN LATERAL jsonb_array_elements(paddle.as_array(e.payload -> 'data' -> 'payments'))
    WITH ORDINALITY AS p(payment, n)
-- The attempt transactions.last_payment_* describe: the greatest created_at, whatever the order of payments[].
LEFT JOIN LATERAL (
    SELECT x.n
    FROM jsonb_array_elements(paddle.as_array(e.payload -> 'data' -> 'payments')) WITH ORDINALITY AS x(payment, n)
    WHERE jsonb_typeof(x.payment) = 'object'
    ORDER BY paddle.to_ts(x.payment ->> 'created_at') DESC NULLS LAST, x.n
    LIMIT 1
) AS newest ON true
WHERE jsonb_typeof(p.payment) = 'object';

COMMENT ON VIEW paddle.transaction_payments IS
    'One row per payments[] entry of the snapshot each paddle.transactions row holds (its event_id): every payment attempt with its status, error_code, amount (minor units, the transaction''s currency_code), payment_method_id, method_type (card, paypal, ...), the card''s type, last four digits and expiry, created_at and captured_at. position is the entry''s place in payments[] (Paddle lists the newest first); newest marks the attempt with the greatest created_at, the one paddle.transactions.last_payment_status describes.';

CREATE VIEW paddle.payment_methods WITH (security_barrier) AS
SELECT DISTINCT ON (e.environment, paddle.to_key(d.data ->> 'id'))
       paddle.to_key(d.data ->> 'id')               AS id,
       e.environment,
       paddle.to_key(d.data ->> 'customer_id')      AS customer_id,
       d.data ->> 'address_id'                      AS address_id,
       d.data ->> 'type'                            AS type,
       d.data ->> 'origin'                          AS origin,
       paddle.to_ts(d.data ->> 'saved_at')          AS saved_at,
       paddle.to_ts(d.data ->> 'updated_at')        AS updated_at,
       e.event_type = 'payment_method.deleted'      AS deleted,
       d.data ->> 'deletion_reason'                 AS deletion_reason,
       e.occurred_at,
       e.event_id
FROM paddle.payment_events e
CROSS JOIN LATERAL (SELECT e.payload -> 'data' AS data OFFSET 0) AS d
WHERE e.event_type LIKE 'payment\_method.%'
  AND jsonb_typeof(d.data) = 'object'
  AND paddle.to_key(d.data ->> 'id') IS NOT NULL
ORDER BY e.environment, paddle.to_key(d.data ->> 'id'), e.occurred_at DESC, e.event_id DESC;

COMMENT ON VIEW paddle.payment_methods IS
    'Each payment method a customer saved (paymtd_...), per environment, as its newest payment_method.* event shows it (greatest occurred_at, then event_id): customer_id, type (card, paypal, ...), origin, saved_at; deleted once the newest event is payment_method.deleted, with its deletion_reason.';

CREATE VIEW paddle.payouts WITH (security_barrier) AS
SELECT DISTINCT ON (e.environment, paddle.to_key(d.data ->> 'id'))
       paddle.to_key(d.data ->> 'id')               AS id,
       e.environment,
       d.data ->> 'status'                          AS status,
       paddle.to_amount(d.data ->> 'amount')        AS amount,
       d.data ->> 'currency_code'                   AS currency_code,
       e.occurred_at,
       e.event_id
FROM paddle.payment_events e
CROSS JOIN LATERAL (SELECT e.payload -> 'data' AS data OFFSET 0) AS d
WHERE e.event_type LIKE 'payout.%'
  AND jsonb_typeof(d.data) = 'object'
  AND paddle.to_key(d.data ->> 'id') IS NOT NULL
ORDER BY e.environment, paddle.to_key(d.data ->> 'id'), e.occurred_at DESC, e.event_id DESC;

COMMENT ON VIEW paddle.payouts IS
    'Each payout Paddle made to the seller (pay_...), per environment, as its newest payout.* event shows it: status (unpaid, paid), amount in the minor unit of currency_code.';

-- Who was granted SELECT on transactions, except the roles that store events (the worker's), may read these.
DO $$
DECLARE
    v_role regrole;
BEGIN
    FOR v_role IN
        SELECT DISTINCT r.oid::regrole
        FROM pg_class c
        CROSS JOIN LATERAL aclexplode(c.relacl) AS a
        JOIN pg_roles r ON r.oid = a.grantee
        WHERE c.oid = 'paddle.transactions'::regclass AND a.privilege_type = 'SELECT'
          AND r.oid <> c.relowner AND NOT r.rolsuper
          AND NOT has_table_privilege(r.oid, 'paddle.payment_events', 'INSERT')
    LOOP
        EXECUTE format('GRANT SELECT ON paddle.transaction_payments, paddle.payment_methods, paddle.payouts TO %s',
                       v_role);
    END LOOP;
END
$$;
