//! Use cases: what happens when someone reports, links, resolves... One module per practice,
//! between the routes (which extract, authorise, call and wrap) and the repositories. Each is a
//! unit of work handed to the write path.

pub mod alerts;
pub mod changes;
pub mod incidents;
pub mod problems;
pub mod webhooks;

use domain::cmdb::item::CiStatus;
use domain::FieldError;
use persistence::{cmdb, groups, users, DbConnection};

use crate::error::{unknown_reference, ApiError, ApiResult};
use crate::state::AppState;

/// A record's references for an upsert by `reference`: the body's, with the path's added. A
/// body reference to the same system under another id contradicts the path: 422.
pub fn with_path_reference(
    mut refs: Vec<domain::ExternalRef>,
    reference: &domain::ExternalRef,
) -> ApiResult<Vec<domain::ExternalRef>> {
    // Errors name the path's parts: `system` and `id`.
    if let Err(domain::DomainError::Invalid(errors)) =
        domain::ExternalRef::validate_list(std::slice::from_ref(reference), "path")
    {
        return Err(ApiError::from_field_errors(
            errors
                .into_iter()
                .map(|e| domain::FieldError::new(e.field.replace("path[0].", "path."), e.message))
                .collect(),
        ));
    }
    if refs
        .iter()
        .any(|r| r.system == reference.system && r.id != reference.id)
    {
        return Err(ApiError::invalid(
            "external_refs",
            format!(
                "holds another {} id than the path's {}",
                reference.system, reference.id
            ),
        ));
    }
    if !refs.contains(reference) {
        refs.push(reference.clone());
    }
    Ok(refs)
}

/// What an upsert by reference did.
pub enum Upserted<T> {
    Created(T),
    Updated(T),
}

/// Creates or updates the record of `entity_type` holding `reference` (another system pushing
/// its record): `create` when none holds it, else `update` with the holder's id. When another
/// push of the same record creates it meanwhile, `create` meets a conflict and that record is
/// updated instead; a conflict for any other reason (a name taken) is the answer.
pub async fn upsert_by_reference<T, Created, Updated>(
    state: &AppState,
    entity_type: &'static str,
    reference: &domain::ExternalRef,
    create: impl FnOnce() -> Created,
    update: impl FnOnce(String) -> Updated,
) -> ApiResult<Upserted<T>>
where
    Created: std::future::Future<Output = ApiResult<T>>,
    Updated: std::future::Future<Output = ApiResult<T>>,
{
    let holder = match holder_of(state, entity_type, reference).await? {
        Some(id) => id,
        None => match create().await {
            Ok(record) => return Ok(Upserted::Created(record)),
            // A constraint: the other push's reference was stored at the same instant.
            Err(conflict @ (ApiError::Conflict(_) | ApiError::ConstraintViolation { .. })) => {
                holder_of(state, entity_type, reference)
                    .await?
                    .ok_or(conflict)?
            }
            Err(other) => return Err(other),
        },
    };
    Ok(Upserted::Updated(update(holder).await?))
}

/// The record of `entity_type` holding `reference`, if any.
pub async fn holder_of(
    state: &AppState,
    entity_type: &'static str,
    reference: &domain::ExternalRef,
) -> ApiResult<Option<String>> {
    let reference = reference.clone();
    Ok(state
        .db
        .read(move |conn| {
            persistence::external_refs::find_entity(
                conn,
                entity_type,
                &reference.system,
                &reference.id,
            )
        })
        .await?)
}

/// A user a ticket refers to (caller, assignee) must exist and be active.
pub(crate) fn check_active_user(conn: &mut DbConnection, id: &str, field: &str) -> ApiResult<()> {
    match users::access(conn, id)? {
        Some((_, true, _)) => Ok(()),
        // The stored user is what the reference conflicts with.
        Some(_) => Err(ApiError::Conflict(format!(
            "{field}: the user is deactivated"
        ))),
        None => Err(ApiError::from_field_errors(vec![FieldError::unknown(
            field, "user",
        )])),
    }
}

/// The assignment group must exist.
pub(crate) fn check_group(conn: &mut DbConnection, group: &str) -> ApiResult<()> {
    groups::get(conn, group)
        .map(|_| ())
        .map_err(|e| unknown_reference(e, "assignment_group", "no such group"))
}

/// The group must exist; an assignee must be an active member of it.
pub(crate) fn check_assignment(
    conn: &mut DbConnection,
    group: Option<&str>,
    assignee: Option<&str>,
) -> ApiResult<()> {
    if let Some(group) = group {
        check_group(conn, group)?;
    }
    if let Some(assignee) = assignee {
        check_assignee(conn, group, assignee)?;
    }
    Ok(())
}

/// An assignee must be an active member of the ticket's assignment group. Membership is
/// stored, so an assignee the group does not have is a conflict (409). A request naming an
/// assignee without a group was refused when it was read (`ticket::assignee_has_group`); a
/// ticket whose stored group a patch leaves empty conflicts with it.
pub(crate) fn check_assignee(
    conn: &mut DbConnection,
    group: Option<&str>,
    assignee: &str,
) -> ApiResult<()> {
    check_active_user(conn, assignee, "assignee")?;
    let Some(group) = group else {
        return Err(ApiError::Conflict(
            "assignee: the ticket has no assignment group; give one with the assignee".into(),
        ));
    };
    if !groups::is_member(conn, group, assignee)? {
        return Err(ApiError::Conflict(
            "assignee: is not a member of the assignment group".into(),
        ));
    }
    Ok(())
}

/// The configuration items a ticket concerns must exist and be in service, each once; its
/// service must be an item of a `business_service` class. Only what changed is checked, so a
/// ticket whose item was retired since can still be worked.
pub(crate) fn check_cmdb_links(
    conn: &mut DbConnection,
    items: &[String],
    service: Option<&str>,
    before: Option<(&[String], Option<&str>)>,
) -> ApiResult<()> {
    let mut errors = Vec::new();
    if before.is_none_or(|(old, _)| old != items) {
        for (index, id) in items.iter().enumerate() {
            let field = format!("configuration_items[{index}]");
            if items[..index].contains(id) {
                errors.push(FieldError::new(field, "is listed twice"));
                continue;
            }
            if before.is_some_and(|(old, _)| old.contains(id)) {
                continue;
            }
            match cmdb::items::get(conn, id) {
                Ok(item) if item.status == CiStatus::Retired => {
                    errors.push(FieldError::new(field, format!("{} is retired", item.name)))
                }
                Ok(_) => {}
                Err(persistence::StoreError::NotFound) => {
                    errors.push(FieldError::unknown(field, "configuration item"))
                }
                Err(other) => return Err(other.into()),
            }
        }
    }
    if let Some(service) = service.filter(|s| before.is_none_or(|(_, old)| old != Some(*s))) {
        errors.extend(business_service_error(conn, service, "service")?);
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::from_field_errors(errors))
    }
}

/// Why `id` cannot be a business service (`None` when it can): no such item, or an item of
/// another class.
pub(crate) fn business_service_error(
    conn: &mut DbConnection,
    id: &str,
    field: &str,
) -> ApiResult<Option<FieldError>> {
    match cmdb::items::get(conn, id) {
        Ok(item) if cmdb::classes::all(conn)?.is_a(&item.class, "business_service") => Ok(None),
        Ok(item) => Ok(Some(FieldError::new(
            field,
            format!("{} is a {}, not a business_service", item.name, item.class),
        ))),
        Err(persistence::StoreError::NotFound) => {
            Ok(Some(FieldError::unknown(field, "configuration item")))
        }
        Err(other) => Err(other.into()),
    }
}
