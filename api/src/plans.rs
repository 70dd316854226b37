//! `itsm plans`: how the database runs each filter of `GET /api/v1/incidents`, explained on the
//! configured database for the very query a list request sends, with values taken from its
//! own rows. `make bench` prints it for each backend after seeding.

use chrono::TimeDelta;
use domain::incident::{IncidentState, Priority};
use persistence::incidents::{self, IncidentFilter, Sort, SortField};
use persistence::{Database, StoreError};

/// Pages of the default size.
const PAGE: i64 = 50;

/// Each list filter, named by its query string, with the lines of its plan.
pub async fn incident_list_plans(db: &Database) -> Result<Vec<(String, Vec<String>)>, StoreError> {
    db.read(|conn| {
        let newest = Sort {
            field: SortField::CreatedAt,
            descending: true,
        };
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
        let cases = [
            (
                "(no filter)".to_owned(),
                IncidentFilter::default(),
                newest,
                None,
            ),
            (
                "state=in_progress".to_owned(),
                in_progress.clone(),
                newest,
                None,
            ),
            (
                "state=in_progress&cursor=…".to_owned(),
                in_progress,
                newest,
                Some(deep),
            ),
            (
                "state=new&state=on_hold".to_owned(),
                IncidentFilter {
                    states: vec![IncidentState::New, IncidentState::OnHold],
                    ..IncidentFilter::default()
                },
                newest,
                None,
            ),
            (
                "priority=p1".to_owned(),
                IncidentFilter {
                    priorities: vec![Priority::P1],
                    ..IncidentFilter::default()
                },
                newest,
                None,
            ),
            (
                "assignment_group=…".to_owned(),
                IncidentFilter {
                    assignment_group: sample.assignment_group.clone(),
                    ..IncidentFilter::default()
                },
                newest,
                None,
            ),
            (
                "assignee=…".to_owned(),
                IncidentFilter {
                    assignee: sample.assignee.clone(),
                    ..IncidentFilter::default()
                },
                newest,
                None,
            ),
            (
                "caller=… (every requester's own list)".to_owned(),
                IncidentFilter {
                    caller: Some(sample.caller.clone()),
                    ..IncidentFilter::default()
                },
                newest,
                None,
            ),
            (
                "major=true".to_owned(),
                IncidentFilter {
                    major: Some(true),
                    ..IncidentFilter::default()
                },
                newest,
                None,
            ),
            (
                "category=…".to_owned(),
                IncidentFilter {
                    category: sample.category.clone(),
                    ..IncidentFilter::default()
                },
                newest,
                None,
            ),
            (
                "parent_id=…".to_owned(),
                IncidentFilter {
                    parent_id: Some(sample.id.clone()),
                    ..IncidentFilter::default()
                },
                newest,
                None,
            ),
            (
                "created_after=…&created_before=…".to_owned(),
                IncidentFilter {
                    created_after: Some(day_before),
                    created_before: Some(created),
                    ..IncidentFilter::default()
                },
                newest,
                None,
            ),
            (
                "updated_after=…&sort=-updated_at".to_owned(),
                IncidentFilter {
                    updated_after: Some(day_before),
                    ..IncidentFilter::default()
                },
                Sort {
                    field: SortField::UpdatedAt,
                    descending: true,
                },
                None,
            ),
            (
                "sort=priority".to_owned(),
                IncidentFilter::default(),
                Sort {
                    field: SortField::Priority,
                    descending: false,
                },
                None,
            ),
            (
                format!("q={first_word}"),
                IncidentFilter {
                    q: Some(first_word.to_owned()),
                    ..IncidentFilter::default()
                },
                newest,
                None,
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
