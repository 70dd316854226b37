//! Who acts in the service: roles and the references that tie our records to other systems.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{DomainError, FieldError};

/// The roles of DESIGN.md section 4. `admin` may do everything.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Admin,
    Agent,
    Requester,
    ChangeManager,
    ProblemManager,
    Integration,
}

impl Role {
    pub const ALL: [Role; 6] = [
        Role::Admin,
        Role::Agent,
        Role::Requester,
        Role::ChangeManager,
        Role::ProblemManager,
        Role::Integration,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Agent => "agent",
            Role::Requester => "requester",
            Role::ChangeManager => "change_manager",
            Role::ProblemManager => "problem_manager",
            Role::Integration => "integration",
        }
    }

    /// The list clients see in a validation message.
    pub fn names() -> String {
        Self::ALL.map(Role::as_str).join(", ")
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = DomainError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|role| role.as_str() == s)
            .ok_or_else(|| {
                DomainError::invalid("role", format!("must be one of {}", Self::names()))
            })
    }
}

/// What kind of actor performs a change: a signed-in user, an API token (a machine), or the
/// service itself (bootstrap, background jobs). Users and API tokens are both actors wherever
/// a change is attributed: the audit trail, `created_by`, note authors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ActorKind {
    User,
    ApiToken,
    System,
}

impl ActorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ActorKind::User => "user",
            ActorKind::ApiToken => "api_token",
            ActorKind::System => "system",
        }
    }
}

impl FromStr for ActorKind {
    type Err = DomainError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [ActorKind::User, ActorKind::ApiToken, ActorKind::System]
            .into_iter()
            .find(|kind| kind.as_str() == s)
            .ok_or_else(|| DomainError::invalid("actor.kind", "must be user, api_token or system"))
    }
}

/// Who performed a change, as the audit trail and `created_by` name it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Actor {
    pub kind: ActorKind,
    /// The user id or the API token id; `null` for the service itself.
    pub id: Option<String>,
    /// The username, `api-token:<token name>`, or `system:<job>`, as it was when acting.
    pub username: String,
}

impl Actor {
    pub fn user(id: impl Into<String>, username: impl Into<String>) -> Self {
        Self {
            kind: ActorKind::User,
            id: Some(id.into()),
            username: username.into(),
        }
    }

    /// An API token, named `api-token:<name>` so that it never reads as a username (usernames
    /// hold no `:`).
    pub fn api_token(id: impl Into<String>, name: &str) -> Self {
        Self {
            kind: ActorKind::ApiToken,
            id: Some(id.into()),
            username: format!("api-token:{name}"),
        }
    }

    pub fn system(job: &str) -> Self {
        Self {
            kind: ActorKind::System,
            id: None,
            username: format!("system:{job}"),
        }
    }
}

/// Whether a caller holding `held` may act where `allowed` are required. Admin always may.
pub fn role_permits(held: &[Role], allowed: &[Role]) -> bool {
    held.iter()
        .any(|role| *role == Role::Admin || allowed.contains(role))
}

/// The identifier of a record in another system (CRM, ERP, HR, monitoring).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExternalRef {
    /// The other system's name, e.g. `crm`, `erp`, `hr`.
    // Its pattern comes from `MAX_SYSTEM_LEN` (the contract's `DomainRules`).
    #[schema(example = "crm")]
    pub system: String,
    /// The record's identifier in that system, without surrounding spaces.
    // Its bounds come from `MAX_ID_LEN` (the contract's `DomainRules`).
    #[schema(example = "C-1042")]
    pub id: String,
}

impl ExternalRef {
    pub const MAX_SYSTEM_LEN: usize = 64;
    pub const MAX_ID_LEN: usize = 255;
    pub const MAX_PER_RECORD: usize = 32;

    /// Checks a record's whole list: each entry well formed, at most one per system.
    pub fn validate_list(refs: &[ExternalRef], field: &str) -> Result<(), DomainError> {
        let mut errors = Vec::new();
        if refs.len() > Self::MAX_PER_RECORD {
            errors.push(FieldError::new(
                field,
                format!("at most {} references", Self::MAX_PER_RECORD),
            ));
        }
        for (index, reference) in refs.iter().enumerate() {
            let system_ok = !reference.system.is_empty()
                && reference.system.len() <= Self::MAX_SYSTEM_LEN
                && reference
                    .system
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
            if !system_ok {
                errors.push(FieldError::new(
                    format!("{field}[{index}].system"),
                    format!(
                        "must be 1 to {} characters of letters, digits, '_', '-' or '.'",
                        Self::MAX_SYSTEM_LEN
                    ),
                ));
            }
            let id = reference.id.trim();
            if id.is_empty()
                || reference.id.chars().count() > Self::MAX_ID_LEN
                || id.len() != reference.id.len()
            {
                errors.push(FieldError::new(
                    format!("{field}[{index}].id"),
                    format!(
                        "must be 1 to {} characters without surrounding spaces",
                        Self::MAX_ID_LEN
                    ),
                ));
            }
            if refs[..index].iter().any(|r| r.system == reference.system) {
                errors.push(FieldError::new(
                    format!("{field}[{index}].system"),
                    "only one reference per system",
                ));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(DomainError::Invalid(errors))
        }
    }
}

/// A person or service account that signs in. Never carries its password hash.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct User {
    pub id: String,
    pub username: String,
    pub email: Option<String>,
    pub display_name: String,
    pub roles: Vec<Role>,
    /// Deactivated users cannot sign in and their tokens stop working at once.
    pub active: bool,
    pub external_refs: Vec<ExternalRef>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub version: i64,
}

/// An assignment group (team) that tickets are routed to.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Group {
    pub id: String,
    pub name: String,
    pub description: String,
    pub email: Option<String>,
    pub external_refs: Vec<ExternalRef>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub version: i64,
}

/// A machine credential. The secret itself is shown once at creation and never stored.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ApiToken {
    pub id: String,
    pub name: String,
    pub role: Role,
    /// The user or API token that created the token; `null` if unknown.
    pub created_by: Option<Actor>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    /// What the token may do within its role (`incidents:read`, `cmdb:write`, ...); `null` for
    /// a read-only token: every read its role allows and no change.
    pub scopes: Option<Vec<String>>,
    /// When the token was last used, to the minute; `null` if never.
    pub last_used_at: Option<DateTime<Utc>>,
}

/// Usernames are login names: short, lowercase-insensitive ASCII, no spaces.
pub fn validate_username(username: &str) -> Result<(), DomainError> {
    let ok = (2..=64).contains(&username.len())
        && username
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '@'));
    if ok {
        Ok(())
    } else {
        Err(DomainError::invalid(
            "username",
            "must be 2 to 64 characters of letters, digits, '_', '-', '.' or '@'",
        ))
    }
}

/// A password policy that stops the obvious mistakes without dictating composition rules.
pub fn validate_password(password: &str) -> Result<(), DomainError> {
    let length = password.chars().count();
    if !(12..=256).contains(&length) {
        return Err(DomainError::invalid(
            "password",
            "must be 12 to 256 characters long",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_round_trip_through_their_names() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>().unwrap(), role);
        }
        assert!("root".parse::<Role>().is_err());
    }

    #[test]
    fn admin_is_permitted_everything_others_only_what_is_listed() {
        assert!(role_permits(&[Role::Admin], &[Role::Agent]));
        assert!(role_permits(
            &[Role::Requester, Role::Agent],
            &[Role::Agent]
        ));
        assert!(!role_permits(&[Role::Requester], &[Role::Agent]));
        assert!(!role_permits(&[], &[Role::Agent]));
    }

    #[test]
    fn external_refs_are_unique_per_system_and_well_formed() {
        let ok = vec![
            ExternalRef {
                system: "crm".into(),
                id: "C-1".into(),
            },
            ExternalRef {
                system: "erp".into(),
                id: "42".into(),
            },
        ];
        assert!(ExternalRef::validate_list(&ok, "external_refs").is_ok());

        let duplicate = vec![
            ExternalRef {
                system: "crm".into(),
                id: "C-1".into(),
            },
            ExternalRef {
                system: "crm".into(),
                id: "C-2".into(),
            },
        ];
        let Err(DomainError::Invalid(errors)) =
            ExternalRef::validate_list(&duplicate, "external_refs")
        else {
            panic!("duplicate system accepted")
        };
        assert_eq!(errors[0].field, "external_refs[1].system");

        let blank = vec![ExternalRef {
            system: "crm sys".into(),
            id: " ".into(),
        }];
        let Err(DomainError::Invalid(errors)) = ExternalRef::validate_list(&blank, "external_refs")
        else {
            panic!("malformed reference accepted")
        };
        assert_eq!(errors.len(), 2);
    }

    #[test]
    fn usernames_and_passwords_follow_the_policy() {
        assert!(validate_username("alice.smith").is_ok());
        assert!(validate_username("a").is_err());
        assert!(validate_username("alice smith").is_err());
        assert!(validate_password("correct horse battery").is_ok());
        assert!(validate_password("short").is_err());
    }
}
