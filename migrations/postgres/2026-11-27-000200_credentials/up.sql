-- Tokens issued before valid_after are refused (password change or reset, deactivation).
ALTER TABLE users ADD COLUMN valid_after TIMESTAMP;
-- Set by an admin's password reset: the user must choose a new password before anything else.
ALTER TABLE users ADD COLUMN must_change_password BOOLEAN NOT NULL DEFAULT FALSE;
-- Access tokens revoked by logout, kept until they would have expired anyway.
CREATE TABLE revoked_tokens (
    jti TEXT PRIMARY KEY NOT NULL,
    user_id TEXT NOT NULL REFERENCES users (id),
    expires_at TIMESTAMP NOT NULL
);
CREATE INDEX revoked_tokens_user_idx ON revoked_tokens (user_id, expires_at);
CREATE INDEX revoked_tokens_expiry_idx ON revoked_tokens (expires_at);
