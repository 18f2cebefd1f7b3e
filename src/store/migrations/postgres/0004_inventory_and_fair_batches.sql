-- Cards enter through the reseller: a card imported without a customer is unassigned inventory
-- (customer_id = ''), later assigned with AssignCards, which can also mark a customer's card as
-- a spare kept for swaps.
ALTER TABLE cards ADD COLUMN spare BIGINT NOT NULL DEFAULT 0 CHECK (spare IN (0, 1));

-- The batch worker reads each running batch's pending items in order and asks whether any are
-- left after every pass: this index keeps both to the pending rows, not the whole batch.
CREATE INDEX batch_items_pending ON batch_items (batch_id, seq) WHERE status = 'PENDING';
