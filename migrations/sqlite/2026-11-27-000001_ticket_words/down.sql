ALTER TABLE ticket_words RENAME TO incident_words;
