//! Incident management: the lifecycle, the priority matrix, merge patches, references, requester
//! isolation, major and parent/child incidents, events and history.
//!
//! The helpers at the top are shared with the other `incidents_*` files.

use itsm_integration_tests::reqwest::{Method, Response, StatusCode};
use itsm_integration_tests::serde_json::{json, Value};
use itsm_integration_tests::{
    error_fields, expect_conflict_on, expect_problem, expect_refusal, header, on_both_backends,
    read, TestApp,
};

pub(crate) const INCIDENTS: &str = "/api/v1/incidents";

/// The string at `field` of `value`; panics when it is not a string.
pub(crate) fn text(value: &Value, field: &str) -> String {
    value[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} is not a string in {value}"))
        .to_owned()
}

/// The `allowed_actions` of an incident or a 409 problem, as strings.
pub(crate) fn actions(value: &Value) -> Vec<String> {
    value["allowed_actions"]
        .as_array()
        .unwrap_or_else(|| panic!("no allowed_actions in {value}"))
        .iter()
        .map(|a| a.as_str().expect("action name").to_owned())
        .collect()
}

/// The sorted numbers of a list of incidents.
pub(crate) fn numbers(items: &[Value]) -> Vec<String> {
    let mut numbers: Vec<String> = items.iter().map(|i| text(i, "number")).collect();
    numbers.sort();
    numbers
}

/// `numbers` of the given incidents, for comparing with a list.
pub(crate) fn numbers_of(incidents: &[&Value]) -> Vec<String> {
    let mut numbers: Vec<String> = incidents.iter().map(|i| text(i, "number")).collect();
    numbers.sort();
    numbers
}

/// Creates an incident as the holder of `token`; asserts 201.
pub(crate) async fn create_incident(app: &TestApp, token: &str, body: Value) -> Value {
    let response = app
        .request(Method::POST, INCIDENTS, token)
        .json(&body)
        .send()
        .await
        .expect("create incident");
    let (status, incident) = read(response).await;
    assert_eq!(status, StatusCode::CREATED, "creating {body}: {incident}");
    incident
}

pub(crate) async fn get_incident(app: &TestApp, token: &str, id: &str) -> Response {
    app.request(Method::GET, &format!("{INCIDENTS}/{id}"), token)
        .send()
        .await
        .expect("get incident")
}

/// The incident as the holder of `token` sees it; asserts 200.
pub(crate) async fn fetch(app: &TestApp, token: &str, id: &str) -> Value {
    let (status, incident) = read(get_incident(app, token, id).await).await;
    assert_eq!(status, StatusCode::OK, "GET incident {id}: {incident}");
    incident
}

pub(crate) async fn patch_incident(app: &TestApp, token: &str, id: &str, body: Value) -> Response {
    app.request(Method::PATCH, &format!("{INCIDENTS}/{id}"), token)
        .json(&body)
        .send()
        .await
        .expect("patch incident")
}

/// PATCHes an incident; asserts 200.
pub(crate) async fn patched(app: &TestApp, token: &str, id: &str, body: Value) -> Value {
    let (status, incident) = read(patch_incident(app, token, id, body.clone()).await).await;
    assert_eq!(status, StatusCode::OK, "PATCH {id} {body}: {incident}");
    incident
}

pub(crate) async fn transition(app: &TestApp, token: &str, id: &str, body: Value) -> Response {
    app.request(
        Method::POST,
        &format!("{INCIDENTS}/{id}/transitions"),
        token,
    )
    .json(&body)
    .send()
    .await
    .expect("transition")
}

/// Takes a transition; asserts 200.
pub(crate) async fn act(app: &TestApp, token: &str, id: &str, body: Value) -> Value {
    let (status, incident) = read(transition(app, token, id, body.clone()).await).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "transition {body} on {id}: {incident}"
    );
    incident
}

pub(crate) fn resolve_body() -> Value {
    json!({"action": "resolve", "resolution_code": "fixed", "resolution_notes": "Restarted the VPN gateway"})
}

pub(crate) async fn add_member(app: &TestApp, group: &Value, user: &Value) {
    let response = app
        .admin(
            Method::POST,
            &format!("/api/v1/groups/{}/members", text(group, "id")),
        )
        .json(&json!({"user_id": text(user, "id")}))
        .send()
        .await
        .expect("add member");
    let (status, body) = read(response).await;
    assert_eq!(status, StatusCode::CREATED, "adding a member: {body}");
}

/// An agent who is a member of `group`: `(user, token)`.
pub(crate) async fn agent_in(app: &TestApp, username: &str, group: &Value) -> (Value, String) {
    let (user, token) = app.user_with_roles(username, &["agent"]).await;
    add_member(app, group, &user).await;
    (user, token)
}

pub(crate) async fn add_note(
    app: &TestApp,
    token: &str,
    id: &str,
    visibility: &str,
    body: &str,
) -> Response {
    app.request(Method::POST, &format!("{INCIDENTS}/{id}/notes"), token)
        .json(&json!({"visibility": visibility, "body": body}))
        .send()
        .await
        .expect("add note")
}

/// `GET path` as the holder of `token`; asserts 200 and returns the body.
pub(crate) async fn get_ok(app: &TestApp, token: &str, path: &str) -> Value {
    let (status, body) = read(
        app.request(Method::GET, path, token)
            .send()
            .await
            .expect("GET"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
    body
}

/// The items of one list page.
pub(crate) fn items(page: &Value) -> Vec<Value> {
    page["items"]
        .as_array()
        .unwrap_or_else(|| panic!("no items in {page}"))
        .clone()
}

/// The last sequence number of the event feed.
pub(crate) async fn last_event(app: &TestApp) -> i64 {
    app.events_after(0)
        .await
        .last()
        .and_then(|e| e["sequence"].as_i64())
        .unwrap_or(0)
}

const INTERNAL_FIELDS: [&str; 5] = [
    "assignment_group",
    "assignee",
    "major",
    "parent_id",
    "external_refs",
];

fn assert_no_internal_fields(incident: &Value, what: &str) {
    for field in INTERNAL_FIELDS {
        assert!(
            incident.get(field).is_none(),
            "{what} shows {field} to a requester: {incident}"
        );
    }
}

/// A requester's incident routed by a rule, assigned, held, resumed, resolved, reopened,
/// resolved again and confirmed by the requester; then nothing more is allowed.
async fn full_lifecycle_from_report_to_confirmation(app: TestApp) {
    let network = app.group("Network").await;
    let response = app
        .admin(Method::POST, "/api/v1/assignment-rules")
        .json(&json!({"position": 10, "category": "network", "assignment_group": text(&network, "id")}))
        .send()
        .await
        .unwrap();
    let (status, rule) = read(response).await;
    assert_eq!(status, StatusCode::CREATED, "{rule}");
    let (agent, agent_token) = agent_in(&app, "nina", &network).await;
    let (outsider, _) = app.user_with_roles("otto", &["agent"]).await;
    let (retired, _) = agent_in(&app, "rita", &network).await;
    let response = app
        .admin(
            Method::PATCH,
            &format!("/api/v1/users/{}", text(&retired, "id")),
        )
        .json(&json!({"active": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let (requester, requester_token) = app.user_with_roles("rachel", &["requester"]).await;

    // Reported by the requester through the portal.
    let response = app
        .request(Method::POST, INCIDENTS, &requester_token)
        .json(&json!({
            "title": "  VPN gateway unreachable  ",
            "description": "Since 9:00 nobody on floor 3 can connect.",
            "category": "network",
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(
        header(&response, "location").as_deref(),
        Some("/api/v1/incidents/INC0000001")
    );
    assert_eq!(header(&response, "etag").as_deref(), Some("\"1\""));
    let (_, created) = read(response).await;
    assert_eq!(created["number"], "INC0000001");
    assert_eq!(created["title"], "VPN gateway unreachable");
    assert_eq!(created["state"], "new");
    assert_eq!(created["priority"], "p3");
    assert_eq!(created["impact"], "medium");
    assert_eq!(created["urgency"], "medium");
    assert_eq!(created["channel"], "portal");
    assert_eq!(created["caller"], requester["id"]);
    assert_eq!(created["version"], 1);
    assert_eq!(created["reopen_count"], 0);
    assert!(created["first_response_at"].is_null());
    assert_eq!(actions(&created), Vec::<String>::new());
    assert_no_internal_fields(&created, "the created incident");
    let id = text(&created, "id");

    // Routed by the rule; readable by id and by number.
    let by_number = fetch(&app, &agent_token, "INC0000001").await;
    let by_id = fetch(&app, &agent_token, &id).await;
    assert_eq!(by_number, by_id);
    assert_eq!(by_id["assignment_group"], network["id"]);
    assert!(by_id["assignee"].is_null());
    assert_eq!(by_id["major"], false);
    assert_eq!(
        actions(&by_id),
        ["start", "assign", "cancel", "declare_major"]
    );

    // The assignee must be an active member of the group: both are stored, so an outsider
    // or a deactivated user conflicts with them (RFC 9110).
    expect_conflict_on(
        transition(
            &app,
            &agent_token,
            &id,
            json!({"action": "assign", "assignee": text(&outsider, "id")}),
        )
        .await,
        "assignee",
    )
    .await;
    expect_conflict_on(
        transition(
            &app,
            &agent_token,
            &id,
            json!({"action": "assign", "assignee": text(&retired, "id")}),
        )
        .await,
        "assignee",
    )
    .await;
    let problem = expect_problem(
        transition(&app, &agent_token, &id, json!({"action": "assign"})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(error_fields(&problem), ["assignee"], "{problem}");
    assert_eq!(fetch(&app, &agent_token, &id).await["version"], 1);

    // Assigning a new incident starts the work.
    let response = transition(
        &app,
        &agent_token,
        "INC0000001",
        json!({"action": "assign", "assignee": text(&agent, "id")}),
    )
    .await;
    assert_eq!(header(&response, "etag").as_deref(), Some("\"2\""));
    let (status, assigned) = read(response).await;
    assert_eq!(status, StatusCode::OK, "{assigned}");
    assert_eq!(assigned["state"], "in_progress");
    assert_eq!(assigned["assignee"], agent["id"]);
    assert_eq!(assigned["assignment_group"], network["id"]);
    assert!(assigned["first_response_at"].is_string(), "{assigned}");
    let first_response_at = assigned["first_response_at"].clone();
    assert_eq!(
        actions(&assigned),
        ["assign", "hold", "resolve", "cancel", "declare_major"]
    );

    // On hold needs a reason.
    let problem = expect_problem(
        transition(&app, &agent_token, &id, json!({"action": "hold"})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(error_fields(&problem), ["on_hold_reason"], "{problem}");
    let held = act(
        &app,
        &agent_token,
        &id,
        json!({"action": "hold", "on_hold_reason": "awaiting_caller"}),
    )
    .await;
    assert_eq!(held["state"], "on_hold");
    assert_eq!(held["on_hold_reason"], "awaiting_caller");
    assert_eq!(
        actions(&held),
        ["assign", "resume", "cancel", "declare_major"]
    );
    let problem = expect_problem(
        transition(&app, &agent_token, &id, resolve_body()).await,
        StatusCode::CONFLICT,
    )
    .await;
    assert_eq!(actions(&problem), actions(&held));

    let resumed = act(&app, &agent_token, &id, json!({"action": "resume"})).await;
    assert_eq!(resumed["state"], "in_progress");
    assert!(resumed["on_hold_reason"].is_null());

    // Resolving needs a code and notes.
    let problem = expect_problem(
        transition(&app, &agent_token, &id, json!({"action": "resolve"})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    let mut fields = error_fields(&problem);
    fields.sort();
    assert_eq!(fields, ["resolution_code", "resolution_notes"], "{problem}");
    let problem = expect_problem(
        transition(
            &app,
            &agent_token,
            &id,
            json!({"action": "resolve", "resolution_code": "fixed", "resolution_notes": "   "}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(error_fields(&problem), ["resolution_notes"], "{problem}");
    let resolved = act(&app, &agent_token, &id, resolve_body()).await;
    assert_eq!(resolved["state"], "resolved");
    assert_eq!(resolved["resolution_code"], "fixed");
    assert_eq!(resolved["resolution_notes"], "Restarted the VPN gateway");
    assert!(resolved["resolved_at"].is_string());
    assert_eq!(actions(&resolved), ["reopen", "close"]);

    // The requester is not satisfied and reopens.
    let mine = fetch(&app, &requester_token, &id).await;
    assert_eq!(actions(&mine), ["reopen", "close"]);
    assert_no_internal_fields(&mine, "GET");
    let reopened = act(&app, &requester_token, &id, json!({"action": "reopen"})).await;
    assert_no_internal_fields(&reopened, "the transition response");
    assert_eq!(reopened["state"], "in_progress");
    assert_eq!(reopened["reopen_count"], 1);
    assert!(reopened["resolved_at"].is_null());
    assert!(reopened["resolution_code"].is_null());
    assert_eq!(reopened["first_response_at"], first_response_at);
    assert_eq!(actions(&reopened), Vec::<String>::new());

    // Resolved again, then confirmed by the requester.
    act(&app, &agent_token, &id, resolve_body()).await;
    let closed = act(&app, &requester_token, &id, json!({"action": "close"})).await;
    assert_eq!(closed["state"], "closed");
    assert!(closed["closed_at"].is_string());
    assert_eq!(closed["reopen_count"], 1);
    assert_eq!(actions(&closed), Vec::<String>::new());
    let audit = app.audit_of("incident", &id).await;
    assert_eq!(audit[0]["action"], "close_by_caller", "{audit:?}");
    assert_eq!(audit[0]["changes"]["state"], json!(["resolved", "closed"]));

    // Closed is final: every action is refused and the incident cannot be edited.
    let closed = fetch(&app, &agent_token, &id).await;
    assert_eq!(actions(&closed), Vec::<String>::new());
    for action in [
        "start",
        "assign",
        "hold",
        "resume",
        "resolve",
        "reopen",
        "close",
        "cancel",
        "declare_major",
    ] {
        let problem = expect_problem(
            transition(
                &app,
                &agent_token,
                &id,
                json!({"action": action, "reason": "r", "assignee": text(&agent, "id"),
                       "on_hold_reason": "awaiting_vendor", "resolution_code": "fixed",
                       "resolution_notes": "n"}),
            )
            .await,
            StatusCode::CONFLICT,
        )
        .await;
        assert_eq!(actions(&problem), Vec::<String>::new(), "{action}");
    }
    expect_problem(
        patch_incident(&app, &agent_token, &id, json!({"title": "too late"})).await,
        StatusCode::CONFLICT,
    )
    .await;
    assert_eq!(
        fetch(&app, &agent_token, &id).await["version"],
        closed["version"]
    );

    // Cancel from an open state is final too.
    let other = create_incident(
        &app,
        &agent_token,
        json!({"title": "Duplicate VPN report", "caller": text(&requester, "id")}),
    )
    .await;
    assert_eq!(other["number"], "INC0000002");
    assert_eq!(other["channel"], "api");
    let canceled = act(
        &app,
        &agent_token,
        &text(&other, "id"),
        json!({"action": "cancel", "reason": "duplicate of INC0000001"}),
    )
    .await;
    assert_eq!(canceled["state"], "canceled");
    assert!(canceled["closed_at"].is_string());
    assert_eq!(actions(&canceled), Vec::<String>::new());
    let problem = expect_problem(
        transition(
            &app,
            &agent_token,
            &text(&other, "id"),
            json!({"action": "start"}),
        )
        .await,
        StatusCode::CONFLICT,
    )
    .await;
    assert_eq!(actions(&problem), Vec::<String>::new());
    let audit = app.audit_of("incident", &text(&other, "id")).await;
    assert_eq!(audit[0]["action"], "cancel");
    assert_eq!(
        audit[0]["changes"]["reason"],
        json!([null, "duplicate of INC0000001"])
    );
}

/// The nine cells of the ITIL matrix through the API, and a PATCH recomputing the priority.
async fn priority_matrix_and_recalculation(app: TestApp) {
    let cells = [
        ("high", "high", "p1"),
        ("high", "medium", "p2"),
        ("high", "low", "p3"),
        ("medium", "high", "p2"),
        ("medium", "medium", "p3"),
        ("medium", "low", "p4"),
        ("low", "high", "p3"),
        ("low", "medium", "p4"),
        ("low", "low", "p5"),
    ];
    for (impact, urgency, priority) in cells {
        let incident = create_incident(
            &app,
            &app.admin_token,
            json!({"title": format!("{impact} x {urgency}"), "impact": impact, "urgency": urgency}),
        )
        .await;
        assert_eq!(incident["priority"], priority, "{impact} x {urgency}");
        assert_eq!(
            fetch(&app, &app.admin_token, &text(&incident, "id")).await["priority"],
            priority
        );
    }
    let defaulted = create_incident(&app, &app.admin_token, json!({"title": "defaults"})).await;
    assert_eq!(defaulted["priority"], "p3");

    // A priority cannot be given; it follows impact and urgency.
    let problem = expect_problem(
        app.admin(Method::POST, INCIDENTS)
            .json(&json!({"title": "I want p1", "priority": "p1"}))
            .send()
            .await
            .unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(error_fields(&problem), ["priority"]);
    let problem = expect_problem(
        app.admin(Method::POST, INCIDENTS)
            .json(&json!({"title": "bad impact", "impact": "huge"}))
            .send()
            .await
            .unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(error_fields(&problem), ["impact"]);

    let low = create_incident(
        &app,
        &app.admin_token,
        json!({"title": "printer", "impact": "low", "urgency": "low"}),
    )
    .await;
    let id = text(&low, "id");
    let patched_impact = patched(&app, &app.admin_token, &id, json!({"impact": "high"})).await;
    assert_eq!(patched_impact["priority"], "p3");
    assert_eq!(patched_impact["impact"], "high");
    assert_eq!(patched_impact["version"], 2);
    let audit = app.audit_of("incident", &id).await;
    assert_eq!(
        audit[0]["changes"],
        json!({"impact": ["low", "high"], "priority": ["p5", "p3"]})
    );
    let patched_urgency = patched(&app, &app.admin_token, &id, json!({"urgency": "high"})).await;
    assert_eq!(patched_urgency["priority"], "p1");
    let both = patched(
        &app,
        &app.admin_token,
        &id,
        json!({"impact": "medium", "urgency": "low"}),
    )
    .await;
    assert_eq!(both["priority"], "p4");
    assert_eq!(fetch(&app, &app.admin_token, &id).await["priority"], "p4");
}

/// Derived and read-only fields are unknown to PATCH: 422 naming them, and nothing written.
async fn patch_rejects_derived_fields_and_writes_nothing(app: TestApp) {
    let (_, agent) = app.user_with_roles("adam", &["agent"]).await;
    let incident = create_incident(
        &app,
        &agent,
        json!({"title": "Mail is slow", "description": "original"}),
    )
    .await;
    let id = text(&incident, "id");
    let audit_before = app.audit_of("incident", &id).await.len();
    let events_before = last_event(&app).await;
    for (field, value) in [
        ("state", json!("resolved")),
        ("priority", json!("p1")),
        ("number", json!("INC9999999")),
        ("created_at", json!("2020-01-01T00:00:00Z")),
        ("updated_at", json!("2020-01-01T00:00:00Z")),
        ("resolved_at", json!("2020-01-01T00:00:00Z")),
        ("first_response_at", json!("2020-01-01T00:00:00Z")),
        ("version", json!(7)),
        ("reopen_count", json!(3)),
        ("id", json!("another-id")),
    ] {
        let mut body = json!({"description": "changed"});
        body[field] = value;
        let problem = expect_problem(
            patch_incident(&app, &agent, &id, body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        assert_eq!(error_fields(&problem), [field], "{problem}");
    }
    // Other invalid patches.
    for (body, field) in [
        (json!({"title": ""}), "title"),
        (json!({"title": "   "}), "title"),
        (json!({"impact": "enormous"}), "impact"),
        (json!({"channel": "pigeon"}), "channel"),
    ] {
        let problem = expect_problem(
            patch_incident(&app, &agent, &id, body.clone()).await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        assert_eq!(error_fields(&problem), [field], "{body}: {problem}");
    }
    // A stale If-Match is refused.
    let problem = expect_problem(
        app.request(Method::PATCH, &format!("{INCIDENTS}/{id}"), &agent)
            .header("If-Match", "\"7\"")
            .json(&json!({"description": "changed"}))
            .send()
            .await
            .unwrap(),
        StatusCode::PRECONDITION_FAILED,
    )
    .await;
    assert!(
        text(&problem, "detail").contains('7'),
        "the detail names the version: {problem}"
    );
    let problem = expect_problem(
        app.request(
            Method::POST,
            &format!("{INCIDENTS}/{id}/transitions"),
            &agent,
        )
        .header("If-Match", "\"7\"")
        .json(&json!({"action": "start"}))
        .send()
        .await
        .unwrap(),
        StatusCode::PRECONDITION_FAILED,
    )
    .await;
    assert_eq!(problem["status"], 412);

    let after = fetch(&app, &agent, &id).await;
    assert_eq!(after["description"], "original");
    assert_eq!(after["state"], "new");
    assert_eq!(after["priority"], "p3");
    assert_eq!(after["number"], incident["number"]);
    assert_eq!(after["created_at"], incident["created_at"]);
    assert_eq!(after["updated_at"], incident["updated_at"]);
    assert_eq!(after["version"], 1);
    assert_eq!(app.audit_of("incident", &id).await.len(), audit_before);
    assert_eq!(last_event(&app).await, events_before);

    // The right If-Match is honoured.
    let response = app
        .request(Method::PATCH, &format!("{INCIDENTS}/{id}"), &agent)
        .header("If-Match", "\"1\"")
        .json(&json!({"description": "changed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(header(&response, "etag").as_deref(), Some("\"2\""));
    let (status, body) = read(response).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["description"], "changed");
    let response = app
        .request(
            Method::POST,
            &format!("{INCIDENTS}/{id}/transitions"),
            &agent,
        )
        .header("If-Match", "\"2\"")
        .json(&json!({"action": "start"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "etag").as_deref(), Some("\"3\""));
}

/// References to groups, users and parents must exist (409 `unknown-reference`), and an assignee
/// comes with a group (422); the problem names the field.
async fn unknown_references_are_refused_naming_the_field(app: TestApp) {
    let desk = app.group("Service Desk").await;
    let (agent, token) = agent_in(&app, "alma", &desk).await;
    let desk_id = text(&desk, "id");
    let agent_id = text(&agent, "id");
    let missing = "01900000-0000-7000-8000-000000000000";
    let cases = [
        (
            json!({"title": "t", "assignment_group": missing}),
            "assignment_group",
        ),
        (
            json!({"title": "t", "assignment_group": desk_id, "assignee": missing}),
            "assignee",
        ),
        (json!({"title": "t", "assignee": agent_id}), "assignee"),
        (json!({"title": "t", "caller": missing}), "caller"),
        (json!({"title": "t", "parent_id": missing}), "parent_id"),
        (
            json!({"title": "t", "parent_id": "INC0000042"}),
            "parent_id",
        ),
    ];
    for (body, field) in &cases {
        let problem = expect_refusal(
            app.request(Method::POST, INCIDENTS, &token)
                .json(body)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(error_fields(&problem), [*field], "{body}: {problem}");
    }
    let page = get_ok(&app, &token, INCIDENTS).await;
    assert_eq!(items(&page).len(), 0, "a rejected create stored something");

    let incident = create_incident(
        &app,
        &token,
        json!({"title": "Laptop broken", "assignment_group": desk_id, "assignee": agent_id}),
    )
    .await;
    assert_eq!(incident["state"], "in_progress");
    let id = text(&incident, "id");
    for (body, field) in [
        (json!({"assignment_group": missing}), "assignment_group"),
        (json!({"assignee": missing}), "assignee"),
        (json!({"caller": missing}), "caller"),
        (json!({"parent_id": missing}), "parent_id"),
    ] {
        let problem = expect_refusal(patch_incident(&app, &token, &id, body.clone()).await).await;
        assert_eq!(error_fields(&problem), [field], "{body}: {problem}");
    }
    let problem = expect_problem(
        transition(
            &app,
            &token,
            &id,
            json!({"action": "assign", "assignee": agent_id, "assignment_group": missing}),
        )
        .await,
        StatusCode::CONFLICT,
    )
    .await;
    assert_eq!(error_fields(&problem), ["assignment_group"], "{problem}");
    let problem = expect_problem(
        app.admin(Method::POST, "/api/v1/assignment-rules")
            .json(&json!({"position": 1, "category": "network", "assignment_group": missing}))
            .send()
            .await
            .unwrap(),
        StatusCode::CONFLICT,
    )
    .await;
    assert_eq!(error_fields(&problem), ["assignment_group"], "{problem}");
    let unchanged = fetch(&app, &token, &id).await;
    assert_eq!(unchanged["version"], 1);
    assert_eq!(unchanged["assignee"], agent["id"]);
    assert_eq!(unchanged["assignment_group"], desk["id"]);
}

/// Rules route new incidents by category (and subcategory) in position order; only admins
/// manage them.
async fn assignment_rules_route_new_incidents(app: TestApp) {
    let network = app.group("Network").await;
    let vpn = app.group("VPN team").await;
    let (_, agent) = app.user_with_roles("agnes", &["agent"]).await;
    let rule = |position: i32, subcategory: Option<&str>, group: &Value| {
        json!({"position": position, "category": "network", "subcategory": subcategory,
               "assignment_group": text(group, "id")})
    };
    expect_problem(
        app.request(Method::POST, "/api/v1/assignment-rules", &agent)
            .json(&rule(1, None, &network))
            .send()
            .await
            .unwrap(),
        StatusCode::FORBIDDEN,
    )
    .await;
    let mut ids = Vec::new();
    for body in [rule(20, None, &network), rule(10, Some("vpn"), &vpn)] {
        let response = app
            .admin(Method::POST, "/api/v1/assignment-rules")
            .json(&body)
            .send()
            .await
            .unwrap();
        let location = header(&response, "location");
        let (status, created) = read(response).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        assert_eq!(
            location,
            Some(format!("/api/v1/assignment-rules/{}", text(&created, "id")))
        );
        ids.push(text(&created, "id"));
    }
    let listed = get_ok(&app, &agent, "/api/v1/assignment-rules").await;
    let positions: Vec<i64> = items(&listed)
        .iter()
        .map(|r| r["position"].as_i64().unwrap())
        .collect();
    assert_eq!(positions, [10, 20]);

    let routed = |category: &str, subcategory: Option<&str>| json!({"title": "route me", "category": category, "subcategory": subcategory});
    let group_of = |incident: &Value| incident["assignment_group"].clone();
    let wifi = create_incident(&app, &agent, routed("network", Some("wifi"))).await;
    assert_eq!(group_of(&wifi), network["id"]);
    let vpn_incident = create_incident(&app, &agent, routed("Network", Some("VPN"))).await;
    assert_eq!(group_of(&vpn_incident), vpn["id"]);
    let unrouted = create_incident(&app, &agent, routed("hardware", None)).await;
    assert!(group_of(&unrouted).is_null());
    let explicit = create_incident(
        &app,
        &agent,
        json!({"title": "explicit", "category": "network", "assignment_group": text(&vpn, "id")}),
    )
    .await;
    assert_eq!(group_of(&explicit), vpn["id"]);

    // Moving the general rule first changes the routing.
    let response = app
        .admin(Method::PUT, &format!("/api/v1/assignment-rules/{}", ids[0]))
        .json(&rule(5, None, &network))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let now_general = create_incident(&app, &agent, routed("network", Some("vpn"))).await;
    assert_eq!(group_of(&now_general), network["id"]);
    let response = app
        .admin(
            Method::DELETE,
            &format!("/api/v1/assignment-rules/{}", ids[0]),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let after_delete = create_incident(&app, &agent, routed("network", Some("vpn"))).await;
    assert_eq!(group_of(&after_delete), vpn["id"]);
    expect_problem(
        app.admin(Method::GET, &format!("/api/v1/assignment-rules/{}", ids[0]))
            .send()
            .await
            .unwrap(),
        StatusCode::NOT_FOUND,
    )
    .await;
}

/// A requester sees and touches only their own incidents, never internal fields or work notes.
async fn requesters_are_isolated(app: TestApp) {
    let desk = app.group("Desk").await;
    let (agent, agent_token) = agent_in(&app, "ada", &desk).await;
    let (alice, alice_token) = app.user_with_roles("alice", &["requester"]).await;
    let (bob, bob_token) = app.user_with_roles("bob", &["requester"]).await;
    let alices = create_incident(
        &app,
        &alice_token,
        json!({"title": "Alice cannot print", "description": "paper jam"}),
    )
    .await;
    let bobs = create_incident(&app, &bob_token, json!({"title": "Bob needs VPN"})).await;
    assert_eq!(alices["caller"], alice["id"]);
    let id = text(&alices, "id");
    let number = text(&alices, "number");

    // Requesters cannot set staff-only fields or report for someone else.
    for body in [
        json!({"title": "x", "caller": text(&bob, "id")}),
        json!({"title": "x", "assignment_group": text(&desk, "id")}),
        json!({"title": "x", "assignee": text(&agent, "id")}),
        json!({"title": "x", "parent_id": text(&bobs, "id")}),
        json!({"title": "x", "external_refs": [{"system": "crm", "id": "C-1"}]}),
    ] {
        expect_problem(
            app.request(Method::POST, INCIDENTS, &alice_token)
                .json(&body)
                .send()
                .await
                .unwrap(),
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    }

    // Staff work the incident, with an internal note and internal fields.
    act(
        &app,
        &agent_token,
        &id,
        json!({"action": "assign", "assignee": text(&agent, "id"),
               "assignment_group": text(&desk, "id")}),
    )
    .await;
    patched(
        &app,
        &agent_token,
        &id,
        json!({"external_refs": [{"system": "crm", "id": "SECRET-REF-77"}]}),
    )
    .await;
    let secret = "SECRET-WORK-NOTE: caller is on the watch list";
    let response = add_note(&app, &agent_token, &id, "internal", secret).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let response = add_note(&app, &agent_token, &id, "public", "We are on it").await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let (status, comment) =
        read(add_note(&app, &alice_token, &id, "public", "Thanks!").await).await;
    assert_eq!(status, StatusCode::CREATED, "{comment}");
    assert_eq!(comment["visibility"], "public");
    let problem = expect_problem(
        add_note(&app, &alice_token, &id, "internal", "psst").await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(error_fields(&problem), ["visibility"]);

    // Bob sees nothing of Alice's incident, by id or number.
    for target in [&id, &number] {
        let base = format!("{INCIDENTS}/{target}");
        let requests = [
            app.request(Method::GET, &base, &bob_token),
            app.request(Method::GET, &format!("{base}/notes"), &bob_token),
            app.request(Method::GET, &format!("{base}/history"), &bob_token),
            app.request(Method::POST, &format!("{base}/notes"), &bob_token)
                .json(&json!({"visibility": "public", "body": "hello"})),
            app.request(Method::POST, &format!("{base}/transitions"), &bob_token)
                .json(&json!({"action": "close"})),
        ];
        for request in requests {
            let request = request.build().unwrap();
            let what = format!("{} {}", request.method(), request.url().path());
            let response = app.client.execute(request).await.unwrap();
            assert_eq!(
                response.status(),
                StatusCode::NOT_FOUND,
                "{what} as another requester"
            );
            expect_problem(response, StatusCode::NOT_FOUND).await;
        }
    }
    // Requesters cannot edit even their own incidents; they comment instead.
    expect_problem(
        patch_incident(&app, &alice_token, &id, json!({"title": "edited"})).await,
        StatusCode::FORBIDDEN,
    )
    .await;

    // Lists show only one's own incidents.
    let bob_list = get_ok(&app, &bob_token, INCIDENTS).await;
    assert_eq!(numbers(&items(&bob_list)), numbers_of(&[&bobs]));
    let sneaky = get_ok(
        &app,
        &bob_token,
        &format!("{INCIDENTS}?caller={}", text(&alice, "id")),
    )
    .await;
    assert_eq!(items(&sneaky).len(), 0, "{sneaky}");
    let alice_list = get_ok(&app, &alice_token, INCIDENTS).await;
    assert_eq!(numbers(&items(&alice_list)), numbers_of(&[&alices]));
    for incident in items(&alice_list) {
        assert_no_internal_fields(&incident, "the list");
    }
    let staff_list = get_ok(&app, &agent_token, INCIDENTS).await;
    assert_eq!(items(&staff_list).len(), 2);
    let problem = expect_problem(
        app.request(
            Method::GET,
            &format!("{INCIDENTS}?assignee={}", text(&agent, "id")),
            &alice_token,
        )
        .send()
        .await
        .unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(error_fields(&problem), ["assignee"]);

    // Alice's own views hold no internal fields and no work notes.
    let incident = fetch(&app, &alice_token, &id).await;
    assert_no_internal_fields(&incident, "GET");
    let notes = get_ok(&app, &alice_token, &format!("{INCIDENTS}/{id}/notes")).await;
    let bodies: Vec<String> = items(&notes).iter().map(|n| text(n, "body")).collect();
    assert_eq!(bodies, ["We are on it", "Thanks!"]);
    let only_internal = get_ok(
        &app,
        &alice_token,
        &format!("{INCIDENTS}/{id}/notes?visibility=internal"),
    )
    .await;
    assert_eq!(items(&only_internal).len(), 0);
    let history = get_ok(&app, &alice_token, &format!("{INCIDENTS}/{id}/history")).await;
    let entries = items(&history);
    assert!(!entries.is_empty());
    for entry in &entries {
        assert_ne!(entry["action"], "add_work_note", "{entry}");
        assert_no_internal_fields(&entry["changes"], "history");
    }
    for (what, view) in [
        ("incident", &incident),
        ("notes", &notes),
        ("history", &history),
        ("list", &alice_list),
    ] {
        let serialized = view.to_string();
        assert!(
            !serialized.contains("SECRET-WORK-NOTE"),
            "{what}: {serialized}"
        );
        assert!(
            !serialized.contains("SECRET-REF-77"),
            "{what}: {serialized}"
        );
        if what == "incident" || what == "list" {
            assert!(
                !serialized.contains(agent["id"].as_str().unwrap()),
                "{what} reveals the assignee: {serialized}"
            );
        }
    }
    // Staff see everything.
    let staff_notes = get_ok(&app, &agent_token, &format!("{INCIDENTS}/{id}/notes")).await;
    assert_eq!(items(&staff_notes).len(), 3);
    let staff_history = get_ok(&app, &agent_token, &format!("{INCIDENTS}/{id}/history")).await;
    assert!(items(&staff_history)
        .iter()
        .any(|e| e["action"] == "add_work_note"));

    // The event feed is for staff and integrations.
    expect_problem(
        app.request(Method::GET, "/api/v1/events?types=incident.*", &alice_token)
            .send()
            .await
            .unwrap(),
        StatusCode::FORBIDDEN,
    )
    .await;
    expect_problem(
        app.request(Method::GET, "/api/v1/audit-events", &alice_token)
            .send()
            .await
            .unwrap(),
        StatusCode::FORBIDDEN,
    )
    .await;

    // PATCH of another requester's incident is 404 like every other request on it.
    for target in [&id, &number] {
        let response = patch_incident(&app, &bob_token, target, json!({"title": "mine now"})).await;
        assert_eq!(
            response.status(),
            StatusCode::NOT_FOUND,
            "PATCH {target} as another requester"
        );
        expect_problem(response, StatusCode::NOT_FOUND).await;
    }
    assert_eq!(
        fetch(&app, &agent_token, &id).await["title"],
        "Alice cannot print"
    );
}

/// Declaring a major incident, and that a requester does not learn about it.
async fn major_incident_declaration(app: TestApp) {
    let (_, agent) = app.user_with_roles("mia", &["agent"]).await;
    let (requester, requester_token) = app.user_with_roles("rob", &["requester"]).await;
    let incident = create_incident(
        &app,
        &agent,
        json!({"title": "Core switch down", "impact": "high", "urgency": "high",
               "caller": text(&requester, "id")}),
    )
    .await;
    let id = text(&incident, "id");
    let after = last_event(&app).await;
    for body in [
        json!({"action": "declare_major"}),
        json!({"action": "declare_major", "reason": "   "}),
    ] {
        let problem = expect_problem(
            transition(&app, &agent, &id, body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        assert_eq!(error_fields(&problem), ["reason"], "{problem}");
    }
    assert_eq!(fetch(&app, &agent, &id).await["major"], false);
    let reason = "Whole site offline, CONFIDENTIAL-BRIDGE-CALL";
    let major = act(
        &app,
        &agent,
        &id,
        json!({"action": "declare_major", "reason": reason}),
    )
    .await;
    assert_eq!(major["major"], true);
    assert_eq!(major["state"], "new");
    assert_eq!(actions(&major), ["start", "assign", "cancel"]);
    let problem = expect_problem(
        transition(
            &app,
            &agent,
            &id,
            json!({"action": "declare_major", "reason": "again"}),
        )
        .await,
        StatusCode::CONFLICT,
    )
    .await;
    assert_eq!(actions(&problem), ["start", "assign", "cancel"]);

    let events: Vec<Value> = app
        .events_after(after)
        .await
        .into_iter()
        .filter(|e| e["entity_id"] == id.as_str())
        .collect();
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert!(types.contains(&"incident.major_declared"), "{types:?}");
    let declared = events
        .iter()
        .find(|e| e["type"] == "incident.major_declared")
        .unwrap();
    assert_eq!(declared["entity_type"], "incident");
    assert_eq!(declared["data"]["major"], true);
    let audit = app.audit_of("incident", &id).await;
    assert_eq!(audit[0]["action"], "declare_major");
    assert_eq!(audit[0]["changes"]["major"], json!([false, true]));
    assert_eq!(audit[0]["changes"]["reason"], json!([null, reason]));
    let majors = get_ok(&app, &agent, &format!("{INCIDENTS}?major=true")).await;
    assert_eq!(numbers(&items(&majors)), numbers_of(&[&incident]));

    // The requester sees neither the flag nor the declaration.
    let mine = fetch(&app, &requester_token, &id).await;
    assert!(mine.get("major").is_none(), "{mine}");
    let history = get_ok(&app, &requester_token, &format!("{INCIDENTS}/{id}/history")).await;
    let serialized = history.to_string();
    assert!(
        !serialized.contains("CONFIDENTIAL-BRIDGE-CALL")
            && !items(&history)
                .iter()
                .any(|e| e["action"] == "declare_major"),
        "a requester's history reveals the major declaration: {serialized}"
    );
}

/// Children follow their parent: linked by PATCH, resolved and closed with it, never reopened
/// after it closed.
async fn parent_and_child_incidents(app: TestApp) {
    let (_, agent) = app.user_with_roles("pat", &["agent"]).await;
    let (requester, requester_token) = app.user_with_roles("rex", &["requester"]).await;
    let new = |title: &str| json!({"title": title, "caller": text(&requester, "id")});
    let parent = create_incident(&app, &agent, new("Mail server down")).await;
    let parent_id = text(&parent, "id");
    let first = create_incident(&app, &agent, new("No mail on my phone")).await;
    let second = create_incident(&app, &agent, new("Outlook offline")).await;
    let held = create_incident(&app, &agent, new("Calendar broken")).await;
    let canceled = create_incident(&app, &agent, new("Mail slow (dup)")).await;
    let stranger = create_incident(&app, &agent, new("Printer")).await;
    for child in [&first, &second, &held, &canceled] {
        let linked = patched(
            &app,
            &agent,
            &text(child, "id"),
            json!({"parent_id": parent_id}),
        )
        .await;
        assert_eq!(linked["parent_id"], parent["id"]);
    }
    // Children are also accepted at creation.
    let born_child = create_incident(
        &app,
        &agent,
        json!({"title": "Shared mailbox gone", "parent_id": parent_id,
               "caller": text(&requester, "id")}),
    )
    .await;
    assert_eq!(born_child["parent_id"], parent["id"], "{born_child}");

    // One level only, no cycles.
    for (id, body) in [
        (&parent_id, json!({"parent_id": parent_id})),
        (&parent_id, json!({"parent_id": text(&stranger, "id")})),
        (
            &text(&stranger, "id"),
            json!({"parent_id": text(&first, "id")}),
        ),
    ] {
        let problem = expect_problem(
            patch_incident(&app, &agent, id, body.clone()).await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        assert_eq!(error_fields(&problem), ["parent_id"], "{body}: {problem}");
    }
    let children = get_ok(&app, &agent, &format!("{INCIDENTS}?parent_id={parent_id}")).await;
    assert_eq!(
        numbers(&items(&children)),
        numbers_of(&[&first, &second, &held, &canceled, &born_child])
    );

    act(
        &app,
        &agent,
        &text(&second, "id"),
        json!({"action": "start"}),
    )
    .await;
    act(&app, &agent, &text(&held, "id"), json!({"action": "start"})).await;
    act(
        &app,
        &agent,
        &text(&held, "id"),
        json!({"action": "hold", "on_hold_reason": "awaiting_vendor"}),
    )
    .await;
    act(
        &app,
        &agent,
        &text(&canceled, "id"),
        json!({"action": "cancel", "reason": "duplicate"}),
    )
    .await;

    // Resolving the parent resolves its open children, each with a comment.
    act(&app, &agent, &parent_id, json!({"action": "start"})).await;
    act(
        &app,
        &agent,
        &parent_id,
        json!({"action": "resolve", "resolution_code": "workaround",
               "resolution_notes": "Failed over to the standby server"}),
    )
    .await;
    for child in [&first, &second, &held, &born_child] {
        let child_id = text(child, "id");
        let now = fetch(&app, &agent, &child_id).await;
        assert_eq!(now["state"], "resolved", "{now}");
        assert_eq!(now["resolution_code"], "workaround");
        assert_eq!(now["resolution_notes"], "Failed over to the standby server");
        assert!(now["on_hold_reason"].is_null());
        let notes = get_ok(
            &app,
            &requester_token,
            &format!("{INCIDENTS}/{child_id}/notes"),
        )
        .await;
        let bodies: Vec<String> = items(&notes).iter().map(|n| text(n, "body")).collect();
        assert!(
            bodies
                .iter()
                .any(|b| b.contains("parent") && b.contains(&text(&parent, "number"))),
            "no note on {child_id}: {bodies:?}"
        );
    }
    assert_eq!(
        fetch(&app, &agent, &text(&canceled, "id")).await["state"],
        "canceled"
    );
    assert_eq!(
        fetch(&app, &agent, &text(&stranger, "id")).await["state"],
        "new"
    );

    // A child reopened while the parent is merely resolved is fine.
    let reopened = act(
        &app,
        &requester_token,
        &text(&first, "id"),
        json!({"action": "reopen"}),
    )
    .await;
    assert_eq!(reopened["state"], "in_progress");

    // Closing the parent closes its children, the reopened one included.
    act(&app, &agent, &parent_id, json!({"action": "close"})).await;
    for child in [&first, &second, &held, &born_child] {
        let now = fetch(&app, &agent, &text(child, "id")).await;
        assert_eq!(now["state"], "closed", "{now}");
        assert!(now["closed_at"].is_string());
    }
    assert_eq!(
        fetch(&app, &agent, &text(&canceled, "id")).await["state"],
        "canceled"
    );
    for token in [&agent, &requester_token] {
        let problem = expect_problem(
            transition(
                &app,
                token,
                &text(&second, "id"),
                json!({"action": "reopen"}),
            )
            .await,
            StatusCode::CONFLICT,
        )
        .await;
        assert_eq!(actions(&problem), Vec::<String>::new());
    }
    // A closed parent takes no new children.
    let problem = expect_problem(
        patch_incident(
            &app,
            &agent,
            &text(&stranger, "id"),
            json!({"parent_id": parent_id}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(error_fields(&problem), ["parent_id"]);
}

/// A resolved child whose parent was canceled (so it was not closed with it) cannot be reopened,
/// and its `allowed_actions` say so.
async fn child_of_a_final_parent_does_not_offer_reopen(app: TestApp) {
    let (_, agent) = app.user_with_roles("pia", &["agent"]).await;
    let (requester, requester_token) = app.user_with_roles("ron", &["requester"]).await;
    let parent = create_incident(&app, &agent, json!({"title": "Parent"})).await;
    let child = create_incident(
        &app,
        &agent,
        json!({"title": "Child", "parent_id": text(&parent, "id"), "caller": text(&requester, "id")}),
    )
    .await;
    let child_id = text(&child, "id");
    act(&app, &agent, &child_id, json!({"action": "start"})).await;
    act(&app, &agent, &child_id, resolve_body()).await;
    act(
        &app,
        &agent,
        &text(&parent, "id"),
        json!({"action": "cancel", "reason": "not an outage after all"}),
    )
    .await;
    let mut seen = Vec::new();
    for token in [&agent, &requester_token] {
        let problem = expect_problem(
            transition(&app, token, &child_id, json!({"action": "reopen"})).await,
            StatusCode::CONFLICT,
        )
        .await;
        let now = fetch(&app, token, &child_id).await;
        assert_eq!(now["state"], "resolved");
        seen.push((now, problem));
    }
    // Closing remains possible.
    let closed = act(
        &app,
        &requester_token,
        &child_id,
        json!({"action": "close"}),
    )
    .await;
    assert_eq!(closed["state"], "closed");
    for (now, problem) in seen {
        assert_eq!(
            actions(&now),
            ["close"],
            "allowed_actions offers what the server refuses: {now}"
        );
        assert_eq!(actions(&problem), actions(&now), "{problem}");
    }
}

/// A parent given by its number (as paths accept) is either resolved to its id or refused with
/// a 422 naming `parent_id`; never a database error.
async fn parent_given_by_number_is_handled_cleanly(app: TestApp) {
    let (_, agent) = app.user_with_roles("paz", &["agent"]).await;
    let parent = create_incident(&app, &agent, json!({"title": "Parent"})).await;
    let number = text(&parent, "number");
    let response = app
        .request(Method::POST, INCIDENTS, &agent)
        .json(&json!({"title": "Child", "parent_id": number}))
        .send()
        .await
        .unwrap();
    let created = (response.status(), read(response).await.1);
    let other = create_incident(&app, &agent, json!({"title": "Other"})).await;
    let response = patch_incident(
        &app,
        &agent,
        &text(&other, "id"),
        json!({"parent_id": number}),
    )
    .await;
    let updated = (response.status(), read(response).await.1);
    let mut wrong = Vec::new();
    for ((status, body), ok, what) in [
        (created, StatusCode::CREATED, "POST"),
        (updated, StatusCode::OK, "PATCH"),
    ] {
        let clean = if status == ok {
            body["parent_id"] == parent["id"]
        } else {
            status == StatusCode::UNPROCESSABLE_ENTITY && error_fields(&body) == ["parent_id"]
        };
        if !clean {
            wrong.push(format!("{what} with parent_id {number}: {status} {body}"));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

/// Assignment through PATCH follows the same rules as the `assign` action.
async fn patch_assignment_follows_the_rules(app: TestApp) {
    let desk = app.group("Desk").await;
    let field = app.group("Field").await;
    let (ann, token) = agent_in(&app, "ann", &desk).await;
    let (ben, _) = agent_in(&app, "ben", &desk).await;
    let (out, _) = agent_in(&app, "out", &field).await;
    let incident = create_incident(
        &app,
        &token,
        json!({"title": "Docking station", "assignment_group": text(&desk, "id")}),
    )
    .await;
    assert_eq!(incident["state"], "new");
    let id = text(&incident, "id");
    let after = last_event(&app).await;

    let assigned = patched(&app, &token, &id, json!({"assignee": text(&ann, "id")})).await;
    assert_eq!(assigned["assignee"], ann["id"]);
    assert_eq!(assigned["state"], "in_progress");
    let first_response_at = assigned["first_response_at"].clone();
    assert!(first_response_at.is_string(), "{assigned}");
    let events = app.events_after(after).await;
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["incident.state_changed", "incident.assigned"]);

    let reassigned = patched(&app, &token, &id, json!({"assignee": text(&ben, "id")})).await;
    assert_eq!(reassigned["assignee"], ben["id"]);
    assert_eq!(reassigned["first_response_at"], first_response_at);

    // Membership is stored: an outsider conflicts with it.
    let problem = expect_problem(
        patch_incident(&app, &token, &id, json!({"assignee": text(&out, "id")})).await,
        StatusCode::CONFLICT,
    )
    .await;
    assert!(
        text(&problem, "detail").starts_with("assignee:"),
        "{problem}"
    );

    // Another group without an assignee releases the old assignee.
    let moved = patched(
        &app,
        &token,
        &id,
        json!({"assignment_group": text(&field, "id")}),
    )
    .await;
    assert_eq!(moved["assignment_group"], field["id"]);
    assert!(moved["assignee"].is_null(), "{moved}");
    let both = patched(
        &app,
        &token,
        &id,
        json!({"assignment_group": text(&desk, "id"), "assignee": text(&ann, "id")}),
    )
    .await;
    assert_eq!(both["assignee"], ann["id"]);
    let cleared = patched(&app, &token, &id, json!({"assignee": null})).await;
    assert!(cleared["assignee"].is_null());
    assert_eq!(cleared["assignment_group"], desk["id"]);
    assert_eq!(cleared["state"], "in_progress");
    let ungrouped = patched(&app, &token, &id, json!({"assignment_group": null})).await;
    assert!(ungrouped["assignment_group"].is_null());
    // An assignee conflicts with an incident stored without a group.
    expect_conflict_on(
        patch_incident(&app, &token, &id, json!({"assignee": text(&ann, "id")})).await,
        "assignee",
    )
    .await;
    assert_eq!(
        fetch(&app, &token, &id).await["version"],
        ungrouped["version"]
    );

    // Creating with an assignee starts the work at once.
    let started = create_incident(
        &app,
        &token,
        json!({"title": "Monitor", "assignment_group": text(&desk, "id"),
               "assignee": text(&ben, "id")}),
    )
    .await;
    assert_eq!(started["state"], "in_progress");
    assert!(started["first_response_at"].is_string());
}

/// A caller who left (deactivated) does not freeze their incidents: staff can still edit and
/// work them, while a deactivated user cannot be made the caller.
async fn incidents_of_a_deactivated_caller_can_still_be_worked(app: TestApp) {
    let desk = app.group("Desk").await;
    let (agent, token) = agent_in(&app, "abe", &desk).await;
    let (leaver, _) = app.user_with_roles("leaver", &["requester"]).await;
    let (other, _) = app.user_with_roles("other", &["requester"]).await;
    let incident = create_incident(
        &app,
        &token,
        json!({"title": "Account locked", "caller": text(&leaver, "id")}),
    )
    .await;
    let id = text(&incident, "id");
    for user in [&leaver, &other] {
        let response = app
            .admin(
                Method::PATCH,
                &format!("/api/v1/users/{}", text(user, "id")),
            )
            .json(&json!({"active": false}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    expect_conflict_on(
        patch_incident(&app, &token, &id, json!({"caller": text(&other, "id")})).await,
        "caller",
    )
    .await;
    let (status, body) = read(
        patch_incident(
            &app,
            &token,
            &id,
            json!({"description": "User left the company"}),
        )
        .await,
    )
    .await;
    let patch = (status, body);
    let (status, body) = read(
        transition(
            &app,
            &token,
            &id,
            json!({"action": "assign", "assignee": text(&agent, "id"),
                   "assignment_group": text(&desk, "id")}),
        )
        .await,
    )
    .await;
    let assign = (status, body);
    let failed: Vec<String> = [("PATCH description", patch), ("assign", assign)]
        .into_iter()
        .filter(|(_, (status, _))| *status != StatusCode::OK)
        .map(|(what, (status, body))| format!("{what}: {status} {body}"))
        .collect();
    assert!(failed.is_empty(), "{failed:#?}");
}

/// A retried create with the same Idempotency-Key makes one incident.
async fn idempotent_create_makes_one_incident(app: TestApp) {
    let (_, token) = app.user_with_roles("ida", &["agent"]).await;
    let body = json!({"title": "Retry me", "impact": "high"});
    let mut responses = Vec::new();
    for _ in 0..2 {
        let response = app
            .request(Method::POST, INCIDENTS, &token)
            .header("Idempotency-Key", "incident-retry-1")
            .json(&body)
            .send()
            .await
            .unwrap();
        let location = header(&response, "location");
        let (status, created) = read(response).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        responses.push((location, created));
    }
    assert_eq!(responses[0], responses[1]);
    let page = get_ok(&app, &token, INCIDENTS).await;
    assert_eq!(items(&page).len(), 1);
    let problem = expect_problem(
        app.request(Method::POST, INCIDENTS, &token)
            .header("Idempotency-Key", "incident-retry-1")
            .json(&json!({"title": "Something else"}))
            .send()
            .await
            .unwrap(),
        StatusCode::CONFLICT,
    )
    .await;
    assert_eq!(problem["status"], 409);
    // Unknown incidents are 404 everywhere.
    for path in [
        format!("{INCIDENTS}/INC0000099"),
        format!("{INCIDENTS}/01900000-0000-7000-8000-000000000000"),
        format!("{INCIDENTS}/INC0000099/notes"),
        format!("{INCIDENTS}/INC0000099/history"),
    ] {
        expect_problem(
            app.request(Method::GET, &path, &token)
                .send()
                .await
                .unwrap(),
            StatusCode::NOT_FOUND,
        )
        .await;
    }
    expect_problem(
        patch_incident(&app, &token, "INC0000099", json!({"title": "x"})).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    expect_problem(
        add_note(&app, &token, "INC0000099", "public", "x").await,
        StatusCode::NOT_FOUND,
    )
    .await;
}

/// Every kind of incident change appears in the event feed, in order.
async fn incident_events_reach_the_feed(app: TestApp) {
    let desk = app.group("Desk").await;
    let (agent, token) = agent_in(&app, "eve", &desk).await;
    let after = last_event(&app).await;
    let incident = create_incident(&app, &token, json!({"title": "Wifi drops"})).await;
    let id = text(&incident, "id");
    patched(&app, &token, &id, json!({"urgency": "high"})).await;
    patched(
        &app,
        &token,
        &id,
        json!({"assignment_group": text(&desk, "id")}),
    )
    .await;
    act(
        &app,
        &token,
        &id,
        json!({"action": "assign", "assignee": text(&agent, "id")}),
    )
    .await;
    let response = add_note(&app, &token, &id, "public", "Looking into it").await;
    assert_eq!(response.status(), StatusCode::CREATED);
    act(
        &app,
        &token,
        &id,
        json!({"action": "declare_major", "reason": "whole floor"}),
    )
    .await;
    act(&app, &token, &id, resolve_body()).await;
    // Something that is not an incident event.
    app.group("Other").await;

    let page = get_ok(
        &app,
        &token,
        &format!("/api/v1/events?types=incident.*&after={after}&limit=500"),
    )
    .await;
    let events = items(&page);
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "incident.created",
            "incident.updated",
            "incident.updated",
            "incident.assigned",
            "incident.state_changed",
            "incident.assigned",
            "incident.note_added",
            "incident.updated",
            "incident.major_declared",
            "incident.state_changed",
        ],
        "{page}"
    );
    let sequences: Vec<i64> = events
        .iter()
        .map(|e| e["sequence"].as_i64().unwrap())
        .collect();
    assert!(sequences.windows(2).all(|w| w[0] < w[1]), "{sequences:?}");
    for event in &events {
        assert_eq!(event["entity_type"], "incident");
        assert_eq!(event["entity_id"], id.as_str());
        assert!(event["occurred_at"].is_string());
    }
    assert_eq!(events[0]["data"]["number"], incident["number"]);
    assert_eq!(events[4]["data"]["state"], "in_progress");
    assert_eq!(events[9]["data"]["state"], "resolved");
    assert_eq!(events[6]["data"]["note"]["body"], "Looking into it");
    let only_state = get_ok(
        &app,
        &token,
        &format!("/api/v1/events?types=incident.state_changed&after={after}"),
    )
    .await;
    assert_eq!(items(&only_state).len(), 2);
}

/// History is the incident's audit trail, newest first, with field diffs.
async fn history_is_newest_first_with_diffs(app: TestApp) {
    let (agent, token) = app.user_with_roles("hank", &["agent"]).await;
    let incident = create_incident(&app, &token, json!({"title": "Disk full"})).await;
    let id = text(&incident, "id");
    patched(
        &app,
        &token,
        &id,
        json!({"urgency": "high", "title": "Disk full on db1"}),
    )
    .await;
    act(&app, &token, &id, json!({"action": "start"})).await;
    let response = add_note(&app, &token, &id, "internal", "cleaning logs").await;
    assert_eq!(response.status(), StatusCode::CREATED);

    let history = get_ok(
        &app,
        &token,
        &format!("{INCIDENTS}/{}/history", text(&incident, "number")),
    )
    .await;
    let entries = items(&history);
    let actions: Vec<&str> = entries
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["add_work_note", "start", "update", "create"]);
    let times: Vec<chrono::DateTime<chrono::FixedOffset>> = entries
        .iter()
        .map(|e| chrono::DateTime::parse_from_rfc3339(e["at"].as_str().unwrap()).unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "{times:?}");
    assert_eq!(
        entries[2]["changes"],
        json!({"title": ["Disk full", "Disk full on db1"], "urgency": ["medium", "high"],
               "priority": ["p3", "p2"]})
    );
    assert_eq!(
        entries[1]["changes"]["state"],
        json!(["new", "in_progress"])
    );
    assert_eq!(entries[3]["changes"]["title"], json!([null, "Disk full"]));
    for entry in &entries {
        assert_eq!(entry["entity_id"], id.as_str());
        assert_eq!(entry["actor"]["id"], agent["id"]);
        assert_eq!(entry["actor"]["username"], "hank");
    }
    // Pages follow the same order.
    let first = get_ok(&app, &token, &format!("{INCIDENTS}/{id}/history?limit=3")).await;
    let cursor = text(&first, "next_cursor");
    let rest = get_ok(
        &app,
        &token,
        &format!("{INCIDENTS}/{id}/history?limit=3&cursor={cursor}"),
    )
    .await;
    let paged: Vec<Value> = items(&first).into_iter().chain(items(&rest)).collect();
    assert_eq!(paged, entries);
    assert!(rest["next_cursor"].is_null());
}

/// External references travel with an incident through create, get, list and PATCH; an
/// incident without any reads none (and the list of a page mixes both).
async fn external_refs_follow_the_incident(app: TestApp) {
    let (_, token) = app.user_with_roles("xena", &["agent"]).await;
    let (status, plain) = read(
        app.request(Method::POST, INCIDENTS, &token)
            .json(&json!({"title": "No references"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{plain}");
    let (status, linked) = read(
        app.request(Method::POST, INCIDENTS, &token)
            .json(&json!({"title": "From the CRM",
                           "external_refs": [{"system": "crm", "id": "C-9"}]}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{linked}");
    let crm = json!([{"system": "crm", "id": "C-9"}]);
    assert_eq!(linked["external_refs"], crm);
    let number = text(&linked, "number");
    let refs_in_list = |page: &Value| -> Vec<(String, Value)> {
        items(page)
            .iter()
            .map(|i| (text(i, "number"), i["external_refs"].clone()))
            .collect()
    };
    let get = get_ok(&app, &token, &format!("{INCIDENTS}/{number}")).await;
    assert_eq!(get["external_refs"], crm);
    let page = get_ok(&app, &token, INCIDENTS).await;
    assert_eq!(
        refs_in_list(&page),
        [
            (number.clone(), crm.clone()),
            (text(&plain, "number"), json!([]))
        ]
    );
    let erp = json!([{"system": "erp", "id": "E-1"}]);
    for refs in [json!([]), erp.clone()] {
        let after = patched(&app, &token, &number, json!({"external_refs": refs})).await;
        assert_eq!(after["external_refs"], refs);
        let get = get_ok(&app, &token, &format!("{INCIDENTS}/{number}")).await;
        assert_eq!(get["external_refs"], refs);
        let page = get_ok(&app, &token, INCIDENTS).await;
        assert_eq!(refs_in_list(&page)[0], (number.clone(), refs));
    }
}

on_both_backends!(
    full_lifecycle_from_report_to_confirmation,
    priority_matrix_and_recalculation,
    patch_rejects_derived_fields_and_writes_nothing,
    unknown_references_are_refused_naming_the_field,
    assignment_rules_route_new_incidents,
    requesters_are_isolated,
    major_incident_declaration,
    parent_and_child_incidents,
    child_of_a_final_parent_does_not_offer_reopen,
    parent_given_by_number_is_handled_cleanly,
    patch_assignment_follows_the_rules,
    incidents_of_a_deactivated_caller_can_still_be_worked,
    idempotent_create_makes_one_incident,
    incident_events_reach_the_feed,
    history_is_newest_first_with_diffs,
    external_refs_follow_the_incident,
);
