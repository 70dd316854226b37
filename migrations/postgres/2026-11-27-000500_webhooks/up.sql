-- Webhook subscriptions: where to deliver which events, signed with a secret (and, during a
-- rotation, the previous one until it expires). `position` is the last outbox sequence the
-- subscription's deliveries were created up to: the worker's committed position.
CREATE TABLE webhook_subscriptions (
    id TEXT PRIMARY KEY NOT NULL,
    url TEXT NOT NULL,
    description TEXT NOT NULL,
    event_types TEXT NOT NULL,
    active BOOLEAN NOT NULL,
    secret TEXT NOT NULL,
    previous_secret TEXT,
    previous_secret_until TIMESTAMP,
    position BIGINT NOT NULL,
    consecutive_failures INTEGER NOT NULL DEFAULT 0,
    disabled_reason TEXT,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    version BIGINT NOT NULL
);

-- One delivery of one event (or a test message) to one subscription; its id is the
-- `webhook-id` header, the same on every attempt. A worker claims a delivery by setting its
-- lease; `status` is pending, delivered or dead.
CREATE TABLE webhook_deliveries (
    id TEXT PRIMARY KEY NOT NULL,
    subscription_id TEXT NOT NULL REFERENCES webhook_subscriptions (id) ON DELETE CASCADE,
    event_sequence BIGINT,
    event_type TEXT NOT NULL,
    entity_key TEXT NOT NULL,
    body TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMP NOT NULL,
    lease_owner TEXT,
    lease_until TIMESTAMP,
    response_status INTEGER,
    latency_ms BIGINT,
    response_excerpt TEXT,
    last_error TEXT,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
CREATE UNIQUE INDEX webhook_deliveries_event_key ON webhook_deliveries (subscription_id, event_sequence);
CREATE INDEX webhook_deliveries_log_idx ON webhook_deliveries (subscription_id, id);
CREATE INDEX webhook_deliveries_status_idx ON webhook_deliveries (subscription_id, status, id);
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_entity_idx ON webhook_deliveries (subscription_id, entity_key, event_sequence) WHERE status = 'pending';
