//! The OpenAPI contract, generated from the handlers and types themselves.

use utoipa::OpenApi;

use crate::contract::{DomainRules, NoNulInText, OpenFlattenedParts, RouteKinds, UnusedSchemas};
use crate::examples::RequestExamples;

use crate::routes::cmdb::{
    classes as ci_classes, items as ci_items, relationships as ci_relationships,
    tickets as ci_tickets,
};
use crate::routes::{
    alerts, assignment_rules, auth, change_config, changes, feed, groups, health, incidents,
    problems, sla, sla_timers, users, webhooks,
};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "ITSM API",
        description = "IT service management: incidents, problems, changes, CMDB, service catalog and \
                       service levels as a REST/JSON API. Errors are RFC 9457 problem documents; lists use \
                       cursor pagination; mutable resources carry an ETag for If-Match; POST accepts an \
                       Idempotency-Key.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(
        health::healthz, health::readyz, health::metrics,
        auth::issue_token, auth::me, auth::create_api_token, auth::list_api_tokens, auth::revoke_api_token,
        auth::logout, auth::change_my_password,
        users::create_user, users::list_users, users::get_user, users::update_user, users::upsert_user_by_external_ref,
        groups::create_group, groups::list_groups, groups::get_group, groups::update_group, groups::upsert_group_by_external_ref,
        groups::list_members, groups::add_member, groups::remove_member,
        feed::list_audit_events, feed::list_events,
        incidents::create_incident, incidents::upsert_incident_by_external_ref, incidents::list_incidents, incidents::get_incident, incidents::update_incident,
        incidents::transition_incident, incidents::add_note, incidents::list_notes, incidents::history, incidents::slas,
        problems::create_problem, problems::upsert_problem_by_external_ref, problems::list_problems, problems::get_problem, problems::update_problem,
        problems::transition_problem, problems::link_incidents, problems::list_linked_incidents,
        problems::unlink_incident, problems::add_note, problems::list_notes, problems::history, problems::slas,
        problems::create_from_incident, problems::search_known_errors, problems::matching_known_errors,
        changes::create_change, changes::list_changes, changes::calendar, changes::get_change,
        changes::update_change, changes::transition_change, changes::add_note, changes::list_notes,
        changes::history, changes::list_approvals, changes::decide_approval, changes::conflicts,
        changes::my_approvals,
        change_config::create_policy, change_config::list_policies, change_config::get_policy,
        change_config::replace_policy, change_config::delete_policy,
        change_config::create_template, change_config::list_templates, change_config::get_template,
        change_config::replace_template, change_config::delete_template,
        change_config::create_freeze, change_config::list_freezes, change_config::get_freeze,
        change_config::replace_freeze, change_config::delete_freeze,
        sla::create_calendar, sla::list_calendars, sla::get_calendar, sla::replace_calendar, sla::delete_calendar,
        sla::create_policy, sla::list_policies, sla::get_policy, sla::replace_policy, sla::delete_policy,
        sla_timers::list_timers, sla_timers::get_timer, sla_timers::timeline, sla_timers::recalculate,
        assignment_rules::create_rule, assignment_rules::list_rules, assignment_rules::get_rule,
        assignment_rules::replace_rule, assignment_rules::delete_rule,
        alerts::receive_alertmanager, alerts::receive_alerts, alerts::list_alerts, alerts::get_alert,
        alerts::create_rule, alerts::list_rules, alerts::get_rule, alerts::replace_rule, alerts::delete_rule,
        ci_classes::create_class, ci_classes::list_classes, ci_classes::get_class, ci_classes::update_class,
        ci_classes::delete_class, ci_classes::get_source_precedence, ci_classes::set_source_precedence,
        ci_items::create_item, ci_items::list_items, ci_items::get_item, ci_items::update_item, ci_items::upsert_item_by_external_ref,
        ci_items::item_relationships, ci_items::item_impact, ci_items::item_history, ci_items::reconcile_items,
        ci_tickets::item_tickets,
        ci_relationships::create_relationship, ci_relationships::get_relationship, ci_relationships::delete_relationship,
        webhooks::create_webhook, webhooks::list_webhooks, webhooks::get_webhook, webhooks::update_webhook,
        webhooks::delete_webhook, webhooks::rotate_webhook_secret, webhooks::list_webhook_deliveries,
        webhooks::redeliver_webhook_delivery, webhooks::test_webhook,
    ),
    // Schemas only a query parameter names, which utoipa does not collect by itself.
    components(schemas(domain::cmdb::impact::Direction, domain::cmdb::impact::RelationshipSide)),
    // Order matters: the domain's patterns come before the generic bounds of query parameters
    // and text, and the problem schemas are added before unused schemas are dropped.
    modifiers(&DomainRules, &RequestExamples, &RouteKinds, &OpenFlattenedParts, &NoNulInText, &UnusedSchemas),
    tags(
        (name = "auth", description = "Access tokens and the caller's identity"),
        (name = "api-tokens", description = "Credentials for integrations"),
        (name = "users", description = "People and service accounts"),
        (name = "groups", description = "Assignment groups (teams)"),
        (name = "incidents", description = "Incident management: lifecycle, assignment, notes, history"),
        (name = "service-levels", description = "Business calendars, SLA policies, and the timers they set on tickets"),
        (name = "problems", description = "Problem management: root causes, linked incidents, the known-error database"),
        (name = "changes", description = "Change enablement: standard, normal and emergency changes, risk, approvals, freeze windows, conflicts"),
        (name = "cmdb", description = "Configuration management: CI classes, items, relationships, impact analysis, reconciliation"),
        (name = "alerts", description = "Monitoring intake: Alertmanager and generic alerts, deduplicated by key, opening incidents by alert rules"),
        (name = "audit", description = "Who changed what"),
        (name = "events", description = "The event feed integrators poll"),
        (name = "webhooks", description = "Signed outbound deliveries of events (Standard Webhooks)"),
        (name = "health", description = "Probes"),
    ),
)]
pub struct ApiDoc;

/// The spec as published: pretty JSON with a trailing newline, identical for `itsm openapi`,
/// `/openapi.json` and the checked-in `openapi/openapi.json`.
pub fn spec_json() -> String {
    let mut json = ApiDoc::openapi().to_pretty_json().unwrap_or_default();
    json.push('\n');
    json
}

/// The paths and methods the API serves, to tell 405 (known path) from 404.
pub struct RouteTable {
    routes: Vec<(Vec<String>, Vec<&'static str>)>,
    /// The routes with a literal segment where another route of their shape has a parameter
    /// (`/api/v1/changes/calendar` beside `/api/v1/changes/{id}`): the few paths
    /// `shadowed_method` has to look at.
    shadowing: Vec<usize>,
}

impl RouteTable {
    pub fn from_spec() -> Self {
        let openapi = ApiDoc::openapi();
        let mut routes: Vec<(Vec<String>, Vec<&'static str>)> = openapi
            .paths
            .paths
            .iter()
            .map(|(path, item)| {
                let methods = [
                    ("GET", item.get.is_some()),
                    ("POST", item.post.is_some()),
                    ("PUT", item.put.is_some()),
                    ("PATCH", item.patch.is_some()),
                    ("DELETE", item.delete.is_some()),
                ]
                .into_iter()
                .filter_map(|(method, present)| present.then_some(method))
                .collect();
                (segments(path), methods)
            })
            .collect();
        routes.push((segments("/openapi.json"), vec!["GET"]));
        let shadows = |literal: &[String], other: &[String]| {
            literal.len() == other.len()
                && literal
                    .iter()
                    .zip(other)
                    .any(|(l, o)| !l.starts_with('{') && o.starts_with('{'))
                && literal
                    .iter()
                    .zip(other)
                    .all(|(l, o)| l == o || o.starts_with('{'))
        };
        let shadowing = (0..routes.len())
            .filter(|&i| {
                routes
                    .iter()
                    .enumerate()
                    .any(|(j, (other, _))| j != i && shadows(&routes[i].0, other))
            })
            .collect();
        Self { routes, shadowing }
    }

    /// When `path` names a literal route (`/api/v1/changes/calendar`) that lacks `method`
    /// while a route with a parameter there (`/api/v1/changes/{id}`) has it: the methods the
    /// literal route allows (the request is answered 405 rather than routed to the other).
    pub fn shadowed_method(&self, method: &str, path: &str) -> Option<Vec<&'static str>> {
        // Most requests name no shadowing route: answered without allocating.
        let names_one = self.shadowing.iter().any(|&i| {
            let mut parts = path.split('/').skip(1);
            self.routes[i].0.iter().all(|t| {
                parts
                    .next()
                    .is_some_and(|r| (t.starts_with('{') && !r.is_empty()) || t == r)
            }) && parts.next().is_none()
        });
        if !names_one {
            return None;
        }
        let matching = self.matching(path);
        let most = matching.iter().map(|(t, _)| literals(t)).max()?;
        let mut allow: Vec<&'static str> = matching
            .iter()
            .filter(|(t, _)| literals(t) == most)
            .flat_map(|(_, methods)| methods.iter().copied())
            .collect();
        let routed_elsewhere = matching
            .iter()
            .any(|(t, methods)| literals(t) < most && methods.contains(&method));
        if allow.contains(&method) || !routed_elsewhere {
            return None;
        }
        allow.sort_unstable();
        allow.dedup();
        Some(allow)
    }

    /// The methods allowed on `path`, or `None` when no route has that path.
    pub fn allowed_methods(&self, path: &str) -> Option<Vec<&'static str>> {
        let matching = self.matching(path);
        // A literal route (`/api/v1/changes/calendar`) is the resource its path names, not
        // the parameter route beside it (`/api/v1/changes/{id}`).
        let most = matching.iter().map(|(t, _)| literals(t)).max().unwrap_or(0);
        let mut allowed: Vec<&'static str> = matching
            .iter()
            .filter(|(t, _)| literals(t) == most)
            .flat_map(|(_, methods)| methods.iter().copied())
            .collect();
        allowed.sort_unstable();
        allowed.dedup();
        (!allowed.is_empty()).then_some(allowed)
    }

    /// The routes whose template matches `path`, with their methods.
    fn matching(&self, path: &str) -> Vec<&(Vec<String>, Vec<&'static str>)> {
        let requested = segments(path);
        self.routes
            .iter()
            .filter(|(template, _)| {
                template.len() == requested.len()
                    && template
                        .iter()
                        .zip(&requested)
                        .all(|(t, r)| (t.starts_with('{') && !r.is_empty()) || t == r)
            })
            .collect()
    }
}

/// The number of literal segments of a route template.
fn literals(template: &[String]) -> usize {
    template.iter().filter(|s| !s.starts_with('{')).count()
}

fn segments(path: &str) -> Vec<String> {
    path.split('/').skip(1).map(str::to_owned).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_paths_list_their_methods() {
        let table = RouteTable::from_spec();
        assert_eq!(
            table.allowed_methods("/api/v1/users"),
            Some(vec!["GET", "POST"])
        );
        assert_eq!(
            table.allowed_methods("/api/v1/users/abc"),
            Some(vec!["GET", "PATCH"])
        );
        assert_eq!(table.allowed_methods("/api/v1/nothing"), None);
        assert_eq!(
            table.shadowed_method("PATCH", "/api/v1/changes/calendar"),
            Some(vec!["GET"])
        );
        assert_eq!(
            table.shadowed_method("GET", "/api/v1/changes/calendar"),
            None
        );
        assert_eq!(
            table.shadowed_method("PATCH", "/api/v1/changes/CHG0000001"),
            None
        );
        assert_eq!(table.allowed_methods("/api/v1/users/abc/extra"), None);
    }
}
