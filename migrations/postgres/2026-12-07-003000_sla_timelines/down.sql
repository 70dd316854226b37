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
INSERT INTO sla_timer_lines
    (timer_id, position, at, kind, reason, target_seconds, policy_id, calendar_version,
     audit_entry_id)
SELECT t.id, l.n - 1,
       (l.line::json ->> 'at')::timestamptz AT TIME ZONE 'UTC',
       l.line::json ->> 'kind', l.line::json ->> 'reason',
       (l.line::json ->> 'target_seconds')::bigint, l.line::json ->> 'policy_id',
       (l.line::json ->> 'calendar_version')::bigint, l.line::json ->> 'audit_entry_id'
FROM sla_timers t,
     regexp_split_to_table(rtrim(t.timeline, E'\n'), E'\n') WITH ORDINALITY AS l (line, n)
WHERE t.timeline <> '';
ALTER TABLE sla_timers ADD COLUMN line_count INTEGER NOT NULL DEFAULT 0;
UPDATE sla_timers SET line_count =
    (SELECT COUNT(*) FROM sla_timer_lines l WHERE l.timer_id = sla_timers.id);
ALTER TABLE sla_timers DROP COLUMN timeline;
