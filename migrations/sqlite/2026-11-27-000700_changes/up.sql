CREATE TABLE changes (
    id TEXT PRIMARY KEY NOT NULL,
    number TEXT NOT NULL,
    change_type TEXT NOT NULL,
    title TEXT NOT NULL,
    description TEXT NOT NULL,
    -- Justification, implementation, backout and test plans, as JSON (a table holds at most
    -- 32 columns in our schema).
    plans TEXT NOT NULL,
    state TEXT NOT NULL,
    risk TEXT NOT NULL,
    -- The questionnaire, the computed assessment and an override's reason, as JSON.
    risk_detail TEXT NOT NULL,
    planned_start TIMESTAMP,
    planned_end TIMESTAMP,
    actual_start TIMESTAMP,
    actual_end TIMESTAMP,
    service_id TEXT REFERENCES configuration_items (id),
    assignment_group_id TEXT REFERENCES assignment_groups (id),
    assignee_id TEXT REFERENCES users (id),
    requested_by TEXT NOT NULL REFERENCES users (id),
    template_id TEXT,
    approval_round BIGINT NOT NULL,
    authorized_at TIMESTAMP,
    retrospective BOOLEAN NOT NULL,
    -- The approval policy and quorum of the round, the last rejection and a freeze override's
    -- reason, as JSON.
    approval TEXT NOT NULL,
    outcome TEXT,
    review_notes TEXT,
    -- The incidents it caused and the problems it fixes (ids), as JSON.
    related TEXT NOT NULL,
    cancel_reason TEXT,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    closed_at TIMESTAMP,
    version BIGINT NOT NULL,
    has_external_refs BOOLEAN NOT NULL,
    has_configuration_items BOOLEAN NOT NULL
);
CREATE UNIQUE INDEX changes_number_key ON changes (number);
-- Keyset pagination, one partial index per state (see the incidents migration).
CREATE INDEX changes_created_idx ON changes (created_at, id);
CREATE INDEX changes_updated_idx ON changes (updated_at, id);
CREATE INDEX changes_new_idx ON changes (created_at, id) WHERE state = 'new';
CREATE INDEX changes_assess_idx ON changes (created_at, id) WHERE state = 'assess';
CREATE INDEX changes_authorize_idx ON changes (created_at, id) WHERE state = 'authorize';
CREATE INDEX changes_scheduled_idx ON changes (created_at, id) WHERE state = 'scheduled';
CREATE INDEX changes_implement_idx ON changes (created_at, id) WHERE state = 'implement';
CREATE INDEX changes_review_idx ON changes (created_at, id) WHERE state = 'review';
CREATE INDEX changes_closed_idx ON changes (created_at, id) WHERE state = 'closed';
CREATE INDEX changes_canceled_idx ON changes (created_at, id) WHERE state = 'canceled';
CREATE INDEX changes_type_idx ON changes (change_type, created_at, id);
CREATE INDEX changes_risk_idx ON changes (risk, created_at, id);
CREATE INDEX changes_requested_by_idx ON changes (requested_by, created_at, id);
CREATE INDEX changes_assignee_idx ON changes (assignee_id, created_at, id)
    WHERE assignee_id IS NOT NULL;
CREATE INDEX changes_group_idx ON changes (assignment_group_id, created_at, id);
CREATE INDEX changes_service_idx ON changes (service_id, created_at, id)
    WHERE service_id IS NOT NULL;
-- Conflicts and the calendar: changes on the schedule by the start of their window (a window
-- lasts at most a month, so a range of starts finds every overlap).
CREATE INDEX changes_planned_idx ON changes (planned_start, planned_end)
    WHERE state IN ('scheduled', 'implement');
CREATE INDEX changes_calendar_idx ON changes (planned_start, id)
    WHERE planned_start IS NOT NULL;

-- One row per approver per authorisation round.
CREATE TABLE change_approvals (
    id TEXT PRIMARY KEY NOT NULL,
    change_id TEXT NOT NULL REFERENCES changes (id),
    round BIGINT NOT NULL,
    approver_id TEXT NOT NULL REFERENCES users (id),
    asked_as TEXT NOT NULL,
    state TEXT NOT NULL,
    comment TEXT,
    decided_at TIMESTAMP,
    created_at TIMESTAMP NOT NULL
);
CREATE INDEX change_approvals_change_idx ON change_approvals (change_id, round, id);
CREATE INDEX change_approvals_pending_idx ON change_approvals (approver_id, created_at, id)
    WHERE state = 'pending';

-- Approval policies, templates and freeze windows: their rules as JSON, as clients write them.
CREATE TABLE change_approval_policies (
    id TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL,
    precedence INTEGER NOT NULL,
    definition TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    version BIGINT NOT NULL
);
CREATE UNIQUE INDEX change_approval_policies_name_key ON change_approval_policies (name);

CREATE TABLE standard_change_templates (
    id TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    definition TEXT NOT NULL,
    active BOOLEAN NOT NULL,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    version BIGINT NOT NULL
);
CREATE UNIQUE INDEX standard_change_templates_name_key ON standard_change_templates (name);

CREATE TABLE change_freeze_windows (
    id TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL,
    reason TEXT NOT NULL,
    start_at TIMESTAMP NOT NULL,
    end_at TIMESTAMP NOT NULL,
    scope TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    version BIGINT NOT NULL
);
CREATE INDEX change_freeze_windows_end_idx ON change_freeze_windows (end_at, id);

-- The change that fixes a problem.
ALTER TABLE problems ADD COLUMN fix_change_id TEXT REFERENCES changes (id);

INSERT INTO counters (name, value) VALUES ('change_number', 0);
