-- Incident numbers come from a sequence on PostgreSQL: creates run on several writers there,
-- and a counter row, locked until each transaction commits, would queue them one by one.
-- A create that rolls back leaves a gap in the numbers; events stay gap-free (counter row).
CREATE SEQUENCE incident_number_seq;
SELECT setval('incident_number_seq', GREATEST(value, 1), value > 0)
FROM counters WHERE name = 'incident_number';
DELETE FROM counters WHERE name = 'incident_number';
