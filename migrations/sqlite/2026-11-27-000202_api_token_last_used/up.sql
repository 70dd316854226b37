-- When the token was last used, to the minute (written at most once a minute per process).
ALTER TABLE api_tokens ADD COLUMN last_used_at TIMESTAMP;
