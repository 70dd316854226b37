CREATE TABLE problems (
    id TEXT PRIMARY KEY NOT NULL,
    number TEXT NOT NULL,
    title TEXT NOT NULL,
    description TEXT NOT NULL,
    impact TEXT NOT NULL,
    urgency TEXT NOT NULL,
    priority TEXT NOT NULL,
    state TEXT NOT NULL,
    assignment_group_id TEXT REFERENCES assignment_groups (id),
    assignee_id TEXT REFERENCES users (id),
    category TEXT,
    root_cause TEXT,
    workaround TEXT,
    known_error BOOLEAN NOT NULL DEFAULT 0,
    known_error_at TIMESTAMP,
    resolution_code TEXT,
    resolution_notes TEXT,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    resolved_at TIMESTAMP,
    closed_at TIMESTAMP,
    version BIGINT NOT NULL,
    has_external_refs BOOLEAN NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX problems_number_key ON problems (number);
-- Keyset pagination: each sort key with the id as tie-breaker; one partial index per state
-- (see the incidents migration for why not (state, created_at)).
CREATE INDEX problems_created_idx ON problems (created_at, id);
CREATE INDEX problems_updated_idx ON problems (updated_at, id);
CREATE INDEX problems_priority_idx ON problems (priority, id);
CREATE INDEX problems_priority_created_idx ON problems (priority, created_at, id);
CREATE INDEX problems_new_idx ON problems (created_at, id) WHERE state = 'new';
CREATE INDEX problems_assessed_idx ON problems (created_at, id) WHERE state = 'assessed';
CREATE INDEX problems_rca_idx ON problems (created_at, id) WHERE state = 'root_cause_analysis';
CREATE INDEX problems_fix_idx ON problems (created_at, id) WHERE state = 'fix_in_progress';
CREATE INDEX problems_resolved_idx ON problems (created_at, id) WHERE state = 'resolved';
CREATE INDEX problems_closed_idx ON problems (created_at, id) WHERE state = 'closed';
CREATE INDEX problems_canceled_idx ON problems (created_at, id) WHERE state = 'canceled';
CREATE INDEX problems_known_error_idx ON problems (created_at, id) WHERE known_error = 1;
CREATE INDEX problems_assignee_idx ON problems (assignee_id, created_at, id)
    WHERE assignee_id IS NOT NULL;
CREATE INDEX problems_group_idx ON problems (assignment_group_id, created_at, id);
CREATE INDEX problems_category_idx ON problems (category, created_at, id);

-- The problem an incident is caused by.
ALTER TABLE incidents ADD COLUMN problem_id TEXT REFERENCES problems (id);
CREATE INDEX incidents_problem_idx ON incidents (problem_id, created_at, id)
    WHERE problem_id IS NOT NULL;

INSERT INTO counters (name, value) VALUES ('problem_number', 0);
