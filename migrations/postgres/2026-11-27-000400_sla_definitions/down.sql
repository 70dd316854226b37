DROP TABLE sla_policies;
DROP TABLE calendar_versions;
DROP TABLE calendars;
