-- JWT signing keys, so that the key can be rotated without downtime: the newest live key signs,
-- every live key verifies (tokens name theirs in `kid`), and a key retires once its last token
-- can have expired. A retired key's secret is wiped; its row stays so that the kid is never
-- reused. `secret` is NULL for the key configured in ITSM_JWT_SECRET, which stays in the
-- environment.
CREATE TABLE signing_keys (
    kid TEXT PRIMARY KEY NOT NULL,
    secret TEXT,
    created_at TIMESTAMP NOT NULL,
    retires_at TIMESTAMP
);
