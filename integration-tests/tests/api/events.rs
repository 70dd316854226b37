//! The event feed integrators poll (`/api/v1/events`) and the audit trail
//! (`/api/v1/audit-events`).

use std::collections::HashMap;

use itsm_integration_tests::reqwest::{Method, StatusCode};
use itsm_integration_tests::serde_json::{json, Value};
use itsm_integration_tests::{expect_problem, on_both_backends, read, TestApp};

fn sequences(events: &[Value]) -> Vec<i64> {
    events
        .iter()
        .map(|e| e["sequence"].as_i64().expect("sequence"))
        .collect()
}

fn types(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["type"].as_str().unwrap()).collect()
}

async fn page(app: &TestApp, query: &str) -> (Value, Option<String>) {
    let response = app
        .admin(Method::GET, &format!("/api/v1/events?{query}"))
        .send()
        .await
        .unwrap();
    let link = response
        .headers()
        .get("link")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let (status, body) = read(response).await;
    assert_eq!(status, StatusCode::OK, "?{query}: {body}");
    (body, link)
}

async fn user(app: &TestApp, username: &str) -> Value {
    let response = app
        .admin(Method::POST, "/api/v1/users")
        .json(&json!({"username": username, "display_name": username, "roles": ["agent"]}))
        .send()
        .await
        .unwrap();
    let (status, user) = read(response).await;
    assert_eq!(status, StatusCode::CREATED, "{user}");
    user
}

async fn the_feed_is_ordered_and_filterable(app: TestApp) {
    // The bootstrap admin is the first event.
    let (first, _) = page(&app, "after=0").await;
    assert_eq!(first["items"][0]["sequence"], 1);
    assert_eq!(first["items"][0]["type"], "user.created");
    assert_eq!(first["items"][0]["entity_type"], "user");
    let start = app
        .events_after(0)
        .await
        .last()
        .and_then(|e| e["sequence"].as_i64())
        .unwrap();

    let alice = user(&app, "alice").await;
    let desk = app.group("Desk").await;
    let response = app
        .admin(
            Method::PATCH,
            &format!("/api/v1/users/{}", alice["id"].as_str().unwrap()),
        )
        .json(&json!({"display_name": "Alice A."}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let response = app
        .admin(
            Method::POST,
            &format!("/api/v1/groups/{}/members", desk["id"].as_str().unwrap()),
        )
        .json(&json!({"user_id": alice["id"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let bob = user(&app, "bob").await;

    // Everything after `start`: gap-free, increasing, in commit order.
    let (all, link) = page(&app, &format!("after={start}")).await;
    assert!(link.is_none());
    let items = all["items"].as_array().unwrap();
    assert_eq!(
        sequences(items),
        (start + 1..=start + 5).collect::<Vec<_>>()
    );
    assert_eq!(
        types(items),
        [
            "user.created",
            "group.created",
            "user.updated",
            "group.member_added",
            "user.created"
        ]
    );
    assert_eq!(all["next_cursor"], (start + 5).to_string());
    assert_eq!(items[0]["entity_id"], alice["id"]);
    assert_eq!(items[0]["data"]["username"], "alice");
    assert_eq!(items[2]["data"]["display_name"], "Alice A.");
    assert_eq!(items[3]["entity_type"], "group");
    assert_eq!(items[3]["entity_id"], desk["id"]);
    assert_eq!(items[3]["data"]["user_id"], alice["id"]);
    assert_eq!(items[4]["entity_id"], bob["id"]);
    for item in items {
        let at = item["occurred_at"].as_str().unwrap();
        assert!(chrono::DateTime::parse_from_rfc3339(at).is_ok(), "{at}");
    }

    // A family.
    let (users, _) = page(&app, &format!("after={start}&types=user.*")).await;
    let users = users["items"].as_array().unwrap();
    assert_eq!(
        types(users),
        ["user.created", "user.updated", "user.created"]
    );
    assert_eq!(
        sequences(users),
        [start + 1, start + 3, start + 5],
        "filtered sequences keep their numbers"
    );
    // Exact types, comma-separated or repeated.
    for query in [
        "types=user.created,group.member_added",
        "types=user.created&types=group.member_added",
    ] {
        let (body, _) = page(&app, &format!("after={start}&{query}")).await;
        assert_eq!(
            types(body["items"].as_array().unwrap()),
            ["user.created", "group.member_added", "user.created"],
            "{query}"
        );
    }
    let (groups, _) = page(&app, &format!("after={start}&types=group.*")).await;
    assert_eq!(
        types(groups["items"].as_array().unwrap()),
        ["group.created", "group.member_added"]
    );
    // A family nothing belongs to matches nothing.
    let (none, _) = page(&app, "after=0&types=incident.*").await;
    assert_eq!(none["items"], json!([]));
    assert!(none["next_cursor"].is_null());

    // Past the end: nothing, and nothing to resume from.
    let (end, link) = page(&app, &format!("after={}", start + 5)).await;
    assert_eq!(end["items"], json!([]));
    assert!(end["next_cursor"].is_null());
    assert!(link.is_none());
    let (end, _) = page(&app, "after=1000000").await;
    assert_eq!(end["items"], json!([]));
}

async fn the_feed_pages_by_sequence(app: TestApp) {
    for i in 0..4 {
        user(&app, &format!("feeder-{i}")).await;
    }
    // 5 events: the admin and the four users.
    let mut after = 0;
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let (body, link) = page(&app, &format!("after={after}&limit=2&types=user.*")).await;
        let items = body["items"].as_array().unwrap().clone();
        pages += 1;
        let more_follow = seen.len() + items.len() < 5;
        if more_follow {
            assert_eq!(items.len(), 2);
            let cursor = body["next_cursor"].as_str().expect("next_cursor");
            assert_eq!(cursor, items[1]["sequence"].as_i64().unwrap().to_string());
            let link = link.expect("Link when more follow");
            assert!(link.ends_with(">; rel=\"next\""), "{link}");
            assert!(link.contains(&format!("after={cursor}")), "{link}");
            assert!(link.contains("limit=2"), "{link}");
            assert!(link.contains("types=user."), "{link}");
        } else {
            assert!(link.is_none(), "no Link on the last page: {link:?}");
        }
        if items.is_empty() {
            break;
        }
        after = items.last().unwrap()["sequence"].as_i64().unwrap();
        seen.extend(sequences(&items));
    }
    assert_eq!(seen, [1, 2, 3, 4, 5]);
    assert_eq!(pages, 4, "pages of 2, 2, 1, then an empty one");
}

/// 32 writers at once through HTTP: every acknowledged change is in the feed exactly once, and
/// the feed is numbered 1..=N without a gap or a duplicate.
async fn the_feed_is_gap_free_under_concurrent_writers(app: TestApp) {
    const WRITERS: usize = 32;
    const WRITES_EACH: usize = 3;
    let mut tasks = Vec::new();
    for writer in 0..WRITERS {
        let client = app.client.clone();
        let base = app.base.clone();
        let token = app.admin_token.clone();
        tasks.push(tokio::spawn(async move {
            let mut created = Vec::new();
            for write in 0..WRITES_EACH {
                let (path, body, kind) = if (writer + write) % 2 == 0 {
                    (
                        "/api/v1/users",
                        json!({"username": format!("w{writer}-{write}"), "display_name": "W", "roles": ["agent"]}),
                        "user",
                    )
                } else {
                    (
                        "/api/v1/groups",
                        json!({"name": format!("Group {writer}-{write}")}),
                        "group",
                    )
                };
                let response = client
                    .post(format!("{base}{path}"))
                    .bearer_auth(&token)
                    .json(&body)
                    .send()
                    .await
                    .expect("request");
                let (status, entity) = read(response).await;
                assert_eq!(status, StatusCode::CREATED, "{body} -> {entity}");
                created.push((kind, entity["id"].as_str().unwrap().to_owned()));
            }
            created
        }));
    }
    let mut created = Vec::new();
    for task in tasks {
        created.extend(task.await.expect("writer task"));
    }
    assert_eq!(created.len(), WRITERS * WRITES_EACH);

    let events = app.events_after(0).await;
    let expected: Vec<i64> = (1..=events.len() as i64).collect();
    assert_eq!(sequences(&events), expected, "gap or duplicate in the feed");
    assert_eq!(events.len(), 1 + WRITERS * WRITES_EACH);

    let mut occurrences: HashMap<(String, String), usize> = HashMap::new();
    for event in &events {
        let kind = event["entity_type"].as_str().unwrap().to_owned();
        let expected_type = format!("{kind}.created");
        assert_eq!(event["type"], expected_type.as_str());
        *occurrences
            .entry((kind, event["entity_id"].as_str().unwrap().to_owned()))
            .or_default() += 1;
    }
    for (kind, id) in &created {
        assert_eq!(
            occurrences.get(&((*kind).to_owned(), id.clone())),
            Some(&1),
            "{kind} {id} is not in the feed exactly once"
        );
    }
    // Each also has exactly one audit entry.
    let audit = app.list_all("/api/v1/audit-events").await;
    assert_eq!(audit.len(), 1 + WRITERS * WRITES_EACH);
    // And reading the feed in small pages gives the same sequence.
    let mut after = 0;
    let mut paged = Vec::new();
    loop {
        let (body, _) = page(&app, &format!("after={after}&limit=7")).await;
        let items = body["items"].as_array().unwrap().clone();
        if items.is_empty() {
            break;
        }
        after = items.last().unwrap()["sequence"].as_i64().unwrap();
        paged.extend(sequences(&items));
    }
    assert_eq!(paged, expected);
}

async fn the_audit_trail_filters_by_entity(app: TestApp) {
    let alice = user(&app, "alice").await;
    let bob = user(&app, "bob").await;
    let desk = app.group("Desk").await;
    let alice_id = alice["id"].as_str().unwrap();
    for name in ["Alice 2", "Alice 3"] {
        let response = app
            .admin(Method::PATCH, &format!("/api/v1/users/{alice_id}"))
            .json(&json!({"display_name": name}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }

    let entries = app.audit_of("user", alice_id).await;
    let actions: Vec<&str> = entries
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert_eq!(actions, ["update", "update", "create"]);
    assert!(entries.iter().all(|e| e["entity_id"] == alice_id));
    assert_eq!(
        entries[0]["changes"],
        json!({"display_name": ["Alice 2", "Alice 3"]})
    );
    assert_eq!(
        entries[1]["changes"],
        json!({"display_name": ["alice", "Alice 2"]})
    );
    let ats: Vec<chrono::DateTime<chrono::FixedOffset>> = entries
        .iter()
        .map(|e| chrono::DateTime::parse_from_rfc3339(e["at"].as_str().unwrap()).unwrap())
        .collect();
    let mut sorted = ats.clone();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(ats, sorted, "newest first");

    // By type only.
    let users = app.list_all("/api/v1/audit-events?entity_type=user").await;
    assert!(users.iter().all(|e| e["entity_type"] == "user"));
    assert_eq!(users.len(), 1 + 2 + 2, "admin, alice, bob, two updates");
    let groups = app.list_all("/api/v1/audit-events?entity_type=group").await;
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0]["entity_id"], desk["id"]);
    assert_eq!(groups[0]["actor"]["username"], "admin");
    assert_eq!(groups[0]["changes"]["name"], json!([null, "Desk"]));
    // By id only, and for something else entirely.
    let bobs = app
        .list_all(&format!(
            "/api/v1/audit-events?entity_id={}",
            bob["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(bobs.len(), 1);
    assert_eq!(bobs[0]["action"], "create");
    assert!(app.audit_of("group", alice_id).await.is_empty());

    // Pages of two, newest first, with Link headers.
    let response = app
        .admin(Method::GET, "/api/v1/audit-events?entity_type=user&limit=2")
        .send()
        .await
        .unwrap();
    let link = response
        .headers()
        .get("link")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .expect("Link");
    let (_, first) = read(response).await;
    assert_eq!(first["items"].as_array().unwrap().len(), 2);
    assert!(
        link.contains("entity_type=user") && link.contains("limit=2"),
        "{link}"
    );
    let target = link
        .trim_start_matches('<')
        .trim_end_matches(">; rel=\"next\"")
        .to_owned();
    let (status, second) = read(app.admin(Method::GET, &target).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    let ids: Vec<&Value> = first["items"]
        .as_array()
        .unwrap()
        .iter()
        .chain(second["items"].as_array().unwrap())
        .map(|e| &e["id"])
        .collect();
    let expected: Vec<&Value> = users.iter().take(4).map(|e| &e["id"]).collect();
    assert_eq!(ids, expected);
}

async fn who_may_read_the_feed(app: TestApp) {
    let (_, agent) = app.user_with_roles("agent-smith", &["agent"]).await;
    let (_, change) = app.user_with_roles("cm", &["change_manager"]).await;
    let (_, requester) = app.user_with_roles("req", &["requester"]).await;
    for token in [&agent, &change] {
        let response = app
            .request(Method::GET, "/api/v1/events?types=user.*", token)
            .send()
            .await
            .unwrap();
        let (status, body) = read(response).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["items"].as_array().unwrap().len(), 4);
    }
    let response = app
        .request(Method::GET, "/api/v1/events", &requester)
        .send()
        .await
        .unwrap();
    expect_problem(response, StatusCode::FORBIDDEN).await;
    let response = app
        .request(Method::GET, "/api/v1/audit-events", &agent)
        .send()
        .await
        .unwrap();
    expect_problem(response, StatusCode::FORBIDDEN).await;
}

on_both_backends!(
    the_feed_is_ordered_and_filterable,
    the_feed_pages_by_sequence,
    the_feed_is_gap_free_under_concurrent_writers,
    the_audit_trail_filters_by_entity,
    who_may_read_the_feed,
);
