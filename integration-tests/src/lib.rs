//! Black-box test support: start the real service on a random port against a fresh database,
//! then talk HTTP to it with reqwest.
//!
//! Every test runs against SQLite, and against PostgreSQL when `ITSM_TEST_POSTGRES_URL` is set
//! (each test in its own schema). Without it the PostgreSQL half is reported as ignored, never
//! as passed (`build.rs` reads the variable when the tests are built; tests of PostgreSQL alone
//! carry `#[cfg_attr(itsm_no_postgres, ignore = "...")]`). With `ITSM_TEST_REQUIRE_POSTGRES=1`
//! a missing URL fails the PostgreSQL half instead, so CI cannot pass without it.

use std::time::Duration;

use diesel::{Connection, PgConnection, RunQueryDsl};
use itsm_api::app::{self, Spawned};
pub use itsm_api::Config;
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::{json, Value};

pub mod receiver;

pub use reqwest;
pub use serde_json;

pub const ADMIN_PASSWORD: &str = "admin-password-for-tests";
pub const POSTGRES_URL_VAR: &str = "ITSM_TEST_POSTGRES_URL";
pub const REQUIRE_POSTGRES_VAR: &str = "ITSM_TEST_REQUIRE_POSTGRES";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A running service and a client signed in as its bootstrap admin.
pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub admin_token: String,
    pub backend: Backend,
    /// The service's database, for tests that look beneath the API (query plans).
    pub database: persistence::DatabaseConfig,
    /// The service's clock: the system clock unless the test's configuration set a manual one.
    pub clock: persistence::Clock,
    server: Option<Spawned>,
    scratch: Option<ScratchDatabase>,
}

/// A fresh database for one test: a temporary SQLite file, or a new schema of the test
/// PostgreSQL; removed when dropped.
pub struct ScratchDatabase {
    /// The `ITSM_DATABASE_URL` that names it.
    pub url: String,
    cleanup: Cleanup,
}

enum Cleanup {
    SqliteFile(std::path::PathBuf),
    PostgresSchema { url: String, schema: String },
}

impl ScratchDatabase {
    /// A new database on `backend`; `None` when that backend is not configured here.
    pub fn new(backend: Backend) -> Option<ScratchDatabase> {
        let unique = uuid::Uuid::new_v4().simple().to_string();
        Some(match backend {
            Backend::Sqlite => {
                let path = std::env::temp_dir().join(format!("itsm-test-{unique}.db"));
                ScratchDatabase {
                    url: format!("sqlite://{}", path.display()),
                    cleanup: Cleanup::SqliteFile(path),
                }
            }
            Backend::Postgres => {
                let url = postgres_url()?;
                let schema = format!("t_{unique}");
                let mut conn =
                    PgConnection::establish(&url).expect("cannot connect to the test PostgreSQL");
                diesel::sql_query(format!("CREATE SCHEMA {schema}"))
                    .execute(&mut conn)
                    .expect("cannot create the test schema");
                let separator = if url.contains('?') { '&' } else { '?' };
                ScratchDatabase {
                    url: format!("{url}{separator}options=-csearch_path%3D{schema}"),
                    cleanup: Cleanup::PostgresSchema { url, schema },
                }
            }
        })
    }
}

impl Drop for ScratchDatabase {
    fn drop(&mut self) {
        match &self.cleanup {
            Cleanup::SqliteFile(path) => {
                for suffix in ["", "-wal", "-shm", ".lock"] {
                    let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
                }
            }
            Cleanup::PostgresSchema { url, schema } => {
                if let Ok(mut conn) = PgConnection::establish(url) {
                    let _ = diesel::sql_query(format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                        .execute(&mut conn);
                }
            }
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.stop();
        }
        self.scratch.take();
    }
}

/// The PostgreSQL URL to test against, or `None` to skip (panics when PostgreSQL is required).
pub fn postgres_url() -> Option<String> {
    match std::env::var(POSTGRES_URL_VAR) {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ if std::env::var(REQUIRE_POSTGRES_VAR).is_ok_and(|v| v == "1") => {
            panic!("{REQUIRE_POSTGRES_VAR}=1 but {POSTGRES_URL_VAR} is not set")
        }
        _ => None,
    }
}

impl TestApp {
    /// Starts the service on `backend`; `None` when that backend is not configured here.
    pub async fn spawn(backend: Backend) -> Option<TestApp> {
        Self::spawn_with(backend, |_| {}).await
    }

    /// Starts the service with configuration adjusted by `adjust`.
    pub async fn spawn_with(backend: Backend, adjust: impl FnOnce(&mut Config)) -> Option<TestApp> {
        let scratch = ScratchDatabase::new(backend)?;
        let mut config = Config {
            bind: "127.0.0.1:0".into(),
            admin_password: Some(ADMIN_PASSWORD.into()),
            workers: Some(2),
            ..Config::default()
        };
        config.database.url = Some(scratch.url.clone());
        if backend == Backend::Postgres {
            config.database.read_pool_size = 4;
        }
        // The webhook worker polls the database; only the tests of webhooks turn it on, so
        // that the rest of the suite does not pay for it.
        config.webhooks.worker = false;
        adjust(&mut config);
        Self::start(config, backend, Some(scratch)).await
    }

    /// A second node serving this one's database, with the same clock: for tests of what
    /// several nodes do at once.
    pub async fn spawn_beside(&self) -> TestApp {
        let mut config = Config {
            bind: "127.0.0.1:0".into(),
            workers: Some(2),
            clock: self.clock.clone(),
            database: self.database.clone(),
            ..Config::default()
        };
        config.sla_interval_ms = 50;
        Self::start(config, self.backend, None)
            .await
            .expect("a second node")
    }

    async fn start(
        config: Config,
        backend: Backend,
        scratch: Option<ScratchDatabase>,
    ) -> Option<TestApp> {
        let database = config.database.clone();
        let clock = config.clock.clone();
        let server = tokio::task::spawn_blocking(move || app::spawn(config))
            .await
            .expect("the server start task panicked")
            .expect("the server did not start");
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(64)
            .build()
            .expect("reqwest client");
        let mut app = TestApp {
            base: format!("http://{}", server.addr),
            client,
            admin_token: String::new(),
            backend,
            database,
            clock,
            server: Some(server),
            scratch,
        };
        app.admin_token = app.token_for("admin", ADMIN_PASSWORD).await;
        Some(app)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A request with no credentials.
    pub fn anonymous(&self, method: Method, path: &str) -> RequestBuilder {
        self.client.request(method, self.url(path))
    }

    /// A request carrying `token`.
    pub fn request(&self, method: Method, path: &str, token: &str) -> RequestBuilder {
        self.anonymous(method, path).bearer_auth(token)
    }

    /// A request as the bootstrap admin.
    pub fn admin(&self, method: Method, path: &str) -> RequestBuilder {
        self.request(method, path, &self.admin_token)
    }

    /// Signs in and returns the access token; panics when sign-in fails.
    pub async fn token_for(&self, username: &str, password: &str) -> String {
        let response = self
            .anonymous(Method::POST, "/api/v1/auth/token")
            .json(&json!({"username": username, "password": password}))
            .send()
            .await
            .expect("token request");
        let (status, body) = read(response).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "sign-in of {username} failed: {body}"
        );
        body["access_token"]
            .as_str()
            .expect("access_token")
            .to_owned()
    }

    /// Creates a user with `roles` through the API and returns `(user, access token)`.
    pub async fn user_with_roles(&self, username: &str, roles: &[&str]) -> (Value, String) {
        let password = format!("{username}-password-123");
        let response = self
            .admin(Method::POST, "/api/v1/users")
            .json(&json!({
                "username": username,
                "display_name": username,
                "email": format!("{username}@example.com"),
                "password": password,
                "roles": roles,
            }))
            .send()
            .await
            .expect("create user");
        let (status, user) = read(response).await;
        assert_eq!(
            status,
            StatusCode::CREATED,
            "creating {username} failed: {user}"
        );
        let token = self.token_for(username, &password).await;
        (user, token)
    }

    /// Creates a group through the API and returns it.
    pub async fn group(&self, name: &str) -> Value {
        let response = self
            .admin(Method::POST, "/api/v1/groups")
            .json(&json!({"name": name, "description": format!("{name} team")}))
            .send()
            .await
            .expect("create group");
        let (status, group) = read(response).await;
        assert_eq!(
            status,
            StatusCode::CREATED,
            "creating group {name} failed: {group}"
        );
        group
    }

    /// Every event of the feed after `after`, following `next_cursor` to the end.
    pub async fn events_after(&self, after: i64) -> Vec<Value> {
        let mut events = Vec::new();
        let mut after = after;
        loop {
            let response = self
                .admin(
                    Method::GET,
                    &format!("/api/v1/events?after={after}&limit=500"),
                )
                .send()
                .await
                .expect("events");
            let (status, page) = read(response).await;
            assert_eq!(status, StatusCode::OK, "{page}");
            let items = page["items"].as_array().cloned().unwrap_or_default();
            if items.is_empty() {
                return events;
            }
            after = items
                .last()
                .and_then(|e| e["sequence"].as_i64())
                .expect("sequence");
            events.extend(items);
        }
    }

    /// The audit entries of one record, newest first.
    pub async fn audit_of(&self, entity_type: &str, entity_id: &str) -> Vec<Value> {
        let response = self
            .admin(
                Method::GET,
                &format!("/api/v1/audit-events?entity_type={entity_type}&entity_id={entity_id}&limit=500"),
            )
            .send()
            .await
            .expect("audit events");
        let (status, page) = read(response).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        page["items"].as_array().cloned().unwrap_or_default()
    }
}

/// What the service has stored so far, compared before and after a rejected request to show
/// that it changed nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteMarks {
    pub users: Vec<Value>,
    pub groups: Vec<Value>,
    pub api_tokens: Vec<Value>,
    pub audit_entries: usize,
    pub last_event: i64,
}

impl TestApp {
    /// Every item of a list, following `next_cursor` to the end (as the admin).
    pub async fn list_all(&self, path: &str) -> Vec<Value> {
        let separator = if path.contains('?') { '&' } else { '?' };
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut url = format!("{path}{separator}limit=500");
            if let Some(cursor) = &cursor {
                url.push_str(&format!("&cursor={cursor}"));
            }
            let response = self.admin(Method::GET, &url).send().await.expect("list");
            let (status, page) = read(response).await;
            assert_eq!(status, StatusCode::OK, "GET {url}: {page}");
            items.extend(page["items"].as_array().cloned().unwrap_or_default());
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => return items,
            }
        }
    }

    /// A snapshot of users, groups, API tokens, audit entries and the event feed.
    pub async fn write_marks(&self) -> WriteMarks {
        WriteMarks {
            users: self.list_all("/api/v1/users").await,
            groups: self.list_all("/api/v1/groups").await,
            // When a token was last used is bookkeeping written after the request, not a
            // change a rejected request may have made.
            api_tokens: self
                .list_all("/api/v1/api-tokens")
                .await
                .into_iter()
                .map(|mut token| {
                    if let Some(fields) = token.as_object_mut() {
                        fields.remove("last_used_at");
                    }
                    token
                })
                .collect(),
            audit_entries: self.list_all("/api/v1/audit-events").await.len(),
            last_event: self
                .events_after(0)
                .await
                .last()
                .and_then(|e| e["sequence"].as_i64())
                .unwrap_or(0),
        }
    }

    /// Asserts that nothing was written since `before` was taken.
    pub async fn assert_unchanged_since(&self, before: &WriteMarks, what: &str) {
        let after = self.write_marks().await;
        assert_eq!(&after, before, "{what} changed stored state");
    }

    /// The id of the user or API token holding `token`.
    pub async fn id_of(&self, token: &str) -> String {
        let response = self
            .request(Method::GET, "/api/v1/me", token)
            .send()
            .await
            .expect("me");
        let (status, me) = read(response).await;
        assert_eq!(status, StatusCode::OK, "{me}");
        me["id"].as_str().expect("id").to_owned()
    }
}

/// Status and JSON body (`Value::Null` for an empty or non-JSON body).
pub async fn read(response: Response) -> (StatusCode, Value) {
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// The value of a response header, if present and text.
pub fn header(response: &Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// The `field` of each entry of a problem's `errors[]`.
pub fn error_fields(problem: &Value) -> Vec<String> {
    problem["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .filter_map(|e| e["field"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Asserts `response` is an RFC 9457 problem with `status`, and returns it.
pub async fn expect_problem(response: Response, status: StatusCode) -> Value {
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let (actual, body) = read(response).await;
    assert_eq!(actual, status, "unexpected status, body: {body}");
    assert_eq!(content_type, "application/problem+json", "body: {body}");
    assert_eq!(body["status"], status.as_u16(), "{body}");
    assert!(
        body["type"].is_string() && body["title"].is_string() && body["detail"].is_string(),
        "{body}"
    );
    body
}

/// A 409 problem about `field`: a conflict with what is stored names the field first in its
/// detail (`"assignee: is not a member of the assignment group"`).
pub async fn expect_conflict_on(response: Response, field: &str) -> Value {
    let problem = expect_problem(response, StatusCode::CONFLICT).await;
    let detail = problem["detail"].as_str().unwrap_or_default();
    assert!(detail.starts_with(&format!("{field}:")), "{problem}");
    problem
}

/// A refused body: 409 `unknown-reference` when every listed field names a record that does
/// not exist ("no such ..."), 422 `validation` otherwise. Returns the problem.
pub async fn expect_refusal(response: Response) -> Value {
    let status = response.status();
    let (_, body) = read(response).await;
    let unknown = body["errors"].as_array().is_some_and(|errors| {
        !errors.is_empty()
            && errors.iter().all(|e| {
                e["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("no such "))
            })
    });
    let (expected, kind) = if unknown {
        (StatusCode::CONFLICT, "unknown-reference")
    } else {
        (StatusCode::UNPROCESSABLE_ENTITY, "validation")
    };
    assert_eq!(status, expected, "{body}");
    assert_eq!(
        body["type"],
        format!("https://itsm.example/problems/{kind}"),
        "{body}"
    );
    body
}

/// Why a PostgreSQL test runs without PostgreSQL: the tests were built with
/// `ITSM_TEST_POSTGRES_URL` set (see `build.rs`) and the binary was run without it.
pub const NOT_BUILT_FOR_POSTGRES: &str = "ITSM_TEST_POSTGRES_URL is not set, but these tests \
     were built with it: run them through cargo, which reports them as ignored then";

/// Runs each named `async fn(TestApp)` once per backend: `sqlite::name` and `postgres::name`.
/// Without `ITSM_TEST_POSTGRES_URL` when built, `postgres::name` is reported as ignored.
///
/// `name with adjust` starts that test's service with its configuration changed by
/// `fn adjust(&mut Config)` (a function of the invoking module).
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident $(with $adjust:ident)?),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let app = $crate::TestApp::spawn_with(
                        $crate::Backend::Sqlite,
                        $crate::__adjust_config!($(super::$adjust)?),
                    )
                    .await
                    .expect("sqlite");
                    super::$name(app).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                #[cfg_attr(itsm_no_postgres, ignore = "ITSM_TEST_POSTGRES_URL is not set")]
                async fn $name() {
                    let app = $crate::TestApp::spawn_with(
                        $crate::Backend::Postgres,
                        $crate::__adjust_config!($(super::$adjust)?),
                    )
                    .await
                    .unwrap_or_else(|| panic!("{}", $crate::NOT_BUILT_FOR_POSTGRES));
                    super::$name(app).await;
                }
            )*
        }
    };
}

/// The configuration change of one `on_both_backends!` entry: none, or the named function.
#[doc(hidden)]
#[macro_export]
macro_rules! __adjust_config {
    () => {
        |_: &mut $crate::Config| {}
    };
    ($adjust:path) => {
        $adjust
    };
}

/// The `itsm` binary of this build, run as a process of its own, for tests of what only a real
/// process shows (signals, crashes, restarts).
pub struct RealServer {
    pub base: String,
    child: std::process::Child,
}

/// The `itsm` binary beside this test binary's folder (`target/debug/itsm`), which
/// `cargo test --workspace` builds.
fn itsm_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let binary = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join("itsm"))
        .expect("the target folder");
    assert!(
        binary.exists(),
        "{} is missing: run `cargo build -p itsm-api` (make test does)",
        binary.display()
    );
    binary
}

/// Runs the `itsm` command `args` (`keys rotate`...) on `database_url` with further `ITSM_*`
/// settings; its standard output, or its standard error as `Err` when it failed.
pub fn itsm_command(
    database_url: &str,
    args: &[&str],
    settings: &[(&str, &str)],
) -> Result<String, String> {
    let output = std::process::Command::new(itsm_binary())
        .args(args)
        .env("ITSM_DATABASE_URL", database_url)
        .env("RUST_LOG", "warn")
        .envs(settings.iter().copied())
        .output()
        .expect("run itsm");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if output.status.success() {
        Ok(stdout)
    } else {
        Err(format!(
            "{stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

impl RealServer {
    /// Starts `itsm serve` on `database_url` and waits until it is ready.
    pub async fn start(database_url: &str) -> RealServer {
        Self::start_with(database_url, &[]).await
    }

    /// Starts `itsm serve` with further `ITSM_*` settings.
    pub async fn start_with(database_url: &str, settings: &[(&str, &str)]) -> RealServer {
        Self::start_logging(database_url, settings, None).await
    }

    /// Starts `itsm serve` with its log (standard error) written to `log` when given.
    pub async fn start_logging(
        database_url: &str,
        settings: &[(&str, &str)],
        log: Option<&std::path::Path>,
    ) -> RealServer {
        Self::launch(database_url, settings, log, StatusCode::OK).await
    }

    /// Like [`RealServer::start_logging`], for a server that is expected to answer but not
    /// to be ready (`/readyz` 503: its database takes no writes).
    pub async fn start_logging_unready(
        database_url: &str,
        settings: &[(&str, &str)],
        log: Option<&std::path::Path>,
    ) -> RealServer {
        Self::launch(database_url, settings, log, StatusCode::SERVICE_UNAVAILABLE).await
    }

    async fn launch(
        database_url: &str,
        settings: &[(&str, &str)],
        log: Option<&std::path::Path>,
        readiness: StatusCode,
    ) -> RealServer {
        let stderr = match log {
            Some(path) => std::process::Stdio::from(
                std::fs::File::create(path).expect("the server's log file"),
            ),
            None => std::process::Stdio::inherit(),
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let child = std::process::Command::new(itsm_binary())
            .arg("serve")
            .env("ITSM_DATABASE_URL", database_url)
            .env("ITSM_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .env("ITSM_BIND", format!("127.0.0.1:{port}"))
            .env("ITSM_WORKERS", "2")
            .env("RUST_LOG", "warn")
            .envs(settings.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start itsm");
        let server = RealServer {
            base: format!("http://127.0.0.1:{port}"),
            child,
        };
        let client = reqwest::Client::new();
        for _ in 0..400 {
            if let Ok(response) = client.get(format!("{}/readyz", server.base)).send().await {
                if response.status() == readiness {
                    return server;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("itsm did not become ready");
    }

    /// The process's resident memory in KiB (`VmRSS` of /proc/PID/status; Linux).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("read /proc/PID/status");
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/PID/status")
    }

    /// Sends a signal (`TERM`, `KILL`...) to the process.
    pub fn signal(&self, name: &str) {
        let status = std::process::Command::new("kill")
            .args(["-s", name, &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -s {name} failed");
    }

    /// Waits up to `limit` for the process to end; its exit status.
    pub async fn wait(&mut self, limit: Duration) -> std::process::ExitStatus {
        let started = std::time::Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for itsm") {
                return status;
            }
            assert!(
                started.elapsed() < limit,
                "itsm did not stop within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// An access token of the bootstrap admin.
    pub async fn admin_token(&self) -> String {
        let response = reqwest::Client::new()
            .post(format!("{}/api/v1/auth/token", self.base))
            .json(&json!({"username": "admin", "password": ADMIN_PASSWORD}))
            .send()
            .await
            .expect("token request");
        let (status, body) = read(response).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["access_token"]
            .as_str()
            .expect("access_token")
            .to_owned()
    }
}

impl Drop for RealServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// With `ITSM_TEST_REQUIRE_FAULTS=1` (CI), a fault test whose mechanism is missing here
/// (PostgreSQL's server binaries, mounting a tmpfs) fails instead of skipping.
pub const REQUIRE_FAULTS_VAR: &str = "ITSM_TEST_REQUIRE_FAULTS";

/// Says that a fault test skipped and why, or fails it when fault tests are required.
pub fn skip_fault_test(test: &str, why: &str) {
    if std::env::var(REQUIRE_FAULTS_VAR).is_ok_and(|v| v == "1") {
        panic!("{test} cannot run ({why}) but {REQUIRE_FAULTS_VAR}=1");
    }
    eprintln!("SKIPPED {test}: {why}");
}

/// True when this process runs as root (which ignores file permissions and must run
/// PostgreSQL's tools as another user).
pub fn running_as_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

/// A PostgreSQL server of the test's own, in a temporary folder on a free port, which the test
/// may stop and start again without disturbing the shared one. Removed when dropped.
pub struct PrivatePostgres {
    pub port: u16,
    bin: std::path::PathBuf,
    dir: std::path::PathBuf,
    as_root: bool,
}

impl PrivatePostgres {
    /// Creates and starts the server; `Err` says why it cannot here (no server binaries).
    pub fn start() -> Result<PrivatePostgres, String> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .map_err(|_| "no PostgreSQL server binaries in /usr/lib/postgresql".to_owned())?
            .filter_map(|entry| entry.ok().map(|e| e.path().join("bin")))
            .filter(|bin| bin.join("initdb").exists() && bin.join("pg_ctl").exists())
            .max_by_key(|bin| {
                bin.parent()
                    .and_then(|v| v.file_name())
                    .and_then(|v| v.to_str())
                    .and_then(|v| v.parse::<u32>().ok())
                    .unwrap_or(0)
            })
            .ok_or_else(|| "no initdb and pg_ctl under /usr/lib/postgresql/*/bin".to_owned())?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let dir = std::env::temp_dir().join(format!("itsm-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("a folder for PostgreSQL");
        let as_root = running_as_root();
        let server = PrivatePostgres {
            port,
            bin,
            dir,
            as_root,
        };
        if as_root {
            // PostgreSQL refuses to run as root: its folder belongs to the postgres user.
            let chown = std::process::Command::new("chown")
                .args(["-R", "postgres:"])
                .arg(&server.dir)
                .status()
                .expect("chown");
            assert!(chown.success(), "chown of {} failed", server.dir.display());
        }
        let data = server.dir.join("data");
        server.run(
            "initdb",
            &[
                "-D",
                &data.to_string_lossy(),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        server.start_again();
        Ok(server)
    }

    /// The URL of its `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the server (again) and waits until it accepts connections.
    pub fn start_again(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.display()
        );
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.dir.join("data").to_string_lossy(),
                "-l",
                &self.dir.join("log").to_string_lossy(),
                "-o",
                &options,
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
    }

    /// Stops the server: `fast` ends every session at once, `immediate` is a crash.
    pub fn stop(&self, mode: &str) {
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.dir.join("data").to_string_lossy(),
                "-m",
                mode,
                "-w",
                "stop",
            ],
        );
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let program = self.bin.join(tool);
        let mut command = if self.as_root {
            let mut command = std::process::Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(&program);
            command
        } else {
            std::process::Command::new(&program)
        };
        let output = command
            .args(args)
            .current_dir(&self.dir)
            .output()
            .unwrap_or_else(|e| panic!("{tool}: {e}"));
        assert!(
            output.status.success(),
            "{tool} {args:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        if data.join("postmaster.pid").exists() {
            let program = self.bin.join("pg_ctl");
            let mut command = if self.as_root {
                let mut command = std::process::Command::new("runuser");
                command.args(["-u", "postgres", "--"]).arg(&program);
                command
            } else {
                std::process::Command::new(&program)
            };
            let _ = command
                .arg("-D")
                .arg(&data)
                .args(["-m", "immediate", "-w", "stop"])
                .output();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A small tmpfs of the test's own, to hold a database whose disk fills up. Unmounted and
/// removed when dropped.
pub struct SmallDisk {
    pub path: std::path::PathBuf,
}

impl SmallDisk {
    /// Mounts a tmpfs of `megabytes`; `Err` says why it cannot here (not root, no mount).
    pub fn mount(megabytes: u32) -> Result<SmallDisk, String> {
        let path =
            std::env::temp_dir().join(format!("itsm-disk-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&path).map_err(|e| format!("mkdir: {e}"))?;
        let output = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m,mode=0700")])
            .arg("tmpfs")
            .arg(&path)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !output.status.success() {
            let _ = std::fs::remove_dir(&path);
            return Err(format!(
                "cannot mount a tmpfs: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        Ok(SmallDisk { path })
    }

    /// Writes a file until the disk is full; its path.
    pub fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let filler = self.path.join("filler");
        let mut file = std::fs::File::create(&filler).expect("the filler file");
        let chunk = vec![0xA5u8; 64 * 1024];
        loop {
            match file.write(&chunk) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        // The last partial pages too.
        while file.write(&chunk[..512]).is_ok_and(|n| n > 0) {}
        filler
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A file made read-only to the `itsm` process: immutable (`chattr +i`) when running as root,
/// whom permissions do not stop, else without write permission. Writable again when dropped.
pub struct ReadOnlyFile {
    path: std::path::PathBuf,
    as_root: bool,
}

impl ReadOnlyFile {
    /// `Err` says why it cannot be done here (no chattr, a file system without the flag).
    pub fn make(path: &std::path::Path) -> Result<ReadOnlyFile, String> {
        let as_root = running_as_root();
        if as_root {
            let output = std::process::Command::new("chattr")
                .arg("+i")
                .arg(path)
                .output()
                .map_err(|e| format!("cannot run chattr: {e}"))?;
            if !output.status.success() {
                return Err(format!(
                    "chattr +i failed: {}",
                    String::from_utf8_lossy(&output.stderr).trim()
                ));
            }
        } else {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o400))
                .map_err(|e| format!("chmod: {e}"))?;
        }
        Ok(ReadOnlyFile {
            path: path.to_owned(),
            as_root,
        })
    }

    /// Makes the file writable again.
    pub fn release(self) {}
}

impl Drop for ReadOnlyFile {
    fn drop(&mut self) {
        if self.as_root {
            let _ = std::process::Command::new("chattr")
                .arg("-i")
                .arg(&self.path)
                .status();
        } else {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&self.path, std::fs::Permissions::from_mode(0o600));
        }
    }
}
