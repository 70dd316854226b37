//! The API conventions every resource shares (DESIGN.md section 3): strict request bodies and
//! query parameters, problem details, routing errors, body size, optimistic concurrency,
//! idempotency keys, request ids, and the health and contract endpoints.

use itsm_integration_tests::reqwest::{Method, Response, StatusCode};
use itsm_integration_tests::serde_json::{json, Value};
use itsm_integration_tests::{
    error_fields, expect_problem, header, on_both_backends, read, Config, TestApp,
};

fn small_bodies(config: &mut Config) {
    config.max_body_bytes = 2048;
}

/// Sends a raw body with `content_type` to POST /api/v1/users as the admin.
async fn post_users_raw(app: &TestApp, content_type: Option<&str>, body: String) -> Response {
    let mut request = app.admin(Method::POST, "/api/v1/users").body(body);
    if let Some(content_type) = content_type {
        request = request.header("content-type", content_type);
    }
    request.send().await.unwrap()
}

async fn post_user(app: &TestApp, body: Value) -> Response {
    app.admin(Method::POST, "/api/v1/users")
        .json(&body)
        .send()
        .await
        .unwrap()
}

fn valid_user(username: &str) -> Value {
    json!({
        "username": username,
        "display_name": "Valid User",
        "email": format!("{username}@example.com"),
        "roles": ["agent"],
    })
}

async fn malformed_json_is_400(app: TestApp) {
    let before = app.write_marks().await;
    for body in [
        r#"{"username": "x", "#,
        r#"{"username": "carl", "display_name": "C", "roles": ["agent"]} trailing"#,
        "not json at all",
        "",
    ] {
        let response = post_users_raw(&app, Some("application/json"), body.to_owned()).await;
        let problem = expect_problem(response, StatusCode::BAD_REQUEST).await;
        assert_eq!(
            problem["type"], "https://itsm.example/problems/malformed-request",
            "body {body:?}: {problem}"
        );
        assert_eq!(problem["instance"], "/api/v1/users");
    }
    app.assert_unchanged_since(&before, "malformed JSON").await;
}

async fn wrong_content_is_422_naming_the_field(app: TestApp) {
    let before = app.write_marks().await;

    // An unknown field.
    let mut body = valid_user("una");
    body["is_superuser"] = json!(true);
    let problem = expect_problem(
        post_user(&app, body).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(error_fields(&problem), ["is_superuser"], "{problem}");
    assert_eq!(problem["type"], "https://itsm.example/problems/validation");
    assert_eq!(problem["title"], "Invalid request");

    // A value outside an enumeration, in a list.
    let mut body = valid_user("rooty");
    body["roles"] = json!(["root"]);
    let problem = expect_problem(
        post_user(&app, body).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(error_fields(&problem), ["roles[0]"], "{problem}");
    let mut body = valid_user("rooty");
    body["roles"] = json!(["agent", "root"]);
    let problem = expect_problem(
        post_user(&app, body).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(error_fields(&problem), ["roles[1]"], "{problem}");

    // A missing required field.
    let mut body = valid_user("missy");
    body.as_object_mut().unwrap().remove("display_name");
    let problem = expect_problem(
        post_user(&app, body).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(error_fields(&problem), ["display_name"], "{problem}");

    // A wrong type.
    let mut body = valid_user("typo");
    body["roles"] = json!("agent");
    let problem = expect_problem(
        post_user(&app, body).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(error_fields(&problem), ["roles"], "{problem}");

    // Values that parse but break the rules; every broken field is reported at once.
    let body = json!({
        "username": "no spaces allowed",
        "display_name": "",
        "email": "not-an-email",
        "password": "short",
        "roles": [],
    });
    let problem = expect_problem(
        post_user(&app, body).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    let reported = error_fields(&problem);
    for field in ["display_name", "email", "roles"] {
        assert!(
            reported.contains(&field.to_owned()),
            "{field} not reported: {problem}"
        );
    }
    let mut body = valid_user("ok-name");
    body["username"] = json!("no spaces allowed");
    body["password"] = json!("short");
    let problem = expect_problem(
        post_user(&app, body).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    let mut reported = error_fields(&problem);
    reported.sort();
    assert_eq!(reported, ["password", "username"], "{problem}");
    assert_eq!(problem["detail"], "2 fields are invalid");

    app.assert_unchanged_since(&before, "invalid user bodies")
        .await;
}

async fn wrong_content_type_is_415(app: TestApp) {
    let before = app.write_marks().await;
    let body = valid_user("texty").to_string();
    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        let response = post_users_raw(&app, content_type, body.clone()).await;
        let problem = expect_problem(response, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
        assert_eq!(
            problem["type"], "https://itsm.example/problems/unsupported-media-type",
            "{content_type:?}"
        );
    }
    app.assert_unchanged_since(&before, "a wrong content type")
        .await;

    // JSON with a charset, and merge-patch JSON, are JSON.
    let response = post_users_raw(&app, Some("application/json; charset=utf-8"), body).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let (_, user) = read(response).await;
    let response = app
        .admin(
            Method::PATCH,
            &format!("/api/v1/users/{}", user["id"].as_str().unwrap()),
        )
        .header("content-type", "application/merge-patch+json")
        .body(r#"{"display_name": "Texty"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

async fn body_over_the_limit_is_413(app: TestApp) {
    let before = app.write_marks().await;
    let mut body = valid_user("biggie");
    body["display_name"] = json!("x".repeat(4096));
    let response = post_user(&app, body.clone()).await;
    let problem = expect_problem(response, StatusCode::PAYLOAD_TOO_LARGE).await;
    assert_eq!(
        problem["type"],
        "https://itsm.example/problems/payload-too-large"
    );
    // The same through the idempotency layer, which reads the body first.
    let response = app
        .admin(Method::POST, "/api/v1/users")
        .header("idempotency-key", "big-body-1")
        .json(&body)
        .send()
        .await
        .unwrap();
    expect_problem(response, StatusCode::PAYLOAD_TOO_LARGE).await;
    app.assert_unchanged_since(&before, "an oversized body")
        .await;

    // A body under the limit is fine.
    let response = post_user(&app, valid_user("smallie")).await;
    assert_eq!(response.status(), StatusCode::CREATED);
}

async fn query_parameters_are_strict(app: TestApp) {
    for (path, field) in [
        ("/api/v1/users?rolee=agent", "rolee"),
        ("/api/v1/users?limit=0", "limit"),
        ("/api/v1/users?limit=501", "limit"),
        ("/api/v1/users?limit=-1", "limit"),
        ("/api/v1/users?limit=ten", "limit"),
        ("/api/v1/users?limit=99999999999999999999", "limit"),
        ("/api/v1/users?limit=1&limit=2", "limit"),
        ("/api/v1/users?cursor=not%20a%20cursor", "cursor"),
        ("/api/v1/users?role=root", "role"),
        ("/api/v1/users?active=yes", "active"),
        ("/api/v1/users?external_ref=no-colon", "external_ref"),
        ("/api/v1/groups?sort=name", "sort"),
        ("/api/v1/audit-events?entity=user", "entity"),
        ("/api/v1/api-tokens?name=x", "name"),
        ("/api/v1/events?after=-1", "after"),
        ("/api/v1/events?after=x", "after"),
        ("/api/v1/events?limit=501", "limit"),
        ("/api/v1/events?types=*", "types"),
        ("/api/v1/events?cursor=1", "cursor"),
    ] {
        let response = app.admin(Method::GET, path).send().await.unwrap();
        let problem = expect_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(error_fields(&problem), [field], "GET {path}: {problem}");
    }
    // The boundaries themselves are fine.
    for path in ["/api/v1/users?limit=1", "/api/v1/users?limit=500"] {
        let response = app.admin(Method::GET, path).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "GET {path}");
    }
}

async fn unknown_route_is_404(app: TestApp) {
    for path in [
        "/api/v1/nothing-here",
        "/api/v2/users",
        "/api/v1/users/some-id/extra",
        "/nowhere",
    ] {
        let response = app.admin(Method::GET, path).send().await.unwrap();
        let problem = expect_problem(response, StatusCode::NOT_FOUND).await;
        assert_eq!(problem["type"], "https://itsm.example/problems/not-found");
        assert_eq!(problem["instance"], path);
    }
    // A well-formed path to a record that does not exist is a 404 too.
    for path in [
        "/api/v1/users/no-such-user",
        "/api/v1/groups/no-such-group",
        "/api/v1/groups/no-such-group/members",
    ] {
        let response = app.admin(Method::GET, path).send().await.unwrap();
        expect_problem(response, StatusCode::NOT_FOUND).await;
    }
}

async fn wrong_method_is_405_with_allow(app: TestApp) {
    let before = app.write_marks().await;
    let cases: [(Method, &str, &[&str]); 6] = [
        (Method::DELETE, "/api/v1/users", &["GET", "POST"]),
        (Method::PUT, "/api/v1/users/some-id", &["GET", "PATCH"]),
        (Method::DELETE, "/api/v1/users/some-id", &["GET", "PATCH"]),
        (Method::GET, "/api/v1/auth/token", &["POST"]),
        (Method::POST, "/api/v1/events", &["GET"]),
        (Method::PATCH, "/api/v1/api-tokens/some-id", &["DELETE"]),
    ];
    for (method, path, allowed) in cases {
        let response = app
            .admin(method.clone(), path)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        let allow = header(&response, "allow").unwrap_or_default();
        let problem = expect_problem(response, StatusCode::METHOD_NOT_ALLOWED).await;
        assert_eq!(
            problem["type"],
            "https://itsm.example/problems/method-not-allowed"
        );
        let mut listed: Vec<&str> = allow.split(',').map(str::trim).collect();
        listed.sort_unstable();
        assert_eq!(listed, allowed, "{method} {path}: Allow {allow:?}");
    }
    app.assert_unchanged_since(&before, "wrong methods").await;
}

async fn problems_carry_the_request_id(app: TestApp) {
    let response = app
        .admin(Method::GET, "/api/v1/users/no-such-user")
        .header("x-request-id", "trace-4711")
        .send()
        .await
        .unwrap();
    assert_eq!(
        header(&response, "x-request-id").as_deref(),
        Some("trace-4711")
    );
    let problem = expect_problem(response, StatusCode::NOT_FOUND).await;
    assert_eq!(problem["request_id"], "trace-4711");
    assert_eq!(problem["instance"], "/api/v1/users/no-such-user");

    // Without one, the service makes one up and echoes it.
    let response = app.admin(Method::GET, "/api/v1/me").send().await.unwrap();
    assert!(header(&response, "x-request-id").is_some_and(|id| !id.is_empty()));

    // A successful write records the request id in its audit entry.
    let response = app
        .admin(Method::POST, "/api/v1/groups")
        .header("x-request-id", "trace-4712")
        .json(&json!({"name": "Traced"}))
        .send()
        .await
        .unwrap();
    let (status, group) = read(response).await;
    assert_eq!(status, StatusCode::CREATED, "{group}");
    let audit = app.audit_of("group", group["id"].as_str().unwrap()).await;
    assert_eq!(audit[0]["request_id"], "trace-4712");
}

async fn if_match_guards_updates(app: TestApp) {
    let response = post_user(&app, valid_user("ifm")).await;
    assert_eq!(header(&response, "etag").as_deref(), Some("\"1\""));
    let (_, user) = read(response).await;
    let path = format!("/api/v1/users/{}", user["id"].as_str().unwrap());

    let response = app
        .admin(Method::PATCH, &path)
        .header("if-match", "\"1\"")
        .json(&json!({"display_name": "First"}))
        .send()
        .await
        .unwrap();
    assert_eq!(header(&response, "etag").as_deref(), Some("\"2\""));
    let (status, updated) = read(response).await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["version"], 2);
    assert_eq!(updated["display_name"], "First");

    // A stale version: 412, and nothing changes.
    let before = app.write_marks().await;
    let response = app
        .admin(Method::PATCH, &path)
        .header("if-match", "\"1\"")
        .json(&json!({"display_name": "Lost update"}))
        .send()
        .await
        .unwrap();
    let problem = expect_problem(response, StatusCode::PRECONDITION_FAILED).await;
    assert_eq!(
        problem["type"],
        "https://itsm.example/problems/version-mismatch"
    );
    assert_eq!(
        problem["detail"],
        "If-Match \"1\" does not match current version \"2\""
    );
    app.assert_unchanged_since(&before, "a stale If-Match")
        .await;
    let response = app.admin(Method::GET, &path).send().await.unwrap();
    assert_eq!(header(&response, "etag").as_deref(), Some("\"2\""));
    let (_, current) = read(response).await;
    assert_eq!(current["display_name"], "First");
    assert_eq!(current["version"], 2);

    // Malformed If-Match: 400, nothing changes. (A bare version, `2`, reads as "2".)
    for value in ["two", "\"two\"", "\"\"", "\"2"] {
        let response = app
            .admin(Method::PATCH, &path)
            .header("if-match", value)
            .json(&json!({"display_name": "Malformed"}))
            .send()
            .await
            .unwrap();
        let problem = expect_problem(response, StatusCode::BAD_REQUEST).await;
        assert_eq!(
            problem["type"], "https://itsm.example/problems/malformed-request",
            "If-Match {value:?}"
        );
    }
    app.assert_unchanged_since(&before, "a malformed If-Match")
        .await;

    // The current version, strong (a weak tag never matches: see `conditional`), in a list, or
    // `*`, is accepted.
    for (value, expected_etag) in [
        ("\"2\"", "\"3\""),
        ("W/\"3\", \"3\"", "\"4\""),
        ("*", "\"5\""),
    ] {
        let response = app
            .admin(Method::PATCH, &path)
            .header("if-match", value)
            .json(&json!({"display_name": format!("Matched {value}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "If-Match {value}");
        assert_eq!(header(&response, "etag").as_deref(), Some(expected_etag));
    }
    // A group honours If-Match the same way.
    let response = app
        .admin(Method::POST, "/api/v1/groups")
        .json(&json!({"name": "Versioned"}))
        .send()
        .await
        .unwrap();
    let (_, group) = read(response).await;
    let group_path = format!("/api/v1/groups/{}", group["id"].as_str().unwrap());
    let response = app
        .admin(Method::PATCH, &group_path)
        .header("if-match", "\"7\"")
        .json(&json!({"description": "stale"}))
        .send()
        .await
        .unwrap();
    expect_problem(response, StatusCode::PRECONDITION_FAILED).await;
    let response = app
        .admin(Method::PATCH, &group_path)
        .header("if-match", "\"1\"")
        .json(&json!({"description": "current"}))
        .send()
        .await
        .unwrap();
    assert_eq!(header(&response, "etag").as_deref(), Some("\"2\""));
    let (status, group) = read(response).await;
    assert_eq!(status, StatusCode::OK, "{group}");
    assert_eq!(group["description"], "current");
}

async fn concurrent_updates_with_if_match_lose_nothing(app: TestApp) {
    let response = post_user(&app, valid_user("racer")).await;
    let (_, user) = read(response).await;
    let path = format!("/api/v1/users/{}", user["id"].as_str().unwrap());
    let attempts = (0..8).map(|i| {
        let request = app
            .admin(Method::PATCH, &path)
            .header("if-match", "\"1\"")
            .json(&json!({"display_name": format!("Racer {i}")}));
        async move { request.send().await.unwrap().status() }
    });
    let statuses = futures_util::future::join_all(attempts).await;
    let won = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    let lost = statuses
        .iter()
        .filter(|s| **s == StatusCode::PRECONDITION_FAILED)
        .count();
    assert_eq!((won, lost), (1, 7), "{statuses:?}");
    let (_, current) = read(app.admin(Method::GET, &path).send().await.unwrap()).await;
    assert_eq!(current["version"], 2);
    let updates = app
        .audit_of("user", user["id"].as_str().unwrap())
        .await
        .iter()
        .filter(|e| e["action"] == "update")
        .count();
    assert_eq!(updates, 1);
}

async fn idempotency_key_replays_the_first_response(app: TestApp) {
    let body = valid_user("idem");
    let send = |key: &'static str, body: Value| {
        app.admin(Method::POST, "/api/v1/users")
            .header("idempotency-key", key)
            .json(&body)
            .send()
    };
    let first = send("key-0001", body.clone()).await.unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    assert!(header(&first, "idempotent-replayed").is_none());
    let location = header(&first, "location");
    let etag = header(&first, "etag");
    let first_text = first.text().await.unwrap();

    let before = app.write_marks().await;
    let again = send("key-0001", body.clone()).await.unwrap();
    assert_eq!(again.status(), StatusCode::CREATED);
    assert_eq!(
        header(&again, "idempotent-replayed").as_deref(),
        Some("true")
    );
    assert_eq!(header(&again, "location"), location);
    assert_eq!(header(&again, "etag"), etag);
    assert!(header(&again, "content-type").is_some_and(|c| c.starts_with("application/json")));
    let again_text = again.text().await.unwrap();
    assert_eq!(again_text, first_text);
    let first: Value = itsm_integration_tests::serde_json::from_str(&first_text).unwrap();
    let again: Value = itsm_integration_tests::serde_json::from_str(&again_text).unwrap();
    assert_eq!(again["id"], first["id"]);
    app.assert_unchanged_since(&before, "a replay").await;
    let users = app.list_all("/api/v1/users?q=idem").await;
    assert_eq!(users.len(), 1, "{users:?}");
    let created_events = app
        .events_after(0)
        .await
        .into_iter()
        .filter(|e| e["type"] == "user.created" && e["entity_id"] == first["id"])
        .count();
    assert_eq!(created_events, 1);

    // The same key with another body is refused, and changes nothing.
    let response = send("key-0001", valid_user("idem-other")).await.unwrap();
    let problem = expect_problem(response, StatusCode::CONFLICT).await;
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("Idempotency-Key")),
        "{problem}"
    );
    app.assert_unchanged_since(&before, "a reused key").await;

    // A new key is a new request: this one conflicts with the user the first created.
    let response = send("key-0002", body.clone()).await.unwrap();
    expect_problem(response, StatusCode::CONFLICT).await;

    // A malformed key is refused.
    let response = app
        .admin(Method::POST, "/api/v1/users")
        .header("idempotency-key", "")
        .json(&valid_user("idem-blank"))
        .send()
        .await
        .unwrap();
    let problem = expect_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(error_fields(&problem), ["Idempotency-Key"], "{problem}");
    app.assert_unchanged_since(&before, "refused idempotent requests")
        .await;
}

/// A client that retries before its first attempt answered: the change happens once; each
/// attempt gets the first response or a 409 asking it to retry, never a second create.
async fn concurrent_requests_with_one_idempotency_key_create_once(app: TestApp) {
    let attempts = (0..8).map(|_| {
        let request = app
            .admin(Method::POST, "/api/v1/users")
            .header("idempotency-key", "retry-storm")
            .json(&valid_user("stormy"));
        async move {
            let response = request.send().await.unwrap();
            let replayed = header(&response, "idempotent-replayed").is_some();
            let (status, body) = read(response).await;
            (status, replayed, body)
        }
    });
    let outcomes = futures_util::future::join_all(attempts).await;
    let originals: Vec<&Value> = outcomes
        .iter()
        .filter(|(status, replayed, _)| *status == StatusCode::CREATED && !replayed)
        .map(|(_, _, body)| body)
        .collect();
    assert_eq!(originals.len(), 1, "{outcomes:?}");
    for (status, replayed, body) in &outcomes {
        match *status {
            StatusCode::CREATED if *replayed => assert_eq!(body, originals[0]),
            StatusCode::CREATED => {}
            StatusCode::CONFLICT => assert!(!replayed),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(app.list_all("/api/v1/users?q=stormy").await.len(), 1);
    // Once settled, a retry is a replay.
    let response = app
        .admin(Method::POST, "/api/v1/users")
        .header("idempotency-key", "retry-storm")
        .json(&valid_user("stormy"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        header(&response, "idempotent-replayed").as_deref(),
        Some("true")
    );
    let (status, body) = read(response).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(&body, originals[0]);
}

async fn idempotency_keys_are_per_caller(app: TestApp) {
    let (_, other_admin) = app.user_with_roles("second-admin", &["admin"]).await;
    let first = app
        .admin(Method::POST, "/api/v1/groups")
        .header("idempotency-key", "shared-key")
        .json(&json!({"name": "From the first admin"}))
        .send()
        .await
        .unwrap();
    let (status, first) = read(first).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");

    // The same key from another caller, with another body: a new request, not a 422.
    let second = app
        .request(Method::POST, "/api/v1/groups", &other_admin)
        .header("idempotency-key", "shared-key")
        .json(&json!({"name": "From the second admin"}))
        .send()
        .await
        .unwrap();
    assert!(header(&second, "idempotent-replayed").is_none());
    let (status, second) = read(second).await;
    assert_eq!(status, StatusCode::CREATED, "{second}");
    assert_ne!(second["id"], first["id"]);

    // And with the first caller's very body: still not the first caller's replay.
    let third = app
        .request(Method::POST, "/api/v1/groups", &other_admin)
        .header("idempotency-key", "another-shared-key")
        .json(&json!({"name": "Group K"}))
        .send()
        .await
        .unwrap();
    assert_eq!(third.status(), StatusCode::CREATED);
    let fourth = app
        .admin(Method::POST, "/api/v1/groups")
        .header("idempotency-key", "another-shared-key")
        .json(&json!({"name": "Group K"}))
        .send()
        .await
        .unwrap();
    assert!(header(&fourth, "idempotent-replayed").is_none());
    expect_problem(fourth, StatusCode::CONFLICT).await;
    let groups = app.list_all("/api/v1/groups").await;
    assert_eq!(groups.len(), 3, "{groups:?}");
}

async fn failed_mutations_leave_no_trace(app: TestApp) {
    let response = post_user(&app, valid_user("taken")).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let response = app
        .admin(Method::POST, "/api/v1/groups")
        .json(&json!({"name": "Desk", "external_refs": [{"system": "crm", "id": "G-1"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let before = app.write_marks().await;

    // Duplicate username: 409.
    let mut duplicate = valid_user("taken");
    duplicate["display_name"] = json!("Someone else");
    let problem = expect_problem(post_user(&app, duplicate).await, StatusCode::CONFLICT).await;
    assert_eq!(problem["type"], "https://itsm.example/problems/conflict");
    // Duplicate group name: 409.
    let response = app
        .admin(Method::POST, "/api/v1/groups")
        .json(&json!({"name": "Desk"}))
        .send()
        .await
        .unwrap();
    expect_problem(response, StatusCode::CONFLICT).await;
    // A group whose external reference is taken fails after its row was inserted: the whole
    // unit rolls back.
    let response = app
        .admin(Method::POST, "/api/v1/groups")
        .json(&json!({"name": "Second desk", "external_refs": [{"system": "crm", "id": "G-1"}]}))
        .send()
        .await
        .unwrap();
    expect_problem(response, StatusCode::CONFLICT).await;
    // A PATCH of a user that does not exist: 404.
    let response = app
        .admin(Method::PATCH, "/api/v1/users/no-such-user")
        .json(&json!({"display_name": "Ghost"}))
        .send()
        .await
        .unwrap();
    expect_problem(response, StatusCode::NOT_FOUND).await;

    app.assert_unchanged_since(&before, "failed mutations")
        .await;
    // And a write after them is numbered right after the last successful one.
    let response = post_user(&app, valid_user("after-failures")).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let events = app.events_after(before.last_event).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["sequence"], before.last_event + 1);
}

/// A NUL character is valid JSON and valid percent-encoding, so clients can send it anywhere:
/// it must never become a 500 (PostgreSQL text cannot hold it).
async fn nul_characters_never_cause_a_500(app: TestApp) {
    let before = app.write_marks().await;
    // In a path id: no such record.
    for (method, path) in [
        (Method::GET, "/api/v1/users/a%00b"),
        (Method::PATCH, "/api/v1/users/a%00b"),
        (Method::GET, "/api/v1/groups/a%00b"),
        (Method::GET, "/api/v1/groups/a%00b/members"),
        (Method::DELETE, "/api/v1/api-tokens/a%00b"),
    ] {
        let response = app
            .admin(method.clone(), path)
            .json(&json!({"display_name": "x"}))
            .send()
            .await
            .unwrap();
        expect_problem(response, StatusCode::NOT_FOUND).await;
    }
    app.assert_unchanged_since(&before, "NUL in a path").await;
    // In a query filter: no match, or a 422 naming the parameter.
    for (path, parameter) in [
        ("/api/v1/users?q=a%00b", "q"),
        ("/api/v1/users?external_ref=hr:a%00b", "external_ref"),
        ("/api/v1/groups?member=a%00b", "member"),
        ("/api/v1/audit-events?entity_id=a%00b", "entity_id"),
    ] {
        let response = app.admin(Method::GET, path).send().await.unwrap();
        let (status, body) = read(response).await;
        match status {
            StatusCode::OK => assert_eq!(body["items"], json!([]), "GET {path}"),
            StatusCode::UNPROCESSABLE_ENTITY => {
                assert_eq!(error_fields(&body), [parameter], "GET {path}: {body}")
            }
            other => panic!("GET {path}: {other} {body}"),
        }
    }
    // In a credential: refused like any unknown user, or as invalid.
    let response = app
        .anonymous(Method::POST, "/api/v1/auth/token")
        .json(&json!({"username": "ad\u{0}min", "password": "whatever-123456"}))
        .send()
        .await
        .unwrap();
    let status = response.status();
    assert!(
        status == StatusCode::UNAUTHORIZED || status == StatusCode::UNPROCESSABLE_ENTITY,
        "sign-in with NUL: {status}"
    );
    // In a body field: stored and returned exactly, or a 422 naming the field.
    for (path, body, field, read_back) in [
        (
            "/api/v1/users",
            json!({"username": "nul1", "display_name": "A\u{0}B", "roles": ["agent"]}),
            "display_name",
            "display_name",
        ),
        ("/api/v1/groups", json!({"name": "G\u{0}H"}), "name", "name"),
        (
            "/api/v1/users",
            json!({"username": "nul2", "display_name": "N", "roles": ["agent"],
                   "external_refs": [{"system": "hr", "id": "a\u{0}b"}]}),
            "external_refs[0].id",
            "external_refs",
        ),
    ] {
        let response = app
            .admin(Method::POST, path)
            .json(&body)
            .send()
            .await
            .unwrap();
        let (status, answer) = read(response).await;
        match status {
            StatusCode::CREATED => {
                let location = format!("{path}/{}", answer["id"].as_str().unwrap());
                let (_, stored) =
                    read(app.admin(Method::GET, &location).send().await.unwrap()).await;
                assert_eq!(stored[read_back], body[read_back], "{stored}");
            }
            StatusCode::UNPROCESSABLE_ENTITY => {
                assert_eq!(error_fields(&answer), [field], "POST {path}: {answer}")
            }
            other => panic!("POST {path} {body}: {other} {answer}"),
        }
    }
}

async fn health_and_contract(app: TestApp) {
    let response = app.anonymous(Method::GET, "/healthz").send().await.unwrap();
    let (status, body) = read(response).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "ok");

    let response = app.anonymous(Method::GET, "/readyz").send().await.unwrap();
    let (status, body) = read(response).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "ready");
    let database = match app.backend {
        itsm_integration_tests::Backend::Sqlite => "sqlite",
        itsm_integration_tests::Backend::Postgres => "postgres",
    };
    assert_eq!(body["database"], database);

    let response = app
        .anonymous(Method::GET, "/openapi.json")
        .send()
        .await
        .unwrap();
    assert!(header(&response, "content-type").is_some_and(|c| c.contains("json")));
    let (status, spec) = read(response).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(spec["openapi"], "3.1.0");
    for path in [
        "/api/v1/auth/token",
        "/api/v1/users",
        "/api/v1/users/{id}",
        "/api/v1/groups/{id}/members",
        "/api/v1/events",
        "/api/v1/audit-events",
        "/api/v1/api-tokens",
    ] {
        assert!(
            spec["paths"][path].is_object(),
            "{path} missing from the spec"
        );
    }

    let response = app.anonymous(Method::GET, "/docs/").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(header(&response, "content-type").is_some_and(|c| c.starts_with("text/html")));
    let html = response.text().await.unwrap();
    assert!(html.to_lowercase().contains("<html"), "{html}");
    // `/docs` itself leads there.
    let response = app.anonymous(Method::GET, "/docs").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.url().path().starts_with("/docs/"));
}

on_both_backends!(
    malformed_json_is_400,
    wrong_content_is_422_naming_the_field,
    wrong_content_type_is_415,
    body_over_the_limit_is_413 with small_bodies,
    query_parameters_are_strict,
    unknown_route_is_404,
    wrong_method_is_405_with_allow,
    problems_carry_the_request_id,
    if_match_guards_updates,
    concurrent_updates_with_if_match_lose_nothing,
    idempotency_key_replays_the_first_response,
    idempotency_keys_are_per_caller,
    failed_mutations_leave_no_trace,
    nul_characters_never_cause_a_500,
    concurrent_requests_with_one_idempotency_key_create_once,
    health_and_contract,
);
