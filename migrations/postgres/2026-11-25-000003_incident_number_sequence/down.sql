INSERT INTO counters (name, value)
SELECT 'incident_number', CASE WHEN is_called THEN last_value ELSE 0 END
FROM incident_number_seq;
DROP SEQUENCE incident_number_seq;
