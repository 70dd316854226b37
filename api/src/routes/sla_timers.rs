//! `/api/v1/sla-timers`: the SLA timers of every ticket, soonest due first, each with the
//! timeline that explains it, and their recalculation under a calendar's current version.

use actix_web::http::StatusCode;
use actix_web::{get, post, web, HttpRequest, HttpResponse};
use chrono::NaiveDateTime;
use domain::sla::{SlaMetric, TimerState};
use domain::sla_timers::{TimelineLine, TimerRecord};
use domain::ticket::TicketKind;
use persistence::sla_timers::{self, TimerFilter};

use crate::auth::{Admins, Authorized, FeedReaders};
use crate::concurrency::with_etag;
use crate::error::{not_found_as, ApiError, ApiResult};
use crate::listing::{Page, QueryParams, PAGE_PARAMS};
use crate::state::AppState;

/// List SLA timers across tickets, soonest due first (paused and stopped ones last).
#[utoipa::path(
    tag = "service-levels", operation_id = "list_sla_timers",
    params(
        ("state" = Option<TimerState>, Query, description = "Only timers in this state"),
        ("due_before" = Option<String>, Query, description = "Only timers due before this instant (RFC 3339)"),
        ("ticket_type" = Option<String>, Query, description = "`incident` or `problem`"),
        ("metric" = Option<SlaMetric>, Query),
        ("limit" = Option<i64>, Query), ("cursor" = Option<String>, Query),
    ),
    responses((status = 200, body = Page<TimerRecord>), (status = 403, body = crate::error::Problem),
              (status = 422, body = crate::error::Problem)),
)]
#[get("/api/v1/sla-timers")]
pub async fn list_timers(
    _caller: Authorized<FeedReaders>,
    state: web::Data<AppState>,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    let params = QueryParams::parse(
        &req,
        &[
            &PAGE_PARAMS[..],
            &["state", "due_before", "ticket_type", "metric"],
        ]
        .concat(),
    )?;
    let ticket_type = params
        .parsed::<TicketKind>("ticket_type", "incident or problem")?
        .map(|kind| match kind.has_slas() {
            true => Ok(kind),
            false => Err(ApiError::invalid("ticket_type", "incident or problem")),
        })
        .transpose()?;
    let filter = TimerFilter {
        state: params.parsed("state", &format!("one of {}", TimerState::names()))?,
        due_before: params.timestamp("due_before")?.map(|at| at.naive_utc()),
        ticket_type,
        metric: params.parsed("metric", &format!("one of {}", SlaMetric::names()))?,
    };
    let page = params.page::<(NaiveDateTime, String)>()?;
    let rules = state.sla_rules().await?;
    let now = state.clock.now().and_utc();
    let slice = state
        .db
        .read(move |conn| {
            sla_timers::list(
                conn,
                Some(&rules),
                &filter,
                page.cursor.as_ref(),
                page.limit,
                now,
            )
        })
        .await?;
    Ok(Page::from_slice(slice, |(_, position)| position.clone())
        .map(|(timer, _)| timer)
        .respond(&req))
}

/// Get an SLA timer, read now.
#[utoipa::path(
    tag = "service-levels", operation_id = "get_sla_timer",
    params(("id" = String, Path)),
    responses((status = 200, body = TimerRecord, headers(("ETag" = String))), (status = 404, body = crate::error::Problem)),
)]
#[get("/api/v1/sla-timers/{id}")]
pub async fn get_timer(
    _caller: Authorized<FeedReaders>,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let id = id.into_inner();
    let rules = state.sla_rules().await?;
    let now = state.clock.now().and_utc();
    let timer = state
        .db
        .read(move |conn| sla_timers::get(conn, Some(&rules), &id, now))
        .await
        .map_err(|e| not_found_as(e, "SLA timer"))?;
    Ok(with_etag(StatusCode::OK, timer.version, &timer))
}

/// Every line of a timer's life: start, pauses, resumes, retargets, policy changes,
/// recalculations, warnings, breaches, escalations, stop; each with its reason, the audit entry
/// of the change that caused it, and the calendar version it was read under.
#[utoipa::path(
    tag = "service-levels", operation_id = "sla_timer_timeline",
    params(("id" = String, Path)),
    responses((status = 200, body = Page<TimelineLine>), (status = 404, body = crate::error::Problem)),
)]
#[get("/api/v1/sla-timers/{id}/timeline")]
pub async fn timeline(
    _caller: Authorized<FeedReaders>,
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
) -> ApiResult<HttpResponse> {
    QueryParams::parse(&req, &[])?;
    let id = id.into_inner();
    let lines = state
        .db
        .read(move |conn| sla_timers::timeline(conn, &id))
        .await
        .map_err(|e| not_found_as(e, "SLA timer"))?;
    Ok(Page {
        items: lines,
        next_cursor: None,
    }
    .respond(&req))
}

/// Read a running or paused timer again under its calendar's current version (audited; a line
/// in its timeline). A stopped timer: 409.
#[utoipa::path(
    tag = "service-levels", operation_id = "recalculate_sla_timer",
    params(("id" = String, Path)),
    responses((status = 200, body = TimerRecord, headers(("ETag" = String))), (status = 403, body = crate::error::Problem),
              (status = 404, body = crate::error::Problem), (status = 409, body = crate::error::Problem)),
)]
#[post("/api/v1/sla-timers/{id}/recalculate")]
pub async fn recalculate(
    caller: Authorized<Admins>,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let id = id.into_inner();
    let ctx = state.ticket_context(&caller).await?;
    let timer = state
        .db
        .write(move |conn| sla_timers::recalculate(conn, &ctx, &id))
        .await
        .map_err(|e| not_found_as(e, "SLA timer"))?;
    Ok(with_etag(StatusCode::OK, timer.version, &timer))
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(list_timers)
        .service(get_timer)
        .service(timeline)
        .service(recalculate);
}
