CREATE TABLE incident_terms (
    term TEXT NOT NULL,
    incident_id TEXT NOT NULL,
    PRIMARY KEY (term, incident_id)
) WITHOUT ROWID;

CREATE VIRTUAL TABLE temp.incident_words_vocabulary
USING fts5vocab(main, incident_words, instance);

INSERT INTO incident_terms (term, incident_id)
SELECT DISTINCT vocabulary.term, incidents.id
FROM temp.incident_words_vocabulary AS vocabulary
JOIN incidents ON incidents.number = printf('INC%07d', vocabulary.doc);

DROP TABLE temp.incident_words_vocabulary;
DROP TABLE incident_words;
