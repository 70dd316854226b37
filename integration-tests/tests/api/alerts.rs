//! Monitoring intake (issue 16): Alertmanager and generic alerts deduplicated by key, one
//! incident per key, flapping, rules, CMDB matching, bad input and who may send.

use itsm_integration_tests::reqwest::{Method, StatusCode};
use itsm_integration_tests::serde_json::{json, Value};
use itsm_integration_tests::{
    error_fields, expect_problem, expect_refusal, header, on_both_backends, read, Config, TestApp,
};

/// A new API token of `role`, optionally scoped.
pub async fn api_token(app: &TestApp, role: &str, scopes: Option<&[&str]>) -> String {
    let mut body = json!({"name": format!("{role}-token"), "role": role, "expires_at": null});
    if let Some(scopes) = scopes {
        body["scopes"] = json!(scopes);
    }
    let response = app
        .admin(Method::POST, "/api/v1/api-tokens")
        .json(&body)
        .send()
        .await
        .unwrap();
    let (status, token) = read(response).await;
    assert_eq!(status, StatusCode::CREATED, "{token}");
    token["token"].as_str().unwrap().to_owned()
}

/// Posts `body` to `path` with `token`; the outcomes answered.
async fn send(app: &TestApp, token: &str, path: &str, body: &Value) -> Vec<Value> {
    let response = app
        .request(Method::POST, path, token)
        .json(body)
        .send()
        .await
        .unwrap();
    let (status, answer) = read(response).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    answer["alerts"].as_array().unwrap().clone()
}

fn outcomes(answer: &[Value]) -> Vec<&str> {
    answer
        .iter()
        .map(|a| a["outcome"].as_str().unwrap())
        .collect()
}

/// An Alertmanager notification with one alert per `(fingerprint, status)`.
fn alertmanager(alerts: &[(&str, &str)]) -> Value {
    let group_status = if alerts.iter().any(|(_, s)| *s == "firing") {
        "firing"
    } else {
        "resolved"
    };
    let alerts: Vec<Value> = alerts
        .iter()
        .map(|(fingerprint, status)| {
            json!({
                "status": status,
                "labels": {"alertname": "HighLoad", "instance": format!("{fingerprint}:9100"),
                           "severity": "critical"},
                "annotations": {"summary": format!("Load is high on {fingerprint}")},
                "startsAt": "2026-11-27T08:00:00.123456789Z",
                "endsAt": if *status == "firing" { "0001-01-01T00:00:00Z" } else { "2026-11-27T08:10:00Z" },
                "generatorURL": "http://prometheus.example:9090/graph?g0.expr=up",
                "fingerprint": fingerprint,
            })
        })
        .collect();
    json!({
        "version": "4",
        "groupKey": "{}:{alertname=\"HighLoad\"}",
        "truncatedAlerts": 0,
        "status": group_status,
        "receiver": "itsm",
        "groupLabels": {"alertname": "HighLoad"},
        "commonLabels": {"alertname": "HighLoad"},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.example:9093",
        "alerts": alerts,
    })
}

async fn get(app: &TestApp, path: &str) -> Value {
    let response = app.admin(Method::GET, path).send().await.unwrap();
    let (status, body) = read(response).await;
    assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
    body
}

async fn rule(app: &TestApp, body: Value) -> Value {
    let response = app
        .admin(Method::POST, "/api/v1/alert-rules")
        .json(&body)
        .send()
        .await
        .unwrap();
    let (status, rule) = read(response).await;
    assert_eq!(status, StatusCode::CREATED, "{rule}");
    rule
}

async fn work_notes(app: &TestApp, incident: &str) -> Vec<String> {
    get(app, &format!("/api/v1/incidents/{incident}/notes")).await["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["visibility"] == "internal")
        .map(|n| n["body"].as_str().unwrap().to_owned())
        .collect()
}

async fn alertmanager_payloads_open_one_incident_per_key_and_resolve_it(app: TestApp) {
    let token = api_token(&app, "integration", Some(&["alerts:write"])).await;
    rule(
        &app,
        json!({"name": "Prometheus", "position": 1, "source": "alertmanager",
               "impact": "high", "urgency": "high", "category": "monitoring",
               "resolve_incident": true}),
    )
    .await;
    let path = "/api/v1/integrations/alertmanager";
    let first_event = app
        .events_after(0)
        .await
        .last()
        .map_or(0, |e| e["sequence"].as_i64().unwrap());

    // A group of two alerts: one incident per key.
    let fired = send(
        &app,
        &token,
        path,
        &alertmanager(&[("aaa1", "firing"), ("bbb2", "firing")]),
    )
    .await;
    assert_eq!(outcomes(&fired), ["new", "new"]);
    let incident_a = fired[0]["incident_id"].as_str().unwrap().to_owned();
    let incident_b = fired[1]["incident_id"].as_str().unwrap().to_owned();
    assert_ne!(incident_a, incident_b);
    let incident = get(&app, &format!("/api/v1/incidents/{incident_a}")).await;
    assert_eq!(incident["channel"], "monitoring");
    assert_eq!(incident["priority"], "p1");
    assert_eq!(incident["category"], "monitoring");
    assert_eq!(incident["title"], "Load is high on aaa1");

    // Repeats count and never open a second incident.
    for _ in 0..3 {
        let repeated = send(
            &app,
            &token,
            path,
            &alertmanager(&[("aaa1", "firing"), ("bbb2", "firing")]),
        )
        .await;
        assert_eq!(outcomes(&repeated), ["deduplicated", "deduplicated"]);
        assert_eq!(repeated[0]["incident_id"], incident_a.as_str());
    }
    let monitoring = get(&app, "/api/v1/incidents?channel=monitoring").await;
    assert_eq!(monitoring["items"].as_array().unwrap().len(), 2);
    let api = get(&app, "/api/v1/incidents?channel=api").await;
    assert!(api["items"].as_array().unwrap().is_empty());
    let stored = get(&app, "/api/v1/alerts?key=aaa1").await;
    assert_eq!(stored["items"][0]["count"], 4, "{stored}");
    assert_eq!(stored["items"][0]["status"], "firing");

    // Resolving one key resolves its incident (the rule says so) with a work note; the other
    // incident stays open.
    let resolved = send(&app, &token, path, &alertmanager(&[("aaa1", "resolved")])).await;
    assert_eq!(outcomes(&resolved), ["resolved"]);
    let incident = get(&app, &format!("/api/v1/incidents/{incident_a}")).await;
    assert_eq!(incident["state"], "resolved", "{incident}");
    assert!(work_notes(&app, &incident_a)
        .await
        .iter()
        .any(|n| n.contains("Every alert of this incident resolved")));
    let other = get(&app, &format!("/api/v1/incidents/{incident_b}")).await;
    assert_eq!(other["state"], "new");
    // A resolution repeated changes nothing.
    let again = send(&app, &token, path, &alertmanager(&[("aaa1", "resolved")])).await;
    assert_eq!(outcomes(&again), ["deduplicated"]);

    // Flapping: firing again soon after resolving reopens the same incident.
    let flapped = send(&app, &token, path, &alertmanager(&[("aaa1", "firing")])).await;
    assert_eq!(outcomes(&flapped), ["reopened"]);
    assert_eq!(flapped[0]["incident_id"], incident_a.as_str());
    let incident = get(&app, &format!("/api/v1/incidents/{incident_a}")).await;
    assert_eq!(incident["state"], "in_progress", "{incident}");
    assert_eq!(incident["reopen_count"], 1);
    let monitoring = get(&app, "/api/v1/incidents?channel=monitoring").await;
    assert_eq!(monitoring["items"].as_array().unwrap().len(), 2);

    // Both resolve: both incidents resolved.
    let both = send(
        &app,
        &token,
        path,
        &alertmanager(&[("aaa1", "resolved"), ("bbb2", "resolved")]),
    )
    .await;
    assert_eq!(outcomes(&both), ["resolved", "resolved"]);
    for id in [&incident_a, &incident_b] {
        let incident = get(&app, &format!("/api/v1/incidents/{id}")).await;
        assert_eq!(incident["state"], "resolved", "{incident}");
    }

    // Events: alert.received for the new keys only, alert.resolved per resolution.
    let events: Vec<String> = app
        .events_after(first_event)
        .await
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .filter(|t| t.starts_with("alert."))
        .collect();
    assert_eq!(
        events.iter().filter(|t| *t == "alert.received").count(),
        2,
        "{events:?}"
    );
    assert_eq!(
        events.iter().filter(|t| *t == "alert.resolved").count(),
        3,
        "{events:?}"
    );
}

fn no_flapping_window(config: &mut Config) {
    config.alert_flap_window_seconds = 0;
}

async fn firing_long_after_resolving_opens_a_new_incident(app: TestApp) {
    let token = api_token(&app, "integration", Some(&["alerts:write"])).await;
    rule(
        &app,
        json!({"name": "all", "position": 1, "impact": "low", "urgency": "low",
               "resolve_incident": true}),
    )
    .await;
    let path = "/api/v1/integrations/alertmanager";
    let fired = send(&app, &token, path, &alertmanager(&[("ccc3", "firing")])).await;
    let first = fired[0]["incident_id"].as_str().unwrap().to_owned();
    send(&app, &token, path, &alertmanager(&[("ccc3", "resolved")])).await;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let again = send(&app, &token, path, &alertmanager(&[("ccc3", "firing")])).await;
    assert_eq!(outcomes(&again), ["new"]);
    let second = again[0]["incident_id"].as_str().unwrap();
    assert_ne!(second, first);
    let old = get(&app, &format!("/api/v1/incidents/{first}")).await;
    assert_eq!(old["state"], "resolved");
    // Still one alert for the key.
    let stored = get(&app, "/api/v1/alerts?key=ccc3").await;
    assert_eq!(stored["items"].as_array().unwrap().len(), 1);
    assert_eq!(stored["items"][0]["incident_id"], second);
}

async fn generic_alerts_follow_rules_and_match_configuration_items(app: TestApp) {
    let token = api_token(&app, "integration", Some(&["alerts:write"])).await;
    let dba = app.group("DBA").await;
    let dba = dba["id"].as_str().unwrap();
    let response = app
        .admin(Method::POST, "/api/v1/configuration-items")
        .json(&json!({"name": "db01", "class": "server",
                      "attributes": {"hostname": "db01", "dns_domain": "example.org"}}))
        .send()
        .await
        .unwrap();
    let (status, item) = read(response).await;
    assert_eq!(status, StatusCode::CREATED, "{item}");
    let item = item["id"].as_str().unwrap();
    // Rules by precedence: the lower position decides.
    rule(
        &app,
        json!({"name": "catch-all", "position": 50, "impact": "low", "urgency": "low"}),
    )
    .await;
    rule(
        &app,
        json!({"name": "databases", "position": 10, "labels": {"team": "db"},
               "impact": "high", "urgency": "medium", "category": "database",
               "assignment_group": dba}),
    )
    .await;
    rule(
        &app,
        json!({"name": "no info", "position": 5, "severity": "info",
               "impact": "low", "urgency": "low", "open_incident": false}),
    )
    .await;
    let listed = get(&app, "/api/v1/alert-rules").await;
    let names: Vec<&str> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["no info", "databases", "catch-all"]);

    let batch = json!({"alerts": [
        {"source": "zabbix", "dedup_key": "db01-disk", "severity": "major",
         "summary": "Disk almost full on db01", "description": "/var at 97%",
         "resources": ["db01.example.org"], "labels": {"team": "db"}},
        {"source": "zabbix", "dedup_key": "db01-backup", "severity": "info",
         "summary": "Backup finished", "labels": {"team": "db"}},
        {"source": "zabbix", "dedup_key": "web-5xx", "severity": "minor",
         "summary": "5xx on the web tier", "time": "2026-11-27T08:00:00Z"},
        {"source": "zabbix", "dedup_key": "db01-disk", "severity": "major",
         "summary": "Disk almost full on db01", "labels": {"team": "db"}},
    ]});
    let answer = send(&app, &token, "/api/v1/alerts", &batch).await;
    assert_eq!(outcomes(&answer), ["new", "new", "new", "deduplicated"]);
    assert!(answer[1]["incident_id"].is_null(), "info opens nothing");
    let incident = get(
        &app,
        &format!(
            "/api/v1/incidents/{}",
            answer[0]["incident_id"].as_str().unwrap()
        ),
    )
    .await;
    assert_eq!(incident["assignment_group"], dba);
    assert_eq!(incident["category"], "database");
    assert_eq!(incident["priority"], "p2", "{incident}");
    assert_eq!(incident["channel"], "monitoring");
    assert_eq!(incident["configuration_items"], json!([item]));
    let web = get(
        &app,
        &format!(
            "/api/v1/incidents/{}",
            answer[2]["incident_id"].as_str().unwrap()
        ),
    )
    .await;
    assert_eq!(web["priority"], "p5", "the catch-all rule: {web}");
    assert!(web["configuration_items"].as_array().unwrap().is_empty());

    // One generic alert alone; the rule does not resolve: a work note only.
    let one = json!({"source": "zabbix", "dedup_key": "db01-disk", "summary": "Disk ok",
                     "status": "resolved", "labels": {"team": "db"}});
    let answer_one = send(&app, &token, "/api/v1/alerts", &one).await;
    assert_eq!(outcomes(&answer_one), ["resolved"]);
    let incident = get(
        &app,
        &format!(
            "/api/v1/incidents/{}",
            answer[0]["incident_id"].as_str().unwrap()
        ),
    )
    .await;
    assert_eq!(incident["state"], "new");
    assert_eq!(
        work_notes(&app, incident["id"].as_str().unwrap())
            .await
            .len(),
        1
    );

    // The stored alerts, filtered and one by one.
    let zabbix = get(&app, "/api/v1/alerts?source=zabbix&limit=2").await;
    assert_eq!(zabbix["items"].as_array().unwrap().len(), 2);
    let next = zabbix["next_cursor"].as_str().unwrap();
    let rest = get(
        &app,
        &format!("/api/v1/alerts?source=zabbix&limit=2&cursor={next}"),
    )
    .await;
    assert_eq!(rest["items"].as_array().unwrap().len(), 1);
    let firing = get(&app, "/api/v1/alerts?status=firing").await;
    assert_eq!(firing["items"].as_array().unwrap().len(), 2);
    let disk = get(&app, "/api/v1/alerts?key=db01-disk").await;
    let disk = &disk["items"][0];
    assert_eq!(disk["count"], 2);
    assert_eq!(disk["status"], "resolved");
    assert_eq!(disk["resources"], json!(["db01.example.org"]));
    let id = disk["id"].as_str().unwrap();
    let one = get(&app, &format!("/api/v1/alerts/{id}")).await;
    assert_eq!(one["dedup_key"], "db01-disk");
    let response = app
        .admin(Method::GET, "/api/v1/alerts?colour=red")
        .send()
        .await
        .unwrap();
    expect_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    let response = app
        .admin(Method::GET, "/api/v1/alerts/nope")
        .send()
        .await
        .unwrap();
    expect_problem(response, StatusCode::NOT_FOUND).await;
}

async fn bad_alerts_are_refused_naming_the_field_and_store_nothing(app: TestApp) {
    let token = api_token(&app, "integration", Some(&["alerts:write"])).await;
    let before = app.write_marks().await;
    let mut no_fingerprint = alertmanager(&[("ddd4", "firing"), ("eee5", "firing")]);
    no_fingerprint["alerts"][1]["fingerprint"] = Value::Null;
    let mut bad_time = alertmanager(&[("fff6", "firing")]);
    bad_time["alerts"][0]["startsAt"] = json!("this morning");
    let mut bad_status = alertmanager(&[("ggg7", "firing")]);
    bad_status["alerts"][0]["status"] = json!("burning");
    let cases = [
        (
            "/api/v1/integrations/alertmanager",
            no_fingerprint,
            "alerts[1].fingerprint",
        ),
        (
            "/api/v1/integrations/alertmanager",
            bad_time,
            "alerts[0].startsAt",
        ),
        (
            "/api/v1/integrations/alertmanager",
            bad_status,
            "alerts[0].status",
        ),
        (
            "/api/v1/integrations/alertmanager",
            json!({"status": "firing"}),
            "alerts",
        ),
        (
            "/api/v1/alerts",
            json!({"alerts": [{"source": "z", "dedup_key": "ok", "summary": "fine"},
                              {"source": "z", "dedup_key": "bad", "summary": "s", "severity": "apocalyptic"}]}),
            "alerts[1].severity",
        ),
        (
            "/api/v1/alerts",
            json!({"source": "z", "summary": "no key"}),
            "dedup_key",
        ),
        (
            "/api/v1/alerts",
            json!({"source": "z", "dedup_key": "k", "summary": "s", "labels": {"n": 1}}),
            "labels.n",
        ),
        ("/api/v1/alerts", json!([1, 2]), "body"),
    ];
    for (path, body, field) in cases {
        let response = app
            .request(Method::POST, path, &token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let problem = expect_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert!(
            error_fields(&problem).contains(&field.to_owned()),
            "{field}: {problem}"
        );
    }
    let response = app
        .request(Method::POST, "/api/v1/alerts", &token)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    expect_problem(response, StatusCode::BAD_REQUEST).await;
    app.assert_unchanged_since(&before, "refused alerts").await;
    assert!(get(&app, "/api/v1/alerts").await["items"]
        .as_array()
        .unwrap()
        .is_empty());
    assert!(get(&app, "/api/v1/incidents").await["items"]
        .as_array()
        .unwrap()
        .is_empty());

    // Rules: an unknown group or a bad enumeration is refused too.
    for (body, field) in [
        (
            json!({"name": "r", "position": 1, "impact": "high", "urgency": "low",
                   "assignment_group": "no-such-group"}),
            "assignment_group",
        ),
        (
            json!({"name": "r", "position": 1, "impact": "huge", "urgency": "low"}),
            "impact",
        ),
        (
            json!({"name": "", "position": 1, "impact": "high", "urgency": "low"}),
            "name",
        ),
    ] {
        let response = app
            .admin(Method::POST, "/api/v1/alert-rules")
            .json(&body)
            .send()
            .await
            .unwrap();
        let problem = expect_refusal(response).await;
        assert_eq!(error_fields(&problem), [field], "{problem}");
    }
    app.assert_unchanged_since(&before, "refused rules").await;
}

async fn only_integration_tokens_and_admins_send_alerts(app: TestApp) {
    let body = json!({"source": "zabbix", "dedup_key": "k1", "summary": "s"});
    let (_, agent) = app.user_with_roles("alert-agent", &["agent"]).await;
    let (_, integration_user) = app.user_with_roles("alert-bot", &["integration"]).await;
    let agent_token = api_token(&app, "agent", None).await;
    // A token without scopes is read-only: it sends no alert.
    let unscoped = api_token(&app, "integration", None).await;
    let scoped = api_token(&app, "integration", Some(&["alerts:write"])).await;
    let wrong_scope = api_token(&app, "integration", Some(&["incidents:write"])).await;
    for token in [
        &agent,
        &integration_user,
        &agent_token,
        &wrong_scope,
        &unscoped,
    ] {
        let response = app
            .request(Method::POST, "/api/v1/alerts", token)
            .json(&body)
            .send()
            .await
            .unwrap();
        expect_problem(response, StatusCode::FORBIDDEN).await;
    }
    let response = app
        .anonymous(Method::POST, "/api/v1/integrations/alertmanager")
        .json(&alertmanager(&[("hhh8", "firing")]))
        .send()
        .await
        .unwrap();
    expect_problem(response, StatusCode::UNAUTHORIZED).await;
    assert!(get(&app, "/api/v1/alerts").await["items"]
        .as_array()
        .unwrap()
        .is_empty());

    for token in [&scoped, &app.admin_token] {
        send(&app, token, "/api/v1/alerts", &body).await;
    }
    // Incidents opened by a token are reported for the admin who created it.
    let incidents = get(&app, "/api/v1/incidents?channel=monitoring").await;
    let admin = app.id_of(&app.admin_token).await;
    assert_eq!(incidents["items"][0]["caller"], admin.as_str());
    // Integrations read alerts; a scoped token needs alerts:read.
    let response = app
        .request(Method::GET, "/api/v1/alerts", &scoped)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let response = app
        .request(Method::GET, "/api/v1/alerts", &wrong_scope)
        .send()
        .await
        .unwrap();
    expect_problem(response, StatusCode::FORBIDDEN).await;
}

async fn alert_rules_are_replaced_with_if_match_and_deleted(app: TestApp) {
    let created = rule(
        &app,
        json!({"name": "first", "position": 1, "impact": "low", "urgency": "low"}),
    )
    .await;
    let id = created["id"].as_str().unwrap();
    assert_eq!(created["open_incident"], true);
    assert_eq!(created["resolve_incident"], false);
    let path = format!("/api/v1/alert-rules/{id}");
    let replacement = json!({"name": "renamed", "position": 2, "source": "zabbix",
                             "severity": "critical", "labels": {"env": "prod"},
                             "impact": "high", "urgency": "high", "resolve_incident": true});
    let response = app
        .admin(Method::PUT, &path)
        .header("if-match", "\"7\"")
        .json(&replacement)
        .send()
        .await
        .unwrap();
    expect_problem(response, StatusCode::PRECONDITION_FAILED).await;
    let response = app
        .admin(Method::PUT, &path)
        .header("if-match", "\"1\"")
        .json(&replacement)
        .send()
        .await
        .unwrap();
    assert_eq!(header(&response, "etag").as_deref(), Some("\"2\""));
    let (status, replaced) = read(response).await;
    assert_eq!(status, StatusCode::OK, "{replaced}");
    assert_eq!(replaced["labels"], json!({"env": "prod"}));
    assert_eq!(replaced["severity"], "critical");
    let audit = app.audit_of("alert_rule", id).await;
    assert_eq!(audit.len(), 2, "{audit:?}");
    let response = app.admin(Method::DELETE, &path).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let response = app.admin(Method::GET, &path).send().await.unwrap();
    expect_problem(response, StatusCode::NOT_FOUND).await;
}

fn one_request_at_a_time(config: &mut Config) {
    config.alert_queue = 1;
}

async fn overload_is_answered_429_with_retry_after_and_loses_nothing(app: TestApp) {
    let token = api_token(&app, "integration", Some(&["alerts:write"])).await;
    let requests = (0..32).map(|r| {
        let alerts: Vec<Value> = (0..50)
            .map(|i| {
                json!({"source": "storm", "dedup_key": format!("{r}-{i}"),
                            "severity": "info", "summary": "storm"})
            })
            .collect();
        app.request(Method::POST, "/api/v1/alerts", &token)
            .json(&json!({ "alerts": alerts }))
            .send()
    });
    let responses = futures_util::future::join_all(requests).await;
    let (mut accepted, mut refused) = (0, 0);
    for response in responses {
        let response = response.unwrap();
        match response.status() {
            StatusCode::OK => accepted += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                assert!(header(&response, "retry-after").is_some());
                expect_problem(response, StatusCode::TOO_MANY_REQUESTS).await;
                refused += 1;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert!(
        refused > 0,
        "one request at a time: some of 32 at once are refused"
    );
    // Every accepted alert was stored, none of the refused.
    let stored = app.list_all("/api/v1/alerts?source=storm").await;
    assert_eq!(stored.len(), accepted * 50);
}

on_both_backends!(
    overload_is_answered_429_with_retry_after_and_loses_nothing with one_request_at_a_time,
    alertmanager_payloads_open_one_incident_per_key_and_resolve_it,
    firing_long_after_resolving_opens_a_new_incident with no_flapping_window,
    generic_alerts_follow_rules_and_match_configuration_items,
    bad_alerts_are_refused_naming_the_field_and_store_nothing,
    only_integration_tokens_and_admins_send_alerts,
    alert_rules_are_replaced_with_if_match_and_deleted,
);
