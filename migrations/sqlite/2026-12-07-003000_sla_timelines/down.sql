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
-- Each line of a timeline, split at its newlines, numbered from 0.
WITH RECURSIVE split (timer_id, position, line, rest) AS (
    SELECT id, -1, NULL, timeline FROM sla_timers
    UNION ALL
    SELECT timer_id, position + 1, substr(rest, 1, instr(rest, char(10)) - 1),
           substr(rest, instr(rest, char(10)) + 1)
    FROM split
    WHERE instr(rest, char(10)) > 0
)
INSERT INTO sla_timer_lines
    (timer_id, position, at, kind, reason, target_seconds, policy_id, calendar_version,
     audit_entry_id)
SELECT timer_id, position,
       replace(rtrim(line ->> '$.at', 'Z'), 'T', ' '),
       line ->> '$.kind', line ->> '$.reason', line ->> '$.target_seconds',
       line ->> '$.policy_id', line ->> '$.calendar_version', line ->> '$.audit_entry_id'
FROM split
WHERE position >= 0;
ALTER TABLE sla_timers ADD COLUMN line_count INTEGER NOT NULL DEFAULT 0;
UPDATE sla_timers SET line_count =
    (SELECT COUNT(*) FROM sla_timer_lines l WHERE l.timer_id = sla_timers.id);
ALTER TABLE sla_timers DROP COLUMN timeline;
