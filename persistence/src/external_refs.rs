//! References from our records to records in other systems (CRM, ERP, HR), for sync.

use std::collections::HashMap;

use diesel::prelude::*;
use domain::ExternalRef;

use crate::conditions::InList;
use crate::schema::external_refs;
use crate::{DbConnection, StoreError};

/// The references of one record, ordered by system.
pub fn of(
    conn: &mut DbConnection,
    entity_type: &str,
    entity_id: &str,
) -> Result<Vec<ExternalRef>, StoreError> {
    Ok(external_refs::table
        .filter(external_refs::entity_type.eq(entity_type))
        .filter(external_refs::entity_id.eq(entity_id))
        .order(external_refs::system.asc())
        .select((external_refs::system, external_refs::external_id))
        .load::<(String, String)>(conn)?
        .into_iter()
        .map(|(system, id)| ExternalRef { system, id })
        .collect())
}

/// The references of many records in one query, keyed by record id.
pub fn of_many(
    conn: &mut DbConnection,
    entity_type: &str,
    entity_ids: &[&str],
) -> Result<HashMap<String, Vec<ExternalRef>>, StoreError> {
    let mut by_entity: HashMap<String, Vec<ExternalRef>> = HashMap::new();
    if entity_ids.is_empty() {
        return Ok(by_entity);
    }
    let rows = external_refs::table
        .filter(external_refs::entity_type.eq(entity_type))
        .filter(InList::bound(
            "external_refs.entity_id",
            entity_ids.iter().map(|id| id.to_string()).collect(),
        ))
        .order((external_refs::entity_id.asc(), external_refs::system.asc()))
        .select((
            external_refs::entity_id,
            external_refs::system,
            external_refs::external_id,
        ))
        .load::<(String, String, String)>(conn)?;
    for (entity_id, system, id) in rows {
        by_entity
            .entry(entity_id)
            .or_default()
            .push(ExternalRef { system, id });
    }
    Ok(by_entity)
}

/// Turns a page of rows into records carrying their references, with one query for the page.
pub(crate) fn attach<R, T>(
    conn: &mut DbConnection,
    entity_type: &str,
    rows: crate::Slice<R>,
    // The row's id, or `None` for a row known to have no references (not looked up).
    id: impl Fn(&R) -> Option<&str>,
    build: impl Fn(R, Vec<ExternalRef>) -> Result<T, StoreError>,
) -> Result<crate::Slice<T>, StoreError> {
    let ids: Vec<&str> = rows.items.iter().filter_map(&id).collect();
    let mut refs = of_many(conn, entity_type, &ids)?;
    let items = rows
        .items
        .into_iter()
        .map(|row| {
            let own = id(&row).and_then(|id| refs.remove(id)).unwrap_or_default();
            build(row, own)
        })
        .collect::<Result<_, _>>()?;
    Ok(crate::Slice {
        items,
        more: rows.more,
    })
}

/// Replaces a record's references. A reference already held by another record of the same
/// type is a conflict naming the system and id.
pub fn replace(
    conn: &mut DbConnection,
    entity_type: &str,
    entity_id: &str,
    refs: &[ExternalRef],
) -> Result<(), StoreError> {
    diesel::delete(
        external_refs::table
            .filter(external_refs::entity_type.eq(entity_type))
            .filter(external_refs::entity_id.eq(entity_id)),
    )
    .execute(conn)?;
    for reference in refs {
        let holder = find_entity(conn, entity_type, &reference.system, &reference.id)?;
        if let Some(holder) = holder {
            return Err(StoreError::Conflict(format!(
                "external reference {}:{} already belongs to {entity_type} {holder}",
                reference.system, reference.id
            )));
        }
        diesel::insert_into(external_refs::table)
            .values((
                external_refs::entity_type.eq(entity_type),
                external_refs::entity_id.eq(entity_id),
                external_refs::system.eq(&reference.system),
                external_refs::external_id.eq(&reference.id),
            ))
            .execute(conn)?;
    }
    Ok(())
}

/// The id of the record of `entity_type` that holds `system:external_id`, if any.
pub fn find_entity(
    conn: &mut DbConnection,
    entity_type: &str,
    system: &str,
    external_id: &str,
) -> Result<Option<String>, StoreError> {
    Ok(external_refs::table
        .filter(external_refs::entity_type.eq(entity_type))
        .filter(external_refs::system.eq(system))
        .filter(external_refs::external_id.eq(external_id))
        .select(external_refs::entity_id)
        .get_result(conn)
        .optional()?)
}
