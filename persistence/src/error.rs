use diesel::result::{DatabaseErrorKind, Error as DieselError};

/// What a repository or the write path can report. The API maps each to one HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    /// A rule of our own refused the write; the message is written for clients.
    #[error("{0}")]
    Conflict(String),
    /// A constraint of the database (unique, reference, check, not null) refused a write that
    /// validation let through. `detail` is the database's own message: for the log only, it
    /// names tables and columns.
    #[error("{kind} constraint refused the write: {detail}")]
    Constraint {
        kind: ConstraintKind,
        detail: String,
    },
    /// Optimistic concurrency: the caller's version is not the current one.
    #[error("version {expected} does not match current version {actual}")]
    VersionMismatch { expected: i64, actual: i64 },
    /// The database cannot be reached or the write path is shutting down; retry later.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("database error: {0}")]
    Database(DieselError),
}

/// Which database constraint refused a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConstraintKind {
    Unique,
    ForeignKey,
    Check,
    NotNull,
}

impl std::fmt::Display for ConstraintKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ConstraintKind::Unique => "a unique",
            ConstraintKind::ForeignKey => "a foreign key",
            ConstraintKind::Check => "a check",
            ConstraintKind::NotNull => "a not-null",
        })
    }
}

impl From<DieselError> for StoreError {
    fn from(error: DieselError) -> Self {
        let kind = match &error {
            DieselError::NotFound => return StoreError::NotFound,
            DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _) => {
                ConstraintKind::Unique
            }
            DieselError::DatabaseError(DatabaseErrorKind::ForeignKeyViolation, _) => {
                ConstraintKind::ForeignKey
            }
            DieselError::DatabaseError(DatabaseErrorKind::CheckViolation, _) => {
                ConstraintKind::Check
            }
            DieselError::DatabaseError(DatabaseErrorKind::NotNullViolation, _) => {
                ConstraintKind::NotNull
            }
            _ => return StoreError::Database(error),
        };
        let detail = match &error {
            DieselError::DatabaseError(_, info) => info.message().to_owned(),
            other => other.to_string(),
        };
        StoreError::Constraint { kind, detail }
    }
}

impl StoreError {
    /// Whether a uniqueness rule refused the write (a name or reference taken meanwhile).
    pub fn is_unique_violation(&self) -> bool {
        matches!(
            self,
            StoreError::Constraint {
                kind: ConstraintKind::Unique,
                ..
            }
        )
    }
}

impl From<r2d2::Error> for StoreError {
    fn from(error: r2d2::Error) -> Self {
        StoreError::Unavailable(error.to_string())
    }
}
