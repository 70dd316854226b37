//! The field-level difference an audit entry records: `{"field": [old, new]}`.

use serde::Serialize;
use serde_json::{Map, Value};

/// Collects the fields a mutation changed, with their old and new values.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Changes(Map<String, Value>);

impl Changes {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `field` only when the value really changed.
    pub fn field<T: Serialize + PartialEq>(&mut self, field: &str, old: &T, new: &T) -> &mut Self {
        if old != new {
            self.0.insert(
                field.to_owned(),
                Value::Array(vec![to_value(old), to_value(new)]),
            );
        }
        self
    }

    /// Records every field of a newly created record as `[null, value]`.
    pub fn created(value: &impl Serialize) -> Self {
        let mut changes = Self::new();
        if let Value::Object(fields) = to_value(value) {
            for (name, value) in fields {
                if !value.is_null() {
                    changes
                        .0
                        .insert(name, Value::Array(vec![Value::Null, value]));
                }
            }
        }
        changes
    }

    /// Records a value that is never shown, such as a password: only that it changed.
    pub fn redacted(&mut self, field: &str) -> &mut Self {
        self.0.insert(
            field.to_owned(),
            Value::Array(vec![Value::from("[redacted]"), Value::from("[redacted]")]),
        );
        self
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn into_value(self) -> Value {
        Value::Object(self.0)
    }
}

fn to_value(value: &impl Serialize) -> Value {
    // Serialising plain data values cannot fail; a failure would be a bug in a Serialize impl.
    serde_json::to_value(value).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_changed_fields_are_recorded() {
        let mut changes = Changes::new();
        changes
            .field("email", &"a@x", &"b@x")
            .field("active", &true, &true);
        assert_eq!(changes.into_value(), json!({"email": ["a@x", "b@x"]}));
    }

    #[test]
    fn a_creation_lists_every_set_field() {
        let changes = Changes::created(&json!({"name": "Desk", "email": null}));
        assert_eq!(changes.into_value(), json!({"name": [null, "Desk"]}));
    }

    #[test]
    fn redacted_fields_never_carry_the_value() {
        let mut changes = Changes::new();
        changes.redacted("password");
        assert_eq!(
            changes.into_value(),
            json!({"password": ["[redacted]", "[redacted]"]})
        );
    }
}
