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
    known_error BOOLEAN NOT NULL DEFAULT FALSE,
    known_error_at TIMESTAMP,
    resolution_code TEXT,
    resolution_notes TEXT,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    resolved_at TIMESTAMP,
    closed_at TIMESTAMP,
    version BIGINT NOT NULL,
    has_external_refs BOOLEAN NOT NULL DEFAULT FALSE
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
CREATE INDEX problems_known_error_idx ON problems (created_at, id) WHERE known_error = TRUE;
CREATE INDEX problems_assignee_idx ON problems (assignee_id, created_at, id)
    WHERE assignee_id IS NOT NULL;
CREATE INDEX problems_group_idx ON problems (assignment_group_id, created_at, id);
CREATE INDEX problems_category_idx ON problems (category, created_at, id);

-- The problem an incident is caused by.
ALTER TABLE incidents ADD COLUMN problem_id TEXT REFERENCES problems (id);
CREATE INDEX incidents_problem_idx ON incidents (problem_id, created_at, id)
    WHERE problem_id IS NOT NULL;

-- Numbers from a sequence, in the INSERT (see incident_number_seq). One function serves every
-- ticket type: the prefix and at least seven digits, as the domain's TicketKind::number.
CREATE SEQUENCE problem_number_seq;
CREATE FUNCTION next_ticket_number(prefix text, sequence regclass) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    n bigint := nextval(sequence);
BEGIN
    RETURN prefix || CASE WHEN n < 10000000 THEN lpad(n::text, 7, '0') ELSE n::text END;
END
$$;
ALTER TABLE problems ALTER COLUMN number SET DEFAULT next_ticket_number('PRB', 'problem_number_seq');
-- The words of a problem: its symptoms and what is known of it (the known-error search).
CREATE INDEX problems_words_idx ON problems USING GIN (to_tsvector('simple',
    title || ' ' || description || ' ' || coalesce(root_cause, '') || ' ' || coalesce(workaround, '')));
