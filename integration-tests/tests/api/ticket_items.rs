//! Tickets on configuration items: incidents and problems name the items they concern and
//! the business service they affect, are filtered by them, and each item lists its open
//! tickets. Creating an incident on an item reports the business services depending on it.

use itsm_integration_tests::reqwest::{Method, StatusCode};
use itsm_integration_tests::serde_json::{json, Value};
use itsm_integration_tests::{
    error_fields, expect_problem, expect_refusal, on_both_backends, read, TestApp,
};

use crate::incidents::{get_ok, text};

async fn admin_post(app: &TestApp, path: &str, body: Value) -> Value {
    let (status, value) = read(
        app.admin(Method::POST, path)
            .json(&body)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(
        status.is_success(),
        "POST {path} {body} -> {status} {value}"
    );
    value
}

async fn item(app: &TestApp, name: &str, class: &str) -> String {
    let created = admin_post(
        app,
        "/api/v1/configuration-items",
        json!({"name": name, "class": class, "attributes": {}}),
    )
    .await;
    text(&created, "id")
}

async fn depends_on(app: &TestApp, source: &str, target: &str) {
    admin_post(
        app,
        "/api/v1/ci-relationships",
        json!({"source_id": source, "type": "depends_on", "target_id": target}),
    )
    .await;
}

/// Payroll (a business service) depends on the payroll application, which depends on db01.
struct Landscape {
    payroll: String,
    app: String,
    db01: String,
}

async fn landscape(app: &TestApp) -> Landscape {
    let payroll = item(app, "Payroll", "business_service").await;
    let application = item(app, "payroll-app", "application").await;
    let db01 = item(app, "db01", "server").await;
    depends_on(app, &payroll, &application).await;
    depends_on(app, &application, &db01).await;
    Landscape {
        payroll,
        app: application,
        db01,
    }
}

fn numbers(page: &Value, list: &str) -> Vec<String> {
    page[list]
        .as_array()
        .unwrap_or_else(|| panic!("no {list} in {page}"))
        .iter()
        .map(|ticket| text(ticket, "number"))
        .collect()
}

async fn incidents_and_problems_on_items(app: TestApp) {
    let Landscape {
        payroll,
        app: application,
        db01,
    } = landscape(&app).await;
    let (_, agent) = app.user_with_roles("alma", &["agent"]).await;

    let (status, incident) = read(
        app.request(Method::POST, "/api/v1/incidents", &agent)
            .json(&json!({"title": "Payroll runs fail", "configuration_items": [db01], "service": payroll}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{incident}");
    assert_eq!(incident["configuration_items"], json!([db01]));
    assert_eq!(incident["service"], payroll.as_str());
    let impacted = incident["impacted_services"]
        .as_array()
        .expect("impacted_services");
    assert_eq!(impacted.len(), 1, "{incident}");
    assert_eq!(impacted[0]["id"], payroll.as_str());
    assert_eq!(impacted[0]["distance"], 2);
    let number = text(&incident, "number");
    // Only the create response reports the impact; the incident itself keeps its links.
    let read_back = get_ok(&app, &agent, &format!("/api/v1/incidents/{number}")).await;
    assert!(read_back.get("impacted_services").is_none());
    assert_eq!(read_back["configuration_items"], json!([db01]));

    for filter in [
        format!("configuration_item={db01}"),
        format!("service={payroll}"),
    ] {
        let page = get_ok(&app, &agent, &format!("/api/v1/incidents?{filter}")).await;
        assert_eq!(numbers(&page, "items"), [number.as_str()], "{filter}");
    }
    let other = get_ok(
        &app,
        &agent,
        &format!("/api/v1/incidents?configuration_item={application}"),
    )
    .await;
    assert_eq!(numbers(&other, "items"), Vec::<String>::new());

    // A problem from the incident concerns the same items.
    let (status, problem) = read(
        app.request(
            Method::POST,
            &format!("/api/v1/incidents/{number}/problem"),
            &agent,
        )
        .json(&json!({}))
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{problem}");
    assert_eq!(problem["configuration_items"], json!([db01]));
    let prb = text(&problem, "number");
    let page = get_ok(&app, &agent, &format!("/api/v1/problems?service={payroll}")).await;
    assert_eq!(numbers(&page, "items"), [prb.as_str()]);

    // Each item lists its open tickets: db01 by its links, Payroll as their service.
    for item in [&db01, &payroll] {
        let tickets = get_ok(
            &app,
            &agent,
            &format!("/api/v1/configuration-items/{item}/tickets"),
        )
        .await;
        assert_eq!(
            numbers(&tickets, "incidents"),
            [number.as_str()],
            "{tickets}"
        );
        assert_eq!(numbers(&tickets, "problems"), [prb.as_str()], "{tickets}");
        assert_eq!(tickets["truncated"], false);
    }
    let none = get_ok(
        &app,
        &agent,
        &format!("/api/v1/configuration-items/{application}/tickets"),
    )
    .await;
    assert_eq!(numbers(&none, "incidents"), Vec::<String>::new());

    // Unlinked by a merge patch: the item no longer lists it; the change is in the history.
    let (status, patched) = read(
        app.request(
            Method::PATCH,
            &format!("/api/v1/incidents/{number}"),
            &agent,
        )
        .json(&json!({"configuration_items": [], "service": null}))
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["configuration_items"], json!([]));
    let tickets = get_ok(
        &app,
        &agent,
        &format!("/api/v1/configuration-items/{db01}/tickets"),
    )
    .await;
    assert_eq!(numbers(&tickets, "incidents"), Vec::<String>::new());
    let history = get_ok(&app, &agent, &format!("/api/v1/incidents/{number}/history")).await;
    assert_eq!(
        history["items"][0]["changes"]["configuration_items"],
        json!([[db01], []])
    );
}

async fn bad_links_are_refused_naming_the_field(app: TestApp) {
    let Landscape {
        payroll,
        app: application,
        db01,
    } = landscape(&app).await;
    let (_, agent) = app.user_with_roles("alma", &["agent"]).await;
    let (_, requester) = app.user_with_roles("rita", &["requester"]).await;
    let marks = app.write_marks().await;
    let cases = [
        (
            &agent,
            json!({"title": "x", "configuration_items": ["no-such-item"]}),
            vec!["configuration_items[0]"],
        ),
        (
            &agent,
            json!({"title": "x", "configuration_items": [db01, db01]}),
            vec!["configuration_items[1]"],
        ),
        (
            &agent,
            json!({"title": "x", "service": application}),
            vec!["service"],
        ),
        (
            &requester,
            json!({"title": "x", "configuration_items": [db01], "service": payroll}),
            vec!["configuration_items", "service"],
        ),
    ];
    for (token, body, fields) in cases {
        for path in ["/api/v1/incidents", "/api/v1/problems"] {
            if path.ends_with("problems") && *token == requester {
                continue;
            }
            let response = app
                .request(Method::POST, path, token)
                .json(&body)
                .send()
                .await
                .unwrap();
            let problem = expect_refusal(response).await;
            assert_eq!(error_fields(&problem), fields, "{path} {body}");
        }
    }
    app.assert_unchanged_since(&marks, "refused links").await;
    let response = app
        .request(
            Method::GET,
            &format!("/api/v1/incidents?configuration_item={db01}"),
            &requester,
        )
        .send()
        .await
        .unwrap();
    expect_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    let response = app
        .request(
            Method::GET,
            "/api/v1/configuration-items/no-such-item/tickets",
            &agent,
        )
        .send()
        .await
        .unwrap();
    expect_problem(response, StatusCode::NOT_FOUND).await;
    let response = app
        .request(
            Method::GET,
            &format!("/api/v1/configuration-items/{db01}/tickets"),
            &requester,
        )
        .send()
        .await
        .unwrap();
    expect_problem(response, StatusCode::FORBIDDEN).await;
}

on_both_backends!(
    incidents_and_problems_on_items,
    bad_links_are_refused_naming_the_field,
);
