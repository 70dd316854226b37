DROP TABLE sla_timer_lines;
DROP TABLE sla_timers;
