-- Carrier orders: every carrier change in the journal (carrier_ops) is an order with a state,
-- the carrier's order id (order_id, 0003) when its platform answers with one, the earliest time
-- it may be sent, and how it was settled.
--
-- not_before_ms and sent_ms are on the card clock (the carriers' time, which AdvanceClock moves
-- in simulation), because a repeat window is the carrier's: "the same card, not twice within 30
-- minutes". created_ms, updated_ms and settled_ms stay on the operations clock.
--   not_before_ms  the earliest time the change may be sent; NULL: at once.
--   sent_ms        when it was last sent; NULL: not sent yet (SCHEDULED).
--   order_status   the platform's last word on its order (OneLink `inProgress`, `completed`).
--   settled_by     ANSWER, ORDER_QUERY or STATE_READ once settled; '' while open.
--   params         the change's parameters as JSON (a rebind's mode and IMEI); '' for none.
ALTER TABLE carrier_ops ADD COLUMN not_before_ms BIGINT;
ALTER TABLE carrier_ops ADD COLUMN sent_ms BIGINT;
ALTER TABLE carrier_ops ADD COLUMN order_status TEXT NOT NULL DEFAULT '';
ALTER TABLE carrier_ops ADD COLUMN settled_by TEXT NOT NULL DEFAULT '';
ALTER TABLE carrier_ops ADD COLUMN params TEXT NOT NULL DEFAULT '';

-- Every row of an older build was sent when it was written.
UPDATE carrier_ops SET sent_ms = created_ms;

-- ListCarrierOrders, newest first, by card and by account.
CREATE INDEX carrier_ops_by_card ON carrier_ops (iccid, id);
CREATE INDEX carrier_ops_by_account ON carrier_ops (account_id, id);

-- The card's side: the pending change's order as GetCard shows it. Written with the card's
-- pending_op_id by the journal only (pending_sent_ms NULL: not sent yet, card clock).
ALTER TABLE cards ADD COLUMN pending_order_id TEXT;
ALTER TABLE cards ADD COLUMN pending_not_before_ms BIGINT;
ALTER TABLE cards ADD COLUMN pending_sent_ms BIGINT;
