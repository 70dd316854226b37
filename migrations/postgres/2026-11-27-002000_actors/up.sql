-- Users and API tokens are both actors: the audit trail says which kind acted, and an API
-- token's creator may be a user or another API token (so created_by refers to no table).
ALTER TABLE audit_entries ADD COLUMN actor_kind TEXT NOT NULL DEFAULT 'user';
UPDATE audit_entries SET actor_kind = 'system' WHERE actor_id IS NULL;
UPDATE audit_entries SET actor_kind = 'api_token' WHERE actor_name LIKE 'api-token:%';

ALTER TABLE api_tokens DROP CONSTRAINT IF EXISTS api_tokens_created_by_fkey;
-- user or api_token; NULL with created_by NULL.
ALTER TABLE api_tokens ADD COLUMN created_by_kind TEXT;
-- The creator's username (or api-token:<name>) when it created the token.
ALTER TABLE api_tokens ADD COLUMN created_by_name TEXT;
UPDATE api_tokens SET created_by_kind = 'user', created_by_name = users.username
FROM users WHERE users.id = api_tokens.created_by;
