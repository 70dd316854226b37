//! Idempotent upsert by another system's reference: a CRM pushes the same record twice (or at
//! once from several workers) and one incident results, found by `?external_ref=system:id`.

use itsm_integration_tests::reqwest::{Method, StatusCode};
use itsm_integration_tests::serde_json::{json, Value};
use itsm_integration_tests::{
    error_fields, expect_conflict_on, expect_problem, header, on_both_backends, read, TestApp,
};

async fn push(
    app: &TestApp,
    token: &str,
    path: &str,
    body: Value,
) -> (StatusCode, Value, Option<String>) {
    let response = app
        .request(Method::PUT, path, token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let location = header(&response, "location");
    let (status, body) = read(response).await;
    (status, body, location)
}

async fn found_by_reference(app: &TestApp, reference: &str) -> Vec<Value> {
    app.list_all(&format!("/api/v1/incidents?external_ref={reference}"))
        .await
}

async fn pushing_a_record_twice_creates_one_incident(app: TestApp) {
    let (caller, _) = app.user_with_roles("crm-caller", &["requester"]).await;
    let (_, integration) = app.user_with_roles("crm-sync", &["integration"]).await;
    let path = "/api/v1/incidents/by-external/crm/CASE-1042";
    let body = json!({
        "title": "Printer on fire",
        "description": "from the CRM",
        "caller": caller["id"],
        "impact": "high",
        "urgency": "low",
    });
    let (status, first, location) = push(&app, &integration, path, body.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    let number = first["number"].as_str().unwrap();
    assert_eq!(
        location.as_deref(),
        Some(format!("/api/v1/incidents/{number}").as_str())
    );
    assert_eq!(
        first["external_refs"],
        json!([{"system": "crm", "id": "CASE-1042"}])
    );

    let (status, second, _) = push(&app, &integration, path, body.clone()).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert_eq!(second["id"], first["id"]);
    assert_eq!(
        second["version"], first["version"],
        "an identical push changed the incident"
    );

    let mut changed = body.clone();
    changed["title"] = json!("Printer on fire, now smoking");
    changed["external_refs"] = json!([{"system": "erp", "id": "PO-7"}]);
    let (status, third, _) = push(&app, &integration, path, changed).await;
    assert_eq!(status, StatusCode::OK, "{third}");
    assert_eq!(third["id"], first["id"]);
    assert_eq!(third["title"], "Printer on fire, now smoking");
    assert_eq!(third["impact"], "high");
    let refs = third["external_refs"].as_array().unwrap();
    assert_eq!(refs.len(), 2, "{third}");

    let found = found_by_reference(&app, "crm:CASE-1042").await;
    assert_eq!(found.len(), 1);
    assert_eq!(found[0]["id"], first["id"]);
    assert_eq!(found_by_reference(&app, "erp:PO-7").await.len(), 1);
    assert!(found_by_reference(&app, "crm:CASE-1043").await.is_empty());
    let all = app.list_all("/api/v1/incidents").await;
    assert_eq!(all.len(), 1);

    // Another case of the same CRM is another incident.
    let (status, other, _) = push(
        &app,
        &integration,
        "/api/v1/incidents/by-external/crm/CASE-1043",
        body,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{other}");
    assert_ne!(other["id"], first["id"]);
}

async fn concurrent_pushes_of_one_record_create_one_incident(app: TestApp) {
    let path = "/api/v1/incidents/by-external/crm/CASE-RACE";
    let pushes: Vec<_> = (0..8)
        .map(|n| {
            let client = app.client.clone();
            let url = app.url(path);
            let token = app.admin_token.clone();
            tokio::spawn(async move {
                client
                    .put(url)
                    .bearer_auth(token)
                    .json(&json!({"title": format!("race {n}")}))
                    .send()
                    .await
                    .unwrap()
                    .status()
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for push in pushes {
        statuses.push(push.await.unwrap());
    }
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::CREATED)
            .count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::CREATED || *s == StatusCode::OK),
        "{statuses:?}"
    );
    assert_eq!(found_by_reference(&app, "crm:CASE-RACE").await.len(), 1);
    assert_eq!(app.list_all("/api/v1/incidents").await.len(), 1);
}

async fn a_body_that_contradicts_the_path_is_refused(app: TestApp) {
    let path = "/api/v1/incidents/by-external/crm/CASE-1";
    let response = app
        .admin(Method::PUT, path)
        .json(&json!({"title": "x", "external_refs": [{"system": "crm", "id": "CASE-2"}]}))
        .send()
        .await
        .unwrap();
    let problem = expect_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(error_fields(&problem), vec!["external_refs"]);
    let response = app
        .admin(
            Method::PUT,
            "/api/v1/incidents/by-external/c%20r%20m/CASE-1",
        )
        .json(&json!({"title": "x"}))
        .send()
        .await
        .unwrap();
    let problem = expect_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(error_fields(&problem), vec!["path.system"]);
    let response = app
        .admin(Method::PUT, path)
        .json(&json!({"title": ""}))
        .send()
        .await
        .unwrap();
    expect_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert!(app.list_all("/api/v1/incidents").await.is_empty());
    // The same reference in the body is no contradiction.
    let response = app
        .admin(Method::PUT, path)
        .json(&json!({"title": "x", "external_refs": [{"system": "crm", "id": "CASE-1"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let response = app
        .admin(Method::GET, "/api/v1/incidents?external_ref=nonsense")
        .send()
        .await
        .unwrap();
    expect_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    // Requesters do not push records.
    let (_, requester) = app.user_with_roles("rita", &["requester"]).await;
    let response = app
        .request(Method::PUT, path, &requester)
        .json(&json!({"title": "x"}))
        .send()
        .await
        .unwrap();
    expect_problem(response, StatusCode::FORBIDDEN).await;
}

async fn pushing_a_problem_twice_creates_one_problem(app: TestApp) {
    let path = "/api/v1/problems/by-external/erp/PRB-77";
    let body = json!({"title": "Disk latency on the ERP cluster", "impact": "medium"});
    let (status, first, location) = push(&app, &app.admin_token, path, body.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    let number = first["number"].as_str().unwrap();
    assert_eq!(
        location.as_deref(),
        Some(format!("/api/v1/problems/{number}").as_str())
    );
    let (status, second, _) = push(&app, &app.admin_token, path, body).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert_eq!(second["id"], first["id"]);
    assert_eq!(second["version"], first["version"]);
    let (status, third, _) = push(
        &app,
        &app.admin_token,
        path,
        json!({"title": "Disk latency on the ERP cluster", "workaround": "move the volume"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{third}");
    assert_eq!(third["workaround"], "move the volume");
    let found = app
        .list_all("/api/v1/problems?external_ref=erp:PRB-77")
        .await;
    assert_eq!(found.len(), 1);
    assert_eq!(found[0]["id"], first["id"]);
    assert_eq!(app.list_all("/api/v1/problems").await.len(), 1);
    let response = app
        .admin(Method::PUT, path)
        .json(&json!({"title": "x", "external_refs": [{"system": "erp", "id": "PRB-78"}]}))
        .send()
        .await
        .unwrap();
    let problem = expect_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(error_fields(&problem), vec!["external_refs"]);
    assert_eq!(app.list_all("/api/v1/problems").await.len(), 1);
}

on_both_backends!(
    pushing_a_problem_twice_creates_one_problem,
    pushing_a_record_twice_creates_one_incident,
    concurrent_pushes_of_one_record_create_one_incident,
    a_body_that_contradicts_the_path_is_refused,
    directory_and_cmdb_records_pushed_twice_are_one_record_each,
    concurrent_pushes_of_one_group_create_one_group,
);

/// Users, groups and configuration items pushed twice are one record each: the second push of
/// the same record changes nothing, a changed one updates it, and the reference finds it.
async fn directory_and_cmdb_records_pushed_twice_are_one_record_each(app: TestApp) {
    let records = [
        (
            "/api/v1/users",
            "/api/v1/users/by-external/hr/E-100",
            json!({"username": "Pat", "display_name": "Pat Doe", "roles": ["requester"],
                   "password": "a long enough password 1"}),
            ("display_name", json!("Pat Q. Doe")),
        ),
        (
            "/api/v1/groups",
            "/api/v1/groups/by-external/hr/TEAM-9",
            json!({"name": "Field Service", "description": "on site"}),
            ("description", json!("on site, weekdays")),
        ),
        (
            "/api/v1/configuration-items",
            "/api/v1/configuration-items/by-external/erp/ASSET-5",
            json!({"name": "erp-db-01", "class": "server", "environment": "production",
                   "attributes": {"hostname": "erp-db-01"}}),
            ("criticality", json!("high")),
        ),
    ];
    for (collection, path, body, (field, value)) in records {
        let (status, first, location) = push(&app, &app.admin_token, path, body.clone()).await;
        assert_eq!(status, StatusCode::CREATED, "{path}: {first}");
        let id = first["id"].as_str().unwrap();
        assert_eq!(
            location.as_deref(),
            Some(format!("{collection}/{id}").as_str())
        );
        let reference = &first["external_refs"][0];
        let reference = format!(
            "{}:{}",
            reference["system"].as_str().unwrap(),
            reference["id"].as_str().unwrap()
        );

        let (status, second, _) = push(&app, &app.admin_token, path, body.clone()).await;
        assert_eq!(status, StatusCode::OK, "{path}: {second}");
        assert_eq!(second["id"], first["id"]);
        assert_eq!(
            second["version"], first["version"],
            "{path}: an identical push changed it"
        );

        let mut changed = body.clone();
        changed[field] = value.clone();
        let (status, third, _) = push(&app, &app.admin_token, path, changed).await;
        assert_eq!(status, StatusCode::OK, "{path}: {third}");
        assert_eq!(third["id"], first["id"]);
        assert_eq!(third[field], value, "{path}");
        assert_ne!(third["version"], first["version"]);

        let found = app
            .list_all(&format!("{collection}?external_ref={reference}"))
            .await;
        assert_eq!(found.len(), 1, "{path}");
        assert_eq!(found[0]["id"], first["id"]);
    }

    // A user's password is set by the push that creates them, never by a later one.
    app.token_for("pat", "a long enough password 1").await;
    let (status, _, _) = push(
        &app,
        &app.admin_token,
        "/api/v1/users/by-external/hr/E-100",
        json!({"username": "pat", "display_name": "Pat Q. Doe", "roles": ["requester"],
               "password": "another long password 2"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    app.token_for("pat", "a long enough password 1").await;

    // What a record cannot change is refused, and nothing is written.
    let before = app.write_marks().await;
    let response = app
        .admin(Method::PUT, "/api/v1/users/by-external/hr/E-100")
        .json(&json!({"username": "patricia", "display_name": "Pat", "roles": ["requester"]}))
        .send()
        .await
        .unwrap();
    // The stored user's name is the state the request conflicts with.
    let problem = expect_problem(response, StatusCode::CONFLICT).await;
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("username:")),
        "{problem}"
    );
    let response = app
        .admin(
            Method::PUT,
            "/api/v1/configuration-items/by-external/erp/ASSET-5",
        )
        .json(&json!({"name": "erp-db-01", "class": "database"}))
        .send()
        .await
        .unwrap();
    // The stored item's class is what the body conflicts with.
    expect_conflict_on(response, "class").await;
    let response = app
        .admin(Method::PUT, "/api/v1/groups/by-external/hr/TEAM-9")
        .json(
            &json!({"name": "Field Service", "external_refs": [{"system": "hr", "id": "TEAM-1"}]}),
        )
        .send()
        .await
        .unwrap();
    let problem = expect_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(error_fields(&problem), vec!["external_refs"]);
    app.assert_unchanged_since(&before, "refused pushes").await;

    // A group name another group holds is a conflict, not a second group.
    app.group("Network").await;
    let response = app
        .admin(Method::PUT, "/api/v1/groups/by-external/hr/TEAM-10")
        .json(&json!({"name": "Network"}))
        .send()
        .await
        .unwrap();
    expect_problem(response, StatusCode::CONFLICT).await;
}

async fn concurrent_pushes_of_one_group_create_one_group(app: TestApp) {
    let path = "/api/v1/groups/by-external/hr/TEAM-RACE";
    let pushes: Vec<_> = (0..8)
        .map(|_| {
            let client = app.client.clone();
            let url = app.url(path);
            let token = app.admin_token.clone();
            tokio::spawn(async move {
                client
                    .put(url)
                    .bearer_auth(token)
                    .json(&json!({"name": "Racing Team"}))
                    .send()
                    .await
                    .unwrap()
                    .status()
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for push in pushes {
        statuses.push(push.await.unwrap());
    }
    let created = statuses
        .iter()
        .filter(|s| **s == StatusCode::CREATED)
        .count();
    assert_eq!(created, 1, "{statuses:?}");
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::CREATED || *s == StatusCode::OK),
        "{statuses:?}"
    );
    let found = app
        .list_all("/api/v1/groups?external_ref=hr:TEAM-RACE")
        .await;
    assert_eq!(found.len(), 1);
}
