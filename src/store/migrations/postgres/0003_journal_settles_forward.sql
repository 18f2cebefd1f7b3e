-- The carrier journal settles forward (issue: "never undoes what a carrier applied").
--
-- An intent is OPEN from before the carrier call until it is settled: APPLIED when the carrier
-- accepted it or shows the intended state (the stored plan is then written), ABANDONED when
-- the carrier refused it or shows it did not happen. It carries everything the store must
-- record once it is applied (`plan`: the card, its events, audit record and the request's
-- answer), and it is owned by a lease (`lease_owner` until `lease_until_ms`, renewed while its
-- process lives), never by its age.
ALTER TABLE carrier_ops ADD COLUMN plan TEXT NOT NULL DEFAULT '';
ALTER TABLE carrier_ops ADD COLUMN base_version BIGINT NOT NULL DEFAULT 0;
ALTER TABLE carrier_ops ADD COLUMN key_id TEXT NOT NULL DEFAULT '';
ALTER TABLE carrier_ops ADD COLUMN request_id TEXT NOT NULL DEFAULT '';
ALTER TABLE carrier_ops ADD COLUMN lease_owner TEXT;
ALTER TABLE carrier_ops ADD COLUMN lease_until_ms BIGINT;
ALTER TABLE carrier_ops ADD COLUMN next_attempt_ms BIGINT NOT NULL DEFAULT 0;
ALTER TABLE carrier_ops ADD COLUMN order_id TEXT NOT NULL DEFAULT '';
ALTER TABLE carrier_ops ADD COLUMN settled_ms BIGINT;

-- Intents an older simgate left open have no plan to roll forward with. They are closed here;
-- where the carrier ended up differing from the store, the next usage sync reports drift.
UPDATE carrier_ops
   SET status = 'ABANDONED',
       last_error = 'left open by an earlier simgate that recorded no plan; a difference from the carrier is reported as drift'
 WHERE status IN ('PENDING', 'RETRYING');

-- At most one open intent per card, whatever the number of processes.
CREATE UNIQUE INDEX carrier_ops_one_open_per_card ON carrier_ops (iccid) WHERE status = 'OPEN';
CREATE INDEX carrier_ops_open ON carrier_ops (next_attempt_ms) WHERE status = 'OPEN';

-- The card's side of an open intent (what GetCard shows as pending_change) and the drift the
-- last sync found between the card and its carrier. Written only by the journal and the sync;
-- every other card write requires pending_op_id IS NULL.
ALTER TABLE cards ADD COLUMN pending_op_id BIGINT;
ALTER TABLE cards ADD COLUMN pending_action TEXT;
ALTER TABLE cards ADD COLUMN pending_since_ms BIGINT;
ALTER TABLE cards ADD COLUMN drift_carrier_state TEXT;
ALTER TABLE cards ADD COLUMN drift_since_ms BIGINT;
