-- A simulated platform that names cards by their access number (China Telecom CMP by default)
-- must know each card's number: given at import, or assigned by the simulator. Unique per
-- simulated account, as a number names one card on a platform; NULL for cards imported before
-- this migration and for accounts that name cards by ICCID.
ALTER TABLE sim_cards ADD COLUMN msisdn TEXT;
CREATE UNIQUE INDEX sim_cards_by_msisdn ON sim_cards (carrier, msisdn);
