//! Users, groups, memberships, `/me`, external references and the audit trail of their changes.

use itsm_integration_tests::reqwest::{Method, StatusCode};
use itsm_integration_tests::serde_json::{json, Value};
use itsm_integration_tests::{
    error_fields, expect_problem, header, on_both_backends, read, TestApp,
};

async fn create_user(app: &TestApp, body: Value) -> Value {
    let response = app
        .admin(Method::POST, "/api/v1/users")
        .json(&body)
        .send()
        .await
        .unwrap();
    let (status, user) = read(response).await;
    assert_eq!(status, StatusCode::CREATED, "{body} -> {user}");
    user
}

async fn get_json(app: &TestApp, path: &str) -> (StatusCode, Value) {
    read(app.admin(Method::GET, path).send().await.unwrap()).await
}

fn usernames(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap().to_owned())
        .collect()
}

async fn create_and_get_a_user(app: TestApp) {
    let response = app
        .admin(Method::POST, "/api/v1/users")
        .json(&json!({
            "username": "alice",
            "email": "alice@example.com",
            "display_name": "Alice",
            "password": "alice-password-123",
            "roles": ["agent", "requester", "agent"],
            "external_refs": [{"system": "hr", "id": "E-1042"}],
        }))
        .send()
        .await
        .unwrap();
    let location = header(&response, "location").expect("Location");
    assert_eq!(header(&response, "etag").as_deref(), Some("\"1\""));
    let text = response.text().await.unwrap();
    assert!(!text.contains("alice-password-123") && !text.contains("$argon2"));
    let user: Value = itsm_integration_tests::serde_json::from_str(&text).unwrap();
    let id = user["id"].as_str().unwrap();
    assert_eq!(location, format!("/api/v1/users/{id}"));
    assert_eq!(user["username"], "alice");
    assert_eq!(user["email"], "alice@example.com");
    assert_eq!(user["display_name"], "Alice");
    assert_eq!(user["roles"], json!(["agent", "requester"]));
    assert_eq!(user["active"], true);
    assert_eq!(user["version"], 1);
    assert_eq!(
        user["external_refs"],
        json!([{"system": "hr", "id": "E-1042"}])
    );
    for field in ["created_at", "updated_at"] {
        let at = user[field].as_str().unwrap();
        assert!(
            chrono::DateTime::parse_from_rfc3339(at).is_ok(),
            "{field}: {at}"
        );
    }
    assert!(user.get("password").is_none() && user.get("password_hash").is_none());

    let response = app.admin(Method::GET, &location).send().await.unwrap();
    assert_eq!(header(&response, "etag").as_deref(), Some("\"1\""));
    let (status, fetched) = read(response).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(fetched, user, "a read returns what the create returned");

    // The new user signs in with the password and sees itself.
    let token = app.token_for("alice", "alice-password-123").await;
    let response = app
        .request(Method::GET, "/api/v1/me", &token)
        .send()
        .await
        .unwrap();
    let (_, me) = read(response).await;
    assert_eq!(me["id"], id);
    assert_eq!(me["roles"], json!(["agent", "requester"]));
    assert_eq!(me["groups"], json!([]));
    assert_eq!(me["external_refs"], user["external_refs"]);

    // An agent may look users up.
    let response = app
        .request(Method::GET, &location, &token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

async fn duplicate_username_is_409(app: TestApp) {
    create_user(
        &app,
        json!({"username": "bob", "display_name": "Bob", "roles": ["agent"]}),
    )
    .await;
    let before = app.write_marks().await;
    let response = app
        .admin(Method::POST, "/api/v1/users")
        .json(&json!({"username": "bob", "display_name": "Other Bob", "roles": ["requester"]}))
        .send()
        .await
        .unwrap();
    let problem = expect_problem(response, StatusCode::CONFLICT).await;
    assert!(
        problem["detail"].as_str().unwrap().contains("bob"),
        "{problem}"
    );
    app.assert_unchanged_since(&before, "a duplicate username")
        .await;
}

async fn list_filters(app: TestApp) {
    for (username, display, email, roles) in [
        (
            "carol",
            "Carol Jones",
            "carol@corp.example",
            json!(["agent"]),
        ),
        (
            "dave",
            "Dave Smith",
            "dave@corp.example",
            json!(["requester"]),
        ),
        (
            "erin",
            "Erin Jonesy",
            "erin@other.example",
            json!(["agent", "change_manager"]),
        ),
        ("frank", "Frank", "frank@corp.example", json!(["requester"])),
    ] {
        create_user(
            &app,
            json!({"username": username, "display_name": display, "email": email, "roles": roles}),
        )
        .await;
    }
    let frank = app.list_all("/api/v1/users?q=frank").await;
    let response = app
        .admin(
            Method::PATCH,
            &format!("/api/v1/users/{}", frank[0]["id"].as_str().unwrap()),
        )
        .json(&json!({"active": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    for (query, expected) in [
        ("q=jones", vec!["carol", "erin"]),
        ("q=JONES", vec!["carol", "erin"]),
        ("q=corp.example", vec!["carol", "dave", "frank"]),
        ("q=dav", vec!["dave"]),
        ("q=nobody", vec![]),
        ("role=agent", vec!["carol", "erin"]),
        ("role=change_manager", vec!["erin"]),
        ("role=requester", vec!["dave", "frank"]),
        ("role=admin", vec!["admin"]),
        ("active=false", vec!["frank"]),
        ("active=true&role=requester", vec!["dave"]),
        ("q=jones&role=change_manager", vec!["erin"]),
    ] {
        let (status, page) = get_json(&app, &format!("/api/v1/users?{query}")).await;
        assert_eq!(status, StatusCode::OK, "{query}: {page}");
        assert_eq!(usernames(&page), expected, "?{query}");
        assert!(page["next_cursor"].is_null());
    }
}

async fn cursor_pagination(app: TestApp) {
    let mut created = Vec::new();
    for i in 1..=5 {
        let user = create_user(
            &app,
            json!({"username": format!("pager-{i}"), "display_name": format!("Pager {i}"), "roles": ["requester"]}),
        )
        .await;
        created.push(user["username"].as_str().unwrap().to_owned());
    }
    // Something the filter excludes, created in between pages, changes nothing.
    let mut seen = Vec::new();
    let mut path = "/api/v1/users?q=pager&limit=2".to_owned();
    let mut pages = 0;
    loop {
        let response = app.admin(Method::GET, &path).send().await.unwrap();
        let link = header(&response, "link");
        let (status, page) = read(response).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        pages += 1;
        seen.extend(usernames(&page));
        match page["next_cursor"].as_str() {
            Some(cursor) => {
                assert_eq!(page["items"].as_array().unwrap().len(), 2);
                let link = link.expect("a Link header with a next page");
                let target = link
                    .strip_prefix('<')
                    .and_then(|l| l.strip_suffix(">; rel=\"next\""))
                    .unwrap_or_else(|| panic!("malformed Link: {link}"));
                assert!(target.starts_with("/api/v1/users?"), "{target}");
                assert!(target.contains("q=pager"), "{target}");
                assert!(target.contains("limit=2"), "{target}");
                assert!(target.contains(&format!("cursor={cursor}")), "{target}");
                create_user(
                    &app,
                    json!({"username": format!("other-{pages}"), "display_name": "Other", "roles": ["agent"]}),
                )
                .await;
                path = target.to_owned();
            }
            None => {
                assert!(link.is_none(), "Link on the last page: {link:?}");
                assert_eq!(page["items"].as_array().unwrap().len(), 1);
                break;
            }
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, created, "every user once, in creation order");

    // An unfiltered walk, with inserts between its pages, sees every user that existed when it
    // started exactly once, in order.
    let existing: Vec<String> = app
        .list_all("/api/v1/users")
        .await
        .iter()
        .map(|u| u["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(existing.len(), 1 + 5 + 2);
    let mut walked: Vec<String> = Vec::new();
    let mut cursor: Option<String> = None;
    for page_number in 0.. {
        let path = match &cursor {
            Some(cursor) => format!("/api/v1/users?limit=3&cursor={cursor}"),
            None => "/api/v1/users?limit=3".to_owned(),
        };
        let (status, page) = get_json(&app, &path).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        walked.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|u| u["id"].as_str().unwrap().to_owned()),
        );
        create_user(
            &app,
            json!({"username": format!("late-{page_number}"), "display_name": "Late", "roles": ["agent"]}),
        )
        .await;
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
        assert!(page_number < 20, "the walk does not end");
    }
    let mut unique = walked.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), walked.len(), "a user was listed twice");
    assert_eq!(&walked[..existing.len()], existing.as_slice());
}

async fn patch_has_merge_semantics(app: TestApp) {
    let user = create_user(
        &app,
        json!({
            "username": "gina",
            "email": "gina@example.com",
            "display_name": "Gina",
            "roles": ["agent"],
            "external_refs": [{"system": "hr", "id": "E-7"}],
        }),
    )
    .await;
    let path = format!("/api/v1/users/{}", user["id"].as_str().unwrap());

    // Absent fields stay; null clears a nullable field.
    let response = app
        .admin(Method::PATCH, &path)
        .json(&json!({"email": null}))
        .send()
        .await
        .unwrap();
    let (status, updated) = read(response).await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert!(updated["email"].is_null(), "{updated}");
    assert_eq!(updated["display_name"], "Gina");
    assert_eq!(updated["roles"], json!(["agent"]));
    assert_eq!(updated["external_refs"], user["external_refs"]);
    assert_eq!(updated["version"], 2);
    assert_eq!(updated["created_at"], user["created_at"]);

    let response = app
        .admin(Method::PATCH, &path)
        .json(&json!({"display_name": "Gina G.", "roles": ["problem_manager", "agent"]}))
        .send()
        .await
        .unwrap();
    let (status, updated) = read(response).await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert!(updated["email"].is_null());
    assert_eq!(updated["display_name"], "Gina G.");
    assert_eq!(updated["roles"], json!(["agent", "problem_manager"]));
    assert_eq!(updated["version"], 3);
    let (_, fetched) = get_json(&app, &path).await;
    assert_eq!(fetched, updated);

    // A field that may not be null, or a wrong value, is refused and changes nothing.
    let before = app.write_marks().await;
    for (body, field) in [
        (json!({"roles": []}), "roles"),
        (json!({"email": "nope"}), "email"),
        (json!({"password": "short"}), "password"),
        (json!({"username": "renamed"}), "username"),
        (json!({"active": "no"}), "active"),
    ] {
        let response = app
            .admin(Method::PATCH, &path)
            .json(&body)
            .send()
            .await
            .unwrap();
        let problem = expect_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(error_fields(&problem), [field], "{body}: {problem}");
    }
    app.assert_unchanged_since(&before, "invalid patches").await;

    // An empty patch changes nothing either.
    let response = app
        .admin(Method::PATCH, &path)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    let (status, same) = read(response).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(same["version"], 3);
    app.assert_unchanged_since(&before, "an empty patch").await;
}

async fn password_change_and_audit(app: TestApp) {
    let old_password = "hank-original-pass-1";
    let new_password = "hank-brand-new-pass-2";
    let user = create_user(
        &app,
        json!({
            "username": "hank",
            "email": "hank@example.com",
            "display_name": "Hank",
            "password": old_password,
            "roles": ["requester"],
        }),
    )
    .await;
    let id = user["id"].as_str().unwrap();
    let path = format!("/api/v1/users/{id}");
    app.token_for("hank", old_password).await;

    let response = app
        .admin(Method::PATCH, &path)
        .json(&json!({"password": new_password}))
        .send()
        .await
        .unwrap();
    let (status, updated) = read(response).await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["version"], 2);
    app.token_for("hank", new_password).await;
    let response = app
        .anonymous(Method::POST, "/api/v1/auth/token")
        .json(&json!({"username": "hank", "password": old_password}))
        .send()
        .await
        .unwrap();
    expect_problem(response, StatusCode::UNAUTHORIZED).await;

    let response = app
        .admin(Method::PATCH, &path)
        .json(&json!({"email": "hank@corp.example", "roles": ["agent"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    let audit = app.audit_of("user", id).await;
    let actions: Vec<&str> = audit.iter().filter_map(|e| e["action"].as_str()).collect();
    assert_eq!(actions, ["update", "update", "create"], "{audit:?}");
    for entry in &audit {
        assert_eq!(entry["entity_type"], "user");
        assert_eq!(entry["entity_id"], id);
        assert_eq!(entry["actor"]["username"], "admin");
        assert!(entry["actor"]["id"].is_string());
        assert!(entry["at"].is_string() && entry["request_id"].is_string());
    }
    assert_eq!(
        audit[0]["changes"],
        json!({
            "email": ["hank@example.com", "hank@corp.example"],
            "roles": [["requester"], ["agent"]],
        })
    );
    // A password change is recorded as changed, never with its value.
    let changes = audit[1]["changes"].as_object().unwrap();
    assert_eq!(changes.keys().collect::<Vec<_>>(), ["password"]);
    assert_eq!(audit[2]["changes"]["username"], json!([null, "hank"]));
    assert_eq!(audit[2]["changes"]["roles"], json!([null, ["requester"]]));

    // Neither the audit trail nor the event feed ever contains a password or its hash.
    let audit_text = app.list_all("/api/v1/audit-events").await;
    let events_text = app.events_after(0).await;
    for text in [
        Value::from(audit_text).to_string(),
        Value::from(events_text).to_string(),
    ] {
        for secret in [old_password, new_password, "$argon2", "password_hash"] {
            assert!(!text.contains(secret), "{secret} leaked: {text}");
        }
    }
}

async fn external_refs(app: TestApp) {
    let user = create_user(
        &app,
        json!({
            "username": "ivan",
            "display_name": "Ivan",
            "roles": ["requester"],
            "external_refs": [{"system": "hr", "id": "E-1"}, {"system": "crm", "id": "C-9"}],
        }),
    )
    .await;
    let id = user["id"].as_str().unwrap();
    assert_eq!(
        user["external_refs"],
        json!([{"system": "crm", "id": "C-9"}, {"system": "hr", "id": "E-1"}])
    );

    // Found by reference.
    let (status, page) = get_json(&app, "/api/v1/users?external_ref=hr:E-1").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(usernames(&page), ["ivan"]);
    let (_, page) = get_json(&app, "/api/v1/users?external_ref=crm:C-9").await;
    assert_eq!(usernames(&page), ["ivan"]);
    for missing in ["hr:E-2", "erp:E-1"] {
        let (status, page) = get_json(&app, &format!("/api/v1/users?external_ref={missing}")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(usernames(&page), Vec::<String>::new(), "{missing}");
    }

    let before = app.write_marks().await;
    // Two references to one system in one record: 422 naming the second.
    let response = app
        .admin(Method::POST, "/api/v1/users")
        .json(&json!({
            "username": "judy",
            "display_name": "Judy",
            "roles": ["requester"],
            "external_refs": [{"system": "hr", "id": "E-2"}, {"system": "hr", "id": "E-3"}],
        }))
        .send()
        .await
        .unwrap();
    let problem = expect_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(
        error_fields(&problem),
        ["external_refs[1].system"],
        "{problem}"
    );
    // A malformed reference: 422 naming the bad part.
    let response = app
        .admin(Method::POST, "/api/v1/users")
        .json(&json!({
            "username": "judy",
            "display_name": "Judy",
            "roles": ["requester"],
            "external_refs": [{"system": "h r", "id": " E-2"}],
        }))
        .send()
        .await
        .unwrap();
    let problem = expect_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    let mut reported = error_fields(&problem);
    reported.sort();
    assert_eq!(
        reported,
        ["external_refs[0].id", "external_refs[0].system"],
        "{problem}"
    );
    // The same system:id on a second user: 409, and the second user is not created.
    let response = app
        .admin(Method::POST, "/api/v1/users")
        .json(&json!({
            "username": "judy",
            "display_name": "Judy",
            "roles": ["requester"],
            "external_refs": [{"system": "hr", "id": "E-1"}],
        }))
        .send()
        .await
        .unwrap();
    let problem = expect_problem(response, StatusCode::CONFLICT).await;
    assert!(
        problem["detail"].as_str().unwrap().contains("hr:E-1"),
        "{problem}"
    );
    app.assert_unchanged_since(&before, "conflicting external references")
        .await;
    let (_, page) = get_json(&app, "/api/v1/users?q=judy").await;
    assert_eq!(usernames(&page), Vec::<String>::new());

    // Another user may take the reference by PATCH only once it is free.
    let judy = create_user(
        &app,
        json!({"username": "judy", "display_name": "Judy", "roles": ["requester"]}),
    )
    .await;
    let judy_path = format!("/api/v1/users/{}", judy["id"].as_str().unwrap());
    let response = app
        .admin(Method::PATCH, &judy_path)
        .json(&json!({"external_refs": [{"system": "hr", "id": "E-1"}]}))
        .send()
        .await
        .unwrap();
    expect_problem(response, StatusCode::CONFLICT).await;
    let (_, unchanged) = get_json(&app, &judy_path).await;
    assert_eq!(unchanged["external_refs"], json!([]));
    assert_eq!(unchanged["version"], 1);

    let response = app
        .admin(Method::PATCH, &format!("/api/v1/users/{id}"))
        .json(&json!({"external_refs": [{"system": "crm", "id": "C-9"}]}))
        .send()
        .await
        .unwrap();
    let (status, ivan) = read(response).await;
    assert_eq!(status, StatusCode::OK, "{ivan}");
    assert_eq!(
        ivan["external_refs"],
        json!([{"system": "crm", "id": "C-9"}])
    );
    let response = app
        .admin(Method::PATCH, &judy_path)
        .json(&json!({"external_refs": [{"system": "hr", "id": "E-1"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let (_, page) = get_json(&app, "/api/v1/users?external_ref=hr:E-1").await;
    assert_eq!(usernames(&page), ["judy"]);

    // The same system:id may be held by a user and by a group: references are per type.
    let response = app
        .admin(Method::POST, "/api/v1/groups")
        .json(&json!({"name": "HR", "external_refs": [{"system": "hr", "id": "E-1"}]}))
        .send()
        .await
        .unwrap();
    let (status, group) = read(response).await;
    assert_eq!(status, StatusCode::CREATED, "{group}");
    assert_eq!(
        group["external_refs"],
        json!([{"system": "hr", "id": "E-1"}])
    );
    let (_, page) = get_json(&app, "/api/v1/groups?external_ref=hr:E-1").await;
    assert_eq!(page["items"][0]["id"], group["id"]);
    assert_eq!(page["items"].as_array().unwrap().len(), 1);

    // Groups refuse duplicates the same ways.
    let response = app
        .admin(Method::POST, "/api/v1/groups")
        .json(&json!({"name": "HR 2", "external_refs": [{"system": "hr", "id": "E-1"}]}))
        .send()
        .await
        .unwrap();
    expect_problem(response, StatusCode::CONFLICT).await;
    let response = app
        .admin(Method::POST, "/api/v1/groups")
        .json(&json!({"name": "HR 3", "external_refs": [{"system": "x", "id": "1"}, {"system": "x", "id": "2"}]}))
        .send()
        .await
        .unwrap();
    let problem = expect_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(
        error_fields(&problem),
        ["external_refs[1].system"],
        "{problem}"
    );
}

async fn groups_and_members(app: TestApp) {
    let response = app
        .admin(Method::POST, "/api/v1/groups")
        .json(&json!({"name": "Service Desk", "description": "First line", "email": "desk@example.com"}))
        .send()
        .await
        .unwrap();
    let location = header(&response, "location").expect("Location");
    assert_eq!(header(&response, "etag").as_deref(), Some("\"1\""));
    let (status, desk) = read(response).await;
    assert_eq!(status, StatusCode::CREATED, "{desk}");
    let desk_id = desk["id"].as_str().unwrap().to_owned();
    assert_eq!(location, format!("/api/v1/groups/{desk_id}"));
    assert_eq!(desk["name"], "Service Desk");
    assert_eq!(desk["description"], "First line");
    assert_eq!(desk["email"], "desk@example.com");
    assert_eq!(desk["version"], 1);
    let (status, fetched) = get_json(&app, &location).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(fetched, desk);
    let network = app.group("Network").await;
    let network_id = network["id"].as_str().unwrap().to_owned();

    // Names are unique.
    let before = app.write_marks().await;
    let response = app
        .admin(Method::POST, "/api/v1/groups")
        .json(&json!({"name": "Service Desk"}))
        .send()
        .await
        .unwrap();
    expect_problem(response, StatusCode::CONFLICT).await;
    let response = app
        .admin(Method::PATCH, &format!("/api/v1/groups/{network_id}"))
        .json(&json!({"name": "Service Desk"}))
        .send()
        .await
        .unwrap();
    expect_problem(response, StatusCode::CONFLICT).await;
    let response = app
        .admin(Method::POST, "/api/v1/groups")
        .json(&json!({"name": "   "}))
        .send()
        .await
        .unwrap();
    let problem = expect_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(error_fields(&problem), ["name"]);
    app.assert_unchanged_since(&before, "refused groups").await;

    let (kim, kim_token) = app.user_with_roles("kim", &["agent"]).await;
    let (lee, _) = app.user_with_roles("lee", &["agent"]).await;
    let kim_id = kim["id"].as_str().unwrap().to_owned();
    let lee_id = lee["id"].as_str().unwrap().to_owned();

    // Adding members.
    for (group, user) in [
        (&desk_id, &kim_id),
        (&desk_id, &lee_id),
        (&network_id, &kim_id),
    ] {
        let response = app
            .admin(Method::POST, &format!("/api/v1/groups/{group}/members"))
            .json(&json!({"user_id": user}))
            .send()
            .await
            .unwrap();
        assert_eq!(
            header(&response, "location"),
            Some(format!("/api/v1/users/{user}"))
        );
        let (status, member) = read(response).await;
        assert_eq!(status, StatusCode::CREATED, "{member}");
        assert_eq!(member["id"], user.as_str());
    }
    let (status, members) = get_json(&app, &format!("/api/v1/groups/{desk_id}/members")).await;
    assert_eq!(status, StatusCode::OK, "{members}");
    let mut listed = usernames(&members);
    listed.sort();
    assert_eq!(listed, ["kim", "lee"]);
    let (_, page) = get_json(&app, &format!("/api/v1/groups?member={kim_id}")).await;
    let mut names: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["Network", "Service Desk"]);

    // /me lists the caller's groups.
    let response = app
        .request(Method::GET, "/api/v1/me", &kim_token)
        .send()
        .await
        .unwrap();
    let (_, me) = read(response).await;
    let mut groups: Vec<(String, String)> = me["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["id"].as_str().unwrap().to_owned(),
                g["name"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    groups.sort();
    let mut expected = vec![
        (desk_id.clone(), "Service Desk".to_owned()),
        (network_id.clone(), "Network".to_owned()),
    ];
    expected.sort();
    assert_eq!(groups, expected);

    // Refused membership changes change nothing.
    let before = app.write_marks().await;
    let response = app
        .admin(Method::POST, &format!("/api/v1/groups/{desk_id}/members"))
        .json(&json!({"user_id": "no-such-user"}))
        .send()
        .await
        .unwrap();
    let problem = expect_problem(response, StatusCode::CONFLICT).await;
    assert_eq!(error_fields(&problem), ["user_id"], "{problem}");
    let response = app
        .admin(Method::POST, &format!("/api/v1/groups/{desk_id}/members"))
        .json(&json!({"user_id": kim_id}))
        .send()
        .await
        .unwrap();
    expect_problem(response, StatusCode::CONFLICT).await;
    let response = app
        .admin(Method::POST, "/api/v1/groups/no-such-group/members")
        .json(&json!({"user_id": kim_id}))
        .send()
        .await
        .unwrap();
    expect_problem(response, StatusCode::NOT_FOUND).await;
    let response = app
        .admin(
            Method::DELETE,
            &format!("/api/v1/groups/{network_id}/members/{lee_id}"),
        )
        .send()
        .await
        .unwrap();
    expect_problem(response, StatusCode::NOT_FOUND).await;
    let response = app
        .request(
            Method::POST,
            &format!("/api/v1/groups/{desk_id}/members"),
            &kim_token,
        )
        .json(&json!({"user_id": lee_id}))
        .send()
        .await
        .unwrap();
    expect_problem(response, StatusCode::FORBIDDEN).await;
    app.assert_unchanged_since(&before, "refused membership changes")
        .await;

    // Removing a member.
    let response = app
        .admin(
            Method::DELETE,
            &format!("/api/v1/groups/{desk_id}/members/{kim_id}"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let (_, members) = get_json(&app, &format!("/api/v1/groups/{desk_id}/members")).await;
    assert_eq!(usernames(&members), ["lee"]);
    let response = app
        .request(Method::GET, "/api/v1/me", &kim_token)
        .send()
        .await
        .unwrap();
    let (_, me) = read(response).await;
    assert_eq!(me["groups"], json!([{"id": network_id, "name": "Network"}]));

    // The group's audit trail and the feed record every membership change.
    let audit = app.audit_of("group", &desk_id).await;
    let actions: Vec<&str> = audit.iter().filter_map(|e| e["action"].as_str()).collect();
    assert_eq!(
        actions,
        ["remove_member", "add_member", "add_member", "create"]
    );
    assert_eq!(audit[0]["changes"]["member"], json!([kim_id, null]));
    let events = app.events_after(0).await;
    let membership: Vec<(String, String)> = events
        .iter()
        .filter(|e| e["entity_id"] == desk_id.as_str())
        .map(|e| {
            (
                e["type"].as_str().unwrap().to_owned(),
                e["data"]["user_id"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        membership,
        [
            ("group.created".to_owned(), String::new()),
            ("group.member_added".to_owned(), kim_id.clone()),
            ("group.member_added".to_owned(), lee_id.clone()),
            ("group.member_removed".to_owned(), kim_id.clone()),
        ]
    );
}

async fn deactivated_users_cannot_join_groups(app: TestApp) {
    let group = app.group("Night shift").await;
    let user = create_user(
        &app,
        json!({"username": "owl", "display_name": "Owl", "roles": ["agent"]}),
    )
    .await;
    let user_id = user["id"].as_str().unwrap();
    let response = app
        .admin(Method::PATCH, &format!("/api/v1/users/{user_id}"))
        .json(&json!({"active": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let before = app.write_marks().await;
    let response = app
        .admin(
            Method::POST,
            &format!("/api/v1/groups/{}/members", group["id"].as_str().unwrap()),
        )
        .json(&json!({"user_id": user_id}))
        .send()
        .await
        .unwrap();
    // The stored user's state is what the request conflicts with.
    let problem = expect_problem(response, StatusCode::CONFLICT).await;
    assert!(
        problem["detail"].as_str().unwrap().starts_with("user_id:"),
        "{problem}"
    );
    app.assert_unchanged_since(&before, "adding a deactivated user")
        .await;
}

async fn deactivating_oneself_is_409(app: TestApp) {
    let (status, me) = get_json(&app, "/api/v1/me").await;
    assert_eq!(status, StatusCode::OK, "{me}");
    let admin_id = me["id"].as_str().unwrap().to_owned();
    let before = app.write_marks().await;
    let response = app
        .admin(Method::PATCH, &format!("/api/v1/users/{admin_id}"))
        .json(&json!({"active": false, "display_name": "Gone"}))
        .send()
        .await
        .unwrap();
    // The body is valid content; it conflicts with who is signed in, not with any rule on data.
    let problem = expect_problem(response, StatusCode::CONFLICT).await;
    assert!(
        problem["detail"].as_str().unwrap().starts_with("active:"),
        "{problem}"
    );
    app.assert_unchanged_since(&before, "an admin deactivating themselves")
        .await;
    let (status, me) = get_json(&app, "/api/v1/me").await;
    assert_eq!(status, StatusCode::OK, "the admin still signs in: {me}");
    assert_ne!(
        me["display_name"], "Gone",
        "nothing of the refused patch was applied"
    );

    // Another admin may deactivate them.
    let other = create_user(
        &app,
        json!({"username": "second-admin", "display_name": "Second", "password": "second-admin-password",
               "roles": ["admin"]}),
    )
    .await;
    let token = app.token_for("second-admin", "second-admin-password").await;
    let response = app
        .request(Method::PATCH, &format!("/api/v1/users/{admin_id}"), &token)
        .json(&json!({"active": false}))
        .send()
        .await
        .unwrap();
    let (status, user) = read(response).await;
    assert_eq!(status, StatusCode::OK, "{user}");
    assert_eq!(user["active"], false);
    assert_ne!(other["id"], user["id"]);
}

async fn group_list_and_update(app: TestApp) {
    for name in ["Alpha", "Bravo", "Charlie"] {
        app.group(name).await;
    }
    let (status, page) = get_json(&app, "/api/v1/groups?q=rav").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    assert_eq!(page["items"][0]["name"], "Bravo");

    let response = app
        .admin(Method::GET, "/api/v1/groups?limit=2")
        .send()
        .await
        .unwrap();
    assert!(header(&response, "link").is_some());
    let (_, first) = read(response).await;
    let cursor = first["next_cursor"].as_str().expect("next_cursor");
    let response = app
        .admin(
            Method::GET,
            &format!("/api/v1/groups?limit=2&cursor={cursor}"),
        )
        .send()
        .await
        .unwrap();
    assert!(header(&response, "link").is_none());
    let (_, second) = read(response).await;
    assert!(second["next_cursor"].is_null());
    let mut all: Vec<&str> = first["items"]
        .as_array()
        .unwrap()
        .iter()
        .chain(second["items"].as_array().unwrap())
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    all.sort_unstable();
    assert_eq!(all, ["Alpha", "Bravo", "Charlie"]);

    let id = page["items"][0]["id"].as_str().unwrap();
    let response = app
        .admin(Method::PATCH, &format!("/api/v1/groups/{id}"))
        .json(&json!({"name": "Bravo Team", "email": "bravo@example.com"}))
        .send()
        .await
        .unwrap();
    let (status, updated) = read(response).await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["name"], "Bravo Team");
    assert_eq!(updated["description"], "Bravo team");
    assert_eq!(updated["version"], 2);
    let response = app
        .admin(Method::PATCH, &format!("/api/v1/groups/{id}"))
        .json(&json!({"email": null}))
        .send()
        .await
        .unwrap();
    let (_, updated) = read(response).await;
    assert!(updated["email"].is_null());
    assert_eq!(updated["name"], "Bravo Team");
    let audit = app.audit_of("group", id).await;
    assert_eq!(
        audit[1]["changes"]["name"],
        json!(["Bravo", "Bravo Team"]),
        "{audit:?}"
    );
    assert_eq!(
        audit[0]["changes"]["email"],
        json!(["bravo@example.com", null])
    );
}

/// `q` is text to find, not a pattern: `_` and `%` match themselves only.
async fn text_search_is_literal(app: TestApp) {
    for (username, display) in [
        ("us_er", "Under Score"),
        ("usxer", "Plain"),
        ("percent", "100% sure"),
        ("hundred", "1000 sure"),
    ] {
        create_user(
            &app,
            json!({"username": username, "display_name": display, "roles": ["agent"]}),
        )
        .await;
    }
    for (query, expected) in [
        ("q=us_er", vec!["us_er"]),
        ("q=%25", vec!["percent"]),
        ("q=100%25", vec!["percent"]),
        ("q=_", vec!["us_er"]),
    ] {
        let (status, page) = get_json(&app, &format!("/api/v1/users?{query}")).await;
        assert_eq!(status, StatusCode::OK, "{query}: {page}");
        assert_eq!(usernames(&page), expected, "?{query}");
    }
    app.group("Ops_East").await;
    app.group("OpsXEast").await;
    let (_, page) = get_json(&app, "/api/v1/groups?q=ops_east").await;
    let names: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Ops_East"]);
}

/// Many creates of one username at once: exactly one wins, the others are 409, never a 500.
async fn concurrent_duplicate_usernames(app: TestApp) {
    let attempts = (0..12).map(|i| {
        let request = app.admin(Method::POST, "/api/v1/users").json(&json!({
            "username": "contested",
            "display_name": format!("Attempt {i}"),
            "roles": ["agent"],
        }));
        async move { request.send().await.unwrap().status() }
    });
    let statuses = futures_util::future::join_all(attempts).await;
    let created = statuses
        .iter()
        .filter(|s| **s == StatusCode::CREATED)
        .count();
    let conflicts = statuses
        .iter()
        .filter(|s| **s == StatusCode::CONFLICT)
        .count();
    assert_eq!((created, conflicts), (1, 11), "{statuses:?}");
    assert_eq!(app.list_all("/api/v1/users?q=contested").await.len(), 1);
    let created_events = app
        .events_after(0)
        .await
        .iter()
        .filter(|e| e["data"]["username"] == "contested")
        .count();
    assert_eq!(created_events, 1);
}

/// In a merge patch `null` removes a field; a field that cannot be absent must refuse it rather
/// than silently ignore it.
async fn null_for_a_required_field_is_422(app: TestApp) {
    let user = create_user(
        &app,
        json!({"username": "nora", "display_name": "Nora", "roles": ["agent"]}),
    )
    .await;
    let path = format!("/api/v1/users/{}", user["id"].as_str().unwrap());
    let before = app.write_marks().await;
    for field in ["display_name", "roles", "active"] {
        let response = app
            .admin(Method::PATCH, &path)
            .json(&json!({ field: null }))
            .send()
            .await
            .unwrap();
        let problem = expect_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(
            error_fields(&problem),
            [field],
            "{field}: null -> {problem}"
        );
    }
    app.assert_unchanged_since(&before, "null for required fields")
        .await;
}

on_both_backends!(
    null_for_a_required_field_is_422,
    text_search_is_literal,
    concurrent_duplicate_usernames,
    create_and_get_a_user,
    duplicate_username_is_409,
    list_filters,
    cursor_pagination,
    patch_has_merge_semantics,
    password_change_and_audit,
    external_refs,
    groups_and_members,
    deactivated_users_cannot_join_groups,
    deactivating_oneself_is_409,
    group_list_and_update,
);
