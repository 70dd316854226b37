ALTER TABLE sla_timers DROP COLUMN line_count;
ALTER TABLE sla_timers DROP COLUMN clock_running;
