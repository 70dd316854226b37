//! `/api/v1/configuration-items`: items, their relationships, impact, history and the
//! reconciliation of discovered data.

use std::str::FromStr;

use actix_web::http::StatusCode;
use actix_web::{get, patch, post, put, web, HttpRequest, HttpResponse};
use domain::cmdb::impact::{self, Direction, Impact, RelationshipSide};
use domain::cmdb::item::ItemRelationship;
use domain::cmdb::reconcile::{BatchItem, Report, MAX_BATCH};
use domain::cmdb::{CiStatus, ConfigurationItem, Criticality, Environment, RelationshipType};
use domain::{ExternalRef, FieldError};
use persistence::cmdb::reconcile::{self, Batch, BatchRelationship};
use persistence::cmdb::relationships::{self, Side};
use persistence::cmdb::{classes, items};
use persistence::{audit, StoreError};
use serde::Deserialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;
use validator::Validate;

use super::not_found_as;
use crate::auth::{Authorized, Caller, CmdbReaders, CmdbWriters};
use crate::concurrency::{created, if_match, with_etag};
use crate::error::{ApiError, ApiResult};
use crate::json_body::{nullable, required, ValidJson};
use crate::listing::{Page, QueryParams, PAGE_PARAMS};
use crate::routes::feed::AuditEvent;
use crate::state::AppState;
use crate::usecases::{upsert_by_reference, with_path_reference, Upserted};

#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateItem {
    #[schema(example = "web01")]
    pub name: String,
    #[schema(example = "server")]
    pub class: String,
    /// Default `operational`.
    pub status: Option<CiStatus>,
    pub environment: Option<Environment>,
    pub criticality: Option<Criticality>,
    /// A group id.
    pub owner_group: Option<String>,
    #[serde(default)]
    #[schema(value_type = Object, example = json!({"hostname": "web01", "dns_domain": "example.org"}))]
    pub attributes: Map<String, Value>,
    #[serde(default)]
    pub external_refs: Vec<ExternalRef>,
}

#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateItem {
    #[serde(default, deserialize_with = "required")]
    #[schema(nullable = false)]
    pub name: Option<String>,
    /// `retired` retires the item; it stays readable with its history and relationships.
    #[serde(default, deserialize_with = "required")]
    #[schema(nullable = false)]
    pub status: Option<CiStatus>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<Environment>)]
    pub environment: Option<Option<Environment>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<Criticality>)]
    pub criticality: Option<Option<Criticality>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub owner_group: Option<Option<String>>,
    /// Merged into the item's attributes; `null` removes one.
    #[serde(default, deserialize_with = "required")]
    #[schema(nullable = false)]
    #[schema(value_type = Option<Object>)]
    pub attributes: Option<Map<String, Value>>,
    #[serde(default, deserialize_with = "required")]
    #[schema(nullable = false)]
    pub external_refs: Option<Vec<ExternalRef>>,
}

fn check_refs(refs: Option<&[ExternalRef]>) -> ApiResult<()> {
    match refs {
        Some(refs) => ExternalRef::validate_list(refs, "external_refs").map_err(ApiError::from),
        None => Ok(()),
    }
}

/// Create a configuration item.
#[utoipa::path(
    tag = "cmdb", operation_id = "create_configuration_item",
    request_body = CreateItem,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for a retry")),
    responses((status = 201, body = ConfigurationItem, headers(("Location" = String), ("ETag" = String))),
              (status = 403, body = crate::error::Problem), (status = 409, body = crate::error::Problem),
              (status = 422, body = crate::error::Problem)),
)]
#[post("/api/v1/configuration-items")]
pub async fn create_item(
    caller: Authorized<CmdbWriters>,
    state: web::Data<AppState>,
    body: ValidJson<CreateItem>,
) -> ApiResult<HttpResponse> {
    let item = create(&state, &caller, body.0).await?;
    Ok(created(location(&item), item.version, &item))
}

fn location(item: &ConfigurationItem) -> String {
    format!("/api/v1/configuration-items/{}", item.id)
}

async fn create(
    state: &AppState,
    caller: &Caller,
    body: CreateItem,
) -> ApiResult<ConfigurationItem> {
    check_refs(Some(&body.external_refs))?;
    let new = items::NewItem {
        name: body.name,
        class: body.class,
        status: body.status.unwrap_or(CiStatus::Operational),
        environment: body.environment,
        criticality: body.criticality,
        owner_group: body.owner_group,
        attributes: body.attributes,
        external_refs: body.external_refs,
    };
    let ctx = caller.write_context();
    state
        .db
        .write(move |conn| items::create(conn, &ctx, new))
        .await
        .map_err(ApiError::from)
}

/// Create or update the configuration item holding another system's reference (an asset
/// register or ERP pushing its record): 201 when created, 200 when it existed (unchanged when
/// the record is). The path's reference is added to the body's `external_refs`. On update the
/// body's fields replace the item's and absent ones stay; `attributes` are merged as in a
/// PATCH; the class never changes (another one is a 409). A body reference of the path's
/// system carries the path's id (another one is a 422). Discovery tools that identify items
/// by their attributes use `reconcile` instead.
#[utoipa::path(
    tag = "cmdb", operation_id = "upsert_configuration_item_by_external_ref",
    params(("system" = String, Path, description = "The other system (erp)"),
           ("external_id" = String, Path, description = "The record's id there")),
    request_body = CreateItem,
    responses((status = 200, body = ConfigurationItem, headers(("ETag" = String))),
              (status = 201, body = ConfigurationItem, headers(("Location" = String), ("ETag" = String))),
              (status = 403, body = crate::error::Problem), (status = 409, body = crate::error::Problem),
              (status = 422, body = crate::error::Problem)),
)]
#[put("/api/v1/configuration-items/by-external/{system}/{external_id}")]
pub async fn upsert_item_by_external_ref(
    caller: Authorized<CmdbWriters>,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    body: ValidJson<CreateItem>,
) -> ApiResult<HttpResponse> {
    let (system, id) = path.into_inner();
    let reference = ExternalRef { system, id };
    let mut body = body.0;
    body.external_refs = with_path_reference(std::mem::take(&mut body.external_refs), &reference)?;
    check_refs(Some(&body.external_refs))?;
    let class = body.class.clone();
    let update = items::ItemUpdate {
        name: Some(body.name.clone()),
        status: body.status,
        environment: body.environment.map(Some),
        criticality: body.criticality.map(Some),
        owner_group: body.owner_group.clone().map(Some),
        attributes: Some(body.attributes.clone()).filter(|a| !a.is_empty()),
        external_refs: Some(body.external_refs.clone()),
    };
    let ctx = caller.write_context();
    let upserted = upsert_by_reference(
        &state,
        items::ENTITY,
        &reference,
        || create(&state, &caller, body),
        |id| async {
            state
                .db
                .write(move |conn| {
                    let existing = items::get(conn, &id)?;
                    // The stored item is what another class conflicts with.
                    if existing.class != class {
                        return Err(ApiError::Conflict(format!(
                            "class: the reference belongs to a {}; an item's class does not \
                             change",
                            existing.class
                        )));
                    }
                    Ok(items::update(conn, &ctx, &id, None, update)?)
                })
                .await
        },
    )
    .await?;
    Ok(match upserted {
        Upserted::Created(item) => created(location(&item), item.version, &item),
        Upserted::Updated(item) => with_etag(StatusCode::OK, item.version, &item),
    })
}

/// Values of a repeatable enumeration filter (`status=a&status=b` or `status=a,b`).
fn enum_values<T: FromStr>(params: &QueryParams, name: &str, names: &str) -> ApiResult<Vec<T>> {
    params
        .all(name)
        .iter()
        .flat_map(|v| v.split(','))
        .map(|v| {
            v.trim()
                .parse()
                .map_err(|_| ApiError::invalid(name, format!("must be one of {names}")))
        })
        .collect()
}

/// List configuration items.
///
/// Besides the parameters below, `attr.<name>=value` filters on an identifying attribute by
/// equality (1 to 1,000 characters; repeatable, one per attribute), e.g.
/// `attr.hostname=web01`, served by the identifier index.
#[utoipa::path(
    tag = "cmdb", operation_id = "list_configuration_items",
    params(
        ("class" = Option<String>, Query, description = "The class and its subclasses"),
        ("status" = Option<Vec<CiStatus>>, Query), ("environment" = Option<Vec<Environment>>, Query),
        ("criticality" = Option<Vec<Criticality>>, Query),
        ("owner_group" = Option<String>, Query, description = "A group id"),
        ("q" = Option<String>, Query, description = "Text in the name"),
        ("external_ref" = Option<String>, Query, description = "system:id"),
        ("limit" = Option<i64>, Query), ("cursor" = Option<String>, Query),
    ),
    responses((status = 200, body = Page<ConfigurationItem>), (status = 422, body = crate::error::Problem)),
)]
#[get("/api/v1/configuration-items")]
pub async fn list_items(
    _caller: Authorized<CmdbReaders>,
    state: web::Data<AppState>,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    let attr_names: Vec<String> = form_urlencoded::parse(req.query_string().as_bytes())
        .map(|(name, _)| name.into_owned())
        .filter(|name| name.starts_with("attr."))
        .collect();
    let mut accepted: Vec<&str> = [
        &PAGE_PARAMS[..],
        &[
            "class",
            "status",
            "environment",
            "criticality",
            "owner_group",
            "q",
            "external_ref",
        ],
    ]
    .concat();
    accepted.extend(attr_names.iter().map(String::as_str));
    let params = QueryParams::parse(&req, &accepted)?;
    let mut attr_filters = Vec::new();
    for name in &attr_names {
        if attr_filters
            .iter()
            .any(|(n, _): &(String, String)| n == &name[5..])
        {
            continue;
        }
        let value = params
            .text_up_to(name, 1000)?
            .ok_or_else(|| ApiError::invalid(name.as_str(), "must not be empty"))?;
        attr_filters.push((name[5..].to_owned(), value));
    }
    let class = params.text("class")?;
    let statuses = enum_values(&params, "status", &CiStatus::names())?;
    let environments = enum_values(&params, "environment", &Environment::names())?;
    let criticalities = enum_values(&params, "criticality", &Criticality::names())?;
    let owner_group = params.text("owner_group")?;
    let q = params.text("q")?;
    let external_ref = params.external_ref()?;
    let page = params.page::<String>()?;
    let slice = state
        .db
        .read(move |conn| -> ApiResult<_> {
            let set = classes::all(conn)?;
            let identifying = set.identifying_names();
            for (name, _) in &attr_filters {
                if !identifying.contains(name) {
                    return Err(ApiError::invalid(
                        format!("attr.{name}"),
                        "only identifying attributes can be filtered on",
                    ));
                }
            }
            // A class that does not exist has no items, as a group that does not exist owns
            // none.
            let classes = match &class {
                Some(class) if set.get(class).is_none() => Some(Vec::new()),
                Some(class) => Some(set.with_descendants(class)),
                None => None,
            };
            let filter = items::ItemFilter {
                classes,
                statuses,
                environments,
                criticalities,
                owner_group,
                identifiers: attr_filters,
                q,
                external_ref,
            };
            Ok(items::list(
                conn,
                &filter,
                page.cursor.as_deref(),
                page.limit,
            )?)
        })
        .await?;
    Ok(Page::from_slice(slice, |item| item.id.clone()).respond(&req))
}

/// Get a configuration item, with the source of each attribute.
#[utoipa::path(
    tag = "cmdb", operation_id = "get_configuration_item",
    params(("id" = String, Path)),
    responses((status = 200, body = ConfigurationItem, headers(("ETag" = String))), (status = 404, body = crate::error::Problem)),
)]
#[get("/api/v1/configuration-items/{id}")]
pub async fn get_item(
    _caller: Authorized<CmdbReaders>,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let id = id.into_inner();
    let item = state
        .db
        .read(move |conn| items::get(conn, &id))
        .await
        .map_err(|e| crate::error::not_found_as(e, "configuration item"))?;
    Ok(with_etag(StatusCode::OK, item.version, &item))
}

/// Update a configuration item (JSON merge patch). Setting `status` to `retired` retires it.
#[utoipa::path(
    tag = "cmdb", operation_id = "update_configuration_item",
    params(("id" = String, Path), ("If-Match" = Option<String>, Header)),
    request_body(content = UpdateItem, content_type = "application/merge-patch+json"),
    responses((status = 200, body = ConfigurationItem, headers(("ETag" = String))), (status = 404, body = crate::error::Problem),
              (status = 409, body = crate::error::Problem), (status = 412, body = crate::error::Problem),
              (status = 422, body = crate::error::Problem)),
)]
#[patch("/api/v1/configuration-items/{id}")]
pub async fn update_item(
    caller: Authorized<CmdbWriters>,
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
    body: ValidJson<UpdateItem>,
) -> ApiResult<HttpResponse> {
    let expected_version = if_match(&req)?;
    let body = body.0;
    check_refs(body.external_refs.as_deref())?;
    let update = items::ItemUpdate {
        name: body.name,
        status: body.status,
        environment: body.environment,
        criticality: body.criticality,
        owner_group: body.owner_group,
        attributes: body.attributes,
        external_refs: body.external_refs,
    };
    let ctx = caller.write_context();
    let id = id.into_inner();
    let item = state
        .db
        .write(move |conn| items::update(conn, &ctx, &id, expected_version, update))
        .await
        .map_err(|e| not_found_as(e, "configuration item"))?;
    Ok(with_etag(StatusCode::OK, item.version, &item))
}

/// A whole number from 1 to `max`, `default` when absent.
fn bounded(params: &QueryParams, name: &str, max: usize, default: usize) -> ApiResult<usize> {
    let message = format!("must be a whole number from 1 to {max}");
    let value = params.parsed::<usize>(name, &message)?.unwrap_or(default);
    if (1..=max).contains(&value) {
        Ok(value)
    } else {
        Err(ApiError::invalid(name, message))
    }
}

fn relationship_types(params: &QueryParams) -> ApiResult<Vec<RelationshipType>> {
    let mut types: Vec<RelationshipType> =
        enum_values(params, "types", &RelationshipType::names())?;
    types.sort();
    types.dedup();
    Ok(types)
}

/// The relationships of an item, each named as the item reads it.
#[utoipa::path(
    tag = "cmdb", operation_id = "list_configuration_item_relationships",
    params(("id" = String, Path),
           ("direction" = Option<RelationshipSide>, Query, description = "outgoing, incoming or both (default)"),
           ("types" = Option<String>, Query, description = "Relationship types, comma-separated"),
           ("limit" = Option<i64>, Query), ("cursor" = Option<String>, Query)),
    responses((status = 200, body = Page<ItemRelationship>), (status = 404, body = crate::error::Problem),
              (status = 422, body = crate::error::Problem)),
)]
#[get("/api/v1/configuration-items/{id}/relationships")]
pub async fn item_relationships(
    _caller: Authorized<CmdbReaders>,
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let params = QueryParams::parse(&req, &[&PAGE_PARAMS[..], &["direction", "types"]].concat())?;
    let side = match params.parsed::<RelationshipSide>("direction", "outgoing, incoming or both")? {
        None | Some(RelationshipSide::Both) => Side::Both,
        Some(RelationshipSide::Outgoing) => Side::Outgoing,
        Some(RelationshipSide::Incoming) => Side::Incoming,
    };
    let types = relationship_types(&params)?;
    let page = params.page::<String>()?;
    let id = id.into_inner();
    let slice = state
        .db
        .read(move |conn| {
            relationships::of_item(conn, &id, side, &types, page.cursor.as_deref(), page.limit)
        })
        .await
        .map_err(|e| crate::error::not_found_as(e, "configuration item"))?;
    Ok(Page::from_slice(slice, |r| r.id.clone()).respond(&req))
}

/// Impact analysis: every item reached upstream (who relies on this item) or downstream (what
/// it relies on) within `depth` steps, with its distance and one shortest path, and the
/// business services among them. Cycles are walked once.
#[utoipa::path(
    tag = "cmdb", operation_id = "configuration_item_impact",
    params(("id" = String, Path),
           ("direction" = Option<Direction>, Query, description = "upstream (default) or downstream"),
           ("depth" = Option<u32>, Query, minimum = 1, maximum = 10, description = "1 to 10, default 5"),
           ("types" = Option<String>, Query, description = "Relationship types to follow, comma-separated (default all)"),
           ("limit" = Option<usize>, Query, description = "Most items returned, 1 to 10,000, default 1,000; `truncated` tells when more were reached")),
    responses((status = 200, body = Impact), (status = 404, body = crate::error::Problem),
              (status = 422, body = crate::error::Problem)),
)]
#[get("/api/v1/configuration-items/{id}/impact")]
pub async fn item_impact(
    _caller: Authorized<CmdbReaders>,
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let params = QueryParams::parse(&req, &["direction", "depth", "types", "limit"])?;
    let direction = match params.single("direction")? {
        None | Some("upstream") => Direction::Upstream,
        Some("downstream") => Direction::Downstream,
        Some(_) => {
            return Err(ApiError::invalid(
                "direction",
                "must be upstream or downstream",
            ))
        }
    };
    let depth = bounded(
        &params,
        "depth",
        impact::MAX_DEPTH as usize,
        impact::DEFAULT_DEPTH as usize,
    )? as u32;
    let limit = bounded(&params, "limit", impact::MAX_LIMIT, impact::DEFAULT_LIMIT)?;
    let types = relationship_types(&params)?;
    let id = id.into_inner();
    let graphs = state.db.graphs();
    let impact = state
        .db
        .read(move |conn| -> Result<Impact, StoreError> {
            relationships::impact(conn, &graphs, &id, direction, depth, &types, limit)
        })
        .await
        .map_err(|e| crate::error::not_found_as(e, "configuration item"))?;
    Ok(HttpResponse::Ok().json(impact))
}

/// The audit trail of an item, newest first: attribute-level old and new values with their
/// sources, and relationship changes.
#[utoipa::path(
    tag = "cmdb", operation_id = "configuration_item_history",
    params(("id" = String, Path), ("limit" = Option<i64>, Query), ("cursor" = Option<String>, Query)),
    responses((status = 200, body = Page<AuditEvent>), (status = 404, body = crate::error::Problem)),
)]
#[get("/api/v1/configuration-items/{id}/history")]
pub async fn item_history(
    _caller: Authorized<CmdbReaders>,
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let page = QueryParams::parse(&req, &PAGE_PARAMS)?.page::<String>()?;
    let id = id.into_inner();
    let slice = state
        .db
        .read(move |conn| {
            let item = items::get(conn, &id)?;
            let filter = audit::AuditFilter {
                entity_type: Some(items::ENTITY.into()),
                entity_id: Some(item.id),
                exclude_actions: Vec::new(),
            };
            audit::list(conn, &filter, page.cursor.as_deref(), page.limit)
        })
        .await
        .map_err(|e| crate::error::not_found_as(e, "configuration item"))?;
    Ok(Page::from_slice(slice, |entry| entry.id.clone())
        .map(AuditEvent::from)
        .respond(&req))
}

/// A source name: 1 to 64 letters, digits, `_`, `-`, `.` or `:`.
pub(crate) fn check_source(source: &str) -> Result<(), &'static str> {
    let ok = (1..=64).contains(&source.len())
        && source
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'));
    if ok {
        Ok(())
    } else {
        Err("must be 1 to 64 letters, digits, '_', '-', '.' or ':'")
    }
}

/// The longest batch-local key of a reconciled item, in characters.
pub const MAX_BATCH_KEY_CHARS: usize = 200;

#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReconcileItem {
    /// A key local to the batch, for `relationships` (1 to 200 characters).
    pub key: Option<String>,
    pub class: String,
    /// Needed to create the item; an existing item keeps its name.
    pub name: Option<String>,
    /// Used when the item is created (default `operational`).
    pub status: Option<CiStatus>,
    pub environment: Option<Environment>,
    pub criticality: Option<Criticality>,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub attributes: Map<String, Value>,
}

#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReconcileRelationship {
    /// The `key` of a batch item.
    pub source: String,
    #[serde(rename = "type")]
    pub rel_type: RelationshipType,
    pub target: String,
}

#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReconcileBatch {
    /// Who reports the data (`sccm`, `discovery`, `crm`...), ranked by each class's precedence.
    #[schema(example = "discovery", pattern = "^[A-Za-z0-9_.:-]{1,64}$")]
    pub source: String,
    /// Up to 1,000 items.
    pub items: Vec<ReconcileItem>,
    #[serde(default)]
    pub relationships: Vec<ReconcileRelationship>,
    /// All or nothing: any conflict or invalid entry refuses the whole batch with a 409
    /// `batch-refused` listing each entry (a dry run answers the same).
    #[serde(default)]
    pub atomic: bool,
}

/// Reconcile a batch of discovered items: each is identified by its class's identification
/// rules and created, updated, left unchanged, or reported as a conflict or invalid. With
/// `dry_run=true` nothing is written and the answer is what the real run would do (created
/// items have no id yet).
#[utoipa::path(
    tag = "cmdb", operation_id = "reconcile_configuration_items",
    params(("dry_run" = Option<bool>, Query)),
    request_body = ReconcileBatch,
    responses((status = 200, body = Report), (status = 403, body = crate::error::Problem),
              (status = 413, body = crate::error::Problem), (status = 422, body = crate::error::Problem)),
)]
#[post("/api/v1/configuration-items/reconcile")]
pub async fn reconcile_items(
    caller: Authorized<CmdbWriters>,
    state: web::Data<AppState>,
    req: HttpRequest,
    body: ValidJson<ReconcileBatch>,
) -> ApiResult<HttpResponse> {
    let dry_run = QueryParams::parse(&req, &["dry_run"])?
        .boolean("dry_run")?
        .unwrap_or(false);
    let body = body.0;
    if body.items.len() > MAX_BATCH {
        return Err(ApiError::PayloadTooLarge(format!(
            "a batch holds at most {MAX_BATCH} items, this one {}",
            body.items.len()
        )));
    }
    if body.relationships.len() > 10 * MAX_BATCH {
        return Err(ApiError::PayloadTooLarge(format!(
            "a batch holds at most {} relationships",
            10 * MAX_BATCH
        )));
    }
    check_source(&body.source).map_err(|m| ApiError::invalid("source", m))?;
    let mut errors = Vec::new();
    for (index, item) in body.items.iter().enumerate() {
        if item
            .key
            .as_ref()
            .is_some_and(|k| k.is_empty() || k.chars().count() > MAX_BATCH_KEY_CHARS)
        {
            errors.push(FieldError::new(
                format!("items[{index}].key"),
                format!("must be 1 to {MAX_BATCH_KEY_CHARS} characters"),
            ));
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::from_field_errors(errors));
    }
    let batch = Batch {
        source: body.source,
        items: body
            .items
            .into_iter()
            .map(|i| {
                (
                    i.key,
                    BatchItem {
                        class: i.class,
                        name: i.name,
                        status: i.status,
                        environment: i.environment,
                        criticality: i.criticality,
                        attributes: i.attributes,
                    },
                )
            })
            .collect(),
        relationships: body
            .relationships
            .into_iter()
            .map(|r| BatchRelationship {
                source: r.source,
                rel_type: r.rel_type,
                target: r.target,
            })
            .collect(),
        atomic: body.atomic,
    };
    let report = if dry_run {
        state
            .db
            .read(move |conn| reconcile::dry_run(conn, &batch))
            .await
    } else {
        let ctx = caller.write_context();
        state
            .db
            .write(move |conn| reconcile::run(conn, &ctx, &batch))
            .await
    }
    .map_err(ApiError::from)?;
    Ok(HttpResponse::Ok().json(report))
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(reconcile_items)
        .service(upsert_item_by_external_ref)
        .service(create_item)
        .service(list_items)
        .service(get_item)
        .service(update_item)
        .service(item_relationships)
        .service(item_impact)
        .service(item_history);
}
