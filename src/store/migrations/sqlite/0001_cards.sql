-- Cards as simgate holds them. Times are Unix milliseconds (UTC), money is fen, data is bytes.
-- Flags are BIGINT 0/1: sqlx's Any driver cannot decode SQLite booleans.
CREATE TABLE cards (
    iccid                 TEXT PRIMARY KEY NOT NULL,
    msisdn                TEXT UNIQUE,
    imsi                  TEXT,
    carrier               TEXT NOT NULL,
    customer_id           TEXT NOT NULL,
    quota_bytes           BIGINT NOT NULL,
    monthly_fee_fen       BIGINT NOT NULL,
    validity_end_ms       BIGINT NOT NULL,
    auto_suspend          BIGINT NOT NULL CHECK (auto_suspend IN (0, 1)),
    cancelled             BIGINT NOT NULL CHECK (cancelled IN (0, 1)),
    -- Derived from cancelled + stop_reasons, stored so that listing by status uses an index.
    status                TEXT NOT NULL,
    stop_reasons          BIGINT NOT NULL,
    stage                 TEXT NOT NULL,
    real_name             TEXT NOT NULL,
    balance_fen           BIGINT NOT NULL,
    cycle_usage_bytes     BIGINT NOT NULL,
    cycle_start_ms        BIGINT NOT NULL,
    stage_since_ms        BIGINT NOT NULL,
    test_used_bytes       BIGINT NOT NULL,
    retention_fee_next_ms BIGINT,
    retention_ends_ms     BIGINT,
    expiry_restore_ms     BIGINT,
    arrears_paid          BIGINT NOT NULL CHECK (arrears_paid IN (0, 1)),
    warnings              TEXT NOT NULL,
    created_ms            BIGINT NOT NULL,
    updated_ms            BIGINT NOT NULL,
    version               BIGINT NOT NULL,
    -- When the lifecycle engine must next look at the card (NULL: never, e.g. cancelled).
    next_due_ms           BIGINT,
    -- Which engine instance is working on the card, until when (wall-clock milliseconds).
    lease_owner           TEXT,
    lease_until_ms        BIGINT
);
CREATE INDEX cards_by_customer ON cards (customer_id, iccid);
CREATE INDEX cards_by_carrier ON cards (carrier, iccid);
CREATE INDEX cards_by_status ON cards (status, iccid);
CREATE INDEX cards_by_next_due ON cards (next_due_ms, iccid);

-- Outbox and card history: one row per change, written in the same transaction as the change,
-- with the card's state right after it.
CREATE TABLE card_events (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    iccid        TEXT NOT NULL,
    customer_id  TEXT NOT NULL,
    carrier      TEXT NOT NULL,
    kind         TEXT NOT NULL,
    cause        TEXT NOT NULL,
    amount_fen   BIGINT NOT NULL,
    status       TEXT NOT NULL,
    stop_reasons BIGINT NOT NULL,
    balance_fen  BIGINT NOT NULL,
    at_ms        BIGINT NOT NULL
);
CREATE INDEX card_events_by_card ON card_events (iccid, id);

-- The simulated carriers' own side of each card.
CREATE TABLE sim_cards (
    carrier           TEXT NOT NULL,
    iccid             TEXT NOT NULL,
    state             TEXT NOT NULL,
    cycle_usage_bytes BIGINT NOT NULL,
    -- The billing cycle cycle_usage_bytes belongs to; a newer cycle starts from zero.
    usage_cycle_ms    BIGINT NOT NULL,
    -- The last time the card carried data (a session), NULL if never.
    last_session_ms   BIGINT,
    changes           BIGINT NOT NULL,
    PRIMARY KEY (carrier, iccid)
);

-- API keys: only a SHA-256 of the secret is kept; the key itself is shown once, at creation.
CREATE TABLE api_keys (
    key_id      TEXT PRIMARY KEY NOT NULL,
    secret_hash TEXT NOT NULL,
    role        TEXT NOT NULL,
    -- NULL for reseller admins, who see every customer.
    customer_id TEXT,
    name        TEXT NOT NULL,
    created_ms  BIGINT NOT NULL,
    created_by  TEXT NOT NULL,
    expires_ms  BIGINT,
    revoked_ms  BIGINT
);

-- Who did what, to which card, with which result; written with the change it records.
CREATE TABLE audit_entries (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms       BIGINT NOT NULL,
    key_id      TEXT NOT NULL,
    method      TEXT NOT NULL,
    iccid       TEXT,
    customer_id TEXT,
    request_id  TEXT NOT NULL,
    result      TEXT NOT NULL,
    detail      TEXT NOT NULL
);
CREATE INDEX audit_by_card ON audit_entries (iccid, id);

-- Idempotency: the first answer to each (API key, request_id), written in the same transaction as
-- the change it answers, so a retried request returns it instead of acting twice.
CREATE TABLE idempotency (
    key_id      TEXT NOT NULL,
    request_id  TEXT NOT NULL,
    method      TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    response    BLOB NOT NULL,
    created_ms  BIGINT NOT NULL,
    PRIMARY KEY (key_id, request_id)
);

-- The carrier-call journal: every stop/restore/cancel is written as an intent before it is sent,
-- and marked APPLIED in the same transaction as the card change it serves (FAILED when the
-- carrier refused). An intent still PENDING long after it was written was interrupted (a crash
-- between the carrier call and the card write): the reconciler sets the carrier to what the
-- stored card says and marks it RECONCILED.
CREATE TABLE carrier_ops (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    iccid       TEXT NOT NULL,
    carrier     TEXT NOT NULL,
    action      TEXT NOT NULL,
    status      TEXT NOT NULL,
    attempts    BIGINT NOT NULL,
    last_error  TEXT NOT NULL,
    source      TEXT NOT NULL,
    created_ms  BIGINT NOT NULL,
    updated_ms  BIGINT NOT NULL
);
CREATE INDEX carrier_ops_pending ON carrier_ops (status, created_ms);

-- Bulk operations and their cards. Each card's change is idempotent under the request id
-- "batch:<id>:<index>", so a card is changed once however often a crash makes it be tried.
CREATE TABLE batches (
    id          TEXT PRIMARY KEY NOT NULL,
    kind        TEXT NOT NULL,
    amount_fen  BIGINT NOT NULL,
    key_id      TEXT NOT NULL,
    role        TEXT NOT NULL,
    customer_id TEXT,
    state       TEXT NOT NULL,
    total       BIGINT NOT NULL,
    created_ms  BIGINT NOT NULL,
    updated_ms  BIGINT NOT NULL
);
CREATE INDEX batches_by_customer ON batches (customer_id, created_ms);

CREATE TABLE batch_items (
    batch_id        TEXT NOT NULL,
    seq             BIGINT NOT NULL,
    iccid           TEXT NOT NULL,
    status          TEXT NOT NULL,
    reason          TEXT NOT NULL,
    attempts        BIGINT NOT NULL,
    next_attempt_ms BIGINT NOT NULL,
    PRIMARY KEY (batch_id, seq)
);
CREATE INDEX batch_items_due ON batch_items (status, next_attempt_ms);
