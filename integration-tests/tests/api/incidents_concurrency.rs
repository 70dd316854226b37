//! Incidents under concurrent writers, and the automatic closure of resolved incidents.

use std::time::{Duration, Instant};

use itsm_integration_tests::reqwest::{Method, StatusCode};
use itsm_integration_tests::serde_json::{json, Value};
use itsm_integration_tests::{header, on_both_backends, read, Config, TestApp};

use super::incidents::{act, create_incident, fetch, resolve_body, text, transition, INCIDENTS};

const WRITERS: usize = 64;

/// 64 clients each add one to a counter kept in the description, by read-modify-write with
/// `If-Match` and a retry on 412: no increment may be lost.
async fn concurrent_patches_with_if_match_lose_no_update(app: TestApp) {
    let (_, token) = app.user_with_roles("cora", &["agent"]).await;
    let incident = create_incident(
        &app,
        &token,
        json!({"title": "Counter", "description": "0"}),
    )
    .await;
    let url = app.url(&format!("{INCIDENTS}/{}", text(&incident, "id")));
    let mut tasks = Vec::new();
    for writer in 0..WRITERS {
        let client = app.client.clone();
        let url = url.clone();
        let token = token.clone();
        tasks.push(tokio::spawn(async move {
            let mut conflicts = 0usize;
            loop {
                let response = client.get(&url).bearer_auth(&token).send().await.unwrap();
                assert_eq!(response.status(), StatusCode::OK, "writer {writer} GET");
                let etag = header(&response, "etag").expect("ETag");
                let (_, current) = read(response).await;
                assert_eq!(etag, format!("\"{}\"", current["version"]));
                let counter: u64 = text(&current, "description").parse().unwrap();
                let response = client
                    .patch(&url)
                    .bearer_auth(&token)
                    .header("If-Match", &etag)
                    .json(&json!({"description": (counter + 1).to_string()}))
                    .send()
                    .await
                    .unwrap();
                match response.status() {
                    StatusCode::OK => return conflicts,
                    StatusCode::PRECONDITION_FAILED => conflicts += 1,
                    other => {
                        let (_, body) = read(response).await;
                        panic!("writer {writer}: unexpected {other}: {body}");
                    }
                }
            }
        }));
    }
    let mut conflicts = 0;
    for task in tasks {
        conflicts += task.await.expect("writer task");
    }
    let after = fetch(&app, &token, &text(&incident, "id")).await;
    assert_eq!(
        after["description"],
        WRITERS.to_string(),
        "lost updates ({conflicts} retries)"
    );
    assert_eq!(after["version"], WRITERS as i64 + 1);
    let updates = app
        .audit_of("incident", &text(&incident, "id"))
        .await
        .into_iter()
        .filter(|e| e["action"] == "update")
        .count();
    assert_eq!(updates, WRITERS);
}

/// Concurrent transitions without `If-Match` are still serialised: one `hold` wins, the others
/// see the new state.
async fn concurrent_transitions_are_serialised(app: TestApp) {
    let (_, token) = app.user_with_roles("cato", &["agent"]).await;
    let incident = create_incident(&app, &token, json!({"title": "Race"})).await;
    let id = text(&incident, "id");
    act(&app, &token, &id, json!({"action": "start"})).await;
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let client = app.client.clone();
        let url = app.url(&format!("{INCIDENTS}/{id}/transitions"));
        let token = token.clone();
        tasks.push(tokio::spawn(async move {
            let response = client
                .post(&url)
                .bearer_auth(&token)
                .json(&json!({"action": "hold", "on_hold_reason": "awaiting_caller"}))
                .send()
                .await
                .unwrap();
            read(response).await
        }));
    }
    let mut won = 0;
    for task in tasks {
        let (status, body) = task.await.unwrap();
        match status {
            StatusCode::OK => won += 1,
            StatusCode::CONFLICT => assert_eq!(
                body["allowed_actions"],
                json!(["assign", "resume", "cancel", "declare_major"]),
                "{body}"
            ),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(won, 1);
    let after = fetch(&app, &token, &id).await;
    assert_eq!(after["state"], "on_hold");
    assert_eq!(after["version"], 3);
}

/// 64 concurrent creates: each gets its own number, none fails.
async fn concurrent_creates_get_unique_numbers(app: TestApp) {
    let (_, token) = app.user_with_roles("cy", &["agent"]).await;
    let mut tasks = Vec::new();
    for n in 0..WRITERS {
        let client = app.client.clone();
        let url = app.url(INCIDENTS);
        let token = token.clone();
        tasks.push(tokio::spawn(async move {
            let response = client
                .post(&url)
                .bearer_auth(&token)
                .json(&json!({"title": format!("burst {n}")}))
                .send()
                .await
                .unwrap();
            read(response).await
        }));
    }
    let mut numbers = Vec::new();
    for task in tasks {
        let (status, body) = task.await.unwrap();
        assert_eq!(status, StatusCode::CREATED, "{body}");
        numbers.push(text(&body, "number"));
    }
    numbers.sort();
    let expected: Vec<String> = (1..=WRITERS).map(|n| format!("INC{n:07}")).collect();
    assert_eq!(numbers, expected);
}

fn fast_auto_close(config: &mut Config) {
    config.auto_close_after_seconds = 1;
    config.job_interval_seconds = 1;
}

/// Polls the incident until `done` holds, for at most 15 seconds.
async fn wait_for(app: &TestApp, token: &str, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let incident = fetch(app, token, id).await;
        if done(&incident) || Instant::now() > deadline {
            return incident;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn resolved_incidents_close_automatically(app: TestApp) {
    let (_, token) = app.user_with_roles("ace", &["agent"]).await;
    let (requester, requester_token) = app.user_with_roles("ria", &["requester"]).await;
    let new = |title: &str| json!({"title": title, "caller": text(&requester, "id")});
    let resolved = create_incident(&app, &token, new("Will close itself")).await;
    let parent = create_incident(&app, &token, new("Parent")).await;
    let child = create_incident(
        &app,
        &token,
        json!({"title": "Child", "parent_id": text(&parent, "id"),
               "caller": text(&requester, "id")}),
    )
    .await;
    let working = create_incident(&app, &token, new("Still being worked")).await;
    for incident in [&resolved, &parent] {
        let id = text(incident, "id");
        act(&app, &token, &id, json!({"action": "start"})).await;
        act(&app, &token, &id, resolve_body()).await;
    }
    act(
        &app,
        &token,
        &text(&working, "id"),
        json!({"action": "start"}),
    )
    .await;
    assert_eq!(
        fetch(&app, &token, &text(&child, "id")).await["state"],
        "resolved"
    );

    for incident in [&resolved, &parent, &child] {
        let id = text(incident, "id");
        let closed = wait_for(&app, &token, &id, |i| i["state"] == "closed").await;
        assert_eq!(
            closed["state"], "closed",
            "not closed automatically: {closed}"
        );
        assert!(closed["closed_at"].is_string());
        assert_eq!(closed["resolution_code"], "fixed");
    }
    let closure = |audit: Vec<Value>| {
        audit
            .into_iter()
            .find(|e| e["changes"]["state"] == json!(["resolved", "closed"]))
            .expect("the closure is audited")
    };
    let entry = closure(app.audit_of("incident", &text(&resolved, "id")).await);
    assert_eq!(entry["action"], "auto_close", "{entry}");
    assert!(entry["actor"]["id"].is_null(), "{entry}");
    let entry = closure(app.audit_of("incident", &text(&child, "id")).await);
    assert!(
        ["auto_close", "close_with_parent"].contains(&entry["action"].as_str().unwrap()),
        "{entry}"
    );
    // Closed means final, for the requester as well.
    let (status, problem) = read(
        transition(
            &app,
            &requester_token,
            &text(&resolved, "id"),
            json!({"action": "reopen"}),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    // Open incidents are left alone.
    let still = fetch(&app, &token, &text(&working, "id")).await;
    assert_eq!(still["state"], "in_progress");
    let events = app.events_after(0).await;
    assert!(events.iter().any(|e| e["type"] == "incident.state_changed"
        && e["entity_id"] == resolved["id"]
        && e["data"]["state"] == "closed"));
    let response = app
        .request(Method::GET, &format!("{INCIDENTS}?state=closed"), &token)
        .send()
        .await
        .unwrap();
    let (_, page) = read(response).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 3, "{page}");
}

/// 64 clients read incidents at once, by number and by id, some with references, some that
/// do not exist, some not theirs: reads that wait together are answered by one query on
/// PostgreSQL, and each client must still receive exactly the incident it asked for.
async fn concurrent_reads_each_get_their_own_incident(app: TestApp) {
    let (_, agent) = app.user_with_roles("rhea", &["agent"]).await;
    let (_, requester) = app.user_with_roles("remy", &["requester"]).await;
    let mut incidents = Vec::new();
    for n in 0..12 {
        let mut body = json!({"title": format!("Read {n}")});
        if n % 3 == 0 {
            body["external_refs"] = json!([{"system": "crm", "id": format!("C-{n}")}]);
        }
        incidents.push(create_incident(&app, &agent, body).await);
    }
    incidents.push(create_incident(&app, &requester, json!({"title": "Mine"})).await);
    let own = incidents.last().cloned().unwrap();
    let mut tasks = Vec::new();
    for reader in 0..WRITERS {
        let (app_client, agent_token) = (app.client.clone(), agent.clone());
        let (requester, own) = (requester.clone(), own.clone());
        let incident = incidents[reader % incidents.len()].clone();
        let base = app.url(INCIDENTS);
        tasks.push(tokio::spawn(async move {
            // Each reader asks several times, by a different key each time.
            for round in 0..6 {
                let (key, token, expected) = match (reader + round) % 6 {
                    0 | 1 => (text(&incident, "number"), &agent_token, Some(&incident)),
                    2 | 3 => (text(&incident, "id"), &agent_token, Some(&incident)),
                    4 => (format!("INC{:07}", 9_000_000 + reader), &agent_token, None),
                    _ if incident["id"] == own["id"] => {
                        (text(&own, "number"), &requester, Some(&own))
                    }
                    _ => (text(&incident, "number"), &requester, None),
                };
                let response = app_client
                    .get(format!("{base}/{key}"))
                    .bearer_auth(token)
                    .send()
                    .await
                    .unwrap();
                let etag = header(&response, "etag");
                let (status, body) = read(response).await;
                match expected {
                    Some(expected) => {
                        assert_eq!(status, StatusCode::OK, "reader {reader} {key}: {body}");
                        assert_eq!(body["id"], expected["id"], "reader {reader} {key}");
                        assert_eq!(body["number"], expected["number"]);
                        // A requester's view, and so its creation's answer, has no references.
                        if token == &agent_token && expected["id"] != own["id"] {
                            assert_eq!(body["external_refs"], expected["external_refs"]);
                        }
                        assert_eq!(etag, Some(format!("\"{}\"", body["version"])));
                    }
                    None => assert_eq!(status, StatusCode::NOT_FOUND, "reader {reader} {key}"),
                }
            }
        }));
    }
    for task in tasks {
        task.await.expect("reader task");
    }
}

on_both_backends!(
    concurrent_patches_with_if_match_lose_no_update,
    concurrent_reads_each_get_their_own_incident,
    concurrent_transitions_are_serialised,
    concurrent_creates_get_unique_numbers,
    resolved_incidents_close_automatically with fast_auto_close,
);
