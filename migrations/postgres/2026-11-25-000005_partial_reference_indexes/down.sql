DROP INDEX incidents_assignee_idx;
CREATE INDEX incidents_assignee_idx ON incidents (assignee_id, created_at, id);
DROP INDEX incidents_parent_idx;
CREATE INDEX incidents_parent_idx ON incidents (parent_id, created_at, id);
