//! The access policy of the service as a table: for every route of the published contract, what
//! no credential, each role, and an API token without the route's scope get. A route missing
//! from the table fails the test, so a new route cannot be forgotten. The README links here.
//!
//! API tokens: a token with scopes may call a route only with its family's scope
//! (`family:read` for GET, `family:write` otherwise), within its role; a token created without
//! scopes is read-only: an admin's scopeless token reads every route an admin reads and is
//! refused every other one, so no integration acts as full staff by default.
//!
//! Each route is called with ids that do not exist and an empty JSON body, so an admitted caller
//! gets a 404 or 422 (or a 2xx for lists) and nothing changes; what the table checks is the
//! authentication and role gate in front of each handler.

use itsm_integration_tests::reqwest::{Method, StatusCode};
use itsm_integration_tests::serde_json::json;
use itsm_integration_tests::{on_both_backends, read, TestApp};

/// Roles in the order of each row's outcomes.
const ROLES: [&str; 6] = [
    "admin",
    "agent",
    "requester",
    "change_manager",
    "problem_manager",
    "integration",
];

// Outcomes, one letter per role:
//   A  admitted: past the gate (any status but 401 and 403)
//   F  forbidden: 403
//   H  hidden: 404, as if the resource type did not exist for this role
//   ?  decided by the handler on the record itself (any status but 401)
const ADMINS: &str = "AFFFFF";
const STAFF: &str = "AAFAAF";
const STAFF_AND_INTEGRATIONS: &str = "AAFAAA";
const CMDB_WRITERS: &str = "AFFAFA";
/// Webhooks: integrations and admins.
const INTEGRATIONS: &str = "AFFFFA";
const ANY_USER: &str = "AAAAAA";
/// Incidents: staff and integrations work them, requesters their own.
const INCIDENTS: &str = "AAAAAA";
const INCIDENT_WORK: &str = "AA?AAA";
/// Problems: staff and integrations; change managers are refused, requesters see nothing.
const PROBLEMS: &str = "AAHFAA";
const PROBLEM_WORK: &str = "A?HF??";

/// Changes: staff and integrations work them, requesters request their own; problem
/// managers are refused.
const CHANGES: &str = "AAAAFA";
const CHANGE_STAFF: &str = "AAFAFA";
const CHANGE_WORK: &str = "AA?AFA";
const CHANGE_MANAGERS: &str = "AFFAFF";

/// `(operationId, needs a credential, outcome per role)`.
const POLICY: &[(&str, bool, &str)] = &[
    ("healthz", false, ANY_USER),
    ("readyz", false, ANY_USER),
    ("get_metrics", true, ADMINS),
    ("issue_token", false, ANY_USER),
    ("logout", true, ANY_USER),
    ("change_my_password", true, ANY_USER),
    ("get_me", true, ANY_USER),
    ("create_api_token", true, ADMINS),
    ("list_api_tokens", true, ADMINS),
    ("revoke_api_token", true, ADMINS),
    ("create_user", true, ADMINS),
    ("list_users", true, STAFF),
    ("get_user", true, STAFF),
    ("update_user", true, ADMINS),
    ("upsert_user_by_external_ref", true, ADMINS),
    ("create_group", true, ADMINS),
    ("list_groups", true, STAFF),
    ("get_group", true, STAFF),
    ("update_group", true, ADMINS),
    ("upsert_group_by_external_ref", true, ADMINS),
    ("list_group_members", true, STAFF),
    ("add_group_member", true, ADMINS),
    ("remove_group_member", true, ADMINS),
    ("list_audit_events", true, ADMINS),
    ("list_events", true, STAFF_AND_INTEGRATIONS),
    ("create_assignment_rule", true, ADMINS),
    ("list_assignment_rules", true, STAFF),
    ("get_assignment_rule", true, STAFF),
    ("replace_assignment_rule", true, ADMINS),
    ("delete_assignment_rule", true, ADMINS),
    ("create_incident", true, INCIDENTS),
    ("list_incidents", true, INCIDENTS),
    ("get_incident", true, INCIDENTS),
    ("update_incident", true, INCIDENT_WORK),
    ("upsert_incident_by_external_ref", true, INCIDENT_WORK),
    ("transition_incident", true, INCIDENT_WORK),
    ("add_incident_note", true, INCIDENTS),
    ("list_incident_notes", true, INCIDENTS),
    ("incident_history", true, INCIDENTS),
    ("incident_slas", true, INCIDENTS),
    ("create_problem", true, PROBLEM_WORK),
    ("upsert_problem_by_external_ref", true, PROBLEM_WORK),
    ("create_problem_from_incident", true, PROBLEM_WORK),
    ("list_problems", true, PROBLEMS),
    ("get_problem", true, PROBLEMS),
    ("update_problem", true, PROBLEM_WORK),
    ("transition_problem", true, PROBLEM_WORK),
    ("link_problem_incidents", true, PROBLEM_WORK),
    ("list_problem_incidents", true, PROBLEMS),
    ("unlink_problem_incident", true, PROBLEM_WORK),
    ("add_problem_note", true, PROBLEMS),
    ("list_problem_notes", true, PROBLEMS),
    ("problem_history", true, PROBLEMS),
    ("problem_slas", true, PROBLEMS),
    ("search_known_errors", true, PROBLEMS),
    ("matching_known_errors", true, PROBLEMS),
    ("create_change", true, CHANGES),
    ("list_changes", true, CHANGES),
    ("change_calendar", true, CHANGE_STAFF),
    ("get_change", true, CHANGES),
    ("update_change", true, CHANGE_WORK),
    ("transition_change", true, CHANGES),
    ("add_change_note", true, CHANGES),
    ("list_change_notes", true, CHANGES),
    ("change_history", true, CHANGES),
    ("list_change_approvals", true, CHANGES),
    ("decide_change_approval", true, ANY_USER),
    ("change_conflicts", true, CHANGES),
    ("my_approvals", true, ANY_USER),
    ("create_change_approval_policy", true, CHANGE_MANAGERS),
    (
        "list_change_approval_policies",
        true,
        STAFF_AND_INTEGRATIONS,
    ),
    ("get_change_approval_policy", true, STAFF_AND_INTEGRATIONS),
    ("replace_change_approval_policy", true, CHANGE_MANAGERS),
    ("delete_change_approval_policy", true, CHANGE_MANAGERS),
    ("create_standard_change_template", true, CHANGE_MANAGERS),
    (
        "list_standard_change_templates",
        true,
        STAFF_AND_INTEGRATIONS,
    ),
    ("get_standard_change_template", true, STAFF_AND_INTEGRATIONS),
    ("replace_standard_change_template", true, CHANGE_MANAGERS),
    ("delete_standard_change_template", true, CHANGE_MANAGERS),
    ("create_change_freeze_window", true, CHANGE_MANAGERS),
    ("list_change_freeze_windows", true, STAFF_AND_INTEGRATIONS),
    ("get_change_freeze_window", true, STAFF_AND_INTEGRATIONS),
    ("replace_change_freeze_window", true, CHANGE_MANAGERS),
    ("delete_change_freeze_window", true, CHANGE_MANAGERS),
    ("create_ci_class", true, ADMINS),
    ("list_ci_classes", true, STAFF_AND_INTEGRATIONS),
    ("get_ci_class", true, STAFF_AND_INTEGRATIONS),
    ("update_ci_class", true, ADMINS),
    ("delete_ci_class", true, ADMINS),
    (
        "get_ci_class_source_precedence",
        true,
        STAFF_AND_INTEGRATIONS,
    ),
    ("set_ci_class_source_precedence", true, ADMINS),
    ("create_configuration_item", true, CMDB_WRITERS),
    (
        "upsert_configuration_item_by_external_ref",
        true,
        CMDB_WRITERS,
    ),
    ("list_configuration_items", true, STAFF_AND_INTEGRATIONS),
    ("get_configuration_item", true, STAFF_AND_INTEGRATIONS),
    ("update_configuration_item", true, CMDB_WRITERS),
    (
        "list_configuration_item_relationships",
        true,
        STAFF_AND_INTEGRATIONS,
    ),
    ("configuration_item_impact", true, STAFF_AND_INTEGRATIONS),
    ("configuration_item_history", true, STAFF_AND_INTEGRATIONS),
    ("reconcile_configuration_items", true, CMDB_WRITERS),
    ("create_ci_relationship", true, CMDB_WRITERS),
    ("get_ci_relationship", true, STAFF_AND_INTEGRATIONS),
    ("delete_ci_relationship", true, CMDB_WRITERS),
    ("configuration_item_tickets", true, STAFF_AND_INTEGRATIONS),
    ("create_calendar", true, ADMINS),
    ("list_calendars", true, STAFF_AND_INTEGRATIONS),
    ("get_calendar", true, STAFF_AND_INTEGRATIONS),
    ("replace_calendar", true, ADMINS),
    ("delete_calendar", true, ADMINS),
    ("create_sla_policy", true, ADMINS),
    ("list_sla_policies", true, STAFF_AND_INTEGRATIONS),
    ("get_sla_policy", true, STAFF_AND_INTEGRATIONS),
    ("replace_sla_policy", true, ADMINS),
    ("delete_sla_policy", true, ADMINS),
    ("list_sla_timers", true, STAFF_AND_INTEGRATIONS),
    ("get_sla_timer", true, STAFF_AND_INTEGRATIONS),
    ("sla_timer_timeline", true, STAFF_AND_INTEGRATIONS),
    ("recalculate_sla_timer", true, ADMINS),
    // Alert intake: an admin, or an API token of the integration role (a signed-in
    // integration user is refused; see alerts.rs for the tokens).
    ("receive_alertmanager", true, ADMINS),
    ("receive_alerts", true, ADMINS),
    ("list_alerts", true, STAFF_AND_INTEGRATIONS),
    ("get_alert", true, STAFF_AND_INTEGRATIONS),
    ("create_alert_rule", true, ADMINS),
    ("list_alert_rules", true, STAFF_AND_INTEGRATIONS),
    ("get_alert_rule", true, STAFF_AND_INTEGRATIONS),
    ("replace_alert_rule", true, ADMINS),
    ("delete_alert_rule", true, ADMINS),
    ("create_webhook", true, INTEGRATIONS),
    ("list_webhooks", true, INTEGRATIONS),
    ("get_webhook", true, INTEGRATIONS),
    ("update_webhook", true, INTEGRATIONS),
    ("delete_webhook", true, INTEGRATIONS),
    ("rotate_webhook_secret", true, INTEGRATIONS),
    ("list_webhook_deliveries", true, INTEGRATIONS),
    ("redeliver_webhook_delivery", true, INTEGRATIONS),
    ("test_webhook", true, INTEGRATIONS),
];

/// The routes of the `alerts` scope family: the token scoped to `alerts:write` holds theirs,
/// so they are checked with a token scoped to another family.
fn in_alerts_family(path: &str) -> bool {
    [
        "/api/v1/alerts",
        "/api/v1/alert-rules",
        "/api/v1/integrations/",
    ]
    .iter()
    .any(|prefix| path.starts_with(prefix))
}

/// Every operation of the published contract: `(operationId, method, path with ids filled in)`.
async fn operations(app: &TestApp) -> Vec<(String, Method, String)> {
    let (status, spec) = read(
        app.anonymous(Method::GET, "/openapi.json")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let missing = uuid::Uuid::new_v4().to_string();
    let mut operations = Vec::new();
    for (template, item) in spec["paths"].as_object().unwrap() {
        let path: String = template
            .split('/')
            .map(|segment| {
                if segment.starts_with('{') {
                    missing.as_str()
                } else {
                    segment
                }
            })
            .collect::<Vec<_>>()
            .join("/");
        for (method, operation) in item.as_object().unwrap() {
            let Ok(method) = method.to_uppercase().parse::<Method>() else {
                continue;
            };
            let id = operation["operationId"].as_str().unwrap().to_owned();
            operations.push((id, method, path.clone()));
        }
    }
    operations
}

async fn call(app: &TestApp, method: &Method, path: &str, token: Option<&str>) -> StatusCode {
    let mut request = app.anonymous(method.clone(), path);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if matches!(*method, Method::POST | Method::PUT | Method::PATCH) {
        let content_type = if *method == Method::PATCH {
            "application/merge-patch+json"
        } else {
            "application/json"
        };
        request = request
            .header("content-type", content_type)
            .body(json!({}).to_string());
    }
    request.send().await.unwrap().status()
}

fn admits(outcome: char, status: StatusCode) -> bool {
    match outcome {
        'A' => status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN,
        'F' => status == StatusCode::FORBIDDEN,
        'H' => status == StatusCode::NOT_FOUND,
        _ => status != StatusCode::UNAUTHORIZED,
    }
}

async fn every_route_answers_each_role_as_the_policy_says(app: TestApp) {
    let mut tokens: Vec<(String, String)> = Vec::new();
    for role in ROLES {
        let username = format!("matrix-{}", role.replace('_', "-"));
        let (_, token) = app.user_with_roles(&username, &[role]).await;
        tokens.push((username, token));
    }
    // An admin API token scoped to the alerts family only: every other route that needs a
    // scope refuses it, whatever its role would allow.
    let response = app
        .admin(Method::POST, "/api/v1/api-tokens")
        .json(
            &json!({"name": "alerts-only", "role": "admin", "expires_at": null,
                      "scopes": ["alerts:write"]}),
        )
        .send()
        .await
        .unwrap();
    let (status, unscoped) = read(response).await;
    assert_eq!(status, StatusCode::CREATED, "{unscoped}");
    let out_of_scope = unscoped["token"].as_str().unwrap().to_owned();
    let response = app
        .admin(Method::POST, "/api/v1/api-tokens")
        .json(
            &json!({"name": "events-only", "role": "admin", "expires_at": null,
                      "scopes": ["events:read"]}),
        )
        .send()
        .await
        .unwrap();
    let (status, events_only) = read(response).await;
    assert_eq!(status, StatusCode::CREATED, "{events_only}");
    let out_of_alerts_scope = events_only["token"].as_str().unwrap().to_owned();
    let response = app
        .admin(Method::POST, "/api/v1/api-tokens")
        .json(&json!({"name": "read-only", "role": "admin", "expires_at": null}))
        .send()
        .await
        .unwrap();
    let (status, scopeless) = read(response).await;
    assert_eq!(status, StatusCode::CREATED, "{scopeless}");
    let read_only = scopeless["token"].as_str().unwrap().to_owned();
    let mut wrong: Vec<String> = Vec::new();
    let operations = operations(&app).await;
    for (id, method, path) in &operations {
        let Some((_, needs_credential, outcomes)) = POLICY.iter().find(|(op, ..)| op == id) else {
            wrong.push(format!("{id} ({method} {path}) is not in the access table"));
            continue;
        };
        let anonymous = call(&app, method, path, None).await;
        if *needs_credential != (anonymous == StatusCode::UNAUTHORIZED) {
            wrong.push(format!("{id}: no credential got {anonymous}"));
        }
        for ((role, outcome), (username, token)) in ROLES.iter().zip(outcomes.chars()).zip(&tokens)
        {
            // Logout revokes the token it is called with: a token of its own.
            let fresh;
            let token = if id == "logout" {
                fresh = app
                    .token_for(username, &format!("{username}-password-123"))
                    .await;
                &fresh
            } else {
                token
            };
            let status = call(&app, method, path, Some(token)).await;
            if !admits(outcome, status) {
                wrong.push(format!("{id} as {role}: expected {outcome}, got {status}"));
            }
        }
        let scope_free = !needs_credential
            || path == "/api/v1/me"
            || path.starts_with("/api/v1/me/")
            || path.starts_with("/api/v1/auth/");
        if !scope_free {
            let token = if in_alerts_family(path) {
                &out_of_alerts_scope
            } else {
                &out_of_scope
            };
            let status = call(&app, method, path, Some(token)).await;
            if status != StatusCode::FORBIDDEN {
                wrong.push(format!("{id} by a token without its scope: got {status}"));
            }
            let reads = matches!(*method, Method::GET | Method::HEAD);
            let status = call(&app, method, path, Some(&read_only)).await;
            let expected = if reads { 'A' } else { 'F' };
            if !admits(expected, status) {
                wrong.push(format!(
                    "{id} by an admin token without scopes: expected {expected}, got {status}"
                ));
            }
        }
    }
    for (op, ..) in POLICY {
        if !operations.iter().any(|(id, ..)| id == op) {
            wrong.push(format!("{op} is in the table but not in the contract"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

on_both_backends!(every_route_answers_each_role_as_the_policy_says);
