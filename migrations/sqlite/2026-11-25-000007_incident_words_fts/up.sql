-- The words of each incident for `q`, in SQLite's full-text index instead of a word table.
-- The table wrote one b-tree entry per word, scattered across its pages: a third of the WAL
-- frames of a batch of new incidents. FTS5 keeps a transaction's words in memory and writes
-- them as one sorted segment when it commits. The repository writes them just before the
-- commit (journal.rs), outside any savepoint, because FTS5 also writes a segment at every
-- savepoint (one per unit of work made inserts ~25x slower at 800,000 incidents).
--
-- Each row holds `search_terms(title, description)` joined by spaces, so the `ascii`
-- tokenizer (non-ASCII characters are word characters) finds exactly the words the domain
-- chose; the rowid is the sequence of the incident's number (INC0000042 is 42).
CREATE VIRTUAL TABLE incident_words USING fts5(
    terms,
    content = '',
    contentless_delete = 1,
    detail = none,
    tokenize = 'ascii'
);

INSERT INTO incident_words (rowid, terms)
SELECT CAST(substr(incidents.number, 4) AS INTEGER), group_concat(incident_terms.term, ' ')
FROM incident_terms
JOIN incidents ON incidents.id = incident_terms.incident_id
GROUP BY incidents.number;

DROP TABLE incident_terms;
