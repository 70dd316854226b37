-- One full-text index for every ticket type: a ticket's row id is its kind's code shifted left
-- by 40 bits plus the sequence of its number (persistence::tickets). Incidents have code 0, so
-- their rows keep the ids they had.
ALTER TABLE incident_words RENAME TO ticket_words;
