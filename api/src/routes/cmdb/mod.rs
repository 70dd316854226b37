//! The CMDB: `/api/v1/ci-classes`, `/api/v1/configuration-items` and `/api/v1/ci-relationships`.

pub mod classes;
pub mod items;
pub mod relationships;
pub mod tickets;

use persistence::cmdb::CmdbError;
use persistence::StoreError;

use crate::error::ApiError;

impl From<CmdbError> for ApiError {
    fn from(error: CmdbError) -> Self {
        match error {
            CmdbError::Store(e) => e.into(),
            CmdbError::Rule(e) => e.into(),
            CmdbError::BatchRefused(errors) => ApiError::batch_refused(errors),
        }
    }
}

/// A failed unit of work on the resource in the path: missing is a 404 naming `what`.
pub(crate) fn not_found_as(error: CmdbError, what: &str) -> ApiError {
    match error {
        CmdbError::Store(StoreError::NotFound) => ApiError::not_found(what),
        other => other.into(),
    }
}

pub fn configure(cfg: &mut actix_web::web::ServiceConfig) {
    classes::configure(cfg);
    items::configure(cfg);
    relationships::configure(cfg);
    cfg.service(tickets::item_tickets);
}
