-- Pool ids are scoped per customer (issue 15: "creating a pool with another customer's pool id
-- told it exists"). Two customers may each have pool `fleet-a`; a pool is the pair
-- (customer_id, id) everywhere: its row, its members (cards.customer_id + cards.pool_id) and its
-- events (card_events.customer_id + card_events.pool_id).
--
-- SQLite cannot change a primary key in place: the table is rebuilt with every row kept.
CREATE TABLE pools_per_customer (
    id               TEXT NOT NULL,
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
    version          BIGINT NOT NULL,
    PRIMARY KEY (customer_id, id)
);
INSERT INTO pools_per_customer (id, name, carrier, customer_id, quota_bytes, auto_suspend,
    cycle_start_ms, topup_bytes, exhausted, alert_keys, created_ms, updated_ms, version)
SELECT id, name, carrier, customer_id, quota_bytes, auto_suspend,
    cycle_start_ms, topup_bytes, exhausted, alert_keys, created_ms, updated_ms, version
FROM pools;
DROP TABLE pools;
ALTER TABLE pools_per_customer RENAME TO pools;
-- Listing every pool (the settle pass, a reseller's ListPools) pages in (id, customer_id) order.
CREATE INDEX pools_by_id ON pools (id, customer_id);

-- A pool's members are found by (customer, pool).
DROP INDEX cards_by_pool;
CREATE INDEX cards_by_customer_pool ON cards (customer_id, pool_id, iccid);
