-- Pool ids are scoped per customer (issue 15: "creating a pool with another customer's pool id
-- told it exists"). Two customers may each have pool `fleet-a`; a pool is the pair
-- (customer_id, id) everywhere: its row, its members (cards.customer_id + cards.pool_id) and its
-- events (card_events.customer_id + card_events.pool_id). Every row is kept.
ALTER TABLE pools DROP CONSTRAINT pools_pkey;
ALTER TABLE pools ADD PRIMARY KEY (customer_id, id);
-- The primary key now serves lookups by customer.
DROP INDEX pools_by_customer;
-- Listing every pool (the settle pass, a reseller's ListPools) pages in (id, customer_id) order.
CREATE INDEX pools_by_id ON pools (id, customer_id);

-- A pool's members are found by (customer, pool).
DROP INDEX cards_by_pool;
CREATE INDEX cards_by_customer_pool ON cards (customer_id, pool_id, iccid);
