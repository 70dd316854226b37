//! Graceful shutdown of the real process: SIGTERM during a storm of creates finishes the
//! requests in flight, answers the rest 503 (or refuses the connection), exits cleanly, and
//! loses nothing it acknowledged.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use itsm_integration_tests::reqwest::{Client, StatusCode};
use itsm_integration_tests::serde_json::json;
use itsm_integration_tests::{read, Backend, RealServer, ScratchDatabase};

async fn sigterm_under_load_loses_nothing(backend: Backend) {
    let Some(database) = ScratchDatabase::new(backend) else {
        eprintln!("skipped: PostgreSQL is not configured");
        return;
    };
    let mut server = RealServer::start(&database.url).await;
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
                    let Ok(response) = sent else {
                        // The listener is closed: the process is stopping.
                        break;
                    };
                    let (status, body) = read(response).await;
                    match status {
                        StatusCode::CREATED => {
                            acknowledged.push(body["number"].as_str().unwrap().to_owned())
                        }
                        StatusCode::SERVICE_UNAVAILABLE => refused += 1,
                        other => panic!("unexpected {other} during shutdown: {body}"),
                    }
                }
                (acknowledged, refused)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(400)).await;
    server.signal("TERM");
    let status = server.wait(Duration::from_secs(20)).await;
    done.store(true, Ordering::SeqCst);
    assert!(status.success(), "itsm exited with {status}");
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

    // After a restart every acknowledged incident is there.
    let server = RealServer::start(&database.url).await;
    let token = server.admin_token().await;
    for number in &acknowledged {
        let response = client
            .get(format!("{}/api/v1/incidents/{number}", server.base))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{number} was lost");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_sigterm_under_load_loses_nothing() {
    sigterm_under_load_loses_nothing(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_sigterm_under_load_loses_nothing() {
    sigterm_under_load_loses_nothing(Backend::Postgres).await;
}
