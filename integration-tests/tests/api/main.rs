//! The black-box suite: one test binary, every test on SQLite and (when configured) PostgreSQL.

mod access_matrix;
mod alertmanager;
mod alerts;
mod auth;
mod backup;
mod bounds;
mod changes;
mod cmdb;
mod conventions;
mod events;
mod external_upsert;
mod foundation;
mod incidents;
mod incidents_concurrency;
mod incidents_lists;
mod incidents_transitions;
mod keys;
mod nodes;
mod problems;
mod security;
mod shutdown;
mod sla;
mod ticket_items;
mod tickets_conformance;
mod users_groups;
mod webhooks;
