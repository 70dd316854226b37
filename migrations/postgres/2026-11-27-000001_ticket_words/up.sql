-- SQLite renames its full-text index to serve every ticket type; PostgreSQL indexes each
-- ticket table's own columns. This migration exists so that both backends share the names.
SELECT 1;
