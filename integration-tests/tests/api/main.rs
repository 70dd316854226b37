//! The black-box suite: one test binary, every test on SQLite and (when configured) PostgreSQL.

mod auth;
mod conventions;
mod events;
mod foundation;
mod users_groups;
