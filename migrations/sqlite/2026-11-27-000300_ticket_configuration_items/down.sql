DROP INDEX problems_service_idx;
ALTER TABLE problems DROP COLUMN has_configuration_items;
ALTER TABLE problems DROP COLUMN service_id;
DROP INDEX incidents_service_idx;
ALTER TABLE incidents DROP COLUMN has_configuration_items;
ALTER TABLE incidents DROP COLUMN service_id;
DROP TABLE ticket_configuration_items;
