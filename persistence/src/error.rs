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
    /// The storage under the database failed in a way that passes (see [`Outage`]); `detail`
    /// is the database's own text, for the log only.
    #[error("{outage}: {detail}")]
    Outage { outage: Outage, detail: String },
    /// A word search ran past its time limit and was stopped (`with_search_limit`).
    #[error("the word search ran past its time limit")]
    SearchTimedOut,
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

/// Why the database cannot take a request for now. Each passes without a restart of the
/// service: a connection comes back, space is freed, the file is made writable again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outage {
    /// PostgreSQL refused or dropped the connection (stopped, restarting, network gone).
    Unreachable,
    /// The disk holding the database is full (SQLITE_FULL, PostgreSQL `No space left`).
    Full,
    /// The database file or server takes no writes (SQLITE_READONLY, a PostgreSQL standby).
    ReadOnly,
    /// The storage reported an input/output error (SQLITE_IOERR, SQLITE_CANTOPEN).
    IoError,
    /// Another process held SQLite's write lock past the busy timeout (SQLITE_BUSY).
    Busy,
}

impl Outage {
    /// A stable name for the problem type and the readiness probe.
    pub fn as_str(self) -> &'static str {
        match self {
            Outage::Unreachable => "database-unreachable",
            Outage::Full => "storage-full",
            Outage::ReadOnly => "storage-read-only",
            Outage::IoError => "storage-io-error",
            Outage::Busy => "database-busy",
        }
    }

    /// What a client is told, without the database's own text.
    pub fn explanation(self) -> &'static str {
        match self {
            Outage::Unreachable => "the database cannot be reached",
            Outage::Full => "the disk holding the database is full",
            Outage::ReadOnly => "the database takes no writes (read-only)",
            Outage::IoError => "the storage under the database reported an I/O error",
            Outage::Busy => "the database is locked by another process",
        }
    }

    /// The outage a database error stands for, if it is one. SQLite's messages are the fixed
    /// texts of its result codes (`sqlite3_errstr`), which diesel passes on without the code;
    /// PostgreSQL's connection losses have their own error kind, but a server shutting down
    /// says so in a message first (SQLSTATE 57P01, which diesel does not name).
    pub fn of(error: &DieselError) -> Option<Outage> {
        match error {
            DieselError::DatabaseError(
                DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand,
                _,
            ) => Some(Outage::Unreachable),
            DieselError::DatabaseError(DatabaseErrorKind::ReadOnlyTransaction, _) => {
                Some(Outage::ReadOnly)
            }
            DieselError::DatabaseError(_, info) => Self::of_message(info.message()),
            // A transaction whose connection broke half-way.
            DieselError::BrokenTransactionManager => Some(Outage::Unreachable),
            _ => None,
        }
    }

    /// The outage a database's error text stands for, if it is one.
    pub fn of_message(message: &str) -> Option<Outage> {
        const BY_TEXT: &[(&str, Outage)] = &[
            // SQLite's texts for SQLITE_FULL, SQLITE_READONLY, SQLITE_IOERR, SQLITE_CANTOPEN,
            // SQLITE_BUSY.
            ("database or disk is full", Outage::Full),
            ("attempt to write a readonly database", Outage::ReadOnly),
            ("disk I/O error", Outage::IoError),
            ("unable to open database file", Outage::IoError),
            ("database is locked", Outage::Busy),
            // PostgreSQL and libpq.
            ("No space left on device", Outage::Full),
            ("terminating connection", Outage::Unreachable),
            ("server closed the connection", Outage::Unreachable),
            ("no connection to the server", Outage::Unreachable),
            ("could not send data to server", Outage::Unreachable),
            ("could not receive data from server", Outage::Unreachable),
            ("connection to server", Outage::Unreachable),
            ("the database system is", Outage::Unreachable),
        ];
        BY_TEXT
            .iter()
            .find(|(text, _)| message.contains(text))
            .map(|&(_, outage)| outage)
    }
}

impl std::fmt::Display for Outage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.explanation())
    }
}

impl StoreError {
    /// The outage this error stands for, if it is one.
    pub fn outage(&self) -> Option<Outage> {
        match self {
            StoreError::Outage { outage, .. } => Some(*outage),
            _ => None,
        }
    }
}

thread_local! {
    /// The last outage a database error on this thread stood for: the writer looks at it after
    /// each unit of work, because a unit may turn an error into an answer of its own.
    static OUTAGE_SEEN: std::cell::RefCell<Option<(Outage, String)>> =
        const { std::cell::RefCell::new(None) };
}

/// The outage a database error on this thread stood for since the last call, if any, with
/// the database's text.
pub(crate) fn take_outage_seen() -> Option<(Outage, String)> {
    OUTAGE_SEEN.with(|seen| seen.borrow_mut().take())
}

impl From<DieselError> for StoreError {
    fn from(error: DieselError) -> Self {
        if let Some(outage) = Outage::of(&error) {
            OUTAGE_SEEN.with(|seen| *seen.borrow_mut() = Some((outage, error.to_string())));
            return StoreError::Outage {
                outage,
                detail: error.to_string(),
            };
        }
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

/// No connection could be had: every attempt to open one failed.
impl From<r2d2::Error> for StoreError {
    fn from(error: r2d2::Error) -> Self {
        let detail = error.to_string();
        StoreError::Outage {
            outage: Outage::of_message(&detail).unwrap_or(Outage::Unreachable),
            detail,
        }
    }
}

/// Opening a connection failed.
impl From<diesel::ConnectionError> for StoreError {
    fn from(error: diesel::ConnectionError) -> Self {
        let detail = error.to_string();
        StoreError::Outage {
            outage: Outage::of_message(&detail).unwrap_or(Outage::Unreachable),
            detail,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_failures_are_outages_and_other_errors_are_not() {
        let cases = [
            ("database or disk is full", Some(Outage::Full)),
            (
                "attempt to write a readonly database",
                Some(Outage::ReadOnly),
            ),
            ("disk I/O error", Some(Outage::IoError)),
            ("database is locked", Some(Outage::Busy)),
            (
                "terminating connection due to administrator command",
                Some(Outage::Unreachable),
            ),
            (
                "server closed the connection unexpectedly\n\tThis probably means...",
                Some(Outage::Unreachable),
            ),
            (
                "could not extend file \"base/1/2\": No space left on device",
                Some(Outage::Full),
            ),
            ("UNIQUE constraint failed: incidents.number", None),
            ("syntax error at or near \"SELEC\"", None),
        ];
        for (message, expected) in cases {
            assert_eq!(Outage::of_message(message), expected, "{message}");
        }
    }

    #[test]
    fn a_closed_connection_is_unreachable_whatever_its_text() {
        let error = DieselError::DatabaseError(
            DatabaseErrorKind::ClosedConnection,
            Box::new("anything".to_owned()),
        );
        assert_eq!(StoreError::from(error).outage(), Some(Outage::Unreachable));
    }
}
