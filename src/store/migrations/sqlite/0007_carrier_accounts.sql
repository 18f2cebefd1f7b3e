-- Carrier accounts: every card belongs to exactly one. Existing cards go to their carrier's
-- default account, which is named after the carrier.
ALTER TABLE cards ADD COLUMN account_id TEXT NOT NULL DEFAULT '';
UPDATE cards SET account_id = carrier;
CREATE INDEX cards_by_account ON cards (account_id, iccid);
-- The journal names the account an intent goes out through.
ALTER TABLE carrier_ops ADD COLUMN account_id TEXT NOT NULL DEFAULT '';
UPDATE carrier_ops SET account_id = carrier;
