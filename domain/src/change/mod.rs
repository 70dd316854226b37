//! Change enablement on the ticket kernel: standard, normal and emergency changes, their
//! lifecycle as a transition table, risk, approvals, freeze windows and conflicts.

pub mod approval;
pub mod risk;
pub mod schedule;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::enums::string_enum;
use crate::ticket::{core_fields, required_text, Applied, Lifecycle, Ticket, TicketKind};
use crate::{Changes, DomainError, ExternalRef, FieldError};
pub use risk::{RiskAnswers, RiskAssessment, RiskLevel};

string_enum!(
    ChangeType {
        Standard => "standard",
        Normal => "normal",
        Emergency => "emergency",
    }
);

string_enum!(
    ChangeState {
        New => "new",
        Assess => "assess",
        Authorize => "authorize",
        Scheduled => "scheduled",
        Implement => "implement",
        Review => "review",
        Closed => "closed",
        Canceled => "canceled",
    }
);

string_enum!(
    /// The actions of `POST /changes/{id}/transitions`.
    ChangeAction {
        Assess => "assess",
        RequestAuthorization => "request_authorization",
        Schedule => "schedule",
        Implement => "implement",
        Review => "review",
        Close => "close",
        Cancel => "cancel",
        Assign => "assign",
    }
);

string_enum!(
    ChangeOutcome {
        Successful => "successful",
        SuccessfulWithIssues => "successful_with_issues",
        Failed => "failed",
        BackedOut => "backed_out",
    }
);

impl ChangeState {
    pub fn is_final(self) -> bool {
        matches!(self, ChangeState::Closed | ChangeState::Canceled)
    }

    /// Before `implement`: a change may still be canceled.
    pub fn is_before_implementation(self) -> bool {
        matches!(
            self,
            ChangeState::New
                | ChangeState::Assess
                | ChangeState::Authorize
                | ChangeState::Scheduled
        )
    }
}

impl ChangeOutcome {
    /// Failed or backed out: the change may have caused incidents.
    pub fn went_wrong(self) -> bool {
        !matches!(self, ChangeOutcome::Successful)
    }
}

/// The last rejected authorisation of a change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Rejection {
    /// The user id who rejected.
    pub by: String,
    pub comment: String,
    pub at: DateTime<Utc>,
}

/// A change: an addition, modification or removal of anything that could affect services.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Change {
    pub id: String,
    #[schema(example = "CHG0000042")]
    pub number: String,
    #[serde(rename = "type")]
    pub change_type: ChangeType,
    pub title: String,
    pub description: String,
    pub justification: Option<String>,
    pub implementation_plan: Option<String>,
    pub backout_plan: Option<String>,
    pub test_plan: Option<String>,
    pub state: ChangeState,
    /// The computed level, unless a change manager overrode it (`risk_override_reason`).
    pub risk: RiskLevel,
    /// Why a change manager set `risk` against the assessment.
    pub risk_override_reason: Option<String>,
    /// The questionnaire as answered.
    pub risk_answers: RiskAnswers,
    /// Read only: the computed score and each answer's contribution.
    pub risk_assessment: RiskAssessment,
    pub planned_start: Option<DateTime<Utc>>,
    pub planned_end: Option<DateTime<Utc>>,
    pub actual_start: Option<DateTime<Utc>>,
    pub actual_end: Option<DateTime<Utc>>,
    /// The ids of the configuration items the change touches.
    pub configuration_items: Vec<String>,
    /// The business service (a configuration item) it affects.
    pub service: Option<String>,
    pub assignment_group: Option<String>,
    pub assignee: Option<String>,
    /// The user id who requested the change; requesters see only their own changes.
    pub requested_by: String,
    /// The standard change template it was created from.
    pub template: Option<String>,
    /// The approval policy of the current or last authorisation round.
    pub approval_policy: Option<String>,
    pub approval_quorum: Option<i64>,
    pub approval_round: i64,
    pub authorized_at: Option<DateTime<Utc>>,
    /// An emergency change implemented before it was authorised.
    pub retrospective: bool,
    pub rejection: Option<Rejection>,
    /// Why an emergency change entered a freeze window.
    pub freeze_override_reason: Option<String>,
    pub outcome: Option<ChangeOutcome>,
    pub review_notes: Option<String>,
    /// Incident ids a failed or backed-out change caused.
    pub caused_incidents: Vec<String>,
    /// Problem ids the change fixes (each problem shows the change as `fix_change_id`).
    pub fixes_problems: Vec<String>,
    pub cancel_reason: Option<String>,
    pub external_refs: Vec<ExternalRef>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub closed_at: Option<DateTime<Utc>>,
    pub version: i64,
}

/// A validated new change; storage gives it an id and a number.
#[derive(Debug, Clone, PartialEq)]
pub struct NewChange {
    pub change_type: ChangeType,
    pub title: String,
    pub description: String,
    pub justification: Option<String>,
    pub implementation_plan: Option<String>,
    pub backout_plan: Option<String>,
    pub test_plan: Option<String>,
    pub risk_answers: RiskAnswers,
    pub risk_assessment: RiskAssessment,
    /// A level a change manager set against the assessment, with the reason.
    pub risk_override: Option<(RiskLevel, String)>,
    pub planned_start: Option<DateTime<Utc>>,
    pub planned_end: Option<DateTime<Utc>>,
    pub configuration_items: Vec<String>,
    pub service: Option<String>,
    pub assignment_group: Option<String>,
    pub assignee: Option<String>,
    pub requested_by: String,
    pub template: Option<String>,
    pub fixes_problems: Vec<String>,
    pub external_refs: Vec<ExternalRef>,
}

/// How the caller relates to a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChangeRelation {
    /// Agents, change managers, integrations and admins work changes.
    pub staff: bool,
    /// Change managers and admins: acknowledge conflicts, override risk.
    pub manages: bool,
    /// The caller requested the change.
    pub requested: bool,
}

/// What a transition needs besides the action.
#[derive(Debug, Clone, Default)]
pub struct ChangeInput {
    pub reason: Option<String>,
    pub actual_start: Option<DateTime<Utc>>,
    pub actual_end: Option<DateTime<Utc>>,
    pub outcome: Option<ChangeOutcome>,
    pub review_notes: Option<String>,
    pub caused_incidents: Option<Vec<String>>,
    pub assignee: Option<String>,
    pub assignment_group: Option<String>,
}

impl Change {
    /// The change `new` becomes, stored as `id` and `number` at `now`.
    pub fn create(new: NewChange, id: String, number: String, now: DateTime<Utc>) -> Change {
        let (risk, risk_override_reason) = match new.risk_override {
            Some((level, reason)) => (level, Some(reason)),
            None => (new.risk_assessment.level, None),
        };
        Change {
            id,
            number,
            change_type: new.change_type,
            title: new.title,
            description: new.description,
            justification: new.justification,
            implementation_plan: new.implementation_plan,
            backout_plan: new.backout_plan,
            test_plan: new.test_plan,
            state: ChangeState::New,
            risk,
            risk_override_reason,
            risk_answers: new.risk_answers,
            risk_assessment: new.risk_assessment,
            planned_start: new.planned_start,
            planned_end: new.planned_end,
            actual_start: None,
            actual_end: None,
            configuration_items: new.configuration_items,
            service: new.service,
            assignment_group: new.assignment_group,
            assignee: new.assignee,
            requested_by: new.requested_by,
            template: new.template,
            approval_policy: None,
            approval_quorum: None,
            approval_round: 0,
            authorized_at: None,
            retrospective: false,
            rejection: None,
            freeze_override_reason: None,
            outcome: None,
            review_notes: None,
            caused_incidents: Vec::new(),
            fixes_problems: new.fixes_problems,
            cancel_reason: None,
            external_refs: new.external_refs,
            created_at: now,
            updated_at: now,
            closed_at: None,
            version: 1,
        }
    }

    /// The planned window, when both ends are set.
    pub fn window(&self) -> Option<schedule::Window> {
        match (self.planned_start, self.planned_end) {
            (Some(start), Some(end)) => Some(schedule::Window { start, end }),
            _ => None,
        }
    }

    /// Sets a new assessment; the level follows it unless a change manager overrode it.
    pub fn reassess(&mut self, assessment: RiskAssessment) {
        if self.risk_override_reason.is_none() {
            self.risk = assessment.level;
        }
        self.risk_assessment = assessment;
    }

    /// The approval quorum of the round was reached: a change waiting for it is scheduled; an
    /// emergency change already implementing stays there, now authorised. A change whose
    /// planned window hits a freeze now (`frozen`: scheduling it would be refused) is held in
    /// `authorize`, authorised, until `schedule` finds its window clear (or, for an emergency
    /// change, is given an override reason).
    pub fn authorize(&mut self, now: DateTime<Utc>, frozen: bool) -> Applied {
        self.authorized_at = Some(now);
        if self.state == ChangeState::Authorize && frozen {
            return Applied::recorded_as("authorize_held_by_freeze").with_event("change.approved");
        }
        let mut applied = Applied::recorded_as("authorize").with_event("change.approved");
        if self.state == ChangeState::Authorize {
            self.state = ChangeState::Scheduled;
            applied = applied.with_event("change.scheduled");
        }
        applied
    }

    /// An approver rejected the round: the change returns to `new` with the rejection.
    pub fn reject(&mut self, by: &str, comment: &str, now: DateTime<Utc>) -> Applied {
        self.state = ChangeState::New;
        self.authorized_at = None;
        self.rejection = Some(Rejection {
            by: by.to_owned(),
            comment: comment.to_owned(),
            at: now,
        });
        Applied::recorded_as("reject").with_event("change.rejected")
    }

    /// A window is required to ask for authorisation or to schedule. The window is the
    /// change's (set by PATCH), not the transition's: a change without one is in no state to
    /// take the action, a conflict with the stored change (409), not invalid input.
    fn require_window(
        &self,
        action: ChangeAction,
        relation: ChangeRelation,
    ) -> Result<(), DomainError> {
        if self.window().is_none() {
            return Err(self.refuse(
                relation,
                format!("set planned_start and planned_end (PATCH) to {action}"),
            ));
        }
        Ok(())
    }

    fn refuse(&self, relation: ChangeRelation, detail: String) -> DomainError {
        DomainError::InvalidTransition {
            detail,
            allowed_actions: self
                .allowed_actions(relation)
                .iter()
                .map(ToString::to_string)
                .collect(),
        }
    }
}

impl Lifecycle for Change {
    type Action = ChangeAction;
    type Relation = ChangeRelation;
    type Input = ChangeInput;

    fn state_name(&self) -> &'static str {
        self.state.as_str()
    }

    /// The transition table.
    fn allowed_actions(&self, relation: ChangeRelation) -> Vec<ChangeAction> {
        use ChangeAction as A;
        use ChangeState as S;
        use ChangeType as T;
        if !relation.staff {
            return if relation.requested && matches!(self.state, S::New | S::Assess) {
                vec![A::Cancel]
            } else {
                Vec::new()
            };
        }
        let mut actions = match (self.state, self.change_type) {
            (S::New, T::Standard) => vec![A::Schedule],
            (S::New, T::Normal) => vec![A::Assess],
            (S::New, T::Emergency) => vec![A::Assess, A::RequestAuthorization],
            (S::Assess, T::Normal | T::Emergency) => vec![A::RequestAuthorization],
            // Authorised but held by a freeze: scheduled once the window is clear.
            (S::Authorize, T::Emergency) if self.authorized_at.is_some() => {
                vec![A::Implement, A::Schedule]
            }
            (S::Authorize, T::Emergency) => vec![A::Implement],
            (S::Authorize, T::Normal) if self.authorized_at.is_some() => vec![A::Schedule],
            (S::Scheduled, _) => vec![A::Implement],
            (S::Implement, _) => vec![A::Review],
            (S::Review, _) => vec![A::Close],
            _ => Vec::new(),
        };
        if self.state.is_before_implementation() {
            actions.push(A::Cancel);
        }
        if !self.state.is_final() {
            actions.push(A::Assign);
        }
        actions
    }

    fn apply(
        &mut self,
        action: ChangeAction,
        input: &ChangeInput,
        relation: ChangeRelation,
        now: DateTime<Utc>,
    ) -> Result<Applied, DomainError> {
        use ChangeAction as A;
        use ChangeState as S;
        self.check_allowed(action, relation, TicketKind::Change)?;
        let mut applied = Applied::recorded_as(action.as_str());
        match action {
            A::Assess => self.state = S::Assess,
            A::RequestAuthorization => {
                self.require_window(action, relation)?;
                self.state = S::Authorize;
                self.approval_round += 1;
                self.authorized_at = None;
                applied = applied.with_event("change.approval_requested");
            }
            A::Schedule => {
                self.require_window(action, relation)?;
                self.state = S::Scheduled;
                applied = applied.with_event("change.scheduled");
            }
            A::Implement => {
                if self.state == S::Authorize && self.authorized_at.is_none() {
                    self.retrospective = true;
                    applied.audit_action = "implement_retrospectively";
                }
                self.state = S::Implement;
                self.actual_start = Some(input.actual_start.unwrap_or(now));
            }
            A::Review => {
                if self.change_type == ChangeType::Emergency && self.authorized_at.is_none() {
                    return Err(self.refuse(
                        relation,
                        "an emergency change must be authorised before review".into(),
                    ));
                }
                let outcome = input.outcome.or(self.outcome);
                let actual_end = input.actual_end.or(self.actual_end);
                let mut errors = Vec::new();
                if outcome.is_none() {
                    errors.push(FieldError::new(
                        "outcome",
                        format!("is required to review: one of {}", ChangeOutcome::names()),
                    ));
                }
                let mut before_start = false;
                match (actual_end, self.actual_start) {
                    (None, _) => {
                        errors.push(FieldError::new("actual_end", "is required to review"))
                    }
                    (Some(end), Some(start)) if end < start => before_start = true,
                    _ => {}
                }
                if let Some(caused) = &input.caused_incidents {
                    if !caused.is_empty() && !outcome.is_some_and(ChangeOutcome::went_wrong) {
                        errors.push(FieldError::new(
                            "caused_incidents",
                            "only a change that did not fully succeed causes incidents",
                        ));
                    }
                }
                if !errors.is_empty() {
                    return Err(DomainError::Invalid(errors));
                }
                // The start is the change's (set on `implement`): an end before it conflicts
                // with the change as it is.
                if before_start {
                    return Err(self.refuse(
                        relation,
                        "actual_end must not be before the change's actual_start".into(),
                    ));
                }
                self.outcome = outcome;
                self.actual_end = actual_end;
                if let Some(caused) = &input.caused_incidents {
                    self.caused_incidents = caused.clone();
                }
                if let Some(notes) = input.review_notes.as_deref().map(str::trim) {
                    if !notes.is_empty() {
                        self.review_notes = Some(notes.to_owned());
                    }
                }
                self.state = S::Review;
            }
            A::Close => {
                if let Some(notes) = input.review_notes.as_deref().map(str::trim) {
                    if !notes.is_empty() {
                        self.review_notes = Some(notes.to_owned());
                    }
                }
                if self.review_notes.is_none() {
                    return Err(self.refuse(
                        relation,
                        "a change is closed with review notes: give review_notes".into(),
                    ));
                }
                self.state = S::Closed;
                self.closed_at = Some(now);
            }
            A::Cancel => {
                let reason = required_text(
                    input.reason.as_deref(),
                    "reason",
                    "is required to cancel a change",
                )?;
                self.state = S::Canceled;
                self.cancel_reason = Some(reason);
                self.closed_at = Some(now);
            }
            A::Assign => {
                let assignee = required_text(
                    input.assignee.as_deref(),
                    "assignee",
                    "is required to assign",
                )?;
                if let Some(group) = &input.assignment_group {
                    self.assignment_group = Some(group.clone());
                }
                self.assignee = Some(assignee);
            }
        }
        Ok(applied)
    }
}

impl Ticket for Change {
    const KIND: TicketKind = TicketKind::Change;
    const INTERNAL_FIELDS: &'static [&'static str] = &[];

    core_fields!();

    fn requester(&self) -> Option<&str> {
        Some(&self.requested_by)
    }

    fn search_text(&self) -> String {
        format!("{}\n{}", self.title, self.description)
    }

    fn search_text_changed(&self, after: &Change) -> bool {
        self.title != after.title || self.description != after.description
    }

    fn changes_to(&self, after: &Change) -> Changes {
        let mut c = Changes::new();
        c.field("type", &self.change_type, &after.change_type)
            .field("title", &self.title, &after.title)
            .field("description", &self.description, &after.description)
            .field("justification", &self.justification, &after.justification)
            .field(
                "implementation_plan",
                &self.implementation_plan,
                &after.implementation_plan,
            )
            .field("backout_plan", &self.backout_plan, &after.backout_plan)
            .field("test_plan", &self.test_plan, &after.test_plan)
            .field("state", &self.state, &after.state)
            .field("risk", &self.risk, &after.risk)
            .field(
                "risk_override_reason",
                &self.risk_override_reason,
                &after.risk_override_reason,
            )
            .field("risk_answers", &self.risk_answers, &after.risk_answers)
            .field(
                "risk_assessment",
                &self.risk_assessment,
                &after.risk_assessment,
            )
            .field("planned_start", &self.planned_start, &after.planned_start)
            .field("planned_end", &self.planned_end, &after.planned_end)
            .field("actual_start", &self.actual_start, &after.actual_start)
            .field("actual_end", &self.actual_end, &after.actual_end)
            .field(
                "configuration_items",
                &self.configuration_items,
                &after.configuration_items,
            )
            .field("service", &self.service, &after.service)
            .field(
                "assignment_group",
                &self.assignment_group,
                &after.assignment_group,
            )
            .field("assignee", &self.assignee, &after.assignee)
            .field("requested_by", &self.requested_by, &after.requested_by)
            .field(
                "approval_policy",
                &self.approval_policy,
                &after.approval_policy,
            )
            .field(
                "approval_quorum",
                &self.approval_quorum,
                &after.approval_quorum,
            )
            .field(
                "approval_round",
                &self.approval_round,
                &after.approval_round,
            )
            .field("authorized_at", &self.authorized_at, &after.authorized_at)
            .field("retrospective", &self.retrospective, &after.retrospective)
            .field("rejection", &self.rejection, &after.rejection)
            .field(
                "freeze_override_reason",
                &self.freeze_override_reason,
                &after.freeze_override_reason,
            )
            .field("outcome", &self.outcome, &after.outcome)
            .field("review_notes", &self.review_notes, &after.review_notes)
            .field(
                "caused_incidents",
                &self.caused_incidents,
                &after.caused_incidents,
            )
            .field(
                "fixes_problems",
                &self.fixes_problems,
                &after.fixes_problems,
            )
            .field("cancel_reason", &self.cancel_reason, &after.cancel_reason)
            .field("external_refs", &self.external_refs, &after.external_refs)
            .field("closed_at", &self.closed_at, &after.closed_at);
        c
    }
}

/// A pre-approved standard change: the fields it fixes, the items it may touch, a risk cap.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct StandardChangeTemplate {
    pub id: String,
    pub name: String,
    pub description: String,
    pub fields: TemplateFields,
    /// The only items a change from the template may touch.
    pub configuration_items: Vec<String>,
    /// The highest risk a change from the template may have.
    pub risk_cap: RiskLevel,
    pub active: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub version: i64,
}

/// The fields a template fixes: a change from it takes them and may not set them itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateFields {
    pub title: Option<String>,
    pub description: Option<String>,
    pub justification: Option<String>,
    pub implementation_plan: Option<String>,
    pub backout_plan: Option<String>,
    pub test_plan: Option<String>,
    pub assignment_group: Option<String>,
    pub risk_answers: Option<RiskAnswers>,
}

impl TemplateFields {
    /// The names of the fields it fixes.
    pub fn fixed(&self) -> Vec<&'static str> {
        let mut fixed = Vec::new();
        for (name, set) in [
            ("title", self.title.is_some()),
            ("description", self.description.is_some()),
            ("justification", self.justification.is_some()),
            ("implementation_plan", self.implementation_plan.is_some()),
            ("backout_plan", self.backout_plan.is_some()),
            ("test_plan", self.test_plan.is_some()),
            ("assignment_group", self.assignment_group.is_some()),
            ("risk_answers", self.risk_answers.is_some()),
        ] {
            if set {
                fixed.push(name);
            }
        }
        fixed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    const STAFF: ChangeRelation = ChangeRelation {
        staff: true,
        manages: false,
        requested: false,
    };
    const REQUESTER: ChangeRelation = ChangeRelation {
        staff: false,
        manages: false,
        requested: true,
    };

    fn change(change_type: ChangeType) -> Change {
        let now = Utc::now();
        let new = NewChange {
            change_type,
            title: "Upgrade the database".into(),
            description: "PostgreSQL 16 to 17".into(),
            justification: None,
            implementation_plan: None,
            backout_plan: Some("Restore the snapshot".into()),
            test_plan: None,
            risk_answers: RiskAnswers::default(),
            risk_assessment: risk::assess(&RiskAnswers::default(), &risk::RiskFacts::default()),
            risk_override: None,
            planned_start: Some(now + Duration::days(1)),
            planned_end: Some(now + Duration::days(1) + Duration::hours(2)),
            configuration_items: vec![],
            service: None,
            assignment_group: None,
            assignee: None,
            requested_by: "u1".into(),
            template: None,
            fixes_problems: vec![],
            external_refs: vec![],
        };
        Change::create(new, "c1".into(), "CHG0000001".into(), now)
    }

    fn act(
        c: &mut Change,
        action: ChangeAction,
        input: ChangeInput,
    ) -> Result<Applied, DomainError> {
        c.apply(action, &input, STAFF, Utc::now())
    }

    fn reviewed(outcome: ChangeOutcome) -> ChangeInput {
        ChangeInput {
            outcome: Some(outcome),
            actual_end: Some(Utc::now() + Duration::seconds(1)),
            ..Default::default()
        }
    }

    #[test]
    fn a_normal_change_runs_the_whole_table() {
        let mut c = change(ChangeType::Normal);
        assert_eq!(
            c.allowed_actions(STAFF),
            [
                ChangeAction::Assess,
                ChangeAction::Cancel,
                ChangeAction::Assign
            ]
        );
        act(&mut c, ChangeAction::Assess, ChangeInput::default()).unwrap();
        let applied = act(
            &mut c,
            ChangeAction::RequestAuthorization,
            ChangeInput::default(),
        )
        .unwrap();
        assert_eq!(applied.events, ["change.approval_requested"]);
        assert_eq!((c.state, c.approval_round), (ChangeState::Authorize, 1));
        // Only the approvals move an authorising normal change on.
        assert_eq!(
            c.allowed_actions(STAFF),
            [ChangeAction::Cancel, ChangeAction::Assign]
        );
        let applied = c.authorize(Utc::now(), false);
        assert_eq!(applied.events, ["change.approved", "change.scheduled"]);
        assert_eq!(c.state, ChangeState::Scheduled);
        act(&mut c, ChangeAction::Implement, ChangeInput::default()).unwrap();
        assert!(c.actual_start.is_some());
        assert!(!c.allowed_actions(STAFF).contains(&ChangeAction::Cancel));
        act(
            &mut c,
            ChangeAction::Review,
            reviewed(ChangeOutcome::Successful),
        )
        .unwrap();
        let Err(DomainError::InvalidTransition { detail, .. }) =
            act(&mut c, ChangeAction::Close, ChangeInput::default())
        else {
            panic!("closed without review notes")
        };
        assert!(detail.contains("review notes"), "{detail}");
        let close = ChangeInput {
            review_notes: Some("Went to plan".into()),
            ..Default::default()
        };
        act(&mut c, ChangeAction::Close, close).unwrap();
        assert_eq!(c.state, ChangeState::Closed);
        assert!(c.allowed_actions(STAFF).is_empty());
    }

    #[test]
    fn a_quorum_reached_over_a_freeze_holds_the_change_authorised_until_scheduled() {
        let mut c = change(ChangeType::Normal);
        act(&mut c, ChangeAction::Assess, ChangeInput::default()).unwrap();
        act(
            &mut c,
            ChangeAction::RequestAuthorization,
            ChangeInput::default(),
        )
        .unwrap();
        let applied = c.authorize(Utc::now(), true);
        assert_eq!(applied.events, ["change.approved"]);
        assert_eq!(applied.audit_action, "authorize_held_by_freeze");
        assert_eq!(c.state, ChangeState::Authorize);
        assert!(c.authorized_at.is_some());
        // Scheduling it is what checks the freeze again.
        assert_eq!(c.allowed_actions(STAFF)[0], ChangeAction::Schedule);
        act(&mut c, ChangeAction::Schedule, ChangeInput::default()).unwrap();
        assert_eq!(c.state, ChangeState::Scheduled);

        // An emergency change held so may also start, and it is no retrospective start.
        let mut e = change(ChangeType::Emergency);
        act(
            &mut e,
            ChangeAction::RequestAuthorization,
            ChangeInput::default(),
        )
        .unwrap();
        e.authorize(Utc::now(), true);
        assert_eq!(
            &e.allowed_actions(STAFF)[..2],
            [ChangeAction::Implement, ChangeAction::Schedule]
        );
        let applied = act(&mut e, ChangeAction::Implement, ChangeInput::default()).unwrap();
        assert_eq!(applied.audit_action, "implement");
        assert!(!e.retrospective);
    }

    #[test]
    fn a_rejection_returns_the_change_to_new_with_the_rejection() {
        let mut c = change(ChangeType::Normal);
        act(&mut c, ChangeAction::Assess, ChangeInput::default()).unwrap();
        act(
            &mut c,
            ChangeAction::RequestAuthorization,
            ChangeInput::default(),
        )
        .unwrap();
        let applied = c.reject("cab1", "No tested backout", Utc::now());
        assert_eq!(applied.events, ["change.rejected"]);
        assert_eq!(c.state, ChangeState::New);
        assert_eq!(
            c.rejection.as_ref().map(|r| r.comment.as_str()),
            Some("No tested backout")
        );
    }

    #[test]
    fn a_standard_change_goes_from_new_straight_to_scheduled() {
        let mut c = change(ChangeType::Standard);
        assert_eq!(c.allowed_actions(STAFF)[0], ChangeAction::Schedule);
        assert!(!c.allowed_actions(STAFF).contains(&ChangeAction::Assess));
        act(&mut c, ChangeAction::Schedule, ChangeInput::default()).unwrap();
        assert_eq!(c.state, ChangeState::Scheduled);
    }

    #[test]
    fn scheduling_or_authorising_needs_a_window() {
        let mut c = change(ChangeType::Standard);
        c.planned_end = None;
        // The window is the change's: without one it is in no state to be scheduled.
        let Err(DomainError::InvalidTransition { detail, .. }) =
            act(&mut c, ChangeAction::Schedule, ChangeInput::default())
        else {
            panic!("scheduled without a window")
        };
        assert!(detail.contains("planned_start and planned_end"), "{detail}");
        assert_eq!(c.state, ChangeState::New);
    }

    #[test]
    fn an_emergency_change_implements_retrospectively_but_reviews_only_once_authorised() {
        let mut c = change(ChangeType::Emergency);
        act(
            &mut c,
            ChangeAction::RequestAuthorization,
            ChangeInput::default(),
        )
        .unwrap();
        assert!(c.allowed_actions(STAFF).contains(&ChangeAction::Implement));
        let applied = act(&mut c, ChangeAction::Implement, ChangeInput::default()).unwrap();
        assert_eq!(applied.audit_action, "implement_retrospectively");
        assert!(c.retrospective);
        let Err(DomainError::InvalidTransition { detail, .. }) = act(
            &mut c,
            ChangeAction::Review,
            reviewed(ChangeOutcome::Successful),
        ) else {
            panic!("reviewed unauthorised")
        };
        assert!(detail.contains("authorised"), "{detail}");
        let applied = c.authorize(Utc::now(), true);
        assert_eq!(applied.events, ["change.approved"]);
        assert_eq!(c.state, ChangeState::Implement);
        act(
            &mut c,
            ChangeAction::Review,
            reviewed(ChangeOutcome::Successful),
        )
        .unwrap();
    }

    #[test]
    fn a_normal_change_never_implements_before_authorisation() {
        let mut c = change(ChangeType::Normal);
        act(&mut c, ChangeAction::Assess, ChangeInput::default()).unwrap();
        act(
            &mut c,
            ChangeAction::RequestAuthorization,
            ChangeInput::default(),
        )
        .unwrap();
        assert!(act(&mut c, ChangeAction::Implement, ChangeInput::default()).is_err());
    }

    #[test]
    fn review_needs_an_outcome_and_an_end_and_only_failures_cause_incidents() {
        let mut c = change(ChangeType::Standard);
        act(&mut c, ChangeAction::Schedule, ChangeInput::default()).unwrap();
        act(&mut c, ChangeAction::Implement, ChangeInput::default()).unwrap();
        let Err(DomainError::Invalid(errors)) =
            act(&mut c, ChangeAction::Review, ChangeInput::default())
        else {
            panic!("reviewed without outcome")
        };
        assert_eq!(errors.len(), 2);
        let mut success = reviewed(ChangeOutcome::Successful);
        success.caused_incidents = Some(vec!["i1".into()]);
        assert!(act(&mut c, ChangeAction::Review, success).is_err());
        let mut failed = reviewed(ChangeOutcome::Failed);
        failed.caused_incidents = Some(vec!["i1".into()]);
        act(&mut c, ChangeAction::Review, failed).unwrap();
        assert_eq!(c.caused_incidents, ["i1"]);
        assert_eq!(c.outcome, Some(ChangeOutcome::Failed));
    }

    #[test]
    fn cancel_needs_a_reason_and_is_refused_from_implement_on() {
        let mut c = change(ChangeType::Standard);
        assert!(act(&mut c, ChangeAction::Cancel, ChangeInput::default()).is_err());
        act(&mut c, ChangeAction::Schedule, ChangeInput::default()).unwrap();
        act(&mut c, ChangeAction::Implement, ChangeInput::default()).unwrap();
        let cancel = ChangeInput {
            reason: Some("Not needed".into()),
            ..Default::default()
        };
        assert!(matches!(
            act(&mut c, ChangeAction::Cancel, cancel),
            Err(DomainError::InvalidTransition { .. })
        ));
    }

    #[test]
    fn requesters_may_only_cancel_their_own_early_changes() {
        let mut c = change(ChangeType::Normal);
        assert_eq!(c.allowed_actions(REQUESTER), [ChangeAction::Cancel]);
        let outsider = ChangeRelation {
            requested: false,
            ..REQUESTER
        };
        assert!(c.allowed_actions(outsider).is_empty());
        c.state = ChangeState::Scheduled;
        assert!(c.allowed_actions(REQUESTER).is_empty());
    }

    #[test]
    fn the_level_follows_the_assessment_unless_overridden() {
        let mut c = change(ChangeType::Normal);
        let low = risk::assess(
            &RiskAnswers {
                outage_required: Some(false),
                tested: Some(true),
                backout_tested: Some(true),
                done_before: Some(true),
                inside_business_hours: Some(false),
            },
            &risk::RiskFacts {
                backout_plan: true,
                ..Default::default()
            },
        );
        c.reassess(low.clone());
        assert_eq!(c.risk, RiskLevel::Low);
        c.risk = RiskLevel::High;
        c.risk_override_reason = Some("Vendor patch untested".into());
        c.reassess(low);
        assert_eq!(c.risk, RiskLevel::High);
    }
}
