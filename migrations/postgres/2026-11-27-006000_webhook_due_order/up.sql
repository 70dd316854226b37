-- Due deliveries are claimed in (next_attempt_at, id) order, LIMIT n: with the id in the index
-- the claim walks it and stops after n rows, where (next_attempt_at) alone made PostgreSQL's
-- generic plan read and sort every pending delivery on each claim (50 ms at 20,000 pending).
DROP INDEX webhook_deliveries_due_idx;
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (next_attempt_at, id) WHERE status = 'pending';
