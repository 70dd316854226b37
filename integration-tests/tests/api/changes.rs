//! Change enablement: risk, CAB approvals with a quorum, conflicts through the CMDB, freeze
//! windows and emergency overrides, standard changes from templates, review and closure.

use itsm_integration_tests::reqwest::{Method, StatusCode};
use itsm_integration_tests::serde_json::{json, Value};
use itsm_integration_tests::{error_fields, expect_problem, on_both_backends, read, TestApp};

use crate::incidents::{actions, create_incident, text};

const CHANGES: &str = "/api/v1/changes";

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
    read(request.send().await.expect("request")).await
}

async fn ok(app: &TestApp, token: &str, method: Method, path: &str, body: Option<Value>) -> Value {
    let (status, value) = send(app, token, method.clone(), path, body).await;
    assert!(status.is_success(), "{method} {path} -> {status}: {value}");
    value
}

async fn act(app: &TestApp, token: &str, change: &str, body: Value) -> (StatusCode, Value) {
    send(
        app,
        token,
        Method::POST,
        &format!("{CHANGES}/{change}/transitions"),
        Some(body),
    )
    .await
}

async fn acted(app: &TestApp, token: &str, change: &str, body: Value) -> Value {
    let (status, value) = act(app, token, change, body.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body} on {change}: {value}");
    value
}

/// A configuration item made by the admin.
async fn item(app: &TestApp, name: &str, class: &str, criticality: &str) -> String {
    let response = app
        .admin(Method::POST, "/api/v1/configuration-items")
        .json(&json!({"name": name, "class": class, "criticality": criticality, "attributes": {}}))
        .send()
        .await
        .unwrap();
    let (status, body) = read(response).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    text(&body, "id")
}

async fn depends_on(app: &TestApp, source: &str, target: &str) {
    let response = app
        .admin(Method::POST, "/api/v1/ci-relationships")
        .json(&json!({"source_id": source, "type": "depends_on", "target_id": target}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
}

/// The orders stack: a critical database, an application depending on it, and the web shop
/// service depending on the application.
struct Stack {
    db: String,
    app: String,
    shop: String,
}

async fn stack(app: &TestApp) -> Stack {
    let db = item(app, "orders-db", "database", "critical").await;
    let application = item(app, "orders-app", "application", "high").await;
    let shop = item(app, "Web shop", "business_service", "critical").await;
    depends_on(app, &application, &db).await;
    depends_on(app, &shop, &application).await;
    Stack {
        db,
        app: application,
        shop,
    }
}

async fn add_member(app: &TestApp, group: &str, user: &Value) {
    let response = app
        .admin(Method::POST, &format!("/api/v1/groups/{group}/members"))
        .json(&json!({"user_id": user["id"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
}

async fn policy(app: &TestApp, manager: &str, body: Value) -> Value {
    let (status, value) = send(
        app,
        manager,
        Method::POST,
        "/api/v1/change-approval-policies",
        Some(body),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{value}");
    value
}

/// Tomorrow-ish: `hours` from now, as RFC 3339.
fn at(hours: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::hours(hours)).to_rfc3339()
}

const CAREFUL: &str = r#"{"outage_required": true, "tested": true, "backout_tested": true,
    "done_before": false, "inside_business_hours": false}"#;

fn careful() -> Value {
    itsm_integration_tests::serde_json::from_str(CAREFUL).unwrap()
}

async fn new_change(app: &TestApp, token: &str, body: Value) -> Value {
    let (status, value) = send(app, token, Method::POST, CHANGES, Some(body.clone())).await;
    assert_eq!(status, StatusCode::CREATED, "{body}: {value}");
    value
}

fn event_types(events: &[Value], id: &str) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["entity_id"] == id)
        .filter_map(|e| e["type"].as_str().map(str::to_owned))
        .collect()
}

/// A normal high-risk change on a database collects a CAB quorum and is scheduled; a second
/// change on an application depending on the database shows the conflict with its path.
async fn cab_quorum_schedules_and_conflicts_show_their_path(app: TestApp) {
    let s = stack(&app).await;
    let (_, carol) = app.user_with_roles("carol", &["change_manager"]).await;
    let (_, agent) = app.user_with_roles("andy", &["agent"]).await;
    let cab = app.group("CAB").await;
    let cab_id = text(&cab, "id");
    let mut members = Vec::new();
    for name in ["cab1", "cab2", "cab3"] {
        let (user, token) = app.user_with_roles(name, &["change_manager"]).await;
        add_member(&app, &cab_id, &user).await;
        members.push((text(&user, "id"), token));
    }
    policy(
        &app,
        &carol,
        json!({"name": "CAB", "precedence": 10, "change_types": ["normal"],
        "risks": ["high", "very_high"], "approvers": [{"group": cab_id}], "quorum": 2}),
    )
    .await;
    policy(
        &app,
        &carol,
        json!({"name": "One manager", "precedence": 20,
        "approvers": [{"role": "change_manager"}]}),
    )
    .await;

    let (start, end) = (at(24), at(28));
    let first = new_change(
        &app,
        &agent,
        json!({
            "title": "Upgrade the orders database", "description": "PostgreSQL 16 to 17",
            "backout_plan": "Restore the snapshot", "risk_answers": careful(),
            "configuration_items": [s.db], "planned_start": start, "planned_end": end,
        }),
    )
    .await;
    assert_eq!(first["type"], "normal");
    assert_eq!(first["risk"], "high", "{}", first["risk_assessment"]);
    let contributions = first["risk_assessment"]["contributions"]
        .as_array()
        .unwrap();
    let services = contributions
        .iter()
        .find(|c| c["factor"] == "dependent_services")
        .unwrap();
    assert_eq!(services["answer"], "1 business services");
    let number = text(&first, "number");
    acted(&app, &agent, &number, json!({"action": "assess"})).await;
    let asked = acted(
        &app,
        &agent,
        &number,
        json!({"action": "request_authorization"}),
    )
    .await;
    assert_eq!(asked["state"], "authorize");

    let approvals = ok(
        &app,
        &agent,
        Method::GET,
        &format!("{CHANGES}/{number}/approvals"),
        None,
    )
    .await;
    assert_eq!(approvals["quorum"], 2);
    let items = approvals["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 3, "{approvals}");
    let approval_of = |user: &str| -> String {
        text(items.iter().find(|a| a["approver"] == user).unwrap(), "id")
    };
    let decision = |approval: &str| format!("{CHANGES}/{number}/approvals/{approval}/decision");

    // What waits on cab1.
    let waiting = ok(
        &app,
        &members[0].1,
        Method::GET,
        "/api/v1/me/approvals",
        None,
    )
    .await;
    assert_eq!(waiting["items"][0]["change_number"], number.as_str());

    // Deciding someone else's approval: 403, and nothing changes.
    let response = app
        .request(
            Method::POST,
            &decision(&approval_of(&members[1].0)),
            &members[0].1,
        )
        .json(&json!({"decision": "approve"}))
        .send()
        .await
        .unwrap();
    expect_problem(response, StatusCode::FORBIDDEN).await;

    let first_vote = ok(
        &app,
        &members[0].1,
        Method::POST,
        &decision(&approval_of(&members[0].0)),
        Some(json!({"decision": "approve"})),
    )
    .await;
    assert_eq!(first_vote["approval"]["state"], "approved");
    assert_eq!(first_vote["change"]["state"], "authorize");
    // Deciding twice: 409.
    let response = app
        .request(
            Method::POST,
            &decision(&approval_of(&members[0].0)),
            &members[0].1,
        )
        .json(&json!({"decision": "reject", "comment": "changed my mind"}))
        .send()
        .await
        .unwrap();
    expect_problem(response, StatusCode::CONFLICT).await;

    let quorum = ok(
        &app,
        &members[2].1,
        Method::POST,
        &decision(&approval_of(&members[2].0)),
        Some(json!({"decision": "approve", "comment": "Go"})),
    )
    .await;
    assert_eq!(quorum["change"]["state"], "scheduled", "{quorum}");
    assert!(quorum["change"]["authorized_at"].is_string());
    assert_eq!(quorum["change"]["conflicts"], json!([]));
    let approvals = ok(
        &app,
        &agent,
        Method::GET,
        &format!("{CHANGES}/{number}/approvals"),
        None,
    )
    .await;
    let states: Vec<&str> = approvals["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["state"].as_str().unwrap())
        .collect();
    assert_eq!(states.iter().filter(|s| **s == "approved").count(), 2);
    assert_eq!(states.iter().filter(|s| **s == "withdrawn").count(), 1);

    // The application change overlapping it.
    let second = new_change(
        &app,
        &agent,
        json!({
            "title": "Deploy orders-app 5.2", "risk_answers": careful(),
            "configuration_items": [s.app], "planned_start": at(26), "planned_end": at(30),
        }),
    )
    .await;
    let second_number = text(&second, "number");
    let report = ok(
        &app,
        &agent,
        Method::GET,
        &format!("{CHANGES}/{second_number}/conflicts"),
        None,
    )
    .await;
    let conflicts = report["conflicts"].as_array().unwrap();
    assert_eq!(conflicts.len(), 1, "{report}");
    assert_eq!(conflicts[0]["number"], number.as_str());
    assert_eq!(
        conflicts[0]["links"][0]["configuration_item"],
        s.db.as_str()
    );
    assert_eq!(conflicts[0]["links"][0]["link"], "ours_depends_on_it");
    assert_eq!(conflicts[0]["links"][0]["path"], json!([s.app, s.db]));
    // And the first sees nothing: the second is not on the schedule.
    let report = ok(
        &app,
        &agent,
        Method::GET,
        &format!("{CHANGES}/{number}/conflicts"),
        None,
    )
    .await;
    assert_eq!(report["conflicts"], json!([]));
    // The calendar of the service shows the scheduled change.
    let calendar = ok(
        &app,
        &agent,
        Method::GET,
        &format!(
            "{CHANGES}/calendar?from={}&to={}&service={}",
            urlencode(&at(0)),
            urlencode(&at(72)),
            s.shop
        ),
        None,
    )
    .await;
    let numbers: Vec<&str> = calendar["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["number"].as_str().unwrap())
        .collect();
    assert!(numbers.contains(&number.as_str()), "{calendar}");

    let types = event_types(&app.events_after(0).await, &text(&first, "id"));
    for expected in [
        "change.created",
        "change.approval_requested",
        "change.approved",
        "change.scheduled",
        "change.state_changed",
    ] {
        assert!(
            types.iter().any(|t| t == expected),
            "{expected} missing: {types:?}"
        );
    }
}

fn urlencode(value: &str) -> String {
    value.replace('+', "%2B").replace(':', "%3A")
}

/// Any rejection returns the change to `new` with the rejection; a reject needs a comment.
async fn a_rejection_returns_the_change_to_new(app: TestApp) {
    let (_, carol) = app.user_with_roles("carol", &["change_manager"]).await;
    let (dave, dave_token) = app.user_with_roles("dave", &["change_manager"]).await;
    let (_, agent) = app.user_with_roles("andy", &["agent"]).await;
    policy(
        &app,
        &carol,
        json!({"name": "Dave", "approvers": [{"user": dave["id"]}]}),
    )
    .await;
    let change = new_change(
        &app,
        &agent,
        json!({"title": "Rotate certificates",
        "planned_start": at(24), "planned_end": at(25)}),
    )
    .await;
    let number = text(&change, "number");
    acted(&app, &agent, &number, json!({"action": "assess"})).await;
    acted(
        &app,
        &agent,
        &number,
        json!({"action": "request_authorization"}),
    )
    .await;
    let approvals = ok(
        &app,
        &agent,
        Method::GET,
        &format!("{CHANGES}/{number}/approvals"),
        None,
    )
    .await;
    let approval = text(&approvals["items"][0], "id");
    let path = format!("{CHANGES}/{number}/approvals/{approval}/decision");
    let response = app
        .request(Method::POST, &path, &dave_token)
        .json(&json!({"decision": "reject"}))
        .send()
        .await
        .unwrap();
    let problem = expect_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(error_fields(&problem), ["comment"]);
    let rejected = ok(
        &app,
        &dave_token,
        Method::POST,
        &path,
        Some(json!({"decision": "reject", "comment": "No tested backout plan"})),
    )
    .await;
    assert_eq!(rejected["change"]["state"], "new");
    assert_eq!(
        rejected["change"]["rejection"]["comment"],
        "No tested backout plan"
    );
    let types = event_types(&app.events_after(0).await, &text(&change, "id"));
    assert!(types.iter().any(|t| t == "change.rejected"), "{types:?}");
    // Asked again: a new round.
    acted(&app, &agent, &number, json!({"action": "assess"})).await;
    let again = acted(
        &app,
        &agent,
        &number,
        json!({"action": "request_authorization"}),
    )
    .await;
    assert_eq!(again["approval_round"], 2);
}

/// A freeze refuses a normal change, naming every window hit and every item, and admits an
/// emergency change with a reason; the emergency change implements retrospectively and is
/// reviewed only once authorised.
async fn freezes_refuse_normal_changes_and_admit_emergencies_with_a_reason(app: TestApp) {
    let s = stack(&app).await;
    let (_, carol) = app.user_with_roles("carol", &["change_manager"]).await;
    let (_, agent) = app.user_with_roles("andy", &["agent"]).await;
    policy(
        &app,
        &carol,
        json!({"name": "Emergency", "change_types": ["emergency"], "precedence": 1,
        "approvers": [{"role": "change_manager"}]}),
    )
    .await;
    policy(
        &app,
        &carol,
        json!({"name": "Normal", "change_types": ["normal"],
        "approvers": [{"role": "change_manager"}]}),
    )
    .await;
    for (name, scope) in [
        ("Black Friday", json!({"services": [s.shop]})),
        ("Year end", json!({"everything": true})),
    ] {
        let (status, body) = send(&app, &carol, Method::POST, "/api/v1/change-freeze-windows",
            Some(json!({"name": name, "reason": "Peak trading", "start": at(10), "end": at(100), "scope": scope}))).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    // A freeze elsewhere in time is not hit.
    send(&app, &carol, Method::POST, "/api/v1/change-freeze-windows",
        Some(json!({"name": "Later", "reason": "Audit", "start": at(200), "end": at(300), "scope": {"everything": true}}))).await;

    let normal = new_change(
        &app,
        &agent,
        json!({"title": "Tune the database",
        "configuration_items": [s.db], "planned_start": at(24), "planned_end": at(26)}),
    )
    .await;
    let number = text(&normal, "number");
    acted(&app, &agent, &number, json!({"action": "assess"})).await;
    let (status, problem) = act(
        &app,
        &agent,
        &number,
        json!({"action": "request_authorization",
        "override_reason": "please"}),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    let windows = problem["freeze_windows"].as_array().unwrap();
    let names: Vec<&str> = windows
        .iter()
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Black Friday", "Year end"]);
    assert_eq!(windows[0]["items"][0]["configuration_item"], s.db.as_str());
    assert_eq!(windows[0]["items"][0]["path"], json!([s.shop, s.app, s.db]));
    assert!(
        problem["detail"].as_str().unwrap().contains("Black Friday"),
        "{problem}"
    );
    let current = ok(
        &app,
        &agent,
        Method::GET,
        &format!("{CHANGES}/{number}"),
        None,
    )
    .await;
    assert_eq!(current["state"], "assess");
    let conflicts = ok(
        &app,
        &agent,
        Method::GET,
        &format!("{CHANGES}/{number}/conflicts"),
        None,
    )
    .await;
    assert_eq!(conflicts["freeze_windows"].as_array().unwrap().len(), 2);

    let emergency = new_change(
        &app,
        &agent,
        json!({"type": "emergency", "title": "Patch the database now",
        "configuration_items": [s.db], "planned_start": at(24), "planned_end": at(26)}),
    )
    .await;
    let enumber = text(&emergency, "number");
    let (status, _) = act(
        &app,
        &agent,
        &enumber,
        json!({"action": "request_authorization"}),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let entered = acted(
        &app,
        &agent,
        &enumber,
        json!({"action": "request_authorization",
        "override_reason": "Actively exploited vulnerability"}),
    )
    .await;
    assert_eq!(entered["state"], "authorize");
    assert_eq!(
        entered["freeze_override_reason"],
        "Actively exploited vulnerability"
    );
    let types = event_types(&app.events_after(0).await, &text(&emergency, "id"));
    assert!(
        types.iter().any(|t| t == "change.freeze_overridden"),
        "{types:?}"
    );

    // Implemented before authorisation: retrospective; review waits for the authorisation.
    let implementing = acted(&app, &agent, &enumber, json!({"action": "implement"})).await;
    assert_eq!(implementing["retrospective"], true);
    let review = json!({"action": "review", "outcome": "successful", "actual_end": at(1)});
    let (status, refused) = act(&app, &agent, &enumber, review.clone()).await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    let approvals = ok(
        &app,
        &carol,
        Method::GET,
        &format!("{CHANGES}/{enumber}/approvals"),
        None,
    )
    .await;
    let carol_id = app.id_of(&carol).await;
    let mine = approvals["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["approver"] == carol_id.as_str())
        .unwrap();
    let decided = ok(
        &app,
        &carol,
        Method::POST,
        &format!(
            "{CHANGES}/{enumber}/approvals/{}/decision",
            text(mine, "id")
        ),
        Some(json!({"decision": "approve"})),
    )
    .await;
    assert_eq!(decided["change"]["state"], "implement");
    let reviewed = acted(&app, &agent, &enumber, review).await;
    assert_eq!(reviewed["state"], "review");
}

/// A standard change from a template skips authorisation; one outside the template's items
/// or above its risk cap is refused naming them; a standard change needs a window to schedule.
async fn standard_changes_come_from_templates_and_skip_authorisation(app: TestApp) {
    let s = stack(&app).await;
    let (_, carol) = app.user_with_roles("carol", &["change_manager"]).await;
    let (_, agent) = app.user_with_roles("andy", &["agent"]).await;
    let (status, template) = send(&app, &carol, Method::POST, "/api/v1/standard-change-templates", Some(json!({
        "name": "Restart orders-app", "risk_cap": "high",
        "fields": {"implementation_plan": "systemctl restart orders", "backout_plan": "None needed",
                   "risk_answers": {"outage_required": false, "tested": true, "backout_tested": true,
                                    "done_before": true, "inside_business_hours": false}},
        "configuration_items": [s.app],
    }))).await;
    assert_eq!(status, StatusCode::CREATED, "{template}");
    let template_id = text(&template, "id");
    let (status, low_cap) = send(
        &app,
        &carol,
        Method::POST,
        "/api/v1/standard-change-templates",
        Some(json!({
            "name": "Low cap", "risk_cap": "low", "configuration_items": [s.app, s.db],
        })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{low_cap}");

    let change = new_change(
        &app,
        &agent,
        json!({"type": "standard", "template": template_id,
        "title": "Restart orders-app", "configuration_items": [s.app]}),
    )
    .await;
    assert_eq!(change["implementation_plan"], "systemctl restart orders");
    assert_eq!(change["template"], template_id.as_str());
    assert_eq!(actions(&change), ["schedule", "cancel", "assign"]);
    let number = text(&change, "number");
    let (status, problem) = act(&app, &agent, &number, json!({"action": "schedule"})).await;
    // The window is the change's, not the transition's: a change without one is in no state
    // to be scheduled (409, with what it may do), not invalid input.
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    assert!(
        text(&problem, "detail").contains("planned_start and planned_end"),
        "{problem}"
    );
    assert!(problem["allowed_actions"].is_array(), "{problem}");
    let (status, _) = send(
        &app,
        &agent,
        Method::PATCH,
        &format!("{CHANGES}/{number}"),
        Some(json!({"planned_start": at(5), "planned_end": at(6)})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let scheduled = acted(&app, &agent, &number, json!({"action": "schedule"})).await;
    assert_eq!(scheduled["state"], "scheduled");
    assert_eq!(scheduled["conflicts"], json!([]));

    // Outside its items, above its cap, or fixed fields: the stored template is what the
    // request conflicts with (409 naming them); no template at all is invalid (422).
    let (status, problem) = send(
        &app,
        &agent,
        Method::POST,
        CHANGES,
        Some(json!({"type": "standard",
        "template": template_id, "title": "Restart", "configuration_items": [s.app, s.db]})),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    assert!(
        text(&problem, "detail").starts_with("configuration_items[1]:"),
        "{problem}"
    );
    let (status, problem) = send(
        &app,
        &agent,
        Method::POST,
        CHANGES,
        Some(json!({"type": "standard",
        "template": text(&low_cap, "id"), "title": "Restart", "configuration_items": [s.db]})),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    assert!(text(&problem, "detail").starts_with("risk:"), "{problem}");
    let (status, problem) = send(
        &app,
        &agent,
        Method::POST,
        CHANGES,
        Some(json!({"type": "standard",
        "template": template_id, "title": "Restart", "backout_plan": "Other"})),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    assert!(
        text(&problem, "detail").starts_with("backout_plan:"),
        "{problem}"
    );
    let (status, problem) = send(
        &app,
        &agent,
        Method::POST,
        CHANGES,
        Some(json!({"type": "standard", "title": "No template"})),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error_fields(&problem), ["template"]);

    // A scheduled change on the same item, scheduled over it, is a conflict a manager
    // acknowledges.
    let second = new_change(&app, &carol, json!({"type": "standard", "template": template_id,
        "title": "Restart again", "configuration_items": [s.app], "planned_start": at(5), "planned_end": at(7)})).await;
    let (status, _) = act(
        &app,
        &agent,
        &text(&second, "number"),
        json!({"action": "schedule", "acknowledge_conflicts": true}),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let acknowledged = acted(
        &app,
        &carol,
        &text(&second, "number"),
        json!({"action": "schedule", "acknowledge_conflicts": true}),
    )
    .await;
    assert_eq!(acknowledged["conflicts"][0]["number"], number.as_str());
    assert_eq!(
        acknowledged["conflicts"][0]["links"][0]["link"],
        "same_item"
    );
    let types = event_types(&app.events_after(0).await, &text(&second, "id"));
    assert!(
        types.iter().any(|t| t == "change.conflict_acknowledged"),
        "{types:?}"
    );

    // The calendar of the item lists both; moving a scheduled change into a freeze later is
    // refused like scheduling into it.
    let calendar = ok(
        &app,
        &agent,
        Method::GET,
        &format!(
            "{CHANGES}/calendar?from={}&to={}&configuration_item={}",
            urlencode(&at(0)),
            urlencode(&at(24)),
            s.app
        ),
        None,
    )
    .await;
    assert_eq!(
        calendar["changes"].as_array().unwrap().len(),
        2,
        "{calendar}"
    );
    let (status, _) = send(
        &app,
        &carol,
        Method::POST,
        "/api/v1/change-freeze-windows",
        Some(
            json!({"name": "Audit", "reason": "Auditors on site", "start": at(40), "end": at(50),
                    "scope": {"services": [s.shop]}}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, refused) = send(
        &app,
        &agent,
        Method::PATCH,
        &format!("{CHANGES}/{number}"),
        Some(json!({"planned_start": at(41), "planned_end": at(42)})),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    assert_eq!(refused["freeze_windows"][0]["name"], "Audit");
    assert_eq!(
        refused["freeze_windows"][0]["items"][0]["path"],
        json!([s.shop, s.app])
    );
    let unchanged = ok(
        &app,
        &agent,
        Method::GET,
        &format!("{CHANGES}/{number}"),
        None,
    )
    .await;
    assert_eq!(unchanged["planned_start"], scheduled["planned_start"]);
}

/// Review records a failed outcome with the incident it caused; closing needs review notes;
/// problems show the change that fixes them.
async fn review_records_a_failed_outcome_and_the_incident_it_caused(app: TestApp) {
    let s = stack(&app).await;
    let (_, carol) = app.user_with_roles("carol", &["change_manager"]).await;
    let (_, agent) = app.user_with_roles("andy", &["agent"]).await;
    let (_, problem_manager) = app.user_with_roles("pam", &["problem_manager"]).await;
    let (status, template) = send(
        &app,
        &carol,
        Method::POST,
        "/api/v1/standard-change-templates",
        Some(json!({
            "name": "Patch orders-app", "risk_cap": "very_high", "configuration_items": [s.app],
        })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{template}");
    let (status, problem) = send(
        &app,
        &problem_manager,
        Method::POST,
        "/api/v1/problems",
        Some(json!({"title": "Orders app leaks memory"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{problem}");
    let change = new_change(&app, &agent, json!({"type": "standard", "template": text(&template, "id"),
        "title": "Patch the leak", "configuration_items": [s.app], "fixes_problems": [problem["number"]],
        "planned_start": at(1), "planned_end": at(2)})).await;
    assert_eq!(change["fixes_problems"], json!([problem["id"]]));
    let fixed = ok(
        &app,
        &problem_manager,
        Method::GET,
        &format!("/api/v1/problems/{}", text(&problem, "number")),
        None,
    )
    .await;
    assert_eq!(fixed["fix_change_id"], change["id"]);

    let number = text(&change, "number");
    acted(&app, &agent, &number, json!({"action": "schedule"})).await;
    let started = acted(&app, &agent, &number, json!({"action": "implement"})).await;
    assert!(started["actual_start"].is_string());
    let (status, problem) = act(&app, &agent, &number, json!({"action": "review"})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error_fields(&problem), ["outcome", "actual_end"]);
    let (status, _) = act(
        &app,
        &agent,
        &number,
        json!({"action": "cancel", "reason": "late"}),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let incident = create_incident(
        &app,
        &agent,
        json!({"title": "Orders fail after the patch"}),
    )
    .await;
    let (status, problem) = act(
        &app,
        &agent,
        &number,
        json!({"action": "review", "outcome": "failed",
        "actual_end": at(1), "caused_incidents": ["INC9999999"]}),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "an unknown reference: {problem}"
    );
    assert_eq!(error_fields(&problem), ["caused_incidents[0]"]);
    let reviewed = acted(
        &app,
        &agent,
        &number,
        json!({"action": "review", "outcome": "failed",
        "actual_end": at(1), "caused_incidents": [incident["number"]]}),
    )
    .await;
    assert_eq!(reviewed["outcome"], "failed");
    assert_eq!(reviewed["caused_incidents"], json!([incident["id"]]));
    let (status, refused) = act(&app, &agent, &number, json!({"action": "close"})).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(
        refused["detail"].as_str().unwrap().contains("review notes"),
        "{refused}"
    );
    let closed = acted(
        &app,
        &agent,
        &number,
        json!({"action": "close",
        "review_notes": "The patch exhausted the connection pool; backed out by hand"}),
    )
    .await;
    assert_eq!(closed["state"], "closed");
    assert!(closed["allowed_actions"].as_array().unwrap().is_empty());
}

/// Bad input is refused and changes nothing: a window ending before it starts, a requester
/// overriding risk or requesting for someone else, a risk override without a reason, an
/// unknown policy field.
async fn bad_input_is_refused(app: TestApp) {
    let (_, agent) = app.user_with_roles("andy", &["agent"]).await;
    let (rita, requester) = app.user_with_roles("rita", &["requester"]).await;
    let (_, carol) = app.user_with_roles("carol", &["change_manager"]).await;
    let marks = app.write_marks().await;
    let (status, problem) = send(
        &app,
        &agent,
        Method::POST,
        CHANGES,
        Some(json!({"title": "Backwards",
        "planned_start": at(5), "planned_end": at(4)})),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error_fields(&problem), ["planned_end"]);
    let (status, _) = send(
        &app,
        &requester,
        Method::POST,
        CHANGES,
        Some(json!({"title": "Mine", "risk": "low", "risk_override_reason": "trust me"})),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, problem) = send(
        &app,
        &carol,
        Method::POST,
        CHANGES,
        Some(json!({"title": "Override", "risk": "low"})),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error_fields(&problem), ["risk_override_reason"]);
    let (status, _) = send(
        &app,
        &carol,
        Method::POST,
        "/api/v1/change-approval-policies",
        Some(json!({"name": "Nobody", "approvers": []})),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _) = send(
        &app,
        &agent,
        Method::POST,
        "/api/v1/change-approval-policies",
        Some(json!({"name": "Agent", "approvers": [{"role": "agent"}]})),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = send(&app, &carol, Method::POST, "/api/v1/change-freeze-windows",
        Some(json!({"name": "Empty", "reason": "x", "start": at(2), "end": at(1), "scope": {"everything": true}}))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    app.assert_unchanged_since(&marks, "bad change input").await;

    // A requester's change is theirs; a change manager overrides its risk with a reason.
    let mine = new_change(&app, &requester, json!({"title": "New laptop image"})).await;
    assert_eq!(mine["requested_by"], rita["id"]);
    assert_eq!(actions(&mine), ["cancel"]);
    let (status, _) = send(
        &app,
        &requester,
        Method::PATCH,
        &format!("{CHANGES}/{}", text(&mine, "number")),
        Some(json!({"title": "Renamed"})),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let overridden = ok(
        &app,
        &carol,
        Method::PATCH,
        &format!("{CHANGES}/{}", text(&mine, "number")),
        Some(json!({"risk": "low", "risk_override_reason": "Image is standard"})),
    )
    .await;
    assert_eq!(overridden["risk"], "low");
    assert_eq!(overridden["risk_override_reason"], "Image is standard");
    let (status, _) = send(
        &app,
        &agent,
        Method::POST,
        &format!("{CHANGES}/{}/transitions", text(&mine, "number")),
        Some(json!({"action": "request_authorization"})),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
}

/// The carol-approves-her-approval step of a one-approver round.
async fn approve_as(app: &TestApp, token: &str, number: &str) -> Value {
    let approvals = ok(
        app,
        token,
        Method::GET,
        &format!("{CHANGES}/{number}/approvals"),
        None,
    )
    .await;
    let me = app.id_of(token).await;
    let mine = approvals["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["approver"] == me.as_str() && a["state"] == "pending")
        .unwrap()
        .clone();
    ok(
        app,
        token,
        Method::POST,
        &format!(
            "{CHANGES}/{number}/approvals/{}/decision",
            text(&mine, "id")
        ),
        Some(json!({"decision": "approve"})),
    )
    .await
}

/// A quorum reached while the planned window hits a freeze (set since authorisation was asked)
/// does not schedule the change: it stays in `authorize`, authorised, and `schedule` checks the
/// freeze as ever, so only a clear window moves it on. Moving an emergency change into a
/// freeze by PATCH needs `override_reason`, audited with `change.freeze_overridden`; a normal
/// change is refused even with one.
async fn freezes_hold_quorum_scheduling_and_patches_take_an_override_reason(app: TestApp) {
    let s = stack(&app).await;
    let (_, carol) = app.user_with_roles("carol", &["change_manager"]).await;
    let (_, agent) = app.user_with_roles("andy", &["agent"]).await;
    for (name, types) in [("Emergency", "emergency"), ("Normal", "normal")] {
        policy(
            &app,
            &carol,
            json!({"name": name, "change_types": [types], "approvers": [{"role": "change_manager"}]}),
        )
        .await;
    }
    let normal = new_change(
        &app,
        &agent,
        json!({"title": "Tune the database",
        "configuration_items": [s.db], "planned_start": at(24), "planned_end": at(26)}),
    )
    .await;
    let number = text(&normal, "number");
    acted(&app, &agent, &number, json!({"action": "assess"})).await;
    acted(
        &app,
        &agent,
        &number,
        json!({"action": "request_authorization"}),
    )
    .await;
    let (status, body) = send(
        &app,
        &carol,
        Method::POST,
        "/api/v1/change-freeze-windows",
        Some(
            json!({"name": "Black Friday", "reason": "Peak trading", "start": at(10),
                    "end": at(100), "scope": {"services": [s.shop]}}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    let decided = approve_as(&app, &carol, &number).await;
    let change = &decided["change"];
    assert_eq!(change["state"], "authorize", "{decided}");
    assert!(change["authorized_at"].is_string(), "{decided}");
    assert_eq!(decided["held_by_freeze"][0]["name"], "Black Friday");
    assert_eq!(
        decided["held_by_freeze"][0]["items"][0]["path"],
        json!([s.shop, s.app, s.db])
    );
    assert_eq!(actions(change)[0], "schedule");
    let types = event_types(&app.events_after(0).await, &text(&normal, "id"));
    assert!(types.iter().any(|t| t == "change.approved"), "{types:?}");
    assert!(!types.iter().any(|t| t == "change.scheduled"), "{types:?}");
    let (status, problem) = act(&app, &carol, &number, json!({"action": "schedule"})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    assert_eq!(problem["freeze_windows"][0]["name"], "Black Friday");
    // Moving its window into the freeze again is refused; out of it, it schedules.
    ok(
        &app,
        &carol,
        Method::PATCH,
        &format!("{CHANGES}/{number}"),
        Some(json!({"planned_start": at(120), "planned_end": at(122)})),
    )
    .await;
    let scheduled = acted(&app, &carol, &number, json!({"action": "schedule"})).await;
    assert_eq!(scheduled["state"], "scheduled");

    // An emergency change asked for authorisation outside the freeze, then moved into it.
    let emergency = new_change(
        &app,
        &agent,
        json!({"type": "emergency", "title": "Patch the database",
        "configuration_items": [s.db], "planned_start": at(150), "planned_end": at(152)}),
    )
    .await;
    let enumber = text(&emergency, "number");
    acted(
        &app,
        &agent,
        &enumber,
        json!({"action": "request_authorization"}),
    )
    .await;
    let path = format!("{CHANGES}/{enumber}");
    let into_freeze = json!({"planned_start": at(24), "planned_end": at(26)});
    let (status, problem) = send(&app, &carol, Method::PATCH, &path, Some(into_freeze)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    assert_eq!(problem["freeze_windows"][0]["name"], "Black Friday");
    let patched = ok(
        &app,
        &carol,
        Method::PATCH,
        &path,
        Some(json!({"planned_start": at(24), "planned_end": at(26),
                    "override_reason": "Actively exploited vulnerability"})),
    )
    .await;
    assert_eq!(
        patched["freeze_override_reason"],
        "Actively exploited vulnerability"
    );
    let types = event_types(&app.events_after(0).await, &text(&emergency, "id"));
    assert!(
        types.iter().any(|t| t == "change.freeze_overridden"),
        "{types:?}"
    );
    let history = ok(&app, &carol, Method::GET, &format!("{path}/history"), None).await;
    assert!(
        history["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "override_freeze"),
        "{history}"
    );

    // A normal change is refused even with a reason.
    let (status, _) = send(
        &app,
        &carol,
        Method::PATCH,
        &format!("{CHANGES}/{number}"),
        Some(json!({"planned_start": at(24), "planned_end": at(26),
                    "override_reason": "Please"})),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    // A blank reason is no reason.
    let (status, _) = send(
        &app,
        &carol,
        Method::PATCH,
        &path,
        Some(json!({"override_reason": ""})),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
}

on_both_backends!(
    cab_quorum_schedules_and_conflicts_show_their_path,
    a_rejection_returns_the_change_to_new,
    freezes_refuse_normal_changes_and_admit_emergencies_with_a_reason,
    standard_changes_come_from_templates_and_skip_authorisation,
    review_records_a_failed_outcome_and_the_incident_it_caused,
    bad_input_is_refused,
    freezes_hold_quorum_scheduling_and_patches_take_an_override_reason,
);
