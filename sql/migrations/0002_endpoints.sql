-- Notification destinations ("endpoints") and their signing secrets.
-- Secrets are stored only as libsodium secretbox ciphertext (nonce || box)
-- sealed with the master key file, which never enters the database.

CREATE TABLE paddle.endpoints (
    id                text PRIMARY KEY,
    name              text NOT NULL UNIQUE,
    environment       text NOT NULL CHECK (environment IN ('sandbox', 'live')),
    tolerance_seconds integer NOT NULL DEFAULT 300 CHECK (tolerance_seconds BETWEEN 1 AND 604800),
    enabled           boolean NOT NULL DEFAULT true,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE paddle.endpoints IS
    'One Paddle notification destination; its id is the last segment of the webhook URL.';
COMMENT ON COLUMN paddle.endpoints.tolerance_seconds IS
    'Largest accepted distance, either direction, between the signature ts and the worker''s clock.';

CREATE TABLE paddle.endpoint_secrets (
    id          bigserial PRIMARY KEY,
    endpoint_id text NOT NULL REFERENCES paddle.endpoints (id) ON DELETE CASCADE,
    sealed      bytea NOT NULL,
    hint        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    retired_at  timestamptz
);
CREATE INDEX endpoint_secrets_active ON paddle.endpoint_secrets (endpoint_id) WHERE retired_at IS NULL;
COMMENT ON TABLE paddle.endpoint_secrets IS
    'Endpoint secret keys, sealed with the master key; every row with retired_at NULL verifies.';
COMMENT ON COLUMN paddle.endpoint_secrets.sealed IS
    'nonce || crypto_secretbox(secret): unreadable without the master key file.';
COMMENT ON COLUMN paddle.endpoint_secrets.hint IS
    'Last four characters of the secret, to tell secrets apart in listings.';
