//! Security hardening (issue 19): throttled sign-ins, bounded password hashing, revocable
//! credentials, idempotency that cannot leak, and nothing internal reaching a requester.

use std::time::Duration;

use itsm_integration_tests::reqwest::{Method, Response, StatusCode};
use itsm_integration_tests::serde_json::{json, Value};
use itsm_integration_tests::{expect_problem, header, on_both_backends, read, Config, TestApp};

async fn sign_in(app: &TestApp, username: &str, password: &str) -> Response {
    app.anonymous(Method::POST, "/api/v1/auth/token")
        .json(&json!({"username": username, "password": password}))
        .send()
        .await
        .unwrap()
}

/// Asserts a 429 problem with a `Retry-After` of at least a second; returns the seconds.
async fn expect_throttled(response: Response) -> u64 {
    let retry_after = header(&response, "retry-after")
        .and_then(|v| v.parse::<u64>().ok())
        .expect("429 without a numeric Retry-After");
    let problem = expect_problem(response, StatusCode::TOO_MANY_REQUESTS).await;
    assert_eq!(
        problem["type"],
        "https://itsm.example/problems/rate-limited"
    );
    assert!(retry_after >= 1, "{retry_after}");
    retry_after
}

fn three_free_failures(config: &mut Config) {
    config.login.free_failures_per_user = 3;
}

async fn password_guessing_is_throttled_per_username(app: TestApp) {
    let (_, _) = app.user_with_roles("walter", &["agent"]).await;
    let password = "walter-password-123";
    // Three free failures and one more at no delay; the next guess must wait.
    for _ in 0..4 {
        let response = sign_in(&app, "walter", "a-wrong-guess-0000").await;
        expect_problem(response, StatusCode::UNAUTHORIZED).await;
    }
    let wait = expect_throttled(sign_in(&app, "walter", "a-wrong-guess-0001").await).await;
    // The right password waits too (a guess that happens to be right must not get through)...
    expect_throttled(sign_in(&app, "walter", password).await).await;

    // ... and an unknown username is throttled just the same, so the 429 reveals nothing.
    for _ in 0..4 {
        let response = sign_in(&app, "nobody-at-all", "a-wrong-guess-0000").await;
        expect_problem(response, StatusCode::UNAUTHORIZED).await;
    }
    expect_throttled(sign_in(&app, "nobody-at-all", "a-wrong-guess-0001").await).await;

    // Other users are not affected.
    app.token_for("admin", itsm_integration_tests::ADMIN_PASSWORD)
        .await;

    // Once the delay passed, the right password signs in and starts the count afresh.
    tokio::time::sleep(Duration::from_secs(wait) + Duration::from_millis(200)).await;
    app.token_for("walter", password).await;
    let response = sign_in(&app, "walter", "a-wrong-guess-0002").await;
    expect_problem(response, StatusCode::UNAUTHORIZED).await;
}

fn three_free_failures_per_address(config: &mut Config) {
    config.login.free_failures_per_address = 3;
}

async fn guessing_many_usernames_is_throttled_per_address(app: TestApp) {
    for n in 0..4 {
        let response = sign_in(&app, &format!("guess-{n}"), "a-wrong-guess-0000").await;
        expect_problem(response, StatusCode::UNAUTHORIZED).await;
    }
    expect_throttled(sign_in(&app, "guess-9", "a-wrong-guess-0000").await).await;
}

fn one_hash_at_a_time(config: &mut Config) {
    config.password_hash_concurrency = 1;
    config.password_hash_queue = 2;
    config.login.free_failures_per_address = 1_000_000;
}

async fn a_login_flood_is_shed_and_the_service_stays_responsive(app: TestApp) {
    let attempts = (0..60).map(|n| {
        let app = &app;
        async move { sign_in(app, &format!("flood-{n}"), "a-wrong-guess-0000").await }
    });
    let responses = futures_util::future::join_all(attempts).await;
    let mut shed = 0;
    for response in responses {
        match response.status() {
            StatusCode::UNAUTHORIZED => {}
            StatusCode::SERVICE_UNAVAILABLE => {
                assert!(header(&response, "retry-after").is_some());
                expect_problem(response, StatusCode::SERVICE_UNAVAILABLE).await;
                shed += 1;
            }
            other => panic!(
                "a flooded sign-in answered {other}: {:?}",
                response.text().await
            ),
        }
    }
    assert!(
        shed > 0,
        "sixty sign-ins at once with one hash slot and a queue of two"
    );
    let response = app.admin(Method::GET, "/api/v1/me").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

async fn me(app: &TestApp, token: &str) -> StatusCode {
    app.request(Method::GET, "/api/v1/me", token)
        .send()
        .await
        .unwrap()
        .status()
}

async fn logout_revokes_the_presented_token_only(app: TestApp) {
    let (_, first) = app.user_with_roles("lena", &["agent"]).await;
    let second = app.token_for("lena", "lena-password-123").await;
    let response = app
        .request(Method::POST, "/api/v1/auth/logout", &first)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(me(&app, &first).await, StatusCode::UNAUTHORIZED);
    assert_eq!(me(&app, &second).await, StatusCode::OK);
    let response = app
        .request(Method::POST, "/api/v1/auth/logout", &first)
        .send()
        .await
        .unwrap();
    expect_problem(response, StatusCode::UNAUTHORIZED).await;
    let response = app
        .anonymous(Method::POST, "/api/v1/auth/logout")
        .send()
        .await
        .unwrap();
    expect_problem(response, StatusCode::UNAUTHORIZED).await;
}

async fn change_password(app: &TestApp, token: &str, current: &str, new: &str) -> Response {
    app.request(Method::POST, "/api/v1/me/password", token)
        .json(&json!({"current_password": current, "new_password": new}))
        .send()
        .await
        .unwrap()
}

async fn changing_my_password_refuses_earlier_tokens(app: TestApp) {
    let (_, old) = app.user_with_roles("mia", &["requester"]).await;
    let other_session = app.token_for("mia", "mia-password-123").await;
    let response = change_password(&app, &old, "not-my-password-1", "a-new-password-456").await;
    expect_problem(response, StatusCode::FORBIDDEN).await;
    let response = change_password(&app, &old, "mia-password-123", "short").await;
    let problem = expect_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(problem["errors"][0]["field"], "new_password", "{problem}");
    assert_eq!(
        me(&app, &old).await,
        StatusCode::OK,
        "refusals change nothing"
    );

    let response = change_password(&app, &old, "mia-password-123", "a-new-password-456").await;
    assert_eq!(
        header(&response, "cache-control").as_deref(),
        Some("no-store")
    );
    let (status, body) = read(response).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let fresh = body["access_token"].as_str().unwrap().to_owned();
    assert_eq!(me(&app, &old).await, StatusCode::UNAUTHORIZED);
    assert_eq!(me(&app, &other_session).await, StatusCode::UNAUTHORIZED);
    assert_eq!(me(&app, &fresh).await, StatusCode::OK);
    let response = sign_in(&app, "mia", "mia-password-123").await;
    expect_problem(response, StatusCode::UNAUTHORIZED).await;
    app.token_for("mia", "a-new-password-456").await;
}

async fn an_admin_reset_refuses_old_tokens_and_forces_a_change(app: TestApp) {
    let (user, old) = app.user_with_roles("noah", &["agent"]).await;
    let id = user["id"].as_str().unwrap();
    let response = app
        .admin(Method::PATCH, &format!("/api/v1/users/{id}"))
        .json(&json!({"password": "temporary-password-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(me(&app, &old).await, StatusCode::UNAUTHORIZED);

    let response = sign_in(&app, "noah", "temporary-password-1").await;
    let (status, body) = read(response).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["password_change_required"], true);
    let temporary = body["access_token"].as_str().unwrap().to_owned();
    assert_eq!(me(&app, &temporary).await, StatusCode::OK);
    let response = app
        .request(Method::GET, "/api/v1/incidents", &temporary)
        .send()
        .await
        .unwrap();
    expect_problem(response, StatusCode::FORBIDDEN).await;

    let response = change_password(
        &app,
        &temporary,
        "temporary-password-1",
        "noahs-own-password",
    )
    .await;
    let (status, body) = read(response).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["password_change_required"], false);
    let own = body["access_token"].as_str().unwrap();
    let response = app
        .request(Method::GET, "/api/v1/incidents", own)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

async fn deactivation_refuses_tokens_even_after_reactivation(app: TestApp) {
    let (user, old) = app.user_with_roles("olga", &["agent"]).await;
    let id = user["id"].as_str().unwrap();
    for active in [false, true] {
        let response = app
            .admin(Method::PATCH, &format!("/api/v1/users/{id}"))
            .json(&json!({"active": active}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    assert_eq!(me(&app, &old).await, StatusCode::UNAUTHORIZED);
    let fresh = app.token_for("olga", "olga-password-123").await;
    assert_eq!(me(&app, &fresh).await, StatusCode::OK);
}

const KNOWN_SECRET: &str = "integration-tests-known-signing-secret-0123456789";

fn known_secret(config: &mut Config) {
    config.jwt_secret = Some(KNOWN_SECRET.into());
}

async fn tokens_from_the_future_or_too_long_lived_are_refused(app: TestApp) {
    let admin_id = app.id_of(&app.admin_token).await;
    let now = chrono::Utc::now().timestamp();
    let forge = |iat: i64, exp: i64| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &json!({"sub": admin_id, "roles": ["admin"], "iat": iat, "exp": exp,
                    "jti": uuid::Uuid::new_v4().to_string()}),
            &jsonwebtoken::EncodingKey::from_secret(KNOWN_SECRET.as_bytes()),
        )
        .unwrap()
    };
    assert_eq!(me(&app, &forge(now, now + 600)).await, StatusCode::OK);
    assert_eq!(
        me(&app, &forge(now + 600, now + 1200)).await,
        StatusCode::UNAUTHORIZED,
        "issued in the future"
    );
    assert_eq!(
        me(&app, &forge(now, now + 10 * 365 * 86_400)).await,
        StatusCode::UNAUTHORIZED,
        "ten years of life"
    );
}

async fn a_replayed_token_creation_shows_no_secret(app: TestApp) {
    let create = || {
        app.admin(Method::POST, "/api/v1/api-tokens")
            .header("idempotency-key", "token-once")
            .json(&json!({"name": "crm-sync", "role": "integration", "expires_at": null}))
    };
    let response = create().send().await.unwrap();
    assert_eq!(
        header(&response, "cache-control").as_deref(),
        Some("no-store")
    );
    let location = header(&response, "location").expect("Location");
    let (status, first) = read(response).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    let secret = first["token"].as_str().unwrap().to_owned();

    let response = create().send().await.unwrap();
    assert_eq!(
        header(&response, "location").as_deref(),
        Some(location.as_str())
    );
    assert_eq!(
        header(&response, "idempotent-replayed").as_deref(),
        Some("true")
    );
    let text = response.text().await.unwrap();
    assert!(
        !text.contains(&secret),
        "the replay shows the secret: {text}"
    );
    let problem: Value = itsm_integration_tests::serde_json::from_str(&text).unwrap();
    assert_eq!(problem["status"], 409, "{problem}");
    assert!(problem["detail"]
        .as_str()
        .unwrap()
        .contains("shown only once"));
    assert_eq!(app.list_all("/api/v1/api-tokens").await.len(), 1);
}

async fn a_replay_checks_the_caller_may_still_make_the_request(app: TestApp) {
    let (other_admin, token) = app.user_with_roles("second-admin", &["admin"]).await;
    let id = other_admin["id"].as_str().unwrap();
    let create = || {
        app.request(Method::POST, "/api/v1/groups", &token)
            .header("idempotency-key", "group-once")
            .json(&json!({"name": "Replayed", "description": "made once"}))
    };
    let response = create().send().await.unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let set_roles = |roles: Value| {
        app.admin(Method::PATCH, &format!("/api/v1/users/{id}"))
            .json(&json!({ "roles": roles }))
    };
    assert_eq!(
        set_roles(json!(["agent"])).send().await.unwrap().status(),
        StatusCode::OK
    );
    let response = create().send().await.unwrap();
    assert!(header(&response, "idempotent-replayed").is_none());
    expect_problem(response, StatusCode::FORBIDDEN).await;

    assert_eq!(
        set_roles(json!(["admin"])).send().await.unwrap().status(),
        StatusCode::OK
    );
    let response = create().send().await.unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(
        header(&response, "idempotent-replayed").as_deref(),
        Some("true")
    );
    assert_eq!(app.list_all("/api/v1/groups").await.len(), 1);
}

async fn sign_in_accepts_an_idempotency_key(app: TestApp) {
    for _ in 0..2 {
        let response = app
            .anonymous(Method::POST, "/api/v1/auth/token")
            .header("idempotency-key", "sign-in-1")
            .json(&json!({"username": "admin", "password": itsm_integration_tests::ADMIN_PASSWORD}))
            .send()
            .await
            .unwrap();
        let (status, body) = read(response).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body["access_token"].is_string());
    }
}

/// Everything a requester can read of an incident: body, notes, history, the list, and each
/// response's headers.
async fn all_a_requester_reads(app: &TestApp, token: &str, id: &str) -> String {
    let mut seen = String::new();
    for path in [
        format!("/api/v1/incidents/{id}"),
        format!("/api/v1/incidents/{id}/notes"),
        format!("/api/v1/incidents/{id}/history"),
        "/api/v1/incidents".to_owned(),
    ] {
        let response = app.request(Method::GET, &path, token).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        seen.push_str(&format!("{:?}", response.headers()));
        seen.push_str(&response.text().await.unwrap());
    }
    seen
}

async fn nothing_internal_reaches_a_requester(app: TestApp) {
    use crate::incidents::{create_incident, text};
    let (agent, agent_token) = app.user_with_roles("quinn", &["agent"]).await;
    let group = app.group("Hidden Second Line").await;
    let response = app
        .admin(
            Method::POST,
            &format!("/api/v1/groups/{}/members", text(&group, "id")),
        )
        .json(&json!({"user_id": text(&agent, "id")}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let (amy, _) = app.user_with_roles("amy", &["requester"]).await;
    let (ben, ben_token) = app.user_with_roles("ben", &["requester"]).await;
    let transition = |id: String, body: Value| {
        let app = &app;
        let agent_token = agent_token.clone();
        async move {
            let response = app
                .request(
                    Method::POST,
                    &format!("/api/v1/incidents/{id}/transitions"),
                    &agent_token,
                )
                .json(&body)
                .send()
                .await
                .unwrap();
            let (status, body) = read(response).await;
            assert_eq!(status, StatusCode::OK, "{body}");
        }
    };
    let assign = json!({"action": "assign", "assignee": text(&agent, "id"),
                        "assignment_group": text(&group, "id")});

    let parent = create_incident(
        &app,
        &agent_token,
        json!({"title": "Mail cluster down", "caller": text(&amy, "id")}),
    )
    .await;
    let child = create_incident(
        &app,
        &agent_token,
        json!({"title": "No mail", "caller": text(&ben, "id")}),
    )
    .await;
    let child_id = text(&child, "id");
    transition(child_id.clone(), assign.clone()).await;
    let response = app
        .request(
            Method::POST,
            &format!("/api/v1/incidents/{child_id}/notes"),
            &agent_token,
        )
        .json(&json!({"body": "WORK-NOTE-MARKER-7781 caller is VIP"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let response = app
        .request(
            Method::PATCH,
            &format!("/api/v1/incidents/{child_id}"),
            &agent_token,
        )
        .json(&json!({"parent_id": text(&parent, "id")}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    transition(text(&parent, "id"), assign).await;
    transition(
        text(&parent, "id"),
        json!({"action": "resolve", "resolution_code": "fixed",
               "resolution_notes": "PARENT-NOTES-MARKER-4412: restored Amy's mailbox"}),
    )
    .await;

    let seen = all_a_requester_reads(&app, &ben_token, &child_id).await;
    assert!(
        seen.contains("resolved"),
        "the child was resolved with its parent: {seen}"
    );
    for (what, secret) in [
        ("a work note", "WORK-NOTE-MARKER-7781".to_owned()),
        (
            "the parent's resolution notes",
            "PARENT-NOTES-MARKER-4412".to_owned(),
        ),
        ("the parent's number", text(&parent, "number")),
        ("the parent's id", text(&parent, "id")),
        ("the group's id", text(&group, "id")),
        ("the group's name", "Hidden Second Line".to_owned()),
        ("the agent's id", text(&agent, "id")),
        ("the agent's name", "quinn".to_owned()),
    ] {
        assert!(!seen.contains(&secret), "a requester reads {what}: {seen}");
    }
    // Staff still see who did what and why.
    let response = app
        .request(
            Method::GET,
            &format!("/api/v1/incidents/{child_id}/history"),
            &agent_token,
        )
        .send()
        .await
        .unwrap();
    let staff_view = response.text().await.unwrap();
    assert!(staff_view.contains("quinn"), "{staff_view}");
}

fn served_over_tls_for_a_frontend(config: &mut Config) {
    config.hsts_seconds = Some(31_536_000);
    config.cors_origins = vec!["https://desk.example".into()];
}

async fn security_headers_and_cors(app: TestApp) {
    // nosniff on everything; no-store on what an authenticated caller receives.
    let response = app.admin(Method::GET, "/api/v1/me").send().await.unwrap();
    assert_eq!(
        header(&response, "x-content-type-options").as_deref(),
        Some("nosniff")
    );
    assert_eq!(
        header(&response, "cache-control").as_deref(),
        Some("no-store")
    );
    assert!(header(&response, "strict-transport-security")
        .is_some_and(|v| v.starts_with("max-age=31536000")));
    let response = app
        .anonymous(Method::GET, "/api/v1/me")
        .send()
        .await
        .unwrap();
    assert_eq!(
        header(&response, "x-content-type-options").as_deref(),
        Some("nosniff")
    );
    expect_problem(response, StatusCode::UNAUTHORIZED).await;

    // The documentation runs under a strict policy its page can live with.
    let response = app.anonymous(Method::GET, "/docs/").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let policy = header(&response, "content-security-policy").expect("CSP on /docs");
    assert!(policy.contains("default-src 'none'") && policy.contains("frame-ancestors 'none'"));
    let page = response.text().await.unwrap();
    assert!(page.contains("<script"), "{page}");
    for script in page.split("<script").skip(1) {
        let tag = script.split('>').next().unwrap_or("");
        assert!(
            tag.contains("src="),
            "an inline script the policy would block: {tag}"
        );
    }

    // A frontend's preflight, and the headers it may read.
    let response = app
        .anonymous(Method::OPTIONS, "/api/v1/incidents")
        .header("origin", "https://desk.example")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type, if-match, idempotency-key",
        )
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    assert_eq!(
        header(&response, "access-control-allow-origin").as_deref(),
        Some("https://desk.example")
    );
    let response = app
        .admin(Method::GET, "/api/v1/me")
        .header("origin", "https://desk.example")
        .send()
        .await
        .unwrap();
    let exposed = header(&response, "access-control-expose-headers")
        .unwrap_or_default()
        .to_lowercase();
    for name in ["etag", "location", "link", "x-request-id", "retry-after"] {
        assert!(exposed.contains(name), "{name} not exposed: {exposed}");
    }
    let response = app
        .admin(Method::GET, "/api/v1/me")
        .header("origin", "https://elsewhere.example")
        .send()
        .await
        .unwrap();
    assert!(header(&response, "access-control-allow-origin").is_none());
}

async fn hostile_query_strings_get_short_answers(app: TestApp) {
    use crate::incidents::create_incident;
    let (_, agent) = app.user_with_roles("vera", &["agent"]).await;
    for n in 0..12 {
        create_incident(&app, &agent, json!({"title": format!("Printer {n}")})).await;
    }
    // Repeated values count once: the same page as naming each value once.
    let repeated = "state=new&state=in_progress&".repeat(200);
    let page = |query: String| {
        let app = &app;
        async move {
            let response = app
                .admin(Method::GET, &format!("/api/v1/incidents?{query}"))
                .send()
                .await
                .unwrap();
            let (status, body) = read(response).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            body
        }
    };
    let once = page("state=in_progress&state=new&limit=500".into()).await;
    let many = page(format!("{repeated}limit=500")).await;
    assert_eq!(once["items"], many["items"]);
    assert_eq!(once["items"].as_array().unwrap().len(), 12);

    // Limits are honoured exactly, whatever the query reads underneath.
    for (limit, items, more) in [
        (1, 1, true),
        (11, 11, true),
        (12, 12, false),
        (13, 12, false),
    ] {
        let body = page(format!("limit={limit}")).await;
        assert_eq!(
            body["items"].as_array().unwrap().len(),
            items,
            "limit {limit}"
        );
        assert_eq!(body["next_cursor"].is_string(), more, "limit {limit}");
    }

    // A thousand unknown parameters: a short 422 that still says how many were wrong.
    let unknown: Vec<String> = (0..1000).map(|n| format!("bogus{n}=1")).collect();
    let response = app
        .admin(
            Method::GET,
            &format!("/api/v1/incidents?{}", unknown.join("&")),
        )
        .send()
        .await
        .unwrap();
    let problem = expect_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(problem["errors"].as_array().unwrap().len(), 20);
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .starts_with("1000 fields"),
        "{problem}"
    );
    assert!(problem.to_string().len() < 32 * 1024);
}

async fn api_token(app: &TestApp, scopes: Value) -> (StatusCode, Value) {
    let response = app
        .admin(Method::POST, "/api/v1/api-tokens")
        .json(
            &json!({"name": "scoped", "role": "integration", "expires_at": null,
                      "scopes": scopes}),
        )
        .send()
        .await
        .unwrap();
    read(response).await
}

async fn a_read_scoped_token_cannot_write(app: TestApp) {
    let (status, reader) = api_token(&app, json!(["incidents:read"])).await;
    assert_eq!(status, StatusCode::CREATED, "{reader}");
    assert_eq!(reader["scopes"], json!(["incidents:read"]));
    let reader = reader["token"].as_str().unwrap().to_owned();
    let call = |method: Method, path: &'static str, token: String| {
        let app = &app;
        async move {
            app.request(method, path, &token)
                .json(&json!({}))
                .send()
                .await
                .unwrap()
        }
    };
    let response = call(Method::GET, "/api/v1/incidents", reader.clone()).await;
    assert_eq!(response.status(), StatusCode::OK);
    let response = call(Method::GET, "/api/v1/me", reader.clone()).await;
    assert_eq!(response.status(), StatusCode::OK);
    for (method, path) in [
        (Method::POST, "/api/v1/incidents"),
        (Method::GET, "/api/v1/events"),
        (Method::GET, "/api/v1/configuration-items"),
    ] {
        let response = call(method.clone(), path, reader.clone()).await;
        let problem = expect_problem(response, StatusCode::FORBIDDEN).await;
        assert!(
            problem["detail"].as_str().unwrap().contains("scope"),
            "{method} {path}: {problem}"
        );
    }

    // A write scope includes reading its family, and nothing beyond the role.
    let (_, writer) = api_token(&app, json!(["cmdb:write"])).await;
    let writer = writer["token"].as_str().unwrap().to_owned();
    let response = call(Method::GET, "/api/v1/configuration-items", writer.clone()).await;
    assert_eq!(response.status(), StatusCode::OK);
    let response = call(Method::POST, "/api/v1/configuration-items", writer.clone()).await;
    expect_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    let response = call(Method::POST, "/api/v1/users", writer.clone()).await;
    expect_problem(response, StatusCode::FORBIDDEN).await;

    // Without scopes a token is read-only: it reads what its role may read, and writes nothing
    // its role would allow (an integration is no longer full staff by default).
    let (_, unscoped) = api_token(&app, Value::Null).await;
    assert!(unscoped["scopes"].is_null(), "{unscoped}");
    let unscoped = unscoped["token"].as_str().unwrap().to_owned();
    for path in [
        "/api/v1/events",
        "/api/v1/incidents",
        "/api/v1/configuration-items",
    ] {
        let response = call(Method::GET, path, unscoped.clone()).await;
        assert_eq!(response.status(), StatusCode::OK, "GET {path}");
    }
    for path in [
        "/api/v1/incidents",
        "/api/v1/configuration-items",
        "/api/v1/alerts",
    ] {
        let response = call(Method::POST, path, unscoped.clone()).await;
        let problem = expect_problem(response, StatusCode::FORBIDDEN).await;
        assert!(
            problem["detail"].as_str().unwrap().contains("only read"),
            "POST {path}: {problem}"
        );
    }

    // Each use is noted, once a minute at most, without a write per request.
    let tokens = app.list_all("/api/v1/api-tokens").await;
    let used = tokens
        .iter()
        .find(|t| t["scopes"] == json!(["incidents:read"]))
        .unwrap();
    let mut last_used = used["last_used_at"].clone();
    for _ in 0..50 {
        if last_used.is_string() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let tokens = app.list_all("/api/v1/api-tokens").await;
        last_used = tokens.iter().find(|t| t["id"] == used["id"]).unwrap()["last_used_at"].clone();
    }
    assert!(last_used.is_string(), "{used}");

    let before = app.list_all("/api/v1/api-tokens").await.len();
    for scopes in [
        json!([]),
        json!(["incidents:delete"]),
        json!("incidents:read"),
    ] {
        let (status, problem) = api_token(&app, scopes.clone()).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{scopes}: {problem}"
        );
    }
    assert_eq!(app.list_all("/api/v1/api-tokens").await.len(), before);
}

fn five_requests_per_credential(config: &mut Config) {
    config.rate_limit_per_credential = Some(5);
    config.rate_limit_window_seconds = 3600;
}

async fn requests_beyond_the_configured_rate_get_429(app: TestApp) {
    let (_, token) = app.user_with_roles("rita", &["agent"]).await;
    for n in 0..4 {
        let response = app.admin(Method::GET, "/api/v1/me").send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            header(&response, "ratelimit-policy").as_deref(),
            Some("\"default\";q=5;w=3600")
        );
        let state = header(&response, "ratelimit").unwrap();
        assert!(
            state.starts_with(&format!("\"default\";r={};t=", 3 - n)),
            "{state}"
        );
    }
    let response = app.admin(Method::GET, "/api/v1/me").send().await.unwrap();
    assert!(header(&response, "ratelimit").is_some());
    expect_throttled(response).await;
    // Another credential has its own allowance.
    let response = app
        .request(Method::GET, "/api/v1/me", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

fn searches_out_of_time_at_once(config: &mut Config) {
    config.database.search_time_limit = Duration::ZERO;
}

/// A word search past its time limit is stopped and answered 503 with a hint, and holds no
/// read connection afterwards. The limit here is zero (SQLite stops at the first row looked
/// at; PostgreSQL's `statement_timeout` is then its least, a millisecond, which a search that
/// sorts thousands of matches always exceeds), so nothing depends on the machine's speed.
async fn a_word_search_past_its_time_limit_is_stopped(app: TestApp) {
    let url = app.database.url.clone().unwrap();
    itsm_integration_tests::itsm_command(&url, &["seed", "--incidents", "3000"], &[])
        .expect("itsm seed");
    for path in [
        "/api/v1/incidents?q=issue&sort=priority&limit=500",
        "/api/v1/problems?q=incidents&sort=priority&limit=500",
    ] {
        let response = app.admin(Method::GET, path).send().await.unwrap();
        assert_eq!(
            header(&response, "retry-after").as_deref(),
            Some("1"),
            "{path}"
        );
        let problem = expect_problem(response, StatusCode::SERVICE_UNAVAILABLE).await;
        assert!(
            problem["detail"].as_str().unwrap().contains("narrow"),
            "{path}: {problem}"
        );
    }
    // Every read connection is free again: more lists than connections all answer.
    for _ in 0..12 {
        let response = app
            .admin(Method::GET, "/api/v1/incidents?state=new&limit=5")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
}

on_both_backends!(
    a_word_search_past_its_time_limit_is_stopped with searches_out_of_time_at_once,
    password_guessing_is_throttled_per_username with three_free_failures,
    guessing_many_usernames_is_throttled_per_address with three_free_failures_per_address,
    a_login_flood_is_shed_and_the_service_stays_responsive with one_hash_at_a_time,
    logout_revokes_the_presented_token_only,
    changing_my_password_refuses_earlier_tokens,
    an_admin_reset_refuses_old_tokens_and_forces_a_change,
    deactivation_refuses_tokens_even_after_reactivation,
    tokens_from_the_future_or_too_long_lived_are_refused with known_secret,
    a_replayed_token_creation_shows_no_secret,
    a_replay_checks_the_caller_may_still_make_the_request,
    sign_in_accepts_an_idempotency_key,
    nothing_internal_reaches_a_requester,
    security_headers_and_cors with served_over_tls_for_a_frontend,
    hostile_query_strings_get_short_answers,
    a_read_scoped_token_cannot_write,
    requests_beyond_the_configured_rate_get_429 with five_requests_per_credential,
);

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sqlite_file_and_its_wal_are_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let app = TestApp::spawn(itsm_integration_tests::Backend::Sqlite)
        .await
        .expect("sqlite");
    let url = app.database.url.clone().expect("a SQLite URL");
    let path = url.trim_start_matches("sqlite://");
    for suffix in ["", "-wal"] {
        let file = format!("{path}{suffix}");
        let mode = std::fs::metadata(&file).expect(&file).permissions().mode();
        assert_eq!(mode & 0o077, 0, "{file} is readable by others: {mode:o}");
    }
}

/// A start-up that must be refused: returns the error.
async fn refused_start(adjust: impl FnOnce(&mut Config) + Send + 'static) -> String {
    let path = std::env::temp_dir().join(format!("itsm-refused-{}.db", uuid::Uuid::new_v4()));
    let mut config = Config {
        bind: "127.0.0.1:0".into(),
        admin_password: Some(itsm_integration_tests::ADMIN_PASSWORD.into()),
        ..Config::default()
    };
    config.database.url = Some(format!("sqlite://{}", path.display()));
    adjust(&mut config);
    let outcome = tokio::task::spawn_blocking(move || itsm_api::app::spawn(config))
        .await
        .unwrap();
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    match outcome {
        Ok(_) => panic!("the service started"),
        Err(e) => e,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weak_bootstrap_passwords_and_signing_secrets_stop_start_up() {
    let error = refused_start(|c| c.admin_password = Some("short".into())).await;
    assert!(error.contains("ITSM_ADMIN_PASSWORD"), "{error}");
    let error = refused_start(|c| c.jwt_secret = Some("  ".into())).await;
    assert!(error.contains("blank"), "{error}");
    let error = refused_start(|c| c.jwt_secret = Some("x".repeat(40))).await;
    assert!(error.contains("weak"), "{error}");
}
