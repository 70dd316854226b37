//! What every handler shares, in its own module so that route modules need not import the app
//! assembler (and so not each other).

use std::sync::Arc;

use domain::change::Change;
use domain::incident::Incident;
use domain::problem::Problem;
use domain::routing::AssignmentRule;
use domain::sla_timers::SlaRules;
use domain::ApiToken;
use persistence::{Database, Lookups, ServeLock, WriteContext};

use crate::auth::{Caller, TokenKeys, UserAccess};
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
    pub change_lookups: Lookups<Change>,
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
    pub search_slot_count: usize,
    pub token_uses: crate::auth::TokenUses,
    /// Where the time comes from (the system clock but in tests).
    pub clock: persistence::Clock,
    /// The SLA policies in force, for the writes of tickets.
    pub sla_rules: RecentReads<(), Arc<SlaRules>>,
    /// The alert rules in the order they are tried, read at most once a second.
    pub alert_rules: RecentReads<(), Arc<Vec<domain::alert::AlertRule>>>,
    /// Alert intake requests in progress; none waits for a permit (429 instead).
    pub alert_intake: tokio::sync::Semaphore,
    /// Alert requests waiting for the write path, taken together.
    pub alert_queue: crate::usecases::alerts::Intake,
    /// A resolved alert firing again within this is flapping (`ITSM_ALERT_FLAP_WINDOW_SECONDS`).
    pub alert_flap_window: chrono::Duration,
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

    /// The SLA policies in force and their calendars' current versions, read at most once a
    /// second (and at once after a change made here).
    pub async fn sla_rules(&self) -> ApiResult<Arc<SlaRules>> {
        self.sla_rules
            .get_or_read(&(), || async {
                let rules = self.db.read(persistence::sla::rules).await?;
                Ok::<_, ApiError>(Arc::new(rules))
            })
            .await
    }

    /// The write context of a ticket write: the caller, and the SLA policies its timers follow.
    pub async fn ticket_context(&self, caller: &Caller) -> ApiResult<WriteContext> {
        let mut ctx = caller.write_context();
        ctx.sla = Some(self.sla_rules().await?);
        Ok(ctx)
    }

    /// Word searches running now.
    pub fn search_slots_in_use(&self) -> usize {
        self.search_slot_count
            .saturating_sub(self.searches.available_permits())
    }

    /// The number of search slots for `read_connections`.
    pub fn search_slots(read_connections: u32) -> usize {
        (read_connections as usize / 2).max(1)
    }
}
