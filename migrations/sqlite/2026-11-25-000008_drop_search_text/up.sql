-- The full-text index (incident_words) holds the words now; the copy of title and description
-- in search_text only made every row wider.
ALTER TABLE incidents DROP COLUMN search_text;
