//! Problem management: the problem lifecycle and the known-error record, on the ticket kernel.

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use crate::enums::string_enum;
use crate::incident::ResolutionCode;
use crate::priority::{Impact, Priority, Urgency};
use crate::ticket::{core_fields, required_text, Applied, Lifecycle, Ticket, TicketKind};
use crate::{Changes, DomainError, ExternalRef, FieldError};

string_enum!(
    ProblemState {
        New => "new",
        Assessed => "assessed",
        RootCauseAnalysis => "root_cause_analysis",
        FixInProgress => "fix_in_progress",
        Resolved => "resolved",
        Closed => "closed",
        Canceled => "canceled",
    }
);

string_enum!(
    /// The actions of `POST /problems/{id}/transitions`.
    ProblemAction {
        Assess => "assess",
        StartAnalysis => "start_analysis",
        StartFix => "start_fix",
        Resolve => "resolve",
        Close => "close",
        Cancel => "cancel",
        Assign => "assign",
        RecordWorkaround => "record_workaround",
        RecordRootCause => "record_root_cause",
        DeclareKnownError => "declare_known_error",
    }
);

impl ProblemState {
    pub fn is_open(self) -> bool {
        !matches!(
            self,
            ProblemState::Resolved | ProblemState::Closed | ProblemState::Canceled
        )
    }

    pub fn is_final(self) -> bool {
        matches!(self, ProblemState::Closed | ProblemState::Canceled)
    }
}

/// A problem: the unknown cause of one or more incidents, until it is found and removed.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Problem {
    pub id: String,
    #[schema(example = "PRB0000042")]
    pub number: String,
    pub title: String,
    pub description: String,
    pub impact: Impact,
    pub urgency: Urgency,
    pub priority: Priority,
    pub state: ProblemState,
    /// The group id the problem is assigned to.
    pub assignment_group: Option<String>,
    /// The user id investigating the problem.
    pub assignee: Option<String>,
    pub category: Option<String>,
    pub root_cause: Option<String>,
    /// How to restore service until the problem is fixed.
    pub workaround: Option<String>,
    /// Declared a known error: its root cause or workaround is documented.
    pub known_error: bool,
    pub known_error_at: Option<DateTime<Utc>>,
    pub resolution_code: Option<ResolutionCode>,
    pub resolution_notes: Option<String>,
    pub external_refs: Vec<ExternalRef>,
    /// The ids of the configuration items it concerns.
    pub configuration_items: Vec<String>,
    /// The business service (a configuration item) it affects.
    pub service: Option<String>,
    /// The change that fixes it (the change lists it in `fixes_problems`).
    pub fix_change_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub closed_at: Option<DateTime<Utc>>,
    pub version: i64,
}

/// A validated new problem. Storage gives it an id and a number.
#[derive(Debug, Clone, PartialEq)]
pub struct NewProblem {
    pub title: String,
    pub description: String,
    pub impact: Impact,
    pub urgency: Urgency,
    pub category: Option<String>,
    pub assignment_group: Option<String>,
    pub assignee: Option<String>,
    pub root_cause: Option<String>,
    pub workaround: Option<String>,
    pub external_refs: Vec<ExternalRef>,
    pub configuration_items: Vec<String>,
    pub service: Option<String>,
}

impl NewProblem {
    pub fn priority(&self) -> Priority {
        Priority::from_matrix(self.impact, self.urgency)
    }
}

/// How the caller relates to a problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProblemRelation {
    /// Problem managers and admins move problems through their lifecycle and reassign them;
    /// other staff create them, add notes and link incidents.
    pub manages: bool,
}

/// What a transition needs besides the action.
#[derive(Debug, Clone, Default)]
pub struct ProblemInput {
    pub reason: Option<String>,
    pub resolution_code: Option<ResolutionCode>,
    pub resolution_notes: Option<String>,
    pub workaround: Option<String>,
    pub root_cause: Option<String>,
    pub assignee: Option<String>,
    pub assignment_group: Option<String>,
}

impl Problem {
    /// The problem `new` becomes, stored as `id` and `number` at `now`.
    pub fn create(new: NewProblem, id: String, number: String, now: DateTime<Utc>) -> Problem {
        Problem {
            priority: new.priority(),
            id,
            number,
            title: new.title,
            description: new.description,
            impact: new.impact,
            urgency: new.urgency,
            state: ProblemState::New,
            assignment_group: new.assignment_group,
            assignee: new.assignee,
            category: new.category,
            root_cause: new.root_cause,
            workaround: new.workaround,
            known_error: false,
            known_error_at: None,
            resolution_code: None,
            resolution_notes: None,
            external_refs: new.external_refs,
            configuration_items: new.configuration_items,
            service: new.service,
            fix_change_id: None,
            created_at: now,
            updated_at: now,
            resolved_at: None,
            closed_at: None,
            version: 1,
        }
    }

    /// A known error needs something documented that helps: a workaround or a root cause.
    pub fn can_be_known_error(&self) -> bool {
        self.workaround.is_some() || self.root_cause.is_some()
    }
}

impl Lifecycle for Problem {
    type Action = ProblemAction;
    type Relation = ProblemRelation;
    type Input = ProblemInput;

    fn state_name(&self) -> &'static str {
        self.state.as_str()
    }

    fn allowed_actions(&self, relation: ProblemRelation) -> Vec<ProblemAction> {
        use ProblemAction as A;
        use ProblemState as S;
        if !relation.manages {
            return Vec::new();
        }
        let mut actions = match self.state {
            S::New => vec![A::Assess],
            S::Assessed => vec![A::StartAnalysis],
            S::RootCauseAnalysis => vec![A::StartFix, A::Resolve],
            S::FixInProgress => vec![A::Resolve],
            S::Resolved => vec![A::Close],
            S::Closed | S::Canceled => vec![],
        };
        if self.state.is_open() {
            actions.extend([
                A::Cancel,
                A::Assign,
                A::RecordWorkaround,
                A::RecordRootCause,
            ]);
            if !self.known_error && self.can_be_known_error() {
                actions.push(A::DeclareKnownError);
            }
        }
        actions
    }

    fn apply(
        &mut self,
        action: ProblemAction,
        input: &ProblemInput,
        relation: ProblemRelation,
        now: DateTime<Utc>,
    ) -> Result<Applied, DomainError> {
        use ProblemAction as A;
        use ProblemState as S;
        if action == A::DeclareKnownError
            && relation.manages
            && self.state.is_open()
            && !self.known_error
            && !self.can_be_known_error()
        {
            return Err(DomainError::InvalidTransition {
                detail: "a known error needs a workaround or a root cause: record one first".into(),
                allowed_actions: self
                    .allowed_actions(relation)
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
            });
        }
        self.check_allowed(action, relation, TicketKind::Problem)?;
        let mut applied = Applied::recorded_as(action.as_str());
        match action {
            A::Assess => self.state = S::Assessed,
            A::StartAnalysis => self.state = S::RootCauseAnalysis,
            A::StartFix => self.state = S::FixInProgress,
            A::Resolve => {
                let mut errors = Vec::new();
                if input.resolution_code.is_none() {
                    errors.push(FieldError::new(
                        "resolution_code",
                        format!("is required: one of {}", ResolutionCode::names()),
                    ));
                }
                let notes = input.resolution_notes.as_deref().map(str::trim);
                if notes.is_none_or(str::is_empty) {
                    errors.push(FieldError::new(
                        "resolution_notes",
                        "are required to resolve",
                    ));
                }
                if !errors.is_empty() {
                    return Err(DomainError::Invalid(errors));
                }
                self.state = S::Resolved;
                self.resolution_code = input.resolution_code;
                self.resolution_notes = notes.map(str::to_owned);
                self.resolved_at = Some(now);
            }
            A::Close => {
                self.state = S::Closed;
                self.closed_at = Some(now);
            }
            A::Cancel => {
                required_text(
                    input.reason.as_deref(),
                    "reason",
                    "is required to cancel a problem",
                )?;
                self.state = S::Canceled;
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
            A::RecordWorkaround => {
                self.workaround = Some(required_text(
                    input.workaround.as_deref(),
                    "workaround",
                    "is required to record a workaround",
                )?);
            }
            A::RecordRootCause => {
                self.root_cause = Some(required_text(
                    input.root_cause.as_deref(),
                    "root_cause",
                    "is required to record a root cause",
                )?);
            }
            A::DeclareKnownError => {
                self.known_error = true;
                self.known_error_at = Some(now);
                applied = applied.with_event("problem.known_error_declared");
            }
        }
        Ok(applied)
    }
}

impl Ticket for Problem {
    const KIND: TicketKind = TicketKind::Problem;
    // Problems are staff-only: requesters never reach them, so nothing is redacted.
    const INTERNAL_FIELDS: &'static [&'static str] = &[];

    core_fields!();

    fn requester(&self) -> Option<&str> {
        None
    }
    fn priority(&self) -> Option<Priority> {
        Some(self.priority)
    }
    /// A problem is responded to once it is assessed, and resolved when its fix is in.
    fn sla_view(&self) -> Option<crate::sla_timers::SlaView<'_>> {
        Some(crate::sla_timers::SlaView {
            facts: crate::sla::TicketFacts {
                ticket_type: TicketKind::Problem,
                priority: self.priority,
                category: self.category.as_deref(),
                service: self.service.as_deref(),
                assignment_group: self.assignment_group.as_deref(),
            },
            state: self.state.as_str(),
            on_hold_reason: None,
            responded: self.state != ProblemState::New,
            resolved: self.resolved_at.is_some(),
            canceled: self.state == ProblemState::Canceled,
        })
    }
    /// A known error is found by its symptoms and by what is known of it.
    fn search_text(&self) -> String {
        let mut text = format!("{}\n{}", self.title, self.description);
        for part in [&self.root_cause, &self.workaround].into_iter().flatten() {
            text.push('\n');
            text.push_str(part);
        }
        text
    }
    fn search_text_changed(&self, after: &Problem) -> bool {
        self.title != after.title
            || self.description != after.description
            || self.root_cause != after.root_cause
            || self.workaround != after.workaround
    }

    fn changes_to(&self, after: &Problem) -> Changes {
        let mut changes = Changes::new();
        changes
            .field("title", &self.title, &after.title)
            .field("description", &self.description, &after.description)
            .field("impact", &self.impact, &after.impact)
            .field("urgency", &self.urgency, &after.urgency)
            .field("priority", &self.priority, &after.priority)
            .field("state", &self.state, &after.state)
            .field(
                "assignment_group",
                &self.assignment_group,
                &after.assignment_group,
            )
            .field("assignee", &self.assignee, &after.assignee)
            .field("category", &self.category, &after.category)
            .field("root_cause", &self.root_cause, &after.root_cause)
            .field("workaround", &self.workaround, &after.workaround)
            .field("known_error", &self.known_error, &after.known_error)
            .field(
                "known_error_at",
                &self.known_error_at,
                &after.known_error_at,
            )
            .field(
                "resolution_code",
                &self.resolution_code,
                &after.resolution_code,
            )
            .field(
                "resolution_notes",
                &self.resolution_notes,
                &after.resolution_notes,
            )
            .field("external_refs", &self.external_refs, &after.external_refs)
            .field(
                "configuration_items",
                &self.configuration_items,
                &after.configuration_items,
            )
            .field("service", &self.service, &after.service)
            .field("fix_change_id", &self.fix_change_id, &after.fix_change_id)
            .field("resolved_at", &self.resolved_at, &after.resolved_at)
            .field("closed_at", &self.closed_at, &after.closed_at);
        changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANAGER: ProblemRelation = ProblemRelation { manages: true };
    const AGENT: ProblemRelation = ProblemRelation { manages: false };

    fn problem(state: ProblemState) -> Problem {
        let new = NewProblem {
            title: "VPN drops".into(),
            description: "Tunnels reset every few minutes".into(),
            impact: Impact::High,
            urgency: Urgency::Medium,
            category: None,
            assignment_group: None,
            assignee: None,
            root_cause: None,
            workaround: None,
            external_refs: Vec::new(),
            configuration_items: Vec::new(),
            service: None,
        };
        let mut problem = Problem::create(new, "p1".into(), "PRB0000001".into(), Utc::now());
        problem.state = state;
        problem
    }

    fn act(
        p: &mut Problem,
        action: ProblemAction,
        input: ProblemInput,
    ) -> Result<Applied, DomainError> {
        p.apply(action, &input, MANAGER, Utc::now())
    }

    #[test]
    fn the_lifecycle_runs_from_new_to_closed() {
        let mut p = problem(ProblemState::New);
        assert_eq!(p.priority, Priority::P2);
        for (action, state) in [
            (ProblemAction::Assess, ProblemState::Assessed),
            (
                ProblemAction::StartAnalysis,
                ProblemState::RootCauseAnalysis,
            ),
            (ProblemAction::StartFix, ProblemState::FixInProgress),
        ] {
            act(&mut p, action, ProblemInput::default()).unwrap();
            assert_eq!(p.state, state);
        }
        let resolve = ProblemInput {
            resolution_code: Some(ResolutionCode::Fixed),
            resolution_notes: Some("Firmware replaced".into()),
            ..Default::default()
        };
        act(&mut p, ProblemAction::Resolve, resolve).unwrap();
        assert!(p.resolved_at.is_some());
        act(&mut p, ProblemAction::Close, ProblemInput::default()).unwrap();
        assert_eq!(p.state, ProblemState::Closed);
        assert!(p.allowed_actions(MANAGER).is_empty());
    }

    #[test]
    fn a_known_error_needs_a_workaround_or_a_root_cause() {
        let mut p = problem(ProblemState::Assessed);
        assert!(!p
            .allowed_actions(MANAGER)
            .contains(&ProblemAction::DeclareKnownError));
        let Err(DomainError::InvalidTransition {
            detail,
            allowed_actions,
        }) = act(
            &mut p,
            ProblemAction::DeclareKnownError,
            ProblemInput::default(),
        )
        else {
            panic!("a known error without workaround accepted")
        };
        assert!(detail.contains("workaround"), "{detail}");
        assert!(allowed_actions.contains(&"record_workaround".to_owned()));
        let workaround = ProblemInput {
            workaround: Some("Reconnect with the wired network".into()),
            ..Default::default()
        };
        act(&mut p, ProblemAction::RecordWorkaround, workaround).unwrap();
        let applied = act(
            &mut p,
            ProblemAction::DeclareKnownError,
            ProblemInput::default(),
        )
        .unwrap();
        assert_eq!(applied.events, ["problem.known_error_declared"]);
        assert!(p.known_error && p.known_error_at.is_some());
        assert!(!p
            .allowed_actions(MANAGER)
            .contains(&ProblemAction::DeclareKnownError));
    }

    #[test]
    fn resolving_needs_a_code_and_notes_and_cancel_a_reason() {
        let mut p = problem(ProblemState::FixInProgress);
        let Err(DomainError::Invalid(errors)) =
            act(&mut p, ProblemAction::Resolve, ProblemInput::default())
        else {
            panic!("resolve without code accepted")
        };
        assert_eq!(errors.len(), 2);
        assert!(act(&mut p, ProblemAction::Cancel, ProblemInput::default()).is_err());
        assert_eq!(p.state, ProblemState::FixInProgress);
        let cancel = ProblemInput {
            reason: Some("Duplicate of PRB0000007".into()),
            ..Default::default()
        };
        act(&mut p, ProblemAction::Cancel, cancel).unwrap();
        assert_eq!(p.state, ProblemState::Canceled);
    }

    #[test]
    fn only_managers_transition() {
        let p = problem(ProblemState::New);
        assert!(p.allowed_actions(AGENT).is_empty());
        assert_eq!(
            p.allowed_actions(MANAGER),
            [
                ProblemAction::Assess,
                ProblemAction::Cancel,
                ProblemAction::Assign,
                ProblemAction::RecordWorkaround,
                ProblemAction::RecordRootCause
            ]
        );
    }

    #[test]
    fn search_text_covers_what_is_known() {
        let mut p = problem(ProblemState::New);
        p.workaround = Some("Use the wired network".into());
        p.root_cause = Some("Access point firmware".into());
        let words = crate::search::search_terms(&p.search_text());
        for word in ["vpn", "tunnels", "wired", "firmware"] {
            assert!(words.contains(&word.to_owned()), "{word}");
        }
    }
}
