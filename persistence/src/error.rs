use diesel::result::{DatabaseErrorKind, Error as DieselError};

/// What a repository or the write path can report. The API maps each to one HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    /// A uniqueness or reference rule of the database refused the write.
    #[error("{0}")]
    Conflict(String),
    /// Optimistic concurrency: the caller's version is not the current one.
    #[error("version {expected} does not match current version {actual}")]
    VersionMismatch { expected: i64, actual: i64 },
    /// The database cannot be reached or the write path is shutting down; retry later.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A word search ran past its time limit and was stopped (`with_search_limit`).
    #[error("the word search ran past its time limit")]
    SearchTimedOut,
    #[error("database error: {0}")]
    Database(DieselError),
}

impl From<DieselError> for StoreError {
    fn from(error: DieselError) -> Self {
        match error {
            DieselError::NotFound => StoreError::NotFound,
            DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, info) => {
                StoreError::Conflict(info.message().to_owned())
            }
            DieselError::DatabaseError(DatabaseErrorKind::ForeignKeyViolation, info) => {
                StoreError::Conflict(info.message().to_owned())
            }
            other => StoreError::Database(other),
        }
    }
}

impl From<r2d2::Error> for StoreError {
    fn from(error: r2d2::Error) -> Self {
        StoreError::Unavailable(error.to_string())
    }
}
