DROP INDEX incidents_problem_idx;
ALTER TABLE incidents DROP COLUMN problem_id;
DROP TABLE problems;
DELETE FROM counters WHERE name = 'problem_number';
