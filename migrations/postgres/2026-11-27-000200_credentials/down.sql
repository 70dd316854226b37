DROP TABLE revoked_tokens;
ALTER TABLE users DROP COLUMN must_change_password;
ALTER TABLE users DROP COLUMN valid_after;
