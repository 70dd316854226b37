//! The CMDB's storage: classes, configuration items with their identifier index, relationships,
//! impact walks and reconciliation batches.

pub mod classes;
pub mod graph;
pub mod items;
pub mod reconcile;
pub mod relationships;

use domain::DomainError;

use crate::StoreError;

/// What a CMDB unit of work can fail with: a storage error, a broken rule (a 422 or 409) or a
/// refused atomic batch (409).
#[derive(Debug, thiserror::Error)]
pub enum CmdbError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Rule(#[from] DomainError),
    /// An atomic reconciliation batch holding entries the CMDB as stored refuses (a conflict,
    /// an unknown class, attributes its class does not take): nothing was written, and each
    /// entry's refusal is listed.
    #[error("the atomic batch was refused")]
    BatchRefused(Vec<domain::FieldError>),
}

impl From<diesel::result::Error> for CmdbError {
    fn from(error: diesel::result::Error) -> Self {
        CmdbError::Store(error.into())
    }
}

impl CmdbError {
    pub(crate) fn conflict(message: impl Into<String>) -> Self {
        CmdbError::Rule(DomainError::Conflict(message.into()))
    }
}

/// Reads JSON stored as text; a row that does not parse is corrupt and said so loudly.
pub(crate) fn from_json<T: serde::de::DeserializeOwned>(
    text: &str,
    what: &str,
) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| {
        StoreError::Database(diesel::result::Error::DeserializationError(
            format!("stored {what} is not valid: {e}").into(),
        ))
    })
}

pub(crate) fn to_json(value: &impl serde::Serialize) -> String {
    // Plain data values always serialise.
    serde_json::to_string(value).unwrap_or_default()
}

/// The sizes an `IN` list of ids is padded to, so that its query takes one of a few shapes
/// and stays prepared: each new length was a new statement to parse and plan.
const IN_LIST_SIZES: [usize; 5] = [1, 8, 32, 128, 500];

/// `ids` padded with copies of its last id up to the next size of [`IN_LIST_SIZES`].
pub(crate) fn padded(ids: &[String]) -> Vec<String> {
    let size = IN_LIST_SIZES
        .iter()
        .copied()
        .find(|size| *size >= ids.len())
        .unwrap_or(ids.len());
    let mut padded = ids.to_vec();
    if let Some(last) = ids.last() {
        padded.resize(size, last.clone());
    }
    padded
}
