-- A timer row keeps its clock whole (whether it runs, and how many lines its timeline has), so
-- that a ticket save or an alarm goes on from it without reading the timeline. `as_of` is how
-- far the clock has run: a stopped clock stands at its stop.
ALTER TABLE sla_timers ADD COLUMN clock_running BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE sla_timers ADD COLUMN line_count INTEGER NOT NULL DEFAULT 0;
UPDATE sla_timers SET
    as_of = COALESCE(stopped_at, as_of),
    line_count = (SELECT COUNT(*) FROM sla_timer_lines l WHERE l.timer_id = sla_timers.id),
    clock_running = stopped_at IS NULL AND COALESCE((
        SELECT kind FROM sla_timer_lines l
        WHERE l.timer_id = sla_timers.id AND kind IN ('start', 'pause', 'resume')
        ORDER BY position DESC LIMIT 1), 'start') <> 'pause';
