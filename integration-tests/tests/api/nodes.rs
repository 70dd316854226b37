//! Several API nodes on one PostgreSQL, as users outgrow one machine: two `itsm` processes
//! driven at once keep numbers unique and the event feed gap-free, run each automatic closure
//! once, and refuse a user deactivated on the other node within a second.

use std::collections::HashSet;
use std::time::Duration;

use itsm_integration_tests::reqwest::{Client, StatusCode};
use itsm_integration_tests::serde_json::{json, Value};
use itsm_integration_tests::{read, Backend, RealServer, ScratchDatabase};

async fn call(
    client: &Client,
    token: &str,
    method: &str,
    url: String,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = match method {
        "POST" => client.post(url),
        "PATCH" => client.patch(url),
        _ => client.get(url),
    }
    .bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    read(request.send().await.expect("request")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(itsm_no_postgres, ignore = "ITSM_TEST_POSTGRES_URL is not set")]
async fn two_nodes_share_one_postgresql() {
    let Some(database) = ScratchDatabase::new(Backend::Postgres) else {
        panic!("{}", itsm_integration_tests::NOT_BUILT_FOR_POSTGRES);
    };
    // Resolved incidents close after a second; both nodes run the job every second.
    let jobs = [
        ("ITSM_AUTO_CLOSE_AFTER_SECONDS", "1"),
        ("ITSM_JOB_INTERVAL_SECONDS", "1"),
    ];
    let first = RealServer::start_with(&database.url, &jobs).await;
    let second = RealServer::start_with(&database.url, &jobs).await;
    let nodes = [first.base.clone(), second.base.clone()];
    let token = first.admin_token().await;
    let client = Client::new();

    // Creates on both nodes at once: every number is unique.
    let creates: Vec<_> = (0..120)
        .map(|n| {
            let (client, token, base) = (client.clone(), token.clone(), nodes[n % 2].clone());
            tokio::spawn(async move {
                let (status, incident) = call(
                    &client,
                    &token,
                    "POST",
                    format!("{base}/api/v1/incidents"),
                    Some(json!({"title": format!("Node load {n}")})),
                )
                .await;
                assert_eq!(status, StatusCode::CREATED, "{incident}");
                incident
            })
        })
        .collect();
    let mut incidents = Vec::new();
    for create in creates {
        incidents.push(create.await.unwrap());
    }
    let numbers: HashSet<&str> = incidents
        .iter()
        .filter_map(|i| i["number"].as_str())
        .collect();
    assert_eq!(
        numbers.len(),
        incidents.len(),
        "a number was handed out twice"
    );

    // Resolved on alternate nodes, then closed by the job of whichever node gets there first,
    // exactly once each.
    let me = {
        let (_, me) = call(
            &client,
            &token,
            "GET",
            format!("{}/api/v1/me", nodes[0]),
            None,
        )
        .await;
        me["id"].as_str().unwrap().to_owned()
    };
    let (_, group) = call(
        &client,
        &token,
        "POST",
        format!("{}/api/v1/groups", nodes[0]),
        Some(json!({"name": "Nodes"})),
    )
    .await;
    let group = group["id"].as_str().unwrap().to_owned();
    call(
        &client,
        &token,
        "POST",
        format!("{}/api/v1/groups/{group}/members", nodes[0]),
        Some(json!({"user_id": me})),
    )
    .await;
    let resolved: Vec<String> = incidents
        .iter()
        .take(10)
        .map(|i| i["number"].as_str().unwrap().to_owned())
        .collect();
    for (n, number) in resolved.iter().enumerate() {
        let base = &nodes[n % 2];
        for body in [
            json!({"action": "assign", "assignee": me, "assignment_group": group}),
            json!({"action": "resolve", "resolution_code": "fixed", "resolution_notes": "Done"}),
        ] {
            let (status, body) = call(
                &client,
                &token,
                "POST",
                format!("{base}/api/v1/incidents/{number}/transitions"),
                Some(body),
            )
            .await;
            assert_eq!(status, StatusCode::OK, "{body}");
        }
    }
    let mut closed = false;
    for _ in 0..100 {
        let (_, page) = call(
            &client,
            &token,
            "GET",
            format!("{}/api/v1/incidents?state=closed&limit=500", nodes[1]),
            None,
        )
        .await;
        if page["items"].as_array().map(Vec::len) == Some(resolved.len()) {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        closed,
        "the resolved incidents were not all closed automatically"
    );
    for number in &resolved {
        let (_, incident) = call(
            &client,
            &token,
            "GET",
            format!("{}/api/v1/incidents/{number}", nodes[0]),
            None,
        )
        .await;
        let id = incident["id"].as_str().unwrap();
        let (_, audit) = call(
            &client,
            &token,
            "GET",
            format!(
                "{}/api/v1/audit-events?entity_type=incident&entity_id={id}&limit=500",
                nodes[1]
            ),
            None,
        )
        .await;
        let closures = audit["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["action"] == "auto_close")
            .count();
        assert_eq!(closures, 1, "{number} was closed {closures} times");
    }

    // The feed, read from either node, counts from 1 without a gap.
    let mut expected = 1;
    loop {
        let (status, page) = call(
            &client,
            &token,
            "GET",
            format!(
                "{}/api/v1/events?after={}&limit=500",
                nodes[expected as usize % 2],
                expected - 1
            ),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let items = page["items"].as_array().cloned().unwrap_or_default();
        if items.is_empty() {
            break;
        }
        for event in items {
            assert_eq!(event["sequence"], expected, "a gap in the feed");
            expected += 1;
        }
    }

    // A user deactivated on one node is refused on the other within a second (and a bit).
    let password = "nora-password-123";
    let (status, nora) = call(
        &client,
        &token,
        "POST",
        format!("{}/api/v1/users", nodes[0]),
        Some(json!({
        "username": "nora", "display_name": "Nora", "password": password, "roles": ["agent"]})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{nora}");
    let (_, signed_in) = read(
        client
            .post(format!("{}/api/v1/auth/token", nodes[1]))
            .json(&json!({"username": "nora", "password": password}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let nora_token = signed_in["access_token"].as_str().unwrap().to_owned();
    let (status, _) = call(
        &client,
        &nora_token,
        "GET",
        format!("{}/api/v1/me", nodes[1]),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let id = nora["id"].as_str().unwrap();
    let (status, _) = call(
        &client,
        &token,
        "PATCH",
        format!("{}/api/v1/users/{id}", nodes[0]),
        Some(json!({"active": false})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let (status, _) = call(
        &client,
        &nora_token,
        "GET",
        format!("{}/api/v1/me", nodes[1]),
        None,
    )
    .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "a deactivated user still served by the other node"
    );
}
