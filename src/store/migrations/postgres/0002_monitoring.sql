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
