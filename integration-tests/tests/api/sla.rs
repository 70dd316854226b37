//! Service levels: business calendars (versioned, the built-in 24x7) and SLA policies.

use itsm_integration_tests::reqwest::{Method, StatusCode};
use itsm_integration_tests::serde_json::{json, Value};
use itsm_integration_tests::{
    error_fields, expect_problem, header, on_both_backends, read, TestApp,
};

use crate::incidents::{create_incident, text};

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
    let problem = expect_problem(response, StatusCode::CONFLICT).await;
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

/// Friday 2026-11-27 16:00 in Berlin.
const FRIDAY_1600: &str = "2026-11-27T15:00:00Z";

fn instant(text: &str) -> chrono::DateTime<chrono::Utc> {
    text.parse().expect("an RFC 3339 instant")
}

/// A clock standing still on Friday afternoon in Berlin, and a worker that looks often.
fn friday_afternoon(config: &mut itsm_integration_tests::Config) {
    config.clock = persistence::Clock::manual(instant(FRIDAY_1600));
    config.sla_interval_ms = 50;
}

/// Office hours in Berlin; resolution in 8 business hours, 4 for p1.
async fn office_policy(app: &TestApp) -> Value {
    let admin = app.admin_token.clone();
    let (status, calendar) = send(
        app,
        &admin,
        Method::POST,
        "/api/v1/calendars",
        Some(office("Berlin office")),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{calendar}");
    let targets: Vec<Value> = ["p1", "p2", "p3", "p4", "p5"]
        .iter()
        .map(|priority| {
            let hours = if *priority == "p1" { 4 } else { 8 };
            json!({"metric": "resolution", "priority": priority, "duration_seconds": hours * 3600})
        })
        .collect();
    let (status, policy) = send(
        app,
        &admin,
        Method::POST,
        "/api/v1/sla-policies",
        Some(json!({
            "name": "Office hours",
            "precedence": 1,
            "applies_to": {"ticket_type": "incident"},
            "calendar_id": text(&calendar, "id"),
            "targets": targets,
        })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{policy}");
    policy
}

async fn act(app: &TestApp, token: &str, id: &str, body: Value) -> Value {
    let path = format!("/api/v1/incidents/{id}/transitions");
    let (status, incident) = send(app, token, Method::POST, &path, Some(body.clone())).await;
    assert_eq!(status, StatusCode::OK, "{body}: {incident}");
    incident
}

async fn only_timer(app: &TestApp, token: &str, id: &str) -> Value {
    let path = format!("/api/v1/incidents/{id}/slas");
    let (status, page) = send(app, token, Method::GET, &path, None).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let items = page["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(items.len(), 1, "{page}");
    items[0].clone()
}

async fn timeline_of(app: &TestApp, token: &str, timer: &Value) -> Vec<Value> {
    let path = format!("/api/v1/sla-timers/{}/timeline", text(timer, "id"));
    let (status, page) = send(app, token, Method::GET, &path, None).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    page["items"].as_array().cloned().unwrap_or_default()
}

/// The case: reported Friday 16:00 in Berlin (9-17, 8 business hours), on hold awaiting
/// the caller at 16:30, resumed Monday 10:00, resolved Monday 15:00. A second incident has its
/// priority raised on Monday at 11:00: the time already run is kept against the 4-hour target,
/// which it then breaches, announced once although two nodes run the worker.
async fn a_weekend_on_hold_is_exact(app: TestApp) {
    office_policy(&app).await;
    let (_, agent) = app.user_with_roles("sla-agent", &["agent"]).await;
    let report = json!({"title": "Printer jams", "description": "Every page",
                        "impact": "medium", "urgency": "medium"});
    let plain = create_incident(&app, &agent, report.clone()).await;
    let raised = create_incident(&app, &agent, report).await;
    let ids = [text(&plain, "id"), text(&raised, "id")];
    let timer = only_timer(&app, &agent, &ids[0]).await;
    assert_eq!(
        (&timer["metric"], &timer["state"], &timer["target_seconds"]),
        (&json!("resolution"), &json!("running"), &json!(28800))
    );
    // Friday 16-17 and Monday 9-16.
    assert_eq!(timer["due_at"], "2026-11-30T15:00:00Z");

    for id in &ids {
        act(&app, &agent, id, json!({"action": "start"})).await;
    }
    app.clock.set(instant("2026-11-27T15:30:00Z"));
    for id in &ids {
        act(
            &app,
            &agent,
            id,
            json!({"action": "hold", "on_hold_reason": "awaiting_caller"}),
        )
        .await;
    }
    let paused = only_timer(&app, &agent, &ids[0]).await;
    assert_eq!(
        (
            &paused["state"],
            &paused["elapsed_seconds"],
            &paused["due_at"]
        ),
        (&json!("paused"), &json!(1800), &Value::Null)
    );

    app.clock.set(instant("2026-11-30T09:00:00Z"));
    for id in &ids {
        act(&app, &agent, id, json!({"action": "resume"})).await;
    }
    app.clock.set(instant("2026-11-30T10:00:00Z"));
    let path = format!("/api/v1/incidents/{}", ids[1]);
    let (status, patched) = send(
        &app,
        &agent,
        Method::PATCH,
        &path,
        Some(json!({"impact": "high", "urgency": "high"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    let retargeted = only_timer(&app, &agent, &ids[1]).await;
    assert_eq!(
        (
            &retargeted["elapsed_seconds"],
            &retargeted["target_seconds"],
            &retargeted["due_at"]
        ),
        (&json!(5400), &json!(14400), &json!("2026-11-30T12:30:00Z")),
        "the hour and a half already run counts against the new target"
    );

    // A second node runs the worker too when the breach falls due.
    let beside = app.spawn_beside().await;
    app.clock.set(instant("2026-11-30T14:00:00Z"));
    let resolve = json!({"action": "resolve", "resolution_code": "fixed",
                         "resolution_notes": "New drum"});
    act(&app, &agent, &ids[0], resolve.clone()).await;
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    act(&beside, &agent, &ids[1], resolve).await;

    let done = only_timer(&app, &agent, &ids[0]).await;
    assert_eq!(
        (
            &done["state"],
            &done["elapsed_seconds"],
            &done["paused_seconds"]
        ),
        (&json!("achieved"), &json!(19800), &json!(235800))
    );
    assert_eq!(
        (
            &done["stopped_at"],
            &done["due_at"],
            &done["remaining_seconds"]
        ),
        (
            &json!("2026-11-30T14:00:00Z"),
            &json!("2026-12-01T08:30:00Z"),
            &json!(9000)
        )
    );
    let lines = timeline_of(&app, &agent, &done).await;
    let kinds: Vec<&str> = lines.iter().map(|l| l["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["start", "pause", "resume", "stop"]);
    assert_eq!(lines[1]["reason"], "state on_hold (awaiting_caller)");
    assert_eq!(lines[1]["at"], "2026-11-27T15:30:00Z");
    let history: Vec<Value> = app.audit_of("incident", &ids[0]).await;
    for line in &lines {
        let audit_id = &line["audit_entry_id"];
        assert!(
            history.iter().any(|entry| &entry["id"] == audit_id),
            "{line}"
        );
        assert_eq!(line["calendar_version"], 1);
    }

    let breached = only_timer(&app, &agent, &ids[1]).await;
    assert_eq!(
        (
            &breached["state"],
            &breached["breached_at"],
            &breached["warned_at"]
        ),
        (
            &json!("breached"),
            &json!("2026-11-30T12:30:00Z"),
            &json!("2026-11-30T11:30:00Z")
        )
    );
    let lines = timeline_of(&app, &agent, &breached).await;
    let kinds: Vec<&str> = lines.iter().map(|l| l["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["start", "pause", "resume", "retarget", "warning", "breach", "stop"]
    );
    assert_eq!(lines[3]["reason"], "priority p3 → p1");
    let events = app.events_after(0).await;
    let announced = |kind: &str| {
        events
            .iter()
            .filter(|e| e["type"] == kind && e["data"]["ticket_id"] == ids[1].as_str())
            .count()
    };
    assert_eq!(
        (announced("sla.warning"), announced("sla.breached")),
        (1, 1)
    );

    // Lists find the breach, and the timers soonest due first.
    let breached_list = app.list_all("/api/v1/incidents?sla_breached=true").await;
    let numbers: Vec<&Value> = breached_list.iter().map(|i| &i["id"]).collect();
    assert_eq!(numbers, [&json!(ids[1])]);
    let breached_timers = app.list_all("/api/v1/sla-timers?state=breached").await;
    assert_eq!(breached_timers.len(), 1);
    // A stopped timer is not recalculated.
    let path = format!("/api/v1/sla-timers/{}/recalculate", text(&done, "id"));
    let response = app.admin(Method::POST, &path).send().await.unwrap();
    expect_problem(response, StatusCode::CONFLICT).await;

    // Reopened on Tuesday 09:00, the first incident starts a new resolution cycle; the first
    // timer keeps what it achieved.
    app.clock.set(instant("2026-12-01T08:00:00Z"));
    act(&app, &agent, &ids[0], json!({"action": "reopen"})).await;
    let path = format!("/api/v1/incidents/{}/slas", ids[0]);
    let (status, page) = send(&app, &agent, Method::GET, &path, None).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let timers = page["items"].as_array().unwrap();
    let states: Vec<(&Value, &Value)> = timers
        .iter()
        .map(|t| (&t["state"], &t["started_at"]))
        .collect();
    assert_eq!(
        states,
        [
            (&json!("achieved"), &json!("2026-11-27T15:00:00Z")),
            (&json!("running"), &json!("2026-12-01T08:00:00Z")),
        ]
    );
    let lines = timeline_of(&app, &agent, &timers[1]).await;
    assert_eq!(
        lines[0]["reason"],
        "ticket reopened; policy Office hours applies"
    );
}

/// A warning escalates as the policy says (notify a group, hand the ticket to another);
/// a calendar edit reaches a running timer only when it is recalculated; deleting a policy
/// cancels its timers; problems have timers too.
async fn escalations_recalculation_and_lists(app: TestApp) {
    let admin = app.admin_token.clone();
    let (_, agent) = app.user_with_roles("sla-agent-2", &["agent"]).await;
    let watchers = app.group("SLA watchers").await;
    let experts = app.group("SLA experts").await;
    let policy = office_policy(&app).await;
    let mut changed = policy.clone();
    for field in ["id", "created_at", "updated_at", "version"] {
        changed.as_object_mut().unwrap().remove(field);
    }
    changed["escalations"] = json!([
        {"threshold": "warning", "action": "notify", "group": text(&watchers, "id")},
        {"threshold": "warning", "metric": "resolution", "action": "reassign", "group": text(&experts, "id")},
    ]);
    let policy_path = format!("/api/v1/sla-policies/{}", text(&policy, "id"));
    let (status, body) = send(
        &app,
        &admin,
        Method::PUT,
        &policy_path,
        Some(changed.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let mut unknown_group = changed.clone();
    unknown_group["escalations"][0]["group"] = json!("no-such-group");
    let (status, problem) =
        send(&app, &admin, Method::PUT, &policy_path, Some(unknown_group)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    assert_eq!(error_fields(&problem), ["escalations[0].group"]);

    let incident = create_incident(
        &app,
        &agent,
        json!({"title": "VPN down", "description": "For all"}),
    )
    .await;
    let id = text(&incident, "id");
    let timer = only_timer(&app, &agent, &id).await;

    // The calendar becomes 8-16: the running timer keeps version 1 until recalculated.
    let calendar_path = format!("/api/v1/calendars/{}", text(&timer, "calendar_id"));
    let mut shorter = office("Berlin office");
    for range in shorter["working_hours"].as_array_mut().unwrap() {
        range["start"] = json!("08:00");
        range["end"] = json!("16:00");
    }
    let (status, body) = send(&app, &admin, Method::PUT, &calendar_path, Some(shorter)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        only_timer(&app, &agent, &id).await["due_at"],
        "2026-11-30T15:00:00Z"
    );
    let recalculate = format!("/api/v1/sla-timers/{}/recalculate", text(&timer, "id"));
    let (status, _) = send(&app, &agent, Method::POST, &recalculate, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, recalculated) = send(&app, &admin, Method::POST, &recalculate, None).await;
    assert_eq!(status, StatusCode::OK, "{recalculated}");
    // Friday 16:00 is now after hours: Monday 8-16 is the whole target.
    assert_eq!(
        (
            &recalculated["calendar_version"],
            &recalculated["elapsed_seconds"],
            &recalculated["due_at"]
        ),
        (&json!(2), &json!(0), &json!("2026-11-30T15:00:00Z"))
    );
    let audit = app.audit_of("sla_timer", &text(&timer, "id")).await;
    assert_eq!(audit[0]["action"], "recalculate");
    assert_eq!(audit[0]["changes"]["calendar_version"], json!([1, 2]));

    // Monday 14:00 Berlin: six of eight hours ran, the warning (75%) fell due.
    app.clock.set(instant("2026-11-30T13:00:00Z"));
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let warned = only_timer(&app, &agent, &id).await;
    assert_eq!(warned["warned_at"], "2026-11-30T13:00:00Z");
    let escalated: Vec<Value> = app
        .events_after(0)
        .await
        .into_iter()
        .filter(|e| e["type"] == "sla.escalated")
        .collect();
    assert_eq!(escalated.len(), 2, "{escalated:?}");
    assert_eq!(escalated[0]["data"]["group"], text(&watchers, "id"));
    let handed = crate::incidents::fetch(&app, &admin, &id).await;
    assert_eq!(handed["assignment_group"], text(&experts, "id"));
    let history = app.audit_of("incident", &id).await;
    assert_eq!(history[0]["action"], "sla_escalation");

    // Lists: due before Monday 16:30 finds it, before Monday 15:00 not.
    let due_soon = app
        .list_all("/api/v1/incidents?sla_due_before=2026-11-30T15:30:00Z")
        .await;
    assert_eq!(due_soon.len(), 1);
    let not_yet = app
        .list_all("/api/v1/incidents?sla_due_before=2026-11-30T14:00:00Z")
        .await;
    assert!(not_yet.is_empty());
    let timers = app
        .list_all("/api/v1/sla-timers?ticket_type=incident&state=running")
        .await;
    assert_eq!(timers.len(), 1);
    let (status, problem) = send(
        &app,
        &admin,
        Method::GET,
        "/api/v1/sla-timers?ticket_type=change",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");

    // Problems: a policy of their own, a response timer stopped by the assessment.
    let calendar_id = text(&timer, "calendar_id");
    let targets: Vec<Value> = ["p1", "p2", "p3", "p4", "p5"]
        .iter()
        .flat_map(|p| {
            [
                json!({"metric": "response", "priority": p, "duration_seconds": 3600}),
                json!({"metric": "resolution", "priority": p, "duration_seconds": 86400}),
            ]
        })
        .collect();
    let (status, body) = send(
        &app,
        &admin,
        Method::POST,
        "/api/v1/sla-policies",
        Some(json!({
            "name": "Problems", "precedence": 5, "applies_to": {"ticket_type": "problem"},
            "calendar_id": calendar_id, "targets": targets,
        })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (_, manager) = app
        .user_with_roles("sla-manager", &["problem_manager"])
        .await;
    let (status, problem) = send(
        &app,
        &manager,
        Method::POST,
        "/api/v1/problems",
        Some(json!({"title": "VPN drops", "description": "Daily"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{problem}");
    let problem_id = text(&problem, "id");
    let path = format!("/api/v1/problems/{problem_id}/transitions");
    let (status, body) = send(
        &app,
        &manager,
        Method::POST,
        &path,
        Some(json!({"action": "assess"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, page) = send(
        &app,
        &manager,
        Method::GET,
        &format!("/api/v1/problems/{problem_id}/slas"),
        None,
    )
    .await;
    let states: Vec<(&str, &str)> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["metric"].as_str().unwrap(), t["state"].as_str().unwrap()))
        .collect();
    assert_eq!(
        states,
        [("resolution", "running"), ("response", "achieved")]
    );

    // Deleting the incident policy cancels its running timer, saying why.
    let response = app
        .admin(Method::DELETE, &policy_path)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let canceled = only_timer(&app, &agent, &id).await;
    assert_eq!(canceled["state"], "canceled");
    let lines = timeline_of(&app, &agent, &canceled).await;
    let last = lines.last().unwrap();
    assert_eq!(
        (&last["kind"], &last["reason"]),
        (&json!("cancel"), &json!("policy Office hours deleted"))
    );
}

/// Editing a policy moves its running timers at once: the new target applies to the business
/// time already run and paused, and a ticket the policy no longer covers loses its timer. A
/// stopped timer keeps what it achieved.
async fn an_edited_policy_retargets_its_running_timers(app: TestApp) {
    let admin = app.admin_token.clone();
    let policy = office_policy(&app).await;
    let (_, agent) = app.user_with_roles("sla-editor", &["agent"]).await;
    let report = json!({"title": "VPN drops", "description": "Hourly",
                        "impact": "medium", "urgency": "medium"});
    let running = create_incident(&app, &agent, report.clone()).await;
    let resolved = create_incident(&app, &agent, report).await;
    let (running, resolved) = (text(&running, "id"), text(&resolved, "id"));
    app.clock.set(instant("2026-11-27T15:30:00Z"));
    act(&app, &agent, &resolved, json!({"action": "start"})).await;
    act(
        &app,
        &agent,
        &resolved,
        json!({"action": "resolve", "resolution_code": "fixed", "resolution_notes": "Reset"}),
    )
    .await;
    let achieved = only_timer(&app, &agent, &resolved).await;
    assert_eq!(achieved["state"], "achieved", "{achieved}");

    // Friday 16:30 (Berlin): half an hour run; p3 now has 2 business hours, not 8.
    let mut definition = policy.clone();
    for field in ["id", "version", "created_at", "updated_at"] {
        definition.as_object_mut().unwrap().remove(field);
    }
    for target in definition["targets"].as_array_mut().unwrap() {
        if target["priority"] != "p1" {
            target["duration_seconds"] = json!(7200);
        }
    }
    let path = format!("/api/v1/sla-policies/{}", text(&policy, "id"));
    let (status, edited) = send(&app, &admin, Method::PUT, &path, Some(definition.clone())).await;
    assert_eq!(status, StatusCode::OK, "{edited}");

    let timer = only_timer(&app, &agent, &running).await;
    assert_eq!(
        (
            &timer["state"],
            &timer["target_seconds"],
            &timer["elapsed_seconds"],
            &timer["due_at"]
        ),
        (
            &json!("running"),
            &json!(7200),
            &json!(1800),
            // Half an hour left on Friday, the other hour from Monday 9:00 (Berlin).
            &json!("2026-11-30T09:00:00Z")
        ),
        "{timer}"
    );
    let timeline = timeline_of(&app, &agent, &timer).await;
    let last = timeline.last().expect("a line");
    assert_eq!(
        (&last["kind"], &last["reason"], &last["target_seconds"]),
        (
            &json!("retarget"),
            &json!("policy Office hours edited"),
            &json!(7200)
        ),
        "{timeline:?}"
    );
    let unchanged = only_timer(&app, &agent, &resolved).await;
    assert_eq!(
        (&unchanged["state"], &unchanged["target_seconds"]),
        (&json!("achieved"), &json!(28800))
    );

    // The policy now covers p1 only: the p3 incident's timer is canceled, with the reason.
    definition["applies_to"]["priorities"] = json!(["p1"]);
    definition["targets"] =
        json!([{"metric": "resolution", "priority": "p1", "duration_seconds": 3600}]);
    let (status, edited) = send(&app, &admin, Method::PUT, &path, Some(definition)).await;
    assert_eq!(status, StatusCode::OK, "{edited}");
    let canceled = only_timer(&app, &agent, &running).await;
    assert_eq!(canceled["state"], "canceled", "{canceled}");
    let timeline = timeline_of(&app, &agent, &canceled).await;
    assert_eq!(
        timeline.last().unwrap()["reason"],
        "no policy applies any more",
        "{timeline:?}"
    );
}

/// Seeding reports each incident and works it in the same unit of work, so the timers its
/// report started (held back until the batch commits) are read back before the batch ends:
/// every incident gets exactly one timer per metric, and one that was resolved in that unit
/// has its resolution timer stopped, not a second one started.
async fn timers_started_in_a_batch_are_seen_by_its_later_work(app: TestApp) {
    let db = persistence::Database::open(&app.database).expect("open the test database");
    itsm_api::seed::sla_policy(&db, 3600).await.expect("policy");
    itsm_api::seed::seed(&db, 150).await.expect("seed");
    let timers = app.list_all("/api/v1/sla-timers").await;
    let mut per_ticket: std::collections::HashMap<(String, String), Vec<&Value>> =
        std::collections::HashMap::new();
    for timer in &timers {
        per_ticket
            .entry((text(timer, "ticket_id"), text(timer, "metric")))
            .or_default()
            .push(timer);
    }
    let incidents = app.list_all("/api/v1/incidents").await;
    assert_eq!(incidents.len(), 150);
    let mut resolved = 0;
    for incident in &incidents {
        let id = text(incident, "id");
        let resolution = &per_ticket
            .get(&(id.clone(), "resolution".to_owned()))
            .unwrap_or_else(|| panic!("no resolution timer: {incident}"));
        assert_eq!(resolution.len(), 1, "{incident}: {resolution:?}");
        if matches!(text(incident, "state").as_str(), "resolved" | "closed") {
            resolved += 1;
            assert!(
                !resolution[0]["stopped_at"].is_null(),
                "{incident}: {resolution:?}"
            );
            assert_eq!(resolution[0]["state"], "achieved", "{resolution:?}");
        }
    }
    assert!(resolved > 0, "the seed resolves some incidents");
    assert!(
        per_ticket.values().all(|timers| timers.len() == 1),
        "{per_ticket:?}"
    );
}

on_both_backends!(
    calendars_are_versioned_and_checked,
    policies_are_checked_and_ordered,
    a_weekend_on_hold_is_exact with friday_afternoon,
    escalations_recalculation_and_lists with friday_afternoon,
    an_edited_policy_retargets_its_running_timers with friday_afternoon,
    timers_started_in_a_batch_are_seen_by_its_later_work,
);
