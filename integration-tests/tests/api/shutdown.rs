//! The real process stopped under load: SIGTERM during a storm of writes finishes the
//! requests in flight, answers the rest 503 (or refuses the connection), exits cleanly, and
//! loses nothing it acknowledged; SIGKILL loses nothing acknowledged either, and the event
//! feed has no gap.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use itsm_integration_tests::reqwest::{Client, StatusCode};
use itsm_integration_tests::serde_json::json;
use itsm_integration_tests::{read, Backend, RealServer, ScratchDatabase};

/// What the service acknowledged for one incident of the storm.
#[derive(Debug, Default)]
struct Acknowledged {
    number: String,
    description: Option<String>,
    note: Option<String>,
    started: bool,
}

/// One request of the storm: its status and JSON body, or `None` when the connection failed
/// (the process is stopping). Anything but a 2xx or a 503 fails the test.
async fn send(
    request: itsm_integration_tests::reqwest::RequestBuilder,
) -> Option<itsm_integration_tests::serde_json::Value> {
    let response = request.send().await.ok()?;
    let status = response.status();
    let text = response.text().await.ok()?;
    match status {
        s if s.is_success() => {
            Some(itsm_integration_tests::serde_json::from_str(&text).unwrap_or_default())
        }
        StatusCode::SERVICE_UNAVAILABLE => None,
        other => panic!("unexpected {other} while stopping: {text}"),
    }
}

/// Stops the server with `signal` during a storm of 16 clients, each creating an incident,
/// changing its description, adding a note and starting work on it, again and again; what was
/// acknowledged.
async fn storm_and_stop(server: &mut RealServer, signal: &str) -> Vec<Acknowledged> {
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
                let mut acknowledged: Vec<Acknowledged> = Vec::new();
                'storm: for n in 0..500 {
                    if done.load(Ordering::SeqCst) {
                        break;
                    }
                    let create = client
                        .post(format!("{base}/api/v1/incidents"))
                        .bearer_auth(&token)
                        .json(&json!({"title": format!("Storm {writer}.{n}")}));
                    let Some(created) = send(create).await else {
                        break;
                    };
                    let number = created["number"].as_str().unwrap().to_owned();
                    acknowledged.push(Acknowledged {
                        number: number.clone(),
                        ..Acknowledged::default()
                    });
                    let incident = format!("{base}/api/v1/incidents/{number}");
                    let description = format!("Described {writer}.{n}");
                    let patch = client
                        .patch(&incident)
                        .bearer_auth(&token)
                        .json(&json!({"description": description}));
                    let Some(_) = send(patch).await else {
                        break 'storm;
                    };
                    let last = acknowledged.last_mut().expect("just pushed");
                    last.description = Some(description);
                    let text = format!("Note {writer}.{n}");
                    let note = client
                        .post(format!("{incident}/notes"))
                        .bearer_auth(&token)
                        .json(&json!({"body": text}));
                    let Some(_) = send(note).await else {
                        break 'storm;
                    };
                    last.note = Some(text);
                    let start = client
                        .post(format!("{incident}/transitions"))
                        .bearer_auth(&token)
                        .json(&json!({"action": "start"}));
                    let Some(_) = send(start).await else {
                        break 'storm;
                    };
                    last.started = true;
                }
                acknowledged
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
        acknowledged.extend(writer.await.unwrap());
    }
    assert!(
        !acknowledged.is_empty(),
        "nothing was acknowledged before the signal"
    );
    acknowledged
}

/// After a restart: every acknowledged change is there with its audit entry, every created
/// incident has its `incident.created` event, and the event feed counts from 1 without a gap.
async fn nothing_acknowledged_is_lost(database: &ScratchDatabase, acknowledged: &[Acknowledged]) {
    let server = RealServer::start(&database.url).await;
    let token = server.admin_token().await;
    let client = Client::new();
    let get = |path: String| {
        let request = client
            .get(format!("{}{path}", server.base))
            .bearer_auth(&token);
        async move {
            let (status, body) = read(request.send().await.unwrap()).await;
            assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
            body
        }
    };
    let mut created = std::collections::HashSet::new();
    let mut expected_sequence = 1;
    loop {
        let page = get(format!(
            "/api/v1/events?after={}&limit=500",
            expected_sequence - 1
        ))
        .await;
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
    for ack in acknowledged {
        let number = &ack.number;
        let incident = get(format!("/api/v1/incidents/{number}")).await;
        assert!(
            created.contains(number),
            "{number} has no incident.created event"
        );
        if let Some(description) = &ack.description {
            assert_eq!(incident["description"], description.as_str(), "{number}");
        }
        if ack.started {
            assert_eq!(incident["state"], "in_progress", "{number}");
        }
        let notes = get(format!("/api/v1/incidents/{number}/notes")).await;
        if let Some(note) = &ack.note {
            assert_eq!(notes["items"][0]["body"], note.as_str(), "{number}");
        }
        let history = get(format!("/api/v1/incidents/{number}/history?limit=500")).await;
        let entries = history["items"].as_array().map(Vec::len).unwrap_or(0);
        let changes = 1
            + usize::from(ack.description.is_some())
            + usize::from(ack.note.is_some())
            + usize::from(ack.started);
        assert!(
            entries >= changes,
            "{number}: {entries} audit entries for {changes} changes"
        );
    }
}

async fn stopped_under_load_loses_nothing(backend: Backend, signal: &str) {
    let Some(database) = ScratchDatabase::new(backend) else {
        panic!("{}", itsm_integration_tests::NOT_BUILT_FOR_POSTGRES);
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
#[cfg_attr(itsm_no_postgres, ignore = "ITSM_TEST_POSTGRES_URL is not set")]
async fn postgres_sigterm_under_load_loses_nothing() {
    stopped_under_load_loses_nothing(Backend::Postgres, "TERM").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_sigkill_under_load_loses_nothing() {
    stopped_under_load_loses_nothing(Backend::Sqlite, "KILL").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(itsm_no_postgres, ignore = "ITSM_TEST_POSTGRES_URL is not set")]
async fn postgres_sigkill_under_load_loses_nothing() {
    stopped_under_load_loses_nothing(Backend::Postgres, "KILL").await;
}
