//! The ITSM domain: ITIL entities, value types, state machines and rules as plain Rust.
//!
//! Nothing here performs I/O or knows about HTTP or SQL; the API parses input into these
//! types at the edge and persistence stores them.

// No panic on a request path (issue 19): tests and start-up code may panic, nothing else.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod alert;
pub mod calendar;
pub mod change;
pub mod changes;
pub mod cmdb;
mod enums;
pub mod error;
pub mod identity;
pub mod incident;
pub mod notes;
pub mod priority;
pub mod problem;
pub mod routing;
pub mod scopes;
pub mod search;
pub mod sla;
pub mod sla_timers;
pub mod throttle;
pub mod ticket;
pub mod webhooks;

pub use changes::Changes;
pub use error::{DomainError, FieldError};
pub use identity::{
    role_permits, validate_password, validate_username, Actor, ActorKind, ApiToken, ExternalRef,
    Group, Role, User,
};
