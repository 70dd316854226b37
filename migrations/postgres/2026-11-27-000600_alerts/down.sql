DROP INDEX incidents_channel_idx;
DROP TABLE alert_rules;
DROP TABLE alerts;
