ALTER TABLE incidents DROP COLUMN has_external_refs;
