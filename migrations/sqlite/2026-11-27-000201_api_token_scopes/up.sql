-- JSON array of scopes; NULL: all the token's role allows.
ALTER TABLE api_tokens ADD COLUMN scopes TEXT;
