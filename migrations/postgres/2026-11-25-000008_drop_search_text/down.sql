ALTER TABLE incidents ADD COLUMN search_text TEXT NOT NULL DEFAULT '';
UPDATE incidents SET search_text = title || E'\n' || description;
ALTER TABLE incidents ALTER COLUMN search_text DROP DEFAULT;
CREATE INDEX incidents_search_idx ON incidents USING GIN (to_tsvector('simple', search_text));
DROP INDEX incidents_words_idx;
