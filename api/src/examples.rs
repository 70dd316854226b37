//! An example of each request body, in one place: the contract shows it (`RequestExamples`),
//! the linters check it against the body's schema, the fuzzer's example phase sends it, and
//! the test below deserializes each into the type its handler reads.

use serde_json::{json, Value};
use utoipa::openapi::{OpenApi, RefOr};
use utoipa::Modify;

/// Ids in the examples: records the reader would have created first.
const GROUP: &str = "0192f1e4-7b1a-7c3e-9a51-3f8e2d6c4b10";
const USER: &str = "0192f1e4-7b1a-7c3e-9a51-3f8e2d6c4b11";
const ITEM: &str = "0192f1e4-7b1a-7c3e-9a51-3f8e2d6c4b12";
const OTHER_ITEM: &str = "0192f1e4-7b1a-7c3e-9a51-3f8e2d6c4b13";
const CALENDAR: &str = "0192f1e4-7b1a-7c3e-9a51-3f8e2d6c4b14";

/// The example of each request body, by the name of its schema.
pub fn request_examples() -> Vec<(&'static str, Value)> {
    vec![
        (
            "TokenRequest",
            json!({"username": "alice", "password": "correct horse battery staple"}),
        ),
        (
            "ChangePassword",
            json!({"current_password": "correct horse battery staple", "new_password": "a longer passphrase than before"}),
        ),
        (
            "CreateApiToken",
            json!({"name": "crm-sync", "role": "integration", "scopes": ["incidents:write"], "expires_at": "2030-01-01T00:00:00Z"}),
        ),
        (
            "CreateUser",
            json!({"username": "alice", "email": "alice@example.com", "display_name": "Alice", "roles": ["agent"],
                   "password": "correct horse battery staple", "external_refs": [{"system": "hr", "id": "E-1042"}]}),
        ),
        (
            "UpdateUser",
            json!({"display_name": "Alice Smith", "email": null, "roles": ["agent", "change_manager"]}),
        ),
        (
            "CreateGroup",
            json!({"name": "Service Desk", "description": "First line", "email": "desk@example.com"}),
        ),
        (
            "UpdateGroup",
            json!({"description": "First and second line", "email": null}),
        ),
        ("AddMember", json!({"user_id": USER})),
        (
            "CreateIncident",
            json!({"title": "VPN gateway unreachable", "description": "No office can connect since 09:12.",
                   "impact": "high", "urgency": "high", "category": "network", "channel": "phone"}),
        ),
        (
            "UpdateIncident",
            json!({"urgency": "medium", "category": "network", "subcategory": null}),
        ),
        (
            "TransitionRequest",
            json!({"action": "hold", "on_hold_reason": "awaiting_caller"}),
        ),
        (
            "CreateNote",
            json!({"body": "Called the caller back; waiting for a log.", "visibility": "internal"}),
        ),
        (
            "CreateProblem",
            json!({"title": "VPN tunnels drop for office Wi-Fi users", "impact": "medium", "urgency": "medium",
                   "category": "network", "workaround": "Reconnect over the wired network."}),
        ),
        (
            "UpdateProblem",
            json!({"root_cause": "The gateway's DHCP lease table fills up.", "workaround": null}),
        ),
        ("ProblemTransitionRequest", json!({"action": "assess"})),
        (
            "ProblemFromIncident",
            json!({"title": "Recurring VPN outages", "hold_incident": true}),
        ),
        (
            "LinkIncidents",
            json!({"incident_ids": ["INC0000042", "INC0000043"], "hold_incidents": false}),
        ),
        (
            "CreateChange",
            json!({"title": "Upgrade the orders database to PostgreSQL 17", "type": "normal", "risk": "medium",
                   "description": "Major version upgrade with pg_upgrade.",
                   "implementation_plan": "Stop the application, run pg_upgrade, start it again.",
                   "backout_plan": "Start the old cluster again.",
                   "planned_start": "2030-03-07T20:00:00Z", "planned_end": "2030-03-07T23:00:00Z"}),
        ),
        (
            "UpdateChange",
            json!({"test_plan": "Run the order smoke tests.", "planned_end": "2030-03-08T00:00:00Z"}),
        ),
        ("ChangeTransitionRequest", json!({"action": "assess"})),
        (
            "DecisionRequest",
            json!({"decision": "approve", "comment": "Backout plan tested."}),
        ),
        (
            "PolicyRequest",
            json!({"name": "CAB for high risk", "change_types": ["normal"], "risks": ["high", "very_high"],
                   "approvers": [{"role": "change_manager"}], "quorum": 1, "precedence": 10}),
        ),
        (
            "TemplateRequest",
            json!({"name": "Restart an application server", "risk_cap": "low",
                   "description": "A rolling restart, one node at a time.",
                   "fields": {"title": "Restart an application server",
                              "implementation_plan": "Drain, restart, check health, undrain.",
                              "backout_plan": "None needed: the node comes back as it was."}}),
        ),
        (
            "FreezeRequest",
            json!({"name": "Year-end close", "reason": "Finance closes the books.",
                   "start": "2030-12-20T00:00:00Z", "end": "2031-01-03T00:00:00Z", "scope": {"everything": true}}),
        ),
        (
            "CalendarRequest",
            json!({"name": "Berlin office", "time_zone": "Europe/Berlin",
                   "working_hours": [{"day": "monday", "start": "09:00", "end": "17:00"},
                                     {"day": "tuesday", "start": "09:00", "end": "17:00"}],
                   "holidays": [{"date": "2030-12-25"}, {"date": "2030-12-24", "start": "12:00", "end": "17:00"}]}),
        ),
        (
            "PolicyDefinition",
            json!({"name": "Office hours, all incidents", "precedence": 100, "calendar_id": CALENDAR,
                   "applies_to": {"ticket_type": "incident"},
                   "targets": [{"metric": "response", "priority": "p1", "duration_seconds": 900},
                               {"metric": "resolution", "priority": "p1", "duration_seconds": 14400}],
                   "warning_percent": 75, "pause_on": [{"state": "on_hold", "on_hold_reason": "awaiting_caller"}]}),
        ),
        (
            "RuleRequest",
            json!({"position": 10, "category": "network", "subcategory": "vpn", "assignment_group": GROUP}),
        ),
        (
            "AlertRuleRequest",
            json!({"name": "Database alerts to the DBA team", "position": 10, "source": "alertmanager",
                   "severity": "critical", "labels": {"team": "dba"}, "impact": "high", "urgency": "high",
                   "open_incident": true, "resolve_incident": true}),
        ),
        (
            "GenericAlerts",
            json!({"source": "zabbix", "dedup_key": "db01-disk-full", "summary": "Disk /var is 95% full",
                   "severity": "major", "status": "firing", "resources": ["db01"]}),
        ),
        (
            "AlertmanagerPayload",
            json!({"version": "4", "status": "firing", "receiver": "itsm", "groupKey": "{}:{alertname=\"DiskFull\"}",
                   "alerts": [{"status": "firing", "labels": {"alertname": "DiskFull", "instance": "db01", "severity": "critical"},
                               "annotations": {"summary": "Disk /var is 95% full"},
                               "startsAt": "2030-01-01T10:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
                               "fingerprint": "a1b2c3d4e5f60718"}]}),
        ),
        (
            "CreateClass",
            json!({"name": "linux_server", "parent": "server", "description": "A Linux host",
                   "attributes": [{"name": "hostname", "type": "string", "required": true, "identifying": true},
                                  {"name": "kernel", "type": "string"}],
                   "identification_rules": [["hostname"]]}),
        ),
        (
            "UpdateClass",
            json!({"description": "A Linux host, physical or virtual"}),
        ),
        (
            "SourcePrecedence",
            json!({"sources": ["manual", "sccm", "discovery"]}),
        ),
        (
            "CreateItem",
            json!({"name": "web01", "class": "server", "status": "operational", "environment": "production",
                   "criticality": "high", "attributes": {}, "external_refs": [{"system": "sccm", "id": "R-1042"}]}),
        ),
        (
            "UpdateItem",
            json!({"status": "maintenance", "owner_group": null}),
        ),
        (
            "CreateRelationship",
            json!({"source_id": ITEM, "type": "runs_on", "target_id": OTHER_ITEM}),
        ),
        (
            "ReconcileBatch",
            json!({"source": "discovery", "atomic": false,
                   "items": [{"key": "web", "class": "server", "name": "web02", "attributes": {}},
                             {"key": "db", "class": "server", "name": "db02", "attributes": {}}],
                   "relationships": [{"source": "web", "type": "depends_on", "target": "db"}]}),
        ),
        (
            "CreateWebhook",
            json!({"url": "https://crm.example.com/hooks/itsm", "event_types": ["incident.*", "change.state_changed"],
                   "description": "CRM sync"}),
        ),
        (
            "UpdateWebhook",
            json!({"event_types": ["incident.*"], "active": true}),
        ),
        ("RotateSecret", json!({"overlap_seconds": 3600})),
    ]
}

/// Sets each request body's example from `request_examples`.
pub struct RequestExamples;

impl Modify for RequestExamples {
    fn modify(&self, openapi: &mut OpenApi) {
        let examples = request_examples();
        for item in openapi.paths.paths.values_mut() {
            for operation in [item.post.as_mut(), item.put.as_mut(), item.patch.as_mut()]
                .into_iter()
                .flatten()
            {
                let Some(body) = operation.request_body.as_mut() else {
                    continue;
                };
                for content in body.content.values_mut() {
                    let Some(RefOr::Ref(reference)) = content.schema.as_ref() else {
                        continue;
                    };
                    let name = reference
                        .ref_location
                        .trim_start_matches("#/components/schemas/");
                    if let Some((_, example)) = examples.iter().find(|(n, _)| *n == name) {
                        content.example = Some(example.clone());
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde::de::DeserializeOwned;
    use utoipa::OpenApi;

    use super::request_examples;

    fn reads<T: DeserializeOwned>(name: &str) {
        let (_, example) = request_examples()
            .into_iter()
            .find(|(n, _)| *n == name)
            .unwrap_or_else(|| panic!("no example for {name}"));
        if let Err(error) = serde_json::from_value::<T>(example) {
            panic!("the example of {name} does not read: {error}");
        }
    }

    #[test]
    fn every_request_body_has_an_example() {
        let spec = serde_json::to_value(crate::openapi::ApiDoc::openapi()).unwrap();
        for (path, item) in spec["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                if let Some(content) = operation["requestBody"]["content"].as_object() {
                    for (media, body) in content {
                        assert!(body.get("example").is_some(), "{method} {path} {media}");
                    }
                }
            }
        }
    }

    #[test]
    fn every_example_reads_as_its_handler_reads_it() {
        use crate::routes::cmdb::{classes, items, relationships};
        use crate::routes::{
            alerts, assignment_rules, auth, change_config, changes, groups, incidents, problems,
            sla, users, webhooks,
        };
        reads::<auth::TokenRequest>("TokenRequest");
        reads::<auth::ChangePassword>("ChangePassword");
        reads::<auth::CreateApiToken>("CreateApiToken");
        reads::<users::CreateUser>("CreateUser");
        reads::<users::UpdateUser>("UpdateUser");
        reads::<groups::CreateGroup>("CreateGroup");
        reads::<groups::UpdateGroup>("UpdateGroup");
        reads::<groups::AddMember>("AddMember");
        reads::<incidents::CreateIncident>("CreateIncident");
        reads::<incidents::UpdateIncident>("UpdateIncident");
        reads::<incidents::TransitionRequest>("TransitionRequest");
        reads::<crate::tickets::CreateNote>("CreateNote");
        reads::<problems::CreateProblem>("CreateProblem");
        reads::<problems::UpdateProblem>("UpdateProblem");
        reads::<problems::ProblemTransitionRequest>("ProblemTransitionRequest");
        reads::<problems::ProblemFromIncident>("ProblemFromIncident");
        reads::<problems::LinkIncidents>("LinkIncidents");
        reads::<changes::CreateChange>("CreateChange");
        reads::<changes::UpdateChange>("UpdateChange");
        reads::<changes::ChangeTransitionRequest>("ChangeTransitionRequest");
        reads::<changes::DecisionRequest>("DecisionRequest");
        reads::<change_config::PolicyRequest>("PolicyRequest");
        reads::<change_config::TemplateRequest>("TemplateRequest");
        reads::<change_config::FreezeRequest>("FreezeRequest");
        reads::<sla::CalendarRequest>("CalendarRequest");
        reads::<domain::sla::PolicyDefinition>("PolicyDefinition");
        reads::<assignment_rules::RuleRequest>("RuleRequest");
        reads::<alerts::AlertRuleRequest>("AlertRuleRequest");
        reads::<alerts::GenericAlerts>("GenericAlerts");
        reads::<alerts::AlertmanagerPayload>("AlertmanagerPayload");
        reads::<classes::CreateClass>("CreateClass");
        reads::<classes::UpdateClass>("UpdateClass");
        reads::<classes::SourcePrecedence>("SourcePrecedence");
        reads::<items::CreateItem>("CreateItem");
        reads::<items::UpdateItem>("UpdateItem");
        reads::<relationships::CreateRelationship>("CreateRelationship");
        reads::<items::ReconcileBatch>("ReconcileBatch");
        reads::<webhooks::CreateWebhook>("CreateWebhook");
        reads::<webhooks::UpdateWebhook>("UpdateWebhook");
        reads::<webhooks::RotateSecret>("RotateSecret");
    }
}
