CREATE TABLE api_tokens_rebuilt (
    id TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    token_hash TEXT NOT NULL,
    created_by TEXT REFERENCES users (id),
    created_at TIMESTAMP NOT NULL,
    expires_at TIMESTAMP,
    revoked_at TIMESTAMP,
    scopes TEXT,
    last_used_at TIMESTAMP
);
INSERT INTO api_tokens_rebuilt (id, name, role, token_hash, created_by, created_at, expires_at,
                                revoked_at, scopes, last_used_at)
SELECT id, name, role, token_hash,
       CASE WHEN created_by_kind = 'user' THEN created_by ELSE NULL END,
       created_at, expires_at, revoked_at, scopes, last_used_at
FROM api_tokens;
DROP TABLE api_tokens;
ALTER TABLE api_tokens_rebuilt RENAME TO api_tokens;
CREATE UNIQUE INDEX api_tokens_hash_key ON api_tokens (token_hash);
ALTER TABLE audit_entries DROP COLUMN actor_kind;
