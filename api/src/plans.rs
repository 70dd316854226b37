//! `itsm plans`: how the database runs each filter of `GET /api/v1/incidents`,
//! `GET /api/v1/problems` and `GET /api/v1/changes`, explained on the configured database for the very query a list
//! request sends, with values taken from its own rows. `make bench` prints it for each backend
//! after seeding.

use chrono::TimeDelta;
use domain::change::{ChangeState, ChangeType, RiskLevel};
use domain::incident::IncidentState;
use domain::priority::Priority;
use domain::problem::ProblemState;
use persistence::changes::{self, ChangeFilter};
use persistence::incidents::{self, IncidentFilter};
use persistence::problems::{self, ProblemFilter};
use persistence::tickets::{Position, Sort, SortField};
use persistence::{Database, StoreError};

/// Pages of the default size.
const PAGE: i64 = 50;

/// A filter named by its query string, the sort and the position to explain it at.
type Case = (String, IncidentFilter, Sort, Option<Position>);

/// Each list filter, named by its query string, with the lines of its plan.
pub async fn incident_list_plans(db: &Database) -> Result<Vec<(String, Vec<String>)>, StoreError> {
    db.read(|conn| {
        let newest = Sort::NEWEST_FIRST;
        let in_progress = IncidentFilter {
            states: vec![IncidentState::InProgress],
            ..IncidentFilter::default()
        };
        // An incident being worked has a group, an assignee, a caller and a category to filter by.
        let sample = incidents::list(conn, &in_progress, newest, None, 1)?
            .items
            .into_iter()
            .next()
            .ok_or(StoreError::NotFound)?;
        let deep = newest.position_of(&sample);
        let created = sample.created_at.naive_utc();
        let day_before = created - TimeDelta::days(1);
        let first_word = sample.title.split_whitespace().next().unwrap_or("printer");
        let newest_first = |label: &str, filter: IncidentFilter| -> Case {
            (label.to_owned(), filter, newest, None)
        };
        let all = IncidentFilter::default;
        let cases = [
            newest_first("(no filter)", all()),
            newest_first("state=in_progress", in_progress.clone()),
            (
                "state=in_progress&cursor=…".to_owned(),
                in_progress,
                newest,
                Some(deep),
            ),
            newest_first(
                "state=new&state=on_hold",
                IncidentFilter {
                    states: vec![IncidentState::New, IncidentState::OnHold],
                    ..all()
                },
            ),
            newest_first(
                "priority=p1",
                IncidentFilter {
                    priorities: vec![Priority::P1],
                    ..all()
                },
            ),
            newest_first(
                "assignment_group=…",
                IncidentFilter {
                    assignment_group: sample.assignment_group.clone(),
                    ..all()
                },
            ),
            newest_first(
                "assignee=…",
                IncidentFilter {
                    assignee: sample.assignee.clone(),
                    ..all()
                },
            ),
            newest_first(
                "caller=… (every requester's own list)",
                IncidentFilter {
                    caller: Some(sample.caller.clone()),
                    ..all()
                },
            ),
            newest_first(
                "major=true",
                IncidentFilter {
                    major: Some(true),
                    ..all()
                },
            ),
            newest_first(
                "category=…",
                IncidentFilter {
                    category: sample.category.clone(),
                    ..all()
                },
            ),
            newest_first(
                "parent_id=…",
                IncidentFilter {
                    parent_id: Some(sample.id.clone()),
                    ..all()
                },
            ),
            newest_first(
                "configuration_item=…",
                IncidentFilter {
                    configuration_item: Some(sample.id.clone()),
                    ..all()
                },
            ),
            newest_first(
                "service=…",
                IncidentFilter {
                    service: Some(sample.id.clone()),
                    ..all()
                },
            ),
            newest_first(
                "external_ref=crm:…",
                IncidentFilter {
                    external_ref: Some(domain::ExternalRef {
                        system: "crm".into(),
                        id: sample.number.clone(),
                    }),
                    ..all()
                },
            ),
            newest_first(
                "created_after=…&created_before=…",
                IncidentFilter {
                    created_after: Some(day_before),
                    created_before: Some(created),
                    ..all()
                },
            ),
            (
                "updated_after=…&sort=-updated_at".to_owned(),
                IncidentFilter {
                    updated_after: Some(day_before),
                    ..all()
                },
                Sort {
                    field: SortField::UpdatedAt,
                    descending: true,
                },
                None,
            ),
            (
                "sort=priority".to_owned(),
                all(),
                Sort {
                    field: SortField::Priority,
                    descending: false,
                },
                None,
            ),
            newest_first(
                "channel=monitoring",
                IncidentFilter {
                    channel: Some(domain::incident::Channel::Monitoring),
                    ..all()
                },
            ),
            newest_first(
                "sla_breached=true",
                IncidentFilter {
                    sla_breached: Some(true),
                    ..all()
                },
            ),
            newest_first(
                "sla_due_before=…",
                IncidentFilter {
                    sla_due_before: Some(persistence::now_utc()),
                    ..all()
                },
            ),
            newest_first(
                &format!("q={first_word}"),
                IncidentFilter {
                    q: Some(first_word.to_owned()),
                    ..all()
                },
            ),
        ];
        cases
            .into_iter()
            .map(|(label, filter, sort, after)| {
                let plan = incidents::list_plan(conn, &filter, sort, after.as_ref(), PAGE)?;
                Ok((label, plan))
            })
            .collect()
    })
    .await
}

/// Each problem list filter, named by its query string, with the lines of its plan.
pub async fn problem_list_plans(db: &Database) -> Result<Vec<(String, Vec<String>)>, StoreError> {
    db.read(|conn| {
        let newest = Sort::NEWEST_FIRST;
        let all = ProblemFilter::default;
        let sample = problems::list(conn, &all(), newest, None, 1)?
            .items
            .into_iter()
            .next()
            .ok_or(StoreError::NotFound)?;
        let first_word = sample.title.split_whitespace().nth(1).unwrap_or("printer");
        let cases = [
            ("(no filter)".to_owned(), all(), newest, None),
            (
                "state=assessed".to_owned(),
                ProblemFilter {
                    states: vec![ProblemState::Assessed],
                    ..all()
                },
                newest,
                None,
            ),
            (
                "state=assessed&cursor=…".to_owned(),
                ProblemFilter {
                    states: vec![ProblemState::Assessed],
                    ..all()
                },
                newest,
                Some(newest.position_of(&sample)),
            ),
            (
                "known_error=true".to_owned(),
                ProblemFilter {
                    known_error: Some(true),
                    ..all()
                },
                newest,
                None,
            ),
            (
                "external_ref=erp:…".to_owned(),
                ProblemFilter {
                    external_ref: Some(domain::ExternalRef {
                        system: "erp".into(),
                        id: sample.number.clone(),
                    }),
                    ..all()
                },
                newest,
                None,
            ),
            (
                "priority=p1".to_owned(),
                ProblemFilter {
                    priorities: vec![Priority::P1],
                    ..all()
                },
                newest,
                None,
            ),
            (
                "category=…".to_owned(),
                ProblemFilter {
                    category: sample.category.clone(),
                    ..all()
                },
                newest,
                None,
            ),
            (
                "assignee=…".to_owned(),
                // Any user id: an equality filter plans alike for every value.
                ProblemFilter {
                    assignee: Some(sample.id.clone()),
                    ..all()
                },
                newest,
                None,
            ),
            (
                "sort=priority".to_owned(),
                all(),
                Sort {
                    field: SortField::Priority,
                    descending: false,
                },
                None,
            ),
            (
                format!("q={first_word}"),
                ProblemFilter {
                    q: Some(first_word.to_owned()),
                    ..all()
                },
                newest,
                None,
            ),
        ];
        cases
            .into_iter()
            .map(|(label, filter, sort, after)| {
                let plan = problems::list_plan(conn, &filter, sort, after.as_ref(), PAGE)?;
                Ok((label, plan))
            })
            .collect()
    })
    .await
}

/// Each change list filter, named by its query string, with the lines of its plan; nothing
/// when there is no change to take values from.
pub async fn change_list_plans(db: &Database) -> Result<Vec<(String, Vec<String>)>, StoreError> {
    db.read(|conn| {
        let newest = Sort::NEWEST_FIRST;
        let all = ChangeFilter::default;
        let Some(sample) = changes::list(conn, &all(), newest, None, 1)?
            .items
            .into_iter()
            .next()
        else {
            return Ok(Vec::new());
        };
        let first_word = sample.title.split_whitespace().next().unwrap_or("upgrade");
        let scheduled = ChangeFilter {
            states: vec![ChangeState::Scheduled],
            ..all()
        };
        let cases = [
            ("(no filter)".to_owned(), all(), None),
            ("state=scheduled".to_owned(), scheduled.clone(), None),
            (
                "state=scheduled&cursor=…".to_owned(),
                scheduled,
                Some(newest.position_of(&sample)),
            ),
            (
                "type=emergency".to_owned(),
                ChangeFilter {
                    types: vec![ChangeType::Emergency],
                    ..all()
                },
                None,
            ),
            (
                "risk=very_high".to_owned(),
                ChangeFilter {
                    risks: vec![RiskLevel::VeryHigh],
                    ..all()
                },
                None,
            ),
            (
                "requested_by=…".to_owned(),
                ChangeFilter {
                    requested_by: Some(sample.requested_by.clone()),
                    ..all()
                },
                None,
            ),
            (
                "assignee=…".to_owned(),
                // Any user id: an equality filter plans alike for every value.
                ChangeFilter {
                    assignee: Some(sample.requested_by.clone()),
                    ..all()
                },
                None,
            ),
            (
                "assignment_group=…".to_owned(),
                ChangeFilter {
                    assignment_group: Some(sample.id.clone()),
                    ..all()
                },
                None,
            ),
            (
                "configuration_item=…".to_owned(),
                ChangeFilter {
                    configuration_item: Some(sample.id.clone()),
                    ..all()
                },
                None,
            ),
            (
                "service=…".to_owned(),
                ChangeFilter {
                    service: Some(sample.id.clone()),
                    ..all()
                },
                None,
            ),
            (
                format!("q={first_word}"),
                ChangeFilter {
                    q: Some(first_word.to_owned()),
                    ..all()
                },
                None,
            ),
        ];
        cases
            .into_iter()
            .map(|(label, filter, after)| {
                let plan = changes::list_plan(conn, &filter, newest, after.as_ref(), PAGE)?;
                Ok((label, plan))
            })
            .collect()
    })
    .await
}
