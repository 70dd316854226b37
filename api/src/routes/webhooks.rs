//! `/api/v1/webhooks`: subscriptions to signed outbound deliveries of events, their delivery
//! log, redelivery and test messages. Integrations and admins manage them.

use actix_web::http::StatusCode;
use actix_web::{delete, get, patch, post, web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use persistence::webhooks::{self as repo, Delivery, Subscription, SubscriptionChanges};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use validator::Validate;

use crate::auth::{Authorized, WebhookManagers};
use crate::concurrency::{created, if_match, with_etag};
use crate::error::{not_found_as, ApiError, ApiResult};
use crate::json_body::ValidJson;
use crate::listing::{Page, QueryParams, PAGE_PARAMS};
use crate::state::AppState;
use crate::usecases::webhooks as usecase;

/// The `status` values the delivery list filters on.
pub const DELIVERY_STATUSES: [&str; 3] = ["pending", "delivered", "dead"];

/// A webhook subscription. Its secret is shown only when created or rotated.
#[derive(Debug, Serialize, ToSchema)]
pub struct Webhook {
    pub id: String,
    /// Where deliveries are POSTed (http or https).
    #[schema(example = "https://crm.example.com/hooks/itsm")]
    pub url: String,
    pub description: String,
    /// Event types (`incident.created`), families (`incident.*`) or `*`.
    #[schema(example = json!(["incident.*"]))]
    pub event_types: Vec<String>,
    pub active: bool,
    /// Failed attempts in a row; the subscription turns itself off after a configured run.
    pub consecutive_failures: i32,
    /// Why the service turned the subscription off, when it did.
    pub disabled_reason: Option<String>,
    /// Until when the previous secret still signs, after a rotation.
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub version: i64,
}

impl From<Subscription> for Webhook {
    fn from(s: Subscription) -> Self {
        Self {
            id: s.id,
            url: s.url,
            description: s.description,
            event_types: s.event_types,
            active: s.active,
            consecutive_failures: s.consecutive_failures,
            disabled_reason: s.disabled_reason,
            previous_secret_expires_at: s.previous_secret_expires_at,
            created_at: s.created_at,
            updated_at: s.updated_at,
            version: s.version,
        }
    }
}

/// A new subscription with its signing secret, shown this once.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedWebhook {
    #[serde(flatten)]
    pub webhook: Webhook,
    /// `whsec_` and base64: the key is the base64-decoded part. Store it now; it is never
    /// shown again.
    #[schema(example = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")]
    pub secret: String,
}

#[contract_macros::schema_from_validate]
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    #[validate(length(min = 1, max = 2000))]
    pub url: String,
    #[validate(length(min = 1, max = 50))]
    pub event_types: Vec<String>,
    #[serde(default)]
    #[validate(length(max = 500))]
    pub description: Option<String>,
    /// Default true.
    #[serde(default)]
    pub active: Option<bool>,
}

#[contract_macros::schema_from_validate]
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateWebhook {
    #[validate(length(min = 1, max = 2000))]
    pub url: Option<String>,
    #[validate(length(min = 1, max = 50))]
    pub event_types: Option<Vec<String>>,
    #[validate(length(max = 500))]
    pub description: Option<String>,
    /// Turning a subscription on again clears its run of failures; deliveries resume from
    /// where they stopped.
    pub active: Option<bool>,
}

#[contract_macros::schema_from_validate]
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateSecret {
    /// How long the previous secret keeps signing beside the new one: 0 to 604800 seconds,
    /// default 86400.
    #[validate(range(min = 0, max = 604_800))]
    pub overlap_seconds: Option<i64>,
}

/// A new secret, shown this once.
#[derive(Debug, Serialize, ToSchema)]
pub struct RotatedSecret {
    #[serde(flatten)]
    pub webhook: Webhook,
    pub secret: String,
}

/// One entry of a subscription's delivery log.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookDelivery {
    /// Sent as `webhook-id`, the same on every attempt.
    pub id: String,
    #[schema(example = "incident.created")]
    pub event_type: String,
    /// The event's sequence in the event feed; `null` for a test message.
    pub event_sequence: Option<i64>,
    /// `pending`, `delivered` or `dead` (attempts exhausted).
    #[schema(example = "delivered")]
    pub status: String,
    pub attempts: i32,
    /// The receiver's last HTTP status, if it answered.
    pub response_status: Option<i32>,
    /// The last attempt's duration.
    pub latency_ms: Option<i64>,
    /// The start of the receiver's last answer (at most 256 bytes).
    pub response_excerpt: Option<String>,
    pub last_error: Option<String>,
    /// When the next attempt is due; `null` unless pending.
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<Delivery> for WebhookDelivery {
    fn from(d: Delivery) -> Self {
        let pending = d.status == repo::PENDING;
        Self {
            id: d.id,
            event_type: d.event_type,
            event_sequence: d.event_sequence,
            status: d.status,
            attempts: d.attempts,
            response_status: d.response_status,
            latency_ms: d.latency_ms,
            response_excerpt: d.response_excerpt,
            last_error: d.last_error,
            next_attempt_at: pending.then(|| d.next_attempt_at.and_utc()),
            created_at: d.created_at.and_utc(),
            updated_at: d.updated_at.and_utc(),
        }
    }
}

/// Subscribe a URL to events.
#[utoipa::path(
    tag = "webhooks", operation_id = "create_webhook",
    request_body = CreateWebhook,
    responses((status = 201, body = CreatedWebhook, headers(("Location" = String), ("ETag" = String))),
              (status = 403, body = crate::error::Problem), (status = 422, body = crate::error::Problem)),
)]
#[post("/api/v1/webhooks")]
pub async fn create_webhook(
    caller: Authorized<WebhookManagers>,
    state: web::Data<AppState>,
    body: ValidJson<CreateWebhook>,
) -> ApiResult<HttpResponse> {
    let (new, secret) = usecase::new_subscription(body.0, &state.webhooks.allowed_networks)?;
    let ctx = caller.write_context();
    let subscription = state
        .db
        .write(move |conn| repo::create(conn, &ctx, new))
        .await
        .map_err(ApiError::from)?;
    let version = subscription.version;
    let location = format!("/api/v1/webhooks/{}", subscription.id);
    let body = CreatedWebhook {
        webhook: subscription.into(),
        secret,
    };
    Ok(created(location, version, &body))
}

/// List webhook subscriptions, oldest first.
#[utoipa::path(
    tag = "webhooks", operation_id = "list_webhooks",
    params(("limit" = Option<i64>, Query), ("cursor" = Option<String>, Query)),
    responses((status = 200, body = Page<Webhook>), (status = 403, body = crate::error::Problem)),
)]
#[get("/api/v1/webhooks")]
pub async fn list_webhooks(
    _caller: Authorized<WebhookManagers>,
    state: web::Data<AppState>,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    let params = QueryParams::parse(&req, &PAGE_PARAMS)?;
    let page = params.page::<String>()?;
    let slice = state
        .db
        .read(move |conn| repo::list(conn, page.cursor.as_deref(), page.limit))
        .await
        .map_err(ApiError::from)?;
    Ok(Page::from_slice(slice, |s| s.id.clone())
        .map(Webhook::from)
        .respond(&req))
}

/// Get a webhook subscription (never its secret).
#[utoipa::path(
    tag = "webhooks", operation_id = "get_webhook",
    params(("id" = String, Path)),
    responses((status = 200, body = Webhook, headers(("ETag" = String))), (status = 404, body = crate::error::Problem)),
)]
#[get("/api/v1/webhooks/{id}")]
pub async fn get_webhook(
    _caller: Authorized<WebhookManagers>,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let id = id.into_inner();
    let subscription = state
        .db
        .read(move |conn| repo::get(conn, &id))
        .await
        .map_err(|e| not_found_as(e, "webhook"))?;
    Ok(with_etag(
        StatusCode::OK,
        subscription.version,
        &Webhook::from(subscription),
    ))
}

/// Change a webhook subscription (JSON merge patch): its URL, filters, description, or turn it
/// off and on.
#[utoipa::path(
    tag = "webhooks", operation_id = "update_webhook",
    params(("id" = String, Path), ("If-Match" = Option<String>, Header)),
    request_body(content = UpdateWebhook, content_type = "application/merge-patch+json"),
    responses((status = 200, body = Webhook, headers(("ETag" = String))), (status = 404, body = crate::error::Problem),
              (status = 412, body = crate::error::Problem), (status = 422, body = crate::error::Problem)),
)]
#[patch("/api/v1/webhooks/{id}")]
pub async fn update_webhook(
    caller: Authorized<WebhookManagers>,
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
    body: ValidJson<UpdateWebhook>,
) -> ApiResult<HttpResponse> {
    let expected_version = if_match(&req)?;
    let changes: SubscriptionChanges = usecase::changes(body.0, &state.webhooks.allowed_networks)?;
    let ctx = caller.write_context();
    let id = id.into_inner();
    let subscription = state
        .db
        .write(move |conn| repo::update(conn, &ctx, &id, expected_version, changes))
        .await
        .map_err(|e| not_found_as(e, "webhook"))?;
    Ok(with_etag(
        StatusCode::OK,
        subscription.version,
        &Webhook::from(subscription),
    ))
}

/// Delete a webhook subscription and its delivery log.
#[utoipa::path(
    tag = "webhooks", operation_id = "delete_webhook",
    params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = crate::error::Problem)),
)]
#[delete("/api/v1/webhooks/{id}")]
pub async fn delete_webhook(
    caller: Authorized<WebhookManagers>,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let ctx = caller.write_context();
    let id = id.into_inner();
    state
        .db
        .write(move |conn| repo::delete(conn, &ctx, &id))
        .await
        .map_err(|e| not_found_as(e, "webhook"))?;
    Ok(HttpResponse::NoContent().finish())
}

/// Rotate the signing secret. The new one is shown once; the previous one keeps signing beside
/// it (a second signature in `webhook-signature`) for the overlap.
#[utoipa::path(
    tag = "webhooks", operation_id = "rotate_webhook_secret",
    params(("id" = String, Path)),
    request_body = RotateSecret,
    responses((status = 200, body = RotatedSecret), (status = 404, body = crate::error::Problem),
              (status = 422, body = crate::error::Problem)),
)]
#[post("/api/v1/webhooks/{id}/rotate-secret")]
pub async fn rotate_webhook_secret(
    caller: Authorized<WebhookManagers>,
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: ValidJson<RotateSecret>,
) -> ApiResult<HttpResponse> {
    let overlap = chrono::TimeDelta::seconds(body.0.overlap_seconds.unwrap_or(86_400));
    let secret = crate::webhook_delivery::generate_secret();
    let ctx = caller.write_context();
    let id = id.into_inner();
    let new_secret = secret.clone();
    let subscription = state
        .db
        .write(move |conn| {
            let until = ctx.at + overlap;
            repo::rotate_secret(conn, &ctx, &id, &new_secret, until)
        })
        .await
        .map_err(|e| not_found_as(e, "webhook"))?;
    let version = subscription.version;
    Ok(with_etag(
        StatusCode::OK,
        version,
        &RotatedSecret {
            webhook: subscription.into(),
            secret,
        },
    ))
}

/// A subscription's delivery log, newest first.
#[utoipa::path(
    tag = "webhooks", operation_id = "list_webhook_deliveries",
    params(("id" = String, Path), ("status" = Option<String>, Query, description = "pending, delivered or dead"),
           ("limit" = Option<i64>, Query), ("cursor" = Option<String>, Query)),
    responses((status = 200, body = Page<WebhookDelivery>), (status = 404, body = crate::error::Problem),
              (status = 422, body = crate::error::Problem)),
)]
#[get("/api/v1/webhooks/{id}/deliveries")]
pub async fn list_webhook_deliveries(
    _caller: Authorized<WebhookManagers>,
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let params = QueryParams::parse(&req, &[&PAGE_PARAMS[..], &["status"]].concat())?;
    // The values are DELIVERY_STATUSES, which the contract publishes.
    let status = match params.single("status")? {
        None => None,
        Some("pending") => Some(repo::PENDING),
        Some("delivered") => Some(repo::DELIVERED),
        Some("dead") => Some(repo::DEAD),
        Some(_) => {
            return Err(ApiError::invalid(
                "status",
                "must be one of pending, delivered, dead",
            ))
        }
    };
    let page = params.page::<String>()?;
    let id = id.into_inner();
    let slice = state
        .db
        .read(move |conn| {
            repo::get(conn, &id)?;
            repo::deliveries(conn, &id, status, page.cursor.as_deref(), page.limit)
        })
        .await
        .map_err(|e| not_found_as(e, "webhook"))?;
    Ok(Page::from_slice(slice, |d| d.id.clone())
        .map(WebhookDelivery::from)
        .respond(&req))
}

/// Deliver a delivered or dead-lettered event again (same `webhook-id`, fresh attempts).
#[utoipa::path(
    tag = "webhooks", operation_id = "redeliver_webhook_delivery",
    params(("id" = String, Path), ("delivery_id" = String, Path)),
    responses((status = 202, body = WebhookDelivery), (status = 404, body = crate::error::Problem),
              (status = 409, body = crate::error::Problem)),
)]
#[post("/api/v1/webhooks/{id}/deliveries/{delivery_id}/redeliver")]
pub async fn redeliver_webhook_delivery(
    caller: Authorized<WebhookManagers>,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> ApiResult<HttpResponse> {
    let (id, delivery_id) = path.into_inner();
    let ctx = caller.write_context();
    let delivery = state
        .db
        .write(move |conn| repo::redeliver(conn, &ctx, &id, &delivery_id))
        .await
        .map_err(|e| not_found_as(e, "delivery"))?;
    Ok(HttpResponse::Accepted().json(WebhookDelivery::from(delivery)))
}

/// Send a signed test message (`webhook.test`) now, whether the subscription is on or off, and
/// answer what the receiver did; the attempt is logged and not retried.
#[utoipa::path(
    tag = "webhooks", operation_id = "test_webhook",
    params(("id" = String, Path)),
    responses((status = 200, body = WebhookDelivery), (status = 404, body = crate::error::Problem)),
)]
#[post("/api/v1/webhooks/{id}/test")]
pub async fn test_webhook(
    _caller: Authorized<WebhookManagers>,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let delivery = usecase::send_test(&state, id.into_inner()).await?;
    Ok(HttpResponse::Ok().json(WebhookDelivery::from(delivery)))
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(create_webhook)
        .service(list_webhooks)
        .service(get_webhook)
        .service(update_webhook)
        .service(delete_webhook)
        .service(rotate_webhook_secret)
        .service(list_webhook_deliveries)
        .service(redeliver_webhook_delivery)
        .service(test_webhook);
}
