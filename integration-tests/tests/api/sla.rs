//! Service levels: business calendars (versioned, the built-in 24x7) and SLA policies.

use itsm_integration_tests::reqwest::{Method, StatusCode};
use itsm_integration_tests::serde_json::{json, Value};
use itsm_integration_tests::{
    error_fields, expect_problem, header, on_both_backends, read, TestApp,
};

use crate::incidents::text;

fn office(name: &str) -> Value {
    let days: Vec<Value> = ["monday", "tuesday", "wednesday", "thursday", "friday"]
        .iter()
        .map(|day| json!({"day": day, "start": "09:00", "end": "17:00"}))
        .collect();
    json!({
        "name": name,
        "time_zone": "Europe/Berlin",
        "working_hours": days,
        "holidays": [{"date": "2026-12-24", "start": "12:00", "end": "17:00"}, {"date": "2026-12-25"}],
    })
}

fn policy(name: &str, calendar: &str) -> Value {
    json!({
        "name": name,
        "precedence": 10,
        "applies_to": {"ticket_type": "incident", "priorities": ["p1", "p2"]},
        "calendar_id": calendar,
        "targets": [
            {"metric": "response", "priority": "p1", "duration_seconds": 900},
            {"metric": "resolution", "priority": "p1", "duration_seconds": 14400},
            {"metric": "resolution", "priority": "p2", "duration_seconds": 28800},
        ],
    })
}

async fn send(
    app: &TestApp,
    token: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = app.request(method, path, token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    read(request.send().await.unwrap()).await
}

async fn calendars_are_versioned_and_checked(app: TestApp) {
    let admin = app.admin_token.clone();
    let (_, agent) = app.user_with_roles("alma", &["agent"]).await;
    let (status, list) = send(&app, &agent, Method::GET, "/api/v1/calendars", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["items"][0]["name"], "24x7");
    assert_eq!(list["items"][0]["builtin"], true);

    let (status, calendar) = send(
        &app,
        &admin,
        Method::POST,
        "/api/v1/calendars",
        Some(office("Berlin office")),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{calendar}");
    assert_eq!(calendar["version"], 1);
    assert_eq!(calendar["time_zone"], "Europe/Berlin");
    let id = text(&calendar, "id");

    let marks = app.write_marks().await;
    let mut bad = office("Broken");
    bad["time_zone"] = json!("Mars/Olympus");
    bad["working_hours"][1] = json!({"day": "monday", "start": "16:00", "end": "18:00"});
    bad["working_hours"][2]["start"] = json!("9am");
    bad["holidays"][0]["end"] = json!("11:00");
    let response = app
        .request(Method::POST, "/api/v1/calendars", &admin)
        .json(&bad)
        .send()
        .await
        .unwrap();
    let problem = expect_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(
        error_fields(&problem),
        ["working_hours[2].start"],
        "{problem}"
    );
    bad["working_hours"][2]["start"] = json!("09:00");
    let response = app
        .request(Method::POST, "/api/v1/calendars", &admin)
        .json(&bad)
        .send()
        .await
        .unwrap();
    let problem = expect_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(
        error_fields(&problem),
        ["time_zone", "working_hours[1]", "holidays[0].end"],
        "{problem}"
    );
    let response = app
        .request(Method::POST, "/api/v1/calendars", &admin)
        .json(&office("Berlin office"))
        .send()
        .await
        .unwrap();
    expect_problem(response, StatusCode::CONFLICT).await;
    let response = app
        .request(Method::POST, "/api/v1/calendars", &agent)
        .json(&office("Agent's"))
        .send()
        .await
        .unwrap();
    expect_problem(response, StatusCode::FORBIDDEN).await;
    app.assert_unchanged_since(&marks, "refused calendars")
        .await;

    // A replacement is the next version; a stale If-Match changes nothing.
    let path = format!("/api/v1/calendars/{id}");
    let mut longer = office("Berlin office");
    longer["working_hours"][0]["end"] = json!("18:00");
    let response = app
        .request(Method::PUT, &path, &admin)
        .header("If-Match", "\"1\"")
        .json(&longer)
        .send()
        .await
        .unwrap();
    assert_eq!(header(&response, "etag").as_deref(), Some("\"2\""));
    let (status, replaced) = read(response).await;
    assert_eq!(status, StatusCode::OK, "{replaced}");
    assert_eq!(replaced["working_hours"][0]["end"], "18:00");
    let response = app
        .request(Method::PUT, &path, &admin)
        .header("If-Match", "\"1\"")
        .json(&office("Berlin office"))
        .send()
        .await
        .unwrap();
    expect_problem(response, StatusCode::PRECONDITION_FAILED).await;
    let response = app
        .request(Method::PUT, "/api/v1/calendars/24x7", &admin)
        .json(&office("24x7"))
        .send()
        .await
        .unwrap();
    expect_problem(response, StatusCode::CONFLICT).await;
    let response = app
        .request(Method::DELETE, "/api/v1/calendars/24x7", &admin)
        .send()
        .await
        .unwrap();
    expect_problem(response, StatusCode::CONFLICT).await;

    // In use by a policy it stays; unused it goes.
    let (status, created) = send(
        &app,
        &admin,
        Method::POST,
        "/api/v1/sla-policies",
        Some(policy("Office", &id)),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let response = app
        .request(Method::DELETE, &path, &admin)
        .send()
        .await
        .unwrap();
    expect_problem(response, StatusCode::CONFLICT).await;
    let (_, spare) = send(
        &app,
        &admin,
        Method::POST,
        "/api/v1/calendars",
        Some(office("Spare")),
    )
    .await;
    let response = app
        .request(
            Method::DELETE,
            &format!("/api/v1/calendars/{}", text(&spare, "id")),
            &admin,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let events: Vec<String> = app
        .events_after(0)
        .await
        .iter()
        .filter_map(|e| e["type"].as_str().map(str::to_owned))
        .collect();
    for expected in [
        "calendar.created",
        "calendar.updated",
        "calendar.deleted",
        "sla_policy.created",
    ] {
        assert!(events.contains(&expected.to_owned()), "{expected} missing");
    }
}

async fn policies_are_checked_and_ordered(app: TestApp) {
    let admin = app.admin_token.clone();
    let (_, agent) = app.user_with_roles("alma", &["agent"]).await;
    let (_, requester) = app.user_with_roles("rita", &["requester"]).await;
    let (status, created) = send(
        &app,
        &admin,
        Method::POST,
        "/api/v1/sla-policies",
        Some(policy("Major incidents", "24x7")),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    // Incidents pause on hold awaiting the caller or a vendor unless told otherwise.
    assert_eq!(
        created["pause_on"],
        json!([{"state": "on_hold", "on_hold_reason": "awaiting_caller"}, {"state": "on_hold", "on_hold_reason": "awaiting_vendor"}])
    );
    assert_eq!(created["warning_percent"], 75);
    let mut first = policy("VIP", "24x7");
    first["precedence"] = json!(1);
    send(
        &app,
        &admin,
        Method::POST,
        "/api/v1/sla-policies",
        Some(first),
    )
    .await;
    let (status, list) = send(&app, &agent, Method::GET, "/api/v1/sla-policies", None).await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<String> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| text(p, "name"))
        .collect();
    assert_eq!(names, ["VIP", "Major incidents"]);

    let marks = app.write_marks().await;
    let mut bad = policy("Bad", "no-such-calendar");
    bad["applies_to"]["priorities"] = json!(["p1", "p3"]);
    let response = app
        .request(Method::POST, "/api/v1/sla-policies", &admin)
        .json(&bad)
        .send()
        .await
        .unwrap();
    let problem = expect_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(error_fields(&problem), ["targets"], "{problem}");
    assert!(text(&problem["errors"][0], "message").contains("p3"));
    let response = app
        .request(Method::POST, "/api/v1/sla-policies", &admin)
        .json(&policy("Bad", "no-such-calendar"))
        .send()
        .await
        .unwrap();
    let problem = expect_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(error_fields(&problem), ["calendar_id"]);
    let mut bad = policy("Bad", "24x7");
    bad["pause_on"] = json!([{"state": "parked"}]);
    bad["unknown"] = json!(true);
    let response = app
        .request(Method::POST, "/api/v1/sla-policies", &admin)
        .json(&bad)
        .send()
        .await
        .unwrap();
    expect_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    let response = app
        .request(Method::POST, "/api/v1/sla-policies", &admin)
        .json(&policy("VIP", "24x7"))
        .send()
        .await
        .unwrap();
    expect_problem(response, StatusCode::CONFLICT).await;
    let response = app
        .request(Method::GET, "/api/v1/sla-policies", &requester)
        .send()
        .await
        .unwrap();
    expect_problem(response, StatusCode::FORBIDDEN).await;
    app.assert_unchanged_since(&marks, "refused policies").await;

    let path = format!("/api/v1/sla-policies/{}", text(&created, "id"));
    let mut changed = policy("Major incidents", "24x7");
    changed["warning_percent"] = json!(80);
    let (status, replaced) = send(&app, &admin, Method::PUT, &path, Some(changed)).await;
    assert_eq!(status, StatusCode::OK, "{replaced}");
    assert_eq!(
        (
            replaced["warning_percent"].clone(),
            replaced["version"].clone()
        ),
        (json!(80), json!(2))
    );
    let history = app.audit_of("sla_policy", &text(&created, "id")).await;
    assert_eq!(history[0]["changes"]["warning_percent"], json!([75, 80]));
    let response = app
        .request(Method::DELETE, &path, &admin)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let response = app
        .request(Method::GET, &path, &agent)
        .send()
        .await
        .unwrap();
    expect_problem(response, StatusCode::NOT_FOUND).await;
}

on_both_backends!(
    calendars_are_versioned_and_checked,
    policies_are_checked_and_ordered,
);
