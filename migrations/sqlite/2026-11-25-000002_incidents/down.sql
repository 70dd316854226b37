DROP TABLE incident_terms;
DROP TABLE assignment_rules;
DROP TABLE notes;
DELETE FROM counters WHERE name = 'incident_number';
DROP TABLE incidents;
