//! Incident lists: every filter, the sorts, keyset pagination under inserts, and word search.

use itsm_integration_tests::reqwest::{Method, StatusCode};
use itsm_integration_tests::serde_json::{json, Value};
use itsm_integration_tests::{
    error_fields, expect_problem, header, on_both_backends, read, Backend, TestApp,
};

use super::incidents::{
    act, agent_in, create_incident, items, numbers, numbers_of, patched, resolve_body, text,
    INCIDENTS,
};

/// Every item of the list at `INCIDENTS?query` as the holder of `token`, following cursors.
async fn list(app: &TestApp, token: &str, query: &[(&str, &str)]) -> Vec<Value> {
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut request = app.request(Method::GET, INCIDENTS, token).query(query);
        if let Some(cursor) = &cursor {
            request = request.query(&[("cursor", cursor)]);
        }
        let (status, page) = read(request.send().await.unwrap()).await;
        assert_eq!(status, StatusCode::OK, "{query:?}: {page}");
        all.extend(items(&page));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return all,
        }
    }
}

/// A list query and the incidents it must return.
type Case<'a> = (Vec<(&'a str, &'a str)>, Vec<&'a Value>);

async fn filters_return_exactly_the_matching_incidents(app: TestApp) {
    let network = app.group("Network").await;
    let hardware = app.group("Hardware").await;
    let (nils, nils_token) = agent_in(&app, "nils", &network).await;
    let (hal, _) = agent_in(&app, "hal", &hardware).await;
    let (rosa, rosa_token) = app.user_with_roles("rosa", &["requester"]).await;
    let (sam, _) = app.user_with_roles("sam", &["requester"]).await;
    let token = nils_token.as_str();
    let new = |title: &str, caller: &Value, extra: Value| {
        let mut body = json!({"title": title, "caller": text(caller, "id")});
        for (key, value) in extra.as_object().unwrap() {
            body[key] = value.clone();
        }
        body
    };

    let i1 = create_incident(
        &app,
        token,
        new(
            "VPN gateway down",
            &rosa,
            json!({"category": "network", "impact": "high", "urgency": "high",
                   "assignment_group": text(&network, "id"), "assignee": text(&nils, "id"),
                   "description": "Tunnels drop every minute"}),
        ),
    )
    .await;
    let i2 = create_incident(
        &app,
        token,
        new(
            "Switch port flapping",
            &sam,
            json!({"category": "network", "impact": "low", "urgency": "low",
                   "assignment_group": text(&network, "id")}),
        ),
    )
    .await;
    let i3 = create_incident(
        &app,
        token,
        new(
            "Monitor flickers",
            &rosa,
            json!({"category": "hardware", "assignment_group": text(&hardware, "id"),
                   "assignee": text(&hal, "id")}),
        ),
    )
    .await;
    act(
        &app,
        token,
        &text(&i3, "id"),
        json!({"action": "hold", "on_hold_reason": "awaiting_vendor"}),
    )
    .await;
    let i4 = create_incident(
        &app,
        token,
        new(
            "Payroll export fails",
            &sam,
            json!({"category": "software", "impact": "high", "urgency": "medium"}),
        ),
    )
    .await;
    act(&app, token, &text(&i4, "id"), json!({"action": "start"})).await;
    act(&app, token, &text(&i4, "id"), resolve_body()).await;
    let i5 = create_incident(
        &app,
        token,
        new(
            "Keyboard missing keys",
            &rosa,
            json!({"category": "hardware", "impact": "low", "urgency": "high"}),
        ),
    )
    .await;
    act(
        &app,
        token,
        &text(&i5, "id"),
        json!({"action": "declare_major", "reason": "CEO keyboard"}),
    )
    .await;
    let i6 = create_incident(
        &app,
        token,
        new(
            "VPN slow too",
            &sam,
            json!({"category": "network", "parent_id": text(&i1, "id")}),
        ),
    )
    .await;
    act(
        &app,
        token,
        &text(&i6, "id"),
        json!({"action": "cancel", "reason": "dup"}),
    )
    .await;
    // The last change of all, for updated_after.
    let touched = patched(
        &app,
        token,
        &text(&i2, "id"),
        json!({"description": "port 17"}),
    )
    .await;

    let all = [&i1, &i2, &i3, &i4, &i5, &i6];
    let t = |incident: &Value, field: &str| text(incident, field);
    let (network_id, hardware_id) = (t(&network, "id"), t(&hardware, "id"));
    let (nils_id, hal_id) = (t(&nils, "id"), t(&hal, "id"));
    let (rosa_id, sam_id) = (t(&rosa, "id"), t(&sam, "id"));
    let (i1_id, i2_created, i4_created) =
        (t(&i1, "id"), t(&i2, "created_at"), t(&i4, "created_at"));
    let touched_at = t(&touched, "updated_at");
    let cases: Vec<Case> = vec![
        (vec![], all.to_vec()),
        (vec![("state", "new")], vec![&i2, &i5]),
        (vec![("state", "in_progress")], vec![&i1]),
        (
            vec![("state", "new"), ("state", "on_hold")],
            vec![&i2, &i3, &i5],
        ),
        (vec![("state", "resolved")], vec![&i4]),
        (vec![("state", "canceled")], vec![&i6]),
        (vec![("state", "closed")], vec![]),
        (vec![("priority", "p3")], vec![&i3, &i5, &i6]),
        (vec![("priority", "p1"), ("priority", "p2")], vec![&i1, &i4]),
        (vec![("priority", "p5")], vec![&i2]),
        (vec![("assignment_group", &network_id)], vec![&i1, &i2]),
        (vec![("assignment_group", &hardware_id)], vec![&i3]),
        (vec![("assignee", &nils_id)], vec![&i1]),
        (vec![("assignee", &hal_id)], vec![&i3]),
        (vec![("caller", &rosa_id)], vec![&i1, &i3, &i5]),
        (vec![("caller", &sam_id)], vec![&i2, &i4, &i6]),
        (vec![("major", "true")], vec![&i5]),
        (vec![("major", "false")], vec![&i1, &i2, &i3, &i4, &i6]),
        (vec![("category", "hardware")], vec![&i3, &i5]),
        (vec![("category", "network")], vec![&i1, &i2, &i6]),
        (vec![("parent_id", &i1_id)], vec![&i6]),
        (vec![("created_after", &i4_created)], vec![&i4, &i5, &i6]),
        (vec![("created_before", &i4_created)], vec![&i1, &i2, &i3]),
        (
            vec![
                ("created_after", &i2_created),
                ("created_before", &i4_created),
            ],
            vec![&i2, &i3],
        ),
        (vec![("updated_after", &touched_at)], vec![&i2]),
        (vec![("q", "vpn")], vec![&i1, &i6]),
        (vec![("q", "tunnels")], vec![&i1]),
        (
            vec![("state", "in_progress"), ("assignment_group", &network_id)],
            vec![&i1],
        ),
        (vec![("category", "network"), ("priority", "p3")], vec![&i6]),
        (vec![("caller", &rosa_id), ("state", "new")], vec![&i5]),
    ];
    for (query, expected) in &cases {
        let found = list(&app, token, query).await;
        assert_eq!(numbers(&found), numbers_of(expected), "filter {query:?}");
        // Small pages give the same answer.
        let mut paged_query = query.clone();
        paged_query.push(("limit", "1"));
        let paged = list(&app, token, &paged_query).await;
        assert_eq!(numbers(&paged), numbers_of(expected), "paged {query:?}");
    }

    // A requester's filters apply within their own incidents only.
    let mine = list(&app, &rosa_token, &[("category", "network")]).await;
    assert_eq!(numbers(&mine), numbers_of(&[&i1]));
    let mine = list(&app, &rosa_token, &[("q", "vpn")]).await;
    assert_eq!(numbers(&mine), numbers_of(&[&i1]));

    // Bad filters are 422 naming the parameter.
    for (query, field) in [
        ("state=bogus", "state"),
        ("state=", "state"),
        ("priority=p9", "priority"),
        ("major=maybe", "major"),
        ("created_after=yesterday", "created_after"),
        ("updated_after=2024-13-01T00:00:00Z", "updated_after"),
        ("sort=title", "sort"),
        ("sort=-state", "sort"),
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("cursor=not-a-cursor", "cursor"),
        ("assigned_to=me", "assigned_to"),
    ] {
        let problem = expect_problem(
            app.request(Method::GET, &format!("{INCIDENTS}?{query}"), token)
                .send()
                .await
                .unwrap(),
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        assert_eq!(error_fields(&problem), [field], "{query}: {problem}");
    }
}

fn rank(priority: &Value) -> u8 {
    priority.as_str().unwrap()[1..].parse().unwrap()
}

async fn sorts_by_priority_and_time(app: TestApp) {
    let (_, token) = app.user_with_roles("sol", &["agent"]).await;
    let cells = [
        ("low", "low"),
        ("high", "high"),
        ("medium", "medium"),
        ("high", "medium"),
        ("low", "medium"),
        ("high", "high"),
        ("medium", "low"),
        ("low", "high"),
    ];
    let mut created = Vec::new();
    for (n, (impact, urgency)) in cells.iter().enumerate() {
        created.push(
            create_incident(
                &app,
                &token,
                json!({"title": format!("sort {n}"), "impact": impact, "urgency": urgency}),
            )
            .await,
        );
    }
    let by_number: Vec<String> = created.iter().map(|i| text(i, "number")).collect();

    // Default: newest first.
    let default = list(&app, &token, &[]).await;
    let mut newest_first = by_number.clone();
    newest_first.reverse();
    let order: Vec<String> = default.iter().map(|i| text(i, "number")).collect();
    assert_eq!(order, newest_first);
    let explicit = list(&app, &token, &[("sort", "-created_at"), ("limit", "3")]).await;
    let order: Vec<String> = explicit.iter().map(|i| text(i, "number")).collect();
    assert_eq!(order, newest_first);
    let oldest_first = list(&app, &token, &[("sort", "created_at"), ("limit", "3")]).await;
    let order: Vec<String> = oldest_first.iter().map(|i| text(i, "number")).collect();
    assert_eq!(order, by_number);

    // By priority: p1 first, ties in a stable order; descending is the exact reverse.
    for limit in ["500", "2"] {
        let ascending = list(&app, &token, &[("sort", "priority"), ("limit", limit)]).await;
        let ranks: Vec<u8> = ascending.iter().map(|i| rank(&i["priority"])).collect();
        assert_eq!(ranks, [1, 1, 2, 3, 3, 4, 4, 5], "limit {limit}");
        let descending = list(&app, &token, &[("sort", "-priority"), ("limit", limit)]).await;
        let mut reversed: Vec<String> = ascending.iter().map(|i| text(i, "number")).collect();
        reversed.reverse();
        let order: Vec<String> = descending.iter().map(|i| text(i, "number")).collect();
        assert_eq!(order, reversed, "limit {limit}");
    }

    // By last update.
    patched(
        &app,
        &token,
        &text(&created[0], "id"),
        json!({"description": "touched"}),
    )
    .await;
    let updated = list(&app, &token, &[("sort", "-updated_at")]).await;
    assert_eq!(updated[0]["number"], created[0]["number"]);
    let updated = list(&app, &token, &[("sort", "updated_at")]).await;
    assert_eq!(updated.last().unwrap()["number"], created[0]["number"]);

    // A cursor carries every sort's key: under another sort it continues after its item in
    // that order.
    let response = app
        .request(Method::GET, INCIDENTS, &token)
        .query(&[("sort", "priority"), ("limit", "2")])
        .send()
        .await
        .unwrap();
    let (_, page) = read(response).await;
    let last = page["items"][1].clone();
    let cursor = text(&page, "next_cursor");
    let by_creation = list(&app, &token, &[("sort", "created_at")]).await;
    let position = by_creation
        .iter()
        .position(|item| item["id"] == last["id"])
        .unwrap();
    let response = app
        .request(Method::GET, INCIDENTS, &token)
        .query(&[("sort", "created_at"), ("limit", "2"), ("cursor", &cursor)])
        .send()
        .await
        .unwrap();
    let (status, page) = read(response).await;
    assert_eq!(status, StatusCode::OK);
    let expected: Vec<&Value> = by_creation[position + 1..].iter().take(2).collect();
    let got: Vec<&Value> = page["items"].as_array().unwrap().iter().collect();
    assert_eq!(
        got.iter().map(|i| &i["id"]).collect::<Vec<_>>(),
        expected.iter().map(|i| &i["id"]).collect::<Vec<_>>()
    );
}

/// Follows a list page by page with `limit=3`, creating an incident between pages; each
/// incident that existed at the start is returned exactly once.
async fn paginate_with_inserts(app: &TestApp, token: &str, sort: &str, originals: &[Value]) {
    let mut seen: Vec<String> = Vec::new();
    let mut path = format!("{INCIDENTS}?sort={sort}&limit=3");
    let mut pages = 0;
    loop {
        let response = app.request(Method::GET, &path, token).send().await.unwrap();
        let link = header(&response, "link");
        let (status, page) = read(response).await;
        assert_eq!(status, StatusCode::OK, "{path}: {page}");
        pages += 1;
        assert!(pages < 20, "pagination does not end");
        let page_items = items(&page);
        assert!(page_items.len() <= 3);
        seen.extend(page_items.iter().map(|i| text(i, "number")));
        match page["next_cursor"].as_str() {
            Some(cursor) => {
                let link = link.unwrap_or_else(|| panic!("no Link header with {page}"));
                assert!(
                    link.ends_with("rel=\"next\"") && link.contains(cursor),
                    "{link}"
                );
                // Follow the Link header itself.
                path = link
                    .split('>')
                    .next()
                    .and_then(|l| l.strip_prefix('<'))
                    .unwrap()
                    .to_owned();
                assert!(path.contains(&format!("sort={sort}")), "{path}");
                create_incident(
                    app,
                    token,
                    json!({"title": format!("inserted during {sort} page {pages}"),
                           "impact": "high", "urgency": "high"}),
                )
                .await;
            }
            None => {
                assert!(link.is_none(), "a last page has no Link: {link:?}");
                break;
            }
        }
    }
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), seen.len(), "duplicates in {sort}: {seen:?}");
    for original in originals {
        let number = text(original, "number");
        assert_eq!(
            seen.iter().filter(|n| **n == number).count(),
            1,
            "{number} with sort {sort}: {seen:?}"
        );
    }
}

async fn cursor_pagination_is_stable_under_inserts(app: TestApp) {
    let (_, token) = app.user_with_roles("pia", &["agent"]).await;
    let mut originals = Vec::new();
    for n in 0..7 {
        let (impact, urgency) = [("low", "low"), ("high", "high"), ("medium", "medium")][n % 3];
        originals.push(
            create_incident(
                &app,
                &token,
                json!({"title": format!("original {n}"), "impact": impact, "urgency": urgency}),
            )
            .await,
        );
    }
    // Newest first: the pages of the 7 originals are 3 + 3 + 1, inserts never show up.
    let first = app
        .request(Method::GET, &format!("{INCIDENTS}?limit=3"), &token)
        .send()
        .await
        .unwrap();
    let (_, first) = read(first).await;
    assert_eq!(items(&first).len(), 3);
    paginate_with_inserts(&app, &token, "-created_at", &originals).await;
    let snapshot = list(&app, &token, &[]).await;
    paginate_with_inserts(&app, &token, "created_at", &snapshot).await;
    let snapshot = list(&app, &token, &[]).await;
    paginate_with_inserts(&app, &token, "priority", &snapshot).await;
    let snapshot = list(&app, &token, &[]).await;
    paginate_with_inserts(&app, &token, "-priority", &snapshot).await;
    let snapshot = list(&app, &token, &[]).await;
    paginate_with_inserts(&app, &token, "-updated_at", &snapshot).await;
}

async fn word_search_is_case_insensitive(app: TestApp) {
    let (_, token) = app.user_with_roles("quinn", &["agent"]).await;
    let vpn = create_incident(
        &app,
        &token,
        json!({"title": "VPN Gateway unreachable", "description": "Users in Berlin cannot connect."}),
    )
    .await;
    let printer = create_incident(
        &app,
        &token,
        json!({"title": "Printer jam", "description": "The PRINTER on floor 3 eats paper"}),
    )
    .await;
    let both = create_incident(
        &app,
        &token,
        json!({"title": "Printing over VPN", "description": "printer unreachable via vpn"}),
    )
    .await;
    let search = |q: &'static str| {
        let app = &app;
        let token = token.clone();
        async move { numbers(&list(app, &token, &[("q", q)]).await) }
    };
    assert_eq!(search("vpn").await, numbers_of(&[&vpn, &both]));
    assert_eq!(search("VPN").await, numbers_of(&[&vpn, &both]));
    assert_eq!(search("berlin").await, numbers_of(&[&vpn]));
    assert_eq!(search("printer").await, numbers_of(&[&printer, &both]));
    assert_eq!(search("Printer PAPER").await, numbers_of(&[&printer]));
    assert_eq!(search("gateway vpn").await, numbers_of(&[&vpn]));
    assert_eq!(search("unreachable").await, numbers_of(&[&vpn, &both]));
    assert_eq!(search("berlin paper").await, Vec::<String>::new());
    assert_eq!(search("kerberos").await, Vec::<String>::new());

    // The index follows edits.
    patched(
        &app,
        &token,
        &text(&printer, "id"),
        json!({"description": "Kerberos tickets expire"}),
    )
    .await;
    assert_eq!(search("KERBEROS").await, numbers_of(&[&printer]));
    assert_eq!(search("paper").await, Vec::<String>::new());
    patched(
        &app,
        &token,
        &text(&vpn, "id"),
        json!({"title": "Tunnel broken"}),
    )
    .await;
    assert_eq!(search("vpn").await, numbers_of(&[&both]));
    assert_eq!(search("tunnel").await, numbers_of(&[&vpn]));

    // Words beyond ASCII, and words a full-text engine reads as operators, are plain words.
    let outage = create_incident(
        &app,
        &token,
        json!({"title": "Störung im Rechenzentrum", "description": "NOT reachable AND \"NEAR\" down*"}),
    )
    .await;
    assert_eq!(search("STÖRUNG").await, numbers_of(&[&outage]));
    assert_eq!(search("not and near").await, numbers_of(&[&outage]));
    assert_eq!(search("\"down*\"").await, numbers_of(&[&outage]));
    assert_eq!(search("störun").await, Vec::<String>::new());
}

/// `itsm plans` explains the query of every list filter on seeded data. On SQLite, whose
/// plans do not depend on the volume, each filter but the word search and the item filter
/// walks an index in the page's order: no sort of the matching rows.
async fn each_list_filter_is_explained(app: TestApp) {
    let db = persistence::Database::open(&app.database).expect("open the test database");
    itsm_api::seed::seed(&db, 500).await.expect("seed");
    db.optimize().await.expect("statistics");
    let plans = itsm_api::plans::incident_list_plans(&db)
        .await
        .expect("plans");
    assert_eq!(plans.len(), 21);
    for (filter, lines) in &plans {
        match app.backend {
            // One incident at most holds a reference: found by the unique reference index.
            Backend::Sqlite if filter.starts_with("external_ref=") => assert!(
                lines
                    .iter()
                    .any(|line| line.contains("external_refs_lookup_key")),
                "{filter}: {lines:?}"
            ),
            // The tickets of one item are few: found through the link index, then sorted.
            Backend::Sqlite if filter.starts_with("configuration_item=") => assert!(
                lines
                    .iter()
                    .any(|line| line.contains("ticket_configuration_items_ci_idx")),
                "{filter}: {lines:?}"
            ),
            // Tickets with a breached or soon due timer: found through the timers' partial
            // indexes, then read by id.
            Backend::Sqlite if filter.starts_with("sla_") => assert!(
                lines
                    .iter()
                    .any(|line| line.contains("sla_timers_breached_idx")
                        || line.contains("sla_timers_running_due_idx")),
                "{filter}: {lines:?}"
            ),
            Backend::Sqlite if !filter.starts_with("q=") => {
                assert!(
                    lines.iter().all(|line| line.contains("USING INDEX")),
                    "{filter}: {lines:?}"
                );
            }
            Backend::Sqlite => assert!(
                lines.iter().any(|line| line.contains("ticket_words")),
                "{filter}: {lines:?}"
            ),
            Backend::Postgres => assert!(lines[0].starts_with("Limit"), "{filter}: {lines:?}"),
        }
    }
}

on_both_backends!(
    each_list_filter_is_explained,
    filters_return_exactly_the_matching_incidents,
    sorts_by_priority_and_time,
    cursor_pagination_is_stable_under_inserts,
    word_search_is_case_insensitive,
);
