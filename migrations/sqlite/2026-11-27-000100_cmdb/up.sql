-- The CMDB: classes with attribute schemas, configuration items, the index of their
-- identifying attributes, and typed relationships between items.
CREATE TABLE ci_classes (
    name TEXT PRIMARY KEY NOT NULL,
    parent TEXT REFERENCES ci_classes (name),
    description TEXT NOT NULL DEFAULT '',
    builtin BOOLEAN NOT NULL DEFAULT 0,
    attributes TEXT NOT NULL,
    identification_rules TEXT NOT NULL,
    source_precedence TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    version BIGINT NOT NULL
);
CREATE INDEX ci_classes_parent_idx ON ci_classes (parent);

CREATE TABLE configuration_items (
    id TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL,
    class TEXT NOT NULL REFERENCES ci_classes (name),
    status TEXT NOT NULL,
    environment TEXT,
    criticality TEXT,
    owner_group_id TEXT REFERENCES assignment_groups (id),
    attributes TEXT NOT NULL,
    attribute_sources TEXT NOT NULL,
    has_external_refs BOOLEAN NOT NULL DEFAULT 0,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    version BIGINT NOT NULL
);
-- Lists walk the id order (keyset); each filter has an index that keeps that order.
CREATE INDEX configuration_items_class_idx ON configuration_items (class, id);
CREATE INDEX configuration_items_status_idx ON configuration_items (status, id);
CREATE INDEX configuration_items_environment_idx ON configuration_items (environment, id);
CREATE INDEX configuration_items_criticality_idx ON configuration_items (criticality, id);
CREATE INDEX configuration_items_owner_group_idx ON configuration_items (owner_group_id, id);

-- The identifying attributes of each item, for `attr.<name>=` filters and reconciliation.
CREATE TABLE ci_identifiers (
    ci_id TEXT NOT NULL REFERENCES configuration_items (id),
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (ci_id, name)
);
CREATE INDEX ci_identifiers_lookup_idx ON ci_identifiers (name, value, ci_id);

CREATE TABLE ci_relationships (
    id TEXT PRIMARY KEY NOT NULL,
    source_id TEXT NOT NULL REFERENCES configuration_items (id),
    rel_type TEXT NOT NULL,
    target_id TEXT NOT NULL REFERENCES configuration_items (id),
    created_at TIMESTAMP NOT NULL,
    CHECK (source_id <> target_id)
);
CREATE UNIQUE INDEX ci_relationships_key ON ci_relationships (source_id, rel_type, target_id);
CREATE INDEX ci_relationships_target_idx ON ci_relationships (target_id, rel_type, source_id);

-- The built-in classes.
INSERT INTO ci_classes (name, parent, description, builtin, attributes, identification_rules, source_precedence, created_at, updated_at, version) VALUES
('business_service', NULL, 'A service the business consumes', 1, '[{"name":"service_code","type":"string","required":false,"identifying":true},{"name":"service_owner","type":"string","required":false,"identifying":false},{"name":"sla_tier","type":"enum","required":false,"identifying":false,"enum":["gold","silver","bronze"]}]', '[["service_code"]]', '[]', '2026-11-27 00:00:00', '2026-11-27 00:00:00', 1),
('application', NULL, 'Software that delivers (part of) a service', 1, '[{"name":"app_id","type":"string","required":false,"identifying":true},{"name":"version","type":"string","required":false,"identifying":false},{"name":"vendor","type":"string","required":false,"identifying":false}]', '[["app_id"]]', '[]', '2026-11-27 00:00:00', '2026-11-27 00:00:00', 1),
('database', NULL, 'A database instance', 1, '[{"name":"instance_name","type":"string","required":false,"identifying":true},{"name":"host","type":"string","required":false,"identifying":true},{"name":"engine","type":"string","required":false,"identifying":false},{"name":"port","type":"integer","required":false,"identifying":false}]', '[["instance_name","host"]]', '[]', '2026-11-27 00:00:00', '2026-11-27 00:00:00', 1),
('server', NULL, 'A physical server', 1, '[{"name":"serial_number","type":"string","required":false,"identifying":true},{"name":"hostname","type":"string","required":false,"identifying":true},{"name":"dns_domain","type":"string","required":false,"identifying":true},{"name":"ip_address","type":"string","required":false,"identifying":false},{"name":"os","type":"string","required":false,"identifying":false},{"name":"cpu_count","type":"integer","required":false,"identifying":false},{"name":"memory_gb","type":"number","required":false,"identifying":false}]', '[["serial_number"],["hostname","dns_domain"]]', '[]', '2026-11-27 00:00:00', '2026-11-27 00:00:00', 1),
('virtual_machine', NULL, 'A virtual machine', 1, '[{"name":"vm_uuid","type":"string","required":false,"identifying":true},{"name":"hostname","type":"string","required":false,"identifying":true},{"name":"dns_domain","type":"string","required":false,"identifying":true},{"name":"ip_address","type":"string","required":false,"identifying":false},{"name":"os","type":"string","required":false,"identifying":false},{"name":"cpu_count","type":"integer","required":false,"identifying":false},{"name":"memory_gb","type":"number","required":false,"identifying":false}]', '[["vm_uuid"],["hostname","dns_domain"]]', '[]', '2026-11-27 00:00:00', '2026-11-27 00:00:00', 1),
('container', NULL, 'A container or pod', 1, '[{"name":"container_id","type":"string","required":false,"identifying":true},{"name":"image","type":"string","required":false,"identifying":false},{"name":"cluster","type":"string","required":false,"identifying":false}]', '[["container_id"]]', '[]', '2026-11-27 00:00:00', '2026-11-27 00:00:00', 1),
('network_device', NULL, 'A switch, router, firewall or load balancer', 1, '[{"name":"serial_number","type":"string","required":false,"identifying":true},{"name":"mac_address","type":"string","required":false,"identifying":true},{"name":"hostname","type":"string","required":false,"identifying":false},{"name":"ip_address","type":"string","required":false,"identifying":false}]', '[["serial_number"],["mac_address"]]', '[]', '2026-11-27 00:00:00', '2026-11-27 00:00:00', 1),
('storage', NULL, 'A storage array or volume', 1, '[{"name":"serial_number","type":"string","required":false,"identifying":true},{"name":"capacity_gb","type":"number","required":false,"identifying":false}]', '[["serial_number"]]', '[]', '2026-11-27 00:00:00', '2026-11-27 00:00:00', 1),
('location', NULL, 'A site, building or room', 1, '[{"name":"site_code","type":"string","required":false,"identifying":true},{"name":"address","type":"string","required":false,"identifying":false}]', '[["site_code"]]', '[]', '2026-11-27 00:00:00', '2026-11-27 00:00:00', 1);
