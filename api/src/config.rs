//! Configuration from the environment (12-factor, `ITSM_` prefix). The README has the table.

use std::env;
use std::str::FromStr;

use persistence::DatabaseConfig;

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
        }
    }
}

impl Config {
    pub fn from_env() -> Result<Self, String> {
        let defaults = Config::default();
        let text = |name: &str| env::var(name).ok().filter(|v| !v.trim().is_empty());
        let jwt_secret = text("ITSM_JWT_SECRET");
        if jwt_secret.as_ref().is_some_and(|s| s.len() < 32) {
            return Err("ITSM_JWT_SECRET must be at least 32 characters".into());
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
        })
    }
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
