//! The ticket kernel: what incidents, problems, changes, requests and their tasks share.
//!
//! A ticket type plugs in by implementing [`Ticket`] (identity, number, what requesters may not
//! see, its search text, its audit diff) and [`Lifecycle`] (its states as an explicit transition
//! table). Numbering, lookups, saving with the audit diff and the standard events, notes,
//! history, visibility and lists are written once against these traits.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::enums::string_enum;
use crate::priority::Priority;
use crate::{Changes, DomainError, ExternalRef};

string_enum!(
    /// The ticket types; each numbers its tickets with its own prefix.
    TicketKind {
        Incident => "incident",
        Problem => "problem",
        Change => "change",
        Request => "request",
        Task => "task",
    }
);

impl TicketKind {
    /// The prefix of its human numbers (`INC0000042`).
    pub fn prefix(self) -> &'static str {
        match self {
            TicketKind::Incident => "INC",
            TicketKind::Problem => "PRB",
            TicketKind::Change => "CHG",
            TicketKind::Request => "REQ",
            TicketKind::Task => "TASK",
        }
    }

    /// The human number of its `n`th ticket: the prefix and at least seven digits.
    pub fn number(self, n: i64) -> String {
        format!("{}{n:07}", self.prefix())
    }

    /// Whether a path segment is one of its numbers rather than an id.
    pub fn is_number(self, value: &str) -> bool {
        value
            .strip_prefix(self.prefix())
            .is_some_and(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
    }

    /// What a path or a field naming a ticket of this kind accepts: its number
    /// (`is_number`) or its id, for the contract.
    pub fn reference_pattern(self) -> String {
        format!("^(?:{}[0-9]{{1,18}}|{})$", self.prefix(), ID_PATTERN_BODY)
    }

    /// The `n` a number of this kind was formatted from (`INC0000042` is 42).
    pub fn sequence(self, number: &str) -> Option<i64> {
        number.strip_prefix(self.prefix())?.parse().ok()
    }

    /// A distinct small code per kind, stable across versions (stored in the word index).
    pub fn code(self) -> i64 {
        match self {
            TicketKind::Incident => 0,
            TicketKind::Problem => 1,
            TicketKind::Change => 2,
            TicketKind::Request => 3,
            TicketKind::Task => 4,
        }
    }

    /// The type of one of its standard events: `incident.created`, `problem.state_changed`...
    /// (static text: events are written on every change).
    pub fn event(self, event: TicketEvent) -> &'static str {
        macro_rules! names {
            ($($kind:ident => $prefix:literal),+) => {
                match (self, event) {
                    $(
                        (TicketKind::$kind, TicketEvent::Created) => concat!($prefix, ".created"),
                        (TicketKind::$kind, TicketEvent::Updated) => concat!($prefix, ".updated"),
                        (TicketKind::$kind, TicketEvent::StateChanged) => {
                            concat!($prefix, ".state_changed")
                        }
                        (TicketKind::$kind, TicketEvent::Assigned) => concat!($prefix, ".assigned"),
                        (TicketKind::$kind, TicketEvent::NoteAdded) => {
                            concat!($prefix, ".note_added")
                        }
                    )+
                }
            };
        }
        names!(
            Incident => "incident",
            Problem => "problem",
            Change => "change",
            Request => "request",
            Task => "task"
        )
    }
}

/// The records' ids: UUID v7 as lowercase hyphenated text (`persistence::new_id`), without
/// anchors, for patterns that combine it.
pub const ID_PATTERN_BODY: &str = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}";

/// The events every ticket type raises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TicketEvent {
    Created,
    Updated,
    StateChanged,
    Assigned,
    NoteAdded,
}

/// What an applied action means for the record of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The audit action: usually the action's name, sometimes more precise (`close_by_caller`).
    pub audit_action: &'static str,
    /// Events of the type beyond the standard ones (`incident.major_declared`).
    pub events: Vec<&'static str>,
}

impl Applied {
    pub fn recorded_as(audit_action: &'static str) -> Self {
        Self {
            audit_action,
            events: Vec::new(),
        }
    }

    pub fn with_event(mut self, event: &'static str) -> Self {
        self.events.push(event);
        self
    }
}

/// A ticket type's state machine: the actions a caller may take now, and what each does.
pub trait Lifecycle {
    /// The actions of `POST /<tickets>/{id}/transitions`.
    type Action: Copy + Eq + std::fmt::Display + Serialize + Send + 'static;
    /// How the caller relates to the ticket, which decides the actions it may take.
    type Relation: Copy + Send + 'static;
    /// What actions need besides their name (reasons, codes, assignees).
    type Input: Send + 'static;

    /// The actions this caller may take now, in a stable order.
    fn allowed_actions(&self, relation: Self::Relation) -> Vec<Self::Action>;

    /// Applies `action` at `now` after [`Lifecycle::check_allowed`], checking its inputs.
    fn apply(
        &mut self,
        action: Self::Action,
        input: &Self::Input,
        relation: Self::Relation,
        now: DateTime<Utc>,
    ) -> Result<Applied, DomainError>;

    /// The state, by name, for messages.
    fn state_name(&self) -> &'static str;

    /// Refuses an action the state machine does not allow now, listing those it does.
    fn check_allowed(
        &self,
        action: Self::Action,
        relation: Self::Relation,
        kind: TicketKind,
    ) -> Result<(), DomainError> {
        let allowed = self.allowed_actions(relation);
        if allowed.contains(&action) {
            return Ok(());
        }
        Err(DomainError::InvalidTransition {
            detail: format!("cannot {action} a {kind} that is {}", self.state_name()),
            allowed_actions: allowed.iter().map(ToString::to_string).collect(),
        })
    }
}

/// What the kernel needs to know of every ticket type.
pub trait Ticket: Lifecycle + Clone + Serialize + Send + 'static {
    const KIND: TicketKind;
    /// Fields a requester never sees, in the ticket and in its history.
    const INTERNAL_FIELDS: &'static [&'static str];
    /// Audit actions a requester never sees in the history (besides work notes).
    const INTERNAL_ACTIONS: &'static [&'static str] = &[];

    fn id(&self) -> &str;
    fn number(&self) -> &str;
    fn version(&self) -> i64;
    /// The person the ticket is for (an incident's caller), who may see it without a staff role.
    fn requester(&self) -> Option<&str>;
    fn assignment_group(&self) -> Option<&str>;
    fn assignee(&self) -> Option<&str>;
    fn external_refs(&self) -> &[ExternalRef];
    /// The ids of the configuration items the ticket concerns.
    fn configuration_items(&self) -> &[String];
    fn created_at(&self) -> DateTime<Utc>;
    fn updated_at(&self) -> DateTime<Utc>;
    /// The priority, for types that have one (a list sort).
    fn priority(&self) -> Option<Priority> {
        None
    }
    /// Closed or canceled: nothing changes any more.
    fn is_final(&self) -> bool;
    /// The text its words are indexed from.
    fn search_text(&self) -> String;
    /// Whether `after` has other words to index than `self` (compared field by field, so a
    /// save that changes no text builds none).
    fn search_text_changed(&self, after: &Self) -> bool;
    /// The fields that differ between `self` (before) and `after`, for the audit trail.
    fn changes_to(&self, after: &Self) -> Changes;
    /// Sets what storage decides: the id and number of a new ticket, and after each save the
    /// time and the version.
    fn stamp(&mut self, stamp: Stamp);
    /// Hands the ticket to `group`, with nobody in it working it yet (an SLA escalation).
    fn hand_to_group(&mut self, group: String);
    /// What its service levels depend on; `None` for types without service levels.
    fn sla_view(&self) -> Option<crate::sla_timers::SlaView<'_>> {
        None
    }
}

/// The [`Ticket`] methods that read the fields every ticket type has under the same names
/// (`id`, `number`, `version`, `assignment_group`, `assignee`, `external_refs`,
/// `configuration_items`, `created_at`, `updated_at`, and a `state` with `is_final`), written once for every type.
macro_rules! core_fields {
    () => {
        fn id(&self) -> &str {
            &self.id
        }
        fn number(&self) -> &str {
            &self.number
        }
        fn version(&self) -> i64 {
            self.version
        }
        fn assignment_group(&self) -> Option<&str> {
            self.assignment_group.as_deref()
        }
        fn assignee(&self) -> Option<&str> {
            self.assignee.as_deref()
        }
        fn external_refs(&self) -> &[$crate::ExternalRef] {
            &self.external_refs
        }
        fn configuration_items(&self) -> &[String] {
            &self.configuration_items
        }
        fn created_at(&self) -> chrono::DateTime<chrono::Utc> {
            self.created_at
        }
        fn updated_at(&self) -> chrono::DateTime<chrono::Utc> {
            self.updated_at
        }
        fn is_final(&self) -> bool {
            self.state.is_final()
        }
        fn stamp(&mut self, stamp: $crate::ticket::Stamp) {
            if let Some(id) = stamp.id {
                self.id = id;
            }
            if let Some(number) = stamp.number {
                self.number = number;
            }
            if let Some(at) = stamp.created_at {
                self.created_at = at;
            }
            self.updated_at = stamp.updated_at;
            self.version = stamp.version;
        }
        fn hand_to_group(&mut self, group: String) {
            self.assignment_group = Some(group);
            self.assignee = None;
        }
    };
}
pub(crate) use core_fields;

/// What storage sets on a ticket when it is stored.
#[derive(Debug, Clone)]
pub struct Stamp {
    pub id: Option<String>,
    pub number: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
    pub version: i64,
}

/// Trims optional text and drops it when blank.
pub fn trimmed(value: Option<String>) -> Option<String> {
    value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

/// A required text that must not be blank once trimmed.
pub fn required_text(value: Option<&str>, field: &str, why: &str) -> Result<String, DomainError> {
    match value.map(str::trim) {
        Some(text) if !text.is_empty() => Ok(text.to_owned()),
        _ => Err(DomainError::invalid(field, why)),
    }
}

/// A ticket is worked by a person within a group: an assignee comes with the group they work it
/// in. Whether they belong to it is stored, and checked where the groups are.
pub fn assignee_has_group(group: Option<&str>, assignee: Option<&str>) -> Result<(), DomainError> {
    if assignee.is_some() && group.is_none() {
        return Err(DomainError::invalid(
            "assignee",
            "needs an assignment_group",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_assignee_comes_with_a_group() {
        assert!(assignee_has_group(None, None).is_ok());
        assert!(assignee_has_group(Some("g"), None).is_ok());
        assert!(assignee_has_group(Some("g"), Some("u")).is_ok());
        assert_eq!(
            assignee_has_group(None, Some("u")),
            Err(DomainError::invalid(
                "assignee",
                "needs an assignment_group"
            ))
        );
    }

    #[test]
    fn numbers_give_their_sequence_back() {
        for kind in TicketKind::ALL {
            for n in [1, 42, 9_999_999, 10_000_000] {
                assert_eq!(kind.sequence(&kind.number(n)), Some(n), "{kind}");
            }
        }
        assert_eq!(TicketKind::Incident.sequence("INC"), None);
        assert_eq!(TicketKind::Incident.sequence("CHG0000042"), None);
    }

    #[test]
    fn numbers_are_formatted_and_recognised() {
        assert_eq!(TicketKind::Incident.number(42), "INC0000042");
        assert_eq!(TicketKind::Problem.number(42), "PRB0000042");
        assert_eq!(TicketKind::Incident.number(10_000_000), "INC10000000");
        assert!(TicketKind::Incident.is_number("INC0000042"));
        assert!(!TicketKind::Incident.is_number("INC"));
        assert!(!TicketKind::Problem.is_number("INC0000042"));
        assert!(!TicketKind::Incident.is_number("01a2-uuid"));
    }

    #[test]
    fn standard_event_names_are_kind_dot_event() {
        for kind in TicketKind::ALL {
            assert_eq!(
                kind.event(TicketEvent::StateChanged),
                format!("{kind}.state_changed")
            );
            assert_eq!(
                kind.event(TicketEvent::NoteAdded),
                format!("{kind}.note_added")
            );
        }
    }

    #[test]
    fn kind_codes_are_distinct() {
        let mut codes: Vec<i64> = TicketKind::ALL.iter().map(|k| k.code()).collect();
        codes.dedup();
        assert_eq!(codes.len(), TicketKind::ALL.len());
    }
}
