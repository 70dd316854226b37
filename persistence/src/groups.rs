//! Assignment groups (teams) and their members.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use domain::{Changes, ExternalRef, Group, User};
use serde_json::json;

use crate::audit::{self, Mutation};
use crate::schema::{assignment_groups, group_members, users};
use crate::{
    external_refs, fixed_update, lower, utc, DbConnection, Slice, StoreError, WriteContext,
};

pub const ENTITY: &str = "group";

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = assignment_groups)]
struct GroupRow {
    id: String,
    name: String,
    description: String,
    email: Option<String>,
    created_at: NaiveDateTime,
    updated_at: NaiveDateTime,
    version: i64,
}

impl GroupRow {
    fn into_group(self, external_refs: Vec<ExternalRef>) -> Group {
        Group {
            id: self.id,
            name: self.name,
            description: self.description,
            email: self.email,
            external_refs,
            created_at: utc(self.created_at),
            updated_at: utc(self.updated_at),
            version: self.version,
        }
    }
}

#[derive(Debug, Clone)]
pub struct NewGroup {
    pub name: String,
    pub description: String,
    pub email: Option<String>,
    pub external_refs: Vec<ExternalRef>,
}

fn ensure_name_free(
    conn: &mut DbConnection,
    name: &str,
    except_id: Option<&str>,
) -> Result<(), StoreError> {
    let holder: Option<String> = assignment_groups::table
        .filter(assignment_groups::name.eq(name))
        .select(assignment_groups::id)
        .get_result(conn)
        .optional()?;
    match holder {
        Some(holder) if Some(holder.as_str()) != except_id => {
            Err(StoreError::Conflict(format!("a group named {name} exists")))
        }
        _ => Ok(()),
    }
}

pub fn create(
    conn: &mut DbConnection,
    ctx: &WriteContext,
    new: NewGroup,
) -> Result<Group, StoreError> {
    ensure_name_free(conn, &new.name, None)?;
    let id = crate::new_id();
    diesel::insert_into(assignment_groups::table)
        .values((
            assignment_groups::id.eq(&id),
            assignment_groups::name.eq(&new.name),
            assignment_groups::description.eq(&new.description),
            assignment_groups::email.eq(&new.email),
            assignment_groups::created_at.eq(ctx.at),
            assignment_groups::updated_at.eq(ctx.at),
            assignment_groups::version.eq(1),
        ))
        .execute(conn)?;
    external_refs::replace(conn, ENTITY, &id, &new.external_refs)?;
    let group = get(conn, &id)?;
    audit::record(
        ctx,
        Mutation {
            entity_type: ENTITY,
            entity_id: &id,
            action: "create",
            changes: Changes::created(&group).into_value(),
            event_type: "group.created",
            event_data: json!(group),
        },
    )?;
    Ok(group)
}

pub fn get(conn: &mut DbConnection, id: &str) -> Result<Group, StoreError> {
    let row: GroupRow = assignment_groups::table
        .find(id)
        .select(GroupRow::as_select())
        .get_result(conn)?;
    let refs = external_refs::of(conn, ENTITY, id)?;
    Ok(row.into_group(refs))
}

#[derive(Debug, Default, Clone)]
pub struct GroupFilter {
    pub q: Option<String>,
    pub member: Option<String>,
    pub external_ref: Option<ExternalRef>,
}

/// Groups in creation order; `after` is the last id of the previous page.
pub fn list(
    conn: &mut DbConnection,
    filter: &GroupFilter,
    after: Option<&str>,
    limit: i64,
) -> Result<Slice<Group>, StoreError> {
    let mut query = assignment_groups::table
        .select(GroupRow::as_select())
        .order(assignment_groups::id.asc())
        .into_boxed();
    if let Some(q) = &filter.q {
        let pattern = crate::contains_pattern(q);
        query = query.filter(
            lower(assignment_groups::name)
                .like(pattern.clone())
                .escape('\\')
                .or(lower(assignment_groups::description)
                    .like(pattern)
                    .escape('\\')),
        );
    }
    if let Some(member) = &filter.member {
        query = query.filter(
            assignment_groups::id.eq_any(
                group_members::table
                    .filter(group_members::user_id.eq(member.clone()))
                    .select(group_members::group_id),
            ),
        );
    }
    if let Some(reference) = &filter.external_ref {
        match external_refs::find_entity(conn, ENTITY, &reference.system, &reference.id)? {
            Some(id) => query = query.filter(assignment_groups::id.eq(id)),
            None => {
                return Ok(Slice {
                    items: Vec::new(),
                    more: false,
                })
            }
        }
    }
    if let Some(after) = after {
        query = query.filter(assignment_groups::id.gt(after));
    }
    let rows = crate::load_page::<_, _, GroupRow>(conn, query, limit)?;
    external_refs::attach(
        conn,
        ENTITY,
        rows,
        |row| Some(row.id.as_str()),
        |row, refs| Ok(GroupRow::into_group(row, refs)),
    )
}

#[derive(Debug, Default, Clone)]
pub struct GroupUpdate {
    pub name: Option<String>,
    pub description: Option<String>,
    pub email: Option<Option<String>>,
    pub external_refs: Option<Vec<ExternalRef>>,
}

pub fn update(
    conn: &mut DbConnection,
    ctx: &WriteContext,
    id: &str,
    expected_version: Option<i64>,
    update: GroupUpdate,
) -> Result<Group, StoreError> {
    let before = get(conn, id)?;
    crate::check_version(expected_version, before.version)?;
    let mut after = before.clone();
    if let Some(name) = update.name {
        after.name = name;
    }
    if let Some(description) = update.description {
        after.description = description;
    }
    if let Some(email) = update.email {
        after.email = email;
    }
    if let Some(refs) = update.external_refs {
        after.external_refs = refs;
    }
    let mut changes = Changes::new();
    changes
        .field("name", &before.name, &after.name)
        .field("description", &before.description, &after.description)
        .field("email", &before.email, &after.email)
        .field("external_refs", &before.external_refs, &after.external_refs);
    if changes.is_empty() {
        return Ok(before);
    }
    if before.name != after.name {
        ensure_name_free(conn, &after.name, Some(id))?;
    }
    let updated = fixed_update(
        assignment_groups::table,
        (
            assignment_groups::name.eq(&after.name),
            assignment_groups::description.eq(&after.description),
            assignment_groups::email.eq(&after.email),
            assignment_groups::updated_at.eq(ctx.at),
            assignment_groups::version.eq(before.version + 1),
        ),
        assignment_groups::id
            .eq(id)
            .and(assignment_groups::version.eq(before.version)),
    )
    .execute(conn)?;
    if updated == 0 {
        return Err(StoreError::VersionMismatch {
            expected: before.version,
            actual: before.version + 1,
        });
    }
    if before.external_refs != after.external_refs {
        external_refs::replace(conn, ENTITY, id, &after.external_refs)?;
    }
    let group = get(conn, id)?;
    audit::record(
        ctx,
        Mutation {
            entity_type: ENTITY,
            entity_id: id,
            action: "update",
            changes: changes.into_value(),
            event_type: "group.updated",
            event_data: json!(group),
        },
    )?;
    Ok(group)
}

pub fn is_member(
    conn: &mut DbConnection,
    group_id: &str,
    user_id: &str,
) -> Result<bool, StoreError> {
    Ok(group_members::table
        .find((group_id, user_id))
        .count()
        .get_result::<i64>(conn)?
        > 0)
}

/// Adds `user_id` to the group. Adding a member twice is a conflict.
pub fn add_member(
    conn: &mut DbConnection,
    ctx: &WriteContext,
    group_id: &str,
    user_id: &str,
) -> Result<(), StoreError> {
    get(conn, group_id)?;
    if is_member(conn, group_id, user_id)? {
        return Err(StoreError::Conflict(format!(
            "user {user_id} is already a member"
        )));
    }
    diesel::insert_into(group_members::table)
        .values((
            group_members::group_id.eq(group_id),
            group_members::user_id.eq(user_id),
            group_members::added_at.eq(ctx.at),
        ))
        .execute(conn)?;
    record_membership(ctx, group_id, user_id, true)
}

pub fn remove_member(
    conn: &mut DbConnection,
    ctx: &WriteContext,
    group_id: &str,
    user_id: &str,
) -> Result<(), StoreError> {
    let removed = diesel::delete(group_members::table.find((group_id, user_id))).execute(conn)?;
    if removed == 0 {
        return Err(StoreError::NotFound);
    }
    record_membership(ctx, group_id, user_id, false)
}

fn record_membership(
    ctx: &WriteContext,
    group_id: &str,
    user_id: &str,
    added: bool,
) -> Result<(), StoreError> {
    let (action, event_type, change) = if added {
        ("add_member", "group.member_added", json!([null, user_id]))
    } else {
        (
            "remove_member",
            "group.member_removed",
            json!([user_id, null]),
        )
    };
    audit::record(
        ctx,
        Mutation {
            entity_type: ENTITY,
            entity_id: group_id,
            action,
            changes: json!({ "member": change }),
            event_type,
            event_data: json!({ "group_id": group_id, "user_id": user_id }),
        },
    )?;
    Ok(())
}

/// Members of a group in the order of their user ids; `after` is the last id of the previous page.
pub fn members(
    conn: &mut DbConnection,
    group_id: &str,
    after: Option<&str>,
    limit: i64,
) -> Result<Slice<User>, StoreError> {
    get(conn, group_id)?;
    let mut query = group_members::table
        .filter(group_members::group_id.eq(group_id))
        .select(group_members::user_id)
        .order(group_members::user_id.asc())
        .into_boxed();
    if let Some(after) = after {
        query = query.filter(group_members::user_id.gt(after));
    }
    let ids = crate::load_page::<_, _, String>(conn, query, limit)?;
    let mut members = Vec::with_capacity(ids.items.len());
    for id in &ids.items {
        members.push(crate::users::get(conn, id)?);
    }
    Ok(Slice {
        items: members,
        more: ids.more,
    })
}

/// The groups a user belongs to, by name.
pub fn of_user(
    conn: &mut DbConnection,
    user_id: &str,
) -> Result<Vec<(String, String)>, StoreError> {
    Ok(group_members::table
        .inner_join(assignment_groups::table)
        .inner_join(users::table)
        .filter(group_members::user_id.eq(user_id))
        .order(assignment_groups::name.asc())
        .select((assignment_groups::id, assignment_groups::name))
        .load(conn)?)
}
