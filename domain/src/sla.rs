//! The SLA clock: given a business calendar, a target and a timer's timeline (start, pauses,
//! resumes, retargets, stop), how much business time has run, how long it was paused, when it
//! is due, and whether it warned or breached, each at its exact instant.
//!
//! Time is split three ways and always adds up: business time while running (`elapsed`), any
//! time while paused (`paused`), and time while running outside working hours (`outside`).

use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::calendar::{Calendar, Holiday, WorkingRange};
use crate::enums::string_enum;
use crate::incident::{IncidentState, OnHoldReason};
use crate::priority::Priority;
use crate::problem::ProblemState;
use crate::ticket::TicketKind;
use crate::{DomainError, FieldError};

string_enum!(
    /// What a timer measures: until the first response, or until resolution.
    SlaMetric { Response => "response", Resolution => "resolution" }
);

string_enum!(
    TimerState {
        Running => "running",
        Paused => "paused",
        Achieved => "achieved",
        Breached => "breached",
        Canceled => "canceled",
    }
);

/// One change in a timer's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ClockEvent {
    Start,
    Pause,
    Resume,
    /// The target became `target_seconds` (a policy or priority change); the time already run
    /// and paused is kept and counts against the new target.
    Retarget {
        target_seconds: i64,
    },
    /// The goal was met (first response given, ticket resolved).
    Stop,
    /// The timer no longer applies (ticket canceled, policy no longer matching).
    Cancel,
}

/// A clock event at its instant. Entries are applied in the order given, so two in the same
/// second keep their order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimelineEntry {
    pub at: DateTime<Utc>,
    pub event: ClockEvent,
}

/// A timer read at some instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reading {
    pub state: TimerState,
    pub started_at: DateTime<Utc>,
    pub target_seconds: i64,
    pub elapsed_seconds: i64,
    pub paused_seconds: i64,
    pub outside_seconds: i64,
    /// `target - elapsed`; negative once breached.
    pub remaining_seconds: i64,
    /// When the target is (or was) reached while running; `None` while paused or after a stop
    /// or cancel before it.
    pub due_at: Option<DateTime<Utc>>,
    /// When the elapsed time crossed the warning threshold.
    pub warned_at: Option<DateTime<Utc>>,
    /// When the elapsed time crossed the target.
    pub breached_at: Option<DateTime<Utc>>,
    pub stopped_at: Option<DateTime<Utc>>,
}

/// The share of the target at which a timer warns.
pub(crate) fn warning_seconds(target: i64, warning_percent: u8) -> i64 {
    target * i64::from(warning_percent.min(100)) / 100
}

/// Reads a timer at `now` from its timeline; entries after `now` are not seen yet. The first
/// entry must be the start.
pub fn read_clock(
    calendar: &Calendar,
    initial_target_seconds: i64,
    warning_percent: u8,
    timeline: &[TimelineEntry],
    now: DateTime<Utc>,
) -> Option<Reading> {
    let first = timeline.first()?;
    if first.event != ClockEvent::Start {
        return None;
    }
    let clock = Clock::replay(
        calendar,
        warning_percent,
        (first.at, initial_target_seconds),
        &timeline[1..],
        now,
    );
    Some(clock.reading)
}

/// A timer's clock part way through its timeline: the reading up to `position`. A timeline is
/// read by folding its entries into a clock; a stored timer keeps its clock's [`ClockSnapshot`]
/// and goes on from it, so a new entry costs the same however long the timeline is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clock {
    pub reading: Reading,
    /// How far the reading has run.
    pub position: DateTime<Utc>,
    pub running: bool,
}

/// What a stored timer keeps of its clock: enough to go on without its timeline. The rest of
/// a reading follows from it (outside time is the wall time less elapsed and paused).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClockSnapshot {
    pub state: TimerState,
    pub started_at: DateTime<Utc>,
    pub position: DateTime<Utc>,
    pub running: bool,
    pub target_seconds: i64,
    pub elapsed_seconds: i64,
    pub paused_seconds: i64,
    pub warned_at: Option<DateTime<Utc>>,
    pub breached_at: Option<DateTime<Utc>>,
    pub stopped_at: Option<DateTime<Utc>>,
}

impl Clock {
    pub fn start(at: DateTime<Utc>, target_seconds: i64) -> Clock {
        Clock {
            reading: Reading {
                state: TimerState::Running,
                started_at: at,
                target_seconds,
                elapsed_seconds: 0,
                paused_seconds: 0,
                outside_seconds: 0,
                remaining_seconds: target_seconds,
                due_at: None,
                warned_at: None,
                breached_at: None,
                stopped_at: None,
            },
            position: at,
            running: true,
        }
    }

    /// The clock started at `start.0` with target `start.1`, run through the `entries` seen by
    /// `now` and on to `now`.
    pub fn replay(
        calendar: &Calendar,
        warning_percent: u8,
        start: (DateTime<Utc>, i64),
        entries: &[TimelineEntry],
        now: DateTime<Utc>,
    ) -> Clock {
        let mut clock = Clock::start(start.0, start.1);
        for entry in entries.iter().filter(|entry| entry.at <= now) {
            clock.apply(calendar, warning_percent, entry);
        }
        clock.run_until(calendar, warning_percent, now);
        clock
    }

    /// The clock of a snapshot, as it was when the snapshot was taken.
    pub fn resume(snapshot: &ClockSnapshot) -> Clock {
        let wall = (snapshot.position - snapshot.started_at).num_seconds();
        Clock {
            reading: Reading {
                state: snapshot.state,
                started_at: snapshot.started_at,
                target_seconds: snapshot.target_seconds,
                elapsed_seconds: snapshot.elapsed_seconds,
                paused_seconds: snapshot.paused_seconds,
                outside_seconds: wall - snapshot.elapsed_seconds - snapshot.paused_seconds,
                remaining_seconds: snapshot.target_seconds - snapshot.elapsed_seconds,
                due_at: None,
                warned_at: snapshot.warned_at,
                breached_at: snapshot.breached_at,
                stopped_at: snapshot.stopped_at,
            },
            position: snapshot.position,
            running: snapshot.running,
        }
    }

    pub fn snapshot(&self) -> ClockSnapshot {
        let r = &self.reading;
        ClockSnapshot {
            state: r.state,
            started_at: r.started_at,
            position: self.position,
            running: self.running,
            target_seconds: r.target_seconds,
            elapsed_seconds: r.elapsed_seconds,
            paused_seconds: r.paused_seconds,
            warned_at: r.warned_at,
            breached_at: r.breached_at,
            stopped_at: r.stopped_at,
        }
    }

    pub fn ended(&self) -> bool {
        self.reading.stopped_at.is_some()
    }

    /// Runs the clock to `entry` and applies it; nothing changes once the timer has ended.
    pub fn apply(&mut self, calendar: &Calendar, warning_percent: u8, entry: &TimelineEntry) {
        if self.ended() {
            return;
        }
        let at = entry.at.max(self.position);
        advance(
            calendar,
            warning_percent,
            &mut self.reading,
            self.running,
            self.position,
            at,
        );
        self.position = at;
        let reading = &mut self.reading;
        match entry.event {
            ClockEvent::Start => {}
            ClockEvent::Pause => self.running = false,
            ClockEvent::Resume => self.running = true,
            ClockEvent::Retarget { target_seconds } => {
                reading.target_seconds = target_seconds;
                // A lower target already run past is crossed at the retarget itself.
                let warning = warning_seconds(target_seconds, warning_percent);
                if reading.elapsed_seconds >= warning && reading.warned_at.is_none() {
                    reading.warned_at = Some(at);
                }
                if reading.elapsed_seconds >= target_seconds && reading.breached_at.is_none() {
                    reading.breached_at = Some(at);
                }
            }
            ClockEvent::Stop | ClockEvent::Cancel => {
                reading.stopped_at = Some(at);
                reading.state = match entry.event {
                    ClockEvent::Cancel => TimerState::Canceled,
                    _ if reading.breached_at.is_some() => TimerState::Breached,
                    _ => TimerState::Achieved,
                };
            }
        }
    }

    /// Runs the clock to `now` (a clock already past `now` stays where it is) and completes
    /// its reading: state, remaining and due time.
    pub fn run_until(&mut self, calendar: &Calendar, warning_percent: u8, now: DateTime<Utc>) {
        let ended = self.ended();
        if !ended {
            let until = now.max(self.position);
            advance(
                calendar,
                warning_percent,
                &mut self.reading,
                self.running,
                self.position,
                until,
            );
            self.position = until;
            self.reading.state = match (self.reading.breached_at, self.running) {
                (Some(_), _) => TimerState::Breached,
                (None, true) => TimerState::Running,
                (None, false) => TimerState::Paused,
            };
        }
        let reading = &mut self.reading;
        reading.remaining_seconds = reading.target_seconds - reading.elapsed_seconds;
        // An achieved timer keeps the due time it had when it stopped; a paused or canceled
        // one has none.
        let counts_down = (self.running && !ended) || reading.state == TimerState::Achieved;
        reading.due_at = match (reading.breached_at, counts_down) {
            (Some(at), _) => Some(at),
            (None, true) => calendar.add_business_seconds(self.position, reading.remaining_seconds),
            (None, false) => None,
        };
    }
}

fn advance(
    calendar: &Calendar,
    warning_percent: u8,
    reading: &mut Reading,
    running: bool,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) {
    let wall = (to - from).num_seconds().max(0);
    if !running {
        reading.paused_seconds += wall;
        return;
    }
    let business = calendar.business_seconds(from, to);
    let before = reading.elapsed_seconds;
    let after = before + business;
    let crossed = |threshold: i64| {
        (before < threshold && threshold <= after)
            .then(|| calendar.add_business_seconds(from, threshold - before))
            .flatten()
    };
    if reading.warned_at.is_none() {
        reading.warned_at = crossed(warning_seconds(reading.target_seconds, warning_percent));
    }
    if reading.breached_at.is_none() {
        reading.breached_at = crossed(reading.target_seconds);
    }
    reading.elapsed_seconds = after;
    reading.outside_seconds += wall - business;
}

string_enum!(
    Day {
        Monday => "monday",
        Tuesday => "tuesday",
        Wednesday => "wednesday",
        Thursday => "thursday",
        Friday => "friday",
        Saturday => "saturday",
        Sunday => "sunday",
    }
);

impl Day {
    fn weekday(self) -> chrono::Weekday {
        use chrono::Weekday as W;
        match self {
            Day::Monday => W::Mon,
            Day::Tuesday => W::Tue,
            Day::Wednesday => W::Wed,
            Day::Thursday => W::Thu,
            Day::Friday => W::Fri,
            Day::Saturday => W::Sat,
            Day::Sunday => W::Sun,
        }
    }
}

/// One range of working hours as clients write it: `"09:00"` to `"17:00"`; an end at or
/// before the start runs past midnight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HoursSpec {
    pub day: Day,
    #[schema(example = "09:00")]
    pub start: String,
    #[schema(example = "17:00")]
    pub end: String,
}

/// A closed day, or the closed part of one: `start` and `end` come together, and `end` is
/// after `start`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HolidaySpec {
    pub date: NaiveDate,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    /// After `start` (a partial holiday does not run past midnight).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<String>,
}

/// A business calendar as clients write it and as it is stored, version by version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CalendarDefinition {
    #[schema(example = "Europe/Berlin")]
    pub time_zone: String,
    pub working_hours: Vec<HoursSpec>,
    #[serde(default)]
    pub holidays: Vec<HolidaySpec>,
}

/// `"HH:MM"`, 00:00 to 23:59: what `clock_time` accepts, for the contract.
pub const CLOCK_TIME_PATTERN: &str = "^(?:[01][0-9]|2[0-3]):[0-5][0-9]$";

/// `"HH:MM"`, 00:00 to 23:59.
fn clock_time(text: &str, field: String, errors: &mut Vec<FieldError>) -> Option<NaiveTime> {
    let parsed = NaiveTime::parse_from_str(text, "%H:%M")
        .ok()
        .filter(|_| text.len() == 5);
    if parsed.is_none() {
        errors.push(FieldError::new(field, "must be a time of day as HH:MM"));
    }
    parsed
}

impl CalendarDefinition {
    /// The calendar this definition describes, or every field that is wrong.
    pub fn calendar(&self) -> Result<Calendar, DomainError> {
        let mut errors = Vec::new();
        let mut working_hours = Vec::new();
        for (index, range) in self.working_hours.iter().enumerate() {
            let start = clock_time(
                &range.start,
                format!("working_hours[{index}].start"),
                &mut errors,
            );
            let end = clock_time(
                &range.end,
                format!("working_hours[{index}].end"),
                &mut errors,
            );
            if let (Some(start), Some(end)) = (start, end) {
                working_hours.push(WorkingRange {
                    day: range.day.weekday(),
                    start,
                    end,
                });
            }
        }
        let mut holidays = Vec::new();
        for (index, holiday) in self.holidays.iter().enumerate() {
            let time = |text: &Option<String>, part: &str, errors: &mut Vec<FieldError>| {
                text.as_deref()
                    .and_then(|t| clock_time(t, format!("holidays[{index}].{part}"), errors))
            };
            holidays.push(Holiday {
                date: holiday.date,
                start: time(&holiday.start, "start", &mut errors),
                end: time(&holiday.end, "end", &mut errors),
            });
        }
        if !errors.is_empty() {
            return Err(DomainError::Invalid(errors));
        }
        Calendar::parse(&self.time_zone, working_hours, holidays)
    }

    /// Every hour of every day in UTC: the built-in `24x7` calendar.
    pub fn always_open() -> CalendarDefinition {
        CalendarDefinition {
            time_zone: "UTC".into(),
            working_hours: Day::ALL
                .iter()
                .map(|day| HoursSpec {
                    day: *day,
                    start: "00:00".into(),
                    end: "00:00".into(),
                })
                .collect(),
            holidays: Vec::new(),
        }
    }
}

/// Which tickets a policy applies to; unset criteria match every ticket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AppliesTo {
    pub ticket_type: TicketKind,
    /// Empty: every priority.
    #[serde(default)]
    pub priorities: Vec<Priority>,
    pub category: Option<String>,
    /// A business service (configuration item id).
    pub service: Option<String>,
    /// An assignment group id.
    pub assignment_group: Option<String>,
}

string_enum!(
    /// A point in a timer's life at which a policy may escalate.
    Threshold { Warning => "warning", Breach => "breach" }
);

string_enum!(
    /// What an escalation does: tell a group (an `sla.escalated` event naming it), or hand
    /// the ticket to the group.
    EscalationAction { Notify => "notify", Reassign => "reassign" }
);

/// What happens when a timer of the policy warns or breaches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Escalation {
    pub threshold: Threshold,
    /// Only timers of this metric; unset: both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<SlaMetric>,
    pub action: EscalationAction,
    /// The group to notify or reassign to.
    pub group: String,
}

impl Escalation {
    pub fn concerns(&self, threshold: Threshold, metric: SlaMetric) -> bool {
        self.threshold == threshold && self.metric.is_none_or(|m| m == metric)
    }
}

/// A business-time goal for tickets of one priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Target {
    pub metric: SlaMetric,
    pub priority: Priority,
    #[schema(minimum = 60, maximum = 31536000, example = 28800)]
    pub duration_seconds: i64,
}

/// A state (and on-hold reason) in which a ticket's timers pause.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PauseCondition {
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_hold_reason: Option<String>,
}

/// An SLA policy as clients write it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyDefinition {
    #[schema(example = "Office hours, all incidents")]
    pub name: String,
    /// Policies are tried from the lowest precedence up; the first that applies wins.
    pub precedence: i32,
    pub applies_to: AppliesTo,
    pub calendar_id: String,
    /// The share of a target after which the timer warns. Defaults to 75.
    #[serde(default = "default_warning_percent")]
    #[schema(minimum = 1, maximum = 99)]
    pub warning_percent: u8,
    /// At most one per metric and priority, and at least one for every priority the policy
    /// applies to.
    pub targets: Vec<Target>,
    /// When a ticket's timers pause: states of the policy's ticket type (an on-hold reason
    /// only with an incident's `on_hold`). Defaults for incidents to `on_hold` awaiting the
    /// caller or a vendor (never awaiting a change or a problem); for problems, never.
    pub pause_on: Option<Vec<PauseCondition>>,
    /// What to do at a warning or a breach, beyond the `sla.warning` and `sla.breached` events.
    #[serde(default)]
    pub escalations: Vec<Escalation>,
}

fn default_warning_percent() -> u8 {
    75
}

/// What a policy is matched against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TicketFacts<'a> {
    pub ticket_type: TicketKind,
    pub priority: Priority,
    pub category: Option<&'a str>,
    pub service: Option<&'a str>,
    pub assignment_group: Option<&'a str>,
}

/// The most a target may be: a year of business time.
const MAX_TARGET_SECONDS: i64 = 365 * 86_400;

/// The longest policy name, in characters once trimmed.
pub const MAX_POLICY_NAME_CHARS: usize = 100;

/// The states a policy may pause in: those of incidents and of problems (each policy only its
/// own ticket type's).
pub fn pause_states() -> impl Iterator<Item = &'static str> {
    let mut states: Vec<&'static str> = IncidentState::ALL.iter().map(|s| s.as_str()).collect();
    for state in ProblemState::ALL {
        if !states.contains(&state.as_str()) {
            states.push(state.as_str());
        }
    }
    states.into_iter()
}

impl PolicyDefinition {
    /// Checks the policy as written and fills in the default pause conditions.
    pub fn validated(mut self) -> Result<PolicyDefinition, DomainError> {
        let mut errors = Vec::new();
        self.name = self.name.trim().to_owned();
        if self.name.is_empty() || self.name.chars().count() > MAX_POLICY_NAME_CHARS {
            errors.push(FieldError::new(
                "name",
                format!("must be 1 to {MAX_POLICY_NAME_CHARS} characters"),
            ));
        }
        let states: Vec<&str> = match self.applies_to.ticket_type {
            TicketKind::Incident => IncidentState::ALL.iter().map(|s| s.as_str()).collect(),
            TicketKind::Problem => ProblemState::ALL.iter().map(|s| s.as_str()).collect(),
            other => {
                errors.push(FieldError::new(
                    "applies_to.ticket_type",
                    format!("{other} tickets have no service levels yet; incident or problem"),
                ));
                Vec::new()
            }
        };
        if !(1..=99).contains(&self.warning_percent) {
            errors.push(FieldError::new("warning_percent", "must be 1 to 99"));
        }
        for (index, target) in self.targets.iter().enumerate() {
            if !(60..=MAX_TARGET_SECONDS).contains(&target.duration_seconds) {
                errors.push(FieldError::new(
                    format!("targets[{index}].duration_seconds"),
                    "must be 60 seconds to a year",
                ));
            }
            let repeated = self.targets[..index]
                .iter()
                .any(|t| t.metric == target.metric && t.priority == target.priority);
            if repeated {
                errors.push(FieldError::new(
                    format!("targets[{index}]"),
                    format!("a second {} target for {}", target.metric, target.priority),
                ));
            }
        }
        let priorities: &[Priority] = if self.applies_to.priorities.is_empty() {
            Priority::ALL
        } else {
            &self.applies_to.priorities
        };
        for priority in priorities {
            if !self.targets.iter().any(|t| t.priority == *priority) {
                errors.push(FieldError::new(
                    "targets",
                    format!("no target for priority {priority}, which the policy applies to"),
                ));
            }
        }
        let pause_on = self
            .pause_on
            .take()
            .unwrap_or_else(|| match self.applies_to.ticket_type {
                TicketKind::Incident => {
                    [OnHoldReason::AwaitingCaller, OnHoldReason::AwaitingVendor]
                        .iter()
                        .map(|reason| PauseCondition {
                            state: IncidentState::OnHold.as_str().into(),
                            on_hold_reason: Some(reason.as_str().into()),
                        })
                        .collect()
                }
                _ => Vec::new(),
            });
        for (index, condition) in pause_on.iter().enumerate() {
            if !states.is_empty() && !states.contains(&condition.state.as_str()) {
                errors.push(FieldError::new(
                    format!("pause_on[{index}].state"),
                    format!("must be one of {}", states.join(", ")),
                ));
            }
            if let Some(reason) = &condition.on_hold_reason {
                let on_hold = self.applies_to.ticket_type == TicketKind::Incident
                    && condition.state == IncidentState::OnHold.as_str();
                if !on_hold || reason.parse::<OnHoldReason>().is_err() {
                    errors.push(FieldError::new(
                        format!("pause_on[{index}].on_hold_reason"),
                        format!(
                            "applies to incidents on_hold only: one of {}",
                            OnHoldReason::names()
                        ),
                    ));
                }
            }
        }
        self.pause_on = Some(pause_on);
        if errors.is_empty() {
            Ok(self)
        } else {
            Err(DomainError::Invalid(errors))
        }
    }

    pub fn applies(&self, facts: &TicketFacts<'_>) -> bool {
        let wanted = &self.applies_to;
        let matches = |criterion: &Option<String>, value: Option<&str>| {
            criterion.as_deref().is_none_or(|c| Some(c) == value)
        };
        wanted.ticket_type == facts.ticket_type
            && (wanted.priorities.is_empty() || wanted.priorities.contains(&facts.priority))
            && matches(&wanted.category, facts.category)
            && matches(&wanted.service, facts.service)
            && matches(&wanted.assignment_group, facts.assignment_group)
    }

    /// The target for a metric at a priority, if the policy has one.
    pub fn target(&self, metric: SlaMetric, priority: Priority) -> Option<i64> {
        self.targets
            .iter()
            .find(|t| t.metric == metric && t.priority == priority)
            .map(|t| t.duration_seconds)
    }

    /// Whether a ticket in `state` (with `on_hold_reason`) pauses its timers.
    pub fn pauses(&self, state: &str, on_hold_reason: Option<&str>) -> bool {
        self.pause_on.iter().flatten().any(|condition| {
            condition.state == state
                && condition
                    .on_hold_reason
                    .as_deref()
                    .is_none_or(|reason| Some(reason) == on_hold_reason)
        })
    }
}

/// The policy that applies to a ticket: the first by precedence (then by id) that matches.
pub fn choose<'a, K: Ord>(
    policies: &'a [(K, PolicyDefinition)],
    facts: &TicketFacts<'_>,
) -> Option<&'a (K, PolicyDefinition)> {
    policies
        .iter()
        .filter(|(_, policy)| policy.applies(facts))
        .min_by(|a, b| a.1.precedence.cmp(&b.1.precedence).then(a.0.cmp(&b.0)))
}

/// A business calendar as the API shows it: its current version's definition.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct CalendarRecord {
    pub id: String,
    #[schema(example = "Berlin office")]
    pub name: String,
    #[serde(flatten)]
    pub definition: CalendarDefinition,
    /// Built-in calendars (`24x7`) cannot be changed or deleted.
    pub builtin: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Each change makes a new version; a running timer keeps the version it started under.
    pub version: i64,
}

/// An SLA policy as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct PolicyRecord {
    pub id: String,
    #[serde(flatten)]
    pub definition: PolicyDefinition,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub version: i64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calendar::tests::{at, berlin_office};

    const HOUR: i64 = 3600;

    fn entry(at: DateTime<Utc>, event: ClockEvent) -> TimelineEntry {
        TimelineEntry { at, event }
    }

    fn assert_adds_up(reading: &Reading, end: DateTime<Utc>) {
        assert_eq!(
            reading.elapsed_seconds + reading.paused_seconds + reading.outside_seconds,
            (end - reading.started_at).num_seconds(),
            "{reading:?}"
        );
    }

    /// The case: reported Friday 16:00 in Berlin, 9-17, 8 business hours; on hold
    /// Friday 16:30, resumed Monday 10:00, resolved Monday 15:00.
    #[test]
    fn a_pause_over_the_weekend() {
        let cal = berlin_office();
        let tz = cal.time_zone;
        let timeline = [
            entry(at(tz, "2026-11-27 16:00"), ClockEvent::Start),
            entry(at(tz, "2026-11-27 16:30"), ClockEvent::Pause),
            entry(at(tz, "2026-11-30 10:00"), ClockEvent::Resume),
            entry(at(tz, "2026-11-30 15:00"), ClockEvent::Stop),
        ];
        // Read while paused: no due time, half an hour run.
        let paused = read_clock(&cal, 8 * HOUR, 75, &timeline, at(tz, "2026-11-28 12:00")).unwrap();
        assert_eq!(paused.state, TimerState::Paused);
        assert_eq!((paused.elapsed_seconds, paused.due_at), (HOUR / 2, None));
        // Read after the resume: due Tuesday 09:30.
        let resumed =
            read_clock(&cal, 8 * HOUR, 75, &timeline, at(tz, "2026-11-30 11:00")).unwrap();
        assert_eq!(resumed.due_at, Some(at(tz, "2026-12-01 09:30")));
        assert_eq!(resumed.remaining_seconds, 8 * HOUR - 3 * HOUR / 2);
        // At the end: achieved with 5.5 hours run and the weekend paused.
        let done = read_clock(&cal, 8 * HOUR, 75, &timeline, at(tz, "2026-12-02 00:00")).unwrap();
        assert_eq!(done.state, TimerState::Achieved);
        assert_eq!(done.elapsed_seconds, 11 * HOUR / 2);
        assert_eq!(done.paused_seconds, 65 * HOUR + HOUR / 2);
        assert_eq!(done.warned_at, None);
        assert_eq!(done.stopped_at, Some(at(tz, "2026-11-30 15:00")));
        assert_eq!(done.due_at, Some(at(tz, "2026-12-01 09:30")));
        assert_adds_up(&done, at(tz, "2026-11-30 15:00"));
    }

    #[test]
    fn warning_and_breach_at_their_exact_instants() {
        let cal = berlin_office();
        let tz = cal.time_zone;
        let timeline = [entry(at(tz, "2026-11-27 09:00"), ClockEvent::Start)];
        let reading =
            read_clock(&cal, 10 * HOUR, 80, &timeline, at(tz, "2026-12-01 12:00")).unwrap();
        assert_eq!(reading.state, TimerState::Breached);
        // 8 hours Friday, then Monday 09:00 + 0 (80% of 10 h = 8 h reached at Friday 17:00).
        assert_eq!(reading.warned_at, Some(at(tz, "2026-11-27 17:00")));
        assert_eq!(reading.breached_at, Some(at(tz, "2026-11-30 11:00")));
        assert_eq!(reading.due_at, reading.breached_at);
        assert_eq!(reading.remaining_seconds, 10 * HOUR - 19 * HOUR);
        assert_adds_up(&reading, at(tz, "2026-12-01 12:00"));
        // A stop after the breach stays breached.
        let late = [
            timeline[0],
            entry(at(tz, "2026-11-30 12:00"), ClockEvent::Stop),
        ];
        let stopped = read_clock(&cal, 10 * HOUR, 80, &late, at(tz, "2026-12-05 00:00")).unwrap();
        assert_eq!(stopped.state, TimerState::Breached);
    }

    #[test]
    fn a_retarget_keeps_the_time_already_run() {
        let cal = berlin_office();
        let tz = cal.time_zone;
        let timeline = [
            entry(at(tz, "2026-11-30 09:00"), ClockEvent::Start),
            entry(
                at(tz, "2026-11-30 12:00"),
                ClockEvent::Retarget {
                    target_seconds: 4 * HOUR,
                },
            ),
        ];
        let reading =
            read_clock(&cal, 16 * HOUR, 50, &timeline, at(tz, "2026-11-30 12:30")).unwrap();
        assert_eq!(reading.elapsed_seconds, 7 * HOUR / 2);
        assert_eq!(reading.due_at, Some(at(tz, "2026-11-30 13:00")));
        // 50% of the new target (2 h) was already run: warned at the retarget.
        assert_eq!(reading.warned_at, Some(at(tz, "2026-11-30 12:00")));
        // Lowered below the time already run: breached at the retarget itself.
        let lowered = [
            timeline[0],
            entry(
                at(tz, "2026-11-30 12:00"),
                ClockEvent::Retarget {
                    target_seconds: 2 * HOUR,
                },
            ),
        ];
        let reading =
            read_clock(&cal, 16 * HOUR, 50, &lowered, at(tz, "2026-11-30 12:30")).unwrap();
        assert_eq!(reading.breached_at, Some(at(tz, "2026-11-30 12:00")));
        assert_eq!(reading.state, TimerState::Breached);
    }

    #[test]
    fn events_in_the_same_second_keep_their_order() {
        let cal = berlin_office();
        let tz = cal.time_zone;
        let t = at(tz, "2026-11-30 10:00");
        let timeline = [
            entry(at(tz, "2026-11-30 09:00"), ClockEvent::Start),
            entry(t, ClockEvent::Pause),
            entry(t, ClockEvent::Resume),
            entry(t, ClockEvent::Pause),
        ];
        let reading =
            read_clock(&cal, 8 * HOUR, 75, &timeline, at(tz, "2026-11-30 11:00")).unwrap();
        assert_eq!(reading.state, TimerState::Paused);
        assert_eq!(
            (reading.elapsed_seconds, reading.paused_seconds),
            (HOUR, HOUR)
        );
    }

    #[test]
    fn a_pause_across_closed_hours_counts_as_paused_only() {
        let cal = berlin_office();
        let tz = cal.time_zone;
        let timeline = [
            entry(at(tz, "2026-11-30 16:00"), ClockEvent::Start),
            entry(at(tz, "2026-11-30 16:30"), ClockEvent::Pause),
            entry(at(tz, "2026-12-01 08:00"), ClockEvent::Resume),
        ];
        let now = at(tz, "2026-12-01 10:00");
        let reading = read_clock(&cal, 8 * HOUR, 75, &timeline, now).unwrap();
        assert_eq!(reading.elapsed_seconds, HOUR / 2 + HOUR);
        assert_eq!(reading.paused_seconds, 15 * HOUR + HOUR / 2);
        assert_eq!(reading.outside_seconds, HOUR);
        assert_adds_up(&reading, now);
        let canceled = [
            timeline[0],
            entry(at(tz, "2026-11-30 16:10"), ClockEvent::Cancel),
        ];
        let reading = read_clock(&cal, 8 * HOUR, 75, &canceled, now).unwrap();
        assert_eq!(
            (reading.state, reading.due_at),
            (TimerState::Canceled, None)
        );
    }

    /// A repeatable random number below `bound` at each call (xorshift), from `seed`.
    fn xorshift(mut seed: u64) -> impl FnMut(i64) -> i64 {
        move |bound: i64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % bound as u64) as i64
        }
    }

    /// Over random timelines, elapsed + paused + outside hours is the wall time, and the
    /// elapsed time never exceeds the business time of the whole span.
    #[test]
    fn the_three_parts_always_add_up_to_the_wall_time() {
        let cal = berlin_office();
        let tz = cal.time_zone;
        let mut next = xorshift(0x2545_f491_4f6c_dd1d);
        for _ in 0..300 {
            let start = at(tz, "2026-03-20 00:00") + chrono::Duration::seconds(next(40 * 86_400));
            let mut timeline = vec![entry(start, ClockEvent::Start)];
            let mut t = start;
            for _ in 0..next(12) {
                t += chrono::Duration::seconds(next(3 * 86_400));
                let event = match next(5) {
                    0 => ClockEvent::Pause,
                    1 => ClockEvent::Resume,
                    2 => ClockEvent::Retarget {
                        target_seconds: next(40) * HOUR,
                    },
                    _ => ClockEvent::Pause,
                };
                timeline.push(entry(t, event));
            }
            let now = t + chrono::Duration::seconds(next(5 * 86_400));
            let reading = read_clock(&cal, 8 * HOUR, 75, &timeline, now).unwrap();
            assert_adds_up(&reading, now);
            assert!(reading.elapsed_seconds <= cal.business_seconds(start, now));
        }
    }

    /// Over random timelines (across the spring DST change), a clock stored at any instant
    /// and resumed reads exactly what the whole timeline reads.
    #[test]
    fn a_resumed_snapshot_reads_as_the_whole_timeline() {
        let cal = berlin_office();
        let tz = cal.time_zone;
        let mut next = xorshift(0x9e37_79b9_7f4a_7c15);
        for _ in 0..300 {
            let start = at(tz, "2026-03-20 00:00") + chrono::Duration::seconds(next(20 * 86_400));
            let mut timeline = vec![entry(start, ClockEvent::Start)];
            let mut t = start;
            for _ in 0..next(10) {
                t += chrono::Duration::seconds(next(2 * 86_400));
                let event = match next(7) {
                    0 | 1 => ClockEvent::Pause,
                    2 | 3 => ClockEvent::Resume,
                    4 | 5 => ClockEvent::Retarget {
                        target_seconds: next(30) * HOUR,
                    },
                    _ => ClockEvent::Stop,
                };
                timeline.push(entry(t, event));
            }
            let now = t + chrono::Duration::seconds(next(3 * 86_400));
            let whole = read_clock(&cal, 8 * HOUR, 75, &timeline, now).unwrap();

            // Stored after `split` entries, somewhere before the next one.
            let split = 1 + next(timeline.len() as i64) as usize;
            let until = timeline.get(split).map_or(now, |e| e.at);
            let since = timeline[split - 1].at;
            let stored_at =
                since + chrono::Duration::seconds(next((until - since).num_seconds() + 1));
            let mut clock = Clock::start(start, 8 * HOUR);
            for e in &timeline[1..split] {
                clock.apply(&cal, 75, e);
            }
            clock.run_until(&cal, 75, stored_at);
            let mut resumed = Clock::resume(&clock.snapshot());
            for e in &timeline[split..] {
                resumed.apply(&cal, 75, e);
            }
            resumed.run_until(&cal, 75, now);
            assert_eq!(resumed.reading, whole, "{timeline:?} stored at {stored_at}");
        }
    }

    fn policy() -> PolicyDefinition {
        PolicyDefinition {
            name: " Office hours ".into(),
            precedence: 10,
            applies_to: AppliesTo {
                ticket_type: TicketKind::Incident,
                priorities: vec![Priority::P1, Priority::P2],
                category: Some("network".into()),
                service: None,
                assignment_group: None,
            },
            calendar_id: "c1".into(),
            warning_percent: 75,
            targets: vec![
                Target {
                    metric: SlaMetric::Resolution,
                    priority: Priority::P1,
                    duration_seconds: 4 * HOUR,
                },
                Target {
                    metric: SlaMetric::Resolution,
                    priority: Priority::P2,
                    duration_seconds: 8 * HOUR,
                },
            ],
            pause_on: None,
            escalations: Vec::new(),
        }
    }

    #[test]
    fn policies_default_their_pauses_and_match_their_tickets() {
        let policy = policy().validated().unwrap();
        assert_eq!(policy.name, "Office hours");
        assert!(policy.pauses("on_hold", Some("awaiting_caller")));
        assert!(!policy.pauses("on_hold", Some("awaiting_problem")));
        assert!(!policy.pauses("in_progress", None));
        let facts = TicketFacts {
            ticket_type: TicketKind::Incident,
            priority: Priority::P2,
            category: Some("network"),
            service: None,
            assignment_group: Some("g"),
        };
        assert!(policy.applies(&facts));
        assert!(!policy.applies(&TicketFacts {
            priority: Priority::P3,
            ..facts
        }));
        assert!(!policy.applies(&TicketFacts {
            category: None,
            ..facts
        }));
        assert_eq!(
            policy.target(SlaMetric::Resolution, Priority::P2),
            Some(8 * HOUR)
        );
        assert_eq!(policy.target(SlaMetric::Response, Priority::P2), None);
        let mut general = policy.clone();
        general.precedence = 20;
        general.applies_to.category = None;
        let policies = vec![("b".to_owned(), general), ("a".to_owned(), policy)];
        assert_eq!(choose(&policies, &facts).map(|p| p.0.as_str()), Some("a"));
        let elsewhere = TicketFacts {
            category: Some("email"),
            ..facts
        };
        assert_eq!(
            choose(&policies, &elsewhere).map(|p| p.0.as_str()),
            Some("b")
        );
    }

    #[test]
    fn bad_policies_name_their_fields() {
        let mut bad = policy();
        bad.applies_to.priorities = Vec::new();
        bad.warning_percent = 0;
        bad.targets[1].duration_seconds = 5;
        bad.pause_on = Some(vec![PauseCondition {
            state: "resolved".into(),
            on_hold_reason: Some("awaiting_caller".into()),
        }]);
        let Err(DomainError::Invalid(errors)) = bad.validated() else {
            panic!("accepted")
        };
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "warning_percent",
                "targets[1].duration_seconds",
                "targets",
                "targets",
                "targets",
                "pause_on[0].on_hold_reason"
            ]
        );
    }

    #[test]
    fn calendar_definitions_parse_or_name_each_field() {
        let definition = CalendarDefinition {
            time_zone: "Europe/Berlin".into(),
            working_hours: vec![HoursSpec {
                day: Day::Monday,
                start: "09:00".into(),
                end: "9:30".into(),
            }],
            holidays: vec![HolidaySpec {
                date: NaiveDate::from_ymd_opt(2026, 12, 24).unwrap(),
                start: Some("25:00".into()),
                end: Some("17:00".into()),
            }],
        };
        let Err(DomainError::Invalid(errors)) = definition.calendar() else {
            panic!("accepted")
        };
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["working_hours[0].end", "holidays[0].start"]);
        let always = CalendarDefinition::always_open().calendar().unwrap();
        assert_eq!(always, Calendar::always_open());
    }
}
