//! Conditional requests per RFC 9110 (issue 13, item 7): `If-Match` compares strongly, so a
//! weak ETag never matches; `If-None-Match` on a read answers 304 for every resource with an
//! ETag; a refused CORS preflight answers a problem document.

use itsm_integration_tests::reqwest::{Method, Response, StatusCode};
use itsm_integration_tests::serde_json::{json, Value};
use itsm_integration_tests::{expect_problem, header, on_both_backends, read, Config, TestApp};

async fn create(app: &TestApp, path: &str, body: Value) -> Value {
    let response = app
        .admin(Method::POST, path)
        .json(&body)
        .send()
        .await
        .unwrap();
    let (status, created) = read(response).await;
    assert_eq!(status, StatusCode::CREATED, "POST {path} {body}: {created}");
    created
}

async fn patch(app: &TestApp, path: &str, if_match: &str, body: Value) -> Response {
    app.admin(Method::PATCH, path)
        .header("if-match", if_match)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn a_weak_etag_never_matches_if_match(app: TestApp) {
    let user = create(
        &app,
        "/api/v1/users",
        json!({"username": "weakling", "display_name": "Weak", "password": "weakling-password-1",
               "roles": ["agent"]}),
    )
    .await;
    let path = format!("/api/v1/users/{}", user["id"].as_str().unwrap());
    let before = app.write_marks().await;
    for weak in ["W/\"1\"", "W/\"1\", W/\"2\""] {
        let response = patch(&app, &path, weak, json!({"display_name": "Weakly"})).await;
        let problem = expect_problem(response, StatusCode::PRECONDITION_FAILED).await;
        assert_eq!(
            problem["type"], "https://itsm.example/problems/version-mismatch",
            "If-Match {weak}"
        );
        assert_eq!(
            problem["detail"],
            "If-Match names only weak ETags, which never match (the current version is \"1\")"
        );
    }
    app.assert_unchanged_since(&before, "a weak If-Match").await;
    // A weak tag on a record that does not exist: the 404 comes first.
    let response = patch(
        &app,
        "/api/v1/users/00000000-0000-0000-0000-000000000000",
        "W/\"1\"",
        json!({"display_name": "Nobody"}),
    )
    .await;
    expect_problem(response, StatusCode::NOT_FOUND).await;
    // A list matches by its strong tag; several versions at once are not a condition.
    let response = patch(
        &app,
        &path,
        "W/\"1\", \"1\"",
        json!({"display_name": "Strong"}),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "etag").as_deref(), Some("\"2\""));
    let response = patch(&app, &path, "\"1\", \"2\"", json!({"display_name": "Both"})).await;
    expect_problem(response, StatusCode::BAD_REQUEST).await;

    // Tickets and configuration items compare the same way.
    let incident = create(&app, "/api/v1/incidents", json!({"title": "Weak tags"})).await;
    let number = incident["number"].as_str().unwrap();
    let response = app
        .admin(
            Method::POST,
            &format!("/api/v1/incidents/{number}/transitions"),
        )
        .header("if-match", "W/\"1\"")
        .json(&json!({"action": "start"}))
        .send()
        .await
        .unwrap();
    expect_problem(response, StatusCode::PRECONDITION_FAILED).await;
    let item = create(
        &app,
        "/api/v1/configuration-items",
        json!({"name": "weak-01", "class": "server"}),
    )
    .await;
    let item_path = format!(
        "/api/v1/configuration-items/{}",
        item["id"].as_str().unwrap()
    );
    let response = patch(&app, &item_path, "W/\"1\"", json!({"status": "retired"})).await;
    expect_problem(response, StatusCode::PRECONDITION_FAILED).await;
}

/// GET with the ETag of the current version: 304 with that ETag and no body.
async fn assert_not_modified(app: &TestApp, path: &str, if_none_match: &str, etag: &str) {
    let response = app
        .admin(Method::GET, path)
        .header("if-none-match", if_none_match)
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::NOT_MODIFIED,
        "GET {path} If-None-Match {if_none_match}"
    );
    assert_eq!(header(&response, "etag").as_deref(), Some(etag), "{path}");
    assert_eq!(
        header(&response, "cache-control").as_deref(),
        Some("no-store")
    );
    assert!(header(&response, "x-request-id").is_some());
    assert!(response.text().await.unwrap().is_empty(), "{path}");
}

async fn if_none_match_answers_304_for_every_resource_with_an_etag(app: TestApp) {
    let incident = create(&app, "/api/v1/incidents", json!({"title": "Cached"})).await;
    let problem = create(
        &app,
        "/api/v1/problems",
        json!({"title": "Cached", "description": "conditional"}),
    )
    .await;
    let change = create(
        &app,
        "/api/v1/changes",
        json!({"title": "Cached", "description": "conditional"}),
    )
    .await;
    let item = create(
        &app,
        "/api/v1/configuration-items",
        json!({"name": "cached-01", "class": "server"}),
    )
    .await;
    let group = create(&app, "/api/v1/groups", json!({"name": "Cached"})).await;
    let admin_id = app.id_of(&app.admin_token).await;
    let paths = [
        format!("/api/v1/incidents/{}", incident["number"].as_str().unwrap()),
        format!("/api/v1/problems/{}", problem["number"].as_str().unwrap()),
        format!("/api/v1/changes/{}", change["number"].as_str().unwrap()),
        format!(
            "/api/v1/configuration-items/{}",
            item["id"].as_str().unwrap()
        ),
        format!("/api/v1/groups/{}", group["id"].as_str().unwrap()),
        format!("/api/v1/users/{admin_id}"),
        "/api/v1/ci-classes/server".to_owned(),
    ];
    for path in &paths {
        let response = app.admin(Method::GET, path).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let etag = header(&response, "etag").unwrap_or_else(|| panic!("no ETag on {path}"));
        assert_not_modified(&app, path, &etag, &etag).await;
        assert_not_modified(&app, path, &format!("W/{etag}"), &etag).await;
        assert_not_modified(&app, path, &format!("\"999\", {etag}"), &etag).await;
        assert_not_modified(&app, path, "*", &etag).await;
        // Another version: the full answer.
        let response = app
            .admin(Method::GET, path)
            .header("if-none-match", "\"999\"")
            .send()
            .await
            .unwrap();
        assert_eq!(header(&response, "etag"), Some(etag));
        let (status, body) = read(response).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert!(body.is_object(), "{path}: {body}");
    }
    // A change makes the old ETag stale.
    let group_path = &paths[4];
    let response = patch(&app, group_path, "\"1\"", json!({"description": "changed"})).await;
    assert_eq!(response.status(), StatusCode::OK);
    let response = app
        .admin(Method::GET, group_path)
        .header("if-none-match", "\"1\"")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&response, "etag").as_deref(), Some("\"2\""));
    let (status, body) = read(response).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["description"], "changed");
    // Nothing there: `*` does not hide the 404; unsafe methods ignore the header.
    let response = app
        .admin(Method::GET, "/api/v1/incidents/INC9999999")
        .header("if-none-match", "*")
        .send()
        .await
        .unwrap();
    expect_problem(response, StatusCode::NOT_FOUND).await;
}

fn with_a_frontend(config: &mut Config) {
    config.cors_origins = vec!["https://desk.example".into()];
}

async fn preflight(app: &TestApp, origin: Option<&str>) -> Response {
    let mut request = app
        .anonymous(Method::OPTIONS, "/api/v1/incidents")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type",
        );
    if let Some(origin) = origin {
        request = request.header("origin", origin);
    }
    request.send().await.unwrap()
}

async fn refused_preflights_answer_problems(app: TestApp) {
    let response = preflight(&app, Some("https://desk.example")).await;
    assert!(response.status().is_success(), "{}", response.status());
    assert_eq!(
        header(&response, "access-control-allow-origin").as_deref(),
        Some("https://desk.example")
    );
    let response = preflight(&app, Some("https://elsewhere.example")).await;
    assert!(header(&response, "access-control-allow-origin").is_none());
    let request_id = header(&response, "x-request-id").expect("a request id");
    let problem = expect_problem(response, StatusCode::FORBIDDEN).await;
    assert_eq!(problem["type"], "https://itsm.example/problems/forbidden");
    assert_eq!(problem["request_id"], request_id.as_str());
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("https://elsewhere.example"),
        "{problem}"
    );
    let response = preflight(&app, None).await;
    expect_problem(response, StatusCode::BAD_REQUEST).await;
}

/// Without `ITSM_CORS_ORIGINS` no browser origin may call: every preflight is a problem.
async fn preflights_without_configured_origins_are_problems(app: TestApp) {
    let response = preflight(&app, Some("https://desk.example")).await;
    let problem = expect_problem(response, StatusCode::FORBIDDEN).await;
    assert_eq!(problem["type"], "https://itsm.example/problems/forbidden");
}

on_both_backends!(
    a_weak_etag_never_matches_if_match,
    if_none_match_answers_304_for_every_resource_with_an_etag,
    refused_preflights_answer_problems with with_a_frontend,
    preflights_without_configured_origins_are_problems,
);
