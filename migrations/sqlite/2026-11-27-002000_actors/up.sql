-- Users and API tokens are both actors: the audit trail says which kind acted, and an API
-- token's creator may be a user or another API token (so created_by refers to no table).
ALTER TABLE audit_entries ADD COLUMN actor_kind TEXT NOT NULL DEFAULT 'user';
UPDATE audit_entries SET actor_kind = 'system' WHERE actor_id IS NULL;
UPDATE audit_entries SET actor_kind = 'api_token' WHERE actor_name LIKE 'api-token:%';

-- SQLite drops a foreign key only by rebuilding the table.
CREATE TABLE api_tokens_rebuilt (
    id TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    token_hash TEXT NOT NULL,
    created_by TEXT,
    created_at TIMESTAMP NOT NULL,
    expires_at TIMESTAMP,
    revoked_at TIMESTAMP,
    scopes TEXT,
    last_used_at TIMESTAMP,
    -- user or api_token; NULL with created_by NULL.
    created_by_kind TEXT,
    -- The creator's username (or api-token:<name>) when it created the token.
    created_by_name TEXT
);
INSERT INTO api_tokens_rebuilt (id, name, role, token_hash, created_by, created_at, expires_at,
                                revoked_at, scopes, last_used_at, created_by_kind, created_by_name)
SELECT t.id, t.name, t.role, t.token_hash, t.created_by, t.created_at, t.expires_at,
       t.revoked_at, t.scopes, t.last_used_at,
       CASE WHEN u.id IS NULL THEN NULL ELSE 'user' END, u.username
FROM api_tokens t LEFT JOIN users u ON u.id = t.created_by;
DROP TABLE api_tokens;
ALTER TABLE api_tokens_rebuilt RENAME TO api_tokens;
CREATE UNIQUE INDEX api_tokens_hash_key ON api_tokens (token_hash);
