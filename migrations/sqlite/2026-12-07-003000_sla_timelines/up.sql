-- A timer's timeline moves into its row: one JSON object per line, each ended by a newline, in
-- order. The lines are only ever read whole, for one timer; as rows of their own they cost a
-- ticket two more rows to create (with a key check each) and every save one more statement.
-- A new line is appended to the text; the line count goes with the positions.
ALTER TABLE sla_timers ADD COLUMN timeline TEXT NOT NULL DEFAULT '';
UPDATE sla_timers SET timeline = COALESCE((
    SELECT group_concat(
        json_object(
            'at', replace(l.at, ' ', 'T') || 'Z',
            'kind', l.kind,
            'reason', l.reason,
            'target_seconds', l.target_seconds,
            'policy_id', l.policy_id,
            'calendar_version', l.calendar_version,
            'audit_entry_id', l.audit_entry_id
        ) || char(10), '' ORDER BY l.position)
    FROM sla_timer_lines l
    WHERE l.timer_id = sla_timers.id
), '');
DROP TABLE sla_timer_lines;
ALTER TABLE sla_timers DROP COLUMN line_count;
