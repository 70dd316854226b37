//! Monitoring intake: `/api/v1/integrations/alertmanager` (the Alertmanager webhook),
//! `/api/v1/alerts` (generic alerts, and the stored alerts), and `/api/v1/alert-rules`.
//!
//! Only an API token of the integration role, or an admin, may send alerts: monitoring is a
//! machine, and what it sends opens incidents for the token's creator.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::{delete, get, post, put, web, FromRequest, HttpRequest, HttpResponse};
use domain::alert::{self, Alert, AlertRule, AlertStatus, Severity};
use domain::priority::{Impact, Urgency};
use domain::Role;
use persistence::alerts::{self as store, AlertFilter, RuleFields};
use persistence::{groups, DbConnection};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use validator::{Validate, ValidationErrors};

use crate::auth::{authenticate, probe_stops, Admins, Authorized, Caller, CallerKind, FeedReaders};
use crate::concurrency::{created, if_match, with_etag};
use crate::error::{not_found_as, unknown_reference, ApiError, ApiResult};
use crate::json_body::ValidJson;
use crate::listing::{Page, QueryParams, PAGE_PARAMS};
use crate::recent::RecentReads;
use crate::state::AppState;
use crate::usecases::alerts::{self as usecase, Received};

/// A sender of alerts: an API token of the integration role, or an admin.
pub struct AlertSender(pub Caller);

impl FromRequest for AlertSender {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = ApiResult<Self>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let caller = authenticate(&req).await?;
            let integration_token =
                caller.kind == CallerKind::ApiToken && caller.roles.contains(&Role::Integration);
            if !(integration_token || caller.is_admin()) {
                return Err(ApiError::Forbidden(
                    "alerts are sent with an API token of the integration role (or by an admin)"
                        .into(),
                ));
            }
            probe_stops(&req)?;
            Ok(AlertSender(caller))
        })
    }
}

/// Any JSON document, parsed and checked by the domain so that errors name its fields.
#[derive(Debug, Deserialize)]
#[serde(transparent)]
pub struct Document(serde_json::Value);

impl Validate for Document {
    fn validate(&self) -> Result<(), ValidationErrors> {
        Ok(())
    }
}

/// What became of each alert of the request, in the order sent.
#[derive(Debug, Serialize, ToSchema)]
pub struct IntakeResult {
    pub alerts: Vec<Received>,
}

/// The Alertmanager webhook payload (version 4), as Alertmanager sends it.
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)]
#[serde(rename_all = "camelCase")]
pub struct AlertmanagerPayload {
    #[schema(example = "4")]
    version: Option<String>,
    group_key: Option<String>,
    truncated_alerts: Option<i64>,
    /// `firing` or `resolved`.
    status: String,
    receiver: Option<String>,
    group_labels: Option<std::collections::BTreeMap<String, String>>,
    common_labels: Option<std::collections::BTreeMap<String, String>>,
    common_annotations: Option<std::collections::BTreeMap<String, String>>,
    #[serde(rename = "externalURL")]
    #[schema(rename = "externalURL")]
    external_url: Option<String>,
    alerts: Vec<AlertmanagerAlert>,
}

/// One alert of an Alertmanager group.
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)]
#[serde(rename_all = "camelCase")]
pub struct AlertmanagerAlert {
    /// `firing` or `resolved`.
    status: String,
    labels: std::collections::BTreeMap<String, String>,
    annotations: Option<std::collections::BTreeMap<String, String>>,
    starts_at: String,
    /// `0001-01-01T00:00:00Z` (Go's zero time) while firing.
    ends_at: Option<String>,
    #[serde(rename = "generatorURL")]
    #[schema(rename = "generatorURL")]
    generator_url: Option<String>,
    /// The alert's identity in Alertmanager: its dedup key here.
    fingerprint: String,
}

/// A generic alert.
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)]
pub struct GenericAlert {
    #[schema(example = "zabbix")]
    source: String,
    /// With the source, identifies the alert: repeats of a key are deduplicated.
    dedup_key: String,
    /// Default `warning`.
    severity: Option<Severity>,
    summary: String,
    description: Option<String>,
    /// Hostnames or instances concerned, matched against the CMDB's hostnames.
    resources: Option<Vec<String>>,
    labels: Option<std::collections::BTreeMap<String, String>>,
    /// Default `firing`.
    status: Option<AlertStatus>,
    /// When it fired (or resolved), RFC 3339.
    time: Option<String>,
}

/// A batch of generic alerts.
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)]
pub struct GenericAlertBatch {
    alerts: Vec<GenericAlert>,
}

/// One generic alert, or a batch.
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)]
#[serde(untagged)]
pub enum GenericAlerts {
    One(GenericAlert),
    Batch(GenericAlertBatch),
}

/// Receive an Alertmanager webhook notification.
#[utoipa::path(
    tag = "alerts", operation_id = "receive_alertmanager",
    request_body = AlertmanagerPayload,
    responses((status = 200, body = IntakeResult),
              (status = 403, body = crate::error::Problem), (status = 422, body = crate::error::Problem),
              (status = 429, body = crate::error::Problem, headers(("Retry-After" = String)))),
)]
#[post("/api/v1/integrations/alertmanager")]
pub async fn receive_alertmanager(
    sender: AlertSender,
    state: web::Data<AppState>,
    body: ValidJson<Document>,
) -> ApiResult<HttpResponse> {
    let incoming = alert::parse_alertmanager(&body.0 .0)?;
    let alerts = usecase::receive(&state, sender.0, incoming).await?;
    Ok(HttpResponse::Ok().json(IntakeResult { alerts }))
}

/// Receive a generic alert or a batch of them (`{"alerts": [...]}`).
#[utoipa::path(
    tag = "alerts", operation_id = "receive_alerts",
    request_body = GenericAlerts,
    responses((status = 200, body = IntakeResult),
              (status = 403, body = crate::error::Problem), (status = 422, body = crate::error::Problem),
              (status = 429, body = crate::error::Problem, headers(("Retry-After" = String)))),
)]
#[post("/api/v1/alerts")]
pub async fn receive_alerts(
    sender: AlertSender,
    state: web::Data<AppState>,
    body: ValidJson<Document>,
) -> ApiResult<HttpResponse> {
    let incoming = alert::parse_generic(&body.0 .0)?;
    let alerts = usecase::receive(&state, sender.0, incoming).await?;
    Ok(HttpResponse::Ok().json(IntakeResult { alerts }))
}

/// List stored alerts, newest first.
#[utoipa::path(
    tag = "alerts", operation_id = "list_alerts",
    params(
        ("status" = Option<AlertStatus>, Query), ("source" = Option<String>, Query),
        ("key" = Option<String>, Query, description = "The dedup key"),
        ("incident_id" = Option<String>, Query),
        ("limit" = Option<i64>, Query), ("cursor" = Option<String>, Query),
    ),
    responses((status = 200, body = Page<Alert>), (status = 422, body = crate::error::Problem)),
)]
#[get("/api/v1/alerts")]
pub async fn list_alerts(
    _caller: Authorized<FeedReaders>,
    state: web::Data<AppState>,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    let filters = ["status", "source", "key", "incident_id"];
    let params = QueryParams::parse(&req, &[&PAGE_PARAMS[..], &filters].concat())?;
    let filter = AlertFilter {
        status: params.parsed("status", &AlertStatus::names())?,
        source: params.text("source")?,
        dedup_key: params.text("key")?,
        incident_id: params.text("incident_id")?,
    };
    let page = params.page::<String>()?;
    let slice = state
        .db
        .read_bounded(move |conn| store::list(conn, &filter, page.cursor.as_deref(), page.limit))
        .await
        .map_err(ApiError::from)?;
    Ok(Page::from_slice(slice, |alert| alert.id.clone()).respond(&req))
}

/// Get a stored alert.
#[utoipa::path(
    tag = "alerts", operation_id = "get_alert",
    params(("id" = String, Path)),
    responses((status = 200, body = Alert), (status = 404, body = crate::error::Problem)),
)]
#[get("/api/v1/alerts/{id}")]
pub async fn get_alert(
    _caller: Authorized<FeedReaders>,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let id = id.into_inner();
    let alert = state
        .db
        .read_bounded(move |conn| store::get(conn, &id))
        .await
        .map_err(|e| not_found_as(e, "alert"))?;
    Ok(with_etag(StatusCode::OK, alert.version, &alert))
}

#[contract_macros::schema_from_validate]
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AlertRuleRequest {
    #[validate(length(min = 1, max = 200))]
    #[schema(example = "Database alerts to the DBA team")]
    pub name: String,
    /// Rules are tried from the lowest position up; the first match decides.
    #[validate(range(min = 0, max = 1000000))]
    pub position: i32,
    /// Match alerts of this source only (`alertmanager`, `zabbix`...); `null`: any.
    #[validate(length(min = 1, max = 100))]
    pub source: Option<String>,
    /// Match alerts of this severity only; `null`: any.
    pub severity: Option<Severity>,
    /// Match alerts carrying each of these labels with these values.
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    pub impact: Impact,
    pub urgency: Urgency,
    #[validate(length(min = 1, max = 100))]
    pub category: Option<String>,
    /// The group id incidents go to; `null`: routed by category by the assignment rules.
    pub assignment_group: Option<String>,
    /// Whether matching alerts open incidents; default true.
    #[serde(default = "yes")]
    pub open_incident: bool,
    /// Whether the incident is resolved when all its alerts resolve; default false (a work
    /// note is added either way).
    #[serde(default)]
    pub resolve_incident: bool,
}

fn yes() -> bool {
    true
}

fn rule_fields(conn: &mut DbConnection, request: AlertRuleRequest) -> ApiResult<RuleFields> {
    if let Some(group) = &request.assignment_group {
        groups::get(conn, group)
            .map_err(|e| unknown_reference(e, "assignment_group", "no such group"))?;
    }
    alert::validate_rule_labels(&request.labels)?;
    let name = request.name.trim().to_owned();
    if name.is_empty() {
        return Err(ApiError::invalid("name", "must not be blank"));
    }
    let trimmed =
        |value: Option<String>| value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
    Ok(RuleFields {
        name,
        position: request.position,
        source: trimmed(request.source),
        severity: request.severity,
        labels: request.labels,
        impact: request.impact,
        urgency: request.urgency,
        category: trimmed(request.category),
        group_id: request.assignment_group,
        open_incident: request.open_incident,
        resolve_incident: request.resolve_incident,
    })
}

/// Add an alert rule.
#[utoipa::path(
    tag = "alerts", operation_id = "create_alert_rule",
    request_body = AlertRuleRequest,
    responses((status = 201, body = AlertRule), (status = 422, body = crate::error::Problem)),
)]
#[post("/api/v1/alert-rules")]
pub async fn create_rule(
    caller: Authorized<Admins>,
    state: web::Data<AppState>,
    body: ValidJson<AlertRuleRequest>,
) -> ApiResult<HttpResponse> {
    let ctx = caller.write_context();
    let request = body.0;
    let rule = state
        .db
        .write(move |conn| -> ApiResult<AlertRule> {
            let fields = rule_fields(conn, request)?;
            Ok(store::create_rule(conn, &ctx, fields)?)
        })
        .await?;
    state.alert_rules.forget(&());
    Ok(created(
        format!("/api/v1/alert-rules/{}", rule.id),
        rule.version,
        &rule,
    ))
}

/// List alert rules in the order they are tried.
#[utoipa::path(
    tag = "alerts", operation_id = "list_alert_rules",
    responses((status = 200, body = Page<AlertRule>)),
)]
#[get("/api/v1/alert-rules")]
pub async fn list_rules(
    _caller: Authorized<FeedReaders>,
    state: web::Data<AppState>,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    QueryParams::parse(&req, &[])?;
    let rules = state
        .db
        .read(store::all_rules)
        .await
        .map_err(ApiError::from)?;
    Ok(Page {
        items: rules,
        next_cursor: None,
    }
    .respond(&req))
}

/// Get an alert rule.
#[utoipa::path(
    tag = "alerts", operation_id = "get_alert_rule",
    params(("id" = String, Path)),
    responses((status = 200, body = AlertRule), (status = 404, body = crate::error::Problem)),
)]
#[get("/api/v1/alert-rules/{id}")]
pub async fn get_rule(
    _caller: Authorized<FeedReaders>,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let id = id.into_inner();
    let rule = state
        .db
        .read(move |conn| store::get_rule(conn, &id))
        .await
        .map_err(|e| not_found_as(e, "alert rule"))?;
    Ok(with_etag(StatusCode::OK, rule.version, &rule))
}

/// Replace an alert rule.
#[utoipa::path(
    tag = "alerts", operation_id = "replace_alert_rule",
    params(("id" = String, Path), ("If-Match" = Option<String>, Header)),
    request_body = AlertRuleRequest,
    responses((status = 200, body = AlertRule), (status = 404, body = crate::error::Problem),
              (status = 412, body = crate::error::Problem), (status = 422, body = crate::error::Problem)),
)]
#[put("/api/v1/alert-rules/{id}")]
pub async fn replace_rule(
    caller: Authorized<Admins>,
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
    body: ValidJson<AlertRuleRequest>,
) -> ApiResult<HttpResponse> {
    let expected_version = if_match(&req)?;
    let ctx = caller.write_context();
    let id = id.into_inner();
    let request = body.0;
    let rule = state
        .db
        .write(move |conn| -> ApiResult<AlertRule> {
            store::get_rule(conn, &id).map_err(|e| not_found_as(e, "alert rule"))?;
            let fields = rule_fields(conn, request)?;
            Ok(store::replace_rule(
                conn,
                &ctx,
                &id,
                expected_version,
                fields,
            )?)
        })
        .await?;
    state.alert_rules.forget(&());
    Ok(with_etag(StatusCode::OK, rule.version, &rule))
}

/// Delete an alert rule.
#[utoipa::path(
    tag = "alerts", operation_id = "delete_alert_rule",
    params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = crate::error::Problem)),
)]
#[delete("/api/v1/alert-rules/{id}")]
pub async fn delete_rule(
    caller: Authorized<Admins>,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let ctx = caller.write_context();
    let id = id.into_inner();
    state
        .db
        .write(move |conn| store::delete_rule(conn, &ctx, &id))
        .await
        .map_err(|e| not_found_as(e, "alert rule"))?;
    state.alert_rules.forget(&());
    Ok(HttpResponse::NoContent().finish())
}

pub fn recent_rules() -> RecentReads<(), Arc<Vec<AlertRule>>> {
    RecentReads::new(Duration::from_secs(1), 1)
}

/// The monitoring intake's two routes, registered before every other (see `routes::configure`).
pub fn configure_intake(cfg: &mut web::ServiceConfig) {
    cfg.service(receive_alertmanager).service(receive_alerts);
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(list_alerts)
        .service(get_alert)
        .service(create_rule)
        .service(list_rules)
        .service(get_rule)
        .service(replace_rule)
        .service(delete_rule);
}
