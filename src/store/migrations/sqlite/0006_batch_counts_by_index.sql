-- GetOperation counts a batch's items by status. Without an index on (batch_id, status) SQLite
-- sorted every item of the batch to group them, on each call: a 100,000-card batch polled by its
-- client spent most of the server's time in that sort. With it the counts are one ordered walk of
-- the index.
CREATE INDEX batch_items_by_status ON batch_items (batch_id, status);
