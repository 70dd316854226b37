ALTER TABLE incidents ADD COLUMN search_text TEXT NOT NULL DEFAULT '';
UPDATE incidents SET search_text = title || char(10) || description;
