use serde::Serialize;

/// One invalid input field and why, as clients see it in a problem's `errors[]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
    /// The field names a record that does not exist (`no such group`): the request is well
    /// formed but conflicts with what is stored, so it is answered 409, not 422, when every
    /// listed field is such a reference.
    #[serde(skip)]
    pub unknown_reference: bool,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
            unknown_reference: false,
        }
    }

    /// `field` names no stored `what`: "no such `what`".
    pub fn unknown(field: impl Into<String>, what: &str) -> Self {
        Self {
            field: field.into(),
            message: format!("no such {what}"),
            unknown_reference: true,
        }
    }
}

/// A rule of the domain was broken by the request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// Input values that violate a rule, field by field.
    #[error("{} field(s) are invalid", .0.len())]
    Invalid(Vec<FieldError>),
    /// An action that the current state does not allow.
    #[error("{detail}")]
    InvalidTransition {
        detail: String,
        allowed_actions: Vec<String>,
    },
    /// The request conflicts with existing data (a duplicate name, for example).
    #[error("{0}")]
    Conflict(String),
}

impl DomainError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid(vec![FieldError::new(field, message)])
    }
}
