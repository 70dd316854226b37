//! The real process stopped under load: SIGTERM during a storm of creates finishes the
//! requests in flight, answers the rest 503 (or refuses the connection), exits cleanly, and
//! loses nothing it acknowledged; SIGKILL loses nothing acknowledged either, and the event
//! feed has no gap.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use itsm_integration_tests::reqwest::{Client, StatusCode};
use itsm_integration_tests::serde_json::json;
use itsm_integration_tests::{read, Backend, RealServer, ScratchDatabase};

/// Stops the server with `signal` during a 16-client create storm; the numbers acknowledged.
async fn storm_and_stop(server: &mut RealServer, signal: &str) -> Vec<String> {
    let token = server.admin_token().await;
    let client = Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..16)
        .map(|writer| {
            let (client, token, base, done) = (
                client.clone(),
                token.clone(),
                server.base.clone(),
                done.clone(),
            );
            tokio::spawn(async move {
                let mut acknowledged = Vec::new();
                let mut refused = 0;
                for n in 0..2_000 {
                    if done.load(Ordering::SeqCst) {
                        break;
                    }
                    let sent = client
                        .post(format!("{base}/api/v1/incidents"))
                        .bearer_auth(&token)
                        .json(&json!({"title": format!("Storm {writer}.{n}")}))
                        .send()
                        .await;
                    // A closed listener or a reset connection: the process is stopping.
                    let Ok(response) = sent else { break };
                    let status = response.status();
                    let Ok(text) = response.text().await else {
                        break;
                    };
                    let body: itsm_integration_tests::serde_json::Value =
                        itsm_integration_tests::serde_json::from_str(&text).unwrap_or_default();
                    match status {
                        StatusCode::CREATED => {
                            acknowledged.push(body["number"].as_str().unwrap().to_owned())
                        }
                        StatusCode::SERVICE_UNAVAILABLE => refused += 1,
                        other => panic!("unexpected {other} while stopping: {text}"),
                    }
                }
                (acknowledged, refused)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(400)).await;
    server.signal(signal);
    let status = server.wait(Duration::from_secs(20)).await;
    done.store(true, Ordering::SeqCst);
    if signal == "TERM" {
        assert!(status.success(), "itsm exited with {status}");
    }
    let mut acknowledged = Vec::new();
    for writer in writers {
        let (numbers, refused) = writer.await.unwrap();
        eprintln!(
            "writer: {} acknowledged, {refused} refused with 503",
            numbers.len()
        );
        acknowledged.extend(numbers);
    }
    assert!(
        !acknowledged.is_empty(),
        "no create was acknowledged before the signal"
    );
    acknowledged
}

/// After a restart: every acknowledged incident is there with its `incident.created` event,
/// and the event feed counts from 1 without a gap.
async fn nothing_acknowledged_is_lost(database: &ScratchDatabase, acknowledged: &[String]) {
    let server = RealServer::start(&database.url).await;
    let token = server.admin_token().await;
    let client = Client::new();
    let mut created = std::collections::HashSet::new();
    let mut expected_sequence = 1;
    loop {
        let response = client
            .get(format!(
                "{}/api/v1/events?after={}&limit=500",
                server.base,
                expected_sequence - 1
            ))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        let (status, page) = read(response).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let items = page["items"].as_array().cloned().unwrap_or_default();
        if items.is_empty() {
            break;
        }
        for event in items {
            assert_eq!(event["sequence"], expected_sequence, "a gap in the feed");
            expected_sequence += 1;
            if event["type"] == "incident.created" {
                created.insert(event["data"]["number"].as_str().unwrap_or("").to_owned());
            }
        }
    }
    for number in acknowledged {
        let response = client
            .get(format!("{}/api/v1/incidents/{number}", server.base))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{number} was lost");
        assert!(
            created.contains(number),
            "{number} has no incident.created event"
        );
    }
}

async fn stopped_under_load_loses_nothing(backend: Backend, signal: &str) {
    let Some(database) = ScratchDatabase::new(backend) else {
        eprintln!("skipped: PostgreSQL is not configured");
        return;
    };
    let mut server = RealServer::start(&database.url).await;
    let acknowledged = storm_and_stop(&mut server, signal).await;
    nothing_acknowledged_is_lost(&database, &acknowledged).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_sigterm_under_load_loses_nothing() {
    stopped_under_load_loses_nothing(Backend::Sqlite, "TERM").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_sigterm_under_load_loses_nothing() {
    stopped_under_load_loses_nothing(Backend::Postgres, "TERM").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_sigkill_under_load_loses_nothing() {
    stopped_under_load_loses_nothing(Backend::Sqlite, "KILL").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_sigkill_under_load_loses_nothing() {
    stopped_under_load_loses_nothing(Backend::Postgres, "KILL").await;
}
