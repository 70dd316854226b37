-- Monitoring alerts: one row per key (source, dedup key); repeats count on it.
CREATE TABLE alerts (
    id TEXT PRIMARY KEY NOT NULL,
    source TEXT NOT NULL,
    dedup_key TEXT NOT NULL,
    status TEXT NOT NULL,
    severity TEXT NOT NULL,
    summary TEXT NOT NULL,
    description TEXT NOT NULL,
    resources TEXT NOT NULL,
    labels TEXT NOT NULL,
    annotations TEXT NOT NULL,
    count BIGINT NOT NULL,
    first_seen TIMESTAMP NOT NULL,
    last_seen TIMESTAMP NOT NULL,
    starts_at TIMESTAMP,
    ends_at TIMESTAMP,
    resolved_at TIMESTAMP,
    incident_id TEXT REFERENCES incidents (id),
    rule_id TEXT,
    updated_at TIMESTAMP NOT NULL,
    version BIGINT NOT NULL
);
CREATE UNIQUE INDEX alerts_key_idx ON alerts (source, dedup_key);
CREATE INDEX alerts_source_idx ON alerts (source, id);
CREATE INDEX alerts_dedup_key_idx ON alerts (dedup_key, id);
CREATE INDEX alerts_status_idx ON alerts (status, id);
CREATE INDEX alerts_incident_idx ON alerts (incident_id, status) WHERE incident_id IS NOT NULL;

-- Ordered rules mapping alerts to incidents (data, not code).
CREATE TABLE alert_rules (
    id TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL,
    position INTEGER NOT NULL,
    source TEXT,
    severity TEXT,
    labels TEXT NOT NULL,
    impact TEXT NOT NULL,
    urgency TEXT NOT NULL,
    category TEXT,
    group_id TEXT REFERENCES assignment_groups (id),
    open_incident BOOLEAN NOT NULL,
    resolve_incident BOOLEAN NOT NULL,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    version BIGINT NOT NULL
);
CREATE INDEX alert_rules_position_idx ON alert_rules (position, id);

-- `channel=` on incident lists (incidents opened by monitoring).
CREATE INDEX incidents_channel_idx ON incidents (channel, created_at, id);
