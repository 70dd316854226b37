//! Webhook subscriptions: requests checked into what is stored, and test messages.

use domain::webhooks::{parse_event_types, Network, Target};
use domain::FieldError;
use persistence::webhooks::{
    self as repo, AttemptResult, Delivery, NewSubscription, SubscriptionChanges,
};

use crate::error::{not_found_as, ApiError, ApiResult};
use crate::routes::webhooks::{CreateWebhook, UpdateWebhook};
use crate::state::AppState;
use crate::webhook_delivery::generate_secret;

/// Collects the errors of several checks so the client sees them all at once.
#[derive(Default)]
struct Checks(Vec<FieldError>);

impl Checks {
    fn take<T>(&mut self, result: Result<T, domain::DomainError>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(domain::DomainError::Invalid(errors)) => {
                self.0.extend(errors);
                None
            }
            Err(other) => {
                self.0.push(FieldError::new("body", other.to_string()));
                None
            }
        }
    }

    fn finish(self) -> ApiResult<()> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ApiError::from_field_errors(self.0))
        }
    }
}

fn event_type_texts(values: &[String], checks: &mut Checks) -> Option<Vec<String>> {
    let filters = checks.take(parse_event_types(values))?;
    let mut texts: Vec<String> = filters.iter().map(|f| f.as_text()).collect();
    texts.dedup();
    Some(texts)
}

/// A new subscription from a request, with a fresh secret (also returned, to show once).
pub fn new_subscription(
    request: CreateWebhook,
    allowed: &[Network],
) -> ApiResult<(NewSubscription, String)> {
    let mut checks = Checks::default();
    let target = checks.take(Target::parse(&request.url, allowed));
    let event_types = event_type_texts(&request.event_types, &mut checks);
    checks.finish()?;
    let (Some(target), Some(event_types)) = (target, event_types) else {
        return Err(ApiError::invalid("body", "is invalid"));
    };
    let secret = generate_secret();
    Ok((
        NewSubscription {
            url: target.url,
            description: request.description.unwrap_or_default().trim().to_owned(),
            event_types,
            active: request.active.unwrap_or(true),
            secret: secret.clone(),
        },
        secret,
    ))
}

/// The changes of a PATCH, checked.
pub fn changes(request: UpdateWebhook, allowed: &[Network]) -> ApiResult<SubscriptionChanges> {
    let mut checks = Checks::default();
    let url = request
        .url
        .as_deref()
        .and_then(|url| checks.take(Target::parse(url, allowed)))
        .map(|target| target.url);
    let event_types = request
        .event_types
        .as_deref()
        .and_then(|values| event_type_texts(values, &mut checks));
    checks.finish()?;
    Ok(SubscriptionChanges {
        url,
        description: request.description.map(|d| d.trim().to_owned()),
        event_types,
        active: request.active,
    })
}

/// Sends a signed `webhook.test` message now and logs what the receiver did.
pub async fn send_test(state: &AppState, id: String) -> ApiResult<Delivery> {
    let lookup = id.clone();
    let signing = state
        .db
        .read(move |conn| repo::signing(conn, &lookup))
        .await
        .map_err(|e| not_found_as(e, "webhook"))?;
    let delivery_id = persistence::new_id();
    let now = persistence::now_utc();
    let data = serde_json::json!({"webhook_id": id, "message": "a test delivery"}).to_string();
    let body = repo::body("webhook.test", now, &data);
    let outcome = state
        .webhook_sender
        .attempt(&signing, &delivery_id, &body)
        .await;
    let result = AttemptResult {
        delivery_id: delivery_id.clone(),
        subscription_id: id.clone(),
        owner: String::new(),
        attempts: 1,
        succeeded: outcome.succeeded,
        response_status: outcome.response_status,
        latency_ms: outcome.latency_ms,
        response_excerpt: outcome.response_excerpt,
        error: outcome.error,
        retry_at: None,
    };
    state
        .db
        .write(move |conn| repo::log_test_delivery(conn, &id, &delivery_id, &body, &result))
        .await
        .map_err(|e| not_found_as(e, "webhook"))
}
