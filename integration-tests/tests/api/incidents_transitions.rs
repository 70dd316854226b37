//! The incident state machine through the API: every action from every state, for staff and for
//! the incident's own requester.

use itsm_integration_tests::reqwest::StatusCode;
use itsm_integration_tests::serde_json::{json, Value};
use itsm_integration_tests::{expect_problem, on_both_backends, TestApp};

use super::incidents::{act, actions, agent_in, create_incident, fetch, text, transition};

const ACTIONS: [&str; 9] = [
    "start",
    "assign",
    "hold",
    "resume",
    "resolve",
    "reopen",
    "close",
    "cancel",
    "declare_major",
];

/// A complete, valid request for `action`.
fn request(action: &str, assignee: &str) -> Value {
    match action {
        "assign" => json!({"action": action, "assignee": assignee}),
        "hold" => json!({"action": action, "on_hold_reason": "awaiting_vendor"}),
        "resolve" => json!({"action": action, "resolution_code": "fixed",
                            "resolution_notes": "Replaced the cable"}),
        "cancel" | "declare_major" => json!({"action": action, "reason": "because"}),
        _ => json!({"action": action}),
    }
}

/// One starting point: how to reach it and what each party may do there.
struct Row {
    state: &'static str,
    major: bool,
    path: &'static [&'static str],
    staff: &'static [&'static str],
    caller: &'static [&'static str],
}

const TABLE: [Row; 7] = [
    Row {
        state: "new",
        major: false,
        path: &[],
        staff: &["start", "assign", "cancel", "declare_major"],
        caller: &[],
    },
    Row {
        state: "in_progress",
        major: false,
        path: &["start"],
        staff: &["assign", "hold", "resolve", "cancel", "declare_major"],
        caller: &[],
    },
    Row {
        state: "on_hold",
        major: false,
        path: &["start", "hold"],
        staff: &["assign", "resume", "cancel", "declare_major"],
        caller: &[],
    },
    Row {
        state: "resolved",
        major: false,
        path: &["start", "resolve"],
        staff: &["reopen", "close"],
        caller: &["reopen", "close"],
    },
    Row {
        state: "closed",
        major: false,
        path: &["start", "resolve", "close"],
        staff: &[],
        caller: &[],
    },
    Row {
        state: "canceled",
        major: false,
        path: &["cancel"],
        staff: &[],
        caller: &[],
    },
    Row {
        state: "in_progress",
        major: true,
        path: &["start", "declare_major"],
        staff: &["assign", "hold", "resolve", "cancel"],
        caller: &[],
    },
];

/// The state an allowed `action` leads to from `from`.
fn state_after(action: &str, from: &str) -> &'static str {
    match action {
        "start" | "resume" | "reopen" => "in_progress",
        "assign" if from == "on_hold" => "on_hold",
        "assign" => "in_progress",
        "hold" => "on_hold",
        "resolve" => "resolved",
        "close" => "closed",
        "cancel" => "canceled",
        "declare_major" => match from {
            "new" => "new",
            "in_progress" => "in_progress",
            _ => "on_hold",
        },
        other => panic!("unknown action {other}"),
    }
}

struct Desk {
    group_id: String,
    agent_id: String,
    agent: String,
    requester_id: String,
    requester: String,
}

/// A fresh incident of the requester, brought to the row's state by staff.
async fn reach(app: &TestApp, desk: &Desk, row: &Row) -> Value {
    let incident = create_incident(
        app,
        &desk.agent,
        json!({"title": format!("to {}", row.state), "caller": desk.requester_id,
               "assignment_group": desk.group_id}),
    )
    .await;
    let id = text(&incident, "id");
    let mut current = incident;
    for action in row.path {
        current = act(app, &desk.agent, &id, request(action, &desk.agent_id)).await;
    }
    assert_eq!(current["state"], row.state, "{current}");
    assert_eq!(current["major"], row.major, "{current}");
    current
}

fn owned(list: &[&str]) -> Vec<String> {
    list.iter().map(|a| (*a).to_owned()).collect()
}

async fn every_action_from_every_state(app: TestApp) {
    let group = app.group("Field Services").await;
    let (agent_user, agent) = agent_in(&app, "tess", &group).await;
    let (requester_user, requester) = app.user_with_roles("rory", &["requester"]).await;
    let desk = Desk {
        group_id: text(&group, "id"),
        agent_id: text(&agent_user, "id"),
        agent,
        requester_id: text(&requester_user, "id"),
        requester,
    };
    for row in &TABLE {
        let label = format!("{}{}", row.state, if row.major { " (major)" } else { "" });
        let incident = reach(&app, &desk, row).await;
        let id = text(&incident, "id");
        assert_eq!(actions(&incident), owned(row.staff), "staff in {label}");
        let as_caller = fetch(&app, &desk.requester, &id).await;
        assert_eq!(actions(&as_caller), owned(row.caller), "caller in {label}");

        // Refused actions: 409 with exactly the allowed ones, and nothing changes.
        for (token, allowed, who) in [
            (&desk.agent, row.staff, "staff"),
            (&desk.requester, row.caller, "caller"),
        ] {
            for action in ACTIONS.iter().filter(|a| !allowed.contains(a)) {
                let problem = expect_problem(
                    transition(&app, token, &id, request(action, &desk.agent_id)).await,
                    StatusCode::CONFLICT,
                )
                .await;
                assert_eq!(
                    actions(&problem),
                    owned(allowed),
                    "{who} {action} in {label}: {problem}"
                );
                assert!(
                    text(&problem, "type").ends_with("invalid-transition"),
                    "{problem}"
                );
            }
        }
        let unchanged = fetch(&app, &desk.agent, &id).await;
        assert_eq!(unchanged["version"], incident["version"], "{label}");
        assert_eq!(unchanged["state"], row.state);

        // Allowed actions: each on a fresh incident in that state.
        for (token, allowed, who) in [
            (&desk.agent, row.staff, "staff"),
            (&desk.requester, row.caller, "caller"),
        ] {
            for action in allowed {
                let fresh = reach(&app, &desk, row).await;
                let fresh_id = text(&fresh, "id");
                let after = act(&app, token, &fresh_id, request(action, &desk.agent_id)).await;
                assert_eq!(
                    after["state"],
                    state_after(action, row.state),
                    "{who} {action} in {label}"
                );
                assert_eq!(
                    after["version"],
                    fresh["version"].as_i64().unwrap() + 1,
                    "{who} {action} in {label}"
                );
                let stored = fetch(&app, &desk.agent, &fresh_id).await;
                match *action {
                    "assign" => assert_eq!(stored["assignee"], desk.agent_id.as_str()),
                    "declare_major" => assert_eq!(stored["major"], true),
                    "reopen" => assert_eq!(stored["reopen_count"], 1),
                    "hold" => assert_eq!(stored["on_hold_reason"], "awaiting_vendor"),
                    "resolve" => assert_eq!(stored["resolution_code"], "fixed"),
                    "cancel" | "close" => assert!(stored["closed_at"].is_string()),
                    _ => {}
                }
                if who == "caller" && *action == "close" {
                    let audit = app.audit_of("incident", &fresh_id).await;
                    assert_eq!(audit[0]["action"], "close_by_caller");
                }
            }
        }
    }
}

/// Unknown actions and malformed transition bodies are 422 naming the field.
async fn malformed_transitions_are_422(app: TestApp) {
    let (_, agent) = app.user_with_roles("uma", &["agent"]).await;
    let incident = create_incident(&app, &agent, json!({"title": "t"})).await;
    let id = text(&incident, "id");
    for (body, field) in [
        (json!({"action": "explode"}), "action"),
        (json!({}), "action"),
        (json!({"action": "start", "priority": "p1"}), "priority"),
        (
            json!({"action": "hold", "on_hold_reason": "lunch"}),
            "on_hold_reason",
        ),
        (
            json!({"action": "resolve", "resolution_code": "magic", "resolution_notes": "n"}),
            "resolution_code",
        ),
    ] {
        let problem = expect_problem(
            transition(&app, &agent, &id, body.clone()).await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        assert_eq!(
            itsm_integration_tests::error_fields(&problem),
            [field],
            "{body}: {problem}"
        );
    }
    expect_problem(
        transition(&app, &agent, "INC0009999", json!({"action": "start"})).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_eq!(fetch(&app, &agent, &id).await["version"], 1);
}

on_both_backends!(every_action_from_every_state, malformed_transitions_are_422);
