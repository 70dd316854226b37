//! Authentication and authorisation: access tokens, every way a credential is refused (401),
//! API tokens, deactivation, and role checks (403).

use base64::Engine;
use itsm_integration_tests::reqwest::{Method, Response, StatusCode};
use itsm_integration_tests::serde_json::{json, Value};
use itsm_integration_tests::{expect_problem, on_both_backends, read, Config, TestApp};
use jsonwebtoken::{Algorithm, EncodingKey, Header};

/// The signing secret of the services these tests forge tokens for.
const KNOWN_SECRET: &str = "integration-tests-known-signing-secret-0123456789";
const OTHER_SECRET: &str = "some-other-signing-secret-the-server-never-saw-42";

fn known_secret(config: &mut Config) {
    config.jwt_secret = Some(KNOWN_SECRET.into());
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn sign(secret: &str, algorithm: Algorithm, claims: &Value) -> String {
    jsonwebtoken::encode(
        &Header::new(algorithm),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("sign a test token")
}

/// Claims of the kind the service issues: valid for the next hour.
fn claims_for(user_id: &str, roles: Value) -> Value {
    json!({
        "sub": user_id,
        "roles": roles,
        "iat": now(),
        "exp": now() + 3600,
        "jti": uuid::Uuid::new_v4().to_string(),
    })
}

/// Asserts a 401 problem with a `WWW-Authenticate: Bearer` challenge; returns the problem.
async fn expect_unauthenticated(response: Response) -> Value {
    let challenge = response
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let problem = expect_problem(response, StatusCode::UNAUTHORIZED).await;
    assert!(
        challenge.starts_with("Bearer"),
        "401 without a Bearer challenge: {challenge:?}"
    );
    assert_eq!(
        problem["type"],
        "https://itsm.example/problems/unauthenticated"
    );
    problem
}

async fn me_with(app: &TestApp, token: &str) -> Response {
    app.request(Method::GET, "/api/v1/me", token)
        .send()
        .await
        .unwrap()
}

async fn sign_in(app: &TestApp, username: &str, password: &str) -> Response {
    app.anonymous(Method::POST, "/api/v1/auth/token")
        .json(&json!({"username": username, "password": password}))
        .send()
        .await
        .unwrap()
}

async fn token_issue_returns_a_bearer_token(app: TestApp) {
    let response = sign_in(&app, "admin", itsm_integration_tests::ADMIN_PASSWORD).await;
    assert_eq!(
        response
            .headers()
            .get("cache-control")
            .and_then(|v| v.to_str().ok()),
        Some("no-store")
    );
    let (status, body) = read(response).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    let token = body["access_token"].as_str().expect("access_token");
    assert_eq!(token.split('.').count(), 3, "not a JWT: {token}");

    let (status, me) = read(me_with(&app, token).await).await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["username"], "admin");
    assert_eq!(me["kind"], "user");
    assert!(me.get("password").is_none() && me.get("password_hash").is_none());
}

async fn missing_authorization_is_401(app: TestApp) {
    let before = app.write_marks().await;
    for (method, path) in [
        (Method::GET, "/api/v1/me"),
        (Method::GET, "/api/v1/users"),
        (Method::GET, "/api/v1/events"),
        (Method::GET, "/api/v1/api-tokens"),
    ] {
        let response = app.anonymous(method, path).send().await.unwrap();
        expect_unauthenticated(response).await;
    }
    let response = app
        .anonymous(Method::POST, "/api/v1/users")
        .json(&json!({"username": "sneaky", "display_name": "Sneaky", "roles": ["admin"]}))
        .send()
        .await
        .unwrap();
    let problem = expect_unauthenticated(response).await;
    assert_eq!(problem["instance"], "/api/v1/users");
    app.assert_unchanged_since(&before, "an unauthenticated POST")
        .await;
}

async fn malformed_credentials_are_401(app: TestApp) {
    let admin = app.admin_token.clone();
    let headers = [
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("admin:x")
        ),
        "Bearer".to_owned(),
        "Bearer ".to_owned(),
        admin.clone(),
        format!("Token {admin}"),
        "Bearer not-a-jwt".to_owned(),
        "Bearer a.b.c".to_owned(),
        format!("Bearer {admin}x"),
        format!("Bearer {}", &admin[..admin.len() - 4]),
        "Bearer itsm_not-a-real-api-token".to_owned(),
        "Bearer itsm_".to_owned(),
    ];
    for header in headers {
        let response = app
            .anonymous(Method::GET, "/api/v1/me")
            .header("Authorization", &header)
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::UNAUTHORIZED,
            "Authorization: {header:?}"
        );
        expect_unauthenticated(response).await;
    }
    // The scheme is case-insensitive: the genuine token still works.
    let response = app
        .anonymous(Method::GET, "/api/v1/me")
        .header("Authorization", format!("bearer {admin}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

async fn forged_tokens_are_refused(app: TestApp) {
    let admin_id = app.id_of(&app.admin_token).await;

    // Control: a token built exactly like the service's own, with its secret, is accepted, so
    // every refusal below is due to the one thing changed.
    let genuine = sign(
        KNOWN_SECRET,
        Algorithm::HS256,
        &claims_for(&admin_id, json!(["admin"])),
    );
    let (status, me) = read(me_with(&app, &genuine).await).await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["id"], admin_id);

    // Expired more than a minute ago.
    let mut expired = claims_for(&admin_id, json!(["admin"]));
    expired["iat"] = json!(now() - 7200);
    expired["exp"] = json!(now() - 120);
    let token = sign(KNOWN_SECRET, Algorithm::HS256, &expired);
    expect_unauthenticated(me_with(&app, &token).await).await;

    // Signed with another secret.
    let token = sign(
        OTHER_SECRET,
        Algorithm::HS256,
        &claims_for(&admin_id, json!(["admin"])),
    );
    expect_unauthenticated(me_with(&app, &token).await).await;

    // `alg: none`: the genuine claims, no signature.
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let payload = engine.encode(claims_for(&admin_id, json!(["admin"])).to_string());
    for header in [r#"{"alg":"none","typ":"JWT"}"#, r#"{"alg":"none"}"#] {
        let unsigned = format!("{}.{payload}.", engine.encode(header));
        expect_unauthenticated(me_with(&app, &unsigned).await).await;
    }
    // The genuine token's header and payload with its signature stripped.
    let stripped = genuine.rsplit_once('.').unwrap().0.to_owned() + ".";
    expect_unauthenticated(me_with(&app, &stripped).await).await;

    // Another HMAC algorithm, even with the right secret.
    let token = sign(
        KNOWN_SECRET,
        Algorithm::HS384,
        &claims_for(&admin_id, json!(["admin"])),
    );
    expect_unauthenticated(me_with(&app, &token).await).await;

    // Without an expiry.
    let mut no_exp = claims_for(&admin_id, json!(["admin"]));
    no_exp.as_object_mut().unwrap().remove("exp");
    let token = sign(KNOWN_SECRET, Algorithm::HS256, &no_exp);
    expect_unauthenticated(me_with(&app, &token).await).await;

    // Validly signed, for a user that does not exist.
    let token = sign(
        KNOWN_SECRET,
        Algorithm::HS256,
        &claims_for("01890000-0000-7000-8000-000000000000", json!(["admin"])),
    );
    expect_unauthenticated(me_with(&app, &token).await).await;
}

async fn roles_come_from_the_user_not_from_the_token(app: TestApp) {
    let (requester, _) = app.user_with_roles("rita", &["requester"]).await;
    let rita = requester["id"].as_str().unwrap();
    // A genuine signature over claims that lie about the roles gains nothing.
    let token = sign(
        KNOWN_SECRET,
        Algorithm::HS256,
        &claims_for(rita, json!(["admin"])),
    );
    let (status, me) = read(me_with(&app, &token).await).await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["roles"], json!(["requester"]));
    let response = app
        .request(Method::GET, "/api/v1/users", &token)
        .send()
        .await
        .unwrap();
    expect_problem(response, StatusCode::FORBIDDEN).await;
}

async fn role_changes_apply_to_issued_tokens(app: TestApp) {
    let (user, token) = app.user_with_roles("otto", &["agent"]).await;
    let response = app
        .request(Method::GET, "/api/v1/users", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let response = app
        .admin(
            Method::PATCH,
            &format!("/api/v1/users/{}", user["id"].as_str().unwrap()),
        )
        .json(&json!({"roles": ["requester"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let response = app
        .request(Method::GET, "/api/v1/users", &token)
        .send()
        .await
        .unwrap();
    expect_problem(response, StatusCode::FORBIDDEN).await;
    let (_, me) = read(me_with(&app, &token).await).await;
    assert_eq!(me["roles"], json!(["requester"]));
}

async fn wrong_password_and_unknown_user_look_the_same(app: TestApp) {
    let (_, _) = app.user_with_roles("walter", &["agent"]).await;
    let wrong = expect_unauthenticated(sign_in(&app, "walter", "not-walters-password").await).await;
    let unknown =
        expect_unauthenticated(sign_in(&app, "nobody-here", "not-walters-password").await).await;
    let comparable = |mut problem: Value| {
        problem.as_object_mut().unwrap().remove("request_id");
        problem
    };
    assert_eq!(comparable(wrong.clone()), comparable(unknown));
    assert_eq!(wrong["instance"], "/api/v1/auth/token");

    // A service account without a password cannot sign in either.
    let response = app
        .admin(Method::POST, "/api/v1/users")
        .json(&json!({"username": "svc-backup", "display_name": "Backup", "roles": ["agent"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let no_password =
        expect_unauthenticated(sign_in(&app, "svc-backup", "anything-at-all-123").await).await;
    assert_eq!(comparable(no_password), comparable(wrong));
}

async fn token_request_validation(app: TestApp) {
    let response = app
        .anonymous(Method::POST, "/api/v1/auth/token")
        .json(&json!({"username": "admin"}))
        .send()
        .await
        .unwrap();
    let problem = expect_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(problem["errors"][0]["field"], "password", "{problem}");

    let response = app
        .anonymous(Method::POST, "/api/v1/auth/token")
        .header("content-type", "application/json")
        .body(r#"{"username": "admin", "password": "#)
        .send()
        .await
        .unwrap();
    expect_problem(response, StatusCode::BAD_REQUEST).await;
}

async fn deactivated_user_is_locked_out(app: TestApp) {
    let (user, token) = app.user_with_roles("dora", &["agent"]).await;
    let id = user["id"].as_str().unwrap();
    let response = me_with(&app, &token).await;
    assert_eq!(response.status(), StatusCode::OK);

    let response = app
        .admin(Method::PATCH, &format!("/api/v1/users/{id}"))
        .json(&json!({"active": false}))
        .send()
        .await
        .unwrap();
    let (status, updated) = read(response).await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["active"], false);

    // The still-unexpired access token stops working at once ...
    expect_unauthenticated(me_with(&app, &token).await).await;
    let response = app
        .request(Method::GET, "/api/v1/users", &token)
        .send()
        .await
        .unwrap();
    expect_unauthenticated(response).await;
    // ... and signing in with the right password is refused like a wrong password.
    let refused = expect_unauthenticated(sign_in(&app, "dora", "dora-password-123").await).await;
    assert_eq!(refused["detail"], "invalid username or password");

    let audit = app.audit_of("user", id).await;
    assert_eq!(audit[0]["action"], "deactivate", "{audit:?}");
    assert_eq!(audit[0]["changes"]["active"], json!([true, false]));

    // Reactivation restores sign-in.
    let response = app
        .admin(Method::PATCH, &format!("/api/v1/users/{id}"))
        .json(&json!({"active": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let fresh = app.token_for("dora", "dora-password-123").await;
    assert_eq!(me_with(&app, &fresh).await.status(), StatusCode::OK);
}

async fn role_denied_is_403(app: TestApp) {
    let (_, agent) = app.user_with_roles("agnes", &["agent"]).await;
    let (requester, requester_token) = app.user_with_roles("reggie", &["requester"]).await;
    let before = app.write_marks().await;

    let denied = [
        (
            &agent,
            Method::POST,
            "/api/v1/users",
            Some(json!({"username": "mallory", "display_name": "M", "roles": ["admin"]})),
        ),
        (
            &agent,
            Method::POST,
            "/api/v1/groups",
            Some(json!({"name": "Shadow IT"})),
        ),
        (
            &agent,
            Method::POST,
            "/api/v1/api-tokens",
            Some(json!({"name": "t", "role": "admin", "expires_at": null})),
        ),
        (&agent, Method::GET, "/api/v1/api-tokens", None),
        (&agent, Method::GET, "/api/v1/audit-events", None),
        (&requester_token, Method::GET, "/api/v1/users", None),
        (&requester_token, Method::GET, "/api/v1/groups", None),
        (&requester_token, Method::GET, "/api/v1/events", None),
        (&requester_token, Method::GET, "/api/v1/audit-events", None),
    ];
    for (token, method, path, body) in denied {
        let mut request = app.request(method.clone(), path, token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let problem = expect_problem(request.send().await.unwrap(), StatusCode::FORBIDDEN).await;
        assert_eq!(
            problem["type"], "https://itsm.example/problems/forbidden",
            "{method} {path}"
        );
    }
    // A requester may not even look itself up through the user directory ...
    let response = app
        .request(
            Method::GET,
            &format!("/api/v1/users/{}", requester["id"].as_str().unwrap()),
            &requester_token,
        )
        .send()
        .await
        .unwrap();
    expect_problem(response, StatusCode::FORBIDDEN).await;
    // ... an agent may not change a user ...
    let response = app
        .request(
            Method::PATCH,
            &format!("/api/v1/users/{}", requester["id"].as_str().unwrap()),
            &agent,
        )
        .json(&json!({"roles": ["admin"]}))
        .send()
        .await
        .unwrap();
    expect_problem(response, StatusCode::FORBIDDEN).await;
    app.assert_unchanged_since(&before, "denied requests").await;

    // ... but both may see who they are, and the agent may read the directory and the feed.
    assert_eq!(
        me_with(&app, &requester_token).await.status(),
        StatusCode::OK
    );
    for path in ["/api/v1/users", "/api/v1/groups", "/api/v1/events"] {
        let response = app.request(Method::GET, path, &agent).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "agent GET {path}");
    }
}

async fn create_api_token(app: &TestApp, name: &str, role: &str, expires_at: Value) -> Value {
    create_scoped_api_token(app, name, role, expires_at, Value::Null).await
}

async fn create_scoped_api_token(
    app: &TestApp,
    name: &str,
    role: &str,
    expires_at: Value,
    scopes: Value,
) -> Value {
    let response = app
        .admin(Method::POST, "/api/v1/api-tokens")
        .json(&json!({"name": name, "role": role, "expires_at": expires_at, "scopes": scopes}))
        .send()
        .await
        .unwrap();
    let location = response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let (status, token) = read(response).await;
    assert_eq!(status, StatusCode::CREATED, "{token}");
    assert_eq!(
        location.as_deref(),
        Some(format!("/api/v1/api-tokens/{}", token["id"].as_str().unwrap()).as_str())
    );
    token
}

async fn api_token_lifecycle(app: TestApp) {
    let created = create_api_token(&app, "crm-sync", "integration", Value::Null).await;
    assert_eq!(created["name"], "crm-sync");
    assert_eq!(created["role"], "integration");
    assert!(created["revoked_at"].is_null());
    let secret = created["token"].as_str().expect("the secret is shown once");
    assert!(secret.starts_with("itsm_"), "{secret}");
    let id = created["id"].as_str().unwrap();

    let (status, me) = read(me_with(&app, secret).await).await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["kind"], "api_token");
    assert_eq!(me["id"], id);
    assert_eq!(me["roles"], json!(["integration"]));

    // Listing never shows a secret.
    let response = app
        .admin(Method::GET, "/api/v1/api-tokens")
        .send()
        .await
        .unwrap();
    let text = response.text().await.unwrap();
    assert!(!text.contains(secret), "the list leaks the secret: {text}");
    let page: Value = itsm_integration_tests::serde_json::from_str(&text).unwrap();
    let listed = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == id)
        .expect("the token is listed")
        .clone();
    assert!(listed.get("token").is_none(), "{listed}");
    assert!(listed.get("token_hash").is_none(), "{listed}");
    assert_eq!(listed["name"], "crm-sync");

    // Revoked: refused from the next request on.
    let response = app
        .admin(Method::DELETE, &format!("/api/v1/api-tokens/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    expect_unauthenticated(me_with(&app, secret).await).await;
    let response = app
        .request(Method::GET, "/api/v1/events", secret)
        .send()
        .await
        .unwrap();
    expect_unauthenticated(response).await;

    // Revoking again, or an unknown token, is 404.
    for target in [id, "no-such-token"] {
        let response = app
            .admin(Method::DELETE, &format!("/api/v1/api-tokens/{target}"))
            .send()
            .await
            .unwrap();
        expect_problem(response, StatusCode::NOT_FOUND).await;
    }
    let tokens = app.list_all("/api/v1/api-tokens").await;
    let listed = tokens.iter().find(|t| t["id"] == id).unwrap();
    assert!(listed["revoked_at"].is_string(), "{listed}");

    // The audit trail shows creation and revocation, never the secret.
    let audit = app.audit_of("api_token", id).await;
    let actions: Vec<&str> = audit.iter().filter_map(|e| e["action"].as_str()).collect();
    assert_eq!(actions, ["revoke", "create"]);
    let text = Value::from(audit).to_string();
    assert!(!text.contains(secret));
    assert!(!text.contains(&secret["itsm_".len()..]));
}

async fn api_token_expiry(app: TestApp) {
    let later = (chrono::Utc::now() + chrono::TimeDelta::hours(1)).to_rfc3339();
    let created = create_api_token(&app, "monitoring", "integration", json!(later)).await;
    assert!(created["expires_at"].is_string(), "{created}");
    let secret = created["token"].as_str().unwrap();
    let response = app
        .request(Method::GET, "/api/v1/events", secret)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    // An expiry in the past is refused up front.
    let before = app.write_marks().await;
    let earlier = (chrono::Utc::now() - chrono::TimeDelta::minutes(1)).to_rfc3339();
    let response = app
        .admin(Method::POST, "/api/v1/api-tokens")
        .json(&json!({"name": "stale", "role": "integration", "expires_at": earlier}))
        .send()
        .await
        .unwrap();
    let problem = expect_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(problem["errors"][0]["field"], "expires_at");
    // So is a role that does not exist, and a blank name.
    let response = app
        .admin(Method::POST, "/api/v1/api-tokens")
        .json(&json!({"name": "x", "role": "root", "expires_at": null}))
        .send()
        .await
        .unwrap();
    let problem = expect_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(problem["errors"][0]["field"], "role");
    let response = app
        .admin(Method::POST, "/api/v1/api-tokens")
        .json(&json!({"name": "   ", "role": "integration", "expires_at": null}))
        .send()
        .await
        .unwrap();
    let problem = expect_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(problem["errors"][0]["field"], "name");
    app.assert_unchanged_since(&before, "invalid API tokens")
        .await;
}

async fn expired_api_token_is_401(app: TestApp) {
    let expires = chrono::Utc::now() + chrono::TimeDelta::milliseconds(1500);
    let created = create_api_token(
        &app,
        "short-lived",
        "integration",
        json!(expires.to_rfc3339()),
    )
    .await;
    let secret = created["token"].as_str().unwrap().to_owned();
    let wait = (expires - chrono::Utc::now()).to_std().unwrap_or_default()
        + std::time::Duration::from_millis(300);
    tokio::time::sleep(wait).await;
    expect_unauthenticated(me_with(&app, &secret).await).await;
    let response = app
        .request(Method::GET, "/api/v1/events", &secret)
        .send()
        .await
        .unwrap();
    expect_unauthenticated(response).await;
}

async fn integration_token_reads_the_feed_only(app: TestApp) {
    let created = create_api_token(&app, "erp", "integration", Value::Null).await;
    let secret = created["token"].as_str().unwrap();
    let response = app
        .request(Method::GET, "/api/v1/events?after=0&types=user.*", secret)
        .send()
        .await
        .unwrap();
    let (status, page) = read(response).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["items"][0]["type"], "user.created");

    let before = app.write_marks().await;
    let response = app
        .request(Method::POST, "/api/v1/users", secret)
        .json(&json!({"username": "robot", "display_name": "Robot", "roles": ["agent"]}))
        .send()
        .await
        .unwrap();
    expect_problem(response, StatusCode::FORBIDDEN).await;
    for path in [
        "/api/v1/users",
        "/api/v1/audit-events",
        "/api/v1/api-tokens",
    ] {
        let response = app.request(Method::GET, path, secret).send().await.unwrap();
        expect_problem(response, StatusCode::FORBIDDEN).await;
    }
    app.assert_unchanged_since(&before, "an integration token's denied POST")
        .await;
}

async fn admin_api_token_acts_as_admin_in_the_audit_trail(app: TestApp) {
    // Scoped to the directory: a token without scopes would only read.
    let created = create_scoped_api_token(
        &app,
        "provisioning",
        "admin",
        Value::Null,
        json!(["directory:write"]),
    )
    .await;
    let secret = created["token"].as_str().unwrap();
    let response = app
        .request(Method::POST, "/api/v1/groups", secret)
        .json(&json!({"name": "Provisioned"}))
        .send()
        .await
        .unwrap();
    let (status, group) = read(response).await;
    assert_eq!(status, StatusCode::CREATED, "{group}");
    let audit = app.audit_of("group", group["id"].as_str().unwrap()).await;
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0]["actor"]["id"], created["id"]);
    assert_eq!(audit[0]["actor"]["username"], "api-token:provisioning");
}

on_both_backends!(
    token_issue_returns_a_bearer_token,
    missing_authorization_is_401,
    malformed_credentials_are_401,
    forged_tokens_are_refused with known_secret,
    roles_come_from_the_user_not_from_the_token with known_secret,
    wrong_password_and_unknown_user_look_the_same,
    token_request_validation,
    deactivated_user_is_locked_out,
    role_denied_is_403,
    api_token_lifecycle,
    api_token_expiry,
    expired_api_token_is_401,
    role_changes_apply_to_issued_tokens,
    integration_token_reads_the_feed_only,
    admin_api_token_acts_as_admin_in_the_audit_trail,
);
