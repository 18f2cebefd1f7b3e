-- Batch calls: a change many cards took in one carrier call, the usage sync's sweep of the
-- cards a platform lists as modified, and what the simulated carriers need to answer both.
--
-- carrier_ops.job_id: the platform's job id when the change went out in a batch call
-- (OneLink /change/sim-status/batch answers a jobId); settled through the job's result,
-- one query for every card of the job. '' for a change sent on its own.
ALTER TABLE carrier_ops ADD COLUMN job_id TEXT NOT NULL DEFAULT '';
CREATE INDEX carrier_ops_open_jobs ON carrier_ops (account_id, job_id) WHERE status = 'OPEN' AND job_id <> '';

-- Per account whose platform lists modified cards (Control Center `devices?modifiedSince`):
-- the time up to which the usage sync has seen every listed change.
CREATE TABLE carrier_sweeps (
    account_id  TEXT PRIMARY KEY NOT NULL,
    swept_to_ms BIGINT NOT NULL
);

-- Simulated carriers. sim_orders.job_id: the batch job an order belongs to ('' for none).
ALTER TABLE sim_orders ADD COLUMN job_id TEXT NOT NULL DEFAULT '';
CREATE INDEX sim_orders_by_job ON sim_orders (account, job_id) WHERE job_id <> '';
-- sim_cards.modified_ms: when the card's state last changed at the simulated platform (card
-- clock); NULL: not since it was onboarded.
ALTER TABLE sim_cards ADD COLUMN modified_ms BIGINT;
CREATE INDEX sim_cards_by_modified ON sim_cards (carrier, modified_ms);
-- Data each simulated card used per day (day_ms: 00:00 Beijing time of the day), for the
-- batch usage calls whose data runs up to yesterday.
CREATE TABLE sim_usage_days (
    account TEXT NOT NULL,
    iccid   TEXT NOT NULL,
    day_ms  BIGINT NOT NULL,
    bytes   BIGINT NOT NULL,
    PRIMARY KEY (account, iccid, day_ms)
);
