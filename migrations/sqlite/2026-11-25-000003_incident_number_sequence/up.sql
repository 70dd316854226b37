-- SQLite has one writer and keeps numbering incidents from the counter row; this migration
-- exists so that both backends share the same migration names.
SELECT 1;
