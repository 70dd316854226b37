//! Configuration from the environment (12-factor, `ITSM_` prefix). The README has the table.

use std::env;
use std::str::FromStr;
use std::time::Duration;

use persistence::DatabaseConfig;

use crate::throttle::{LoginLimits, PasswordHashing};

pub struct Config {
    pub database: DatabaseConfig,
    /// `ITSM_BIND`, default `127.0.0.1:8080`; port 0 picks a free port.
    pub bind: String,
    /// `ITSM_ADMIN_PASSWORD`: the bootstrap admin's password when the user table is empty.
    pub admin_password: Option<String>,
    /// `ITSM_CORS_ORIGINS`: comma-separated origins allowed to call the API from a browser.
    pub cors_origins: Vec<String>,
    /// `ITSM_JWT_SECRET`: overrides the signing secret stored in the database.
    pub jwt_secret: Option<String>,
    /// `ITSM_TOKEN_TTL_SECONDS`: access token lifetime, default 3600.
    pub token_ttl_seconds: i64,
    /// `ITSM_MAX_BODY_BYTES`: largest accepted request body, default 1 MiB.
    pub max_body_bytes: usize,
    /// `ITSM_WORKERS`: HTTP worker threads, default one per core.
    pub workers: Option<usize>,
    /// `ITSM_AUTO_CLOSE_AFTER_SECONDS`: resolved incidents close by themselves after this long,
    /// default 7 days.
    pub auto_close_after_seconds: i64,
    /// `ITSM_JOB_INTERVAL_SECONDS`: how often background jobs run, default 60.
    pub job_interval_seconds: u64,
    /// `ITSM_LOGIN_FREE_FAILURES` (per username, default 5),
    /// `ITSM_LOGIN_FREE_FAILURES_PER_ADDRESS` (default 50) and `ITSM_LOGIN_MAX_DELAY_SECONDS`
    /// (default 900): failed sign-ins past the free ones make the next attempt wait 1 s,
    /// doubling up to the maximum.
    pub login: LoginLimits,
    /// `ITSM_PASSWORD_HASH_CONCURRENCY`: password hashes at once, default one per core.
    pub password_hash_concurrency: usize,
    /// `ITSM_PASSWORD_HASH_QUEUE`: sign-ins that may wait for a hash before 503, default 16.
    pub password_hash_queue: usize,
    /// `ITSM_HSTS_SECONDS`: set when clients reach the service over TLS (through a proxy): every
    /// response then carries `Strict-Transport-Security` with this max-age. Unset: none.
    pub hsts_seconds: Option<u64>,
    /// `ITSM_RATE_LIMIT_PER_CREDENTIAL` and `ITSM_RATE_LIMIT_PER_ADDRESS`: requests per window
    /// (`ITSM_RATE_LIMIT_WINDOW_SECONDS`, default 60); unset: no limit.
    pub rate_limit_per_credential: Option<u32>,
    pub rate_limit_per_address: Option<u32>,
    pub rate_limit_window_seconds: u64,
    /// `ITSM_SLA_INTERVAL_MS`: how often the SLA worker looks for warnings and breaches that
    /// fell due, default 500.
    pub sla_interval_ms: u64,
    /// Where the service reads the time: the system clock; tests set their own.
    pub clock: persistence::Clock,
    /// `ITSM_ALERT_FLAP_WINDOW_SECONDS`: an alert firing again within this long after it
    /// resolved is flapping and reopens its incident, default 900.
    pub alert_flap_window_seconds: i64,
    /// `ITSM_ALERT_QUEUE`: alert intake requests in progress at once; past it, 429 with
    /// `Retry-After`. Default 1024.
    pub alert_queue: usize,
    /// `ITSM_WEBHOOK_*`: outbound webhook delivery (the README has the table).
    pub webhooks: WebhookSettings,
}

/// How outbound webhooks are delivered.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// `ITSM_WEBHOOK_WORKER` (default true): whether this node runs the delivery worker.
    pub worker: bool,
    /// `ITSM_WEBHOOK_ALLOWED_NETWORKS`: comma-separated networks (`127.0.0.0/8,10.0.0.0/8`)
    /// that targets may point at although loopback, private or link-local. Default: none.
    pub allowed_networks: Vec<domain::webhooks::Network>,
    /// `ITSM_WEBHOOK_POLL_MS` (default 250): how often an idle worker looks for work.
    pub poll_interval: Duration,
    /// `ITSM_WEBHOOK_TIMEOUT_MS` (default 10000): one attempt's time limit.
    pub timeout: Duration,
    /// `ITSM_WEBHOOK_MAX_ATTEMPTS` (default 8), `ITSM_WEBHOOK_BACKOFF_BASE_MS` (default 10000)
    /// and `ITSM_WEBHOOK_BACKOFF_MAX_MS` (default 3600000): retries with exponential backoff
    /// and jitter, then the delivery is dead-lettered.
    pub retry: domain::webhooks::RetryPolicy,
    /// `ITSM_WEBHOOK_DISABLE_AFTER` (default 50): failed attempts in a row that turn a
    /// subscription off.
    pub disable_after: i32,
    /// `ITSM_WEBHOOK_CONCURRENCY` (default 64): attempts in flight per node.
    pub concurrency: usize,
}

impl WebhookSettings {
    /// How long a claimed delivery stays with the node that claimed it: longer than an
    /// attempt may take, so a live node never loses its claim, and short enough that a dead
    /// node's claims are soon taken over.
    pub fn lease(&self) -> Duration {
        self.timeout * 2 + Duration::from_secs(5)
    }
}

impl Default for WebhookSettings {
    fn default() -> Self {
        Self {
            worker: true,
            allowed_networks: Vec::new(),
            poll_interval: Duration::from_millis(250),
            timeout: Duration::from_secs(10),
            retry: domain::webhooks::RetryPolicy {
                base: Duration::from_secs(10),
                max: Duration::from_secs(3600),
                max_attempts: 8,
            },
            disable_after: 50,
            concurrency: 64,
        }
    }
}

impl WebhookSettings {
    fn from_env() -> Result<Self, String> {
        let defaults = Self::default();
        let millis = |name: &str, default: Duration, range: std::ops::RangeInclusive<u64>| {
            number(name, default.as_millis() as u64, range).map(Duration::from_millis)
        };
        let allowed_networks = match env::var("ITSM_WEBHOOK_ALLOWED_NETWORKS") {
            Ok(text) => domain::webhooks::parse_networks(&text)
                .map_err(|e| format!("ITSM_WEBHOOK_ALLOWED_NETWORKS: {e}"))?,
            Err(_) => Vec::new(),
        };
        Ok(Self {
            worker: match env::var("ITSM_WEBHOOK_WORKER")
                .ok()
                .as_deref()
                .map(str::trim)
            {
                None | Some("" | "true" | "1") => true,
                Some("false" | "0") => false,
                Some(_) => return Err("ITSM_WEBHOOK_WORKER must be true or false".into()),
            },
            allowed_networks,
            poll_interval: millis("ITSM_WEBHOOK_POLL_MS", defaults.poll_interval, 10..=60_000)?,
            timeout: millis("ITSM_WEBHOOK_TIMEOUT_MS", defaults.timeout, 100..=120_000)?,
            retry: domain::webhooks::RetryPolicy {
                base: millis(
                    "ITSM_WEBHOOK_BACKOFF_BASE_MS",
                    defaults.retry.base,
                    1..=86_400_000,
                )?,
                max: millis(
                    "ITSM_WEBHOOK_BACKOFF_MAX_MS",
                    defaults.retry.max,
                    1..=7 * 86_400_000,
                )?,
                max_attempts: number(
                    "ITSM_WEBHOOK_MAX_ATTEMPTS",
                    defaults.retry.max_attempts,
                    1..=100,
                )?,
            },
            disable_after: number(
                "ITSM_WEBHOOK_DISABLE_AFTER",
                defaults.disable_after,
                1..=1_000_000,
            )?,
            concurrency: number("ITSM_WEBHOOK_CONCURRENCY", defaults.concurrency, 1..=1024)?,
        })
    }
}

// Secrets stay out of logs: Debug shows only whether they are set.
impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("database", &self.database.url.as_ref().map(|_| "[set]"))
            .field("bind", &self.bind)
            .field(
                "admin_password",
                &self.admin_password.as_ref().map(|_| "[set]"),
            )
            .field("cors_origins", &self.cors_origins)
            .field("jwt_secret", &self.jwt_secret.as_ref().map(|_| "[set]"))
            .field("token_ttl_seconds", &self.token_ttl_seconds)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("workers", &self.workers)
            .field("auto_close_after_seconds", &self.auto_close_after_seconds)
            .field("job_interval_seconds", &self.job_interval_seconds)
            .field("login", &self.login)
            .field("password_hash_concurrency", &self.password_hash_concurrency)
            .field("password_hash_queue", &self.password_hash_queue)
            .field("hsts_seconds", &self.hsts_seconds)
            .field("rate_limit_per_credential", &self.rate_limit_per_credential)
            .field("rate_limit_per_address", &self.rate_limit_per_address)
            .field("rate_limit_window_seconds", &self.rate_limit_window_seconds)
            .field("alert_flap_window_seconds", &self.alert_flap_window_seconds)
            .field("alert_queue", &self.alert_queue)
            .field("webhooks", &self.webhooks)
            .finish()
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            database: DatabaseConfig::default(),
            bind: "127.0.0.1:8080".into(),
            admin_password: None,
            cors_origins: Vec::new(),
            jwt_secret: None,
            token_ttl_seconds: 3600,
            max_body_bytes: 1 << 20,
            workers: None,
            auto_close_after_seconds: 7 * 24 * 3600,
            job_interval_seconds: 60,
            login: LoginLimits {
                free_failures_per_user: 5,
                free_failures_per_address: 50,
                max_delay: Duration::from_secs(900),
            },
            password_hash_concurrency: PasswordHashing::default_concurrency(),
            password_hash_queue: 16,
            hsts_seconds: None,
            rate_limit_per_credential: None,
            rate_limit_per_address: None,
            rate_limit_window_seconds: 60,
            sla_interval_ms: 500,
            clock: persistence::Clock::system(),
            alert_flap_window_seconds: 900,
            alert_queue: 1024,
            webhooks: WebhookSettings::default(),
        }
    }
}

impl Config {
    pub fn from_env() -> Result<Self, String> {
        let defaults = Config::default();
        let text = |name: &str| env::var(name).ok().filter(|v| !v.trim().is_empty());
        // Set but blank is a mistake, not a request for the stored secret.
        let jwt_secret = env::var("ITSM_JWT_SECRET").ok();
        if let Some(secret) = &jwt_secret {
            check_signing_secret(secret)?;
        }
        Ok(Self {
            database: DatabaseConfig {
                url: text("ITSM_DATABASE_URL"),
                read_pool_size: number(
                    "ITSM_DB_POOL_SIZE",
                    defaults.database.read_pool_size,
                    1..=256,
                )?,
                max_batch: number("ITSM_WRITE_BATCH", defaults.database.max_batch, 1..=1024)?,
                writers: number("ITSM_DB_WRITERS", defaults.database.writers, 1..=64)?,
                search_time_limit: std::time::Duration::from_millis(number(
                    "ITSM_SEARCH_TIMEOUT_MS",
                    defaults.database.search_time_limit.as_millis() as u64,
                    10..=60_000,
                )?),
            },
            bind: text("ITSM_BIND").unwrap_or(defaults.bind),
            admin_password: text("ITSM_ADMIN_PASSWORD"),
            cors_origins: text("ITSM_CORS_ORIGINS")
                .map(|v| {
                    v.split(',')
                        .map(|o| o.trim().to_owned())
                        .filter(|o| !o.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
            jwt_secret,
            token_ttl_seconds: number(
                "ITSM_TOKEN_TTL_SECONDS",
                defaults.token_ttl_seconds,
                60..=86_400,
            )?,
            max_body_bytes: number(
                "ITSM_MAX_BODY_BYTES",
                defaults.max_body_bytes,
                1024..=64 << 20,
            )?,
            workers: text("ITSM_WORKERS")
                .map(|_| number("ITSM_WORKERS", 1, 1..=512))
                .transpose()?,
            auto_close_after_seconds: number(
                "ITSM_AUTO_CLOSE_AFTER_SECONDS",
                defaults.auto_close_after_seconds,
                1..=366 * 24 * 3600,
            )?,
            job_interval_seconds: number(
                "ITSM_JOB_INTERVAL_SECONDS",
                defaults.job_interval_seconds,
                1..=3600,
            )?,
            login: LoginLimits {
                free_failures_per_user: number(
                    "ITSM_LOGIN_FREE_FAILURES",
                    defaults.login.free_failures_per_user,
                    1..=1000,
                )?,
                free_failures_per_address: number(
                    "ITSM_LOGIN_FREE_FAILURES_PER_ADDRESS",
                    defaults.login.free_failures_per_address,
                    1..=1_000_000,
                )?,
                max_delay: Duration::from_secs(number(
                    "ITSM_LOGIN_MAX_DELAY_SECONDS",
                    defaults.login.max_delay.as_secs(),
                    1..=86_400,
                )?),
            },
            password_hash_concurrency: number(
                "ITSM_PASSWORD_HASH_CONCURRENCY",
                defaults.password_hash_concurrency,
                1..=256,
            )?,
            password_hash_queue: number(
                "ITSM_PASSWORD_HASH_QUEUE",
                defaults.password_hash_queue,
                0..=100_000,
            )?,
            hsts_seconds: text("ITSM_HSTS_SECONDS")
                .map(|_| number("ITSM_HSTS_SECONDS", 0, 0..=63_072_000))
                .transpose()?,
            rate_limit_per_credential: text("ITSM_RATE_LIMIT_PER_CREDENTIAL")
                .map(|_| number("ITSM_RATE_LIMIT_PER_CREDENTIAL", 1, 1..=10_000_000))
                .transpose()?,
            rate_limit_per_address: text("ITSM_RATE_LIMIT_PER_ADDRESS")
                .map(|_| number("ITSM_RATE_LIMIT_PER_ADDRESS", 1, 1..=10_000_000))
                .transpose()?,
            rate_limit_window_seconds: number(
                "ITSM_RATE_LIMIT_WINDOW_SECONDS",
                defaults.rate_limit_window_seconds,
                1..=86_400,
            )?,
            sla_interval_ms: number(
                "ITSM_SLA_INTERVAL_MS",
                defaults.sla_interval_ms,
                10..=60_000,
            )?,
            clock: persistence::Clock::system(),
            alert_flap_window_seconds: number(
                "ITSM_ALERT_FLAP_WINDOW_SECONDS",
                defaults.alert_flap_window_seconds,
                0..=7 * 24 * 3600,
            )?,
            alert_queue: number("ITSM_ALERT_QUEUE", defaults.alert_queue, 1..=1_000_000)?,
            webhooks: WebhookSettings::from_env()?,
        })
    }
}

/// A configured signing secret must be long and varied: anyone who can guess it can sign in as
/// anyone. A stored secret is generated and needs no check.
pub fn check_signing_secret(secret: &str) -> Result<(), String> {
    if secret.trim().is_empty() {
        return Err(
            "ITSM_JWT_SECRET is set but blank; unset it to use the generated secret".into(),
        );
    }
    if secret.chars().count() < 32 {
        return Err("ITSM_JWT_SECRET must be at least 32 characters".into());
    }
    let mut distinct: Vec<char> = secret.chars().collect();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() < 12 {
        return Err(
            "ITSM_JWT_SECRET is too weak: use at least 12 different characters (random bytes)"
                .into(),
        );
    }
    Ok(())
}

fn number<T>(name: &str, default: T, range: std::ops::RangeInclusive<T>) -> Result<T, String>
where
    T: FromStr + PartialOrd + std::fmt::Display + Copy,
{
    match env::var(name) {
        Err(_) => Ok(default),
        Ok(value) => value
            .trim()
            .parse::<T>()
            .ok()
            .filter(|v| range.contains(v))
            .ok_or_else(|| {
                format!(
                    "{name} must be a number from {} to {}",
                    range.start(),
                    range.end()
                )
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blank_short_and_repetitive_signing_secrets_are_refused() {
        assert!(check_signing_secret("   ").is_err());
        assert!(check_signing_secret("too-short-a-secret").is_err());
        assert!(check_signing_secret(&"ab".repeat(32)).is_err());
        assert!(check_signing_secret("integration-tests-known-signing-secret-0123456789").is_ok());
    }
}
