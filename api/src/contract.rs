//! The parts of the contract that follow from how a route is built rather than from what it
//! does: the problems every kind of route can answer, its credentials, the `Idempotency-Key`
//! every authenticated POST honours, the servers, and no schema that nothing uses.
//!
//! The handlers' annotations declare their success responses and their own failure modes
//! (say, a 409 with a specific description); the passes here add everything the extractors and
//! middleware give every route of a kind, so a new route is documented as it is wired.

use std::collections::{BTreeMap, BTreeSet};

use utoipa::openapi::path::{Operation, Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{
    AdditionalProperties, AllOfBuilder, ArrayBuilder, ArrayItems, KnownFormat, ObjectBuilder,
    Schema, SchemaFormat, SchemaType, Type,
};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::server::ServerBuilder;
use utoipa::openapi::{Content, HeaderBuilder, OpenApi, Ref, RefOr, Required, ResponseBuilder};
use utoipa::Modify;

use domain::alert::{self, AlertStatus};
use domain::change::ChangeType;
use domain::cmdb::RelationshipType;
use domain::sla::CLOCK_TIME_PATTERN;
use domain::ticket::TicketKind;
use domain::webhooks::{EVENT_TYPE_FILTER_PATTERN, PORTABLE_URL_PATTERN};
use domain::ExternalRef;

use crate::idempotency::MAX_KEY_LEN;
use crate::listing::{
    text_filter_max, Cursor, DEFAULT_LIMIT, MAX_LIMIT, NOT_BLANK_PATTERN, TIMESTAMP_PARAMS,
};
use crate::tickets::SORT_FIELDS;

/// The media type of every problem document.
pub const PROBLEM_MEDIA_TYPE: &str = "application/problem+json";
/// The security scheme of people's JWT access tokens.
pub const JWT_SCHEME: &str = "bearer";
/// The security scheme of integrations' `itsm_` API tokens (also sent as a bearer credential).
pub const API_TOKEN_SCHEME: &str = "apiToken";

/// What a route is built from, read from its generated operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteTraits {
    pub authenticated: bool,
    pub takes_body: bool,
    pub path_id: bool,
    pub if_match: bool,
    pub query: bool,
    pub writes: bool,
    pub post: bool,
}

impl RouteTraits {
    fn of(method: &str, path: &str, operation: &Operation) -> Self {
        let parameters = operation.parameters.as_deref().unwrap_or_default();
        let has = |location: ParameterIn, name: Option<&str>| {
            parameters.iter().any(|p| {
                p.parameter_in == location && name.is_none_or(|n| p.name.eq_ignore_ascii_case(n))
            })
        };
        Self {
            authenticated: !is_public(operation),
            takes_body: operation.request_body.is_some(),
            path_id: path.contains('{'),
            if_match: has(ParameterIn::Header, Some("If-Match")),
            query: has(ParameterIn::Query, None),
            writes: method != "get",
            post: method == "post",
        }
    }

    /// Every problem status a route of this kind can answer, with why.
    pub fn problem_statuses(&self) -> BTreeMap<u16, &'static str> {
        let mut statuses = BTreeMap::new();
        // Middleware in front of every route: the rate limits and a stopping node.
        statuses.insert(429, "Too many requests: wait for `Retry-After` seconds");
        statuses.insert(
            503,
            "Unavailable (stopping, or the database is): retry after `Retry-After` seconds",
        );
        if self.authenticated {
            statuses.insert(401, "No valid credential");
            statuses.insert(403, "The credential may not use this operation");
        }
        if self.takes_body || self.if_match {
            statuses.insert(
                400,
                "Malformed request (JSON syntax, or an If-Match that is no ETag)",
            );
        }
        if self.takes_body {
            statuses.insert(413, "The request body is larger than the service accepts (`ITSM_MAX_BODY_BYTES`, 1 MiB by default), whatever it holds");
            statuses.insert(415, "The request body is not JSON");
        }
        if self.takes_body || self.query || (self.post && self.authenticated) {
            statuses.insert(
                422,
                "Invalid content: each invalid field is listed in `errors`",
            );
        }
        if self.path_id {
            statuses.insert(404, "No such resource, or not one the caller may see");
        }
        if self.if_match {
            statuses.insert(412, "If-Match names a version that is no longer current");
        }
        if self.writes && self.authenticated {
            statuses.insert(
                409,
                "Conflicts with the current state (or an Idempotency-Key in use)",
            );
        }
        statuses
    }
}

/// An operation marked `security(())` needs no credential.
fn is_public(operation: &Operation) -> bool {
    operation
        .security
        .as_ref()
        .is_some_and(|s| s.iter().all(|r| *r == SecurityRequirement::default()))
}

fn operations_mut(openapi: &mut OpenApi) -> Vec<(&'static str, String, &mut Operation)> {
    let mut all = Vec::new();
    for (path, item) in openapi.paths.paths.iter_mut() {
        for (method, operation) in [
            ("get", item.get.as_mut()),
            ("post", item.post.as_mut()),
            ("put", item.put.as_mut()),
            ("patch", item.patch.as_mut()),
            ("delete", item.delete.as_mut()),
        ] {
            if let Some(operation) = operation {
                all.push((method, path.clone(), operation));
            }
        }
    }
    all
}

/// Adds the problem responses of each route's kind, renders every problem response (declared
/// or added) as `application/problem+json`, and sets each operation's credentials.
pub struct RouteKinds;

impl Modify for RouteKinds {
    fn modify(&self, openapi: &mut OpenApi) {
        add_problem_schemas(openapi);
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            JWT_SCHEME,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some("An access token from POST /api/v1/auth/token"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            API_TOKEN_SCHEME,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("itsm_ API token")
                    .description(Some(
                        "An API token from POST /api/v1/api-tokens, sent as a bearer credential",
                    ))
                    .build(),
            ),
        );
        openapi.servers = Some(vec![ServerBuilder::new()
            .url("http://127.0.0.1:8080")
            .description(Some("The service as `make run` starts it"))
            .build()]);
        openapi.security = Some(either_credential());

        for (method, path, operation) in operations_mut(openapi) {
            let traits = RouteTraits::of(method, &path, operation);
            operation.security = Some(if traits.authenticated {
                either_credential()
            } else {
                Vec::new()
            });
            if traits.post && traits.authenticated {
                set_idempotency_key(operation);
            }
            bound_query_parameters(&path, operation);
            let kinds = traits.problem_statuses();
            for (status, description) in &kinds {
                operation
                    .responses
                    .responses
                    .entry(status.to_string())
                    .or_insert_with(|| {
                        RefOr::T(ResponseBuilder::new().description(*description).build())
                    });
            }
            for (status, response) in operation.responses.responses.iter_mut() {
                let Some(status) = status.parse::<u16>().ok().filter(|s| *s >= 400) else {
                    continue;
                };
                if let RefOr::T(response) = response {
                    if response.description.is_empty() {
                        response.description = kinds
                            .get(&status)
                            .copied()
                            .unwrap_or_else(|| generic_description(status))
                            .to_owned();
                    }
                    response.content.clear();
                    response.content.insert(
                        PROBLEM_MEDIA_TYPE.to_owned(),
                        Content::new(Some(Ref::from_schema_name(problem_schema(status)))),
                    );
                    for &(name, description) in problem_headers(status) {
                        response.headers.entry(name.to_owned()).or_insert_with(|| {
                            HeaderBuilder::new()
                                .schema(ObjectBuilder::new().schema_type(Type::String))
                                .description(Some(description))
                                .build()
                        });
                    }
                }
            }
        }
    }
}

/// A JWT or an API token: either one satisfies a protected operation.
fn either_credential() -> Vec<SecurityRequirement> {
    vec![
        SecurityRequirement::new(JWT_SCHEME, Vec::<String>::new()),
        SecurityRequirement::new(API_TOKEN_SCHEME, Vec::<String>::new()),
    ]
}

fn generic_description(status: u16) -> &'static str {
    match status {
        401 => "No valid credential",
        403 => "The credential may not use this operation",
        404 => "No such resource, or not one the caller may see",
        409 => "Conflicts with the current state",
        422 => "Invalid content: each invalid field is listed in `errors`",
        _ => "The problem, as an RFC 9457 document",
    }
}

fn problem_schema(status: u16) -> &'static str {
    if status == 422 {
        "ValidationProblem"
    } else {
        "ProblemDetails"
    }
}

fn problem_headers(status: u16) -> &'static [(&'static str, &'static str)] {
    match status {
        401 => &[(
            "WWW-Authenticate",
            "`Bearer`: the scheme to authenticate with",
        )],
        429 | 503 => &[("Retry-After", "Seconds to wait before retrying")],
        _ => &[],
    }
}

/// `ValidationProblem`: a `Problem` whose `errors` lists at least one field.
fn add_problem_schemas(openapi: &mut OpenApi) {
    let components = openapi.components.get_or_insert_with(Default::default);
    let listed = ObjectBuilder::new().required("errors").property(
        "errors",
        ArrayBuilder::new()
            .items(Ref::from_schema_name("ProblemFieldError"))
            .min_items(Some(1))
            .max_items(Some(crate::error::MAX_LISTED_ERRORS)),
    );
    components.schemas.insert(
        "ValidationProblem".to_owned(),
        RefOr::T(Schema::AllOf(
            AllOfBuilder::new()
                .item(Ref::from_schema_name("ProblemDetails"))
                .item(listed)
                .description(Some("A problem (422) naming each invalid field"))
                .build(),
        )),
    );
}

/// The `Idempotency-Key` header every authenticated POST honours, with the bounds it is checked
/// against.
fn set_idempotency_key(operation: &mut Operation) {
    let parameters = operation.parameters.get_or_insert_with(Vec::new);
    parameters.retain(|p| !p.name.eq_ignore_ascii_case("Idempotency-Key"));
    parameters.push(idempotency_key_parameter());
}

fn idempotency_key_parameter() -> Parameter {
    ParameterBuilder::new()
        .name("Idempotency-Key")
        .parameter_in(ParameterIn::Header)
        .required(Required::False)
        .description(Some(
            "Replays the first response for a retry with the same key and body (kept 24 hours)",
        ))
        .schema(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1))
                .max_length(Some(MAX_KEY_LEN))
                .pattern(Some("^[!-~]+$")),
        ))
        .build()
}

/// Publishes the bounds `QueryParams` checks on each query parameter, where the annotation did
/// not state its own: `limit`, the text filters, the timestamps, the cursor.
fn bound_query_parameters(path: &str, operation: &mut Operation) {
    for parameter in operation.parameters.iter_mut().flatten() {
        if parameter.parameter_in != ParameterIn::Query {
            continue;
        }
        let Some(RefOr::T(Schema::Object(schema))) = parameter.schema.as_mut() else {
            continue;
        };
        let name = parameter.name.as_str();
        if name == "limit" {
            if schema.maximum.is_none() {
                schema.minimum = Some(1.into());
                schema.maximum = Some(MAX_LIMIT.into());
                schema.default = Some(DEFAULT_LIMIT.into());
            }
            continue;
        }
        let is_text = schema.schema_type == SchemaType::new(Type::String)
            && schema.enum_values.is_none()
            && schema.format.is_none()
            && schema.pattern.is_none();
        if !is_text {
            continue;
        }
        if name == "sort" {
            // Changes have no priority to sort by (`list_changes` refuses it).
            let changes = path == "/api/v1/changes";
            schema.enum_values = Some(
                SORT_FIELDS
                    .iter()
                    .filter(|field| !(changes && **field == "priority"))
                    .flat_map(|field| [field.to_string(), format!("-{field}")])
                    .map(serde_json::Value::from)
                    .collect(),
            );
        } else if name == "external_ref" {
            schema.pattern = Some(external_ref_pattern());
            // A one-character system and the colon leave the id its whole length.
            schema.max_length = Some(ExternalRef::MAX_ID_LEN + 2);
        } else if TIMESTAMP_PARAMS.contains(&name) {
            schema.format = Some(SchemaFormat::KnownFormat(KnownFormat::DateTime));
        } else if name == "cursor" {
            schema.pattern = Some(cursor_pattern(path));
        } else if schema.max_length.is_none() {
            schema.min_length = Some(1);
            schema.max_length = Some(text_filter_max(name));
            schema.pattern = Some(query_text_pattern());
        } else {
            schema.pattern = Some(query_text_pattern());
        }
    }
}

/// The rules the domain checks in code rather than in `#[validate]`, published from the
/// constants the code checks with: ticket references (ids or numbers), the `external_refs`
/// limit, times of day, webhook URLs and the `types` filters.
pub struct DomainRules;

/// Text fields the handlers trim and refuse when blank (`non_blank`, `blank`, the title and
/// body checks).
const NOT_BLANK_FIELDS: [(&str, &str); 21] = [
    ("CreateIncident", "title"),
    ("UpdateIncident", "title"),
    ("CreateProblem", "title"),
    ("UpdateProblem", "title"),
    ("ProblemFromIncident", "title"),
    ("CreateChange", "title"),
    ("UpdateChange", "title"),
    ("TemplateFields", "title"),
    ("CreateNote", "body"),
    ("CreateApiToken", "name"),
    ("AlertRuleRequest", "name"),
    ("CalendarRequest", "name"),
    ("CreateUser", "display_name"),
    ("UpdateUser", "display_name"),
    ("CreateGroup", "name"),
    ("UpdateGroup", "name"),
    ("RuleRequest", "category"),
    ("PolicyRequest", "name"),
    ("TemplateRequest", "name"),
    ("FreezeRequest", "name"),
    ("FreezeRequest", "reason"),
];

/// Fields that name tickets of one kind by id or number, wherever they appear.
const TICKET_REFERENCE_FIELDS: [(&str, TicketKind); 3] = [
    ("fixes_problems", TicketKind::Problem),
    ("caused_incidents", TicketKind::Incident),
    ("incident_ids", TicketKind::Incident),
];

/// The collections whose `{id}` is a ticket of a kind (its id or its number).
const TICKET_COLLECTIONS: [(&str, TicketKind); 3] = [
    ("/api/v1/incidents/", TicketKind::Incident),
    ("/api/v1/problems/", TicketKind::Problem),
    ("/api/v1/changes/", TicketKind::Change),
];

impl Modify for DomainRules {
    fn modify(&self, openapi: &mut OpenApi) {
        for (_, path, operation) in operations_mut(openapi) {
            for parameter in operation.parameters.iter_mut().flatten() {
                if path == "/api/v1/sla-timers" && parameter.name == "ticket_type" {
                    parameter.schema = Some(timed_ticket_types(None));
                }
                let Some(RefOr::T(Schema::Object(schema))) = parameter.schema.as_mut() else {
                    continue;
                };
                // An optional parameter may be absent, never null.
                if let SchemaType::Array(types) = &schema.schema_type {
                    let types: Vec<Type> = types
                        .iter()
                        .filter(|t| **t != Type::Null)
                        .cloned()
                        .collect();
                    if let [one] = types.as_slice() {
                        schema.schema_type = SchemaType::new(one.clone());
                    }
                }
                let query = parameter.parameter_in == ParameterIn::Query;
                let name = parameter.name.as_str();
                if query && name == "status" && path.ends_with("/deliveries") {
                    schema.enum_values = Some(
                        crate::routes::webhooks::DELIVERY_STATUSES
                            .iter()
                            .map(|s| serde_json::Value::from(*s))
                            .collect(),
                    );
                }
                if query && name == "limit" && path.ends_with("/impact") {
                    schema.minimum = Some(1.into());
                    schema.maximum = Some(domain::cmdb::impact::MAX_LIMIT.into());
                    schema.default = Some(domain::cmdb::impact::DEFAULT_LIMIT.into());
                }
                let pattern = match (&parameter.parameter_in, parameter.name.as_str()) {
                    (ParameterIn::Path, "id") => TICKET_COLLECTIONS
                        .iter()
                        .find(|(prefix, _)| path.starts_with(&format!("{prefix}{{id}}")))
                        .map(|(_, kind)| kind.reference_pattern()),
                    (ParameterIn::Path, "system") => Some(external_system_pattern()),
                    (ParameterIn::Path, "external_id") => {
                        schema.min_length = Some(1);
                        schema.max_length = Some(ExternalRef::MAX_ID_LEN);
                        Some(EXTERNAL_ID_PATTERN.to_owned())
                    }
                    (ParameterIn::Header, "If-Match") => {
                        Some(crate::concurrency::IF_MATCH_PATTERN.to_owned())
                    }
                    (ParameterIn::Path, "incident_id") => {
                        Some(TicketKind::Incident.reference_pattern())
                    }
                    (ParameterIn::Query, "types") if path == "/api/v1/events" => {
                        Some(crate::routes::feed::types_pattern())
                    }
                    (ParameterIn::Query, "types")
                        if path.starts_with("/api/v1/configuration-items/") =>
                    {
                        Some(list_pattern(
                            RelationshipType::ALL.iter().map(|t| t.as_str()),
                        ))
                    }
                    _ => None,
                };
                if let Some(pattern) = pattern {
                    schema.pattern = Some(pattern);
                }
            }
        }
        let Some(components) = openapi.components.as_mut() else {
            return;
        };
        for (name, schema) in components.schemas.iter_mut() {
            // An approver is exactly one of its keys (`{"user": id}`...): serde refuses others.
            if name == "Approver" {
                if let RefOr::T(Schema::OneOf(one)) = schema {
                    for variant in &mut one.items {
                        if let RefOr::T(Schema::Object(object)) = variant {
                            object.additional_properties =
                                Some(Box::new(AdditionalProperties::FreeForm(false)));
                        }
                    }
                }
            }
            let RefOr::T(Schema::Object(object)) = schema else {
                continue;
            };
            // The alert intake reads its documents field by field and refuses any other
            // field (`domain::alert`).
            if matches!(
                name.as_str(),
                "GenericAlert" | "GenericAlertBatch" | "AlertmanagerPayload" | "AlertmanagerAlert"
            ) {
                object.additional_properties =
                    Some(Box::new(AdditionalProperties::FreeForm(false)));
            }
            if name == "UpdateChange" {
                // Overriding the risk takes the level and the reason together
                // (`usecases::changes`); neither field of the patch takes null.
                object
                    .extensions
                    .get_or_insert_with(Default::default)
                    .insert(
                        "dependentRequired".to_owned(),
                        serde_json::json!({
                            "risk": ["risk_override_reason"],
                            "risk_override_reason": ["risk"]
                        }),
                    );
            }
            if name == "HolidaySpec" {
                // A partial holiday has both ends or neither (`Calendar::parse`).
                object
                    .extensions
                    .get_or_insert_with(Default::default)
                    .insert(
                        "dependentRequired".to_owned(),
                        serde_json::json!({"start": ["end"], "end": ["start"]}),
                    );
                for end in ["start", "end"] {
                    if let Some(RefOr::T(Schema::Object(time))) = object.properties.get_mut(end) {
                        time.schema_type = SchemaType::new(Type::String);
                    }
                }
            }
            for (field, property) in object.properties.iter_mut() {
                let field = field.as_str();
                if NOT_BLANK_FIELDS.contains(&(name.as_str(), field)) {
                    set_pattern(property, query_text_pattern());
                }
                match (name.as_str(), field) {
                    ("AttributeDef", "name") | ("CreateClass", "name" | "parent") => {
                        set_pattern(property, domain::cmdb::class::NAME_PATTERN.to_owned());
                    }
                    ("HoursSpec" | "HolidaySpec", "start" | "end") => {
                        set_pattern(property, CLOCK_TIME_PATTERN.to_owned());
                    }
                    ("CreateWebhook" | "UpdateWebhook", "url") => {
                        set_pattern(property, PORTABLE_URL_PATTERN.to_owned());
                        if let RefOr::T(Schema::Object(url)) = property {
                            url.format = Some(SchemaFormat::Custom("uri".to_owned()));
                        }
                    }
                    ("CreateWebhook" | "UpdateWebhook", "event_types") => {
                        items_pattern(property, EVENT_TYPE_FILTER_PATTERN.to_owned());
                    }
                    ("GenericAlert", "resources") => {
                        items_pattern(property, RESOURCE_PATTERN.to_owned());
                        if let RefOr::T(Schema::Array(list)) = property {
                            list.max_items = Some(domain::alert::MAX_RESOURCES);
                        }
                    }
                    ("AlertmanagerPayload" | "GenericAlertBatch", "alerts") => {
                        if let RefOr::T(Schema::Array(list)) = property {
                            list.min_items = Some(1);
                            list.max_items = Some(domain::alert::MAX_BATCH);
                        }
                    }
                    ("AlertmanagerPayload" | "AlertmanagerAlert", "status") => {
                        if let RefOr::T(Schema::Object(status)) = property {
                            status.enum_values = Some(
                                AlertStatus::ALL
                                    .iter()
                                    .map(|s| serde_json::Value::from(s.as_str()))
                                    .collect(),
                            );
                        }
                    }
                    ("AlertmanagerPayload", "version") => {
                        if let RefOr::T(Schema::Object(version)) = property {
                            version.enum_values = Some(vec!["4".into()]);
                        }
                    }
                    ("PolicyRequest", "quorum") => {
                        if let RefOr::T(Schema::Object(quorum)) = property {
                            quorum.minimum = Some(1.into());
                            quorum.maximum = Some(domain::change::approval::MAX_QUORUM.into());
                        }
                    }
                    ("PolicyRequest", "change_types") => {
                        // Standard changes are pre-approved by their template
                        // (`PolicyRules::validate`).
                        if let RefOr::T(Schema::Array(list)) = property {
                            list.items =
                                ArrayItems::RefOrSchema(Box::new(RefOr::T(Schema::Object(
                                    ObjectBuilder::new()
                                        .schema_type(Type::String)
                                        .enum_values(Some(
                                            ChangeType::ALL
                                                .iter()
                                                .filter(|t| **t != ChangeType::Standard)
                                                .map(|t| t.as_str()),
                                        ))
                                        .build(),
                                ))));
                        }
                    }
                    ("GenericAlert", "source") => text_bounds(property, alert::MAX_SOURCE),
                    ("GenericAlert", "dedup_key") | ("AlertmanagerAlert", "fingerprint") => {
                        text_bounds(property, alert::MAX_KEY)
                    }
                    ("GenericAlert", "summary") => text_bounds(property, alert::MAX_SUMMARY),
                    ("GenericAlert", "description") => {
                        if let RefOr::T(Schema::Object(text)) = property {
                            text.max_length = Some(alert::MAX_DESCRIPTION);
                        }
                    }
                    ("GenericAlert", "time") | ("AlertmanagerAlert", "startsAt" | "endsAt") => {
                        if let RefOr::T(Schema::Object(at)) = property {
                            at.format = Some(SchemaFormat::KnownFormat(KnownFormat::DateTime));
                        }
                    }
                    // `alert::validate_rule_labels`: at most MAX_LABELS conditions, each name
                    // 1 to MAX_LABEL_NAME characters and not blank, each value at most
                    // MAX_LABEL_VALUE.
                    ("AlertRuleRequest", "labels") => {
                        if let RefOr::T(Schema::Object(map)) = property {
                            bound_string_map(map, query_text_pattern(), alert::MAX_LABEL_VALUE);
                        }
                    }
                    ("AlertmanagerAlert" | "GenericAlert" | "AlertmanagerPayload", _)
                        if field.ends_with("abels") || field.ends_with("nnotations") =>
                    {
                        // `alert::string_map`: named strings, 1 to MAX_LABELS of them when
                        // required (an Alertmanager alert's labels).
                        let value_max = if field.ends_with("nnotations") {
                            alert::MAX_DESCRIPTION
                        } else {
                            alert::MAX_LABEL_VALUE
                        };
                        if let RefOr::T(Schema::Object(map)) = property {
                            if name == "AlertmanagerAlert" && field == "labels" {
                                map.min_properties = Some(1);
                            }
                            bound_string_map(map, NO_NUL_PATTERN, value_max);
                        }
                    }
                    ("ReconcileItem", "key") => {
                        if let RefOr::T(Schema::Object(key)) = property {
                            key.min_length = Some(1);
                            key.max_length = Some(crate::routes::cmdb::items::MAX_BATCH_KEY_CHARS);
                        }
                    }
                    ("CreateItem" | "UpdateItem" | "ReconcileItem", "name") => {
                        text_bounds(property, domain::cmdb::item::MAX_NAME_CHARS)
                    }
                    // `scopes::validate`: known scopes, at least one (repeats are dropped).
                    ("CreateApiToken", "scopes") => {
                        if let RefOr::T(Schema::Array(list)) = property {
                            list.min_items = Some(1);
                            list.items =
                                ArrayItems::RefOrSchema(Box::new(RefOr::T(Schema::Object(
                                    ObjectBuilder::new()
                                        .schema_type(Type::String)
                                        .enum_values(Some(domain::scopes::SCOPES))
                                        .build(),
                                ))));
                        }
                    }
                    // `PolicyDefinition::validated`: a name of 1 to 100 characters once
                    // trimmed, incidents and problems only, pause states of those tickets.
                    ("PolicyDefinition", "name") => {
                        text_bounds(property, domain::sla::MAX_POLICY_NAME_CHARS)
                    }
                    ("AppliesTo", "ticket_type") => {
                        *property = timed_ticket_types(Some(
                            "The tickets with service levels: incidents and problems.",
                        ));
                    }
                    ("PauseCondition", "state") => one_of_values(
                        property,
                        "A state of the policy's ticket type.",
                        domain::sla::pause_states().map(serde_json::Value::from),
                    ),
                    ("PauseCondition", "on_hold_reason") => one_of_values(
                        property,
                        "Only with an incident's `on_hold`.",
                        domain::incident::OnHoldReason::ALL
                            .iter()
                            .map(|r| serde_json::Value::from(r.as_str()))
                            .chain([serde_json::Value::Null]),
                    ),
                    // `class::validate_definition`: at most 200 attributes, enum values of 1
                    // to 100 characters, not blank, at most 200 of them; at most 20 rules of
                    // 1 to 10 attributes, each named once.
                    ("CreateClass" | "UpdateClass", "attributes") => {
                        if let RefOr::T(Schema::Array(list)) = property {
                            list.max_items = Some(domain::cmdb::class::MAX_ATTRIBUTES);
                        }
                    }
                    ("AttributeDef", "enum") => {
                        if let RefOr::T(Schema::Array(list)) = property {
                            list.max_items = Some(domain::cmdb::class::MAX_ENUM_VALUES);
                        }
                        items_pattern(property, query_text_pattern());
                        if let RefOr::T(Schema::Array(list)) = property {
                            if let ArrayItems::RefOrSchema(items) = &mut list.items {
                                if let RefOr::T(Schema::Object(value)) = items.as_mut() {
                                    value.max_length =
                                        Some(domain::cmdb::class::MAX_ENUM_VALUE_LEN);
                                }
                            }
                        }
                    }
                    ("CreateClass" | "UpdateClass", "identification_rules") => {
                        *property = RefOr::T(Schema::Array(
                            ArrayBuilder::new()
                                .description(Some(
                                    "Rules in order, each a set of the class's identifying \
                                     attributes (own or inherited) that together identify an \
                                     item.",
                                ))
                                .max_items(Some(domain::cmdb::class::MAX_RULES))
                                .items(RefOr::T(Schema::Array(
                                    ArrayBuilder::new()
                                        .min_items(Some(1))
                                        .max_items(Some(domain::cmdb::class::MAX_RULE_ATTRIBUTES))
                                        .unique_items(true)
                                        .items(RefOr::T(Schema::Object(
                                            ObjectBuilder::new()
                                                .schema_type(Type::String)
                                                .pattern(Some(domain::cmdb::class::NAME_PATTERN))
                                                .build(),
                                        )))
                                        .build(),
                                )))
                                .examples([serde_json::json!([
                                    ["serial_number"],
                                    ["hostname", "dns_domain"]
                                ])])
                                .build(),
                        ));
                    }
                    (_, "time_zone") if name.starts_with("Calendar") => {
                        if let RefOr::T(Schema::Object(zone)) = property {
                            zone.enum_values = Some(
                                domain::calendar::time_zone_names()
                                    .map(serde_json::Value::from)
                                    .collect(),
                            );
                            zone.min_length = None;
                            zone.max_length = None;
                        }
                    }
                    (_, "working_hours") if name.starts_with("Calendar") => {
                        if let RefOr::T(Schema::Array(list)) = property {
                            list.min_items = Some(1);
                        }
                    }
                    (
                        _,
                        "configuration_items"
                        | "fixes_problems"
                        | "caused_incidents"
                        | "incident_ids",
                    )
                    | ("SourcePrecedence", "sources") => {
                        // Each listed once (the handlers refuse a repeat).
                        if let RefOr::T(Schema::Array(list)) = property {
                            list.unique_items = true;
                        }
                        if let Some((_, kind)) =
                            TICKET_REFERENCE_FIELDS.iter().find(|(f, _)| *f == field)
                        {
                            items_pattern(property, kind.reference_pattern());
                        }
                    }
                    ("ExternalRef", "system") => {
                        set_pattern(property, external_system_pattern());
                    }
                    ("ExternalRef", "id") => {
                        set_pattern(property, EXTERNAL_ID_PATTERN.to_owned());
                        if let RefOr::T(Schema::Object(id)) = property {
                            id.min_length = Some(1);
                            id.max_length = Some(ExternalRef::MAX_ID_LEN);
                        }
                    }
                    (_, "external_refs") => {
                        if let RefOr::T(Schema::Array(list)) = property {
                            list.max_items = Some(ExternalRef::MAX_PER_RECORD);
                            // `ExternalRef::validate_list`: a record is one record of each
                            // other system.
                            list.description = Some(
                                "The record's references in other systems: at most one per \
                                 system."
                                    .to_owned(),
                            );
                        }
                    }
                    _ => {
                        if let Some((_, kind)) =
                            TICKET_REFERENCE_FIELDS.iter().find(|(f, _)| *f == field)
                        {
                            if let RefOr::T(Schema::Array(list)) = property {
                                if let ArrayItems::RefOrSchema(items) = &mut list.items {
                                    set_pattern(items, kind.reference_pattern());
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// An external system's name, as `ExternalRef::validate_list` checks it.
fn external_system_pattern() -> String {
    format!("^[A-Za-z0-9_.-]{{1,{}}}$", ExternalRef::MAX_SYSTEM_LEN)
}

/// An external id: no surrounding white space (what `str::trim` removes) and no NUL.
const EXTERNAL_ID_PATTERN: &str = "^[^\\t\\n\\u000b\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000\\u0000](?:[^\\u0000]*[^\\t\\n\\u000b\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000\\u0000])?$";

/// Text that must not be blank (no NUL either), of at most `max` characters.
fn text_bounds(schema: &mut RefOr<Schema>, max: usize) {
    if let RefOr::T(Schema::Object(text)) = schema {
        text.max_length = Some(max);
        text.pattern = Some(query_text_pattern());
    }
}

/// `^a|b(,a|b)*$`: a comma-separated list of the given names.
fn list_pattern<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let one = format!("(?:{})", names.collect::<Vec<_>>().join("|"));
    format!("^{one}(?:,{one})*$")
}

/// A resource an alert names: a host name or instance, 1 to 255 ASCII characters without
/// surrounding spaces (as `domain::alert` reads `resources`).
const RESOURCE_PATTERN: &str = "^[!-~](?:[ -~]{0,253}[!-~])?$";

fn items_pattern(schema: &mut RefOr<Schema>, pattern: String) {
    if let RefOr::T(Schema::Array(list)) = schema {
        if let ArrayItems::RefOrSchema(items) = &mut list.items {
            set_pattern(items, pattern);
        }
    }
}

/// A text field that takes one of `values` (the enum replaces its pattern), described.
/// The ticket types that run SLA timers, as a string enum.
fn timed_ticket_types(description: Option<&str>) -> RefOr<Schema> {
    RefOr::T(Schema::Object(
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(description)
            .enum_values(Some(
                TicketKind::ALL
                    .iter()
                    .filter(|kind| kind.has_slas())
                    .map(|kind| kind.as_str()),
            ))
            .build(),
    ))
}

fn one_of_values(
    schema: &mut RefOr<Schema>,
    description: &str,
    values: impl Iterator<Item = serde_json::Value>,
) {
    if let RefOr::T(Schema::Object(object)) = schema {
        object.pattern = None;
        object.description = Some(description.to_owned());
        object.enum_values = Some(values.collect());
    }
}

fn set_pattern(schema: &mut RefOr<Schema>, pattern: String) {
    if let RefOr::T(Schema::Object(object)) = schema {
        object.pattern = Some(pattern);
    }
}

/// The cursors a list reads (`listing::Cursor`): ticket lists carry every sort's key, the
/// SLA timer list a due time and an id, every other list the last item's id.
fn cursor_pattern(path: &str) -> String {
    match path {
        "/api/v1/incidents" | "/api/v1/problems" | "/api/v1/changes" => {
            crate::tickets::TicketCursor::pattern()
        }
        "/api/v1/sla-timers" => <(chrono::NaiveDateTime, String)>::pattern(),
        _ => String::pattern(),
    }
}

/// A text filter: not all white space (`QueryParams::text`) and without NUL (which no stored
/// text holds).
/// An object of named strings as `alert::validate_rule_labels` and `alert::string_map` bound
/// it: at most MAX_LABELS names of 1 to MAX_LABEL_NAME characters matching `name_pattern`, each
/// value at most `value_max` characters.
fn bound_string_map(
    map: &mut utoipa::openapi::schema::Object,
    name_pattern: impl Into<String>,
    value_max: usize,
) {
    map.max_properties = Some(alert::MAX_LABELS);
    map.property_names = Some(Box::new(Schema::Object(
        ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(1))
            .max_length(Some(alert::MAX_LABEL_NAME))
            .pattern(Some(name_pattern))
            .build(),
    )));
    map.additional_properties = Some(Box::new(AdditionalProperties::RefOr(RefOr::T(
        Schema::Object(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .max_length(Some(value_max))
                .build(),
        ),
    ))));
}

fn query_text_pattern() -> String {
    let not_blank = NOT_BLANK_PATTERN.trim_end_matches(']');
    format!("^[^\\u0000]*{not_blank}\\u0000][^\\u0000]*$")
}

/// A flattened part of a record (`#[serde(flatten)]` renders as `allOf`) keeps the record's
/// other fields, so a part that refuses unknown fields as a request body is inlined there
/// without that refusal.
pub struct OpenFlattenedParts;

impl Modify for OpenFlattenedParts {
    fn modify(&self, openapi: &mut OpenApi) {
        let Some(components) = openapi.components.as_mut() else {
            return;
        };
        let strict: BTreeMap<String, Schema> = components
            .schemas
            .iter()
            .filter_map(|(name, schema)| match schema {
                RefOr::T(Schema::Object(object)) if refuses_unknown(object) => {
                    let mut open = object.clone();
                    open.additional_properties = None;
                    Some((name.clone(), Schema::Object(open)))
                }
                _ => None,
            })
            .collect();
        for schema in components.schemas.values_mut() {
            open_parts(schema, &strict);
        }
        for (_, _, operation) in operations_mut(openapi) {
            for response in operation.responses.responses.values_mut() {
                if let RefOr::T(response) = response {
                    for content in response.content.values_mut() {
                        if let Some(schema) = content.schema.as_mut() {
                            open_parts(schema, &strict);
                        }
                    }
                }
            }
        }
    }
}

fn refuses_unknown(object: &utoipa::openapi::schema::Object) -> bool {
    matches!(
        object.additional_properties.as_deref(),
        Some(AdditionalProperties::FreeForm(false))
    )
}

fn open_parts(schema: &mut RefOr<Schema>, strict: &BTreeMap<String, Schema>) {
    let RefOr::T(schema) = schema else {
        return;
    };
    match schema {
        Schema::AllOf(all) => {
            for item in &mut all.items {
                let name = match item {
                    RefOr::Ref(reference) => reference
                        .ref_location
                        .strip_prefix("#/components/schemas/")
                        .map(str::to_owned),
                    RefOr::T(_) => None,
                };
                match name.and_then(|name| strict.get(&name)) {
                    Some(open) => *item = RefOr::T(open.clone()),
                    None => open_parts(item, strict),
                }
            }
        }
        Schema::OneOf(one) => one.items.iter_mut().for_each(|i| open_parts(i, strict)),
        Schema::AnyOf(any) => any.items.iter_mut().for_each(|i| open_parts(i, strict)),
        Schema::Object(object) => object
            .properties
            .values_mut()
            .for_each(|p| open_parts(p, strict)),
        Schema::Array(array) => {
            if let ArrayItems::RefOrSchema(items) = &mut array.items {
                open_parts(items, strict);
            }
        }
        _ => {}
    }
}

/// No stored text may hold NUL (`json_body` refuses it): every free text in a request body
/// says so.
pub struct NoNulInText;

/// Text without NUL: the whole value is characters other than U+0000.
pub const NO_NUL_PATTERN: &str = "^[^\\u0000]*$";

impl Modify for NoNulInText {
    fn modify(&self, openapi: &mut OpenApi) {
        if let Some(components) = openapi.components.as_mut() {
            components.schemas.values_mut().for_each(forbid_nul);
        }
        for (_, _, operation) in operations_mut(openapi) {
            if let Some(body) = operation.request_body.as_mut() {
                for content in body.content.values_mut() {
                    if let Some(schema) = content.schema.as_mut() {
                        forbid_nul(schema);
                    }
                }
            }
        }
    }
}

fn forbid_nul(schema: &mut RefOr<Schema>) {
    let RefOr::T(schema) = schema else {
        return;
    };
    match schema {
        Schema::Object(object) => {
            let free_text = object.schema_type == SchemaType::new(Type::String)
                || object.schema_type == SchemaType::from_iter([Type::String, Type::Null]);
            if free_text
                && object.pattern.is_none()
                && object.enum_values.is_none()
                && object.format.is_none()
            {
                object.pattern = Some(NO_NUL_PATTERN.to_owned());
            }
            object.properties.values_mut().for_each(forbid_nul);
            // Keys are text too, in maps and in objects open to other fields.
            let map = !matches!(
                object.additional_properties.as_deref(),
                Some(AdditionalProperties::FreeForm(false))
            ) && (object.schema_type == SchemaType::new(Type::Object)
                || object.schema_type == SchemaType::from_iter([Type::Object, Type::Null]));
            if let Some(Schema::Object(names)) = object.property_names.as_deref_mut() {
                if names.pattern.is_none() {
                    names.pattern = Some(NO_NUL_PATTERN.to_owned());
                }
            }
            if map && object.property_names.is_none() {
                object.property_names = Some(Box::new(Schema::Object(
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .pattern(Some(NO_NUL_PATTERN))
                        .build(),
                )));
            }
            if let Some(AdditionalProperties::RefOr(value)) =
                object.additional_properties.as_deref_mut()
            {
                forbid_nul(value);
            }
        }
        Schema::Array(array) => {
            if let ArrayItems::RefOrSchema(items) = &mut array.items {
                forbid_nul(items);
            }
        }
        Schema::AllOf(all) => all.items.iter_mut().for_each(forbid_nul),
        Schema::OneOf(one) => one.items.iter_mut().for_each(forbid_nul),
        Schema::AnyOf(any) => any.items.iter_mut().for_each(forbid_nul),
        _ => {}
    }
}

/// `system:id` as `QueryParams::external_ref` reads it (see `ExternalRef::validate_list`).
fn external_ref_pattern() -> String {
    let system = external_system_pattern();
    let system = system.trim_start_matches('^').trim_end_matches('$');
    format!("^{system}:{}", EXTERNAL_ID_PATTERN.trim_start_matches('^'))
}

/// Drops schemas nothing refers to (say, an item type that list pages inline).
pub struct UnusedSchemas;

impl Modify for UnusedSchemas {
    fn modify(&self, openapi: &mut OpenApi) {
        loop {
            let Ok(json) = serde_json::to_value(&*openapi) else {
                return;
            };
            let mut used = BTreeSet::new();
            collect_refs(&json, &mut used);
            let Some(components) = openapi.components.as_mut() else {
                return;
            };
            let before = components.schemas.len();
            components.schemas.retain(|name, _| used.contains(name));
            if components.schemas.len() == before {
                return;
            }
        }
    }
}

fn collect_refs(value: &serde_json::Value, used: &mut BTreeSet<String>) {
    match value {
        serde_json::Value::Object(fields) => {
            for (key, child) in fields {
                if key == "$ref" {
                    if let Some(name) = child
                        .as_str()
                        .and_then(|r| r.strip_prefix("#/components/schemas/"))
                    {
                        used.insert(name.to_owned());
                    }
                } else {
                    collect_refs(child, used);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|item| collect_refs(item, used)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use utoipa::OpenApi;

    use crate::openapi::ApiDoc;

    fn spec() -> serde_json::Value {
        serde_json::to_value(ApiDoc::openapi()).unwrap()
    }

    fn statuses(spec: &serde_json::Value, path: &str, method: &str) -> Vec<String> {
        spec["paths"][path][method]["responses"]
            .as_object()
            .unwrap_or_else(|| panic!("{method} {path} missing"))
            .keys()
            .cloned()
            .collect()
    }

    #[test]
    fn each_route_kind_documents_its_problems() {
        let spec = spec();
        // Authenticated, a body, a path id, If-Match, a write.
        assert_eq!(
            statuses(&spec, "/api/v1/users/{id}", "patch"),
            ["200", "400", "401", "403", "404", "409", "412", "413", "415", "422", "429", "503"]
        );
        // Authenticated list with query parameters.
        assert_eq!(
            statuses(&spec, "/api/v1/users", "get"),
            ["200", "401", "403", "422", "429", "503"]
        );
        // Public probe: only the middleware's.
        assert_eq!(statuses(&spec, "/healthz", "get"), ["200", "429", "503"]);
    }

    #[test]
    fn every_problem_is_a_problem_document_and_every_protected_operation_names_its_credentials() {
        let spec = spec();
        for (path, item) in spec["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                for (status, response) in operation["responses"].as_object().unwrap() {
                    if status.as_str() >= "400" {
                        let content = response["content"].as_object().unwrap();
                        let schema = &content[super::PROBLEM_MEDIA_TYPE]["schema"]["$ref"];
                        let expected = if status == "422" {
                            "#/components/schemas/ValidationProblem"
                        } else {
                            "#/components/schemas/ProblemDetails"
                        };
                        assert_eq!(schema, expected, "{method} {path} {status}");
                        assert_eq!(content.len(), 1, "{method} {path} {status}");
                    }
                }
                let security = operation["security"].as_array().unwrap();
                let public = security.is_empty();
                assert_eq!(
                    public,
                    !operation["responses"]
                        .as_object()
                        .unwrap()
                        .contains_key("403"),
                    "{method} {path}"
                );
                if !public {
                    assert_eq!(security.len(), 2, "{method} {path}: a JWT or an API token");
                }
            }
        }
    }

    /// `#[schema_from_validate]`: the bounds in the schema are the ones `#[validate]` checks.
    #[test]
    fn validation_limits_are_the_schema_limits() {
        let spec = spec();
        let incident = &spec["components"]["schemas"]["CreateIncident"]["properties"];
        assert_eq!(incident["title"]["minLength"], 1);
        assert_eq!(incident["title"]["maxLength"], 200);
        assert_eq!(incident["configuration_items"]["maxItems"], 50);
        let patch = &spec["components"]["schemas"]["UpdateUser"]["properties"];
        assert_eq!(patch["email"]["format"], "email");
        assert_eq!(patch["email"]["maxLength"], 254);
        assert_eq!(patch["roles"]["minItems"], 1);
        let rotate = &spec["components"]["schemas"]["RotateSecret"]["properties"];
        assert_eq!(rotate["overlap_seconds"]["maximum"], 604_800);
    }

    /// The rules the domain checks in code reach the schema from the same constants, and each
    /// pattern accepts what the code accepts.
    #[test]
    fn domain_rules_are_published() {
        use domain::ticket::TicketKind;
        let spec = spec();
        let pattern_of = |path: &str, method: &str, name: &str| -> regex::Regex {
            let parameters = spec["paths"][path][method]["parameters"]
                .as_array()
                .unwrap();
            let parameter = parameters.iter().find(|p| p["name"] == name).unwrap();
            regex::Regex::new(parameter["schema"]["pattern"].as_str().unwrap()).unwrap()
        };
        let incident = pattern_of("/api/v1/incidents/{id}", "get", "id");
        let id = persistence::new_id();
        assert!(incident.is_match(&id));
        assert!(incident.is_match(&TicketKind::Incident.number(42)));
        assert!(TicketKind::Incident.is_number(&TicketKind::Incident.number(42)));
        assert!(!incident.is_match("PRB0000042"));
        let problem_id = pattern_of(
            "/api/v1/problems/{id}/incidents/{incident_id}",
            "delete",
            "incident_id",
        );
        assert!(problem_id.is_match("INC0000001"));
        let system = pattern_of(
            "/api/v1/users/by-external/{system}/{external_id}",
            "put",
            "system",
        );
        assert!(system.is_match("crm") && !system.is_match("c r m"));

        let relationship_types = pattern_of(
            "/api/v1/configuration-items/{id}/relationships",
            "get",
            "types",
        );
        assert!(relationship_types.is_match("depends_on,uses"));
        assert!(!relationship_types.is_match("depends_on,"));
        let types = pattern_of("/api/v1/events", "get", "types");
        assert!(types.is_match("incident.created,user.*"));
        assert!(!types.is_match("*"));

        let schemas = &spec["components"]["schemas"];
        let time = regex::Regex::new(
            schemas["HoursSpec"]["properties"]["start"]["pattern"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        assert!(time.is_match("09:00") && time.is_match("23:59") && !time.is_match("24:00"));
        let url = regex::Regex::new(
            schemas["CreateWebhook"]["properties"]["url"]["pattern"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        let allowed: Vec<domain::webhooks::Network> = Vec::new();
        for accepted in [
            "https://crm.example.com/hooks/itsm",
            "http://a.b.example.org:8080/x?y=1",
        ] {
            assert!(url.is_match(accepted), "{accepted}");
            assert!(
                domain::webhooks::Target::parse(accepted, &allowed).is_ok(),
                "{accepted}"
            );
        }
        for refused in [
            "http://127.0.0.1/x",
            "http://localhost/x",
            "http://a.localhost/",
            "ftp://a.com/",
        ] {
            assert!(!url.is_match(refused), "{refused}");
        }
        assert_eq!(
            schemas["CreateUser"]["properties"]["external_refs"]["maxItems"],
            domain::ExternalRef::MAX_PER_RECORD
        );
        let fixes = &schemas["CreateChange"]["properties"]["fixes_problems"]["items"]["pattern"];
        assert_eq!(
            fixes.as_str().unwrap(),
            TicketKind::Problem.reference_pattern()
        );
    }

    #[test]
    fn no_schema_is_unused() {
        let spec = spec();
        let mut used = std::collections::BTreeSet::new();
        super::collect_refs(&spec, &mut used);
        for name in spec["components"]["schemas"].as_object().unwrap().keys() {
            assert!(used.contains(name), "{name} is not used");
        }
    }
}
