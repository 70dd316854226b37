//! Outbound webhooks against a real HTTP receiver on loopback: subscriptions and their bad
//! input, signatures checked as a receiver does, order per entity, retries with the same
//! `webhook-id`, dead letters and redelivery, turning off after a run of failures, test
//! messages, secret rotation, and no loss when the process is killed mid-stream.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use itsm_integration_tests::receiver::{verify, Received, Receiver};
use itsm_integration_tests::reqwest::{Method, StatusCode};
use itsm_integration_tests::serde_json::{json, Value};
use itsm_integration_tests::{
    expect_problem, header, on_both_backends, read, Backend, Config, RealServer, ScratchDatabase,
    TestApp,
};

const WAIT: Duration = Duration::from_secs(30);

/// Loopback allowed, quick polls and retries: tests run in seconds.
fn quick(config: &mut Config) {
    config.webhooks.worker = true;
    config.webhooks.allowed_networks =
        domain::webhooks::parse_networks("127.0.0.0/8,::1/128").unwrap();
    config.webhooks.poll_interval = Duration::from_millis(20);
    config.webhooks.timeout = Duration::from_secs(2);
    config.webhooks.retry.base = Duration::from_millis(50);
    config.webhooks.retry.max = Duration::from_millis(200);
    config.webhooks.retry.max_attempts = 4;
}

/// As `quick`, and a subscription turns off after 3 failed attempts in a row.
fn quick_to_disable(config: &mut Config) {
    quick(config);
    config.webhooks.disable_after = 3;
    config.webhooks.retry.max_attempts = 10;
}

async fn subscribe(app: &TestApp, url: &str, event_types: &[&str]) -> Value {
    let response = app
        .admin(Method::POST, "/api/v1/webhooks")
        .json(&json!({"url": url, "event_types": event_types, "description": "test receiver"}))
        .send()
        .await
        .unwrap();
    let (status, webhook) = read(response).await;
    assert_eq!(status, StatusCode::CREATED, "{webhook}");
    webhook
}

async fn create_incident(app: &TestApp, title: &str) -> Value {
    let response = app
        .admin(Method::POST, "/api/v1/incidents")
        .json(&json!({"title": title, "description": "webhook test", "impact": "low", "urgency": "low"}))
        .send()
        .await
        .unwrap();
    let (status, incident) = read(response).await;
    assert_eq!(status, StatusCode::CREATED, "{incident}");
    incident
}

async fn deliveries(app: &TestApp, webhook: &str) -> Vec<Value> {
    app.list_all(&format!("/api/v1/webhooks/{webhook}/deliveries"))
        .await
}

/// Waits until the delivery log satisfies `done`.
async fn wait_for_log(app: &TestApp, webhook: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let started = std::time::Instant::now();
    loop {
        let log = deliveries(app, webhook).await;
        if done(&log) {
            return log;
        }
        assert!(
            started.elapsed() < WAIT,
            "delivery log never got there: {log:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn ids_of(received: &[Received]) -> HashSet<String> {
    received.iter().map(|r| r.webhook_id.clone()).collect()
}

async fn subscriptions_are_managed_and_bad_input_is_refused(app: TestApp) {
    let before = app.events_after(0).await.len();
    let created = app
        .admin(Method::POST, "/api/v1/webhooks")
        .json(&json!({"url": "http://127.0.0.1:9/hook", "event_types": ["incident.*", "problem.created"]}))
        .send()
        .await
        .unwrap();
    let location = header(&created, "location").unwrap();
    let (status, webhook) = read(created).await;
    assert_eq!(status, StatusCode::CREATED, "{webhook}");
    let secret = webhook["secret"].as_str().unwrap().to_owned();
    assert!(
        secret.starts_with("whsec_") && secret.len() > 40,
        "{secret}"
    );
    assert_eq!(webhook["active"], true);
    assert_eq!(
        webhook["event_types"],
        json!(["incident.*", "problem.created"])
    );
    let id = webhook["id"].as_str().unwrap().to_owned();
    assert_eq!(location, format!("/api/v1/webhooks/{id}"));

    // The secret is never shown again, nor written to the audit trail or the event feed.
    let got = app.admin(Method::GET, &location).send().await.unwrap();
    let text = got.text().await.unwrap();
    assert!(
        !text.contains(&secret) && !text.contains("whsec_"),
        "{text}"
    );
    let listed = app.list_all("/api/v1/webhooks").await;
    assert_eq!(listed.len(), 1);
    assert!(listed[0].get("secret").is_none());
    let audit = app.audit_of("webhook", &id).await;
    assert!(!json!(audit).to_string().contains(&secret));
    let events = app.events_after(0).await;
    assert_eq!(events.len(), before + 1);
    assert_eq!(events.last().unwrap()["type"], "webhook.created");
    assert!(!json!(events).to_string().contains(&secret));

    // An integration token manages webhooks too.
    let (_, integration) = app.user_with_roles("crm-sync", &["integration"]).await;
    let response = app
        .request(Method::PATCH, &location, &integration)
        .header("content-type", "application/merge-patch+json")
        .body(json!({"active": false, "event_types": ["incident.created"]}).to_string())
        .send()
        .await
        .unwrap();
    let (status, patched) = read(response).await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["active"], false);
    assert_eq!(patched["version"], 2);

    // Bad input: 422 naming the field, nothing stored.
    let marks = app.events_after(0).await.len();
    for (body, field) in [
        (
            json!({"url": "ftp://example.com/hook", "event_types": ["*"]}),
            "url",
        ),
        (
            json!({"url": "file:///etc/passwd", "event_types": ["*"]}),
            "url",
        ),
        (
            json!({"url": "http://169.254.169.254/latest/meta-data", "event_types": ["*"]}),
            "url",
        ),
        (
            json!({"url": "http://[fe80::1]/hook", "event_types": ["*"]}),
            "url",
        ),
        (
            json!({"url": "http://10.0.0.5/hook", "event_types": ["*"]}),
            "url",
        ),
        (
            json!({"url": "http://user:pw@example.com/", "event_types": ["*"]}),
            "url",
        ),
        (
            json!({"url": "https://example.com/hook", "event_types": []}),
            "event_types",
        ),
        (
            json!({"url": "https://example.com/hook", "event_types": ["incident%"]}),
            "event_types[0]",
        ),
        (json!({"url": "https://example.com/hook"}), "event_types"),
        (
            json!({"url": "https://example.com/hook", "event_types": ["*"], "secret": "mine"}),
            "secret",
        ),
    ] {
        let response = app
            .admin(Method::POST, "/api/v1/webhooks")
            .json(&body)
            .send()
            .await
            .unwrap();
        let problem = expect_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
        let fields = itsm_integration_tests::error_fields(&problem);
        assert!(fields.contains(&field.to_owned()), "{body}: {problem}");
    }
    let response = app
        .admin(Method::PATCH, &location)
        .header("content-type", "application/merge-patch+json")
        .body(json!({"url": "gopher://example.com/"}).to_string())
        .send()
        .await
        .unwrap();
    expect_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    let response = app
        .admin(Method::GET, &format!("{location}/deliveries?status=lost"))
        .send()
        .await
        .unwrap();
    expect_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(
        app.events_after(0).await.len(),
        marks,
        "bad input stored something"
    );

    let response = app.admin(Method::DELETE, &location).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let response = app.admin(Method::GET, &location).send().await.unwrap();
    expect_problem(response, StatusCode::NOT_FOUND).await;
}

async fn loopback_is_refused_unless_configured(app: TestApp) {
    for url in [
        "http://127.0.0.1:8080/hook",
        "http://localhost/hook",
        "http://[::1]/",
    ] {
        let response = app
            .admin(Method::POST, "/api/v1/webhooks")
            .json(&json!({"url": url, "event_types": ["*"]}))
            .send()
            .await
            .unwrap();
        expect_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    }
}

async fn deliveries_are_signed_and_in_order_per_entity(app: TestApp) {
    let receiver = Receiver::start();
    let webhook = subscribe(&app, &receiver.url, &["incident.*"]).await;
    let secret = webhook["secret"].as_str().unwrap().to_owned();
    let after = app.events_after(0).await.last().unwrap()["sequence"]
        .as_i64()
        .unwrap();
    // Three incidents, each changed several times, concurrently.
    let mut tasks = Vec::new();
    for n in 0..3 {
        let base = app.base.clone();
        let token = app.admin_token.clone();
        let client = app.client.clone();
        let incident = create_incident(&app, &format!("ordered {n}")).await;
        tasks.push(tokio::spawn(async move {
            let id = incident["id"].as_str().unwrap().to_owned();
            for step in 0..5 {
                let response = client
                    .patch(format!("{base}/api/v1/incidents/{id}"))
                    .bearer_auth(&token)
                    .header("content-type", "application/merge-patch+json")
                    .body(json!({"description": format!("step {step}")}).to_string())
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), StatusCode::OK);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    // A problem is not an incident.* event: not delivered.
    let response = app
        .admin(Method::POST, "/api/v1/problems")
        .json(&json!({"title": "not for this receiver", "description": "x"}))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());

    let expected: Vec<Value> = app
        .events_after(after)
        .await
        .into_iter()
        .filter(|e| e["type"].as_str().unwrap().starts_with("incident."))
        .collect();
    assert!(expected.len() >= 18, "{expected:?}");
    let received = receiver
        .wait_until(WAIT, |got| ids_of(got).len() >= expected.len())
        .await;
    assert_eq!(ids_of(&received).len(), expected.len());
    for request in &received {
        assert!(
            verify(
                &secret,
                &request.webhook_id,
                &request.timestamp,
                &request.body,
                &request.signature
            ),
            "bad signature on {request:?}"
        );
        let age = chrono::Utc::now().timestamp() - request.timestamp.parse::<i64>().unwrap();
        assert!(
            (0..60).contains(&age),
            "webhook-timestamp is not now: {age}"
        );
        let body = request.json();
        assert!(body["type"].as_str().unwrap().starts_with("incident."));
        assert!(
            body["timestamp"].is_string() && body["data"].is_object(),
            "{body}"
        );
    }
    // Per entity, what arrived (first arrival of each webhook-id) is the feed's order.
    let mut seen = HashSet::new();
    let mut arrived: HashMap<String, Vec<Value>> = HashMap::new();
    for request in &received {
        if seen.insert(request.webhook_id.clone()) {
            let body = request.json();
            let entity = body["data"]["id"].as_str().unwrap().to_owned();
            arrived
                .entry(entity)
                .or_default()
                .push(json!([body["type"], body["data"]]));
        }
    }
    let mut wanted: HashMap<String, Vec<Value>> = HashMap::new();
    for event in &expected {
        wanted
            .entry(event["entity_id"].as_str().unwrap().to_owned())
            .or_default()
            .push(json!([event["type"], event["data"]]));
    }
    assert_eq!(arrived, wanted);

    // The receiver may have answered before the worker recorded the answer.
    let log = wait_for_log(&app, webhook["id"].as_str().unwrap(), |log| {
        log.iter().all(|d| d["status"] == "delivered")
    })
    .await;
    assert_eq!(log.len(), expected.len());
    assert!(
        log.iter().all(|d| d["attempts"] == 1
            && d["response_status"] == 200
            && d["latency_ms"].is_i64()
            && d["next_attempt_at"].is_null()),
        "{log:?}"
    );
    assert!(log[0]["response_excerpt"]
        .as_str()
        .unwrap()
        .contains("received"));
}

async fn failed_deliveries_are_retried_with_the_same_id(app: TestApp) {
    let receiver = Receiver::start();
    receiver.answer(500);
    let webhook = subscribe(&app, &receiver.url, &["incident.created"]).await;
    let id = webhook["id"].as_str().unwrap().to_owned();
    let first = create_incident(&app, "first").await;
    let second = create_incident(&app, "second").await;
    let failed = receiver.wait_until(WAIT, |got| got.len() >= 2).await;
    // The second incident's delivery waits behind nothing (another entity), but each
    // entity's retries keep their webhook-id.
    let log = wait_for_log(&app, &id, |log| {
        log.iter().any(|d| {
            d["attempts"].as_i64() >= Some(1)
                && d["status"] == "pending"
                && d["response_status"] == 500
        })
    })
    .await;
    assert!(log.iter().all(|d| d["status"] == "pending"), "{log:?}");
    assert!(log.iter().any(|d| d["next_attempt_at"].is_string()));
    assert!(failed.iter().all(|r| !r.webhook_id.is_empty()));
    receiver.answer(200);
    let log = wait_for_log(&app, &id, |log| {
        log.len() == 2 && log.iter().all(|d| d["status"] == "delivered")
    })
    .await;
    let received = receiver.received();
    for delivery in &log {
        let attempts: Vec<&Received> = received
            .iter()
            .filter(|r| r.webhook_id == delivery["id"].as_str().unwrap())
            .collect();
        assert!(attempts.len() >= 2, "{delivery}");
        assert_eq!(
            attempts.len() as i64,
            delivery["attempts"].as_i64().unwrap()
        );
        let bodies: HashSet<&str> = attempts.iter().map(|r| r.body.as_str()).collect();
        assert_eq!(bodies.len(), 1, "a retry changed the body");
        assert_eq!(delivery["response_status"], 200);
    }
    let delivered: HashSet<String> = received
        .iter()
        .map(|r| r.json()["data"]["id"].as_str().unwrap().to_owned())
        .collect();
    assert!(delivered.contains(first["id"].as_str().unwrap()));
    assert!(delivered.contains(second["id"].as_str().unwrap()));
}

async fn a_failing_delivery_holds_back_later_ones_of_its_entity(app: TestApp) {
    let receiver = Receiver::start();
    receiver.answer(503);
    let webhook = subscribe(&app, &receiver.url, &["incident.*"]).await;
    let id = webhook["id"].as_str().unwrap().to_owned();
    let incident = create_incident(&app, "held back").await;
    let path = format!("/api/v1/incidents/{}", incident["id"].as_str().unwrap());
    let response = app
        .admin(Method::PATCH, &path)
        .header("content-type", "application/merge-patch+json")
        .body(json!({"description": "changed"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    // Several attempts of the creation, and nothing of the change while it fails.
    let failed = receiver.wait_until(WAIT, |got| got.len() >= 3).await;
    let ids = ids_of(&failed);
    assert_eq!(ids.len(), 1, "a later event of the entity went out first");
    assert!(failed
        .iter()
        .all(|r| r.json()["type"] == "incident.created"));
    receiver.answer(200);
    wait_for_log(&app, &id, |log| {
        log.len() == 2 && log.iter().all(|d| d["status"] == "delivered")
    })
    .await;
    let received = receiver.received();
    let types: Vec<String> = received
        .iter()
        .map(|r| r.json()["type"].as_str().unwrap().to_owned())
        .collect();
    let last_created = types.iter().rposition(|t| t == "incident.created").unwrap();
    let first_updated = types.iter().position(|t| t == "incident.updated").unwrap();
    assert!(last_created < first_updated, "{types:?}");
}

async fn exhausted_deliveries_are_dead_lettered_and_can_be_redelivered(app: TestApp) {
    let receiver = Receiver::start();
    receiver.answer(500);
    let webhook = subscribe(&app, &receiver.url, &["incident.created"]).await;
    let id = webhook["id"].as_str().unwrap().to_owned();
    create_incident(&app, "dead letter").await;
    let log = wait_for_log(&app, &id, |log| {
        log.len() == 1 && log[0]["status"] == "dead"
    })
    .await;
    let dead = &log[0];
    assert_eq!(dead["attempts"], 4);
    assert_eq!(dead["response_status"], 500);
    assert!(dead["last_error"].as_str().unwrap().contains("500"));
    let delivery_id = dead["id"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let received = receiver.received();
    assert_eq!(received.len(), 4, "attempts did not stop at the bound");
    assert!(received.iter().all(|r| r.webhook_id == delivery_id));
    let response = app
        .admin(
            Method::GET,
            &format!("/api/v1/webhooks/{id}/deliveries?status=dead"),
        )
        .send()
        .await
        .unwrap();
    let (_, page) = read(response).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1);

    receiver.answer(200);
    let redeliver = format!("/api/v1/webhooks/{id}/deliveries/{delivery_id}/redeliver");
    let response = app.admin(Method::POST, &redeliver).send().await.unwrap();
    let (status, queued) = read(response).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{queued}");
    assert_eq!(queued["status"], "pending");
    let log = wait_for_log(&app, &id, |log| log[0]["status"] == "delivered").await;
    assert_eq!(log[0]["attempts"], 1);
    let received = receiver.received();
    assert_eq!(received.len(), 5);
    assert_eq!(received[4].webhook_id, delivery_id);
    assert_eq!(received[4].body, received[0].body);
    // A delivered one can be sent again; an unknown one is a 404.
    let response = app
        .admin(
            Method::POST,
            &format!("/api/v1/webhooks/{id}/deliveries/nope/redeliver"),
        )
        .send()
        .await
        .unwrap();
    expect_problem(response, StatusCode::NOT_FOUND).await;
}

async fn a_run_of_failures_turns_the_subscription_off(app: TestApp) {
    let receiver = Receiver::start();
    receiver.answer(500);
    let webhook = subscribe(&app, &receiver.url, &["incident.created"]).await;
    let id = webhook["id"].as_str().unwrap().to_owned();
    let after = app.events_after(0).await.last().unwrap()["sequence"]
        .as_i64()
        .unwrap();
    create_incident(&app, "one").await;
    create_incident(&app, "two").await;
    let started = std::time::Instant::now();
    let off = loop {
        let (_, current) = read(
            app.admin(Method::GET, &format!("/api/v1/webhooks/{id}"))
                .send()
                .await
                .unwrap(),
        )
        .await;
        if current["active"] == false {
            break current;
        }
        assert!(started.elapsed() < WAIT, "never turned off: {current}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Attempts already in flight when it turned off may add to the run.
    let run = off["consecutive_failures"].as_i64().unwrap();
    assert!((3..=4).contains(&run), "{off}");
    assert!(off["disabled_reason"]
        .as_str()
        .unwrap()
        .contains("consecutive"));
    let attempts_when_off = receiver.received().len();
    let events = app.events_after(after).await;
    let disabled: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "webhook.disabled")
        .collect();
    assert_eq!(disabled.len(), 1);
    assert_eq!(disabled[0]["entity_id"], id.as_str());
    let audit = app.audit_of("webhook", &id).await;
    assert!(audit.iter().any(|a| a["action"] == "disable"), "{audit:?}");
    // Turned off, nothing more is attempted.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let attempts = receiver.received().len();
    assert_eq!(attempts, attempts_when_off);
    assert!(attempts <= 4);
    // Turned on again, what waited is delivered.
    receiver.answer(200);
    let response = app
        .admin(Method::PATCH, &format!("/api/v1/webhooks/{id}"))
        .header("content-type", "application/merge-patch+json")
        .body(json!({"active": true}).to_string())
        .send()
        .await
        .unwrap();
    let (status, on) = read(response).await;
    assert_eq!(status, StatusCode::OK, "{on}");
    assert_eq!(on["consecutive_failures"], 0);
    assert!(on["disabled_reason"].is_null());
    wait_for_log(&app, &id, |log| {
        log.len() == 2 && log.iter().all(|d| d["status"] == "delivered")
    })
    .await;
}

async fn test_messages_and_secret_rotation(app: TestApp) {
    let receiver = Receiver::start();
    let webhook = subscribe(&app, &receiver.url, &["incident.created"]).await;
    let id = webhook["id"].as_str().unwrap().to_owned();
    let old = webhook["secret"].as_str().unwrap().to_owned();
    let test = format!("/api/v1/webhooks/{id}/test");
    let response = app.admin(Method::POST, &test).send().await.unwrap();
    let (status, sent) = read(response).await;
    assert_eq!(status, StatusCode::OK, "{sent}");
    assert_eq!(sent["status"], "delivered");
    assert_eq!(sent["event_type"], "webhook.test");
    assert_eq!(sent["response_status"], 200);
    let received = receiver.received();
    assert_eq!(received.len(), 1);
    let first = &received[0];
    assert_eq!(first.webhook_id, sent["id"].as_str().unwrap());
    assert_eq!(first.json()["type"], "webhook.test");
    assert!(verify(
        &old,
        &first.webhook_id,
        &first.timestamp,
        &first.body,
        &first.signature
    ));
    assert_eq!(first.signature.split(' ').count(), 1);

    // Rotation with an overlap: both secrets sign.
    let response = app
        .admin(
            Method::POST,
            &format!("/api/v1/webhooks/{id}/rotate-secret"),
        )
        .json(&json!({"overlap_seconds": 3600}))
        .send()
        .await
        .unwrap();
    let (status, rotated) = read(response).await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let new = rotated["secret"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    assert!(rotated["previous_secret_expires_at"].is_string());
    create_incident(&app, "during the overlap").await;
    let received = receiver.wait_until(WAIT, |got| got.len() >= 2).await;
    let during = &received[1];
    assert_eq!(
        during.signature.split(' ').count(),
        2,
        "{}",
        during.signature
    );
    assert!(verify(
        &new,
        &during.webhook_id,
        &during.timestamp,
        &during.body,
        &during.signature
    ));
    assert!(verify(
        &old,
        &during.webhook_id,
        &during.timestamp,
        &during.body,
        &during.signature
    ));
    let first_signature = during.signature.split(' ').next().unwrap();
    assert!(verify(
        &new,
        &during.webhook_id,
        &during.timestamp,
        &during.body,
        first_signature
    ));

    // Without an overlap only the new secret signs.
    let response = app
        .admin(
            Method::POST,
            &format!("/api/v1/webhooks/{id}/rotate-secret"),
        )
        .json(&json!({"overlap_seconds": 0}))
        .send()
        .await
        .unwrap();
    let (_, rotated) = read(response).await;
    let newest = rotated["secret"].as_str().unwrap().to_owned();
    let response = app.admin(Method::POST, &test).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let last = receiver.received().pop().unwrap();
    assert_eq!(last.signature.split(' ').count(), 1);
    assert!(verify(
        &newest,
        &last.webhook_id,
        &last.timestamp,
        &last.body,
        &last.signature
    ));
    assert!(!verify(
        &new,
        &last.webhook_id,
        &last.timestamp,
        &last.body,
        &last.signature
    ));
    let response = app
        .admin(
            Method::POST,
            &format!("/api/v1/webhooks/{id}/rotate-secret"),
        )
        .json(&json!({"overlap_seconds": 99999999}))
        .send()
        .await
        .unwrap();
    expect_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    let audit = app.audit_of("webhook", &id).await;
    let text = json!(audit).to_string();
    assert!(!text.contains(&old) && !text.contains(&new) && !text.contains(&newest));

    // A receiver that is gone: the test answers what happened, it does not fail.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let gone = format!("http://{}/hook", closed.local_addr().unwrap());
    drop(closed);
    let response = app
        .admin(Method::PATCH, &format!("/api/v1/webhooks/{id}"))
        .header("content-type", "application/merge-patch+json")
        .body(json!({"url": gone}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let response = app.admin(Method::POST, &test).send().await.unwrap();
    let (status, sent) = read(response).await;
    assert_eq!(status, StatusCode::OK, "{sent}");
    assert_eq!(sent["status"], "dead");
    assert!(sent["last_error"].is_string());
}

on_both_backends!(
    subscriptions_are_managed_and_bad_input_is_refused with quick,
    loopback_is_refused_unless_configured,
    deliveries_are_signed_and_in_order_per_entity with quick,
    failed_deliveries_are_retried_with_the_same_id with quick,
    a_failing_delivery_holds_back_later_ones_of_its_entity with quick,
    exhausted_deliveries_are_dead_lettered_and_can_be_redelivered with quick,
    a_run_of_failures_turns_the_subscription_off with quick_to_disable,
    test_messages_and_secret_rotation with quick,
);

/// The real process killed with SIGKILL while it delivers, then started again: every event is
/// delivered at least once, none is lost.
async fn nothing_is_lost_when_killed_mid_stream(backend: Backend) {
    let Some(database) = ScratchDatabase::new(backend) else {
        panic!("{}", itsm_integration_tests::NOT_BUILT_FOR_POSTGRES);
    };
    let receiver = Receiver::start();
    // Slow answers, so that the kill comes while deliveries are in flight: four at a time,
    // 60 events take 4.5 s, longer than their creation on a loaded machine.
    receiver.delay(Duration::from_millis(300));
    let settings = [
        ("ITSM_WEBHOOK_ALLOWED_NETWORKS", "127.0.0.0/8"),
        ("ITSM_WEBHOOK_POLL_MS", "20"),
        ("ITSM_WEBHOOK_TIMEOUT_MS", "1000"),
        ("ITSM_WEBHOOK_BACKOFF_BASE_MS", "50"),
        ("ITSM_WEBHOOK_BACKOFF_MAX_MS", "200"),
        ("ITSM_WEBHOOK_CONCURRENCY", "4"),
    ];
    let mut server = RealServer::start_with(&database.url, &settings).await;
    let token = server.admin_token().await;
    let client = itsm_integration_tests::reqwest::Client::new();
    let response = client
        .post(format!("{}/api/v1/webhooks", server.base))
        .bearer_auth(&token)
        .json(&json!({"url": receiver.url, "event_types": ["incident.created"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let mut created = HashSet::new();
    for n in 0..60 {
        let response = client
            .post(format!("{}/api/v1/incidents", server.base))
            .bearer_auth(&token)
            .json(&json!({"title": format!("stream {n}"), "description": "x", "impact": "low", "urgency": "low"}))
            .send()
            .await
            .unwrap();
        let (status, incident) = read(response).await;
        assert_eq!(status, StatusCode::CREATED, "{incident}");
        created.insert(incident["id"].as_str().unwrap().to_owned());
    }
    receiver.wait_until(WAIT, |got| got.len() >= 10).await;
    server.signal("KILL");
    server.wait(Duration::from_secs(10)).await;
    receiver.delay(Duration::from_millis(20));
    let before_restart = ids_of(&receiver.received()).len();
    assert!(
        before_restart < created.len(),
        "everything was delivered before the kill"
    );

    let _server = RealServer::start_with(&database.url, &settings).await;
    let received = receiver
        .wait_until(Duration::from_secs(60), |got| {
            let delivered: HashSet<String> = got
                .iter()
                .filter_map(|r| r.json()["data"]["id"].as_str().map(str::to_owned))
                .collect();
            created.is_subset(&delivered)
        })
        .await;
    // At least once: some may arrive twice (in flight at the kill), each with its one id.
    let mut ids_per_incident: HashMap<String, HashSet<String>> = HashMap::new();
    for request in &received {
        let incident = request.json()["data"]["id"].as_str().unwrap().to_owned();
        ids_per_incident
            .entry(incident)
            .or_default()
            .insert(request.webhook_id.clone());
    }
    assert_eq!(ids_per_incident.len(), created.len());
    assert!(
        ids_per_incident.values().all(|ids| ids.len() == 1),
        "one event got two webhook-ids"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_nothing_is_lost_when_killed_mid_stream() {
    nothing_is_lost_when_killed_mid_stream(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(itsm_no_postgres, ignore = "ITSM_TEST_POSTGRES_URL is not set")]
async fn postgres_nothing_is_lost_when_killed_mid_stream() {
    nothing_is_lost_when_killed_mid_stream(Backend::Postgres).await;
}

/// Two nodes on one PostgreSQL run the delivery worker at once: every event reaches the
/// receiver, and none twice (claims are leases in the database).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(itsm_no_postgres, ignore = "ITSM_TEST_POSTGRES_URL is not set")]
async fn two_nodes_deliver_each_event_once() {
    let Some(database) = ScratchDatabase::new(Backend::Postgres) else {
        panic!("{}", itsm_integration_tests::NOT_BUILT_FOR_POSTGRES);
    };
    let receiver = Receiver::start();
    let settings = [
        ("ITSM_WEBHOOK_ALLOWED_NETWORKS", "127.0.0.0/8"),
        ("ITSM_WEBHOOK_POLL_MS", "20"),
        ("ITSM_WEBHOOK_TIMEOUT_MS", "2000"),
        ("ITSM_WEBHOOK_CONCURRENCY", "4"),
    ];
    let first = RealServer::start_with(&database.url, &settings).await;
    let second = RealServer::start_with(&database.url, &settings).await;
    let token = first.admin_token().await;
    let client = itsm_integration_tests::reqwest::Client::new();
    let response = client
        .post(format!("{}/api/v1/webhooks", first.base))
        .bearer_auth(&token)
        .json(&json!({"url": receiver.url, "event_types": ["incident.created"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let mut created = HashSet::new();
    for n in 0..80 {
        let node = if n % 2 == 0 { &first } else { &second };
        let response = client
            .post(format!("{}/api/v1/incidents", node.base))
            .bearer_auth(&token)
            .json(&json!({"title": format!("two nodes {n}")}))
            .send()
            .await
            .unwrap();
        let (status, incident) = read(response).await;
        assert_eq!(status, StatusCode::CREATED, "{incident}");
        created.insert(incident["id"].as_str().unwrap().to_owned());
    }
    let delivered_ids = |got: &[Received]| -> Vec<String> {
        got.iter()
            .filter_map(|r| r.json()["data"]["id"].as_str().map(str::to_owned))
            .collect()
    };
    receiver
        .wait_until(Duration::from_secs(60), |got| {
            created.is_subset(&delivered_ids(got).into_iter().collect())
        })
        .await;
    // Time for a second delivery of anything, were one to come.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let delivered = delivered_ids(&receiver.received());
    assert_eq!(
        delivered.len(),
        created.len(),
        "an event was delivered twice"
    );
    assert_eq!(
        delivered.into_iter().collect::<HashSet<_>>(),
        created,
        "every event once"
    );
}
