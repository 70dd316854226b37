//! What every handler shares, in its own module so that route modules need not import the app
//! assembler (and so not each other).

use std::sync::Arc;

use domain::incident::Incident;
use domain::problem::Problem;
use domain::routing::AssignmentRule;
use domain::ApiToken;
use persistence::{Database, Lookups, ServeLock};

use crate::auth::{TokenKeys, UserAccess};
use crate::error::{ApiError, ApiResult};
use crate::openapi::RouteTable;
use crate::recent::RecentReads;
use crate::throttle::{LoginThrottle, PasswordHashing};

/// What every handler shares.
pub struct AppState {
    pub db: Database,
    pub tokens: TokenKeys,
    pub routes: RouteTable,
    pub access: RecentReads<String, UserAccess>,
    pub api_tokens: RecentReads<String, ApiToken>,
    pub routing_rules: RecentReads<(), Arc<Vec<AssignmentRule>>>,
    pub incident_lookups: Lookups<Incident>,
    pub problem_lookups: Lookups<Problem>,
    /// Held while serving an embedded database, so that a restore cannot replace it.
    pub serve_lock: Option<ServeLock>,
    /// Set on SIGTERM or SIGINT: requests still arriving are answered 503 while those in
    /// flight finish.
    pub stopping: std::sync::atomic::AtomicBool,
    pub login_throttle: LoginThrottle,
    pub password_hashing: PasswordHashing,
    /// Word searches at once: each may read and sort every match, so they get half the read
    /// connections at most and other reads keep the rest.
    pub searches: tokio::sync::Semaphore,
    pub token_uses: crate::auth::TokenUses,
    /// How webhooks are delivered, and the client test messages are sent with.
    pub webhooks: crate::config::WebhookSettings,
    pub webhook_sender: crate::webhook_delivery::Sender,
}

/// How long a word search waits for a slot before 503.
const SEARCH_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

impl AppState {
    /// The slot a word search holds while it runs; 503 with `Retry-After` when searches have
    /// held every slot for longer than a moment.
    pub async fn search_slot(&self) -> ApiResult<tokio::sync::SemaphorePermit<'_>> {
        match tokio::time::timeout(SEARCH_WAIT, self.searches.acquire()).await {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_)) => Err(ApiError::Unavailable("the service is stopping".into())),
            Err(_) => Err(ApiError::Unavailable(
                "too many searches at once; retry shortly".into(),
            )),
        }
    }

    /// The number of search slots for `read_connections`.
    pub fn search_slots(read_connections: u32) -> usize {
        (read_connections as usize / 2).max(1)
    }
}
