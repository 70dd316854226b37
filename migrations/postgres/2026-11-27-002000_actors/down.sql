UPDATE api_tokens SET created_by = NULL WHERE created_by_kind IS DISTINCT FROM 'user';
ALTER TABLE api_tokens DROP COLUMN created_by_name;
ALTER TABLE api_tokens DROP COLUMN created_by_kind;
ALTER TABLE api_tokens ADD CONSTRAINT api_tokens_created_by_fkey FOREIGN KEY (created_by) REFERENCES users (id);
ALTER TABLE audit_entries DROP COLUMN actor_kind;
