-- A new incident takes its number in its own INSERT (RETURNING number), not in a round trip of
-- its own to the sequence. Same format as the domain's `incident_number`: INC and at least
-- seven digits. PL/pgSQL, not SQL: a SQL function in a default is parsed again on every call.
CREATE FUNCTION next_incident_number() RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    n bigint := nextval('incident_number_seq');
BEGIN
    RETURN 'INC' || CASE WHEN n < 10000000 THEN lpad(n::text, 7, '0') ELSE n::text END;
END
$$;
ALTER TABLE incidents ALTER COLUMN number SET DEFAULT next_incident_number();
