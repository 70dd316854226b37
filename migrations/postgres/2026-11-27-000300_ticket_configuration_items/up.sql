-- The configuration items a ticket concerns (incidents and problems now, changes later).
CREATE TABLE ticket_configuration_items (
    ticket_type TEXT NOT NULL,
    ticket_id TEXT NOT NULL,
    ci_id TEXT NOT NULL REFERENCES configuration_items (id),
    PRIMARY KEY (ticket_type, ticket_id, ci_id)
);
-- The tickets of an item (`GET /configuration-items/{id}/tickets`, `configuration_item=`).
CREATE INDEX ticket_configuration_items_ci_idx
    ON ticket_configuration_items (ci_id, ticket_type, ticket_id);

-- The business service a ticket affects, and whether it has items to load at all (most have
-- none, and reading a ticket then needs no second query).
ALTER TABLE incidents ADD COLUMN service_id TEXT REFERENCES configuration_items (id);
ALTER TABLE incidents ADD COLUMN has_configuration_items BOOLEAN NOT NULL DEFAULT FALSE;
CREATE INDEX incidents_service_idx ON incidents (service_id, created_at, id)
    WHERE service_id IS NOT NULL;
ALTER TABLE problems ADD COLUMN service_id TEXT REFERENCES configuration_items (id);
ALTER TABLE problems ADD COLUMN has_configuration_items BOOLEAN NOT NULL DEFAULT FALSE;
CREATE INDEX problems_service_idx ON problems (service_id, created_at, id)
    WHERE service_id IS NOT NULL;
