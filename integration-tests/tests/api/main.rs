//! The black-box suite: one test binary, every test on SQLite and (when configured) PostgreSQL.

mod foundation;
