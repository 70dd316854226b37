//! Users and API tokens are both actors (issue 13, item 6): an admin API token does what an
//! admin does, and the audit trail and `created_by` name the token; a database constraint that
//! refuses a write validation let through answers a problem without the database's words.

use itsm_integration_tests::reqwest::{Method, StatusCode};
use itsm_integration_tests::serde_json::{json, Value};
use itsm_integration_tests::{expect_problem, header, on_both_backends, read, TestApp};

/// Creates an API token with `token` (a bearer credential) and returns its body.
async fn create_token(
    app: &TestApp,
    token: &str,
    name: &str,
    role: &str,
    scopes: &[&str],
) -> Value {
    let response = app
        .request(Method::POST, "/api/v1/api-tokens", token)
        .json(&json!({"name": name, "role": role, "expires_at": null, "scopes": scopes}))
        .send()
        .await
        .unwrap();
    let (status, body) = read(response).await;
    assert_eq!(status, StatusCode::CREATED, "creating token {name}: {body}");
    body
}

/// POSTs `body` to `path` with `token`, asserts 201 and returns the created record.
async fn create(app: &TestApp, token: &str, path: &str, body: Value) -> Value {
    let response = app
        .request(Method::POST, path, token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let (status, created) = read(response).await;
    assert_eq!(status, StatusCode::CREATED, "POST {path} {body}: {created}");
    created
}

/// The actor of the newest audit entry of a record.
async fn last_actor(app: &TestApp, entity_type: &str, entity_id: &str) -> Value {
    let audit = app.audit_of(entity_type, entity_id).await;
    assert!(
        !audit.is_empty(),
        "no audit entry for {entity_type} {entity_id}"
    );
    audit[0]["actor"].clone()
}

async fn an_admin_api_token_acts_under_its_own_name(app: TestApp) {
    let admin_id = app.id_of(&app.admin_token).await;
    let root = create_token(
        &app,
        &app.admin_token,
        "root-token",
        "admin",
        &["directory:write", "incidents:write"],
    )
    .await;
    let root_id = root["id"].as_str().unwrap().to_owned();
    let root_secret = root["token"].as_str().unwrap().to_owned();
    let as_user = json!({"kind": "user", "id": admin_id, "username": "admin"});
    let as_token = json!({"kind": "api_token", "id": root_id, "username": "api-token:root-token"});
    assert_eq!(root["created_by"], as_user, "{root}");
    assert_eq!(last_actor(&app, "api_token", &root_id).await, as_user);

    // The admin token creates a token (this was a 409 "FOREIGN KEY constraint failed").
    let child = create_token(
        &app,
        &root_secret,
        "crm-sync",
        "integration",
        &["alerts:write"],
    )
    .await;
    let child_id = child["id"].as_str().unwrap().to_owned();
    assert_eq!(child["created_by"], as_token, "{child}");
    assert_eq!(last_actor(&app, "api_token", &child_id).await, as_token);
    let tokens = app.list_all("/api/v1/api-tokens").await;
    let listed = tokens
        .iter()
        .find(|t| t["id"] == child_id.as_str())
        .unwrap();
    assert_eq!(listed["created_by"], as_token);
    let child_secret = child["token"].as_str().unwrap().to_owned();
    assert_eq!(app.id_of(&child_secret).await, child_id);

    // A user, a group, an incident for the user, and a note on it.
    let user = create(
        &app,
        &root_secret,
        "/api/v1/users",
        json!({"username": "tokenmade", "display_name": "Token Made",
               "password": "tokenmade-password-1", "roles": ["requester"]}),
    )
    .await;
    let user_id = user["id"].as_str().unwrap().to_owned();
    assert_eq!(last_actor(&app, "user", &user_id).await, as_token);
    let group = create(
        &app,
        &root_secret,
        "/api/v1/groups",
        json!({"name": "Token desk"}),
    )
    .await;
    let group_id = group["id"].as_str().unwrap();
    assert_eq!(last_actor(&app, "group", group_id).await, as_token);
    let incident = create(
        &app,
        &root_secret,
        "/api/v1/incidents",
        json!({"title": "Reported by a machine", "caller": user_id}),
    )
    .await;
    let incident_id = incident["id"].as_str().unwrap().to_owned();
    assert_eq!(incident["caller"], user_id.as_str());
    let note = create(
        &app,
        &root_secret,
        &format!("/api/v1/incidents/{incident_id}/notes"),
        json!({"body": "Synchronised from the CRM"}),
    )
    .await;
    assert_eq!(note["author_id"], root_id.as_str(), "{note}");
    assert_eq!(note["author_name"], "api-token:root-token");
    let audit = app.audit_of("incident", &incident_id).await;
    assert!(audit.len() >= 2, "{audit:?}");
    for entry in &audit {
        assert_eq!(entry["actor"], as_token, "{entry}");
    }

    // A user's own change names the user; the service's names the service.
    let requester = app.token_for("tokenmade", "tokenmade-password-1").await;
    create(
        &app,
        &requester,
        &format!("/api/v1/incidents/{incident_id}/notes"),
        json!({"body": "Thanks"}),
    )
    .await;
    let audit = app.audit_of("incident", &incident_id).await;
    assert_eq!(
        audit[0]["actor"],
        json!({"kind": "user", "id": user_id, "username": "tokenmade"})
    );
    let bootstrap = app.audit_of("user", &admin_id).await;
    assert_eq!(bootstrap.last().unwrap()["actor"]["kind"], "system");
    assert_eq!(bootstrap.last().unwrap()["actor"]["id"], Value::Null);

    // Alerts sent with the token the admin token made are reported for the user at the root
    // of the chain of creators.
    let response = app
        .request(Method::POST, "/api/v1/alerts", &child_secret)
        .json(
            &json!({"source": "zabbix", "dedup_key": "db01-disk", "severity": "major",
                      "summary": "Disk almost full"}),
        )
        .send()
        .await
        .unwrap();
    let (status, answer) = read(response).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let opened = answer["alerts"][0]["incident_id"].as_str().unwrap();
    let response = app
        .admin(Method::GET, &format!("/api/v1/incidents/{opened}"))
        .send()
        .await
        .unwrap();
    let (_, opened) = read(response).await;
    assert_eq!(opened["caller"], admin_id.as_str(), "{opened}");
}

/// A write that a database constraint refuses after validation let it through (forced here
/// with a unique index the service does not know) answers 409 with a stable problem type and
/// the request id, and no table, column, constraint or SQL word reaches the client.
async fn a_constraint_failure_shows_no_storage_text(app: TestApp) {
    use diesel::RunQueryDsl;
    let db = persistence::Database::open(&app.database).expect("open the test database");
    db.write(|conn| {
        diesel::sql_query(
            "CREATE UNIQUE INDEX forced_description_key ON assignment_groups (description)",
        )
        .execute(conn)
        .map_err(persistence::StoreError::from)
    })
    .await
    .expect("the forced index");
    create(
        &app,
        &app.admin_token,
        "/api/v1/groups",
        json!({"name": "First", "description": "Same words"}),
    )
    .await;
    let before = app.write_marks().await;
    let response = app
        .admin(Method::POST, "/api/v1/groups")
        .header("x-request-id", "forced-constraint-1")
        .json(&json!({"name": "Second", "description": "Same words"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        header(&response, "x-request-id").as_deref(),
        Some("forced-constraint-1")
    );
    let problem = expect_problem(response, StatusCode::CONFLICT).await;
    assert_eq!(
        problem["type"],
        "https://itsm.example/problems/constraint-violation"
    );
    assert_eq!(problem["request_id"], "forced-constraint-1");
    let text = problem.to_string().to_lowercase();
    for word in [
        "unique",
        "constraint failed",
        "violates",
        "duplicate",
        "forced_description_key",
        "assignment_groups",
        "description",
        "sql",
        "insert",
    ] {
        assert!(
            !text.contains(word),
            "{word:?} reached the client: {problem}"
        );
    }
    app.assert_unchanged_since(&before, "a refused write").await;
}

/// The log keeps what the client does not see: the database's words, with the request id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_keeps_the_constraint_detail() {
    use diesel::RunQueryDsl;
    use itsm_integration_tests::{Backend, RealServer, ScratchDatabase};
    let database = ScratchDatabase::new(Backend::Sqlite).expect("sqlite");
    let log_path = std::env::temp_dir().join(format!("itsm-log-{}.txt", uuid::Uuid::new_v4()));
    let server =
        RealServer::start_logging(&database.url, &[("RUST_LOG", "warn")], Some(&log_path)).await;
    let config = persistence::DatabaseConfig {
        url: Some(database.url.clone()),
        ..persistence::DatabaseConfig::default()
    };
    let db = persistence::Database::open(&config).expect("open the served database");
    db.write(|conn| {
        diesel::sql_query(
            "CREATE UNIQUE INDEX forced_description_key ON assignment_groups (description)",
        )
        .execute(conn)
        .map_err(persistence::StoreError::from)
    })
    .await
    .expect("the forced index");
    let token = server.admin_token().await;
    let client = itsm_integration_tests::reqwest::Client::new();
    for (name, status) in [
        ("First", StatusCode::CREATED),
        ("Second", StatusCode::CONFLICT),
    ] {
        let response = client
            .post(format!("{}/api/v1/groups", server.base))
            .bearer_auth(&token)
            .header("x-request-id", format!("logged-{name}"))
            .json(&json!({"name": name, "description": "Same words"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status);
    }
    drop(server);
    let logged = std::fs::read_to_string(&log_path).expect("the log");
    let _ = std::fs::remove_file(&log_path);
    let line = logged
        .lines()
        .find(|line| line.contains("constraint violation (request logged-Second)"))
        .unwrap_or_else(|| panic!("no constraint line in the log:\n{logged}"));
    assert!(line.contains("UNIQUE constraint failed"), "{line}");
    assert!(line.contains("assignment_groups.description"), "{line}");
}

on_both_backends!(
    an_admin_api_token_acts_under_its_own_name,
    a_constraint_failure_shows_no_storage_text,
);
