-- Usage monitoring, shared data pools, alerts and the event stream.

-- The pool a card draws its data from (NULL: its own quota), and the alerts already sent for the
-- card's current periods (so each threshold fires once per cycle, not once per sync).
ALTER TABLE cards ADD COLUMN pool_id TEXT;
ALTER TABLE cards ADD COLUMN alert_keys TEXT NOT NULL DEFAULT '';
CREATE INDEX cards_by_pool ON cards (pool_id, iccid);

-- card_events becomes the outbox of every event: pool events have an empty iccid and a pool_id;
-- alerts carry their details as JSON.
ALTER TABLE card_events ADD COLUMN pool_id TEXT;
ALTER TABLE card_events ADD COLUMN detail TEXT NOT NULL DEFAULT '';
CREATE INDEX card_events_by_customer ON card_events (customer_id, id);

-- Shared data pools (流量池). Usage is not stored: it is the sum of the members' cycle usage,
-- so it can never drift from the cards. `exhausted` is the state last enforced on the members.
CREATE TABLE pools (
    id               TEXT PRIMARY KEY NOT NULL,
    name             TEXT NOT NULL,
    carrier          TEXT NOT NULL,
    customer_id      TEXT NOT NULL,
    quota_bytes      BIGINT NOT NULL,
    auto_suspend     BIGINT NOT NULL CHECK (auto_suspend IN (0, 1)),
    cycle_start_ms   BIGINT NOT NULL,
    -- Data added by top-ups in the current cycle; a new cycle starts from zero.
    topup_bytes      BIGINT NOT NULL,
    exhausted        BIGINT NOT NULL CHECK (exhausted IN (0, 1)),
    alert_keys       TEXT NOT NULL,
    created_ms       BIGINT NOT NULL,
    updated_ms       BIGINT NOT NULL,
    version          BIGINT NOT NULL
);
CREATE INDEX pools_by_customer ON pools (customer_id, id);

-- Daily usage history (day = Asia/Shanghai calendar day, as its UTC start in ms).
CREATE TABLE usage_daily (
    iccid   TEXT NOT NULL,
    day_ms  BIGINT NOT NULL,
    bytes   BIGINT NOT NULL,
    PRIMARY KEY (iccid, day_ms)
);

-- Alert rules per customer, as JSON; a customer without a row has the defaults.
CREATE TABLE alert_rules (
    customer_id TEXT PRIMARY KEY NOT NULL,
    rules       TEXT NOT NULL,
    updated_ms  BIGINT NOT NULL
);

-- Webhooks: a customer's HTTP endpoint that receives its events, signed with HMAC-SHA256. The
-- secret is kept as given (signing needs it); it is shown once, at creation.
CREATE TABLE webhooks (
    id            TEXT PRIMARY KEY NOT NULL,
    customer_id   TEXT NOT NULL,
    url           TEXT NOT NULL,
    secret        TEXT NOT NULL,
    -- Comma-separated event kinds ("alert.*" style prefixes allowed); empty: every kind.
    kinds         TEXT NOT NULL,
    -- The newest event already queued for this webhook.
    cursor_id     BIGINT NOT NULL,
    created_ms    BIGINT NOT NULL,
    deleted_ms    BIGINT
);
CREATE INDEX webhooks_by_customer ON webhooks (customer_id, id);

-- One row per (webhook, event): PENDING until delivered, DEAD (the dead letter) after the last
-- attempt failed. Queued in the same transaction that moves the webhook's cursor, so an event is
-- queued once whatever crashes.
CREATE TABLE webhook_deliveries (
    webhook_id      TEXT NOT NULL,
    event_id        BIGINT NOT NULL,
    state           TEXT NOT NULL,
    attempts        BIGINT NOT NULL,
    next_attempt_ms BIGINT NOT NULL,
    last_error      TEXT NOT NULL,
    updated_ms      BIGINT NOT NULL,
    PRIMARY KEY (webhook_id, event_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (state, next_attempt_ms);
