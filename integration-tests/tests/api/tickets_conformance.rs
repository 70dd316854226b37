//! The ticket conformance suite: what every ticket type promises, written once and run for each
//! type on both backends. A new ticket type adds one `TicketType` and one line to
//! `conformance!`.

use itsm_integration_tests::reqwest::{Method, StatusCode};
use itsm_integration_tests::serde_json::{json, Value};
use itsm_integration_tests::{expect_conflict_on, expect_problem, header, read, TestApp};

use crate::incidents::{actions, agent_in, text};

/// What the suite needs to know of a ticket type.
pub(crate) struct TicketType {
    pub kind: &'static str,
    pub path: &'static str,
    pub prefix: &'static str,
    /// A role that creates tickets of the type and moves them along.
    pub worker_role: &'static str,
    /// An action allowed on a new ticket, and the state it leads to.
    pub first_action: &'static str,
    pub first_state: &'static str,
    /// An action a new ticket refuses.
    pub refused_action: &'static str,
    /// Whether requesters see their own tickets of the type (otherwise every route is 404).
    pub requesters_see_own: bool,
}

pub(crate) const INCIDENT: TicketType = TicketType {
    kind: "incident",
    path: "/api/v1/incidents",
    prefix: "INC",
    worker_role: "agent",
    first_action: "start",
    first_state: "in_progress",
    refused_action: "close",
    requesters_see_own: true,
};

pub(crate) const PROBLEM: TicketType = TicketType {
    kind: "problem",
    path: "/api/v1/problems",
    prefix: "PRB",
    worker_role: "problem_manager",
    first_action: "assess",
    first_state: "assessed",
    refused_action: "close",
    requesters_see_own: false,
};

pub(crate) const CHANGE: TicketType = TicketType {
    kind: "change",
    path: "/api/v1/changes",
    prefix: "CHG",
    worker_role: "agent",
    first_action: "assess",
    first_state: "assess",
    refused_action: "close",
    requesters_see_own: true,
};

impl TicketType {
    async fn worker(&self, app: &TestApp, name: &str) -> String {
        app.user_with_roles(name, &[self.worker_role]).await.1
    }

    async fn create(&self, app: &TestApp, token: &str, title: &str) -> (StatusCode, Value, String) {
        let response = app
            .request(Method::POST, self.path, token)
            .json(&json!({"title": title, "description": "conformance"}))
            .send()
            .await
            .expect("create");
        let location = header(&response, "location").unwrap_or_default();
        let (status, body) = read(response).await;
        (status, body, location)
    }

    async fn created(&self, app: &TestApp, token: &str, title: &str) -> Value {
        let (status, body, _) = self.create(app, token, title).await;
        assert_eq!(status, StatusCode::CREATED, "{}: {body}", self.kind);
        body
    }

    fn at(&self, id: &str, rest: &str) -> String {
        format!("{}/{id}{rest}", self.path)
    }
}

async fn get(app: &TestApp, token: &str, path: &str) -> (StatusCode, Value) {
    read(
        app.request(Method::GET, path, token)
            .send()
            .await
            .expect("GET"),
    )
    .await
}

/// Numbers from the database with the type's prefix; the id and the number both name the
/// ticket; `Location` points at it.
async fn numbering_and_paths(app: TestApp, t: &TicketType) {
    let worker = t.worker(&app, "wanda").await;
    let mut numbers = Vec::new();
    for n in 0..3 {
        let (status, ticket, location) = t.create(&app, &worker, &format!("Ticket {n}")).await;
        assert_eq!(status, StatusCode::CREATED, "{ticket}");
        let number = text(&ticket, "number");
        assert_eq!(location, t.at(&number, ""));
        assert_eq!(ticket["version"], 1);
        numbers.push(number);
    }
    for (n, number) in numbers.iter().enumerate() {
        assert_eq!(*number, format!("{}{:07}", t.prefix, n + 1));
    }
    let (status, by_number) = get(&app, &worker, &t.at(&numbers[1], "")).await;
    assert_eq!(status, StatusCode::OK);
    let (status, by_id) = get(&app, &worker, &t.at(&text(&by_number, "id"), "")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(by_number, by_id);
    let missing = format!("{}9999999", t.prefix);
    let response = app
        .request(Method::GET, &t.at(&missing, ""), &worker)
        .send()
        .await
        .unwrap();
    expect_problem(response, StatusCode::NOT_FOUND).await;
}

/// Allowed actions move the ticket; refused ones are 409 with the allowed actions; a stale
/// `If-Match` is 412 and changes nothing.
async fn transitions_and_if_match(app: TestApp, t: &TicketType) {
    let worker = t.worker(&app, "wanda").await;
    let ticket = t.created(&app, &worker, "Transitions").await;
    let number = text(&ticket, "number");
    let offered = actions(&ticket);
    assert!(offered.contains(&t.first_action.to_owned()), "{offered:?}");

    let response = app
        .request(Method::POST, &t.at(&number, "/transitions"), &worker)
        .json(&json!({"action": t.refused_action}))
        .send()
        .await
        .unwrap();
    let refused = expect_problem(response, StatusCode::CONFLICT).await;
    assert_eq!(actions(&refused), offered);

    let response = app
        .request(Method::POST, &t.at(&number, "/transitions"), &worker)
        .header("If-Match", "\"7\"")
        .json(&json!({"action": t.first_action}))
        .send()
        .await
        .unwrap();
    expect_problem(response, StatusCode::PRECONDITION_FAILED).await;

    let response = app
        .request(Method::POST, &t.at(&number, "/transitions"), &worker)
        .header("If-Match", "\"1\"")
        .json(&json!({"action": t.first_action}))
        .send()
        .await
        .unwrap();
    assert_eq!(header(&response, "etag").as_deref(), Some("\"2\""));
    let (status, moved) = read(response).await;
    assert_eq!(status, StatusCode::OK, "{moved}");
    assert_eq!(moved["state"], t.first_state);
    assert_eq!(moved["version"], 2);
}

/// Notes keep their visibility; history lists the changes newest first; the feed carries the
/// standard events.
async fn notes_history_and_events(app: TestApp, t: &TicketType) {
    let worker = t.worker(&app, "wanda").await;
    let ticket = t.created(&app, &worker, "Notes").await;
    let number = text(&ticket, "number");
    for (visibility, body) in [("internal", "Checked the logs"), ("public", "We are on it")] {
        let response = app
            .request(Method::POST, &t.at(&number, "/notes"), &worker)
            .json(&json!({"visibility": visibility, "body": body}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
    }
    let (_, notes) = get(&app, &worker, &t.at(&number, "/notes")).await;
    assert_eq!(notes["items"].as_array().map(Vec::len), Some(2), "{notes}");
    let (_, public) = get(&app, &worker, &t.at(&number, "/notes?visibility=public")).await;
    assert_eq!(public["items"][0]["body"], "We are on it");
    assert_eq!(public["items"].as_array().map(Vec::len), Some(1));

    let response = app
        .request(Method::POST, &t.at(&number, "/transitions"), &worker)
        .json(&json!({"action": t.first_action}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let (_, history) = get(&app, &worker, &t.at(&number, "/history")).await;
    let history_actions: Vec<&str> = history["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert_eq!(history_actions.first(), Some(&t.first_action), "{history}");
    assert_eq!(history_actions.last(), Some(&"create"), "{history}");
    assert_eq!(
        history["items"][0]["changes"]["state"],
        json!(["new", t.first_state])
    );

    let id = text(&ticket, "id");
    let types: Vec<String> = app
        .events_after(0)
        .await
        .iter()
        .filter(|e| e["entity_id"] == id.as_str())
        .filter_map(|e| e["type"].as_str().map(str::to_owned))
        .collect();
    for suffix in ["created", "note_added", "state_changed"] {
        let expected = format!("{}.{suffix}", t.kind);
        assert!(types.contains(&expected), "{expected} missing: {types:?}");
    }
}

/// A state filter returns exactly its tickets, and walking the pages with the cursor while
/// tickets are created returns each original ticket once.
async fn list_filters_and_cursor_stability(app: TestApp, t: &TicketType) {
    let worker = t.worker(&app, "wanda").await;
    let mut originals = Vec::new();
    for n in 0..5 {
        originals.push(text(
            &t.created(&app, &worker, &format!("Listed {n}")).await,
            "number",
        ));
    }
    let response = app
        .request(Method::POST, &t.at(&originals[0], "/transitions"), &worker)
        .json(&json!({"action": t.first_action}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let (_, moved) = get(
        &app,
        &worker,
        &format!("{}?state={}", t.path, t.first_state),
    )
    .await;
    let moved: Vec<String> = moved["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| text(i, "number"))
        .collect();
    assert_eq!(moved, [originals[0].clone()]);

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("{}?limit=2", t.path);
        if let Some(cursor) = &cursor {
            path.push_str(&format!("&cursor={cursor}"));
        }
        let (status, page) = get(&app, &worker, &path).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        seen.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| text(i, "number")),
        );
        t.created(&app, &worker, "Inserted meanwhile").await;
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    originals.reverse();
    assert_eq!(seen, originals);
    let response = app
        .request(Method::GET, &format!("{}?state=nonsense", t.path), &worker)
        .send()
        .await
        .unwrap();
    expect_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
}

/// Requesters see only their own tickets of a type they may see, and nothing of other types.
async fn requester_isolation(app: TestApp, t: &TicketType) {
    let worker = t.worker(&app, "wanda").await;
    let (_, rita) = app.user_with_roles("rita", &["requester"]).await;
    let (_, rolf) = app.user_with_roles("rolf", &["requester"]).await;
    let theirs = if t.requesters_see_own {
        t.created(&app, &rita, "Mine").await
    } else {
        let (status, _, _) = t.create(&app, &rita, "Mine").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        t.created(&app, &worker, "Staff only").await
    };
    let number = text(&theirs, "number");
    let (status, _) = get(&app, &rolf, &t.at(&number, "")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = get(&app, &rita, &t.at(&number, "")).await;
    let expected = if t.requesters_see_own {
        StatusCode::OK
    } else {
        StatusCode::NOT_FOUND
    };
    assert_eq!(status, expected);
    let (status, page) = get(&app, &rolf, t.path).await;
    if t.requesters_see_own {
        assert_eq!(page["items"].as_array().map(Vec::len), Some(0), "{page}");
    } else {
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
}

/// An assignee comes with a group (422 otherwise, nothing stored) and must be a member of it:
/// membership is stored, so an outsider is a conflict (409), on create and on PATCH alike.
async fn assignment_needs_a_member_of_the_group(app: TestApp, t: &TicketType) {
    let worker = t.worker(&app, "wanda").await;
    let desk = app.group("Desk").await;
    let (member, _) = agent_in(&app, "mona", &desk).await;
    let (outsider, _) = app.user_with_roles("otto", &["agent"]).await;
    let create = |body: Value| {
        app.request(Method::POST, t.path, &worker)
            .json(&body)
            .send()
    };
    let refused = expect_problem(
        create(json!({"title": "No group", "assignee": text(&member, "id")}))
            .await
            .unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(refused["errors"][0]["field"], "assignee", "{refused}");
    expect_conflict_on(
        create(
            json!({"title": "Outsider", "assignment_group": text(&desk, "id"),
                      "assignee": text(&outsider, "id")}),
        )
        .await
        .unwrap(),
        "assignee",
    )
    .await;
    let (_, page) = get(&app, &worker, t.path).await;
    assert_eq!(page["items"].as_array().map(Vec::len), Some(0), "{page}");

    let response = create(
        json!({"title": "Member", "assignment_group": text(&desk, "id"),
                                 "assignee": text(&member, "id")}),
    )
    .await
    .unwrap();
    let (status, ticket) = read(response).await;
    assert_eq!(status, StatusCode::CREATED, "{ticket}");
    assert_eq!(ticket["assignee"], member["id"]);
    let response = app
        .request(Method::PATCH, &t.at(&text(&ticket, "id"), ""), &worker)
        .json(&json!({"assignee": text(&outsider, "id")}))
        .send()
        .await
        .unwrap();
    expect_conflict_on(response, "assignee").await;
    let (_, unchanged) = get(&app, &worker, &t.at(&text(&ticket, "id"), "")).await;
    assert_eq!(unchanged["version"], ticket["version"]);
    assert_eq!(unchanged["assignee"], member["id"]);
}

/// One test per (ticket type, promise), each on both backends.
macro_rules! conformance {
    ($($ty:ident: $($check:ident),+;)+) => {
        $(
            #[allow(non_snake_case)]
            mod $ty {
                use super::*;
                $(
                    async fn $check(app: TestApp) {
                        super::$check(app, &super::$ty).await
                    }
                )+
                itsm_integration_tests::on_both_backends!($($check),+);
            }
        )+
    };
}

conformance! {
    INCIDENT: numbering_and_paths, transitions_and_if_match, notes_history_and_events,
        list_filters_and_cursor_stability, requester_isolation,
        assignment_needs_a_member_of_the_group;
    PROBLEM: numbering_and_paths, transitions_and_if_match, notes_history_and_events,
        list_filters_and_cursor_stability, requester_isolation,
        assignment_needs_a_member_of_the_group;
    CHANGE: numbering_and_paths, transitions_and_if_match, notes_history_and_events,
        list_filters_and_cursor_stability, requester_isolation,
        assignment_needs_a_member_of_the_group;
}
