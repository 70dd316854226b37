//! General rate limiting, off unless configured: at most N requests per window per credential
//! (the bearer token) and per client address, answered 429 with `Retry-After` beyond it. Every
//! response of a limited service carries the IETF `RateLimit-Policy` and `RateLimit` headers
//! of the tighter limit. Counts are per process (fixed windows), like the sign-in throttle.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{web, Error};

use crate::error::ApiError;

/// Past this many keys in a window, the oldest windows' keys are dropped.
const MAX_KEYS: usize = 100_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    Credential(u64),
    Address(IpAddr),
}

pub struct RateLimits {
    per_credential: Option<u32>,
    per_address: Option<u32>,
    window: Duration,
    started: Instant,
    counts: Mutex<HashMap<Key, (u64, u32)>>,
}

/// What one request may do: go ahead (with what is left of the tighter limit) or wait.
struct Verdict {
    limit: u32,
    remaining: u32,
    reset: u64,
    refused: bool,
}

impl RateLimits {
    pub fn new(per_credential: Option<u32>, per_address: Option<u32>, window_seconds: u64) -> Self {
        Self {
            per_credential,
            per_address,
            window: Duration::from_secs(window_seconds.max(1)),
            started: Instant::now(),
            counts: Mutex::new(HashMap::new()),
        }
    }

    pub fn enabled(&self) -> bool {
        self.per_credential.is_some() || self.per_address.is_some()
    }

    fn count(&self, keys: &[(Key, u32)]) -> Option<Verdict> {
        let elapsed = self.started.elapsed();
        let window = elapsed.as_secs() / self.window.as_secs();
        let reset = self.window.as_secs() - elapsed.as_secs() % self.window.as_secs();
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if counts.len() >= MAX_KEYS {
            counts.retain(|_, (w, _)| *w == window);
        }
        for &(key, _) in keys {
            let entry = counts.entry(key).or_insert((window, 0));
            if entry.0 != window {
                *entry = (window, 0);
            }
        }
        let used =
            |counts: &HashMap<Key, (u64, u32)>, key: &Key| counts.get(key).map_or(0, |c| c.1);
        // A refused request counts against nothing.
        let refused = keys.iter().any(|(key, limit)| used(&counts, key) >= *limit);
        if !refused {
            for (key, _) in keys {
                if let Some(entry) = counts.get_mut(key) {
                    entry.1 += 1;
                }
            }
        }
        keys.iter()
            .map(|(key, limit)| Verdict {
                limit: *limit,
                remaining: limit.saturating_sub(used(&counts, key)),
                reset,
                refused,
            })
            .min_by_key(|v| v.remaining)
    }
}

fn credential_key(req: &ServiceRequest) -> Option<Key> {
    let value = req.headers().get(header::AUTHORIZATION)?.as_bytes();
    let mut hasher = DefaultHasher::new();
    value.hash(&mut hasher);
    Some(Key::Credential(hasher.finish()))
}

pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let limits = req.app_data::<web::Data<RateLimits>>().cloned();
    let Some(limits) = limits.filter(|l| l.enabled()) else {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_boxed_body);
    };
    let mut keys = Vec::new();
    if let (Some(limit), Some(key)) = (limits.per_credential, credential_key(&req)) {
        keys.push((key, limit));
    }
    if let (Some(limit), Some(address)) = (limits.per_address, req.peer_addr()) {
        keys.push((Key::Address(address.ip()), limit));
    }
    let Some(verdict) = limits.count(&keys) else {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_boxed_body);
    };
    let mut response = if verdict.refused {
        req.error_response(ApiError::TooManyRequests {
            detail: "too many requests; wait before trying again".into(),
            retry_after: verdict.reset,
        })
    } else {
        next.call(req).await?.map_into_boxed_body()
    };
    let headers = response.headers_mut();
    let policy = format!(
        "\"default\";q={};w={}",
        verdict.limit,
        limits.window.as_secs()
    );
    let state = format!("\"default\";r={};t={}", verdict.remaining, verdict.reset);
    for (name, value) in [("ratelimit-policy", policy), ("ratelimit", state)] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tighter_limit_decides_and_refusals_count_nothing() {
        let limits = RateLimits::new(Some(3), Some(5), 3600);
        let keys = [
            (Key::Credential(1), 3),
            (Key::Address("192.0.2.1".parse().unwrap()), 5),
        ];
        let remaining: Vec<(u32, bool)> = (0..5)
            .map(|_| {
                let v = limits.count(&keys).unwrap();
                (v.remaining, v.refused)
            })
            .collect();
        assert_eq!(
            remaining,
            [(2, false), (1, false), (0, false), (0, true), (0, true)]
        );
        // Another credential from the same address has two left there.
        let other = [
            (Key::Credential(2), 3),
            (Key::Address("192.0.2.1".parse().unwrap()), 5),
        ];
        let v = limits.count(&other).unwrap();
        assert_eq!((v.limit, v.remaining, v.refused), (5, 1, false));
        let v = limits.count(&other).unwrap();
        assert_eq!((v.remaining, v.refused), (0, false));
        assert!(limits.count(&other).unwrap().refused);
    }
}
