//! Configuration management: CI classes and their attribute schemas, configuration items,
//! typed relationships, impact traversal and reconciliation of discovered data.

pub mod class;
pub mod graph;
pub mod impact;
pub mod item;
pub mod reconcile;

pub use class::{AttributeDef, AttributeType, CiClass, ClassSet, IdentificationRule};
pub use item::{
    AttributeSource, CiStatus, ConfigurationItem, Criticality, Environment, RelationshipType,
};
