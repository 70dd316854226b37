//! What every handler shares, in its own module so that route modules need not import the app
//! assembler (and so not each other).

use std::sync::Arc;

use domain::incident::Incident;
use domain::problem::Problem;
use domain::routing::AssignmentRule;
use domain::ApiToken;
use persistence::{Database, Lookups, ServeLock};

use crate::auth::{TokenKeys, UserAccess};
use crate::openapi::RouteTable;
use crate::recent::RecentReads;

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
}
