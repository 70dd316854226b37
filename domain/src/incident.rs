//! Incident management: the incident lifecycle on the ticket kernel.

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use crate::enums::string_enum;
use crate::priority::{Impact, Priority, Urgency};
use crate::ticket::{core_fields, Applied, Lifecycle, Ticket, TicketKind};
use crate::{DomainError, ExternalRef};

string_enum!(
    /// Where the incident was reported.
    Channel { Api => "api", Email => "email", Phone => "phone", Portal => "portal", Monitoring => "monitoring", Chat => "chat" }
);
string_enum!(
    IncidentState {
        New => "new",
        InProgress => "in_progress",
        OnHold => "on_hold",
        Resolved => "resolved",
        Closed => "closed",
        Canceled => "canceled",
    }
);
string_enum!(
    /// Why work is paused; required to put an incident on hold.
    OnHoldReason {
        AwaitingCaller => "awaiting_caller",
        AwaitingChange => "awaiting_change",
        AwaitingProblem => "awaiting_problem",
        AwaitingVendor => "awaiting_vendor",
    }
);
string_enum!(
    /// How an incident was resolved.
    ResolutionCode {
        Fixed => "fixed",
        Workaround => "workaround",
        KnownError => "known_error",
        Duplicate => "duplicate",
        NotReproducible => "not_reproducible",
        UserError => "user_error",
        NoFaultFound => "no_fault_found",
    }
);
string_enum!(
    /// The actions of `POST /incidents/{id}/transitions`.
    IncidentAction {
        Start => "start",
        Assign => "assign",
        Hold => "hold",
        Resume => "resume",
        Resolve => "resolve",
        Reopen => "reopen",
        Close => "close",
        Cancel => "cancel",
        DeclareMajor => "declare_major",
    }
);

impl IncidentState {
    /// Open incidents still need work (or the caller's confirmation).
    pub fn is_open(self) -> bool {
        matches!(
            self,
            IncidentState::New | IncidentState::InProgress | IncidentState::OnHold
        )
    }

    pub fn is_final(self) -> bool {
        matches!(self, IncidentState::Closed | IncidentState::Canceled)
    }
}

/// An incident as the API shows it to agents.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Incident {
    pub id: String,
    #[schema(example = "INC0000042")]
    pub number: String,
    pub title: String,
    pub description: String,
    /// The user the incident is reported for.
    pub caller: String,
    pub channel: Channel,
    pub category: Option<String>,
    pub subcategory: Option<String>,
    pub impact: Impact,
    pub urgency: Urgency,
    pub priority: Priority,
    pub state: IncidentState,
    pub on_hold_reason: Option<OnHoldReason>,
    /// The group id the incident is assigned to.
    pub assignment_group: Option<String>,
    /// The user id working the incident.
    pub assignee: Option<String>,
    pub major: bool,
    pub parent_id: Option<String>,
    /// The problem causing this incident.
    pub problem_id: Option<String>,
    pub resolution_code: Option<ResolutionCode>,
    pub resolution_notes: Option<String>,
    pub external_refs: Vec<ExternalRef>,
    /// The ids of the configuration items it concerns.
    pub configuration_items: Vec<String>,
    /// The business service (a configuration item) it affects.
    pub service: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub first_response_at: Option<DateTime<Utc>>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub closed_at: Option<DateTime<Utc>>,
    pub reopen_count: i32,
    pub version: i64,
}

/// A validated report of an incident: what the reporter decides. Storage gives it an id and a
/// number, and [`Incident::create`] derives the rest.
#[derive(Debug, Clone, PartialEq)]
pub struct NewIncident {
    pub title: String,
    pub description: String,
    pub caller: String,
    pub channel: Channel,
    pub category: Option<String>,
    pub subcategory: Option<String>,
    pub impact: Impact,
    pub urgency: Urgency,
    pub assignment_group: Option<String>,
    /// Assigning a new incident starts the work on it.
    pub assignee: Option<String>,
    pub parent_id: Option<String>,
    pub external_refs: Vec<ExternalRef>,
    pub configuration_items: Vec<String>,
    pub service: Option<String>,
}

impl NewIncident {
    pub fn priority(&self) -> Priority {
        Priority::from_matrix(self.impact, self.urgency)
    }

    /// `in_progress` when reported with an assignee, `new` otherwise.
    pub fn initial_state(&self) -> IncidentState {
        if self.assignee.is_some() {
            IncidentState::InProgress
        } else {
            IncidentState::New
        }
    }

    /// An incident reported with an assignee was responded to when it was reported.
    pub fn first_response_at(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.assignee.is_some().then_some(now)
    }
}

/// How the caller relates to an incident, which decides what it may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Relation {
    /// Agents and admins work incidents.
    pub is_agent: bool,
    /// The incident's own caller.
    pub is_caller: bool,
    /// The incident is a child whose parent is closed or canceled: it cannot be reopened.
    pub parent_final: bool,
}

/// What a transition needs besides the action.
#[derive(Debug, Clone, Default)]
pub struct TransitionInput {
    pub on_hold_reason: Option<OnHoldReason>,
    pub resolution_code: Option<ResolutionCode>,
    pub resolution_notes: Option<String>,
    /// For `declare_major` and `cancel`.
    pub reason: Option<String>,
    /// For `assign`.
    pub assignee: Option<String>,
    pub assignment_group: Option<String>,
}

impl Lifecycle for Incident {
    type Action = IncidentAction;
    type Relation = Relation;
    type Input = TransitionInput;

    fn state_name(&self) -> &'static str {
        self.state.as_str()
    }

    fn allowed_actions(&self, relation: Relation) -> Vec<IncidentAction> {
        use IncidentAction as A;
        use IncidentState as S;
        let mut actions = Vec::new();
        if relation.is_agent {
            match self.state {
                S::New => actions.extend([A::Start, A::Assign, A::Cancel]),
                S::InProgress => actions.extend([A::Assign, A::Hold, A::Resolve, A::Cancel]),
                S::OnHold => actions.extend([A::Assign, A::Resume, A::Cancel]),
                S::Resolved => actions.extend([A::Reopen, A::Close]),
                S::Closed | S::Canceled => {}
            }
            if self.state.is_open() && !self.major {
                actions.push(A::DeclareMajor);
            }
        } else if relation.is_caller && self.state == S::Resolved {
            actions.extend([A::Reopen, A::Close]);
        }
        if relation.parent_final {
            actions.retain(|action| *action != A::Reopen);
        }
        actions
    }

    fn apply(
        &mut self,
        action: IncidentAction,
        input: &TransitionInput,
        relation: Relation,
        now: DateTime<Utc>,
    ) -> Result<Applied, DomainError> {
        self.check_allowed(action, relation, TicketKind::Incident)?;
        use IncidentAction as A;
        use IncidentState as S;
        let mut applied = Applied::recorded_as(action.as_str());
        match action {
            A::Start => self.start_work(now),
            A::Assign => {
                let assignee = input
                    .assignee
                    .clone()
                    .ok_or_else(|| DomainError::invalid("assignee", "is required to assign"))?;
                if let Some(group) = &input.assignment_group {
                    self.assignment_group = Some(group.clone());
                }
                self.assign(Some(assignee), now);
            }
            A::Hold => {
                let reason = input.on_hold_reason.ok_or_else(|| {
                    DomainError::invalid(
                        "on_hold_reason",
                        format!("is required: one of {}", OnHoldReason::names()),
                    )
                })?;
                self.state = S::OnHold;
                self.on_hold_reason = Some(reason);
            }
            A::Resume => {
                self.state = S::InProgress;
                self.on_hold_reason = None;
            }
            A::Resolve => {
                let mut errors = Vec::new();
                if input.resolution_code.is_none() {
                    errors.push(crate::FieldError::new(
                        "resolution_code",
                        format!("is required: one of {}", ResolutionCode::names()),
                    ));
                }
                let notes = input
                    .resolution_notes
                    .as_deref()
                    .map(str::trim)
                    .unwrap_or("");
                if notes.is_empty() {
                    errors.push(crate::FieldError::new(
                        "resolution_notes",
                        "are required to resolve",
                    ));
                }
                if !errors.is_empty() {
                    return Err(DomainError::Invalid(errors));
                }
                self.resolve(input.resolution_code, notes.to_owned(), now);
            }
            A::Reopen => {
                self.state = S::InProgress;
                self.reopen_count += 1;
                self.resolved_at = None;
                self.resolution_code = None;
                self.resolution_notes = None;
            }
            A::Close => {
                if relation.is_caller && !relation.is_agent {
                    applied = Applied::recorded_as("close_by_caller");
                }
                self.close(now);
            }
            A::Cancel => {
                self.state = S::Canceled;
                self.on_hold_reason = None;
                self.closed_at = Some(now);
            }
            A::DeclareMajor => {
                let reason = input.reason.as_deref().map(str::trim).unwrap_or("");
                if reason.is_empty() {
                    return Err(DomainError::invalid(
                        "reason",
                        "is required to declare a major incident",
                    ));
                }
                self.major = true;
                applied = applied.with_event("incident.major_declared");
            }
        }
        Ok(applied)
    }
}

impl Incident {
    /// The incident `new` becomes, stored as `id` and `number` at `now`.
    pub fn create(new: NewIncident, id: String, number: String, now: DateTime<Utc>) -> Incident {
        Incident {
            priority: new.priority(),
            state: new.initial_state(),
            first_response_at: new.first_response_at(now),
            id,
            number,
            title: new.title,
            description: new.description,
            caller: new.caller,
            channel: new.channel,
            category: new.category,
            subcategory: new.subcategory,
            impact: new.impact,
            urgency: new.urgency,
            on_hold_reason: None,
            assignment_group: new.assignment_group,
            assignee: new.assignee,
            major: false,
            parent_id: new.parent_id,
            problem_id: None,
            resolution_code: None,
            resolution_notes: None,
            external_refs: new.external_refs,
            configuration_items: new.configuration_items,
            service: new.service,
            created_at: now,
            updated_at: now,
            resolved_at: None,
            closed_at: None,
            reopen_count: 0,
            version: 1,
        }
    }

    fn start_work(&mut self, now: DateTime<Utc>) {
        self.state = IncidentState::InProgress;
        self.first_response_at.get_or_insert(now);
    }

    /// Sets the assignee; the first assignment of a new incident starts work on it.
    pub fn assign(&mut self, assignee: Option<String>, now: DateTime<Utc>) {
        let starts = assignee.is_some() && self.state == IncidentState::New;
        self.assignee = assignee;
        if starts {
            self.start_work(now);
        }
    }

    /// Resolves an open child along with its parent.
    pub fn resolve(&mut self, code: Option<ResolutionCode>, notes: String, now: DateTime<Utc>) {
        self.state = IncidentState::Resolved;
        self.on_hold_reason = None;
        self.resolution_code = code;
        self.resolution_notes = Some(notes);
        self.resolved_at = Some(now);
    }

    /// Links the incident to the problem causing it; an open incident held for it waits
    /// `on_hold`/`awaiting_problem`.
    pub fn link_problem(&mut self, problem_id: &str, hold: bool) {
        self.problem_id = Some(problem_id.to_owned());
        if hold && self.state.is_open() {
            self.state = IncidentState::OnHold;
            self.on_hold_reason = Some(OnHoldReason::AwaitingProblem);
        }
    }

    /// Whether the incident waits for its problem.
    pub fn awaits_problem(&self) -> bool {
        self.state == IncidentState::OnHold
            && self.on_hold_reason == Some(OnHoldReason::AwaitingProblem)
    }

    /// Work resumes on an incident that waited for its problem.
    pub fn stop_awaiting_problem(&mut self) {
        if self.awaits_problem() {
            self.state = IncidentState::InProgress;
            self.on_hold_reason = None;
        }
    }

    pub fn close(&mut self, now: DateTime<Utc>) {
        self.state = IncidentState::Closed;
        self.closed_at = Some(now);
    }

    /// Whether `parent` may become the parent of incident `id` (empty for a new one) (one level: parents have no parent,
    /// children have no children).
    pub fn check_parent(
        id: &str,
        parent: &Incident,
        has_children: bool,
    ) -> Result<(), DomainError> {
        let invalid = |message: &str| Err(DomainError::invalid("parent_id", message));
        if parent.id == id {
            return invalid("an incident cannot be its own parent");
        }
        if parent.parent_id.is_some() {
            return invalid("the parent is itself a child incident");
        }
        if has_children {
            return invalid("an incident with children cannot become a child");
        }
        if parent.state.is_final() {
            return invalid("the parent is closed or canceled");
        }
        Ok(())
    }
}

impl Ticket for Incident {
    const KIND: TicketKind = TicketKind::Incident;
    const INTERNAL_FIELDS: &'static [&'static str] = &[
        "assignment_group",
        "assignee",
        "major",
        "parent_id",
        "external_refs",
        "problem_id",
        "configuration_items",
    ];
    // Major declarations concern staff only.
    const INTERNAL_ACTIONS: &'static [&'static str] = &["declare_major"];

    fn sla_view(&self) -> Option<crate::sla_timers::SlaView<'_>> {
        Some(crate::sla_timers::SlaView {
            facts: crate::sla::TicketFacts {
                ticket_type: TicketKind::Incident,
                priority: self.priority,
                category: self.category.as_deref(),
                service: self.service.as_deref(),
                assignment_group: self.assignment_group.as_deref(),
            },
            state: self.state.as_str(),
            on_hold_reason: self.on_hold_reason.map(OnHoldReason::as_str),
            responded: self.first_response_at.is_some(),
            resolved: self.resolved_at.is_some(),
            canceled: self.state == IncidentState::Canceled,
        })
    }

    core_fields!();

    fn requester(&self) -> Option<&str> {
        Some(&self.caller)
    }
    fn priority(&self) -> Option<Priority> {
        Some(self.priority)
    }
    fn search_text(&self) -> String {
        format!("{}\n{}", self.title, self.description)
    }
    fn search_text_changed(&self, after: &Incident) -> bool {
        self.title != after.title || self.description != after.description
    }

    fn changes_to(&self, after: &Incident) -> crate::Changes {
        let mut changes = crate::Changes::new();
        changes
            .field("title", &self.title, &after.title)
            .field("description", &self.description, &after.description)
            .field("caller", &self.caller, &after.caller)
            .field("channel", &self.channel, &after.channel)
            .field("category", &self.category, &after.category)
            .field("subcategory", &self.subcategory, &after.subcategory)
            .field("impact", &self.impact, &after.impact)
            .field("urgency", &self.urgency, &after.urgency)
            .field("priority", &self.priority, &after.priority)
            .field("state", &self.state, &after.state)
            .field(
                "on_hold_reason",
                &self.on_hold_reason,
                &after.on_hold_reason,
            )
            .field(
                "assignment_group",
                &self.assignment_group,
                &after.assignment_group,
            )
            .field("assignee", &self.assignee, &after.assignee)
            .field("major", &self.major, &after.major)
            .field("parent_id", &self.parent_id, &after.parent_id)
            .field("problem_id", &self.problem_id, &after.problem_id)
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
            .field(
                "first_response_at",
                &self.first_response_at,
                &after.first_response_at,
            )
            .field("resolved_at", &self.resolved_at, &after.resolved_at)
            .field("closed_at", &self.closed_at, &after.closed_at)
            .field("reopen_count", &self.reopen_count, &after.reopen_count);
        changes
    }
}

/// What a child resolved or closed together with its parent tells its caller. The parent may be
/// another caller's incident, which this caller may not see: then the public comment names no
/// number and the parent's resolution notes are not copied.
impl Incident {
    pub fn resolution_notes_for_child(&self, child: &Incident) -> String {
        match &self.resolution_notes {
            Some(notes) if self.caller == child.caller => notes.clone(),
            _ => "Resolved together with a related incident.".to_owned(),
        }
    }

    pub fn cascade_comment(&self, child: &Incident) -> String {
        let verb = match self.state {
            IncidentState::Closed => "Closed",
            _ => "Resolved",
        };
        if self.caller == child.caller {
            format!("{verb} together with parent incident {}.", self.number)
        } else {
            format!("{verb} together with a related incident.")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_learns_nothing_of_another_callers_parent() {
        let mut parent = incident(IncidentState::Resolved);
        parent.resolution_notes = Some("Replaced the CEO's laptop disk".into());
        let mut own_child = incident(IncidentState::InProgress);
        own_child.id = "i2".into();
        assert_eq!(
            parent.resolution_notes_for_child(&own_child),
            "Replaced the CEO's laptop disk"
        );
        let mut other_child = own_child.clone();
        other_child.caller = "u2".into();
        let notes = parent.resolution_notes_for_child(&other_child);
        assert!(!notes.contains("CEO"), "{notes}");
        assert!(!parent
            .cascade_comment(&other_child)
            .contains(&parent.number));
        assert!(parent.cascade_comment(&own_child).contains(&parent.number));
    }

    fn incident(state: IncidentState) -> Incident {
        let new = NewIncident {
            title: "VPN down".into(),
            description: String::new(),
            caller: "u1".into(),
            channel: Channel::Api,
            category: None,
            subcategory: None,
            impact: Impact::Medium,
            urgency: Urgency::Medium,
            assignment_group: None,
            assignee: None,
            parent_id: None,
            external_refs: Vec::new(),
            configuration_items: Vec::new(),
            service: None,
        };
        let mut incident = Incident::create(new, "i1".into(), "INC0000001".into(), Utc::now());
        incident.state = state;
        incident
    }

    const AGENT: Relation = Relation {
        is_agent: true,
        is_caller: false,
        parent_final: false,
    };
    const CALLER: Relation = Relation {
        is_agent: false,
        is_caller: true,
        parent_final: false,
    };
    const STRANGER: Relation = Relation {
        is_agent: false,
        is_caller: false,
        parent_final: false,
    };

    #[test]
    fn the_full_lifecycle_runs_and_stamps_its_times() {
        let now = Utc::now();
        let mut i = incident(IncidentState::New);
        i.apply(
            IncidentAction::Start,
            &TransitionInput::default(),
            AGENT,
            now,
        )
        .unwrap();
        assert_eq!(i.state, IncidentState::InProgress);
        assert_eq!(i.first_response_at, Some(now));
        let hold = TransitionInput {
            on_hold_reason: Some(OnHoldReason::AwaitingVendor),
            ..Default::default()
        };
        i.apply(IncidentAction::Hold, &hold, AGENT, now).unwrap();
        assert_eq!(i.on_hold_reason, Some(OnHoldReason::AwaitingVendor));
        i.apply(
            IncidentAction::Resume,
            &TransitionInput::default(),
            AGENT,
            now,
        )
        .unwrap();
        assert_eq!(i.on_hold_reason, None);
        let resolve = TransitionInput {
            resolution_code: Some(ResolutionCode::Fixed),
            resolution_notes: Some("Restarted the gateway".into()),
            ..Default::default()
        };
        i.apply(IncidentAction::Resolve, &resolve, AGENT, now)
            .unwrap();
        assert_eq!(i.resolved_at, Some(now));
        i.apply(
            IncidentAction::Reopen,
            &TransitionInput::default(),
            CALLER,
            now,
        )
        .unwrap();
        assert_eq!(
            (i.state, i.reopen_count, i.resolved_at),
            (IncidentState::InProgress, 1, None)
        );
        i.apply(IncidentAction::Resolve, &resolve, AGENT, now)
            .unwrap();
        let applied = i
            .apply(
                IncidentAction::Close,
                &TransitionInput::default(),
                CALLER,
                now,
            )
            .unwrap();
        assert_eq!(
            (i.state, applied.audit_action),
            (IncidentState::Closed, "close_by_caller")
        );
        assert!(i.allowed_actions(AGENT).is_empty());
    }

    #[test]
    fn forbidden_transitions_list_what_is_allowed() {
        let mut i = incident(IncidentState::OnHold);
        let Err(DomainError::InvalidTransition {
            allowed_actions, ..
        }) = i.apply(
            IncidentAction::Resolve,
            &TransitionInput::default(),
            AGENT,
            Utc::now(),
        )
        else {
            panic!("resolve from on_hold accepted")
        };
        assert_eq!(
            allowed_actions,
            ["assign", "resume", "cancel", "declare_major"]
        );
    }

    #[test]
    fn every_state_allows_exactly_its_actions() {
        use IncidentAction as A;
        use IncidentState as S;
        let table = [
            (
                S::New,
                vec![A::Start, A::Assign, A::Cancel, A::DeclareMajor],
            ),
            (
                S::InProgress,
                vec![A::Assign, A::Hold, A::Resolve, A::Cancel, A::DeclareMajor],
            ),
            (
                S::OnHold,
                vec![A::Assign, A::Resume, A::Cancel, A::DeclareMajor],
            ),
            (S::Resolved, vec![A::Reopen, A::Close]),
            (S::Closed, vec![]),
            (S::Canceled, vec![]),
        ];
        for (state, actions) in table {
            assert_eq!(incident(state).allowed_actions(AGENT), actions, "{state}");
        }
        assert_eq!(
            incident(S::Resolved).allowed_actions(CALLER),
            vec![A::Reopen, A::Close]
        );
        assert!(incident(S::InProgress).allowed_actions(CALLER).is_empty());
        assert!(incident(S::Resolved).allowed_actions(STRANGER).is_empty());
    }

    #[test]
    fn required_inputs_are_named() {
        let now = Utc::now();
        let mut i = incident(IncidentState::InProgress);
        let Err(DomainError::Invalid(errors)) = i.apply(
            IncidentAction::Resolve,
            &TransitionInput::default(),
            AGENT,
            now,
        ) else {
            panic!("resolve without code accepted")
        };
        assert_eq!(errors.len(), 2);
        assert!(i
            .apply(
                IncidentAction::Hold,
                &TransitionInput::default(),
                AGENT,
                now
            )
            .is_err());
        assert!(i
            .apply(
                IncidentAction::DeclareMajor,
                &TransitionInput::default(),
                AGENT,
                now
            )
            .is_err());
        assert_eq!(i.state, IncidentState::InProgress);
    }

    #[test]
    fn declaring_a_major_incident_raises_its_event() {
        let mut i = incident(IncidentState::InProgress);
        let input = TransitionInput {
            reason: Some("Whole site down".into()),
            ..Default::default()
        };
        let applied = i
            .apply(IncidentAction::DeclareMajor, &input, AGENT, Utc::now())
            .unwrap();
        assert_eq!(applied.events, ["incident.major_declared"]);
        assert!(i.major);
    }

    #[test]
    fn reported_with_an_assignee_it_starts_at_once() {
        let now = Utc::now();
        let mut i = incident(IncidentState::New);
        let new = NewIncident {
            assignee: Some("agent".into()),
            title: i.title.clone(),
            description: i.description.clone(),
            caller: i.caller.clone(),
            channel: i.channel,
            category: None,
            subcategory: None,
            impact: Impact::High,
            urgency: Urgency::High,
            assignment_group: Some("g".into()),
            parent_id: None,
            external_refs: Vec::new(),
            configuration_items: Vec::new(),
            service: None,
        };
        i = Incident::create(new, i.id, i.number, now);
        assert_eq!(
            (i.state, i.priority, i.first_response_at, i.version),
            (IncidentState::InProgress, Priority::P1, Some(now), 1)
        );
    }

    #[test]
    fn assigning_a_new_incident_starts_it() {
        let now = Utc::now();
        let mut i = incident(IncidentState::New);
        i.assign(Some("agent".into()), now);
        assert_eq!(
            (i.state, i.first_response_at),
            (IncidentState::InProgress, Some(now))
        );
    }

    #[test]
    fn parents_are_one_level_and_open() {
        let child = incident(IncidentState::New);
        let mut parent = incident(IncidentState::InProgress);
        parent.id = "p".into();
        assert!(Incident::check_parent(&child.id, &parent, false).is_ok());
        assert!(Incident::check_parent(&child.id, &child, false).is_err());
        assert!(Incident::check_parent(&child.id, &parent, true).is_err());
        parent.state = IncidentState::Closed;
        assert!(Incident::check_parent(&child.id, &parent, false).is_err());
        let mut resolved_child = incident(IncidentState::Resolved);
        resolved_child.parent_id = Some(parent.id.clone());
        let under_closed_parent = Relation {
            parent_final: true,
            ..AGENT
        };
        assert_eq!(
            resolved_child.allowed_actions(under_closed_parent),
            vec![IncidentAction::Close]
        );
    }
}
