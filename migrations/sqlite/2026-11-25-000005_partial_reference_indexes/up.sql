-- Most incidents are reported without an assignee and without a parent. Their indexes only
-- serve `assignee = X` and `parent_id = X` (and children lookups), which imply IS NOT NULL, so
-- they leave the NULLs out: a new unassigned incident now updates two indexes fewer.
DROP INDEX incidents_assignee_idx;
CREATE INDEX incidents_assignee_idx ON incidents (assignee_id, created_at, id)
    WHERE assignee_id IS NOT NULL;
DROP INDEX incidents_parent_idx;
CREATE INDEX incidents_parent_idx ON incidents (parent_id, created_at, id)
    WHERE parent_id IS NOT NULL;
