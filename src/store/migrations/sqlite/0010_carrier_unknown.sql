-- "Unknown at carrier": the carrier answered the last sync's read of the card, but simgate could
-- not read its state or usage from the answer (a status outside the platform's table, a null
-- usage); why, as text. NULL: the last read was read. Written only by the usage sync.
ALTER TABLE cards ADD COLUMN carrier_unknown TEXT;
