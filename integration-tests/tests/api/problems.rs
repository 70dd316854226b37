//! Problem management: problems from incidents, linked and held incidents, the known-error
//! database, and what resolving a problem does to its incidents.

use itsm_integration_tests::reqwest::{Method, StatusCode};
use itsm_integration_tests::serde_json::{json, Value};
use itsm_integration_tests::{
    error_fields, expect_problem, on_both_backends, read, Backend, TestApp,
};

use crate::incidents::{actions, create_incident, fetch, get_ok, text};

const PROBLEMS: &str = "/api/v1/problems";

/// POST `path` with `body` as the holder of `token`: status and body.
async fn post(app: &TestApp, token: &str, path: &str, body: Value) -> (StatusCode, Value) {
    read(
        app.request(Method::POST, path, token)
            .json(&body)
            .send()
            .await
            .expect("POST"),
    )
    .await
}

async fn act(app: &TestApp, token: &str, problem: &str, body: Value) -> Value {
    let (status, problem_body) = post(
        app,
        token,
        &format!("{PROBLEMS}/{problem}/transitions"),
        body.clone(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}: {problem_body}");
    problem_body
}

/// An agent, a problem manager, and three incidents with the same symptom.
struct Scene {
    agent: String,
    manager: String,
    incidents: Vec<Value>,
}

async fn scene(app: &TestApp, round: &str) -> Scene {
    let (_, agent) = app
        .user_with_roles(&format!("alma{round}"), &["agent"])
        .await;
    let (_, manager) = app
        .user_with_roles(&format!("pete{round}"), &["problem_manager"])
        .await;
    let mut incidents = Vec::new();
    for (title, description) in [
        (
            "VPN drops every few minutes",
            "Tunnel resets on the office Wi-Fi",
        ),
        (
            "Remote access unstable",
            "The VPN client disconnects after lunch",
        ),
        (
            "Cannot stay connected",
            "Tunnel resets while on Wi-Fi in building B",
        ),
    ] {
        let incident = create_incident(
            app,
            &agent,
            json!({"title": title, "description": description, "impact": "medium", "urgency": "high"}),
        )
        .await;
        incidents.push(incident);
    }
    // Work has started on each: they are in progress before the problem holds them.
    let me = app.id_of(&agent).await;
    let group = app.group(&format!("Network {round}")).await;
    crate::incidents::add_member(app, &group, &json!({"id": me})).await;
    for incident in &incidents {
        crate::incidents::act(
            app,
            &agent,
            &text(incident, "number"),
            json!({"action": "assign", "assignee": me, "assignment_group": text(&group, "id")}),
        )
        .await;
    }
    Scene {
        agent,
        manager,
        incidents,
    }
}

/// The whole path from three incidents to a resolved known error, twice: resolving resumes the
/// held incidents, or with `resolve_linked_incidents` resolves them.
async fn incidents_to_known_error_to_resolution(app: TestApp) {
    for resolve_linked in [false, true] {
        let Scene {
            agent,
            manager,
            incidents,
        } = scene(&app, &resolve_linked.to_string()).await;
        let numbers: Vec<String> = incidents.iter().map(|i| text(i, "number")).collect();

        // A problem from the first incident takes its words and weight, and links it.
        let (status, problem) = post(
            &app,
            &agent,
            &format!("/api/v1/incidents/{}/problem", numbers[0]),
            json!({"hold_incident": true}),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{problem}");
        let prb = text(&problem, "number");
        assert!(prb.starts_with("PRB"), "{prb}");
        assert_eq!(problem["title"], incidents[0]["title"]);
        assert_eq!(problem["priority"], "p2");
        assert_eq!(problem["state"], "new");
        // Agents create and link; they do not move problems along.
        assert_eq!(actions(&problem), Vec::<String>::new());

        // The two others linked and held, all or nothing.
        let (status, linked) = post(
            &app,
            &agent,
            &format!("{PROBLEMS}/{prb}/incidents"),
            json!({"incident_ids": [numbers[1], text(&incidents[2], "id")], "hold_incidents": true}),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{linked}");
        for number in &numbers {
            let incident = fetch(&app, &agent, number).await;
            assert_eq!(incident["state"], "on_hold", "{incident}");
            assert_eq!(incident["on_hold_reason"], "awaiting_problem");
            assert_eq!(incident["problem_id"], problem["id"]);
        }
        let listed = get_ok(&app, &agent, &format!("{PROBLEMS}/{prb}/incidents")).await;
        assert_eq!(listed.as_array().map(Vec::len), Some(3), "{listed}");
        let filtered = get_ok(
            &app,
            &agent,
            &format!("/api/v1/incidents?problem_id={}", text(&problem, "id")),
        )
        .await;
        assert_eq!(filtered["items"].as_array().map(Vec::len), Some(3));

        // The manager works it: a workaround and a root cause, then the known error.
        act(&app, &manager, &prb, json!({"action": "assess"})).await;
        act(&app, &manager, &prb, json!({"action": "start_analysis"})).await;
        act(
            &app,
            &manager,
            &prb,
            json!({"action": "record_workaround", "workaround": "Connect through the wired dock or the guest network"}),
        )
        .await;
        act(
            &app,
            &manager,
            &prb,
            json!({"action": "record_root_cause", "root_cause": "Access point firmware drops idle IPsec sessions"}),
        )
        .await;
        let known = act(
            &app,
            &manager,
            &prb,
            json!({"action": "declare_known_error"}),
        )
        .await;
        assert_eq!(known["known_error"], true);
        assert!(known["known_error_at"].is_string());

        // Found by a symptom word of another incident, with its workaround.
        let found = get_ok(&app, &agent, "/api/v1/known-errors?q=building%20tunnel").await;
        assert_eq!(found["items"][0]["number"], prb.as_str(), "{found}");
        assert!(text(&found["items"][0], "workaround").contains("wired dock"));
        let matching = get_ok(
            &app,
            &agent,
            &format!("/api/v1/incidents/{}/matching-known-errors", numbers[2]),
        )
        .await;
        assert_eq!(matching["items"][0]["number"], prb.as_str(), "{matching}");

        act(&app, &manager, &prb, json!({"action": "start_fix"})).await;
        let resolved = act(
            &app,
            &manager,
            &prb,
            json!({"action": "resolve", "resolution_code": "fixed",
                   "resolution_notes": "Firmware 8.2 rolled out to every access point.",
                   "resolve_linked_incidents": resolve_linked}),
        )
        .await;
        assert_eq!(resolved["state"], "resolved");
        let expected = if resolve_linked {
            "resolved"
        } else {
            "in_progress"
        };
        for number in &numbers {
            let incident = fetch(&app, &agent, number).await;
            assert_eq!(incident["state"], expected, "{incident}");
            if resolve_linked {
                assert_eq!(incident["resolution_code"], "fixed");
            }
            let notes = get_ok(&app, &agent, &format!("/api/v1/incidents/{number}/notes")).await;
            let comments: Vec<&Value> = notes["items"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|n| n["visibility"] == "public")
                .collect();
            assert!(
                comments
                    .iter()
                    .any(|n| text(n, "body").contains(&prb)
                        && text(n, "body").contains("Firmware 8.2")),
                "{notes}"
            );
        }

        let events = app.events_after(0).await;
        let types: Vec<&str> = events
            .iter()
            .filter(|e| e["entity_id"] == problem["id"])
            .filter_map(|e| e["type"].as_str().or(e["event_type"].as_str()))
            .collect();
        for expected in [
            "problem.created",
            "problem.incident_linked",
            "problem.state_changed",
            "problem.updated",
            "problem.known_error_declared",
        ] {
            assert!(
                types.contains(&expected),
                "{expected} missing from {types:?}"
            );
        }
    }
}

/// Linking refuses unknown and already linked incidents with nothing linked; a known error
/// needs a workaround or root cause; resolving needs a code and notes.
async fn bad_input_changes_nothing(app: TestApp) {
    let Scene {
        agent,
        manager,
        incidents,
    } = scene(&app, "").await;
    let (status, problem) = post(&app, &agent, PROBLEMS, json!({"title": "Flapping VPN"})).await;
    assert_eq!(status, StatusCode::CREATED, "{problem}");
    let prb = text(&problem, "number");
    let first = text(&incidents[0], "number");
    let (status, _) = post(
        &app,
        &agent,
        &format!("{PROBLEMS}/{prb}/incidents"),
        json!({"incident_ids": [first]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    let response = app
        .request(Method::POST, &format!("{PROBLEMS}/{prb}/incidents"), &agent)
        .json(&json!({"incident_ids": [text(&incidents[1], "number"), first, "INC9999999"], "hold_incidents": true}))
        .send()
        .await
        .unwrap();
    let refused = expect_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(
        error_fields(&refused),
        ["incident_ids[1]", "incident_ids[2]"],
        "{refused}"
    );
    let second = fetch(&app, &agent, &text(&incidents[1], "number")).await;
    assert!(
        second["problem_id"].is_null(),
        "linked despite the 422: {second}"
    );
    assert_eq!(second["state"], "in_progress");

    let response = app
        .request(
            Method::POST,
            &format!("{PROBLEMS}/{prb}/transitions"),
            &manager,
        )
        .json(&json!({"action": "declare_known_error"}))
        .send()
        .await
        .unwrap();
    let refused = expect_problem(response, StatusCode::CONFLICT).await;
    assert!(text(&refused, "detail").contains("workaround"), "{refused}");
    assert!(actions(&refused).contains(&"record_workaround".to_owned()));

    for step in ["assess", "start_analysis"] {
        act(&app, &manager, &prb, json!({"action": step})).await;
    }
    let response = app
        .request(
            Method::POST,
            &format!("{PROBLEMS}/{prb}/transitions"),
            &manager,
        )
        .json(&json!({"action": "resolve", "resolution_code": "fixed"}))
        .send()
        .await
        .unwrap();
    let refused = expect_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(error_fields(&refused), ["resolution_notes"]);
    assert_eq!(
        fetch_problem(&app, &manager, &prb).await["state"],
        "root_cause_analysis"
    );

    // An agent may not move it along; a cancel needs a reason.
    let response = app
        .request(
            Method::POST,
            &format!("{PROBLEMS}/{prb}/transitions"),
            &agent,
        )
        .json(&json!({"action": "start_fix"}))
        .send()
        .await
        .unwrap();
    expect_problem(response, StatusCode::CONFLICT).await;
    let response = app
        .request(
            Method::POST,
            &format!("{PROBLEMS}/{prb}/transitions"),
            &manager,
        )
        .json(&json!({"action": "cancel"}))
        .send()
        .await
        .unwrap();
    expect_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;

    // Unlinking resumes nothing that was not held, and unlinking twice is 404.
    let path = format!("{PROBLEMS}/{prb}/incidents/{first}");
    let response = app
        .request(Method::DELETE, &path, &agent)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let response = app
        .request(Method::DELETE, &path, &agent)
        .send()
        .await
        .unwrap();
    expect_problem(response, StatusCode::NOT_FOUND).await;
}

async fn fetch_problem(app: &TestApp, token: &str, id: &str) -> Value {
    get_ok(app, token, &format!("{PROBLEMS}/{id}")).await
}

/// A requester reaches no problem route at all: every one is 404.
async fn requesters_get_404_everywhere(app: TestApp) {
    let (_, agent) = app.user_with_roles("alma", &["agent"]).await;
    let (_, requester) = app.user_with_roles("rita", &["requester"]).await;
    let incident = create_incident(&app, &requester, json!({"title": "VPN drops"})).await;
    let (_, problem) = post(&app, &agent, PROBLEMS, json!({"title": "VPN drops"})).await;
    let prb = text(&problem, "number");
    let inc = text(&incident, "number");
    let routes = [
        (Method::GET, PROBLEMS.to_owned(), None),
        (
            Method::POST,
            PROBLEMS.to_owned(),
            Some(json!({"title": "x"})),
        ),
        (Method::GET, format!("{PROBLEMS}/{prb}"), None),
        (
            Method::PATCH,
            format!("{PROBLEMS}/{prb}"),
            Some(json!({"title": "x"})),
        ),
        (
            Method::POST,
            format!("{PROBLEMS}/{prb}/transitions"),
            Some(json!({"action": "assess"})),
        ),
        (Method::GET, format!("{PROBLEMS}/{prb}/incidents"), None),
        (
            Method::POST,
            format!("{PROBLEMS}/{prb}/incidents"),
            Some(json!({"incident_ids": [inc]})),
        ),
        (
            Method::DELETE,
            format!("{PROBLEMS}/{prb}/incidents/{inc}"),
            None,
        ),
        (Method::GET, format!("{PROBLEMS}/{prb}/notes"), None),
        (
            Method::POST,
            format!("{PROBLEMS}/{prb}/notes"),
            Some(json!({"body": "x"})),
        ),
        (Method::GET, format!("{PROBLEMS}/{prb}/history"), None),
        (Method::GET, "/api/v1/known-errors?q=vpn".to_owned(), None),
        (
            Method::GET,
            format!("/api/v1/incidents/{inc}/matching-known-errors"),
            None,
        ),
        (
            Method::POST,
            format!("/api/v1/incidents/{inc}/problem"),
            Some(json!({})),
        ),
    ];
    for (method, path, body) in routes {
        let mut request = app.request(method.clone(), &path, &requester);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{method} {path}");
    }
    // Their own incident does not show which problem it is linked to.
    let (status, _) = post(
        &app,
        &agent,
        &format!("{PROBLEMS}/{prb}/incidents"),
        json!({"incident_ids": [inc]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let own = fetch(&app, &requester, &inc).await;
    assert!(own.get("problem_id").is_none(), "{own}");
}

/// `itsm plans` explains every problem list filter; on SQLite each but the word search walks
/// an index in the page's order.
async fn each_problem_filter_is_explained(app: TestApp) {
    let db = persistence::Database::open(&app.database).expect("open the test database");
    itsm_api::seed::seed(&db, 500).await.expect("seed");
    db.optimize().await.expect("statistics");
    let plans = itsm_api::plans::problem_list_plans(&db)
        .await
        .expect("plans");
    assert_eq!(plans.len(), 10);
    for (filter, lines) in &plans {
        match app.backend {
            // One problem at most holds a reference: found by the unique reference index.
            Backend::Sqlite if filter.starts_with("external_ref=") => assert!(
                lines
                    .iter()
                    .any(|line| line.contains("external_refs_lookup_key")),
                "{filter}: {lines:?}"
            ),
            Backend::Sqlite if !filter.starts_with("q=") => assert!(
                lines.iter().all(|line| line.contains("USING INDEX")),
                "{filter}: {lines:?}"
            ),
            Backend::Sqlite => assert!(
                lines.iter().any(|line| line.contains("ticket_words")),
                "{filter}: {lines:?}"
            ),
            Backend::Postgres => assert!(lines[0].starts_with("Limit"), "{filter}: {lines:?}"),
        }
    }
}

on_both_backends!(
    each_problem_filter_is_explained,
    incidents_to_known_error_to_resolution,
    bad_input_changes_nothing,
    requesters_get_404_everywhere,
);
