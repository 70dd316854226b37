-- SLA timers of tickets: what the clock read at its last line (`as_of`), kept for lists, list
-- filters and the worker; the timeline lines are the truth it is read from.
CREATE TABLE sla_timers (
    id TEXT PRIMARY KEY NOT NULL,
    ticket_type TEXT NOT NULL,
    ticket_id TEXT NOT NULL,
    metric TEXT NOT NULL,
    policy_id TEXT NOT NULL,
    calendar_id TEXT NOT NULL,
    calendar_version BIGINT NOT NULL,
    warning_percent INTEGER NOT NULL,
    target_seconds BIGINT NOT NULL,
    state TEXT NOT NULL,
    started_at TIMESTAMP NOT NULL,
    as_of TIMESTAMP NOT NULL,
    elapsed_seconds BIGINT NOT NULL,
    paused_seconds BIGINT NOT NULL,
    due_at TIMESTAMP,
    warned_at TIMESTAMP,
    breached_at TIMESTAMP,
    stopped_at TIMESTAMP,
    -- When the worker must look at it next (a warning or breach still to announce).
    next_alarm_at TIMESTAMP,
    -- The list order: the due time, or the end of time while paused.
    due_order TIMESTAMP NOT NULL,
    version BIGINT NOT NULL
);
CREATE INDEX sla_timers_ticket_idx ON sla_timers (ticket_id);
CREATE INDEX sla_timers_alarm_idx ON sla_timers (next_alarm_at) WHERE next_alarm_at IS NOT NULL;
CREATE INDEX sla_timers_due_idx ON sla_timers (due_order, id);
CREATE INDEX sla_timers_breached_idx ON sla_timers (ticket_id) WHERE breached_at IS NOT NULL;
CREATE INDEX sla_timers_running_due_idx ON sla_timers (due_at, ticket_id) WHERE state = 'running';

CREATE TABLE sla_timer_lines (
    timer_id TEXT NOT NULL REFERENCES sla_timers (id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    at TIMESTAMP NOT NULL,
    kind TEXT NOT NULL,
    reason TEXT NOT NULL,
    target_seconds BIGINT,
    policy_id TEXT,
    calendar_version BIGINT NOT NULL,
    audit_entry_id TEXT,
    PRIMARY KEY (timer_id, position)
);
