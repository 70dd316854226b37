//! SLA timers on tickets: which timers a ticket gets under the policies in force, and what
//! each change to the ticket does to them (start, pause, resume, retarget, policy change,
//! stop, cancel), each with its reason, so a breach can be explained line by line.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::calendar::Calendar;
use crate::enums::string_enum;
use crate::sla::{
    Clock, ClockEvent, PolicyDefinition, Reading, SlaMetric, Threshold, TicketFacts, TimelineEntry,
    TimerState,
};
use crate::ticket::TicketKind;

/// What the SLA rules need to know of a ticket. Two views that are equal lead to the same
/// timers, so a save that leaves the view as it was leaves the timers alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlaView<'a> {
    pub facts: TicketFacts<'a>,
    pub state: &'a str,
    pub on_hold_reason: Option<&'a str>,
    /// The first response was given.
    pub responded: bool,
    pub resolved: bool,
    /// The ticket was canceled: its timers no longer apply.
    pub canceled: bool,
}

impl SlaView<'_> {
    fn goal_met(&self, metric: SlaMetric) -> bool {
        match metric {
            SlaMetric::Response => self.responded || self.resolved,
            SlaMetric::Resolution => self.resolved,
        }
    }

    fn describe_state(&self) -> String {
        match self.on_hold_reason {
            Some(reason) => format!("{} ({reason})", self.state),
            None => self.state.to_owned(),
        }
    }
}

/// One calendar version, parsed.
#[derive(Debug, Clone)]
pub struct CalendarVersion {
    pub id: String,
    pub version: i64,
    pub calendar: Arc<Calendar>,
}

/// A policy in force, with its id.
#[derive(Debug, Clone)]
pub struct PolicyEntry {
    pub id: String,
    pub definition: PolicyDefinition,
}

/// The SLA policies in force and the current version of each calendar they use: one snapshot,
/// read once and shared by the writes that follow until a policy or calendar changes.
#[derive(Debug, Clone, Default)]
pub struct SlaRules {
    /// In the order they are tried: by precedence, then id.
    policies: Vec<PolicyEntry>,
    calendars: HashMap<String, CalendarVersion>,
}

impl SlaRules {
    pub fn new(mut policies: Vec<PolicyEntry>, calendars: Vec<CalendarVersion>) -> Self {
        policies.sort_by(|a, b| {
            (a.definition.precedence, &a.id).cmp(&(b.definition.precedence, &b.id))
        });
        Self {
            policies,
            calendars: calendars.into_iter().map(|c| (c.id.clone(), c)).collect(),
        }
    }

    /// No policy: tickets get no timers, and a write need not look at timers at all.
    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }

    /// The policy that applies to a ticket: the first that matches.
    pub fn policy_for(&self, view: &SlaView<'_>) -> Option<&PolicyEntry> {
        self.policies
            .iter()
            .find(|p| p.definition.applies(&view.facts))
    }

    pub fn policy(&self, id: &str) -> Option<&PolicyEntry> {
        self.policies.iter().find(|p| p.id == id)
    }

    /// The current version of a calendar a policy uses.
    pub fn calendar(&self, id: &str) -> Option<&CalendarVersion> {
        self.calendars.get(id)
    }
}

string_enum!(
    /// A line of a timer's timeline. `retarget`: the target changed under the same policy
    /// (the priority changed); `policy_change`: another policy applies now, and its target
    /// counts against the time already run; `recalculation`: the timer was read again under
    /// its calendar's current version; `escalation`: what the policy asks for at a warning or
    /// a breach.
    TimelineKind {
        Start => "start",
        Pause => "pause",
        Resume => "resume",
        Retarget => "retarget",
        PolicyChange => "policy_change",
        Recalculation => "recalculation",
        Warning => "warning",
        Breach => "breach",
        Escalation => "escalation",
        Stop => "stop",
        Cancel => "cancel",
    }
);

impl TimelineKind {
    /// What this line does to the clock, if anything.
    pub fn clock_event(self, target_seconds: Option<i64>) -> Option<ClockEvent> {
        match self {
            TimelineKind::Start => Some(ClockEvent::Start),
            TimelineKind::Pause => Some(ClockEvent::Pause),
            TimelineKind::Resume => Some(ClockEvent::Resume),
            TimelineKind::Retarget | TimelineKind::PolicyChange => {
                target_seconds.map(|target_seconds| ClockEvent::Retarget { target_seconds })
            }
            TimelineKind::Stop => Some(ClockEvent::Stop),
            TimelineKind::Cancel => Some(ClockEvent::Cancel),
            TimelineKind::Recalculation
            | TimelineKind::Warning
            | TimelineKind::Breach
            | TimelineKind::Escalation => None,
        }
    }
}

/// One line of a timer's timeline as stored and shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TimelineLine {
    pub at: DateTime<Utc>,
    pub kind: TimelineKind,
    /// Why, in words: `state on_hold (awaiting_caller)`, `priority 3 → 1`...
    pub reason: String,
    /// The target from this line on, where it changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_seconds: Option<i64>,
    /// The policy from this line on, where it changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy_id: Option<String>,
    /// The calendar version the timer was read under from this line on.
    pub calendar_version: i64,
    /// The audit entry of the change that caused it (none for the worker's warnings).
    pub audit_entry_id: Option<String>,
}

/// A stored timer as the rules need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimerHead {
    pub metric: SlaMetric,
    pub policy_id: String,
    pub target_seconds: i64,
    pub paused: bool,
    /// Stopped or canceled.
    pub ended: bool,
    pub canceled: bool,
}

/// What a change to a ticket does to its timers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimerStep {
    Start {
        metric: SlaMetric,
        policy_id: String,
        calendar_id: String,
        target_seconds: i64,
        warning_percent: u8,
        /// The ticket is in a state that pauses from the start.
        paused: bool,
        reason: String,
    },
    /// A line for the timer at this index of the heads given.
    Line {
        timer: usize,
        kind: TimelineKind,
        target_seconds: Option<i64>,
        policy_id: Option<String>,
        reason: String,
    },
}

/// The timers a ticket needs after a change from `before` (`None` when it is new) to `after`,
/// given the timers it has. A metric whose goal was met, or that ended, is not started again,
/// unless the change takes the goal back (a resolved ticket reopened): then a new timer counts
/// the new cycle from the reopening, and the first keeps what it achieved or breached.
pub fn plan(
    rules: &SlaRules,
    before: Option<&SlaView<'_>>,
    after: &SlaView<'_>,
    timers: &[TimerHead],
) -> Vec<TimerStep> {
    let policy = rules.policy_for(after);
    let mut steps = Vec::new();
    for &metric in SlaMetric::ALL {
        let target = policy.and_then(|p| {
            p.definition
                .target(metric, after.facts.priority)
                .map(|t| (p, t))
        });
        let active = timers.iter().position(|t| t.metric == metric && !t.ended);
        let Some(index) = active else {
            let had_one = timers.iter().any(|t| t.metric == metric && !t.canceled);
            let reopened = before.is_some_and(|b| b.goal_met(metric)) && had_one;
            if let (false, false, false, Some((p, target_seconds))) = (
                had_one && !reopened,
                after.canceled,
                after.goal_met(metric),
                target,
            ) {
                let applies = format!("policy {} applies", p.definition.name);
                steps.push(TimerStep::Start {
                    metric,
                    policy_id: p.id.clone(),
                    calendar_id: p.definition.calendar_id.clone(),
                    target_seconds,
                    warning_percent: p.definition.warning_percent,
                    paused: p.definition.pauses(after.state, after.on_hold_reason),
                    reason: match reopened {
                        true => format!("ticket reopened; {applies}"),
                        false => applies,
                    },
                });
            }
            continue;
        };
        let timer = &timers[index];
        let line = |kind, target_seconds, policy_id, reason| TimerStep::Line {
            timer: index,
            kind,
            target_seconds,
            policy_id,
            reason,
        };
        if after.canceled {
            steps.push(line(
                TimelineKind::Cancel,
                None,
                None,
                "ticket canceled".into(),
            ));
            continue;
        }
        if after.goal_met(metric) {
            let why = match metric {
                SlaMetric::Response if !after.resolved => "first response given",
                _ => "ticket resolved",
            };
            steps.push(line(TimelineKind::Stop, None, None, why.into()));
            continue;
        }
        let Some((p, target_seconds)) = target else {
            let why = match policy {
                Some(p) => format!(
                    "policy {} has no {metric} target for priority {}",
                    p.definition.name, after.facts.priority
                ),
                None => "no policy applies any more".into(),
            };
            steps.push(line(TimelineKind::Cancel, None, None, why));
            continue;
        };
        if p.id != timer.policy_id {
            let why = format!("policy {} applies now", p.definition.name);
            steps.push(line(
                TimelineKind::PolicyChange,
                Some(target_seconds),
                Some(p.id.clone()),
                why,
            ));
        } else if target_seconds != timer.target_seconds {
            let why = match before {
                Some(b) if b.facts.priority != after.facts.priority => {
                    format!("priority {} → {}", b.facts.priority, after.facts.priority)
                }
                // The same policy, the same priority: the policy's targets were edited.
                _ => format!("policy {} edited", p.definition.name),
            };
            steps.push(line(
                TimelineKind::Retarget,
                Some(target_seconds),
                None,
                why,
            ));
        }
        let pauses = p.definition.pauses(after.state, after.on_hold_reason);
        if pauses != timer.paused {
            let kind = if pauses {
                TimelineKind::Pause
            } else {
                TimelineKind::Resume
            };
            let why = format!("state {}", after.describe_state());
            steps.push(line(kind, None, None, why));
        }
    }
    steps
}

/// A timer's clock events, from its lines.
pub fn clock_events(lines: &[TimelineLine]) -> Vec<TimelineEntry> {
    lines
        .iter()
        .filter_map(|line| {
            line.kind
                .clock_event(line.target_seconds)
                .map(|event| TimelineEntry { at: line.at, event })
        })
        .collect()
}

/// A timer's clock replayed from its lines up to `now` (a recalculation reads the whole
/// timeline again under another calendar version); `None` without a start line.
pub fn replay(
    calendar: &Calendar,
    warning_percent: u8,
    lines: &[TimelineLine],
    now: DateTime<Utc>,
) -> Option<Clock> {
    let first = lines.first().filter(|l| l.kind == TimelineKind::Start)?;
    Some(Clock::replay(
        calendar,
        warning_percent,
        (first.at, first.target_seconds?),
        &clock_events(&lines[1..]),
        now,
    ))
}

/// The warnings and breaches a reading has crossed that were not announced yet, in order.
pub fn unannounced(
    reading: &Reading,
    announced_warning: bool,
    announced_breach: bool,
) -> Vec<(Threshold, DateTime<Utc>)> {
    let mut due = Vec::new();
    if let (false, Some(at)) = (announced_warning, reading.warned_at) {
        due.push((Threshold::Warning, at));
    }
    if let (false, Some(at)) = (announced_breach, reading.breached_at) {
        due.push((Threshold::Breach, at));
    }
    due
}

/// When the worker must next look at a timer: the warning or the breach still to announce
/// while it runs; `None` when paused or ended, or when both were announced.
pub fn next_alarm(
    reading: &Reading,
    calendar: &Calendar,
    warning_percent: u8,
    now: DateTime<Utc>,
    announced: (bool, bool),
) -> Option<DateTime<Utc>> {
    let running = matches!(reading.state, TimerState::Running | TimerState::Breached)
        && reading.stopped_at.is_none()
        && reading.due_at.is_some();
    match announced {
        _ if !running => None,
        (false, _) => {
            let warning = crate::sla::warning_seconds(reading.target_seconds, warning_percent);
            calendar.add_business_seconds(now, (warning - reading.elapsed_seconds).max(0))
        }
        (true, false) => reading.due_at,
        (true, true) => None,
    }
}

/// A timer as the API shows it, read at the moment of the request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct TimerRecord {
    pub id: String,
    pub ticket_type: TicketKind,
    pub ticket_id: String,
    pub metric: SlaMetric,
    pub state: TimerState,
    pub started_at: DateTime<Utc>,
    /// When the target is reached if the timer keeps running; the breach instant once
    /// breached; `null` while paused.
    pub due_at: Option<DateTime<Utc>>,
    /// Business time run so far.
    pub elapsed_seconds: i64,
    /// Wall time spent paused.
    pub paused_seconds: i64,
    /// Target minus elapsed; negative once breached.
    pub remaining_seconds: i64,
    pub target_seconds: i64,
    pub warned_at: Option<DateTime<Utc>>,
    pub breached_at: Option<DateTime<Utc>>,
    pub stopped_at: Option<DateTime<Utc>>,
    pub policy_id: String,
    pub calendar_id: String,
    /// The calendar version the timer is read under (kept until it is recalculated).
    pub calendar_version: i64,
    pub version: i64,
}

impl TicketKind {
    /// Ticket types that have service levels.
    pub fn has_slas(self) -> bool {
        matches!(self, TicketKind::Incident | TicketKind::Problem)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::priority::Priority;
    use crate::sla::{AppliesTo, PauseCondition, Target};

    fn rank(priority: Priority) -> i64 {
        Priority::ALL
            .iter()
            .position(|&p| p == priority)
            .unwrap_or(0) as i64
            + 1
    }

    fn policy(id: &str, precedence: i32, hours: i64, priorities: Vec<Priority>) -> PolicyEntry {
        let targets = Priority::ALL
            .iter()
            .flat_map(|&priority| {
                [
                    Target {
                        metric: SlaMetric::Response,
                        priority,
                        duration_seconds: 3600,
                    },
                    Target {
                        metric: SlaMetric::Resolution,
                        priority,
                        duration_seconds: hours * 3600 * rank(priority),
                    },
                ]
            })
            .collect();
        PolicyEntry {
            id: id.into(),
            definition: PolicyDefinition {
                name: format!("policy {id}"),
                precedence,
                applies_to: AppliesTo {
                    ticket_type: TicketKind::Incident,
                    priorities,
                    category: None,
                    service: None,
                    assignment_group: None,
                },
                calendar_id: "24x7".into(),
                warning_percent: 75,
                targets,
                pause_on: Some(vec![PauseCondition {
                    state: "on_hold".into(),
                    on_hold_reason: Some("awaiting_caller".into()),
                }]),
                escalations: Vec::new(),
            },
        }
    }

    fn view(priority: Priority, state: &'static str) -> SlaView<'static> {
        SlaView {
            facts: TicketFacts {
                ticket_type: TicketKind::Incident,
                priority,
                category: None,
                service: None,
                assignment_group: None,
            },
            state,
            on_hold_reason: None,
            responded: false,
            resolved: false,
            canceled: false,
        }
    }

    fn head(metric: SlaMetric, policy_id: &str, target_seconds: i64) -> TimerHead {
        TimerHead {
            metric,
            policy_id: policy_id.into(),
            target_seconds,
            paused: false,
            ended: false,
            canceled: false,
        }
    }

    fn kinds(steps: &[TimerStep]) -> Vec<String> {
        steps
            .iter()
            .map(|s| match s {
                TimerStep::Start { metric, .. } => format!("start {metric}"),
                TimerStep::Line { timer, kind, .. } => format!("{kind} #{timer}"),
            })
            .collect()
    }

    #[test]
    fn a_new_ticket_gets_a_timer_per_metric_and_none_without_a_policy() {
        let rules = SlaRules::new(vec![policy("a", 1, 8, vec![])], vec![]);
        let steps = plan(&rules, None, &view(Priority::P3, "new"), &[]);
        assert_eq!(kinds(&steps), ["start response", "start resolution"]);
        assert!(plan(&SlaRules::default(), None, &view(Priority::P3, "new"), &[]).is_empty());
    }

    #[test]
    fn a_reopened_ticket_starts_a_new_resolution_cycle() {
        let rules = SlaRules::new(vec![policy("a", 1, 8, vec![])], vec![]);
        let ended = |metric| TimerHead {
            ended: true,
            ..head(metric, "a", 3600)
        };
        let heads = [ended(SlaMetric::Response), ended(SlaMetric::Resolution)];
        let mut resolved = view(Priority::P3, "resolved");
        resolved.responded = true;
        resolved.resolved = true;
        let mut reopened = view(Priority::P3, "in_progress");
        reopened.responded = true;
        let steps = plan(&rules, Some(&resolved), &reopened, &heads);
        assert_eq!(kinds(&steps), ["start resolution"]);
        let TimerStep::Start { reason, .. } = &steps[0] else {
            panic!("a start")
        };
        assert_eq!(reason, "ticket reopened; policy policy a applies");
        // Any other change to a ticket whose timers ended starts nothing.
        let mut moved = reopened;
        moved.state = "on_hold";
        assert!(plan(&rules, Some(&reopened), &moved, &heads).is_empty());
    }

    #[test]
    fn the_first_policy_by_precedence_wins() {
        let rules = SlaRules::new(
            vec![
                policy("late", 5, 8, vec![]),
                policy("early", 1, 8, vec![Priority::P1]),
            ],
            vec![],
        );
        let p1 = view(Priority::P1, "new");
        assert_eq!(rules.policy_for(&p1).map(|p| p.id.as_str()), Some("early"));
        let p3 = view(Priority::P3, "new");
        assert_eq!(rules.policy_for(&p3).map(|p| p.id.as_str()), Some("late"));
    }

    #[test]
    fn a_priority_change_retargets_and_a_policy_change_says_so() {
        let rules = SlaRules::new(
            vec![
                policy("all", 5, 8, vec![]),
                policy("p1", 1, 2, vec![Priority::P1]),
            ],
            vec![],
        );
        let before = view(Priority::P3, "in_progress");
        let target = |m, p| rules.policy("all").unwrap().definition.target(m, p);
        let heads = [
            head(
                SlaMetric::Response,
                "all",
                target(SlaMetric::Response, Priority::P3).unwrap(),
            ),
            head(
                SlaMetric::Resolution,
                "all",
                target(SlaMetric::Resolution, Priority::P3).unwrap(),
            ),
        ];
        let to_p2 = plan(
            &rules,
            Some(&before),
            &view(Priority::P2, "in_progress"),
            &heads,
        );
        assert_eq!(kinds(&to_p2), ["retarget #1"]);
        let TimerStep::Line { reason, .. } = &to_p2[0] else {
            panic!("a line")
        };
        assert_eq!(reason, "priority p3 → p2");
        let to_p1 = plan(
            &rules,
            Some(&before),
            &view(Priority::P1, "in_progress"),
            &heads,
        );
        assert_eq!(kinds(&to_p1), ["policy_change #0", "policy_change #1"]);
    }

    #[test]
    fn pauses_follow_the_policy_and_goals_stop_their_timers() {
        let rules = SlaRules::new(vec![policy("a", 1, 8, vec![])], vec![]);
        let target = |m, p| rules.policy("a").unwrap().definition.target(m, p);
        let heads = [
            head(
                SlaMetric::Response,
                "a",
                target(SlaMetric::Response, Priority::P3).unwrap(),
            ),
            head(
                SlaMetric::Resolution,
                "a",
                target(SlaMetric::Resolution, Priority::P3).unwrap(),
            ),
        ];
        let before = view(Priority::P3, "in_progress");
        let mut waiting = view(Priority::P3, "on_hold");
        waiting.on_hold_reason = Some("awaiting_caller");
        assert_eq!(
            kinds(&plan(&rules, Some(&before), &waiting, &heads)),
            ["pause #0", "pause #1"]
        );
        // Awaiting a change does not pause.
        waiting.on_hold_reason = Some("awaiting_change");
        assert!(plan(&rules, Some(&before), &waiting, &heads).is_empty());
        let mut responded = before;
        responded.responded = true;
        assert_eq!(
            kinds(&plan(&rules, Some(&before), &responded, &heads)),
            ["stop #0"]
        );
        let mut canceled = before;
        canceled.canceled = true;
        assert_eq!(
            kinds(&plan(&rules, Some(&before), &canceled, &heads)),
            ["cancel #0", "cancel #1"]
        );
    }

    #[test]
    fn an_ended_metric_is_not_started_again_but_a_canceled_one_may_be() {
        let rules = SlaRules::new(vec![policy("a", 1, 8, vec![])], vec![]);
        let mut stopped = head(SlaMetric::Response, "a", 3600);
        stopped.ended = true;
        let mut canceled = head(SlaMetric::Resolution, "a", 3600);
        canceled.ended = true;
        canceled.canceled = true;
        let steps = plan(
            &rules,
            None,
            &view(Priority::P3, "in_progress"),
            &[stopped, canceled],
        );
        assert_eq!(kinds(&steps), ["start resolution"]);
    }

    #[test]
    fn a_policy_without_a_target_for_a_metric_cancels_its_timer() {
        let mut only_resolution = policy("r", 1, 8, vec![]);
        only_resolution
            .definition
            .targets
            .retain(|t| t.metric == SlaMetric::Resolution);
        let rules = SlaRules::new(vec![only_resolution], vec![]);
        let heads = [head(SlaMetric::Response, "old", 3600)];
        let steps = plan(&rules, None, &view(Priority::P3, "in_progress"), &heads);
        assert_eq!(kinds(&steps), ["cancel #0", "start resolution"]);
    }
}
