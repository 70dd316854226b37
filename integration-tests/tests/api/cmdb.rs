//! The CMDB: classes and their schemas, items, relationships, impact, reconciliation, history.

use itsm_integration_tests::reqwest::{Method, StatusCode};
use itsm_integration_tests::serde_json::{json, Value};
use itsm_integration_tests::{
    error_fields, expect_problem, expect_refusal, header, on_both_backends, read, Backend, TestApp,
};

async fn send(
    app: &TestApp,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = app.admin(method, path);
    if let Some(body) = body {
        request = request.json(&body);
    }
    read(request.send().await.unwrap()).await
}

async fn post_ok(app: &TestApp, path: &str, body: Value) -> Value {
    let (status, value) = send(app, Method::POST, path, Some(body.clone())).await;
    assert!(
        status.is_success(),
        "POST {path} {body} -> {status} {value}"
    );
    value
}

async fn get_ok(app: &TestApp, path: &str) -> Value {
    let (status, value) = send(app, Method::GET, path, None).await;
    assert_eq!(status, StatusCode::OK, "GET {path} -> {value}");
    value
}

async fn item(app: &TestApp, name: &str, class: &str, attributes: Value) -> String {
    let created = post_ok(
        app,
        "/api/v1/configuration-items",
        json!({"name": name, "class": class, "attributes": attributes}),
    )
    .await;
    created["id"].as_str().unwrap().to_owned()
}

async fn relate(app: &TestApp, source: &str, rel_type: &str, target: &str) -> Value {
    post_ok(
        app,
        "/api/v1/ci-relationships",
        json!({"source_id": source, "type": rel_type, "target_id": target}),
    )
    .await
}

fn names(page: &Value) -> Vec<String> {
    let mut names: Vec<String> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    names
}

async fn linux_server_class(app: &TestApp) -> Value {
    post_ok(
        app,
        "/api/v1/ci-classes",
        json!({
            "name": "linux_server",
            "parent": "server",
            "description": "Servers running Linux",
            "attributes": [
                {"name": "kernel", "type": "string", "required": true},
                {"name": "arch", "type": "enum", "enum": ["x86_64", "arm64"]},
                {"name": "patched_on", "type": "date"},
                {"name": "asset_tag", "type": "string", "identifying": true},
            ],
            "identification_rules": [["asset_tag"], ["serial_number"], ["hostname", "dns_domain"]],
        }),
    )
    .await
}

async fn classes_define_inherited_schemas_enforced_on_every_write(app: TestApp) {
    let builtins = app.list_all("/api/v1/ci-classes").await;
    for name in [
        "business_service",
        "application",
        "database",
        "server",
        "virtual_machine",
        "container",
        "network_device",
        "storage",
        "location",
    ] {
        assert!(
            builtins
                .iter()
                .any(|c| c["name"] == name && c["builtin"] == true),
            "{name}"
        );
    }
    let class = linux_server_class(&app).await;
    let effective: Vec<&str> = class["effective_attributes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert!(
        effective.starts_with(&["serial_number", "hostname", "dns_domain"]),
        "{effective:?}"
    );
    assert!(effective.ends_with(&["kernel", "arch", "patched_on", "asset_tag"]));

    // Every write is checked against the inherited schema, naming the attribute.
    let bad = [
        (json!({"cpu_count": 4}), "attributes.kernel"),
        (
            json!({"kernel": "6.1", "cpu_count": "four"}),
            "attributes.cpu_count",
        ),
        (json!({"kernel": "6.1", "arch": "sparc"}), "attributes.arch"),
        (
            json!({"kernel": "6.1", "patched_on": "yesterday"}),
            "attributes.patched_on",
        ),
        (
            json!({"kernel": "6.1", "colour": "red"}),
            "attributes.colour",
        ),
    ];
    let before = app.write_marks().await;
    for (attributes, field) in bad {
        let response = app
            .admin(Method::POST, "/api/v1/configuration-items")
            .json(&json!({"name": "x", "class": "linux_server", "attributes": attributes}))
            .send()
            .await
            .unwrap();
        let problem = expect_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(error_fields(&problem), [field], "{problem}");
    }
    app.assert_unchanged_since(&before, "refused items").await;
    let response = app
        .admin(Method::POST, "/api/v1/configuration-items")
        .json(&json!({"name": "x", "class": "mainframe"}))
        .send()
        .await
        .unwrap();
    let problem = expect_problem(response, StatusCode::CONFLICT).await;
    assert_eq!(error_fields(&problem), ["class"]);

    let id = item(
        &app,
        "lx1",
        "linux_server",
        json!({"kernel": "6.1", "arch": "arm64", "cpu_count": 8}),
    )
    .await;
    // A PATCH is checked too.
    let response = app
        .admin(Method::PATCH, &format!("/api/v1/configuration-items/{id}"))
        .json(&json!({"attributes": {"kernel": null}}))
        .send()
        .await
        .unwrap();
    let problem = expect_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(error_fields(&problem), ["attributes.kernel"]);

    // A class in use gains a required attribute only with a default, and is not deleted.
    let attrs = |extra: Value| {
        let mut list = class["attributes"].as_array().unwrap().clone();
        list.push(extra);
        json!({"attributes": list})
    };
    let response = app
        .admin(Method::PATCH, "/api/v1/ci-classes/linux_server")
        .json(&attrs(
            json!({"name": "distro", "type": "string", "required": true}),
        ))
        .send()
        .await
        .unwrap();
    // The items stored are what the change conflicts with.
    let problem = expect_problem(response, StatusCode::CONFLICT).await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("attributes[4].default"),
        "{problem}"
    );
    let (status, updated) = send(
        &app,
        Method::PATCH,
        "/api/v1/ci-classes/linux_server",
        Some(attrs(
            json!({"name": "distro", "type": "string", "required": true, "default": "debian"}),
        )),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["version"], 2);
    let response = app
        .admin(Method::DELETE, "/api/v1/ci-classes/linux_server")
        .send()
        .await
        .unwrap();
    expect_problem(response, StatusCode::CONFLICT).await;
    let response = app
        .admin(Method::DELETE, "/api/v1/ci-classes/server")
        .send()
        .await
        .unwrap();
    expect_problem(response, StatusCode::CONFLICT).await;

    // Definitions are checked: rules over identifying attributes only, no redefinition.
    let response = app
        .admin(Method::POST, "/api/v1/ci-classes")
        .json(&json!({"name": "odd", "parent": "server",
                      "attributes": [{"name": "hostname", "type": "string"}],
                      "identification_rules": [["os"]]}))
        .send()
        .await
        .unwrap();
    // Valid on its own, the body clashes with the parent's stored schema: 409 naming both.
    let problem = expect_problem(response, StatusCode::CONFLICT).await;
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains("attributes[0].name") && detail.contains("identification_rules[0]"),
        "{problem}"
    );
    let response = app
        .admin(Method::POST, "/api/v1/ci-classes")
        .json(&json!({"name": "linux_server"}))
        .send()
        .await
        .unwrap();
    expect_problem(response, StatusCode::CONFLICT).await;
    post_ok(
        &app,
        "/api/v1/ci-classes",
        json!({"name": "unused", "parent": "storage"}),
    )
    .await;
    let response = app
        .admin(Method::DELETE, "/api/v1/ci-classes/unused")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);

    // Classes are admin business; requesters do not read the CMDB.
    let (_, agent) = app.user_with_roles("agent1", &["agent"]).await;
    let response = app
        .request(Method::POST, "/api/v1/ci-classes", &agent)
        .json(&json!({"name": "nope"}))
        .send()
        .await
        .unwrap();
    expect_problem(response, StatusCode::FORBIDDEN).await;
    let response = app
        .request(Method::GET, "/api/v1/ci-classes/server", &agent)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let (_, requester) = app.user_with_roles("req1", &["requester"]).await;
    let response = app
        .request(Method::GET, "/api/v1/configuration-items", &requester)
        .send()
        .await
        .unwrap();
    expect_problem(response, StatusCode::FORBIDDEN).await;
}

async fn items_are_listed_by_filters_and_retired_with_history(app: TestApp) {
    linux_server_class(&app).await;
    let group = app.group("Unix").await;
    let group_id = group["id"].as_str().unwrap();
    let web01 = post_ok(
        &app,
        "/api/v1/configuration-items",
        json!({"name": "web01", "class": "linux_server", "environment": "production",
               "criticality": "high", "owner_group": group_id,
               "attributes": {"kernel": "6.1", "hostname": "web01", "dns_domain": "example.org"},
               "external_refs": [{"system": "erp", "id": "A-1"}]}),
    )
    .await;
    assert_eq!(web01["status"], "operational");
    assert_eq!(web01["attribute_sources"]["hostname"]["source"], "manual");
    let web01_id = web01["id"].as_str().unwrap().to_owned();
    item(&app, "web02", "server", json!({"hostname": "web02"})).await;
    item(&app, "vm1", "virtual_machine", json!({"hostname": "web01"})).await;
    item(&app, "orders", "application", json!({"app_id": "ORD"})).await;

    let list = |query: &str| {
        let path = format!("/api/v1/configuration-items?{query}");
        let app = &app;
        async move { get_ok(app, &path).await }
    };
    assert_eq!(names(&list("class=server").await), ["web01", "web02"]);
    assert_eq!(names(&list("class=linux_server").await), ["web01"]);
    assert_eq!(names(&list("attr.hostname=web01").await), ["vm1", "web01"]);
    assert_eq!(
        names(&list("attr.hostname=web01&class=server").await),
        ["web01"]
    );
    assert_eq!(
        names(&list("environment=production&criticality=high").await),
        ["web01"]
    );
    assert_eq!(
        names(&list(&format!("owner_group={group_id}")).await),
        ["web01"]
    );
    assert_eq!(names(&list("q=WEB").await), ["web01", "web02"]);
    assert_eq!(names(&list("external_ref=erp:A-1").await), ["web01"]);
    assert_eq!(names(&list("status=retired").await), Vec::<String>::new());
    // A class that does not exist has no items.
    assert_eq!(names(&list("class=mainframe").await), Vec::<String>::new());
    for bad in ["attr.os=linux", "status=gone", "colour=red", "depth=3"] {
        let response = app
            .admin(Method::GET, &format!("/api/v1/configuration-items?{bad}"))
            .send()
            .await
            .unwrap();
        expect_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    }
    // Keyset pages.
    let first = list("limit=3").await;
    assert_eq!(first["items"].as_array().unwrap().len(), 3);
    let cursor = first["next_cursor"].as_str().unwrap();
    let second = list(&format!("limit=3&cursor={cursor}")).await;
    assert_eq!(second["items"].as_array().unwrap().len(), 1);
    assert!(second["next_cursor"].is_null());

    // Optimistic concurrency, then retirement.
    let path = format!("/api/v1/configuration-items/{web01_id}");
    let response = app
        .admin(Method::PATCH, &path)
        .header("If-Match", "\"7\"")
        .json(&json!({"status": "maintenance"}))
        .send()
        .await
        .unwrap();
    expect_problem(response, StatusCode::PRECONDITION_FAILED).await;
    let after = app.events_after(0).await.last().unwrap()["sequence"]
        .as_i64()
        .unwrap();
    let response = app
        .admin(Method::PATCH, &path)
        .header("If-Match", "\"1\"")
        .json(&json!({"attributes": {"kernel": "6.6"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(header(&response, "etag").as_deref(), Some("\"2\""));
    let response = app
        .admin(Method::PATCH, &path)
        .json(&json!({"status": "retired"}))
        .send()
        .await
        .unwrap();
    let (status, retired) = read(response).await;
    assert_eq!(status, StatusCode::OK, "{retired}");
    assert_eq!(retired["status"], "retired");
    let events: Vec<String> = app
        .events_after(after)
        .await
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(events, ["ci.updated", "ci.retired"]);
    assert_eq!(names(&list("status=retired").await), ["web01"]);
    let history = get_ok(&app, &format!("{path}/history")).await;
    let entries = history["items"].as_array().unwrap();
    assert_eq!(entries.len(), 3);
    assert_eq!(
        entries[0]["changes"]["status"],
        json!(["operational", "retired"])
    );
    assert_eq!(
        entries[1]["changes"]["attributes.kernel"],
        json!(["6.1", "6.6"])
    );
    assert_eq!(
        entries[1]["changes"]["attribute_sources.kernel"],
        json!(["manual", "manual"])
    );
    assert_eq!(entries[2]["action"], "create");

    // Integrations write items; agents only read them.
    let (_, agent) = app.user_with_roles("agent1", &["agent"]).await;
    let response = app
        .request(Method::PATCH, &path, &agent)
        .json(&json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    expect_problem(response, StatusCode::FORBIDDEN).await;
    let response = app
        .request(Method::GET, &path, &agent)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let (_, change_manager) = app.user_with_roles("cm1", &["change_manager"]).await;
    let response = app
        .request(Method::PATCH, &path, &change_manager)
        .json(&json!({"name": "web01-old"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

async fn relationships_are_typed_and_impact_walks_cycles(app: TestApp) {
    let svc = post_ok(
        &app,
        "/api/v1/configuration-items",
        json!({"name": "Web shop", "class": "business_service", "criticality": "critical",
               "attributes": {"service_code": "SHOP"}}),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let app_id = item(&app, "shop-app", "application", json!({})).await;
    let db = item(&app, "shop-db", "database", json!({})).await;
    let vm = item(&app, "vm1", "virtual_machine", json!({})).await;
    let srv = item(&app, "host1", "server", json!({})).await;
    let storage = item(&app, "array1", "storage", json!({})).await;
    relate(&app, &svc, "depends_on", &app_id).await;
    relate(&app, &app_id, "depends_on", &db).await;
    // A cycle: the database calls back into the application.
    relate(&app, &db, "uses", &app_id).await;
    relate(&app, &app_id, "runs_on", &vm).await;
    let hosted = relate(&app, &vm, "hosted_on", &srv).await;
    assert_eq!(hosted["inverse"], "hosts");
    relate(&app, &srv, "uses", &storage).await;

    let added = app
        .events_after(0)
        .await
        .iter()
        .filter(|e| e["type"] == "ci.relationship_added")
        .count();
    assert_eq!(added, 6);
    let history = get_ok(&app, &format!("/api/v1/configuration-items/{vm}/history")).await;
    assert_eq!(history["items"][0]["action"], "add_relationship");
    assert_eq!(
        history["items"][0]["changes"]["relationships.hosted_on"],
        json!([null, srv])
    );

    // Bad relationships change nothing.
    let before = app.write_marks().await;
    let last_event = before.last_event;
    for (body, field) in [
        (
            json!({"source_id": srv, "type": "uses", "target_id": srv}),
            "target_id",
        ),
        (
            json!({"source_id": srv, "type": "uses", "target_id": "nothing"}),
            "target_id",
        ),
        (
            json!({"source_id": vm, "type": "likes", "target_id": srv}),
            "type",
        ),
    ] {
        let response = app
            .admin(Method::POST, "/api/v1/ci-relationships")
            .json(&body)
            .send()
            .await
            .unwrap();
        let problem = expect_refusal(response).await;
        assert_eq!(error_fields(&problem), [field], "{body} -> {problem}");
    }
    // A relationship stored already is a conflict with it.
    let response = app
        .admin(Method::POST, "/api/v1/ci-relationships")
        .json(&json!({"source_id": vm, "type": "hosted_on", "target_id": srv}))
        .send()
        .await
        .unwrap();
    let problem = expect_problem(response, StatusCode::CONFLICT).await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("exists already"),
        "{problem}"
    );
    app.assert_unchanged_since(&before, "refused relationships")
        .await;
    assert_eq!(app.events_after(last_event).await.len(), 0);

    // Read from the server: the VM it hosts (incoming) and the array it uses (outgoing).
    let rels = get_ok(
        &app,
        &format!("/api/v1/configuration-items/{srv}/relationships"),
    )
    .await;
    let mut read: Vec<(String, String)> = rels["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_owned(),
                r["related"]["name"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    read.sort();
    assert_eq!(
        read,
        [
            ("hosts".into(), "vm1".into()),
            ("uses".into(), "array1".into())
        ]
    );
    let incoming = get_ok(
        &app,
        &format!(
            "/api/v1/configuration-items/{srv}/relationships?direction=incoming&types=hosted_on"
        ),
    )
    .await;
    assert_eq!(incoming["items"].as_array().unwrap().len(), 1);

    // Upstream from the storage array, through the cycle, to the business service.
    let impact = get_ok(
        &app,
        &format!("/api/v1/configuration-items/{storage}/impact?direction=upstream&depth=10"),
    )
    .await;
    let reached: Vec<(&str, i64)> = impact["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["name"].as_str().unwrap(), i["distance"].as_i64().unwrap()))
        .collect();
    assert_eq!(
        reached,
        [
            ("host1", 1),
            ("vm1", 2),
            ("shop-app", 3),
            ("Web shop", 4),
            ("shop-db", 4)
        ],
        "{impact}"
    );
    let services = impact["business_services"].as_array().unwrap();
    assert_eq!(services.len(), 1);
    assert_eq!(services[0]["name"], "Web shop");
    assert_eq!(services[0]["criticality"], "critical");
    assert_eq!(services[0]["distance"], 4);
    assert_eq!(services[0]["path"], json!([storage, srv, vm, app_id, svc]));
    assert_eq!(impact["truncated"], false);
    // The depth bound and the cap.
    let near = get_ok(
        &app,
        &format!("/api/v1/configuration-items/{storage}/impact?depth=2"),
    )
    .await;
    assert_eq!(near["items"].as_array().unwrap().len(), 2);
    assert!(near["business_services"].as_array().unwrap().is_empty());
    let capped = get_ok(
        &app,
        &format!("/api/v1/configuration-items/{storage}/impact?depth=10&limit=3"),
    )
    .await;
    assert_eq!(capped["items"].as_array().unwrap().len(), 3);
    assert_eq!(capped["truncated"], true);
    // Downstream from the service, following dependencies only.
    let down = get_ok(
        &app,
        &format!("/api/v1/configuration-items/{svc}/impact?direction=downstream&types=depends_on"),
    )
    .await;
    let mut down_names: Vec<&str> = down["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    down_names.sort();
    assert_eq!(down_names, ["shop-app", "shop-db"]);
    for bad in [
        "depth=0",
        "depth=11",
        "direction=sideways",
        "limit=0",
        "types=likes",
    ] {
        let response = app
            .admin(
                Method::GET,
                &format!("/api/v1/configuration-items/{storage}/impact?{bad}"),
            )
            .send()
            .await
            .unwrap();
        expect_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    }
    let response = app
        .admin(Method::GET, "/api/v1/configuration-items/nothing/impact")
        .send()
        .await
        .unwrap();
    expect_problem(response, StatusCode::NOT_FOUND).await;

    // A retired item keeps its relationships readable; removing one is an event.
    let (status, _) = send(
        &app,
        Method::PATCH,
        &format!("/api/v1/configuration-items/{vm}"),
        Some(json!({"status": "retired"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let rels = get_ok(
        &app,
        &format!("/api/v1/configuration-items/{vm}/relationships"),
    )
    .await;
    assert_eq!(rels["items"].as_array().unwrap().len(), 2);
    let after = app.events_after(0).await.last().unwrap()["sequence"]
        .as_i64()
        .unwrap();
    let id = hosted["id"].as_str().unwrap();
    let response = app
        .admin(Method::DELETE, &format!("/api/v1/ci-relationships/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let events = app.events_after(after).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["type"], "ci.relationship_removed");
    let response = app
        .admin(Method::GET, &format!("/api/v1/ci-relationships/{id}"))
        .send()
        .await
        .unwrap();
    expect_problem(response, StatusCode::NOT_FOUND).await;
}

fn discovery_batch() -> Value {
    json!({
        "source": "discovery",
        "items": [
            {"key": "h1", "class": "server", "name": "host1",
             "attributes": {"serial_number": "SN1", "hostname": "host1", "dns_domain": "dc1", "os": "linux"}},
            {"key": "h2", "class": "server", "name": "host2",
             "attributes": {"hostname": "host2", "dns_domain": "dc1", "cpu_count": 16}},
            {"key": "vm", "class": "virtual_machine", "name": "vm-a",
             "attributes": {"vm_uuid": "U-1", "hostname": "vm-a"}},
        ],
        "relationships": [{"source": "vm", "type": "hosted_on", "target": "h1"}],
    })
}

async fn reconciliation_identifies_and_is_idempotent(app: TestApp) {
    let first = post_ok(
        &app,
        "/api/v1/configuration-items/reconcile",
        discovery_batch(),
    )
    .await;
    assert_eq!(
        first["summary"],
        json!({"created": 3, "updated": 0, "unchanged": 0, "conflict": 0, "invalid": 0})
    );
    assert_eq!(first["relationships"][0]["action"], "created");
    let host1 = first["results"][0]["id"].as_str().unwrap().to_owned();
    let stored = get_ok(&app, &format!("/api/v1/configuration-items/{host1}")).await;
    assert_eq!(stored["attribute_sources"]["os"]["source"], "discovery");

    // The same batch again changes nothing: no audit entry, no event.
    let marks = app.write_marks().await;
    let second = post_ok(
        &app,
        "/api/v1/configuration-items/reconcile",
        discovery_batch(),
    )
    .await;
    assert_eq!(
        second["summary"],
        json!({"created": 0, "updated": 0, "unchanged": 3, "conflict": 0, "invalid": 0})
    );
    assert_eq!(second["relationships"][0]["action"], "unchanged");
    assert_eq!(second["results"][0]["id"], host1.as_str());
    assert_eq!(second["results"][0]["matched_rule"], 0);
    assert_eq!(second["results"][1]["matched_rule"], 1);
    app.assert_unchanged_since(&marks, "a repeated batch").await;

    // Manual data ranks above discovery for servers.
    let (status, _) = send(
        &app,
        Method::PUT,
        "/api/v1/ci-classes/server/source-precedence",
        Some(json!({"sources": ["manual", "sccm", "discovery"]})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let precedence = get_ok(&app, "/api/v1/ci-classes/server/source-precedence").await;
    assert_eq!(
        precedence["effective_sources"],
        json!(["manual", "sccm", "discovery"])
    );
    let (status, _) = send(
        &app,
        Method::PATCH,
        &format!("/api/v1/configuration-items/{host1}"),
        Some(json!({"attributes": {"os": "rhel9"}})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    // A dry run from discovery: the refused attribute is reported, nothing is written.
    let batch = json!({"source": "discovery", "items": [
        {"class": "server", "attributes": {"serial_number": "SN1", "os": "ubuntu", "cpu_count": 32}},
        {"class": "server", "name": "host9", "attributes": {"serial_number": "SN9"}},
        {"class": "server", "attributes": {"serial_number": "SN1", "hostname": "host2", "dns_domain": "dc1"}},
        {"class": "server", "name": "bad", "attributes": {"serial_number": "SN7", "cpu_count": "many"}},
        {"class": "server", "attributes": {"os": "linux"}},
    ]});
    let marks = app.write_marks().await;
    let dry = post_ok(
        &app,
        "/api/v1/configuration-items/reconcile?dry_run=true",
        batch.clone(),
    )
    .await;
    app.assert_unchanged_since(&marks, "a dry run").await;
    assert_eq!(
        get_ok(&app, &format!("/api/v1/configuration-items/{host1}")).await["attributes"]
            ["cpu_count"],
        Value::Null
    );
    assert_eq!(dry["dry_run"], true);
    let result = &dry["results"][0];
    assert_eq!(result["action"], "updated");
    assert_eq!(result["changed_attributes"], json!(["cpu_count"]));
    assert_eq!(result["refused_attributes"][0]["name"], "os");
    assert_eq!(result["refused_attributes"][0]["held_by"], "manual");
    let actions: Vec<&str> = dry["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["updated", "created", "conflict", "invalid", "invalid"]
    );
    assert!(dry["results"][1]["id"].is_null());
    assert_eq!(
        dry["results"][3]["errors"][0]["field"],
        "attributes.cpu_count"
    );

    // The real run does what the dry run said.
    let real = post_ok(&app, "/api/v1/configuration-items/reconcile", batch.clone()).await;
    assert_eq!(real["dry_run"], false);
    assert_eq!(real["summary"], dry["summary"]);
    let mut expected = dry["results"].clone();
    expected[1]["id"] = real["results"][1]["id"].clone();
    assert_eq!(real["results"], expected);
    let stored = get_ok(&app, &format!("/api/v1/configuration-items/{host1}")).await;
    assert_eq!(stored["attributes"]["os"], "rhel9");
    assert_eq!(stored["attributes"]["cpu_count"], 32);
    assert_eq!(
        stored["attribute_sources"]["cpu_count"]["source"],
        "discovery"
    );
    let history = get_ok(
        &app,
        &format!("/api/v1/configuration-items/{host1}/history"),
    )
    .await;
    let latest = &history["items"][0];
    assert_eq!(latest["action"], "reconcile");
    assert_eq!(latest["changes"]["attributes.cpu_count"], json!([null, 32]));
    assert_eq!(
        latest["changes"]["attribute_sources.cpu_count"],
        json!([null, "discovery"])
    );
    let events = app.events_after(marks.last_event).await;
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["ci.updated", "ci.created", "ci.reconciled"]);
    assert_eq!(events[2]["data"]["summary"]["invalid"], 2);

    // All or nothing, and the size limit.
    let marks = app.write_marks().await;
    let mut atomic = batch.clone();
    atomic["atomic"] = json!(true);
    atomic["items"][1]["attributes"]["serial_number"] = json!("SN10");
    let response = app
        .admin(Method::POST, "/api/v1/configuration-items/reconcile")
        .json(&atomic)
        .send()
        .await
        .unwrap();
    // The stored classes and items refuse the batch: a 409 naming each entry, nothing written.
    let problem = expect_problem(response, StatusCode::CONFLICT).await;
    assert!(problem["type"]
        .as_str()
        .unwrap()
        .ends_with("/batch-refused"));
    let fields = error_fields(&problem);
    assert!(
        fields.contains(&"items[3].attributes.cpu_count".to_owned()),
        "{fields:?}"
    );
    let items: Vec<Value> = (0..1001)
        .map(|n| json!({"class": "server", "name": format!("n{n}"), "attributes": {"serial_number": format!("X{n}")}}))
        .collect();
    let response = app
        .admin(Method::POST, "/api/v1/configuration-items/reconcile")
        .json(&json!({"source": "discovery", "items": items}))
        .send()
        .await
        .unwrap();
    let problem = expect_problem(response, StatusCode::PAYLOAD_TOO_LARGE).await;
    assert!(problem["detail"].as_str().unwrap().contains("1000"));
    let response = app
        .admin(Method::POST, "/api/v1/configuration-items/reconcile")
        .json(&json!({"source": "bad source!", "items": []}))
        .send()
        .await
        .unwrap();
    expect_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    app.assert_unchanged_since(&marks, "refused batches").await;

    // Discovery tools reconcile with integration tokens; requesters may not.
    let token = post_ok(
        &app,
        "/api/v1/api-tokens",
        json!({"name": "disco", "role": "integration", "scopes": ["cmdb:write"]}),
    )
    .await;
    let token = token["token"].as_str().unwrap();
    let response = app
        .request(Method::POST, "/api/v1/configuration-items/reconcile", token)
        .json(&discovery_batch())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let (_, requester) = app.user_with_roles("req1", &["requester"]).await;
    let response = app
        .request(
            Method::POST,
            "/api/v1/configuration-items/reconcile",
            &requester,
        )
        .json(&discovery_batch())
        .send()
        .await
        .unwrap();
    expect_problem(response, StatusCode::FORBIDDEN).await;
}

/// `attr.<name>=` is served by the identifier index, not a scan of the items.
async fn identifier_filters_read_the_index(app: TestApp) {
    let items: Vec<Value> = (0..1000)
        .map(|n| json!({"class": "server", "name": format!("h{n}"),
                        "attributes": {"hostname": format!("h{n}"), "dns_domain": "dc", "serial_number": format!("S{n}")}}))
        .collect();
    let report = post_ok(
        &app,
        "/api/v1/configuration-items/reconcile",
        json!({"source": "seed", "items": items}),
    )
    .await;
    assert_eq!(report["summary"]["created"], 1000);
    let db = persistence::Database::open(&app.database).expect("open the test database");
    db.optimize().await.expect("statistics");
    let plan = db
        .read(|conn| persistence::cmdb::items::explain_identifier_filter(conn, "hostname", "h42"))
        .await
        .expect("plan");
    let text = plan.join("\n");
    eprintln!("{:?} plan of attr.hostname=h42:\n{text}", app.backend);
    assert!(
        text.contains("ci_identifiers_lookup_idx"),
        "{:?}: {text}",
        app.backend
    );
    if app.backend == Backend::Sqlite {
        assert!(!text.contains("SCAN configuration_items"), "{text}");
    }
    let found = get_ok(&app, "/api/v1/configuration-items?attr.hostname=h42").await;
    assert_eq!(names(&found), ["h42"]);
}

/// NUL characters and odd input in paths and filters: a 404 or a 422, never a 500.
async fn odd_input_is_refused_without_a_500(app: TestApp) {
    let before = app.write_marks().await;
    for (method, path) in [
        (Method::GET, "/api/v1/ci-classes/a%00b"),
        (Method::PATCH, "/api/v1/ci-classes/a%00b"),
        (Method::DELETE, "/api/v1/ci-classes/a%00b"),
        (Method::GET, "/api/v1/ci-classes/a%00b/source-precedence"),
        (Method::GET, "/api/v1/configuration-items/a%00b"),
        (Method::PATCH, "/api/v1/configuration-items/a%00b"),
        (
            Method::GET,
            "/api/v1/configuration-items/a%00b/relationships",
        ),
        (Method::GET, "/api/v1/configuration-items/a%00b/impact"),
        (Method::GET, "/api/v1/configuration-items/a%00b/history"),
        (Method::GET, "/api/v1/ci-relationships/a%00b"),
        (Method::DELETE, "/api/v1/ci-relationships/a%00b"),
    ] {
        let response = app
            .admin(method.clone(), path)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        expect_problem(response, StatusCode::NOT_FOUND).await;
    }
    for query in [
        "q=a%00b",
        "class=a%00b",
        "owner_group=a%00b",
        "attr.hostname=a%00b",
        "external_ref=erp:a%00b",
        "attr.a%00b=x",
        "cursor=a%00b",
    ] {
        let response = app
            .admin(Method::GET, &format!("/api/v1/configuration-items?{query}"))
            .send()
            .await
            .unwrap();
        let (status, body) = read(response).await;
        assert!(
            status == StatusCode::OK && body["items"] == json!([])
                || status == StatusCode::UNPROCESSABLE_ENTITY,
            "{query}: {status} {body}"
        );
    }
    let (status, body) = send(
        &app,
        Method::POST,
        "/api/v1/ci-relationships",
        Some(json!({"source_id": "a\u{0}b", "type": "uses", "target_id": "b"})),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (status, body) = send(
        &app,
        Method::POST,
        "/api/v1/configuration-items/reconcile",
        Some(json!({"source": "s", "items": [{"class": "server", "attributes": {"serial_number": "a\u{0}"}}]})),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    app.assert_unchanged_since(&before, "odd input").await;
}

on_both_backends!(
    classes_define_inherited_schemas_enforced_on_every_write,
    items_are_listed_by_filters_and_retired_with_history,
    relationships_are_typed_and_impact_walks_cycles,
    reconciliation_identifies_and_is_idempotent,
    identifier_filters_read_the_index,
    odd_input_is_refused_without_a_500,
);
