use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

use crate::checkpoint::{Checkpointer, WalGate};
use crate::writer::{Lane, Writer};
use crate::{Outage, StoreError};

const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations/sqlite");
const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations/postgres");

/// One connection type over both backends; repositories are written once against it.
#[derive(diesel::MultiConnection)]
pub enum DbConnection {
    Postgresql(PgConnection),
    Sqlite(SqliteConnection),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// Where the data lives and how the pools are sized.
#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    pub url: Option<String>,
    pub read_pool_size: u32,
    /// The most units of work a writer commits in one transaction.
    pub max_batch: usize,
    /// Write connections on PostgreSQL: the primary writer and the writers of new rows
    /// (SQLite always has one).
    pub writers: usize,
    /// How long a word search may run before it is stopped.
    pub search_time_limit: Duration,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: None,
            read_pool_size: 4,
            max_batch: 64,
            writers: 4,
            search_time_limit: DEFAULT_SEARCH_TIME_LIMIT,
        }
    }
}

impl DatabaseConfig {
    /// The SQLite file this configuration names; `None` for PostgreSQL.
    pub fn sqlite_file(&self) -> Result<Option<PathBuf>, StoreError> {
        Ok(match Location::parse(self.url.as_deref())? {
            Location::SqliteFile(path) => Some(path),
            Location::Postgres(_) => None,
        })
    }
}

/// A resolved database location: the SQLite file path or the PostgreSQL URL.
#[derive(Debug, Clone)]
enum Location {
    SqliteFile(PathBuf),
    Postgres(String),
}

impl Location {
    const DEFAULT_SQLITE_FILE: &'static str = "./data/itsm.db";

    fn parse(url: Option<&str>) -> Result<Self, StoreError> {
        let url = url.map(str::trim).filter(|url| !url.is_empty());
        let Some(url) = url else {
            return Ok(Location::SqliteFile(Self::DEFAULT_SQLITE_FILE.into()));
        };
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Location::Postgres(without_tls_on_loopback(url)));
        }
        let path = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .ok_or_else(|| {
                StoreError::Unavailable(
                    "ITSM_DATABASE_URL must start with sqlite:// or postgres://".into(),
                )
            })?;
        if path.is_empty() || path.contains(":memory:") {
            return Err(StoreError::Unavailable(
                "the SQLite database must be a file (readers and the writer share it)".into(),
            ));
        }
        Ok(Location::SqliteFile(path.into()))
    }

    /// The embedded default creates its folder on first start.
    fn create_parent_folder(&self) -> Result<(), StoreError> {
        if let Location::SqliteFile(path) = self {
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).map_err(|e| {
                    StoreError::Unavailable(format!("cannot create {}: {e}", parent.display()))
                })?;
            }
        }
        Ok(())
    }

    /// The SQLite file holds password hashes and the signing secret: it is created readable by
    /// its owner only, and an existing one loses any access of its group and others (its
    /// owner's access is left as it is). SQLite gives its WAL and shared-memory files the
    /// database file's permissions.
    ///
    /// An existing file is never opened here: closing a descriptor of a file drops every POSIX
    /// lock the process holds on it, SQLite's included. A second database of the same file in
    /// one process (nodes side by side in tests) then left the first one's readers on a stale
    /// snapshot, blind to other processes' commits.
    fn restrict_sqlite_files(&self) -> Result<(), StoreError> {
        #[cfg(unix)]
        if let Location::SqliteFile(path) = self {
            use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
            let cannot = |e: std::io::Error| {
                StoreError::Unavailable(format!("cannot restrict {}: {e}", path.display()))
            };
            if !path.exists() {
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(cannot)?;
            }
            for suffix in ["", "-wal", "-shm"] {
                let file = PathBuf::from(format!("{}{suffix}", path.display()));
                let Ok(metadata) = std::fs::metadata(&file) else {
                    continue;
                };
                let mode = metadata.permissions().mode();
                if mode & 0o077 == 0 {
                    continue;
                }
                match std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode & 0o700))
                {
                    Ok(()) => {}
                    // A read-only file (immutable, read-only mount, another owner): the service
                    // still serves reads, and writes answer 503 `storage-read-only`.
                    Err(e) if is_read_only_refusal(&e) => {
                        log::error!(
                            "{} is read-only ({e}): reads are served, writes answer 503",
                            file.display()
                        );
                        return Ok(());
                    }
                    Err(e) => return Err(cannot(e)),
                }
            }
            if std::fs::metadata(path).is_ok_and(|m| m.permissions().readonly()) {
                log::error!(
                    "{} is read-only: reads are served, writes answer 503",
                    path.display()
                );
            }
        }
        Ok(())
    }

    fn backend(&self) -> Backend {
        match self {
            Location::SqliteFile(_) => Backend::Sqlite,
            Location::Postgres(_) => Backend::Postgres,
        }
    }

    /// Opens one connection with the settings its role needs.
    fn connect(&self, role: ConnectionRole) -> Result<DbConnection, StoreError> {
        match self {
            Location::SqliteFile(path) => Ok(DbConnection::Sqlite(open_sqlite(path, role)?)),
            Location::Postgres(url) => {
                let mut conn = PgConnection::establish(url)?;
                conn.batch_execute(GENERIC_PLANS)?;
                Ok(DbConnection::Postgresql(conn))
            }
        }
    }
}

/// The file system refused to open a file for writing because it is read-only to us.
fn is_read_only_refusal(error: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(
        error.kind(),
        ErrorKind::PermissionDenied | ErrorKind::ReadOnlyFilesystem
    )
}

/// How long a word search may run unless configured (`DatabaseConfig::search_time_limit`).
pub const DEFAULT_SEARCH_TIME_LIMIT: Duration = Duration::from_millis(1000);

thread_local! {
    /// The time limit of word searches run on this thread: a read thread's is its database's.
    static SEARCH_TIME_LIMIT: Cell<Duration> = const { Cell::new(DEFAULT_SEARCH_TIME_LIMIT) };
    /// While a word search runs on this thread (SQLite), when it must stop.
    static SEARCH_DEADLINE: Cell<Option<Instant>> = const { Cell::new(None) };
    /// Rows looked at since the clock was last read, so that it is read once per many rows.
    static SEARCH_ROWS: Cell<u32> = const { Cell::new(0) };
}

/// What SQLite's word condition calls on each row it looks at: it fails the statement once the
/// search running on this thread is past its deadline (see [`with_search_limit`]).
pub(crate) const SEARCH_IN_TIME_FUNCTION: &str = "itsm_search_in_time";

/// The message of that failure, recognised to answer [`StoreError::SearchTimedOut`].
const SEARCH_TIMED_OUT: &str = "itsm: the word search ran past its time limit";

/// The answer of [`SEARCH_IN_TIME_FUNCTION`]: `true`, or an error that stops the statement.
#[derive(Debug)]
struct InTime(bool);

impl diesel::serialize::ToSql<diesel::sql_types::Bool, diesel::sqlite::Sqlite> for InTime {
    fn to_sql<'b>(
        &'b self,
        out: &mut diesel::serialize::Output<'b, '_, diesel::sqlite::Sqlite>,
    ) -> diesel::serialize::Result {
        if self.0 {
            out.set_value(1);
            Ok(diesel::serialize::IsNull::No)
        } else {
            Err(SEARCH_TIMED_OUT.into())
        }
    }
}

fn search_in_time() -> InTime {
    let Some(deadline) = SEARCH_DEADLINE.get() else {
        return InTime(true);
    };
    let rows = SEARCH_ROWS.get().wrapping_add(1);
    SEARCH_ROWS.set(rows);
    // The first row and every 256th read the clock.
    InTime(rows % 256 != 1 || Instant::now() < deadline)
}

/// Runs the word search `f` within this thread's search time limit, so that no search holds a
/// read connection for long whatever it matches: PostgreSQL cancels it (`statement_timeout`,
/// local to the search's own transaction, which also plans each statement for its bound
/// values: a common word walks the newest rows, a rare one the word index); on SQLite its
/// word condition fails once the deadline passed. Either answers
/// [`StoreError::SearchTimedOut`].
pub(crate) fn with_search_limit<T>(
    conn: &mut DbConnection,
    f: impl FnOnce(&mut DbConnection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let limit = SEARCH_TIME_LIMIT.get();
    let result = match conn {
        DbConnection::Postgresql(_) => conn.transaction(|conn| {
            conn.batch_execute(&format!(
                "SET LOCAL statement_timeout = {}; SET LOCAL plan_cache_mode = force_custom_plan",
                limit.as_millis().max(1)
            ))?;
            f(conn)
        }),
        DbConnection::Sqlite(_) => {
            SEARCH_DEADLINE.set(Some(Instant::now() + limit));
            SEARCH_ROWS.set(0);
            let result = f(conn);
            SEARCH_DEADLINE.set(None);
            result
        }
    };
    result.map_err(|error| match &error {
        StoreError::Database(diesel::result::Error::DatabaseError(_, info))
            if info.message().contains(SEARCH_TIMED_OUT)
                || info.message().contains("statement timeout") =>
        {
            StoreError::SearchTimedOut
        }
        _ => error,
    })
}

/// Registers [`SEARCH_IN_TIME_FUNCTION`] on a SQLite connection.
fn register_search_limit(conn: &mut SqliteConnection) -> Result<(), StoreError> {
    conn.register_noarg_sql_function::<diesel::sql_types::Bool, _, _>(
        SEARCH_IN_TIME_FUNCTION,
        false,
        search_in_time,
    )?;
    Ok(())
}

/// Every query here walks one index chosen by its shape (the state filter is a literal, the
/// keyset cursor and keys are bound), so its plan does not depend on the bound values. Left to
/// choose, PostgreSQL re-planned each deep page on every execution, because its generic
/// estimate for a row comparison is worse than the custom one: four tenths of the server's
/// time on that query. The word search is the exception ([`with_search_limit`]).
const GENERIC_PLANS: &str = "SET plan_cache_mode = force_generic_plan";

/// A PostgreSQL URL that names a loopback host and no `sslmode` connects without TLS.
/// libpq's default (`prefer`) would encrypt traffic that never leaves the machine, which cost
/// a fifth of the read throughput in the benchmark; an explicit `sslmode` is always kept.
fn without_tls_on_loopback(url: &str) -> String {
    let (before_query, query) = url.split_once('?').unwrap_or((url, ""));
    let authority = before_query
        .split_once("://")
        .map_or("", |(_, rest)| rest.split('/').next().unwrap_or(""));
    let host_and_port = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let host = match host_and_port.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next().unwrap_or(""),
        None => host_and_port.split(':').next().unwrap_or(""),
    };
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    let names_sslmode = query
        .split('&')
        .any(|pair| pair.split('=').next() == Some("sslmode"));
    if !loopback || names_sslmode {
        return url.to_owned();
    }
    let separator = match url.split_once('?') {
        None => "?",
        Some((_, "")) => "",
        Some(_) => "&",
    };
    format!("{url}{separator}sslmode=disable")
}

/// Process-wide SQLite settings, which only take effect before its first connection.
/// Multi-thread mode: each connection is used by one thread at a time (the writer's, or a
/// pooled reader's), so SQLite's per-connection mutexes only cost time (a lock and unlock around
/// every call). No memory statistics: they take a global mutex on every allocation, and
/// nothing reads them. (The page cache's own mutex stays: libsqlite3-sys builds SQLite with
/// SQLITE_ENABLE_MEMORY_MANAGEMENT, which shares one cache LRU between connections.)
#[allow(unsafe_code)]
fn configure_sqlite() {
    static CONFIGURED: std::sync::Once = std::sync::Once::new();
    CONFIGURED.call_once(|| {
        use libsqlite3_sys::{
            sqlite3_config, SQLITE_CONFIG_MEMSTATUS, SQLITE_CONFIG_MULTITHREAD, SQLITE_OK,
        };
        // SAFETY: sqlite3_config is only called here, once, before this process opens a
        // connection; with the arguments each option documents.
        let codes = unsafe {
            [
                sqlite3_config(SQLITE_CONFIG_MULTITHREAD),
                sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0 as std::ffi::c_int),
            ]
        };
        if codes.iter().any(|&code| code != SQLITE_OK) {
            // SQLite was already in use (an embedding program): its defaults are safe too.
            log::warn!("SQLite was initialised before the service could configure it");
        }
    });
}

fn open_sqlite(path: &Path, role: ConnectionRole) -> Result<SqliteConnection, StoreError> {
    configure_sqlite();
    let mut conn = SqliteConnection::establish(&path.to_string_lossy())?;
    // WAL lets readers run beside the one writer; NORMAL is durable in WAL mode
    // except for the last commits on power loss, the usual trade for this mode.
    let pragmas = match role {
        ConnectionRole::Writer => {
            // The checkpoint thread, not the writer, copies the WAL back (`checkpoint`).
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
             PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000; \
             PRAGMA cache_size = -16000; PRAGMA temp_store = MEMORY; \
             PRAGMA wal_autocheckpoint = 0; PRAGMA journal_size_limit = 67108864;"
        }
        ConnectionRole::Reader => {
            "PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000; \
             PRAGMA query_only = ON; PRAGMA cache_size = -2000;"
        }
        ConnectionRole::Checkpointer => "PRAGMA busy_timeout = 5000;",
    };
    conn.batch_execute(pragmas)?;
    register_search_limit(&mut conn)?;
    Ok(conn)
}

#[derive(Debug, Clone, Copy)]
enum ConnectionRole {
    Writer,
    Reader,
    Checkpointer,
}

type ReadJob = Box<dyn FnOnce() + Send>;

/// One thread per read connection, for reads run off the async executor. tokio's blocking
/// pool (one per actix worker runtime) grew to 20 threads for 4 connections, and each
/// thread's allocator cache stayed resident: over 140 MB of server memory on PostgreSQL.
#[derive(Clone)]
struct ReadThreads {
    jobs: std::sync::mpsc::Sender<ReadJob>,
}

impl ReadThreads {
    /// The threads stop when the last `Database` clone is dropped. Start-up only
    /// (`Database::open`), where failing to start a thread may stop the service.
    #[allow(clippy::expect_used)]
    fn start(count: usize, search_time_limit: Duration) -> Self {
        let (jobs, queue) = std::sync::mpsc::channel::<ReadJob>();
        let queue = std::sync::Arc::new(std::sync::Mutex::new(queue));
        for n in 0..count {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("itsm-reader-{n}"))
                .spawn(move || loop {
                    SEARCH_TIME_LIMIT.set(search_time_limit);
                    let next = queue
                        .lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner())
                        .recv();
                    let Ok(job) = next else { return };
                    // A panicking read drops its answer: its caller learns the read failed.
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                })
                .expect("the operating system refused to start a read thread");
        }
        Self { jobs }
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, StoreError> {
        let (answer, answered) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Box::new(move || {
                let _ = answer.send(f());
            }))
            .map_err(|_| StoreError::Unavailable("the read threads stopped".into()))?;
        answered
            .await
            .map_err(|_| StoreError::Unavailable("the read failed".into()))
    }
}

/// A pooled read connection, with what it takes to check it only when there is a reason to.
struct ReadConnection {
    conn: DbConnection,
    checked_at: Instant,
    /// Its last use failed: the connection may be what broke.
    suspect: bool,
}

/// How long a read waits for a connection to open before it gives up.
const READ_CONNECT_WAIT: Duration = Duration::from_secs(2);

/// Pooled connections unused this long are checked before use.
const CHECK_IDLE_AFTER: Duration = Duration::from_secs(10);

/// r2d2 manager that opens reader connections of the configured backend. It checks a
/// connection (`SELECT 1`) when it is handed out after an error or a quiet spell, not before
/// every read: on PostgreSQL that check is a round trip, a third of a simple read's time.
struct ReaderManager {
    location: Location,
    /// The last attempt to open a connection failed: the database is down.
    down: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl r2d2::ManageConnection for ReaderManager {
    type Connection = ReadConnection;
    type Error = StoreError;

    fn connect(&self) -> Result<ReadConnection, StoreError> {
        use std::sync::atomic::Ordering;
        let conn = self
            .location
            .connect(ConnectionRole::Reader)
            .inspect_err(|_| self.down.store(true, Ordering::Release))?;
        self.down.store(false, Ordering::Release);
        Ok(ReadConnection {
            conn,
            checked_at: Instant::now(),
            suspect: false,
        })
    }

    fn is_valid(&self, read: &mut ReadConnection) -> Result<(), StoreError> {
        if read.suspect || read.checked_at.elapsed() > CHECK_IDLE_AFTER {
            read.conn.batch_execute("SELECT 1")?;
            read.suspect = false;
        }
        read.checked_at = Instant::now();
        Ok(())
    }

    fn has_broken(&self, _read: &mut ReadConnection) -> bool {
        false
    }
}

/// The read connections.
#[derive(Clone)]
struct ReadPool {
    pool: r2d2::Pool<ReaderManager>,
    down: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// While the database is down, how long a read waits for a connection attempt it starts
/// (one that succeeds takes milliseconds): reads then answer at once instead of each waiting
/// [`READ_CONNECT_WAIT`], and the first read after the database returns reconnects.
const READ_CONNECT_WAIT_WHEN_DOWN: Duration = Duration::from_millis(100);

impl ReadPool {
    fn open(location: &Location, size: u32) -> Result<Self, StoreError> {
        let down = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let pool = r2d2::Pool::builder()
            .max_size(size)
            .min_idle(Some(1))
            // How long a read waits when no connection can be opened before it answers 503;
            // waiting for a free connection is the read slots' job.
            .connection_timeout(READ_CONNECT_WAIT)
            .build(ReaderManager {
                location: location.clone(),
                down: down.clone(),
            })?;
        Ok(Self { pool, down })
    }

    fn get(&self) -> Result<r2d2::PooledConnection<ReaderManager>, StoreError> {
        if let Some(read) = self.pool.try_get() {
            return Ok(read);
        }
        let wait = if self.down.load(std::sync::atomic::Ordering::Acquire) {
            READ_CONNECT_WAIT_WHEN_DOWN
        } else {
            READ_CONNECT_WAIT
        };
        Ok(self.pool.get_timeout(wait)?)
    }
}

/// The database as the rest of the service sees it: reads from a pool, writes through the
/// single write path.
#[derive(Clone)]
pub struct Database {
    backend: Backend,
    readers: ReadPool,
    /// One permit per read connection.
    read_slots: std::sync::Arc<tokio::sync::Semaphore>,
    read_threads: ReadThreads,
    writer: Writer,
    /// The node's copy of the CMDB graph.
    graphs: std::sync::Arc<crate::cmdb::graph::GraphCache>,
    /// SQLite only: copies the WAL back into the database file, off the writer thread.
    _checkpointer: Option<Checkpointer>,
}

impl Database {
    /// Connects, applies pending migrations, and starts the writer.
    pub fn open(config: &DatabaseConfig) -> Result<Self, StoreError> {
        let location = Location::parse(config.url.as_deref())?;
        location.create_parent_folder()?;
        location.restrict_sqlite_files()?;
        let mut write_conn = location.connect(ConnectionRole::Writer)?;
        match run_migrations(&mut write_conn) {
            Ok(_) => {}
            // A read-only database that needs no migration still serves reads.
            Err(e)
                if e.outage() == Some(Outage::ReadOnly)
                    && migrations_complete(&mut write_conn, location.backend())
                        .unwrap_or(false) =>
            {
                log::error!("the database is read-only: reads are served, writes answer 503");
            }
            Err(e) => return Err(e),
        }
        let readers = ReadPool::open(&location, config.read_pool_size.max(1))?;
        let connect_location = location.clone();
        // SQLite allows one writer at a time; a second would only wait for the lock.
        let extra_writers = match location.backend() {
            Backend::Sqlite => 0,
            Backend::Postgres => config.writers.max(1) - 1,
        };
        let wal_gate = std::sync::Arc::new(WalGate::default());
        let writer = Writer::start(
            write_conn,
            // Only SQLite has a checkpoint thread to pause the writer.
            (location.backend() == Backend::Sqlite).then(|| wal_gate.clone()),
            std::sync::Arc::new(move || connect_location.connect(ConnectionRole::Writer)),
            config.max_batch.max(1),
            extra_writers,
        )?;
        let graph_location = location.clone();
        let graphs = std::sync::Arc::new(crate::cmdb::graph::GraphCache::new(std::sync::Arc::new(
            move || graph_location.connect(ConnectionRole::Reader),
        )));
        let checkpointer = match &location {
            Location::SqliteFile(path) => Some(Checkpointer::start(
                open_sqlite(path, ConnectionRole::Checkpointer)?,
                wal_gate,
            )),
            Location::Postgres(_) => None,
        };
        Ok(Self {
            _checkpointer: checkpointer,
            backend: location.backend(),
            read_slots: std::sync::Arc::new(tokio::sync::Semaphore::new(
                config.read_pool_size.max(1) as usize,
            )),
            read_threads: ReadThreads::start(
                config.read_pool_size.max(1) as usize,
                config.search_time_limit,
            ),
            readers,
            writer,
            graphs,
        })
    }

    /// Applies pending migrations and returns, for `itsm migrate`.
    pub fn migrate_only(config: &DatabaseConfig) -> Result<usize, StoreError> {
        let location = Location::parse(config.url.as_deref())?;
        location.create_parent_folder()?;
        location.restrict_sqlite_files()?;
        run_migrations(&mut location.connect(ConnectionRole::Writer)?)
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The node's copy of the CMDB graph, for impact walks.
    pub fn graphs(&self) -> std::sync::Arc<crate::cmdb::graph::GraphCache> {
        self.graphs.clone()
    }

    /// Runs `f` on a pooled read connection, off the async executor.
    pub async fn read<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut DbConnection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        // Wait for a connection here, not on a blocking thread: otherwise every waiting read
        // holds a thread of its own, and each thread's allocator cache stays resident.
        let _permit = self.read_slot().await?;
        self.on_read_thread(f).await
    }

    /// Runs `f` on a pooled read connection on a read thread; the caller holds a read slot.
    pub(crate) async fn on_read_thread<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut DbConnection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        let pool = self.readers.clone();
        self.read_threads.run(move || run_read(&pool, f)).await?
    }

    /// [`Database::read_bounded`] when `bounded`, else [`Database::read`]: for a query that is
    /// one page along an index unless a filter (a word search, a rare event type) may scan.
    pub async fn read_bounded_if<T, E, F>(&self, bounded: bool, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut DbConnection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        if bounded {
            self.read_bounded(f).await
        } else {
            self.read(f).await
        }
    }

    /// One of the permits that stand for the read connections.
    pub(crate) async fn read_slot(&self) -> Result<tokio::sync::SemaphorePermit<'_>, StoreError> {
        self.read_slots
            .acquire()
            .await
            .map_err(|_| StoreError::Unavailable("the database is closing".into()))
    }

    /// Runs `f`, a read bounded in size (a lookup by key, or one page walked along an index),
    /// on a pooled read connection. On SQLite it runs on the calling thread: such a read takes
    /// microseconds there, less than waking another thread and being woken back, which was a
    /// third of a simple GET's time. On PostgreSQL it waits for its round trips off the
    /// executor, like [`Database::read`], which anything that may scan or sort must use.
    pub async fn read_bounded<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut DbConnection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        if self.backend == Backend::Postgres {
            return self.read(f).await;
        }
        let _permit = self.read_slot().await?;
        run_read(&self.readers, f)
    }

    /// Runs `f` as one unit of work on the write path: inside its own savepoint of a write
    /// transaction, answered only once that transaction committed. An `Err` from `f` rolls
    /// back everything `f` wrote and nothing else.
    pub async fn write<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut DbConnection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<StoreError> + From<diesel::result::Error> + Send + 'static,
    {
        let mut once = Some(f);
        self.writer
            .submit(Lane::Primary, move |conn| match once.take() {
                Some(f) => f(conn),
                None => Err(StoreError::Unavailable("a unit of work ran twice".into()).into()),
            })
            .await
    }

    /// Like [`Database::write`], for a unit of work that only adds new rows and locks no
    /// existing row (it may read anything). On PostgreSQL such units run on several writers
    /// at once; anything that updates or deletes a row must use `write`. Such units share a
    /// savepoint, so `f` may run twice (the first run rolled back) and must be `Fn`.
    pub async fn write_new_rows<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: Fn(&mut DbConnection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<StoreError> + From<diesel::result::Error> + Send + 'static,
    {
        self.writer.submit(Lane::NewRows, f).await
    }

    /// Refreshes the statistics the planner chooses indexes by (SQLite: `PRAGMA optimize`,
    /// which analyses only tables that changed enough; PostgreSQL: `ANALYZE` of the service's
    /// tables).
    pub async fn optimize(&self) -> Result<(), StoreError> {
        self.write(|conn| match conn {
            DbConnection::Sqlite(c) => refresh_sqlite_statistics(c, "PRAGMA optimize"),
            // Autovacuum analyses in the end; after a bulk load the planner should not wait.
            DbConnection::Postgresql(c) => analyze_own_tables(c),
        })
        .await
    }

    /// True when the database answers and every embedded migration is applied.
    pub async fn is_ready(&self) -> bool {
        self.unready_because().await.is_none()
    }

    /// Why the database cannot serve, if it cannot: reads fail, a migration is missing, or
    /// writes fail. Writes are tried only when the last batch failed for an outage, so the
    /// probe writes nothing while all is well, and notices by itself when the outage ends.
    pub async fn unready_because(&self) -> Option<Unready> {
        let backend = self.backend;
        match self
            .read(move |conn| migrations_complete(conn, backend))
            .await
        {
            Ok(true) => {}
            Ok(false) => return Some(Unready::NotMigrated),
            Err(e) => return Some(Unready::Outage(e.outage().unwrap_or(Outage::Unreachable))),
        }
        let outage = self.writer.outage()?;
        match self.write(probe_write).await {
            // A conflict: another node's probe inserted the row first, so writes commit.
            Ok(()) | Err(StoreError::Conflict(_)) => None,
            Err(e) => Some(Unready::Outage(e.outage().unwrap_or(outage))),
        }
    }
}

/// Why the database cannot serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unready {
    Outage(Outage),
    /// The database answers, but this build's migrations are not all applied.
    NotMigrated,
}

/// The setting the readiness probe rewrites to learn whether writes commit again.
const WRITE_PROBE: &str = "write-probe";

/// Rewrites one row: enough to need the space and the write access a real write needs.
fn probe_write(conn: &mut DbConnection) -> Result<(), StoreError> {
    use crate::schema::settings;
    let stamp = chrono::Utc::now().to_rfc3339();
    let updated = diesel::update(settings::table.find(WRITE_PROBE))
        .set(settings::value.eq(&stamp))
        .execute(conn)?;
    if updated == 0 {
        diesel::insert_into(settings::table)
            .values((settings::name.eq(WRITE_PROBE), settings::value.eq(&stamp)))
            .execute(conn)?;
    }
    Ok(())
}

/// Runs `f` on a connection from the pool, which has one for each permit held.
fn run_read<T, E, F>(pool: &ReadPool, f: F) -> Result<T, E>
where
    F: FnOnce(&mut DbConnection) -> Result<T, E>,
    E: From<StoreError>,
{
    let mut read = pool.get()?;
    let result = f(&mut read.conn);
    read.suspect = result.is_err();
    result
}

/// PostgreSQL: nodes starting together on one schema take turns (a session advisory lock keyed
/// by the schema), and a migration that loses a deadlock to concurrent DDL is tried again: each
/// runs in its own transaction, so a failed one left nothing behind.
fn run_postgres_migrations(c: &mut diesel::PgConnection) -> Result<usize, StoreError> {
    use diesel::connection::SimpleConnection;
    c.batch_execute("SELECT pg_advisory_lock(hashtext('itsm-migrations:' || current_schema()))")?;
    let mut attempt = 0;
    let result = loop {
        attempt += 1;
        match c.run_pending_migrations(POSTGRES_MIGRATIONS) {
            Ok(applied) => break Ok(applied.len()),
            Err(e) if attempt < 5 && e.to_string().contains("deadlock detected") => {
                log::warn!("a migration lost a deadlock to concurrent DDL; trying again");
                std::thread::sleep(std::time::Duration::from_millis(50 * attempt));
            }
            Err(e) => break Err(StoreError::Unavailable(format!("migration failed: {e}"))),
        }
    };
    c.batch_execute("SELECT pg_advisory_unlock(hashtext('itsm-migrations:' || current_schema()))")?;
    result
}

fn run_migrations(conn: &mut DbConnection) -> Result<usize, StoreError> {
    let applied = match conn {
        DbConnection::Sqlite(c) => c
            .run_pending_migrations(SQLITE_MIGRATIONS)
            .map(|v| v.len())
            .map_err(|e| StoreError::Unavailable(format!("migration failed: {e}")))?,
        DbConnection::Postgresql(c) => run_postgres_migrations(c)?,
    };
    if applied > 0 {
        log::info!("applied {applied} migration(s)");
    }
    if let DbConnection::Sqlite(c) = conn {
        // 0x10002: analyse what needs it, bounded in time, as recommended at start-up.
        refresh_sqlite_statistics(c, "PRAGMA optimize = 0x10002")?;
    }
    Ok(applied)
}

/// `ANALYZE` of the tables in the service's schema. A bare `ANALYZE` takes every table of the
/// database, other schemas' and other applications' too, and inside the write transaction
/// holds each one's lock until the commit: beside another schema's migration (an `ALTER
/// TABLE` waiting for one of them while holding another) that was a deadlock.
fn analyze_own_tables(conn: &mut diesel::PgConnection) -> Result<(), StoreError> {
    #[derive(QueryableByName)]
    struct Table {
        #[diesel(sql_type = diesel::sql_types::Text)]
        name: String,
    }
    let tables: Vec<Table> = diesel::sql_query(
        "SELECT quote_ident(tablename) AS name FROM pg_tables \
         WHERE schemaname = current_schema() ORDER BY tablename",
    )
    .load(conn)?;
    if tables.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = tables.iter().map(|t| t.name.as_str()).collect();
    conn.batch_execute(&format!("ANALYZE {}", names.join(", ")))?;
    Ok(())
}

/// Statistics for the SQLite planner: without them it may sort a large filtered set instead of
/// walking the sort index. The bundled SQLite is built with STAT4, under which a statement that
/// compares a bound value with an indexed column is prepared again whenever that value changes
/// (SQLite's documentation of `sqlite3_prepare_v2`); the per-index averages (stat1) choose the
/// same plans for our queries, so the per-value samples are dropped.
fn refresh_sqlite_statistics(
    conn: &mut SqliteConnection,
    optimize: &str,
) -> Result<(), StoreError> {
    conn.batch_execute(optimize)?;
    #[derive(QueryableByName)]
    struct Present {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        tables: i64,
    }
    let stat4: Present = diesel::sql_query(
        "SELECT COUNT(*) AS tables FROM sqlite_schema WHERE name = 'sqlite_stat4'",
    )
    .get_result(conn)?;
    if stat4.tables > 0 {
        conn.batch_execute("DELETE FROM sqlite_stat4; ANALYZE sqlite_schema;")?;
    }
    Ok(())
}

fn migrations_complete(conn: &mut DbConnection, backend: Backend) -> Result<bool, StoreError> {
    use diesel::migration::MigrationSource;
    let expected = match backend {
        Backend::Sqlite => {
            MigrationSource::<diesel::sqlite::Sqlite>::migrations(&SQLITE_MIGRATIONS)
                .map(|m| m.len())
        }
        Backend::Postgres => {
            MigrationSource::<diesel::pg::Pg>::migrations(&POSTGRES_MIGRATIONS).map(|m| m.len())
        }
    }
    .map_err(|e| StoreError::Unavailable(e.to_string()))?;
    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        applied: i64,
    }
    let count: Count =
        diesel::sql_query("SELECT COUNT(*) AS applied FROM __diesel_schema_migrations")
            .get_result(conn)?;
    Ok(count.applied as usize >= expected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_postgres_urls_connect_without_tls_unless_they_say_otherwise() {
        let cases = [
            (
                "postgres://postgres@127.0.0.1:5432/test",
                "postgres://postgres@127.0.0.1:5432/test?sslmode=disable",
            ),
            (
                "postgresql://u:p@localhost/db?application_name=x",
                "postgresql://u:p@localhost/db?application_name=x&sslmode=disable",
            ),
            (
                "postgres://[::1]:5433/db?",
                "postgres://[::1]:5433/db?sslmode=disable",
            ),
            (
                "postgres://u@127.0.0.1/db?sslmode=require",
                "postgres://u@127.0.0.1/db?sslmode=require",
            ),
            (
                "postgres://u@db.example.com/db",
                "postgres://u@db.example.com/db",
            ),
            (
                "postgres://u:p%40ss@10.0.0.5:5432/db",
                "postgres://u:p%40ss@10.0.0.5:5432/db",
            ),
        ];
        for (given, expected) in cases {
            assert_eq!(without_tls_on_loopback(given), expected, "{given}");
        }
    }

    fn words_of(conn: &mut SqliteConnection) -> Vec<(String, String)> {
        #[derive(QueryableByName)]
        struct Word {
            #[diesel(sql_type = diesel::sql_types::Text)]
            term: String,
            #[diesel(sql_type = diesel::sql_types::Text)]
            incident_id: String,
        }
        diesel::sql_query("SELECT term, incident_id FROM incident_terms ORDER BY 1, 2")
            .load::<Word>(conn)
            .unwrap()
            .into_iter()
            .map(|word| (word.term, word.incident_id))
            .collect()
    }

    fn matching(conn: &mut SqliteConnection, query: &str) -> Vec<i64> {
        #[derive(QueryableByName)]
        struct Found {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            rowid: i64,
        }
        diesel::sql_query(
            "SELECT rowid FROM incident_words WHERE incident_words MATCH ? ORDER BY rowid",
        )
        .bind::<diesel::sql_types::Text, _>(query)
        .load::<Found>(conn)
        .unwrap()
        .into_iter()
        .map(|found| found.rowid)
        .collect()
    }

    fn timer_lines_of(conn: &mut SqliteConnection) -> Vec<String> {
        #[derive(QueryableByName)]
        struct Line {
            #[diesel(sql_type = diesel::sql_types::Text)]
            line: String,
        }
        diesel::sql_query(
            "SELECT timer_id || ' ' || position || ' ' || at || ' ' || kind || ' ' || reason || ' '
                 || coalesce(target_seconds, '-') || ' ' || coalesce(policy_id, '-') || ' '
                 || calendar_version || ' ' || coalesce(audit_entry_id, '-') AS line
             FROM sla_timer_lines ORDER BY timer_id, position",
        )
        .load::<Line>(conn)
        .unwrap()
        .into_iter()
        .map(|l| l.line)
        .collect()
    }

    /// The migration that keeps a timer's timeline in its row carries the stored lines over,
    /// in order and exact to the fraction of a second, and reverting it carries them back.
    #[test]
    fn sla_timelines_move_into_their_timers_and_back() {
        use domain::sla_timers::{TimelineKind, TimelineLine};
        configure_sqlite();
        let path = std::env::temp_dir().join(format!("itsm-timelines-{}.db", uuid::Uuid::new_v4()));
        let mut conn = SqliteConnection::establish(&path.to_string_lossy()).unwrap();
        use diesel::migration::MigrationSource;
        let before_timelines =
            MigrationSource::<diesel::sqlite::Sqlite>::migrations(&SQLITE_MIGRATIONS)
                .unwrap()
                .iter()
                .position(|m| m.name().to_string().ends_with("_sla_timelines"))
                .unwrap();
        for _ in 0..before_timelines {
            conn.run_next_migration(SQLITE_MIGRATIONS).unwrap();
        }
        conn.batch_execute(
            "INSERT INTO sla_timers (id, ticket_type, ticket_id, metric, policy_id, calendar_id,
                 calendar_version, warning_percent, target_seconds, state, started_at, as_of,
                 elapsed_seconds, paused_seconds, due_order, version, clock_running, line_count)
             VALUES
                 ('t1', 'incident', 'i1', 'resolution', 'p1', 'c1', 1, 75, 28800, 'paused',
                  '2026-12-04 15:00:00', '2026-12-04 15:30:00.25', 1800, 0,
                  '9999-12-31 00:00:00', 2, 0, 2),
                 ('t2', 'incident', 'i2', 'response', 'p1', 'c1', 1, 75, 3600, 'running',
                  '2026-12-04 16:00:00', '2026-12-04 16:00:00', 0, 0,
                  '2026-12-04 17:00:00', 1, 1, 0);
             INSERT INTO sla_timer_lines (timer_id, position, at, kind, reason, target_seconds,
                 policy_id, calendar_version, audit_entry_id)
             VALUES
                 ('t1', 1, '2026-12-04 15:30:00.25', 'pause',
                  'state on_hold (awaiting_caller)', NULL, NULL, 1, 'a2'),
                 ('t1', 0, '2026-12-04 15:00:00', 'start', 'policy \"Gold\" applies',
                  28800, 'p1', 1, 'a1');",
        )
        .unwrap();
        let before = timer_lines_of(&mut conn);

        conn.run_next_migration(SQLITE_MIGRATIONS).unwrap();
        let timelines: Vec<(String, String)> = crate::schema::sla_timers::table
            .select((
                crate::schema::sla_timers::id,
                crate::schema::sla_timers::timeline,
            ))
            .order(crate::schema::sla_timers::id)
            .load(&mut conn)
            .unwrap();
        let at = |text: &str| chrono::DateTime::parse_from_rfc3339(text).unwrap().to_utc();
        let line =
            |at, kind, reason: &str, target_seconds, policy_id: Option<&str>, audit: &str| {
                TimelineLine {
                    at,
                    kind,
                    reason: reason.to_owned(),
                    target_seconds,
                    policy_id: policy_id.map(str::to_owned),
                    calendar_version: 1,
                    audit_entry_id: Some(audit.to_owned()),
                }
            };
        assert_eq!(
            crate::sla_timers::timeline_lines(&timelines[0].1).unwrap(),
            vec![
                line(
                    at("2026-12-04T15:00:00Z"),
                    TimelineKind::Start,
                    "policy \"Gold\" applies",
                    Some(28800),
                    Some("p1"),
                    "a1"
                ),
                line(
                    at("2026-12-04T15:30:00.25Z"),
                    TimelineKind::Pause,
                    "state on_hold (awaiting_caller)",
                    None,
                    None,
                    "a2"
                ),
            ]
        );
        assert_eq!(timelines[1], ("t2".to_owned(), String::new()));

        conn.revert_last_migration(SQLITE_MIGRATIONS).unwrap();
        assert_eq!(timer_lines_of(&mut conn), before);
        drop(conn);
        let _ = std::fs::remove_file(&path);
    }

    /// The migration to the full-text index carries the words of existing incidents over,
    /// and reverting it carries them back.
    #[test]
    fn incident_words_move_into_the_full_text_index_and_back() {
        configure_sqlite();
        let path = std::env::temp_dir().join(format!("itsm-words-{}.db", uuid::Uuid::new_v4()));
        let mut conn = SqliteConnection::establish(&path.to_string_lossy()).unwrap();
        for _ in 0..6 {
            conn.run_next_migration(SQLITE_MIGRATIONS).unwrap();
        }
        // The callers do not matter here.
        conn.batch_execute("PRAGMA foreign_keys = OFF").unwrap();
        conn.batch_execute(
            "INSERT INTO incidents (id, number, title, description, caller_id, channel, impact,
                 urgency, priority, state, search_text, created_at, updated_at, version)
             VALUES
                 ('i1', 'INC0000001', 'Printer jam', '', 'u', 'api', 'low', 'low', 'p4', 'new',
                  'Printer jam', '2026-11-25 08:00:00', '2026-11-25 08:00:00', 1),
                 ('i2', 'INC0000042', 'VPN störung', '', 'u', 'api', 'low', 'low', 'p4', 'new',
                  'VPN störung', '2026-11-25 08:00:00', '2026-11-25 08:00:00', 1);
             INSERT INTO incident_terms (term, incident_id) VALUES
                 ('jam', 'i1'), ('printer', 'i1'), ('störung', 'i2'), ('vpn', 'i2');",
        )
        .unwrap();
        let before = words_of(&mut conn);

        conn.run_next_migration(SQLITE_MIGRATIONS).unwrap();
        assert_eq!(matching(&mut conn, "\"printer\" \"jam\""), vec![1]);
        assert_eq!(matching(&mut conn, "\"störung\""), vec![42]);
        assert_eq!(
            matching(&mut conn, "\"printer\" \"vpn\""),
            Vec::<i64>::new()
        );

        conn.revert_last_migration(SQLITE_MIGRATIONS).unwrap();
        assert_eq!(words_of(&mut conn), before);
        drop(conn);
        let _ = std::fs::remove_file(&path);
    }
}
