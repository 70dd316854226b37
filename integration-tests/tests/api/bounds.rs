//! Resources stay bounded under hostile input, measured on the real binary so that the memory
//! is the server's own (issue 19). The bounds checked do not depend on the machine's speed:
//! memory growth after a warm-up, the peak of concurrent password hashes against its slots.

use std::time::Duration;

use futures_util::future::join_all;
use itsm_integration_tests::reqwest::{Client, StatusCode};
use itsm_integration_tests::serde_json::json;
use itsm_integration_tests::{Backend, RealServer, ScratchDatabase, ADMIN_PASSWORD};

const STATES: [&str; 6] = [
    "new",
    "in_progress",
    "on_hold",
    "resolved",
    "closed",
    "canceled",
];
const SORTS: [&str; 4] = ["created_at", "-created_at", "priority", "-updated_at"];

/// The `n`th list request of a hostile client: a shape of its own (repeated values, limits,
/// sorts, filters and words), over incidents, problems and changes.
fn varied_list(n: usize) -> String {
    let collection = ["incidents", "problems", "changes"][n % 3];
    let mut query = format!("limit={}&sort={}", 1 + (n * 7) % 500, SORTS[n % 4]);
    for r in 0..(1 + n % 40) {
        query.push_str(&format!("&state={}", STATES[(n + r) % STATES.len()]));
    }
    match n % 5 {
        0 => query.push_str(&format!("&priority=p{}", 1 + n % 4)),
        1 => query.push_str(&format!(
            "&created_after=2020-01-{:02}T00:00:00Z",
            1 + n % 28
        )),
        2 if collection == "incidents" => {
            query.push_str(&format!("&assignee={}", uuid::Uuid::new_v4()))
        }
        3 => query.push_str(&format!("&q=word{n}")),
        _ => {}
    }
    format!("/api/v1/{collection}?{query}")
}

async fn admin_token(server: &RealServer) -> String {
    server.admin_token().await
}

/// Sends `paths` with `token`, eight at a time; each must answer 200 (or 422 for a filter a
/// collection does not have).
async fn send_all(client: &Client, server: &RealServer, token: &str, paths: Vec<String>) {
    for chunk in paths.chunks(8) {
        let answers = join_all(chunk.iter().map(|path| {
            client
                .get(format!("{}{path}", server.base))
                .bearer_auth(token)
                .send()
        }))
        .await;
        for (path, answer) in chunk.iter().zip(answers) {
            let status = answer.expect("a list answer").status();
            assert!(
                status == StatusCode::OK || status == StatusCode::UNPROCESSABLE_ENTITY,
                "{path}: {status}"
            );
        }
    }
}

async fn a_thousand_varied_lists_leave_memory_where_it_was(backend: Backend) {
    let Some(database) = ScratchDatabase::new(backend) else {
        return;
    };
    let server = RealServer::start(&database.url).await;
    let token = admin_token(&server).await;
    let client = Client::new();
    // Some records, so that the lists read rows.
    for n in 0..20 {
        let response = client
            .post(format!("{}/api/v1/incidents", server.base))
            .bearer_auth(&token)
            .json(
                &json!({"title": format!("printer word{n} jammed"), "impact": "low",
                          "urgency": "low"}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
    }
    // Warm-up: pools, threads and allocator caches reach their working size.
    send_all(
        &client,
        &server,
        &token,
        (0..300).map(varied_list).collect(),
    )
    .await;
    let before = server.rss_kib();
    // A thousand shapes more, none of them seen in the warm-up.
    send_all(
        &client,
        &server,
        &token,
        (1_000..2_000).map(varied_list).collect(),
    )
    .await;
    let after = server.rss_kib();
    assert!(
        after < before + 20 * 1024,
        "{backend:?}: RSS grew from {before} KiB to {after} KiB over a thousand varied lists"
    );
}

/// The value of the gauge `name` in the metrics text.
fn gauge(metrics: &str, name: &str) -> usize {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ")))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no gauge {name} in {metrics}"))
}

async fn metrics(client: &Client, server: &RealServer, token: &str) -> String {
    let response = client
        .get(format!("{}/api/v1/metrics", server.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.text().await.unwrap()
}

async fn six_hundred_concurrent_logins_stay_within_memory_and_hash_slots(backend: Backend) {
    let Some(database) = ScratchDatabase::new(backend) else {
        return;
    };
    let server = RealServer::start(&database.url).await;
    let token = admin_token(&server).await;
    let client = Client::builder()
        .pool_max_idle_per_host(700)
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    let before = server.rss_kib();
    let flood = join_all((0..600).map(|n| {
        let client = client.clone();
        let base = server.base.clone();
        async move {
            // Half with the right password, half guessing for unknown users.
            let body = if n % 2 == 0 {
                json!({"username": "admin", "password": ADMIN_PASSWORD})
            } else {
                json!({"username": format!("nobody{n}"), "password": "a wrong password"})
            };
            client
                .post(format!("{base}/api/v1/auth/token"))
                .json(&body)
                .send()
                .await
                .map(|r| r.status())
        }
    }));
    let mut flood = std::pin::pin!(flood);
    let mut peak_rss = before;
    let statuses = loop {
        tokio::select! {
            statuses = &mut flood => break statuses,
            _ = tokio::time::sleep(Duration::from_millis(20)) => {
                peak_rss = peak_rss.max(server.rss_kib());
            }
        }
    };
    peak_rss = peak_rss.max(server.rss_kib());
    for status in &statuses {
        let status = status.as_ref().expect("an answer to every sign-in");
        assert!(
            [
                StatusCode::OK,
                StatusCode::UNAUTHORIZED,
                StatusCode::TOO_MANY_REQUESTS,
                StatusCode::SERVICE_UNAVAILABLE
            ]
            .contains(status),
            "{status}"
        );
    }
    assert!(
        peak_rss < 300 * 1024,
        "{backend:?}: RSS reached {peak_rss} KiB (from {before} KiB) under 600 sign-ins"
    );
    let metrics = metrics(&client, &server, &token).await;
    let peak = gauge(&metrics, "itsm_password_hashes_running_peak");
    let slots = gauge(&metrics, "itsm_password_hash_slots");
    assert!(
        (1..=slots).contains(&peak),
        "{backend:?}: {peak} hashes ran at once, {slots} slots\n{metrics}"
    );
    assert_eq!(gauge(&metrics, "itsm_password_hashes_running"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_varied_lists_leave_memory_where_it_was_on_sqlite() {
    a_thousand_varied_lists_leave_memory_where_it_was(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_varied_lists_leave_memory_where_it_was_on_postgres() {
    a_thousand_varied_lists_leave_memory_where_it_was(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn six_hundred_concurrent_logins_stay_bounded_on_sqlite() {
    six_hundred_concurrent_logins_stay_within_memory_and_hash_slots(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn six_hundred_concurrent_logins_stay_bounded_on_postgres() {
    six_hundred_concurrent_logins_stay_within_memory_and_hash_slots(Backend::Postgres).await;
}
