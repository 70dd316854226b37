//! Outbound webhooks: signing (Standard Webhooks) and the delivery worker.
//!
//! Each node runs one worker. It turns outbox events into deliveries, claims due deliveries
//! through the database, sends each with a timeout and no redirects, and records what it got;
//! see `persistence::webhooks` for why that is safe with several nodes and across a crash.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use hmac::{Hmac, Mac};
use persistence::webhooks::{self, AttemptResult, Claimed, Signing};
use persistence::{Backend, Database};
use rand::{Rng, RngCore};
use sha2::Sha256;

use crate::config::WebhookSettings;

/// The prefix of every webhook secret.
pub const SECRET_PREFIX: &str = "whsec_";
/// The most bytes of a receiver's answer kept in the delivery log.
pub const EXCERPT_BYTES: usize = 256;
/// Events read per subscription per fan-out step.
const FAN_OUT_BATCH: i64 = 500;

/// A new secret: `whsec_` and the base64 of 32 random bytes.
pub fn generate_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!(
        "{SECRET_PREFIX}{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

/// `v1,<base64 HMAC-SHA256 of "id.timestamp.body">`, keyed with the secret's decoded bytes.
pub fn signature(secret: &str, id: &str, timestamp: i64, body: &str) -> Option<String> {
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix(SECRET_PREFIX)?)
        .ok()?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).ok()?;
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    let digest = mac.finalize().into_bytes();
    Some(format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(digest)
    ))
}

/// The `webhook-signature` header: the current secret's signature, and during a rotation the
/// previous secret's after it, space-separated.
pub fn signature_header(signing: &Signing, id: &str, timestamp: i64, body: &str) -> String {
    let mut header = signature(&signing.secret, id, timestamp, body).unwrap_or_default();
    if let Some(previous) = signing
        .previous_secret
        .as_deref()
        .and_then(|secret| signature(secret, id, timestamp, body))
    {
        header.push(' ');
        header.push_str(&previous);
    }
    header
}

/// Resolves target host names and drops addresses in refused ranges, so a name cannot lead a
/// delivery to an address a literal could not name.
struct CheckedResolver {
    allowed: Arc<Vec<domain::webhooks::Network>>,
}

impl reqwest::dns::Resolve for CheckedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allowed = self.allowed.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::task::spawn_blocking(move || (host.as_str(), 0).to_socket_addrs())
                    .await
                    .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)??
                    .collect();
            let permitted: Vec<SocketAddr> = addrs
                .into_iter()
                .filter(|addr| domain::webhooks::address_allowed(addr.ip(), &allowed).is_ok())
                .collect();
            if permitted.is_empty() {
                return Err("the host resolves only to refused addresses".into());
            }
            let addrs: reqwest::dns::Addrs = Box::new(permitted.into_iter());
            Ok(addrs)
        })
    }
}

/// Sends deliveries: one HTTP client with a timeout, no redirects, and a resolver that
/// refuses the ranges the configuration does not allow.
#[derive(Clone)]
pub struct Sender {
    client: reqwest::Client,
    allowed: Arc<Vec<domain::webhooks::Network>>,
}

impl Sender {
    pub fn new(settings: &WebhookSettings) -> Result<Self, String> {
        let allowed = Arc::new(settings.allowed_networks.clone());
        let client = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent("itsm-webhooks/1")
            .pool_max_idle_per_host(settings.concurrency)
            .dns_resolver(Arc::new(CheckedResolver {
                allowed: allowed.clone(),
            }))
            .build()
            .map_err(|e| format!("cannot build the webhook HTTP client: {e}"))?;
        Ok(Self { client, allowed })
    }

    /// One attempt: POSTs `body` signed for `id`; what the receiver answered, if anything.
    pub async fn attempt(&self, signing: &Signing, id: &str, body: &str) -> Attempt {
        let started = Instant::now();
        let outcome = self.send(signing, id, body).await;
        let latency_ms = started.elapsed().as_millis() as i64;
        match outcome {
            Ok((status, excerpt)) => Attempt {
                succeeded: (200..300).contains(&status),
                response_status: Some(i32::from(status)),
                latency_ms,
                response_excerpt: Some(excerpt),
                error: (!(200..300).contains(&status))
                    .then(|| format!("the receiver answered {status}")),
            },
            Err(error) => Attempt {
                succeeded: false,
                response_status: None,
                latency_ms,
                response_excerpt: None,
                error: Some(error),
            },
        }
    }

    async fn send(&self, signing: &Signing, id: &str, body: &str) -> Result<(u16, String), String> {
        let url = reqwest::Url::parse(&signing.url)
            .map_err(|_| "the target URL is invalid".to_owned())?;
        let literal = url.host_str().and_then(|host| {
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<IpAddr>()
                .ok()
        });
        if let Some(ip) = literal {
            domain::webhooks::address_allowed(ip, &self.allowed)
                .map_err(|range| format!("the target is a {range} address, which is refused"))?;
        }
        let timestamp = chrono::Utc::now().timestamp();
        let response = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", timestamp.to_string())
            .header(
                "webhook-signature",
                signature_header(signing, id, timestamp, body),
            )
            .body(body.to_owned())
            .send()
            .await
            .map_err(describe)?;
        let status = response.status().as_u16();
        Ok((status, excerpt(response).await))
    }
}

/// What went wrong, without the URL (which may carry a token of the receiver's).
fn describe(error: reqwest::Error) -> String {
    if error.is_timeout() {
        "timed out".to_owned()
    } else if error.is_connect() {
        format!("cannot connect: {}", root_cause(&error))
    } else {
        format!("request failed: {}", root_cause(&error))
    }
}

fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    let text = cause.to_string();
    text.chars().take(200).collect()
}

/// The start of the receiver's answer, at most `EXCERPT_BYTES`; the rest is not read.
async fn excerpt(mut response: reqwest::Response) -> String {
    let mut kept: Vec<u8> = Vec::new();
    while kept.len() < EXCERPT_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = EXCERPT_BYTES - kept.len();
                kept.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            _ => break,
        }
    }
    String::from_utf8_lossy(&kept).into_owned()
}

/// What one attempt got.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub succeeded: bool,
    pub response_status: Option<i32>,
    pub latency_ms: i64,
    pub response_excerpt: Option<String>,
    pub error: Option<String>,
}

/// Starts this node's delivery worker (unless turned off by configuration).
pub fn spawn(db: Database, settings: WebhookSettings) -> Result<(), String> {
    if !settings.worker {
        log::info!("the webhook delivery worker is off on this node (ITSM_WEBHOOK_WORKER)");
        return Ok(());
    }
    let sender = Sender::new(&settings)?;
    actix_web::rt::spawn(async move {
        Worker {
            db,
            sender,
            settings,
            node: persistence::new_id(),
            claims: 0,
        }
        .run()
        .await;
    });
    Ok(())
}

struct Worker {
    db: Database,
    sender: Sender,
    settings: WebhookSettings,
    /// This process's name in leases.
    node: String,
    claims: u64,
}

type InFlight = tokio::task::JoinSet<AttemptResult>;

impl Worker {
    /// Turns: each records the results that came in, fans new events out and claims as many
    /// due deliveries as there are free slots, in one unit of work (one commit), then waits
    /// for at least one attempt to finish. An idle worker polls with a read.
    async fn run(mut self) {
        if self.db.backend() == Backend::Sqlite {
            // One process owns an SQLite database: leases left by a killed one are stale.
            if let Err(e) = self.db.write(webhooks::release_all_leases).await {
                log::warn!("cannot release stale webhook leases: {e}");
            }
        }
        let mut in_flight = InFlight::new();
        let mut results: Vec<AttemptResult> = Vec::new();
        // Look at once after start.
        let mut busy = true;
        loop {
            if !busy && in_flight.is_empty() && results.is_empty() {
                actix_web::rt::time::sleep(self.settings.poll_interval).await;
                let now = persistence::now_utc();
                match self
                    .db
                    .read(move |conn| webhooks::has_work(conn, now))
                    .await
                {
                    Ok(true) => {}
                    Ok(false) => continue,
                    Err(e) => {
                        log::warn!("webhook worker cannot read its work: {e}");
                        continue;
                    }
                }
            }
            let free = self.settings.concurrency.saturating_sub(in_flight.len());
            let turn = self.turn(std::mem::take(&mut results), free);
            let kept = turn.results.clone();
            match self.db.write(move |conn| webhooks::turn(conn, &turn)).await {
                Ok(done) => {
                    for id in &done.disabled {
                        log::warn!("webhook {id} turned off after a run of failed deliveries");
                    }
                    busy = done.fanned_out > 0 || !done.claimed.is_empty();
                    let owner = self.owner();
                    for delivery in done.claimed {
                        in_flight.spawn(attempt(
                            self.sender.clone(),
                            self.settings.retry,
                            owner.clone(),
                            delivery,
                        ));
                    }
                }
                Err(e) => {
                    // Recorded by a later turn; meanwhile a lease may expire and its delivery
                    // be attempted again, which the lease check of the recording notices.
                    log::warn!("a webhook worker turn failed: {e}");
                    results = kept;
                    busy = false;
                    actix_web::rt::time::sleep(self.settings.poll_interval).await;
                }
            }
            if in_flight.is_empty() {
                continue;
            }
            self.wait(&mut in_flight, &mut results, busy).await;
        }
    }

    /// Waits for attempts to finish: for one, or while work is waiting (`busy`) for more than
    /// half the slots to be free, so that a turn claims many deliveries at once rather than
    /// paying a commit for the few that freed up since the last one. A busy worker waits at
    /// most 5 ms, an idle one at most its poll interval.
    async fn wait(&self, in_flight: &mut InFlight, results: &mut Vec<AttemptResult>, busy: bool) {
        let pause = if busy {
            Duration::from_millis(5)
        } else {
            self.settings.poll_interval
        };
        let deadline = actix_web::rt::time::Instant::now() + pause;
        loop {
            tokio::select! {
                done = in_flight.join_next() => match done {
                    Some(Ok(result)) => results.push(result),
                    Some(Err(_)) => {}
                    None => return,
                },
                _ = actix_web::rt::time::sleep_until(deadline) => return,
            }
            while let Some(done) = in_flight.try_join_next() {
                if let Ok(result) = done {
                    results.push(result);
                }
            }
            if !busy || in_flight.len() <= self.settings.concurrency / 2 {
                return;
            }
        }
    }

    /// The next turn's request; its claims are leased to a new owner name.
    fn turn(&mut self, results: Vec<AttemptResult>, free: usize) -> webhooks::Turn {
        self.claims += 1;
        webhooks::Turn {
            results,
            disable_after: self.settings.disable_after,
            fan_out_limit: FAN_OUT_BATCH,
            owner: self.owner(),
            lease: chrono::TimeDelta::from_std(self.settings.lease())
                .unwrap_or(chrono::TimeDelta::seconds(60)),
            claim_limit: free as i64,
        }
    }

    /// The lease owner of this turn's claims.
    fn owner(&self) -> String {
        format!("{}:{}", self.node, self.claims)
    }
}

async fn attempt(
    sender: Sender,
    retry: domain::webhooks::RetryPolicy,
    owner: String,
    delivery: Claimed,
) -> AttemptResult {
    let outcome = sender
        .attempt(&delivery.signing, &delivery.id, &delivery.body)
        .await;
    let attempts = delivery.attempts.saturating_add(1);
    let retry_at = if outcome.succeeded {
        None
    } else {
        let jitter: f64 = rand::thread_rng().gen();
        retry
            .next_delay(attempts.max(0) as u32, jitter)
            .and_then(|delay| chrono::TimeDelta::from_std(delay).ok())
            .map(|delay| persistence::now_utc() + delay)
    };
    if !outcome.succeeded {
        log::info!(
            "webhook delivery {} to subscription {} failed (attempt {attempts}): {}",
            delivery.id,
            delivery.subscription_id,
            outcome.error.as_deref().unwrap_or("unknown error")
        );
    }
    AttemptResult {
        delivery_id: delivery.id,
        subscription_id: delivery.subscription_id,
        owner,
        attempts,
        succeeded: outcome.succeeded,
        response_status: outcome.response_status,
        latency_ms: outcome.latency_ms,
        response_excerpt: outcome.response_excerpt,
        error: outcome.error,
        retry_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_follow_the_standard_webhooks_example() {
        // The example of the Standard Webhooks specification.
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let body = r#"{"test": 2432232314}"#;
        assert_eq!(
            signature(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body).unwrap(),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        assert!(signature("not-a-secret", "id", 1, body).is_none());
    }

    #[test]
    fn a_rotated_secret_signs_beside_the_new_one() {
        let signing = Signing {
            url: "http://example.com/".into(),
            secret: generate_secret(),
            previous_secret: Some(generate_secret()),
        };
        let header = signature_header(&signing, "id", 1, "{}");
        let parts: Vec<&str> = header.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert!(parts.iter().all(|p| p.starts_with("v1,")));
        assert!(generate_secret().starts_with(SECRET_PREFIX));
    }
}
