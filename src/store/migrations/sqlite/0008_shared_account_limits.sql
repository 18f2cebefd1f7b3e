-- Replicas on one PostgreSQL share each carrier account's limits through these tables (on
-- SQLite, one process, they stay empty: the limits are kept in process).
-- A rate limit as a virtual schedule: the next call may leave at tat_us (microseconds on the
-- database's clock); each call moves it on by the limit's interval.
CREATE TABLE carrier_budgets (
    key    TEXT PRIMARY KEY NOT NULL,
    tat_us BIGINT NOT NULL
);
-- An account's calls in flight across replicas: one row per allowed concurrent call, held by a
-- replica until it finishes or its hold runs out (a replica that died).
CREATE TABLE carrier_slots (
    account_id TEXT NOT NULL,
    slot       BIGINT NOT NULL,
    holder     TEXT,
    until_us   BIGINT NOT NULL,
    PRIMARY KEY (account_id, slot)
);
-- Each account's settings as the first replica recorded them: a replica started with other
-- settings refuses to start, naming the account and the setting.
CREATE TABLE carrier_account_settings (
    account_id TEXT PRIMARY KEY NOT NULL,
    settings   TEXT NOT NULL,
    updated_ms BIGINT NOT NULL
);
