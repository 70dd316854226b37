//! Configuration items and the relationships between them.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::{DomainError, ExternalRef};

/// Snake-case enumerations with their list of names, parsed with a 422 naming `field`.
macro_rules! named_enum {
    ($(#[$meta:meta])* $name:ident, $field:literal { $($variant:ident => $text:literal),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant),* }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),*];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),* }
            }

            pub fn names() -> String {
                Self::ALL.iter().map(|v| v.as_str()).collect::<Vec<_>>().join(", ")
            }

            /// The stored text read back; anything else is a corrupt row, reported loudly.
            pub fn parse(text: &str) -> Result<Self, DomainError> {
                Self::ALL
                    .iter()
                    .copied()
                    .find(|v| v.as_str() == text)
                    .ok_or_else(|| DomainError::invalid($field, format!("must be one of {}", Self::names())))
            }
        }

        impl std::str::FromStr for $name {
            type Err = DomainError;
            fn from_str(text: &str) -> Result<Self, DomainError> {
                Self::parse(text)
            }
        }
    };
}

named_enum!(
    /// The lifecycle status of an item; `retired` keeps the item and its history.
    CiStatus, "status" {
        Planned => "planned",
        Ordered => "ordered",
        InStock => "in_stock",
        Installed => "installed",
        Operational => "operational",
        Maintenance => "maintenance",
        Retired => "retired",
    }
);

named_enum!(Environment, "environment" {
    Production => "production",
    Staging => "staging",
    Test => "test",
    Development => "development",
});

named_enum!(Criticality, "criticality" {
    Critical => "critical",
    High => "high",
    Medium => "medium",
    Low => "low",
});

named_enum!(
    /// A directed relationship, read from its source (`app depends_on db`); its inverse is
    /// how the target reads it (`db required_by app`).
    RelationshipType, "type" {
        DependsOn => "depends_on",
        RunsOn => "runs_on",
        HostedOn => "hosted_on",
        ConnectedTo => "connected_to",
        MemberOf => "member_of",
        Uses => "uses",
    }
);

impl RelationshipType {
    /// The name of the relationship as its target reads it.
    pub fn inverse(self) -> &'static str {
        match self {
            RelationshipType::DependsOn => "required_by",
            RelationshipType::RunsOn => "runs",
            RelationshipType::HostedOn => "hosts",
            RelationshipType::ConnectedTo => "connected_from",
            RelationshipType::MemberOf => "has_member",
            RelationshipType::Uses => "used_by",
        }
    }
}

/// Which source last set an attribute, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AttributeSource {
    #[schema(example = "discovery")]
    pub source: String,
    pub updated_at: DateTime<Utc>,
}

/// The source recorded for attributes written through the item endpoints by a person or tool.
pub const MANUAL_SOURCE: &str = "manual";

/// A configuration item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ConfigurationItem {
    pub id: String,
    #[schema(example = "web01")]
    pub name: String,
    #[schema(example = "server")]
    pub class: String,
    pub status: CiStatus,
    pub environment: Option<Environment>,
    pub criticality: Option<Criticality>,
    /// The id of the group that owns the item.
    pub owner_group: Option<String>,
    #[schema(value_type = Object)]
    pub attributes: Map<String, Value>,
    pub attribute_sources: BTreeMap<String, AttributeSource>,
    pub external_refs: Vec<ExternalRef>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub version: i64,
}

/// Checks an item's name: 1 to 200 characters, not blank.
/// The longest item name, in characters (after trimming).
pub const MAX_NAME_CHARS: usize = 200;

pub fn validate_item_name(name: &str) -> Result<String, DomainError> {
    let trimmed = name.trim();
    if trimmed.is_empty() || trimmed.chars().count() > MAX_NAME_CHARS {
        return Err(DomainError::invalid(
            "name",
            "must be 1 to 200 characters, not blank",
        ));
    }
    Ok(trimmed.to_owned())
}

/// A relationship as stored: `source type target`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Relationship {
    pub id: String,
    pub source_id: String,
    #[serde(rename = "type")]
    pub rel_type: RelationshipType,
    /// How the target reads it (`hosts` for `hosted_on`).
    pub inverse: &'static str,
    pub target_id: String,
    pub created_at: DateTime<Utc>,
}

/// The other end of a relationship, as a list shows it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct RelatedItem {
    pub id: String,
    pub name: String,
    pub class: String,
    pub status: CiStatus,
}

/// A relationship read from one item: `name` is the type or its inverse.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ItemRelationship {
    pub id: String,
    #[serde(rename = "type")]
    pub rel_type: RelationshipType,
    /// The relationship as this item reads it: the type when outgoing, its inverse when incoming.
    #[schema(example = "hosts")]
    pub name: &'static str,
    /// `outgoing` (this item is the source) or `incoming`.
    #[schema(example = "outgoing")]
    pub direction: &'static str,
    pub source_id: String,
    pub target_id: String,
    pub related: RelatedItem,
    pub created_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enumerations_round_trip_and_name_their_field() {
        for status in CiStatus::ALL {
            assert_eq!(CiStatus::parse(status.as_str()).unwrap(), *status);
        }
        let DomainError::Invalid(errors) = "gone".parse::<CiStatus>().unwrap_err() else {
            panic!()
        };
        assert_eq!(errors[0].field, "status");
        assert_eq!(RelationshipType::HostedOn.inverse(), "hosts");
        assert!(validate_item_name("  ").is_err());
        assert_eq!(validate_item_name(" web01 ").unwrap(), "web01");
    }
}
