//! Incident management: the ITIL priority matrix and the incident lifecycle.

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use crate::{DomainError, ExternalRef};

macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord,
            serde::Serialize, serde::Deserialize, utoipa::ToSchema,
        )]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            /// The accepted values, for validation messages.
            pub fn names() -> String {
                Self::ALL.iter().map(|v| v.as_str()).collect::<Vec<_>>().join(", ")
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                Self::ALL
                    .iter()
                    .copied()
                    .find(|v| v.as_str() == s)
                    .ok_or_else(|| format!("must be one of {}", Self::names()))
            }
        }
    };
}
pub(crate) use string_enum;

string_enum!(
    /// How widely the incident affects the business.
    Impact { High => "high", Medium => "medium", Low => "low" }
);
string_enum!(
    /// How soon the business needs a resolution.
    Urgency { High => "high", Medium => "medium", Low => "low" }
);
string_enum!(
    /// Derived from impact and urgency; never set directly.
    Priority { P1 => "p1", P2 => "p2", P3 => "p3", P4 => "p4", P5 => "p5" }
);
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

impl Priority {
    /// The ITIL impact x urgency matrix.
    pub fn from_matrix(impact: Impact, urgency: Urgency) -> Priority {
        use Impact as I;
        use Urgency as U;
        match (impact, urgency) {
            (I::High, U::High) => Priority::P1,
            (I::High, U::Medium) | (I::Medium, U::High) => Priority::P2,
            (I::High, U::Low) | (I::Medium, U::Medium) | (I::Low, U::High) => Priority::P3,
            (I::Medium, U::Low) | (I::Low, U::Medium) => Priority::P4,
            (I::Low, U::Low) => Priority::P5,
        }
    }
}

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
    pub resolution_code: Option<ResolutionCode>,
    pub resolution_notes: Option<String>,
    pub external_refs: Vec<ExternalRef>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub first_response_at: Option<DateTime<Utc>>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub closed_at: Option<DateTime<Utc>>,
    pub reopen_count: i32,
    pub version: i64,
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

/// Who closed an incident, kept in the audit trail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClosedBy {
    Caller,
    Agent,
}

impl Incident {
    /// The actions this caller may take now, in a stable order.
    pub fn allowed_actions(&self, relation: Relation) -> Vec<IncidentAction> {
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

    /// Applies `action` at `now`, checking the state machine and the action's inputs. Returns
    /// how the incident was closed, when it was.
    pub fn apply(
        &mut self,
        action: IncidentAction,
        input: &TransitionInput,
        relation: Relation,
        now: DateTime<Utc>,
    ) -> Result<Option<ClosedBy>, DomainError> {
        let allowed = self.allowed_actions(relation);
        if !allowed.contains(&action) {
            return Err(DomainError::InvalidTransition {
                detail: format!("cannot {action} an incident that is {}", self.state),
                allowed_actions: allowed.iter().map(|a| a.as_str().to_owned()).collect(),
            });
        }
        use IncidentAction as A;
        use IncidentState as S;
        let mut closed_by = None;
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
                closed_by = Some(if relation.is_caller && !relation.is_agent {
                    ClosedBy::Caller
                } else {
                    ClosedBy::Agent
                });
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
            }
        }
        Ok(closed_by)
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

    pub fn close(&mut self, now: DateTime<Utc>) {
        self.state = IncidentState::Closed;
        self.closed_at = Some(now);
    }

    /// Whether `parent` may become this incident's parent (one level: parents have no parent,
    /// children have no children).
    pub fn check_parent(&self, parent: &Incident, has_children: bool) -> Result<(), DomainError> {
        let invalid = |message: &str| Err(DomainError::invalid("parent_id", message));
        if parent.id == self.id {
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

impl Incident {
    /// The fields that differ between `self` (before) and `after`, for the audit trail.
    pub fn changes_to(&self, after: &Incident) -> crate::Changes {
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

/// The distinct words of `text` that `q` searches by: lowercased runs of letters and digits, at
/// most `MAX_TERM_CHARS` long, sorted. Queries and the index use the same function.
pub fn search_terms(text: &str) -> Vec<String> {
    let mut terms: Vec<String> = text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|word| !word.is_empty() && word.chars().count() <= MAX_TERM_CHARS)
        .map(str::to_lowercase)
        .collect();
    terms.sort_unstable();
    terms.dedup();
    terms
}

/// Longer "words" (hashes, encoded blobs) are not worth indexing.
pub const MAX_TERM_CHARS: usize = 64;

/// Formats the human number of the `n`th incident.
pub fn incident_number(n: i64) -> String {
    format!("INC{n:07}")
}

/// Whether a path segment is an incident number rather than an id.
pub fn is_incident_number(value: &str) -> bool {
    value.len() >= 4 && value.starts_with("INC") && value[3..].bytes().all(|b| b.is_ascii_digit())
}

/// The `n` an incident number was formatted from (`INC0000042` is 42).
pub fn incident_sequence(number: &str) -> Option<i64> {
    number.strip_prefix("INC")?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incident_numbers_give_their_sequence_back() {
        for n in [1, 42, 9_999_999, 10_000_000] {
            assert_eq!(incident_sequence(&incident_number(n)), Some(n));
        }
        assert_eq!(incident_sequence("INC"), None);
        assert_eq!(incident_sequence("CHG0000042"), None);
    }

    fn incident(state: IncidentState) -> Incident {
        let now = Utc::now();
        Incident {
            id: "i1".into(),
            number: incident_number(1),
            title: "VPN down".into(),
            description: String::new(),
            caller: "u1".into(),
            channel: Channel::Api,
            category: None,
            subcategory: None,
            impact: Impact::Medium,
            urgency: Urgency::Medium,
            priority: Priority::P3,
            state,
            on_hold_reason: None,
            assignment_group: None,
            assignee: None,
            major: false,
            parent_id: None,
            resolution_code: None,
            resolution_notes: None,
            external_refs: Vec::new(),
            created_at: now,
            updated_at: now,
            first_response_at: None,
            resolved_at: None,
            closed_at: None,
            reopen_count: 0,
            version: 1,
        }
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
    fn the_priority_matrix_covers_all_nine_cells() {
        use Impact as I;
        use Priority as P;
        use Urgency as U;
        let expected = [
            (I::High, U::High, P::P1),
            (I::High, U::Medium, P::P2),
            (I::High, U::Low, P::P3),
            (I::Medium, U::High, P::P2),
            (I::Medium, U::Medium, P::P3),
            (I::Medium, U::Low, P::P4),
            (I::Low, U::High, P::P3),
            (I::Low, U::Medium, P::P4),
            (I::Low, U::Low, P::P5),
        ];
        for (impact, urgency, priority) in expected {
            assert_eq!(
                Priority::from_matrix(impact, urgency),
                priority,
                "{impact} x {urgency}"
            );
        }
    }

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
        let closed_by = i
            .apply(
                IncidentAction::Close,
                &TransitionInput::default(),
                CALLER,
                now,
            )
            .unwrap();
        assert_eq!(
            (i.state, closed_by),
            (IncidentState::Closed, Some(ClosedBy::Caller))
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
        assert!(child.check_parent(&parent, false).is_ok());
        assert!(child.check_parent(&child, false).is_err());
        assert!(child.check_parent(&parent, true).is_err());
        parent.state = IncidentState::Closed;
        assert!(child.check_parent(&parent, false).is_err());
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

    #[test]
    fn search_terms_are_distinct_lowercase_words() {
        assert_eq!(
            search_terms("VPN down; vpn-gateway DOWN"),
            ["down", "gateway", "vpn"]
        );
        assert!(search_terms(&"x".repeat(65)).is_empty());
    }

    #[test]
    fn numbers_are_formatted_and_recognised() {
        assert_eq!(incident_number(42), "INC0000042");
        assert!(is_incident_number("INC0000042"));
        assert!(!is_incident_number("01a2-uuid"));
    }
}
