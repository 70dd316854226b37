//! Backups of the embedded SQLite database: a consistent copy taken while the service serves
//! (`VACUUM INTO` reads one snapshot, as any reader does in WAL mode), and a restore that
//! refuses to replace a database in use. PostgreSQL is backed up with its own tools.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use diesel::connection::SimpleConnection;
use diesel::sql_types::Text;
use diesel::{Connection, QueryableByName, RunQueryDsl, SqliteConnection};

use crate::{DatabaseConfig, StoreError};

/// Held by every process that serves (or seeds) a SQLite database, shared; a restore takes it
/// exclusively, so it cannot replace a file under a running service.
#[derive(Debug)]
pub struct ServeLock {
    _file: File,
}

fn lock_path(database: &Path) -> PathBuf {
    let mut name = database.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

fn open_lock(database: &Path) -> Result<File, StoreError> {
    let path = lock_path(database);
    // The embedded default's folder does not exist before the first start.
    if let Some(folder) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(folder).map_err(|e| {
            StoreError::Unavailable(format!("cannot create {}: {e}", folder.display()))
        })?;
    }
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| StoreError::Unavailable(format!("cannot open {}: {e}", path.display())))
}

impl ServeLock {
    /// The shared lock of a serving process; `None` on PostgreSQL.
    pub fn for_serving(config: &DatabaseConfig) -> Result<Option<ServeLock>, StoreError> {
        let Some(database) = config.sqlite_file()? else {
            return Ok(None);
        };
        let file = open_lock(&database)?;
        file.try_lock_shared().map_err(|_| {
            StoreError::Unavailable(format!(
                "{} is being restored; start the service when the restore is done",
                database.display()
            ))
        })?;
        Ok(Some(ServeLock { _file: file }))
    }
}

fn sqlite_file(config: &DatabaseConfig) -> Result<PathBuf, StoreError> {
    config.sqlite_file()?.ok_or_else(|| {
        StoreError::Unavailable(
            "backups here are for the embedded SQLite database; back PostgreSQL up with \
             pg_dump (or pg_basebackup and WAL archiving)"
                .into(),
        )
    })
}

fn open(path: &Path) -> Result<SqliteConnection, StoreError> {
    let url = path.to_string_lossy();
    let mut conn = SqliteConnection::establish(&url)
        .map_err(|e| StoreError::Unavailable(format!("cannot open {url}: {e}")))?;
    // A writer's commit may hold the file for a moment; wait for it rather than fail.
    conn.batch_execute("PRAGMA busy_timeout = 30000")?;
    Ok(conn)
}

/// Writes a consistent copy of the configured SQLite database to `destination`, which must not
/// exist yet. Safe while the service serves: the copy is one read transaction's snapshot.
pub fn backup(config: &DatabaseConfig, destination: &Path) -> Result<(), StoreError> {
    let source = sqlite_file(config)?;
    if !source.exists() {
        return Err(StoreError::NotFound);
    }
    if destination.exists() {
        return Err(StoreError::Conflict(format!(
            "{} exists; a backup never overwrites a file",
            destination.display()
        )));
    }
    let mut conn = open(&source)?;
    diesel::sql_query("VACUUM INTO ?")
        .bind::<Text, _>(destination.to_string_lossy().into_owned())
        .execute(&mut conn)?;
    Ok(())
}

#[derive(QueryableByName)]
struct Check {
    #[diesel(sql_type = Text)]
    integrity_check: String,
}

/// Replaces the configured SQLite database with the backup at `source`, after checking that
/// the backup is an intact SQLite database; refused while any process serves the database.
pub fn restore(config: &DatabaseConfig, source: &Path) -> Result<(), StoreError> {
    let target = sqlite_file(config)?;
    if !source.is_file() {
        return Err(StoreError::NotFound);
    }
    let lock = open_lock(&target)?;
    lock.try_lock().map_err(|_| {
        StoreError::Conflict(format!(
            "{} is in use by a running service; stop it before restoring",
            target.display()
        ))
    })?;
    let verdict: Vec<Check> =
        diesel::sql_query("PRAGMA integrity_check").load(&mut open(source)?)?;
    if verdict.first().map(|c| c.integrity_check.as_str()) != Some("ok") {
        return Err(StoreError::Conflict(format!(
            "{} is not an intact SQLite database",
            source.display()
        )));
    }
    let staged = target.with_extension("restoring");
    std::fs::copy(source, &staged)
        .map_err(|e| StoreError::Unavailable(format!("cannot copy the backup: {e}")))?;
    for suffix in ["-wal", "-shm"] {
        let mut side = target.as_os_str().to_owned();
        side.push(suffix);
        match std::fs::remove_file(PathBuf::from(side)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(StoreError::Unavailable(format!(
                    "cannot remove the old WAL: {e}"
                )))
            }
        }
    }
    std::fs::rename(&staged, &target)
        .map_err(|e| StoreError::Unavailable(format!("cannot put the backup in place: {e}")))?;
    drop(lock);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `make run` on a fresh machine: the database's folder does not exist yet.
    #[test]
    fn serving_a_database_in_a_folder_yet_to_be_made() {
        let folder = std::env::temp_dir().join(format!("itsm-lock-{}", crate::new_id()));
        let config = DatabaseConfig {
            url: Some(format!("sqlite://{}/data/itsm.db", folder.display())),
            ..DatabaseConfig::default()
        };
        let lock = ServeLock::for_serving(&config).expect("the lock");
        assert!(lock.is_some());
        // A second server may serve too; a restore may not.
        assert!(ServeLock::for_serving(&config).unwrap().is_some());
        let backup = folder.join("backup.db");
        std::fs::write(&backup, b"x").unwrap();
        assert!(matches!(
            restore(&config, &backup),
            Err(StoreError::Conflict(_))
        ));
        drop(lock);
        let _ = std::fs::remove_dir_all(folder);
    }
}
