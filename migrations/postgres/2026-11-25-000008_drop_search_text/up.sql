-- The words of title and description are indexed from those columns; the copy of both in
-- search_text only made every row wider (more pages to read for a list, more to write).
CREATE INDEX incidents_words_idx ON incidents
    USING GIN (to_tsvector('simple', title || ' ' || description));
DROP INDEX incidents_search_idx;
ALTER TABLE incidents DROP COLUMN search_text;
