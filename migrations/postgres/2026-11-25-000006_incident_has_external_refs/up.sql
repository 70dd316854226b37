-- Whether an incident has external references, kept with them by the repository: most have
-- none, and reading an incident then needs no second query (a round trip on PostgreSQL).
ALTER TABLE incidents ADD COLUMN has_external_refs BOOLEAN NOT NULL DEFAULT FALSE;
UPDATE incidents SET has_external_refs = TRUE
WHERE id IN (SELECT entity_id FROM external_refs WHERE entity_type = 'incident');
