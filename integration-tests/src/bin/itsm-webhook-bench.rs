//! The webhook delivery benchmark (`make bench-webhooks`): the release `itsm` binary on a fresh
//! database (SQLite, and PostgreSQL when ITSM_BENCH_POSTGRES_URL is set), delivering to a real
//! HTTP receiver on loopback that checks every signature.
//!
//! - throughput: BENCH_WEBHOOK_EVENTS incidents (default 20,000) are created while the
//!   subscription is off; it is turned on and the time until every event arrived gives signed
//!   deliveries per second;
//! - lag: incidents are created at BENCH_WEBHOOK_RATE per second (default 1,000) for
//!   BENCH_WEBHOOK_SECONDS (default 10); the lag of each event is its arrival time at the
//!   receiver minus its `timestamp` (when it was written), reported as p50, p99 and max.
//!
//! BENCH_SKIP_SQLITE=1 measures PostgreSQL alone. Figures go to stdout and
//! target/bench/webhooks.json.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use itsm_integration_tests::receiver::{verify, Received, Receiver};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ADMIN_PASSWORD: &str = "bench-admin-password";

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_server(database_url: &str, dir: &Path) -> Server {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port");
    let child = Command::new(std::env::current_exe().expect("exe").with_file_name("itsm"))
        .arg("serve")
        .env("ITSM_DATABASE_URL", database_url)
        .env("ITSM_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env("ITSM_BIND", format!("127.0.0.1:{port}"))
        .env("ITSM_WEBHOOK_ALLOWED_NETWORKS", "127.0.0.0/8")
        .env("ITSM_WEBHOOK_POLL_MS", "50")
        .env("RUST_LOG", "warn")
        .current_dir(dir)
        .stdout(Stdio::null())
        .spawn()
        .expect("start itsm (build it with make bench-webhooks)");
    let server = Server {
        child,
        base: format!("http://127.0.0.1:{port}"),
    };
    let client = Client::new();
    for _ in 0..200 {
        if let Ok(response) = client.get(format!("{}/readyz", server.base)).send().await {
            if response.status() == StatusCode::OK {
                return server;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the server did not become ready");
}

async fn admin_token(client: &Client, base: &str) -> String {
    let response = client
        .post(format!("{base}/api/v1/auth/token"))
        .json(&json!({"username": "admin", "password": ADMIN_PASSWORD}))
        .send()
        .await
        .expect("token");
    let body: Value = response.json().await.expect("token body");
    body["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned()
}

async fn create_incident(client: &Client, base: &str, token: &str, n: u64) {
    let response = client
        .post(format!("{base}/api/v1/incidents"))
        .bearer_auth(token)
        .json(&json!({"title": format!("webhook bench {n}"), "impact": "low", "urgency": "low"}))
        .send()
        .await
        .expect("create incident");
    assert_eq!(response.status(), StatusCode::CREATED);
}

/// Creates `count` incidents with 32 clients at once.
async fn create_incidents(client: &Client, base: &str, token: &str, count: u64) {
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let workers: Vec<_> = (0..32)
        .map(|_| {
            let (client, base, token, next) = (
                client.clone(),
                base.to_owned(),
                token.to_owned(),
                next.clone(),
            );
            tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    if n >= count {
                        return;
                    }
                    create_incident(&client, &base, &token, n).await;
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.expect("creator");
    }
}

fn distinct(received: &[Received]) -> usize {
    received
        .iter()
        .map(|r| r.webhook_id.as_str())
        .collect::<HashSet<_>>()
        .len()
}

async fn wait_for(receiver: &Receiver, count: usize, limit: Duration) -> Vec<Received> {
    let started = Instant::now();
    loop {
        let received = receiver.received();
        if distinct(&received) >= count {
            return received;
        }
        assert!(
            started.elapsed() < limit,
            "only {} of {count} deliveries arrived within {limit:?}",
            distinct(&received)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

async fn bench_backend(backend: &str, database_url: String, dir: &Path) -> Value {
    let events = setting("BENCH_WEBHOOK_EVENTS", 20_000);
    let rate = setting("BENCH_WEBHOOK_RATE", 1_000).max(1);
    let seconds = setting("BENCH_WEBHOOK_SECONDS", 10).max(1);
    let server = start_server(&database_url, dir).await;
    let client = Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .expect("client");
    let token = admin_token(&client, &server.base).await;
    let base = server.base.clone();

    // Throughput: a backlog delivered once the subscription is turned on.
    let receiver = Receiver::start();
    let response = client
        .post(format!("{base}/api/v1/webhooks"))
        .bearer_auth(&token)
        .json(&json!({"url": receiver.url, "event_types": ["incident.created"], "active": false}))
        .send()
        .await
        .expect("subscribe");
    let webhook: Value = response.json().await.expect("webhook");
    let id = webhook["id"].as_str().expect("id").to_owned();
    let secret = webhook["secret"].as_str().expect("secret").to_owned();
    create_incidents(&client, &base, &token, events).await;
    let started = Instant::now();
    let response = client
        .patch(format!("{base}/api/v1/webhooks/{id}"))
        .bearer_auth(&token)
        .header("content-type", "application/merge-patch+json")
        .body(json!({"active": true}).to_string())
        .send()
        .await
        .expect("turn on");
    assert_eq!(response.status(), StatusCode::OK);
    let received = wait_for(&receiver, events as usize, Duration::from_secs(600)).await;
    let elapsed = started.elapsed().as_secs_f64();
    let throughput = events as f64 / elapsed;
    let bad = received
        .iter()
        .filter(|r| !verify(&secret, &r.webhook_id, &r.timestamp, &r.body, &r.signature))
        .count();
    assert_eq!(bad, 0, "deliveries with a bad signature");
    println!(
        "{backend}: {events} signed deliveries in {elapsed:.2} s: {throughput:.0}/s ({} requests)",
        received.len()
    );
    let response = client
        .delete(format!("{base}/api/v1/webhooks/{id}"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("unsubscribe");
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    drop(receiver);

    // Lag: events at a steady rate, each timed from its write to its arrival.
    let receiver = Receiver::start();
    let response = client
        .post(format!("{base}/api/v1/webhooks"))
        .bearer_auth(&token)
        .json(&json!({"url": receiver.url, "event_types": ["incident.created"]}))
        .send()
        .await
        .expect("subscribe");
    assert_eq!(response.status(), StatusCode::CREATED);
    let wall_base = chrono::Utc::now();
    let instant_base = Instant::now();
    let total = rate * seconds;
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut creates = tokio::task::JoinSet::new();
    for n in 0..total {
        ticks.tick().await;
        let (client, base, token) = (client.clone(), base.clone(), token.clone());
        creates.spawn(async move { create_incident(&client, &base, &token, n).await });
    }
    while creates.join_next().await.is_some() {}
    let received = wait_for(&receiver, total as usize, Duration::from_secs(600)).await;
    let mut seen = HashSet::new();
    let mut lags: Vec<f64> = received
        .iter()
        .filter(|r| seen.insert(r.webhook_id.clone()))
        .filter_map(|r| {
            let written = chrono::DateTime::parse_from_rfc3339(r.json()["timestamp"].as_str()?)
                .ok()?
                .with_timezone(&chrono::Utc);
            let arrived =
                wall_base + chrono::TimeDelta::from_std(r.at.duration_since(instant_base)).ok()?;
            Some((arrived - written).num_microseconds()? as f64 / 1000.0)
        })
        .collect();
    lags.sort_by(|a, b| a.total_cmp(b));
    let (p50, p99, max) = (
        percentile(&lags, 0.5),
        percentile(&lags, 0.99),
        lags.last().copied().unwrap_or(0.0),
    );
    println!(
        "{backend}: {total} events at {rate}/s: outbox-to-receiver lag p50 {p50:.0} ms, p99 {p99:.0} ms, max {max:.0} ms"
    );
    json!({
        "backend": backend,
        "throughput": {"deliveries": events, "seconds": elapsed, "per_second": throughput},
        "lag": {"events": total, "rate": rate, "p50_ms": p50, "p99_ms": p99, "max_ms": max},
    })
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&out).expect("target/bench");
    let dir = std::env::temp_dir().join(format!("itsm-webhook-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("bench folder");
    let mut results = Vec::new();
    if !std::env::var("BENCH_SKIP_SQLITE").is_ok_and(|v| v == "1") {
        let sqlite = format!("sqlite://{}", dir.join("bench.db").display());
        results.push(bench_backend("sqlite", sqlite, &dir).await);
    }
    match std::env::var("ITSM_BENCH_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => {
            let schema = format!("webhook_bench_{}", std::process::id());
            let created = Command::new("psql")
                .args([url.as_str(), "-qc", &format!("CREATE SCHEMA {schema}")])
                .status();
            assert!(
                created.is_ok_and(|s| s.success()),
                "cannot create schema {schema} (is psql installed?)"
            );
            let separator = if url.contains('?') { '&' } else { '?' };
            let scoped = format!("{url}{separator}options=-csearch_path%3D{schema}");
            results.push(bench_backend("postgres", scoped, &dir).await);
            let _ = Command::new("psql")
                .args([
                    url.as_str(),
                    "-qc",
                    &format!("SET client_min_messages = warning; DROP SCHEMA {schema} CASCADE"),
                ])
                .status();
        }
        _ => eprintln!("ITSM_BENCH_POSTGRES_URL is not set: PostgreSQL not measured"),
    }
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::write(
        out.join("webhooks.json"),
        serde_json::to_string_pretty(&results).expect("json"),
    )
    .expect("webhooks.json");
    println!("written to target/bench/webhooks.json");
}
