-- SQLite numbers incidents from the counter row (see persistence::incidents::create); this
-- migration exists so that both backends share the same migration names.
SELECT 1;
