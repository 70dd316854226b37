//! What an API token may do: scopes per route family, `family:read` for reads and
//! `family:write` for changes, always within what the token's role allows. A token without
//! scopes (created without them, or before scopes existed) is read-only: it may read what its
//! role may read and change nothing, so an integration never acts as full staff by default.

use crate::{DomainError, FieldError};

/// Every scope a token may hold.
pub const SCOPES: [&str; 19] = [
    "incidents:read",
    "incidents:write",
    "problems:read",
    "problems:write",
    "changes:read",
    "changes:write",
    "cmdb:read",
    "cmdb:write",
    "slas:read",
    "slas:write",
    "events:read",
    "audit:read",
    "directory:read",
    "directory:write",
    "alerts:read",
    "alerts:write",
    "webhooks:read",
    "webhooks:write",
    "metrics:read",
];

/// The route family of an API path; `None` for paths any credential may call (`/api/v1/me`).
pub fn family(path: &str) -> Option<&'static str> {
    let rest = path.strip_prefix("/api/v1/")?;
    let first = rest.split('/').next().unwrap_or("");
    Some(match first {
        "incidents" => "incidents",
        "problems" | "known-errors" => "problems",
        "changes"
        | "change-approval-policies"
        | "standard-change-templates"
        | "change-freeze-windows" => "changes",
        "configuration-items" | "ci-classes" | "ci-relationships" => "cmdb",
        "calendars" | "sla-policies" | "sla-timers" => "slas",
        "events" => "events",
        "audit-events" => "audit",
        "alerts" | "alert-rules" | "integrations" => "alerts",
        "webhooks" => "webhooks",
        "metrics" => "metrics",
        "me" | "auth" => return None,
        // Users, groups, routing rules, API tokens, and whatever is added later: a token
        // needs the directory scope until the table above names the new family.
        _ => "directory",
    })
}

/// The scope a request needs: reads (`GET`, `HEAD`) need `family:read`, anything else
/// `family:write`; `None` when it needs none.
pub fn required(method: &str, path: &str) -> Option<String> {
    let family = family(path)?;
    let access = if matches!(method, "GET" | "HEAD") {
        "read"
    } else {
        "write"
    };
    Some(format!("{family}:{access}"))
}

/// Whether `scopes` admit a request needing `needed`; `write` implies `read` of its family.
pub fn admits(scopes: &[String], needed: &str) -> bool {
    scopes.iter().any(|held| {
        held == needed
            || needed
                .strip_suffix(":read")
                .is_some_and(|family| held.strip_suffix(":write") == Some(family))
    })
}

/// Whether a token holding `scopes` (`None`: created without scopes) may make a request
/// needing `needed`: a scopeless token holds the read scope of every family and nothing more.
pub fn token_admits(scopes: Option<&[String]>, needed: &str) -> bool {
    match scopes {
        Some(scopes) => admits(scopes, needed),
        None => needed.ends_with(":read"),
    }
}

/// A token's scopes: known names, at least one.
pub fn validate(scopes: &[String]) -> Result<(), DomainError> {
    if scopes.is_empty() {
        return Err(DomainError::invalid(
            "scopes",
            "must list at least one scope, or be omitted for a read-only token",
        ));
    }
    let unknown: Vec<FieldError> = scopes
        .iter()
        .filter(|s| !SCOPES.contains(&s.as_str()))
        .map(|s| {
            FieldError::new(
                "scopes",
                format!("unknown scope {s}; known: {}", SCOPES.join(", ")),
            )
        })
        .collect();
    if unknown.is_empty() {
        Ok(())
    } else {
        Err(DomainError::Invalid(unknown))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_route_family_needs_its_scope() {
        assert_eq!(
            required("GET", "/api/v1/incidents/INC1").as_deref(),
            Some("incidents:read")
        );
        assert_eq!(
            required("POST", "/api/v1/incidents").as_deref(),
            Some("incidents:write")
        );
        assert_eq!(
            required("GET", "/api/v1/known-errors").as_deref(),
            Some("problems:read")
        );
        assert_eq!(
            required("POST", "/api/v1/configuration-items/reconcile").as_deref(),
            Some("cmdb:write")
        );
        assert_eq!(
            required("GET", "/api/v1/users").as_deref(),
            Some("directory:read")
        );
        assert_eq!(
            required("PUT", "/api/v1/change-freeze-windows/f1").as_deref(),
            Some("changes:write")
        );
        assert_eq!(
            required("GET", "/api/v1/changes/calendar").as_deref(),
            Some("changes:read")
        );
        assert_eq!(
            required("POST", "/api/v1/webhooks/w1/test").as_deref(),
            Some("webhooks:write")
        );
        assert_eq!(required("GET", "/api/v1/me"), None);
    }

    #[test]
    fn write_implies_read_of_its_family_only() {
        let scopes = vec!["cmdb:write".to_owned(), "events:read".to_owned()];
        assert!(admits(&scopes, "cmdb:read"));
        assert!(admits(&scopes, "cmdb:write"));
        assert!(admits(&scopes, "events:read"));
        assert!(!admits(&scopes, "events:write"));
        assert!(!admits(&scopes, "incidents:read"));
    }

    #[test]
    fn a_token_without_scopes_only_reads() {
        assert!(token_admits(None, "incidents:read"));
        assert!(token_admits(None, "directory:read"));
        assert!(!token_admits(None, "incidents:write"));
        assert!(!token_admits(None, "alerts:write"));
        let scoped = vec!["alerts:write".to_owned()];
        assert!(token_admits(Some(&scoped), "alerts:write"));
        assert!(!token_admits(Some(&scoped), "incidents:read"));
    }

    #[test]
    fn unknown_or_no_scopes_are_refused() {
        assert!(validate(&["incidents:read".into()]).is_ok());
        assert!(validate(&[]).is_err());
        assert!(validate(&["incidents:delete".into()]).is_err());
    }
}
