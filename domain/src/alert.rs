//! Monitoring alerts: the documents monitoring tools send (a generic alert, or an Alertmanager
//! version 4 webhook group), deduplication by key, flapping, and alert rules as data.
//!
//! A key (source and dedup key) is one alert: repeats of it count, they never make a second.
//! Documents are parsed from JSON values here, so that a bad one is refused naming the field
//! (`alerts[2].fingerprint`) and nothing of the request is stored.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, Duration, Utc};
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::enums::string_enum;
use crate::priority::{Impact, Urgency};
use crate::{DomainError, FieldError};

string_enum!(
    /// Whether the condition an alert reports holds.
    AlertStatus { Firing => "firing", Resolved => "resolved" }
);
string_enum!(
    /// How bad the monitoring tool says it is.
    Severity {
        Critical => "critical",
        Major => "major",
        Minor => "minor",
        Warning => "warning",
        Info => "info",
    }
);
string_enum!(
    /// What an incoming alert did: a key not seen before (or seen long ago), a repeat of a
    /// firing one, a firing again soon after it resolved (flapping), or its resolution.
    AlertOutcome {
        New => "new",
        Deduplicated => "deduplicated",
        Reopened => "reopened",
        Resolved => "resolved",
    }
);

/// The source of alerts from the Alertmanager webhook.
pub const ALERTMANAGER: &str = "alertmanager";
/// The most alerts one request may carry.
pub const MAX_BATCH: usize = 1000;
/// The most labels (and annotations) an alert may carry.
pub const MAX_LABELS: usize = 64;
pub const MAX_KEY: usize = 200;
pub const MAX_SOURCE: usize = 100;
pub const MAX_SUMMARY: usize = 500;
pub const MAX_DESCRIPTION: usize = 20_000;
pub const MAX_LABEL_NAME: usize = 200;
pub const MAX_LABEL_VALUE: usize = 2000;
pub const MAX_RESOURCES: usize = 20;

/// An alert as received, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct IncomingAlert {
    pub source: String,
    pub dedup_key: String,
    pub status: AlertStatus,
    pub severity: Severity,
    pub summary: String,
    pub description: String,
    /// Hostnames or instances the alert concerns, matched against the CMDB.
    pub resources: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// When the condition began, as the source says.
    pub starts_at: Option<DateTime<Utc>>,
    /// When it ended, as the source says (`None` while firing).
    pub ends_at: Option<DateTime<Utc>>,
}

impl IncomingAlert {
    /// The names the CMDB is searched by: the resources, then the `instance` and `host`
    /// labels, each also without a port (`web01:9100`) and as its first DNS label.
    pub fn host_candidates(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        let given = self
            .resources
            .iter()
            .chain(self.labels.get("instance"))
            .chain(self.labels.get("host"));
        for value in given {
            let value = value.trim();
            let without_port = strip_port(value);
            let short = without_port.split('.').next().unwrap_or(without_port);
            for name in [value, without_port, short] {
                if !name.is_empty() && !names.iter().any(|n| n == name) {
                    names.push(name.to_owned());
                }
            }
        }
        names
    }

    /// The title of an incident opened for this alert.
    pub fn incident_title(&self) -> String {
        let title: String = self.summary.chars().take(200).collect();
        title.trim().to_owned()
    }

    /// The description of an incident opened for this alert: its text, then its labels.
    pub fn incident_description(&self) -> String {
        let mut text = self.description.clone();
        if !text.is_empty() {
            text.push_str("\n\n");
        }
        text.push_str(&format!(
            "Alert {} from {} ({}).",
            self.dedup_key, self.source, self.severity
        ));
        if !self.labels.is_empty() {
            text.push_str("\nLabels:");
            for (name, value) in &self.labels {
                text.push_str(&format!("\n  {name}={value}"));
            }
        }
        text.chars().take(MAX_DESCRIPTION).collect()
    }
}

/// `host:port` without the port; IPv6 in brackets keeps its colons.
fn strip_port(value: &str) -> &str {
    if let Some(rest) = value.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match value.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') && port.chars().all(|c| c.is_ascii_digit()) => {
            host
        }
        _ => value,
    }
}

/// Collects the field errors of one document.
#[derive(Default)]
struct Problems(Vec<FieldError>);

impl Problems {
    fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError::new(field, message));
    }

    fn finish<T>(self, value: T) -> Result<T, DomainError> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(DomainError::Invalid(self.0))
        }
    }
}

fn field_name(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_owned()
    } else {
        format!("{prefix}.{name}")
    }
}

/// Rejects fields a document does not define.
fn unknown_fields(
    object: &Map<String, Value>,
    known: &[&str],
    prefix: &str,
    problems: &mut Problems,
) {
    for name in object.keys() {
        if !known.contains(&name.as_str()) {
            problems.add(field_name(prefix, name), "is not a field of this document");
        }
    }
}

fn text<'a>(
    object: &'a Map<String, Value>,
    name: &str,
    prefix: &str,
    required: bool,
    max: usize,
    problems: &mut Problems,
) -> Option<&'a str> {
    match object.get(name) {
        None | Some(Value::Null) => {
            if required {
                problems.add(field_name(prefix, name), "is required");
            }
            None
        }
        Some(Value::String(s)) => {
            if required && s.trim().is_empty() {
                problems.add(field_name(prefix, name), "must not be blank");
                None
            } else if s.chars().count() > max {
                problems.add(
                    field_name(prefix, name),
                    format!("must be at most {max} characters"),
                );
                None
            } else {
                Some(s.as_str())
            }
        }
        Some(_) => {
            problems.add(field_name(prefix, name), "must be a string");
            None
        }
    }
}

fn string_map(
    object: &Map<String, Value>,
    name: &str,
    prefix: &str,
    required: bool,
    max_value: usize,
    problems: &mut Problems,
) -> BTreeMap<String, String> {
    let field = field_name(prefix, name);
    let mut map = BTreeMap::new();
    match object.get(name) {
        None | Some(Value::Null) => {
            if required {
                problems.add(field, "is required");
            }
        }
        Some(Value::Object(entries)) => {
            if entries.len() > MAX_LABELS {
                problems.add(&field, format!("must hold at most {MAX_LABELS} entries"));
                return map;
            }
            for (key, value) in entries {
                let entry = format!("{field}.{key}");
                if key.is_empty() || key.chars().count() > MAX_LABEL_NAME {
                    problems.add(
                        &entry,
                        format!("names must be 1 to {MAX_LABEL_NAME} characters"),
                    );
                    continue;
                }
                match value {
                    Value::String(s) if s.chars().count() <= max_value => {
                        map.insert(key.clone(), s.clone());
                    }
                    Value::String(_) => {
                        problems.add(entry, format!("must be at most {max_value} characters"))
                    }
                    _ => problems.add(entry, "must be a string"),
                }
            }
        }
        Some(_) => problems.add(field, "must be an object of strings"),
    }
    map
}

fn timestamp(
    object: &Map<String, Value>,
    name: &str,
    prefix: &str,
    required: bool,
    problems: &mut Problems,
) -> Option<DateTime<Utc>> {
    let raw = text(object, name, prefix, required, 64, problems)?;
    match DateTime::parse_from_rfc3339(raw) {
        // Go's zero time (`0001-01-01T00:00:00Z`) is how Alertmanager says "not set".
        Ok(at) if at.year() <= 1 => None,
        Ok(at) => Some(at.with_timezone(&Utc)),
        Err(_) => {
            problems.add(field_name(prefix, name), "must be an RFC 3339 timestamp");
            None
        }
    }
}

fn status(
    object: &Map<String, Value>,
    prefix: &str,
    problems: &mut Problems,
) -> Option<AlertStatus> {
    let raw = text(object, "status", prefix, true, 20, problems)?;
    match raw.parse::<AlertStatus>() {
        Ok(status) => Some(status),
        Err(message) => {
            problems.add(field_name(prefix, "status"), message);
            None
        }
    }
}

/// The severity an Alertmanager `severity` label names; `warning` when absent or unknown.
pub fn severity_from_label(label: Option<&str>) -> Severity {
    match label.map(|l| l.trim().to_ascii_lowercase()).as_deref() {
        Some("critical" | "page" | "emergency" | "fatal" | "disaster") => Severity::Critical,
        Some("major" | "error" | "high") => Severity::Major,
        Some("minor" | "medium" | "average") => Severity::Minor,
        Some("info" | "informational" | "low" | "none" | "notice") => Severity::Info,
        _ => Severity::Warning,
    }
}

/// Parses an Alertmanager webhook payload (version 4): a group of alerts, each with `status`,
/// `labels`, `annotations`, `startsAt`, `endsAt` (Go's zero time while firing) and
/// `fingerprint`, the alert's dedup key.
pub fn parse_alertmanager(document: &Value) -> Result<Vec<IncomingAlert>, DomainError> {
    let Value::Object(group) = document else {
        return Err(DomainError::invalid(
            "body",
            "must be an Alertmanager webhook payload (a JSON object)",
        ));
    };
    let mut problems = Problems::default();
    unknown_fields(
        group,
        &[
            "version",
            "groupKey",
            "truncatedAlerts",
            "status",
            "receiver",
            "groupLabels",
            "commonLabels",
            "commonAnnotations",
            "externalURL",
            "alerts",
        ],
        "",
        &mut problems,
    );
    match group.get("version") {
        None => {}
        Some(Value::String(v)) if v == "4" => {}
        Some(_) => problems.add(
            "version",
            "must be \"4\", the webhook payload version accepted",
        ),
    }
    status(group, "", &mut problems);
    let alerts = match group.get("alerts") {
        Some(Value::Array(alerts)) if alerts.is_empty() => {
            problems.add("alerts", "must hold at least one alert");
            return problems.finish(Vec::new());
        }
        Some(Value::Array(alerts)) if alerts.len() > MAX_BATCH => {
            problems.add("alerts", format!("must hold at most {MAX_BATCH} alerts"));
            return problems.finish(Vec::new());
        }
        Some(Value::Array(alerts)) => alerts,
        Some(_) => {
            problems.add("alerts", "must be an array of alerts");
            return problems.finish(Vec::new());
        }
        None => {
            problems.add("alerts", "is required");
            return problems.finish(Vec::new());
        }
    };
    let mut parsed = Vec::with_capacity(alerts.len());
    for (index, alert) in alerts.iter().enumerate() {
        let prefix = format!("alerts[{index}]");
        let Value::Object(alert) = alert else {
            problems.add(prefix, "must be an object");
            continue;
        };
        unknown_fields(
            alert,
            &[
                "status",
                "labels",
                "annotations",
                "startsAt",
                "endsAt",
                "generatorURL",
                "fingerprint",
            ],
            &prefix,
            &mut problems,
        );
        let status = status(alert, &prefix, &mut problems);
        let labels = string_map(
            alert,
            "labels",
            &prefix,
            true,
            MAX_LABEL_VALUE,
            &mut problems,
        );
        let annotations = string_map(
            alert,
            "annotations",
            &prefix,
            false,
            MAX_DESCRIPTION,
            &mut problems,
        );
        let starts_at = timestamp(alert, "startsAt", &prefix, true, &mut problems);
        let ends_at = timestamp(alert, "endsAt", &prefix, false, &mut problems);
        text(alert, "generatorURL", &prefix, false, 4000, &mut problems);
        let fingerprint = text(alert, "fingerprint", &prefix, true, MAX_KEY, &mut problems);
        if alert
            .get("labels")
            .and_then(Value::as_object)
            .is_some_and(Map::is_empty)
        {
            problems.add(format!("{prefix}.labels"), "must not be empty");
        }
        let (Some(status), Some(fingerprint)) = (status, fingerprint) else {
            continue;
        };
        let alertname = labels.get("alertname").map(String::as_str);
        let summary = annotations
            .get("summary")
            .or_else(|| annotations.get("title"))
            .map(String::as_str)
            .or(alertname)
            .unwrap_or(fingerprint);
        let description = annotations
            .get("description")
            .or_else(|| annotations.get("message"))
            .cloned()
            .unwrap_or_default();
        parsed.push(IncomingAlert {
            source: ALERTMANAGER.to_owned(),
            dedup_key: fingerprint.trim().to_owned(),
            status,
            severity: severity_from_label(labels.get("severity").map(String::as_str)),
            summary: summary.chars().take(MAX_SUMMARY).collect(),
            description: description.chars().take(MAX_DESCRIPTION).collect(),
            resources: Vec::new(),
            labels,
            annotations,
            starts_at,
            ends_at,
        });
    }
    problems.finish(parsed)
}

/// Parses the body of `POST /alerts`: one generic alert, or `{"alerts": [...]}`.
pub fn parse_generic(document: &Value) -> Result<Vec<IncomingAlert>, DomainError> {
    let Value::Object(object) = document else {
        return Err(DomainError::invalid(
            "body",
            "must be an alert or {\"alerts\": [...]}",
        ));
    };
    let mut problems = Problems::default();
    let single = !object.contains_key("alerts");
    let documents: Vec<(String, &Value)> = if single {
        vec![(String::new(), document)]
    } else {
        unknown_fields(object, &["alerts"], "", &mut problems);
        match object.get("alerts") {
            Some(Value::Array(alerts)) if alerts.is_empty() => {
                problems.add("alerts", "must hold at least one alert");
                Vec::new()
            }
            Some(Value::Array(alerts)) if alerts.len() > MAX_BATCH => {
                problems.add("alerts", format!("must hold at most {MAX_BATCH} alerts"));
                Vec::new()
            }
            Some(Value::Array(alerts)) => alerts
                .iter()
                .enumerate()
                .map(|(i, alert)| (format!("alerts[{i}]"), alert))
                .collect(),
            _ => {
                problems.add("alerts", "must be an array of alerts");
                Vec::new()
            }
        }
    };
    let mut parsed = Vec::with_capacity(documents.len());
    for (prefix, alert) in documents {
        let Value::Object(alert) = alert else {
            problems.add(prefix, "must be an object");
            continue;
        };
        if let Some(one) = parse_one_generic(alert, &prefix, &mut problems) {
            parsed.push(one);
        }
    }
    problems.finish(parsed)
}

fn parse_one_generic(
    alert: &Map<String, Value>,
    prefix: &str,
    problems: &mut Problems,
) -> Option<IncomingAlert> {
    unknown_fields(
        alert,
        &[
            "source",
            "dedup_key",
            "severity",
            "summary",
            "description",
            "resources",
            "labels",
            "status",
            "time",
        ],
        prefix,
        problems,
    );
    let source = text(alert, "source", prefix, true, MAX_SOURCE, problems);
    let key = text(alert, "dedup_key", prefix, true, MAX_KEY, problems);
    let summary = text(alert, "summary", prefix, true, MAX_SUMMARY, problems);
    let description = text(
        alert,
        "description",
        prefix,
        false,
        MAX_DESCRIPTION,
        problems,
    );
    let severity = match text(alert, "severity", prefix, false, 20, problems) {
        None => Some(Severity::Warning),
        Some(raw) => match raw.parse::<Severity>() {
            Ok(severity) => Some(severity),
            Err(message) => {
                problems.add(field_name(prefix, "severity"), message);
                None
            }
        },
    };
    let status = match alert.get("status") {
        None | Some(Value::Null) => Some(AlertStatus::Firing),
        Some(_) => status(alert, prefix, problems),
    };
    let labels = string_map(alert, "labels", prefix, false, MAX_LABEL_VALUE, problems);
    let time = timestamp(alert, "time", prefix, false, problems);
    let mut resources = Vec::new();
    match alert.get("resources") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) if items.len() <= MAX_RESOURCES => {
            for (i, item) in items.iter().enumerate() {
                match item.as_str().map(str::trim) {
                    Some(name) if !name.is_empty() && name.len() <= 255 => {
                        resources.push(name.to_owned())
                    }
                    _ => problems.add(
                        format!("{}[{i}]", field_name(prefix, "resources")),
                        "must be a hostname or instance of 1 to 255 characters",
                    ),
                }
            }
        }
        Some(_) => problems.add(
            field_name(prefix, "resources"),
            format!("must be an array of at most {MAX_RESOURCES} hostnames or instances"),
        ),
    }
    let (source, key, summary, severity, status) = (source?, key?, summary?, severity?, status?);
    let source = source.trim();
    if source.eq_ignore_ascii_case(ALERTMANAGER) {
        problems.add(
            field_name(prefix, "source"),
            "alertmanager is the source of POST /integrations/alertmanager; name another",
        );
        return None;
    }
    Some(IncomingAlert {
        source: source.to_owned(),
        dedup_key: key.trim().to_owned(),
        status,
        severity,
        summary: summary.trim().to_owned(),
        description: description.unwrap_or("").to_owned(),
        resources,
        labels,
        annotations: BTreeMap::new(),
        starts_at: match status {
            AlertStatus::Firing => time,
            AlertStatus::Resolved => None,
        },
        ends_at: match status {
            AlertStatus::Firing => None,
            AlertStatus::Resolved => time,
        },
    })
}

/// What is known of a key already stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownAlert {
    pub status: AlertStatus,
    /// When it last resolved, if it is resolved.
    pub resolved_at: Option<DateTime<Utc>>,
}

/// What to do with an incoming alert, given what is known of its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// A key never seen: store it, and open an incident if the rule says so.
    Open,
    /// A repeat of a firing alert: count it.
    Repeat,
    /// Firing again within the flapping window after it resolved: the same incident again.
    Reopen,
    /// Firing again long after it resolved: a new episode, as if new.
    Reoccur,
    /// A firing alert resolved.
    Resolve,
    /// A resolution of an alert already resolved: nothing changes.
    RepeatResolved,
    /// A resolution of a key never seen: stored as resolved, nothing to open.
    ResolvedUnseen,
}

impl Decision {
    /// Decides what `incoming` does to a key in state `known`, at `now`; a firing within
    /// `flap_window` of the resolution is flapping.
    pub fn of(
        known: Option<KnownAlert>,
        incoming: AlertStatus,
        now: DateTime<Utc>,
        flap_window: Duration,
    ) -> Decision {
        use AlertStatus::{Firing, Resolved};
        match (known, incoming) {
            (None, Firing) => Decision::Open,
            (None, Resolved) => Decision::ResolvedUnseen,
            (Some(k), Firing) if k.status == Firing => Decision::Repeat,
            (Some(k), Firing) => match k.resolved_at {
                Some(at) if now - at <= flap_window => Decision::Reopen,
                _ => Decision::Reoccur,
            },
            (Some(k), Resolved) if k.status == Firing => Decision::Resolve,
            (Some(_), Resolved) => Decision::RepeatResolved,
        }
    }

    /// The outcome the caller is told.
    pub fn outcome(self) -> AlertOutcome {
        match self {
            Decision::Open | Decision::Reoccur => AlertOutcome::New,
            Decision::Repeat | Decision::RepeatResolved => AlertOutcome::Deduplicated,
            Decision::Reopen => AlertOutcome::Reopened,
            Decision::Resolve | Decision::ResolvedUnseen => AlertOutcome::Resolved,
        }
    }
}

/// A stored alert: one per key, as `/api/v1/alerts` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Alert {
    pub id: String,
    #[schema(example = "alertmanager")]
    pub source: String,
    /// With the source, what identifies the alert (Alertmanager: the fingerprint).
    pub dedup_key: String,
    pub status: AlertStatus,
    pub severity: Severity,
    pub summary: String,
    pub description: String,
    pub resources: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// How many times it was received (firing) since it was first seen.
    pub count: i64,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    pub starts_at: Option<DateTime<Utc>>,
    pub ends_at: Option<DateTime<Utc>>,
    /// When it last resolved; `null` while firing.
    pub resolved_at: Option<DateTime<Utc>>,
    /// The incident opened for it.
    pub incident_id: Option<String>,
    /// The alert rule that matched it when it was opened.
    pub rule_id: Option<String>,
    pub updated_at: DateTime<Utc>,
    pub version: i64,
}

/// "Alerts like these open incidents like this." Rules are tried by position, lowest first;
/// an absent condition matches anything.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct AlertRule {
    pub id: String,
    pub name: String,
    pub position: i32,
    /// Matches alerts of this source only.
    pub source: Option<String>,
    /// Matches alerts of this severity only.
    pub severity: Option<Severity>,
    /// Matches alerts carrying each of these labels with these values.
    pub labels: BTreeMap<String, String>,
    pub impact: Impact,
    pub urgency: Urgency,
    pub category: Option<String>,
    /// The group id incidents go to.
    pub assignment_group: Option<String>,
    /// Whether matching alerts open incidents.
    pub open_incident: bool,
    /// Whether the incident is resolved when all its alerts resolve (a work note is added
    /// either way).
    pub resolve_incident: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub version: i64,
}

impl AlertRule {
    pub fn matches(&self, alert: &IncomingAlert) -> bool {
        self.source
            .as_ref()
            .is_none_or(|s| s.eq_ignore_ascii_case(&alert.source))
            && self.severity.is_none_or(|s| s == alert.severity)
            && self
                .labels
                .iter()
                .all(|(name, value)| alert.labels.get(name) == Some(value))
    }
}

/// How an alert is handled: by the first matching rule, or by default by its severity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handling {
    pub rule_id: Option<String>,
    pub impact: Impact,
    pub urgency: Urgency,
    pub category: Option<String>,
    pub assignment_group: Option<String>,
    pub open_incident: bool,
    pub resolve_incident: bool,
}

impl Handling {
    /// Without a matching rule: impact and urgency by severity, an incident for anything but
    /// `info`, and a work note (no resolution) when its alerts resolve.
    pub fn by_default(severity: Severity) -> Handling {
        let (impact, urgency) = match severity {
            Severity::Critical => (Impact::High, Urgency::High),
            Severity::Major => (Impact::High, Urgency::Medium),
            Severity::Minor => (Impact::Medium, Urgency::Medium),
            Severity::Warning => (Impact::Medium, Urgency::Low),
            Severity::Info => (Impact::Low, Urgency::Low),
        };
        Handling {
            rule_id: None,
            impact,
            urgency,
            category: None,
            assignment_group: None,
            open_incident: severity != Severity::Info,
            resolve_incident: false,
        }
    }

    fn of_rule(rule: &AlertRule) -> Handling {
        Handling {
            rule_id: Some(rule.id.clone()),
            impact: rule.impact,
            urgency: rule.urgency,
            category: rule.category.clone(),
            assignment_group: rule.assignment_group.clone(),
            open_incident: rule.open_incident,
            resolve_incident: rule.resolve_incident,
        }
    }
}

/// How `alert` is handled under `rules`: the first match by position (then id) decides.
pub fn handling(rules: &[AlertRule], alert: &IncomingAlert) -> Handling {
    rules
        .iter()
        .filter(|rule| rule.matches(alert))
        .min_by(|a, b| (a.position, &a.id).cmp(&(b.position, &b.id)))
        .map_or_else(|| Handling::by_default(alert.severity), Handling::of_rule)
}

/// The label conditions of a rule: at most [`MAX_LABELS`], names and values non-empty.
pub fn validate_rule_labels(labels: &BTreeMap<String, String>) -> Result<(), DomainError> {
    let mut problems = Problems::default();
    if labels.len() > MAX_LABELS {
        problems.add("labels", format!("must hold at most {MAX_LABELS} entries"));
    }
    for (name, value) in labels {
        if name.trim().is_empty() || name.chars().count() > MAX_LABEL_NAME {
            problems.add(
                format!("labels.{name}"),
                format!("names must be 1 to {MAX_LABEL_NAME} characters"),
            );
        }
        if value.chars().count() > MAX_LABEL_VALUE {
            problems.add(
                format!("labels.{name}"),
                format!("must be at most {MAX_LABEL_VALUE} characters"),
            );
        }
    }
    problems.finish(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(error: DomainError) -> Vec<String> {
        match error {
            DomainError::Invalid(errors) => errors.into_iter().map(|e| e.field).collect(),
            other => panic!("not a validation error: {other:?}"),
        }
    }

    fn alertmanager_group(status: &str, ends_at: &str) -> Value {
        json!({
            "version": "4",
            "groupKey": "{}:{alertname=\"HighLoad\"}",
            "truncatedAlerts": 0,
            "status": status,
            "receiver": "itsm",
            "groupLabels": {"alertname": "HighLoad"},
            "commonLabels": {"alertname": "HighLoad", "severity": "critical"},
            "commonAnnotations": {},
            "externalURL": "http://alertmanager:9093",
            "alerts": [{
                "status": status,
                "labels": {"alertname": "HighLoad", "severity": "critical", "instance": "web01.example.org:9100"},
                "annotations": {"summary": "Load is high on web01", "description": "load5 > 10"},
                "startsAt": "2026-11-27T08:00:00.123Z",
                "endsAt": ends_at,
                "generatorURL": "http://prometheus:9090/graph",
                "fingerprint": "c4ca4238a0b92382"
            }]
        })
    }

    #[test]
    fn an_alertmanager_group_parses_with_go_zero_time_as_no_end() {
        let alerts =
            parse_alertmanager(&alertmanager_group("firing", "0001-01-01T00:00:00Z")).unwrap();
        assert_eq!(alerts.len(), 1);
        let alert = &alerts[0];
        assert_eq!(alert.source, ALERTMANAGER);
        assert_eq!(alert.dedup_key, "c4ca4238a0b92382");
        assert_eq!(alert.status, AlertStatus::Firing);
        assert_eq!(alert.severity, Severity::Critical);
        assert_eq!(alert.summary, "Load is high on web01");
        assert_eq!(alert.description, "load5 > 10");
        assert!(alert.starts_at.is_some());
        assert_eq!(alert.ends_at, None);

        let resolved =
            parse_alertmanager(&alertmanager_group("resolved", "2026-11-27T08:05:00Z")).unwrap();
        assert_eq!(resolved[0].status, AlertStatus::Resolved);
        assert!(resolved[0].ends_at.is_some());
    }

    #[test]
    fn a_bad_alertmanager_payload_names_each_field() {
        let mut group = alertmanager_group("firing", "0001-01-01T00:00:00Z");
        group["alerts"][0]["fingerprint"] = json!(null);
        group["alerts"][0]["startsAt"] = json!("yesterday");
        group["alerts"][0]["labels"]["severity"] = json!(3);
        let errors = fields(parse_alertmanager(&group).unwrap_err());
        assert!(
            errors.contains(&"alerts[0].fingerprint".to_owned()),
            "{errors:?}"
        );
        assert!(
            errors.contains(&"alerts[0].startsAt".to_owned()),
            "{errors:?}"
        );
        assert!(
            errors.contains(&"alerts[0].labels.severity".to_owned()),
            "{errors:?}"
        );

        assert_eq!(
            fields(parse_alertmanager(&json!({"status": "firing"})).unwrap_err()),
            vec!["alerts"]
        );
        let mut wrong_version = alertmanager_group("firing", "0001-01-01T00:00:00Z");
        wrong_version["version"] = json!("3");
        assert_eq!(
            fields(parse_alertmanager(&wrong_version).unwrap_err()),
            vec!["version"]
        );
        assert_eq!(
            fields(parse_alertmanager(&json!([])).unwrap_err()),
            vec!["body"]
        );
        let mut unknown = alertmanager_group("firing", "0001-01-01T00:00:00Z");
        unknown["alerts"][0]["color"] = json!("red");
        assert_eq!(
            fields(parse_alertmanager(&unknown).unwrap_err()),
            vec!["alerts[0].color"]
        );
    }

    #[test]
    fn generic_alerts_parse_alone_or_in_a_batch() {
        let one = json!({"source": "zabbix", "dedup_key": "disk-web01", "severity": "major",
                         "summary": "Disk full", "resources": ["web01"], "labels": {"team": "ops"}});
        let alerts = parse_generic(&one).unwrap();
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0].status, AlertStatus::Firing);
        assert_eq!(alerts[0].severity, Severity::Major);
        assert_eq!(alerts[0].resources, vec!["web01"]);

        let batch = json!({"alerts": [one, {"source": "zabbix", "dedup_key": "x", "summary": "s",
                                             "status": "resolved", "time": "2026-11-27T08:00:00Z"}]});
        let alerts = parse_generic(&batch).unwrap();
        assert_eq!(alerts.len(), 2);
        assert_eq!(alerts[1].status, AlertStatus::Resolved);
        assert!(alerts[1].ends_at.is_some());

        let bad = json!({"alerts": [{"source": "z", "summary": "s", "severity": "meh"},
                                    {"source": "alertmanager", "dedup_key": "k", "summary": "s"}]});
        let errors = fields(parse_generic(&bad).unwrap_err());
        assert_eq!(
            errors,
            vec![
                "alerts[0].dedup_key",
                "alerts[0].severity",
                "alerts[1].source"
            ]
        );
        assert_eq!(
            fields(parse_generic(&json!({"alerts": []})).unwrap_err()),
            vec!["alerts"]
        );
    }

    #[test]
    fn severity_labels_map_to_severities() {
        assert_eq!(severity_from_label(Some("critical")), Severity::Critical);
        assert_eq!(severity_from_label(Some("Error")), Severity::Major);
        assert_eq!(severity_from_label(Some("info")), Severity::Info);
        assert_eq!(severity_from_label(Some("weird")), Severity::Warning);
        assert_eq!(severity_from_label(None), Severity::Warning);
    }

    #[test]
    fn decisions_deduplicate_and_recognise_flapping() {
        let now = Utc::now();
        let window = Duration::minutes(10);
        let firing = Some(KnownAlert {
            status: AlertStatus::Firing,
            resolved_at: None,
        });
        let resolved_at = |ago: i64| {
            Some(KnownAlert {
                status: AlertStatus::Resolved,
                resolved_at: Some(now - Duration::minutes(ago)),
            })
        };
        use AlertStatus::{Firing, Resolved};
        assert_eq!(Decision::of(None, Firing, now, window), Decision::Open);
        assert_eq!(Decision::of(firing, Firing, now, window), Decision::Repeat);
        assert_eq!(
            Decision::of(firing, Resolved, now, window),
            Decision::Resolve
        );
        assert_eq!(
            Decision::of(resolved_at(5), Firing, now, window),
            Decision::Reopen
        );
        assert_eq!(
            Decision::of(resolved_at(30), Firing, now, window),
            Decision::Reoccur
        );
        assert_eq!(
            Decision::of(resolved_at(5), Resolved, now, window),
            Decision::RepeatResolved
        );
        assert_eq!(
            Decision::of(None, Resolved, now, window),
            Decision::ResolvedUnseen
        );
        assert_eq!(Decision::Reopen.outcome(), AlertOutcome::Reopened);
        assert_eq!(Decision::Reoccur.outcome(), AlertOutcome::New);
        assert_eq!(Decision::Repeat.outcome(), AlertOutcome::Deduplicated);
    }

    fn rule(id: &str, position: i32) -> AlertRule {
        AlertRule {
            id: id.into(),
            name: id.into(),
            position,
            source: None,
            severity: None,
            labels: BTreeMap::new(),
            impact: Impact::Low,
            urgency: Urgency::Low,
            category: None,
            assignment_group: None,
            open_incident: true,
            resolve_incident: true,
            created_at: Utc::now(),
            updated_at: Utc::now(),
            version: 1,
        }
    }

    #[test]
    fn the_first_matching_rule_by_position_decides() {
        let alert = parse_generic(
            &json!({"source": "zabbix", "dedup_key": "k", "summary": "s",
                                           "severity": "critical", "labels": {"team": "db"}}),
        )
        .unwrap()
        .remove(0);
        let mut by_label = rule("b", 2);
        by_label.labels.insert("team".into(), "db".into());
        by_label.impact = Impact::High;
        let mut other_source = rule("a", 1);
        other_source.source = Some("nagios".into());
        let mut info_only = rule("c", 0);
        info_only.severity = Some(Severity::Info);
        let catch_all = rule("d", 3);
        let rules = vec![catch_all, info_only, by_label, other_source];
        let chosen = handling(&rules, &alert);
        assert_eq!(chosen.rule_id.as_deref(), Some("b"));
        assert_eq!(chosen.impact, Impact::High);

        let unmatched = handling(&rules[1..2], &alert);
        assert_eq!(unmatched, Handling::by_default(Severity::Critical));
        assert!(unmatched.open_incident && !unmatched.resolve_incident);
        assert!(!Handling::by_default(Severity::Info).open_incident);
    }

    #[test]
    fn hosts_are_matched_without_port_and_domain() {
        let alerts =
            parse_alertmanager(&alertmanager_group("firing", "0001-01-01T00:00:00Z")).unwrap();
        assert_eq!(
            alerts[0].host_candidates(),
            vec!["web01.example.org:9100", "web01.example.org", "web01"]
        );
        assert_eq!(strip_port("[::1]:9100"), "::1");
        assert_eq!(strip_port("fe80::1"), "fe80::1");
    }
}
