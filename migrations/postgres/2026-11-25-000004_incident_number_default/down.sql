ALTER TABLE incidents ALTER COLUMN number DROP DEFAULT;
DROP FUNCTION next_incident_number();
