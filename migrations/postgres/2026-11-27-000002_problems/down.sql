ALTER TABLE incidents DROP COLUMN problem_id;
DROP TABLE problems;
DROP FUNCTION next_ticket_number(text, regclass);
DROP SEQUENCE problem_number_seq;
