//! The HTTP API of the ITSM service: routes, handlers, authentication, errors and the OpenAPI
//! contract. The `itsm` binary in `main.rs` is a thin command line over [`app`].

// No panic on a request path (issue 19): tests and start-up code may panic, nothing else.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod app;
pub mod auth;
pub mod concurrency;
pub mod conditional;
pub mod config;
pub mod contract;
pub mod error;
pub mod examples;
pub mod idempotency;
pub mod jobs;
pub mod json_body;
pub mod keys;
pub mod listing;
pub mod openapi;
pub mod plans;
pub mod preflight;
pub mod rate_limit;
pub mod recent;
pub mod request_context;
pub mod routes;
pub mod security_headers;
pub mod seed;
pub mod state;
pub mod throttle;
pub mod tickets;
pub mod usecases;
pub mod webhook_delivery;

pub use config::Config;
