//! CI classes: a parent, an attribute schema inherited by subclasses, identification rules.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::{DomainError, FieldError};

/// The type of an attribute's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AttributeType {
    String,
    Integer,
    Number,
    Boolean,
    /// `YYYY-MM-DD`.
    Date,
    Enum,
}

/// The longest string attribute value accepted.
pub const MAX_STRING_LEN: usize = 1000;
/// The most attributes a class defines itself.
pub const MAX_ATTRIBUTES: usize = 200;
/// The most values an enum attribute lists, and the longest value.
pub const MAX_ENUM_VALUES: usize = 200;
pub const MAX_ENUM_VALUE_LEN: usize = 100;
/// The most identification rules of a class, and the most attributes in one.
pub const MAX_RULES: usize = 20;
pub const MAX_RULE_ATTRIBUTES: usize = 10;

/// One attribute of a class schema.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AttributeDef {
    #[schema(example = "hostname")]
    pub name: String,
    #[serde(rename = "type")]
    pub attr_type: AttributeType,
    #[serde(default)]
    pub required: bool,
    /// The allowed values of an `enum` attribute (1 or more); only `enum` attributes list
    /// them.
    #[serde(default, rename = "enum", skip_serializing_if = "Vec::is_empty")]
    pub enum_values: Vec<String>,
    /// Identifying attributes may appear in identification rules and are indexed for
    /// `attr.<name>=` filters.
    #[serde(default)]
    pub identifying: bool,
    /// Filled in on writes that leave a required attribute out: a value of the attribute's
    /// type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
}

/// An ordered set of identifying attributes that together identify an item.
pub type IdentificationRule = Vec<String>;

/// A class as stored: its own attributes only; [`ClassSet`] resolves inheritance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CiClass {
    #[schema(example = "linux_server")]
    pub name: String,
    pub parent: Option<String>,
    pub description: String,
    pub builtin: bool,
    /// The class's own attributes (inherited ones are listed under `effective_attributes`).
    pub attributes: Vec<AttributeDef>,
    /// Ordered: the first rule whose attributes an item carries identifies it.
    #[schema(example = json!([["serial_number"], ["hostname", "dns_domain"]]))]
    pub identification_rules: Vec<IdentificationRule>,
    /// Sources in decreasing priority, for reconciliation; empty means inherited (or equal).
    pub source_precedence: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub version: i64,
}

/// What `validate_name` accepts, for the contract.
pub const NAME_PATTERN: &str = "^[a-z][a-z0-9_]{0,63}$";

pub fn validate_name(name: &str, field: &str) -> Result<(), FieldError> {
    let ok = (1..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(FieldError::new(
            field,
            "must be 1 to 64 characters of lowercase letters, digits and '_', starting with a letter",
        ))
    }
}

fn check_value(def: &AttributeDef, value: &Value) -> Result<(), String> {
    let ok = match def.attr_type {
        AttributeType::String => match value.as_str() {
            Some(text) if text.chars().count() > MAX_STRING_LEN => {
                return Err(format!("must be at most {MAX_STRING_LEN} characters"))
            }
            Some(_) => true,
            None => false,
        },
        AttributeType::Integer => value.is_i64(),
        AttributeType::Number => value.as_f64().is_some_and(f64::is_finite),
        AttributeType::Boolean => value.is_boolean(),
        AttributeType::Date => value
            .as_str()
            .is_some_and(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").is_ok()),
        AttributeType::Enum => value
            .as_str()
            .is_some_and(|v| def.enum_values.iter().any(|e| e == v)),
    };
    if ok {
        return Ok(());
    }
    Err(match def.attr_type {
        AttributeType::String => "must be a string".into(),
        AttributeType::Integer => "must be an integer".into(),
        AttributeType::Number => "must be a number".into(),
        AttributeType::Boolean => "must be true or false".into(),
        AttributeType::Date => "must be a date (YYYY-MM-DD)".into(),
        AttributeType::Enum => format!("must be one of {}", def.enum_values.join(", ")),
    })
}

/// Checks one class definition (names, types, enum values, defaults, rules over the effective
/// attributes, which include the inherited ones). What the body gets wrong on its own is
/// invalid (422); what clashes with the stored ancestors' schema (an attribute the parent
/// already has, a rule over an inherited attribute that does not identify) is a conflict with
/// stored state (409), asked only of a body that is valid on its own.
pub fn validate_definition(
    own: &[AttributeDef],
    inherited: &[AttributeDef],
    rules: &[IdentificationRule],
) -> Result<(), DomainError> {
    let mut errors = Vec::new();
    let mut clashes = Vec::new();
    let mut seen = HashSet::new();
    if own.len() > MAX_ATTRIBUTES {
        errors.push(FieldError::new(
            "attributes",
            format!("at most {MAX_ATTRIBUTES} attributes"),
        ));
    }
    for (index, def) in own.iter().enumerate() {
        let field = |part: &str| format!("attributes[{index}].{part}");
        if let Err(e) = validate_name(&def.name, &field("name")) {
            errors.push(e);
        }
        if !seen.insert(def.name.as_str()) {
            errors.push(FieldError::new(field("name"), "is defined twice"));
        }
        if inherited.iter().any(|i| i.name == def.name) {
            clashes.push(format!(
                "{}: {} is inherited from the parent class",
                field("name"),
                def.name
            ));
        }
        match def.attr_type {
            AttributeType::Enum => {
                if def.enum_values.is_empty() || def.enum_values.len() > MAX_ENUM_VALUES {
                    errors.push(FieldError::new(
                        field("enum"),
                        format!("must list 1 to {MAX_ENUM_VALUES} values"),
                    ));
                }
                if def
                    .enum_values
                    .iter()
                    .any(|v| v.trim().is_empty() || v.chars().count() > MAX_ENUM_VALUE_LEN)
                {
                    errors.push(FieldError::new(
                        field("enum"),
                        format!("values must be 1 to {MAX_ENUM_VALUE_LEN} characters"),
                    ));
                }
            }
            _ if !def.enum_values.is_empty() => errors.push(FieldError::new(
                field("enum"),
                "is only allowed for attributes of type enum",
            )),
            _ => {}
        }
        if let Some(default) = &def.default {
            if let Err(message) = check_value(def, default) {
                errors.push(FieldError::new(field("default"), message));
            }
        }
    }
    if rules.len() > MAX_RULES {
        errors.push(FieldError::new(
            "identification_rules",
            format!("at most {MAX_RULES} rules"),
        ));
    }
    for (index, rule) in rules.iter().enumerate() {
        let field = format!("identification_rules[{index}]");
        if rule.is_empty() || rule.len() > MAX_RULE_ATTRIBUTES {
            errors.push(FieldError::new(
                &field,
                format!("must name 1 to {MAX_RULE_ATTRIBUTES} attributes"),
            ));
        }
        let mut in_rule = HashSet::new();
        for name in rule {
            if !in_rule.insert(name) {
                errors.push(FieldError::new(&field, format!("names {name} twice")));
                continue;
            }
            match (
                own.iter().find(|d| &d.name == name),
                inherited.iter().find(|d| &d.name == name),
            ) {
                (None, None) => errors.push(FieldError::new(
                    &field,
                    format!("{name} is not an attribute of the class"),
                )),
                (Some(def), _) if !def.identifying => errors.push(FieldError::new(
                    &field,
                    format!("{name} is not an identifying attribute"),
                )),
                (None, Some(def)) if !def.identifying => clashes.push(format!(
                    "{field}: {name} is inherited from the parent class, which does not identify by it"
                )),
                _ => {}
            }
        }
    }
    if !errors.is_empty() {
        Err(DomainError::Invalid(errors))
    } else if !clashes.is_empty() {
        Err(DomainError::Conflict(clashes.join("; ")))
    } else {
        Ok(())
    }
}

/// What a class in use may not do to its schema: lose or retype an attribute, drop enum
/// values, or gain a required attribute without a default (existing items lack it). The
/// stored items are what the change conflicts with: 409, each refusal named.
pub fn check_schema_change(
    before: &[AttributeDef],
    after: &[AttributeDef],
) -> Result<(), DomainError> {
    let mut errors = Vec::new();
    for old in before {
        match after.iter().position(|a| a.name == old.name) {
            None => errors.push(FieldError::new(
                "attributes",
                format!("{} cannot be removed while the class has items", old.name),
            )),
            Some(index) => {
                let new = &after[index];
                if new.attr_type != old.attr_type {
                    errors.push(FieldError::new(
                        format!("attributes[{index}].type"),
                        format!("{} cannot change type while the class has items", old.name),
                    ));
                } else if old.enum_values.iter().any(|v| !new.enum_values.contains(v)) {
                    errors.push(FieldError::new(
                        format!("attributes[{index}].enum"),
                        format!(
                            "{} cannot lose enum values while the class has items",
                            old.name
                        ),
                    ));
                }
                if new.identifying != old.identifying {
                    errors.push(FieldError::new(
                        format!("attributes[{index}].identifying"),
                        format!(
                            "{} cannot change identifying while the class has items",
                            old.name
                        ),
                    ));
                }
                if new.required && !old.required && new.default.is_none() {
                    errors.push(FieldError::new(
                        format!("attributes[{index}].default"),
                        format!(
                            "{} becomes required while the class has items: give a default",
                            old.name
                        ),
                    ));
                }
            }
        }
    }
    for (index, new) in after.iter().enumerate() {
        if new.required && new.default.is_none() && !before.iter().any(|b| b.name == new.name) {
            errors.push(FieldError::new(
                format!("attributes[{index}].default"),
                format!(
                    "{} is a new required attribute of a class with items: give a default",
                    new.name
                ),
            ));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        let refusals: Vec<String> = errors
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect();
        Err(DomainError::Conflict(refusals.join("; ")))
    }
}

/// Every class, with inheritance resolved on demand.
#[derive(Debug, Clone, Default)]
pub struct ClassSet {
    classes: BTreeMap<String, CiClass>,
}

impl ClassSet {
    pub fn new(classes: impl IntoIterator<Item = CiClass>) -> Self {
        Self {
            classes: classes.into_iter().map(|c| (c.name.clone(), c)).collect(),
        }
    }

    pub fn get(&self, name: &str) -> Option<&CiClass> {
        self.classes.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &CiClass> {
        self.classes.values()
    }

    /// `name` and its ancestors, nearest first (stops at a cycle, which writes never make).
    pub fn lineage(&self, name: &str) -> Vec<&CiClass> {
        let mut chain: Vec<&CiClass> = Vec::new();
        let mut next = self.classes.get(name);
        while let Some(class) = next {
            if chain.iter().any(|c| c.name == class.name) {
                break;
            }
            chain.push(class);
            next = class.parent.as_deref().and_then(|p| self.classes.get(p));
        }
        chain
    }

    /// Whether `name` is `ancestor` or one of its descendants.
    pub fn is_a(&self, name: &str, ancestor: &str) -> bool {
        self.lineage(name).iter().any(|c| c.name == ancestor)
    }

    /// `name` and every class below it.
    pub fn with_descendants(&self, name: &str) -> Vec<String> {
        self.classes
            .keys()
            .filter(|candidate| self.is_a(candidate, name))
            .cloned()
            .collect()
    }

    /// The attributes of `name`: inherited ones first (root first), then its own.
    pub fn effective_attributes(&self, name: &str) -> Vec<AttributeDef> {
        self.lineage(name)
            .iter()
            .rev()
            .flat_map(|c| c.attributes.iter().cloned())
            .collect()
    }

    /// The class's own rules, or else its nearest ancestor's.
    pub fn identification_rules(&self, name: &str) -> Vec<IdentificationRule> {
        self.lineage(name)
            .iter()
            .find(|c| !c.identification_rules.is_empty())
            .map(|c| c.identification_rules.clone())
            .unwrap_or_default()
    }

    /// The class's own source precedence, or else its nearest ancestor's.
    pub fn source_precedence(&self, name: &str) -> Vec<String> {
        self.lineage(name)
            .iter()
            .find(|c| !c.source_precedence.is_empty())
            .map(|c| c.source_precedence.clone())
            .unwrap_or_default()
    }

    /// Names of every identifying attribute of any class.
    pub fn identifying_names(&self) -> HashSet<String> {
        self.classes
            .values()
            .flat_map(|c| c.attributes.iter())
            .filter(|a| a.identifying)
            .map(|a| a.name.clone())
            .collect()
    }

    /// Checks `attributes` against the schema of `class`: unknown names, types and required
    /// attributes. `null` removes an attribute; missing required ones take their default.
    /// Errors name `attributes.<name>`.
    pub fn validate_attributes(
        &self,
        class: &str,
        attributes: &Map<String, Value>,
    ) -> Result<Map<String, Value>, Vec<FieldError>> {
        let schema = self.effective_attributes(class);
        let mut errors = Vec::new();
        let mut valid = Map::new();
        for (name, value) in attributes {
            let field = format!("attributes.{name}");
            match schema.iter().find(|d| &d.name == name) {
                None => errors.push(FieldError::new(
                    field,
                    format!("is not an attribute of class {class}"),
                )),
                Some(_) if value.is_null() => {}
                Some(def) => match check_value(def, value) {
                    Ok(()) => {
                        valid.insert(name.clone(), value.clone());
                    }
                    Err(message) => errors.push(FieldError::new(field, message)),
                },
            }
        }
        for def in schema.iter().filter(|d| d.required) {
            if !valid.contains_key(&def.name) {
                match &def.default {
                    Some(default) => {
                        valid.insert(def.name.clone(), default.clone());
                    }
                    None if !errors
                        .iter()
                        .any(|e| e.field == format!("attributes.{}", def.name)) =>
                    {
                        errors.push(FieldError::new(
                            format!("attributes.{}", def.name),
                            format!("is required by class {class}"),
                        ))
                    }
                    None => {}
                }
            }
        }
        if errors.is_empty() {
            Ok(valid)
        } else {
            Err(errors)
        }
    }

    /// The indexed `(attribute, value)` pairs of an item of `class`: its identifying attributes.
    pub fn identifiers(
        &self,
        class: &str,
        attributes: &Map<String, Value>,
    ) -> Vec<(String, String)> {
        self.effective_attributes(class)
            .iter()
            .filter(|d| d.identifying)
            .filter_map(|d| {
                attributes
                    .get(&d.name)
                    .map(|v| (d.name.clone(), identifier_value(v)))
            })
            .collect()
    }
}

/// The text an attribute value is indexed and matched by.
pub fn identifier_value(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    pub fn attr(name: &str, attr_type: AttributeType) -> AttributeDef {
        AttributeDef {
            name: name.into(),
            attr_type,
            required: false,
            enum_values: Vec::new(),
            identifying: false,
            default: None,
        }
    }

    pub fn class(name: &str, parent: Option<&str>, attributes: Vec<AttributeDef>) -> CiClass {
        CiClass {
            name: name.into(),
            parent: parent.map(Into::into),
            description: String::new(),
            builtin: false,
            attributes,
            identification_rules: Vec::new(),
            source_precedence: Vec::new(),
            created_at: DateTime::<Utc>::MIN_UTC,
            updated_at: DateTime::<Utc>::MIN_UTC,
            version: 1,
        }
    }

    fn set() -> ClassSet {
        let mut server = class(
            "server",
            None,
            vec![
                AttributeDef {
                    identifying: true,
                    ..attr("serial_number", AttributeType::String)
                },
                attr("cpu_count", AttributeType::Integer),
            ],
        );
        server.identification_rules = vec![vec!["serial_number".into()]];
        let linux = class(
            "linux_server",
            Some("server"),
            vec![
                AttributeDef {
                    required: true,
                    ..attr("kernel", AttributeType::String)
                },
                AttributeDef {
                    enum_values: vec!["x86_64".into(), "arm64".into()],
                    ..attr("arch", AttributeType::Enum)
                },
                attr("installed_on", AttributeType::Date),
            ],
        );
        ClassSet::new([server, linux])
    }

    #[test]
    fn subclasses_inherit_schema_and_rules() {
        let set = set();
        let names: Vec<_> = set
            .effective_attributes("linux_server")
            .into_iter()
            .map(|a| a.name)
            .collect();
        assert_eq!(
            names,
            [
                "serial_number",
                "cpu_count",
                "kernel",
                "arch",
                "installed_on"
            ]
        );
        assert_eq!(
            set.identification_rules("linux_server"),
            vec![vec!["serial_number".to_owned()]]
        );
        assert!(set.is_a("linux_server", "server"));
        assert!(!set.is_a("server", "linux_server"));
        assert_eq!(
            set.with_descendants("server"),
            ["linux_server".to_owned(), "server".to_owned()]
        );
    }

    #[test]
    fn attribute_errors_name_the_attribute() {
        let set = set();
        let attrs = json!({"cpu_count": "four", "arch": "sparc", "colour": "red",
                           "installed_on": "2026-13-01"});
        let errors = set
            .validate_attributes("linux_server", attrs.as_object().unwrap())
            .unwrap_err();
        let mut fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        fields.sort();
        assert_eq!(
            fields,
            [
                "attributes.arch",
                "attributes.colour",
                "attributes.cpu_count",
                "attributes.installed_on",
                "attributes.kernel"
            ]
        );
        let ok = json!({"cpu_count": 4, "kernel": "6.1", "serial_number": null});
        let valid = set
            .validate_attributes("linux_server", ok.as_object().unwrap())
            .unwrap();
        assert_eq!(
            Value::Object(valid),
            json!({"cpu_count": 4, "kernel": "6.1"})
        );
    }

    #[test]
    fn definitions_are_checked() {
        let inherited = set().effective_attributes("server");
        let own = vec![
            attr("serial_number", AttributeType::String),
            attr("colour", AttributeType::Enum),
            AttributeDef {
                default: Some(json!("x")),
                ..attr("count", AttributeType::Integer)
            },
        ];
        let rules = vec![vec!["cpu_count".to_owned()], vec!["nothing".to_owned()]];
        let DomainError::Invalid(errors) =
            validate_definition(&own, &inherited, &rules).unwrap_err()
        else {
            panic!()
        };
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "attributes[1].enum",
                "attributes[2].default",
                "identification_rules[1]"
            ]
        );
        // Valid on its own, the body still clashes with the parent's stored schema: a
        // conflict naming both clashes.
        let own = vec![attr("serial_number", AttributeType::String)];
        let rules = vec![vec!["cpu_count".to_owned()]];
        let DomainError::Conflict(detail) =
            validate_definition(&own, &inherited, &rules).unwrap_err()
        else {
            panic!()
        };
        assert!(detail.contains("attributes[0].name"), "{detail}");
        assert!(detail.contains("identification_rules[0]"), "{detail}");
    }

    #[test]
    fn classes_in_use_keep_their_attributes() {
        let before = vec![attr("a", AttributeType::String)];
        let retyped = vec![attr("a", AttributeType::Integer)];
        assert!(check_schema_change(&before, &retyped).is_err());
        assert!(check_schema_change(&before, &[]).is_err());
        let required = AttributeDef {
            required: true,
            ..attr("b", AttributeType::String)
        };
        let with_required = vec![before[0].clone(), required.clone()];
        assert!(check_schema_change(&before, &with_required).is_err());
        let with_default = vec![
            before[0].clone(),
            AttributeDef {
                default: Some(json!("x")),
                ..required
            },
        ];
        assert!(check_schema_change(&before, &with_default).is_ok());
    }
}
