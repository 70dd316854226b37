//! `GET /api/v1/configuration-items/{id}/tickets`: the open incidents and problems on an item,
//! through its own links or as their business service.

use actix_web::{get, web, HttpResponse};
use domain::incident::{Incident, IncidentState};
use domain::problem::{Problem, ProblemState};
use persistence::incidents::{self, IncidentFilter};
use persistence::problems::{self, ProblemFilter};
use persistence::tickets::Sort;
use persistence::{cmdb, DbConnection, StoreError};
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::{Authorized, CmdbReaders};
use crate::error::{not_found_as, ApiResult};
use crate::state::AppState;

/// The most tickets of each type listed for one item.
const MAX_TICKETS: i64 = 200;

#[derive(Debug, Serialize, ToSchema)]
pub struct ItemTickets {
    /// Open incidents, newest first.
    pub incidents: Vec<Incident>,
    /// Open problems, newest first.
    pub problems: Vec<Problem>,
    /// True when an item has more open tickets of a type than are listed (200).
    pub truncated: bool,
}

/// Newest first, each once: `found` from the item's links and from its role as a service.
fn merged<T>(
    found: [persistence::Slice<T>; 2],
    id: impl Fn(&T) -> &str,
    created: impl Fn(&T) -> chrono::DateTime<chrono::Utc>,
) -> (Vec<T>, bool) {
    let truncated = found.iter().any(|slice| slice.more);
    let mut all: Vec<T> = Vec::new();
    for ticket in found.into_iter().flat_map(|slice| slice.items) {
        if !all.iter().any(|known| id(known) == id(&ticket)) {
            all.push(ticket);
        }
    }
    all.sort_by_key(|ticket| std::cmp::Reverse(created(ticket)));
    let truncated = truncated || all.len() > MAX_TICKETS as usize;
    all.truncate(MAX_TICKETS as usize);
    (all, truncated)
}

fn open_tickets(conn: &mut DbConnection, item: &str) -> Result<ItemTickets, StoreError> {
    let newest = Sort::NEWEST_FIRST;
    let open_incidents: Vec<IncidentState> = IncidentState::ALL
        .iter()
        .copied()
        .filter(|s| s.is_open())
        .collect();
    let incident_filter = |linked: bool| IncidentFilter {
        states: open_incidents.clone(),
        configuration_item: linked.then(|| item.to_owned()),
        service: (!linked).then(|| item.to_owned()),
        ..IncidentFilter::default()
    };
    let found = [
        incidents::list(conn, &incident_filter(true), newest, None, MAX_TICKETS)?,
        incidents::list(conn, &incident_filter(false), newest, None, MAX_TICKETS)?,
    ];
    let (incidents, incidents_truncated) = merged(found, |i| &i.id, |i| i.created_at);
    let open_problems: Vec<ProblemState> = ProblemState::ALL
        .iter()
        .copied()
        .filter(|s| s.is_open())
        .collect();
    let problem_filter = |linked: bool| ProblemFilter {
        states: open_problems.clone(),
        configuration_item: linked.then(|| item.to_owned()),
        service: (!linked).then(|| item.to_owned()),
        ..ProblemFilter::default()
    };
    let found = [
        problems::list(conn, &problem_filter(true), newest, None, MAX_TICKETS)?,
        problems::list(conn, &problem_filter(false), newest, None, MAX_TICKETS)?,
    ];
    let (problems, problems_truncated) = merged(found, |p| &p.id, |p| p.created_at);
    Ok(ItemTickets {
        incidents,
        problems,
        truncated: incidents_truncated || problems_truncated,
    })
}

/// The open incidents and problems on a configuration item.
#[utoipa::path(
    tag = "cmdb", operation_id = "configuration_item_tickets",
    params(("id" = String, Path)),
    responses((status = 200, body = ItemTickets), (status = 403, body = crate::error::Problem),
              (status = 404, body = crate::error::Problem)),
)]
#[get("/api/v1/configuration-items/{id}/tickets")]
pub async fn item_tickets(
    _caller: Authorized<CmdbReaders>,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let id = id.into_inner();
    let tickets = state
        .db
        .read(move |conn| -> Result<ItemTickets, StoreError> {
            cmdb::items::get(conn, &id)?;
            open_tickets(conn, &id)
        })
        .await
        .map_err(|e| not_found_as(e, "configuration item"))?;
    Ok(HttpResponse::Ok().json(tickets))
}
