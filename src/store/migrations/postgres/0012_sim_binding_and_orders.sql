-- The simulated carriers' orders, repeat windows and machine-card binding (机卡绑定). Only the
-- simulators read these; simgate's own side of a card is in `cards`.
--
-- sim_cards, all on the card clock (the carriers' time, which AdvanceClock moves):
--   bound_imei         the IMEI the carrier has the card bound to; NULL: not bound.
--   device_imei        the IMEI of the device the card is in; NULL: the carrier has seen none.
--   device_since_ms    when the card entered that device.
--   device_stopped_ms  when a daily check stopped the card for machine-card separation
--                      (机卡分离); NULL: not stopped for it (the device_stopped flag).
--   carrier_stopped    1 when the card's STOPPED state is the daily check's own, not a
--                      change's: lifting the separation stop may then make it ACTIVE again.
--   rebound_ms         when the card's binding was last changed by a rebind.
ALTER TABLE sim_cards ADD COLUMN bound_imei TEXT;
ALTER TABLE sim_cards ADD COLUMN device_imei TEXT;
ALTER TABLE sim_cards ADD COLUMN device_since_ms BIGINT;
ALTER TABLE sim_cards ADD COLUMN device_stopped_ms BIGINT;
ALTER TABLE sim_cards ADD COLUMN carrier_stopped BIGINT NOT NULL DEFAULT 0;
ALTER TABLE sim_cards ADD COLUMN rebound_ms BIGINT;

-- Every change a simulated account accepted, with the order number it answered (`SIM` and
-- seq). status: inProgress until completes_ms, then completed or failed (OneLink's words,
-- onelink.md §3.1). params: a rebind's mode and IMEI as JSON; '' for none.
CREATE TABLE sim_orders (
    account      TEXT NOT NULL,
    order_num    TEXT NOT NULL,
    seq          BIGINT NOT NULL,
    iccid        TEXT NOT NULL,
    action       TEXT NOT NULL,
    params       TEXT NOT NULL,
    created_ms   BIGINT NOT NULL,
    completes_ms BIGINT NOT NULL,
    status       TEXT NOT NULL,
    PRIMARY KEY (account, order_num)
);
CREATE UNIQUE INDEX sim_orders_by_seq ON sim_orders (account, seq);
-- The repeat window: a card's latest accepted change.
CREATE INDEX sim_orders_by_card ON sim_orders (account, iccid, created_ms);
-- The open orders due to complete.
CREATE INDEX sim_orders_open ON sim_orders (account, status, completes_ms);

-- Per simulated account: up to when its daily checks (00:00 Beijing time) have been run.
CREATE TABLE sim_accounts (
    account    TEXT PRIMARY KEY NOT NULL,
    checked_ms BIGINT NOT NULL
);
