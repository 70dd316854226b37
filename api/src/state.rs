//! What every handler shares, in its own module so that route modules need not import the app
//! assembler (and so not each other).

use std::sync::Arc;

use domain::incident::Incident;
use domain::problem::Problem;
use domain::routing::AssignmentRule;
use domain::ApiToken;
use persistence::{Database, Lookups};

use crate::auth::{TokenKeys, UserAccess};
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
    pub login_throttle: LoginThrottle,
    pub password_hashing: PasswordHashing,
}
