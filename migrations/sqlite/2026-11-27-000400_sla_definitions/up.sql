-- Business calendars: the current definition (JSON, as clients write it) and every version a
-- timer may have started under.
CREATE TABLE calendars (
    id TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL,
    definition TEXT NOT NULL,
    builtin BOOLEAN NOT NULL DEFAULT 0,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    version BIGINT NOT NULL
);
CREATE UNIQUE INDEX calendars_name_key ON calendars (name);
CREATE TABLE calendar_versions (
    calendar_id TEXT NOT NULL REFERENCES calendars (id) ON DELETE CASCADE,
    version BIGINT NOT NULL,
    definition TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    PRIMARY KEY (calendar_id, version)
);
-- The built-in calendar: every hour of every day.
INSERT INTO calendars (id, name, definition, builtin, created_at, updated_at, version)
VALUES ('24x7', '24x7', '{"time_zone":"UTC","working_hours":[{"day":"monday","start":"00:00","end":"00:00"},{"day":"tuesday","start":"00:00","end":"00:00"},{"day":"wednesday","start":"00:00","end":"00:00"},{"day":"thursday","start":"00:00","end":"00:00"},{"day":"friday","start":"00:00","end":"00:00"},{"day":"saturday","start":"00:00","end":"00:00"},{"day":"sunday","start":"00:00","end":"00:00"}],"holidays":[]}', 1, '2026-11-27 00:00:00', '2026-11-27 00:00:00', 1);
INSERT INTO calendar_versions (calendar_id, version, definition, created_at)
VALUES ('24x7', 1, '{"time_zone":"UTC","working_hours":[{"day":"monday","start":"00:00","end":"00:00"},{"day":"tuesday","start":"00:00","end":"00:00"},{"day":"wednesday","start":"00:00","end":"00:00"},{"day":"thursday","start":"00:00","end":"00:00"},{"day":"friday","start":"00:00","end":"00:00"},{"day":"saturday","start":"00:00","end":"00:00"},{"day":"sunday","start":"00:00","end":"00:00"}],"holidays":[]}', '2026-11-27 00:00:00');

-- SLA policies: what they apply to, targets and pauses (JSON), tried by precedence.
CREATE TABLE sla_policies (
    id TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL,
    precedence INTEGER NOT NULL,
    ticket_type TEXT NOT NULL,
    calendar_id TEXT NOT NULL REFERENCES calendars (id),
    definition TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    version BIGINT NOT NULL
);
CREATE UNIQUE INDEX sla_policies_name_key ON sla_policies (name);
CREATE INDEX sla_policies_precedence_idx ON sla_policies (precedence, id);
CREATE INDEX sla_policies_calendar_idx ON sla_policies (calendar_id);
