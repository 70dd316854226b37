//! Users: people and service accounts that sign in.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use domain::{Changes, ExternalRef, Role, User};
use serde_json::json;

use crate::audit::{self, Mutation};
use crate::schema::{revoked_tokens, users};
use crate::{
    external_refs, fixed_update, lower, utc, DbConnection, Slice, StoreError, WriteContext,
};

pub const ENTITY: &str = "user";

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = users)]
struct UserRow {
    id: String,
    username: String,
    email: Option<String>,
    display_name: String,
    roles: String,
    active: bool,
    created_at: NaiveDateTime,
    updated_at: NaiveDateTime,
    version: i64,
}

impl UserRow {
    fn into_user(self, external_refs: Vec<ExternalRef>) -> User {
        User {
            roles: parse_roles(&self.roles),
            id: self.id,
            username: self.username,
            email: self.email,
            display_name: self.display_name,
            active: self.active,
            external_refs,
            created_at: utc(self.created_at),
            updated_at: utc(self.updated_at),
            version: self.version,
        }
    }
}

fn parse_roles(stored: &str) -> Vec<Role> {
    serde_json::from_str(stored).unwrap_or_default()
}

fn store_roles(roles: &[Role]) -> String {
    json!(roles).to_string()
}

/// A user to create; the password is already hashed.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub username: String,
    pub email: Option<String>,
    pub display_name: String,
    pub password_hash: Option<String>,
    pub roles: Vec<Role>,
    pub external_refs: Vec<ExternalRef>,
}

pub fn create(
    conn: &mut DbConnection,
    ctx: &WriteContext,
    new: NewUser,
) -> Result<User, StoreError> {
    let taken = users::table
        .filter(users::username.eq(&new.username))
        .count()
        .get_result::<i64>(conn)?;
    if taken > 0 {
        return Err(StoreError::Conflict(format!(
            "username {} is taken",
            new.username
        )));
    }
    let id = crate::new_id();
    diesel::insert_into(users::table)
        .values((
            users::id.eq(&id),
            users::username.eq(&new.username),
            users::email.eq(&new.email),
            users::display_name.eq(&new.display_name),
            users::password_hash.eq(&new.password_hash),
            users::roles.eq(store_roles(&new.roles)),
            users::active.eq(true),
            users::created_at.eq(ctx.at),
            users::updated_at.eq(ctx.at),
            users::version.eq(1),
        ))
        .execute(conn)?;
    external_refs::replace(conn, ENTITY, &id, &new.external_refs)?;
    let user = get(conn, &id)?;
    let mut changes = Changes::created(&user);
    if new.password_hash.is_some() {
        changes.redacted("password");
    }
    audit::record(
        ctx,
        Mutation {
            entity_type: ENTITY,
            entity_id: &id,
            action: "create",
            changes: changes.into_value(),
            event_type: "user.created",
            event_data: json!(user),
        },
    )?;
    Ok(user)
}

pub fn get(conn: &mut DbConnection, id: &str) -> Result<User, StoreError> {
    let row: UserRow = users::table
        .find(id)
        .select(UserRow::as_select())
        .get_result(conn)?;
    let refs = external_refs::of(conn, ENTITY, id)?;
    Ok(row.into_user(refs))
}

pub fn count(conn: &mut DbConnection) -> Result<i64, StoreError> {
    Ok(users::table.count().get_result(conn)?)
}

/// What sign-in needs: the user's id, stored hash and whether it may sign in.
#[derive(Debug, Clone, Queryable)]
pub struct Credentials {
    pub id: String,
    pub password_hash: Option<String>,
    pub active: bool,
    pub roles: String,
    /// Set by an admin's reset: the user must choose a password before doing anything else.
    pub must_change_password: bool,
}

impl Credentials {
    pub fn roles(&self) -> Vec<Role> {
        parse_roles(&self.roles)
    }
}

pub fn credentials_by_username(
    conn: &mut DbConnection,
    username: &str,
) -> Result<Option<Credentials>, StoreError> {
    Ok(users::table
        .filter(users::username.eq(username))
        .select((
            users::id,
            users::password_hash,
            users::active,
            users::roles,
            users::must_change_password,
        ))
        .get_result(conn)
        .optional()?)
}

/// What every request of a signed-in user is checked against: whether they may act, as whom,
/// which tokens are refused (issued before `valid_after`, or revoked one by one at logout).
#[derive(Debug, Clone)]
pub struct TokenState {
    pub username: String,
    pub roles: Vec<Role>,
    pub valid_after: Option<NaiveDateTime>,
    pub must_change_password: bool,
    /// The ids (`jti`) of the user's unexpired revoked tokens.
    pub revoked: Vec<String>,
}

/// The token state of an active user; `None` for an unknown or deactivated one.
pub fn token_state(
    conn: &mut DbConnection,
    id: &str,
    now: NaiveDateTime,
) -> Result<Option<TokenState>, StoreError> {
    let query = users::table.find(id).select((
        users::username,
        users::active,
        users::roles,
        users::valid_after,
        users::must_change_password,
    ));
    let row = with_backend!(conn, c => query
        .get_result::<(String, bool, String, Option<NaiveDateTime>, bool)>(c))
    .optional()?;
    let Some((username, true, roles, valid_after, must_change_password)) = row else {
        return Ok(None);
    };
    let revoked = revoked_tokens::table
        .filter(revoked_tokens::user_id.eq(id))
        .filter(revoked_tokens::expires_at.gt(now))
        .select(revoked_tokens::jti)
        .load::<String>(conn)?;
    Ok(Some(TokenState {
        username,
        roles: parse_roles(&roles),
        valid_after,
        must_change_password,
        revoked,
    }))
}

/// Past this many revoked unexpired tokens, a logout refuses all of the user's earlier tokens
/// instead, so the list every request is checked against stays short.
const MAX_REVOKED_PER_USER: i64 = 50;

/// Refuses one access token from `at` on (logout); kept until it would have expired.
pub fn revoke_token(
    conn: &mut DbConnection,
    jti: &str,
    user_id: &str,
    expires_at: NaiveDateTime,
    at: NaiveDateTime,
) -> Result<(), StoreError> {
    let revoked = revoked_tokens::table
        .filter(revoked_tokens::user_id.eq(user_id))
        .filter(revoked_tokens::expires_at.gt(at))
        .count()
        .get_result::<i64>(conn)?;
    if revoked >= MAX_REVOKED_PER_USER {
        fixed_update(
            users::table,
            users::valid_after.eq(at),
            users::id.eq(user_id),
        )
        .execute(conn)?;
        diesel::delete(revoked_tokens::table.filter(revoked_tokens::user_id.eq(user_id)))
            .execute(conn)?;
        return Ok(());
    }
    let known = revoked_tokens::table
        .find(jti)
        .count()
        .get_result::<i64>(conn)?;
    if known == 0 {
        diesel::insert_into(revoked_tokens::table)
            .values((
                revoked_tokens::jti.eq(jti),
                revoked_tokens::user_id.eq(user_id),
                revoked_tokens::expires_at.eq(expires_at),
            ))
            .execute(conn)?;
    }
    Ok(())
}

/// Forgets revoked tokens that have expired anyway; returns how many.
pub fn purge_revoked_tokens(
    conn: &mut DbConnection,
    now: NaiveDateTime,
) -> Result<usize, StoreError> {
    Ok(
        diesel::delete(revoked_tokens::table.filter(revoked_tokens::expires_at.le(now)))
            .execute(conn)?,
    )
}

/// The stored password hash of a user, for checking their current password.
pub fn password_hash(conn: &mut DbConnection, id: &str) -> Result<Option<String>, StoreError> {
    Ok(users::table
        .find(id)
        .select(users::password_hash)
        .get_result::<Option<String>>(conn)?)
}

/// Sets a user's own new password: tokens issued before now are refused, and a required
/// change is done.
pub fn change_password(
    conn: &mut DbConnection,
    ctx: &WriteContext,
    id: &str,
    hash: &str,
) -> Result<(), StoreError> {
    let before = get(conn, id)?;
    fixed_update(
        users::table,
        (
            users::password_hash.eq(hash),
            users::must_change_password.eq(false),
            users::valid_after.eq(ctx.at),
            users::updated_at.eq(ctx.at),
            users::version.eq(before.version + 1),
        ),
        users::id.eq(id),
    )
    .execute(conn)?;
    let mut changes = Changes::new();
    changes.redacted("password");
    let user = get(conn, id)?;
    audit::record(
        ctx,
        Mutation {
            entity_type: ENTITY,
            entity_id: id,
            action: "change_password",
            changes: changes.into_value(),
            event_type: "user.password_changed",
            event_data: json!(user),
        },
    )?;
    Ok(())
}

/// The sign-in state of a user, read on every authenticated request so that deactivation and
/// role changes take effect at once on every node.
pub fn access(
    conn: &mut DbConnection,
    id: &str,
) -> Result<Option<(String, bool, Vec<Role>)>, StoreError> {
    let query = users::table
        .find(id)
        .select((users::username, users::active, users::roles));
    Ok(
        with_backend!(conn, c => query.get_result::<(String, bool, String)>(c))
            .optional()?
            .map(|(username, active, roles)| (username, active, parse_roles(&roles))),
    )
}

#[derive(Debug, Default, Clone)]
pub struct UserFilter {
    /// Words in username, display name or email, case-insensitive.
    pub q: Option<String>,
    pub role: Option<Role>,
    pub active: Option<bool>,
    pub external_ref: Option<ExternalRef>,
}

/// Users in creation order; `after` is the last id of the previous page.
pub fn list(
    conn: &mut DbConnection,
    filter: &UserFilter,
    after: Option<&str>,
    limit: i64,
) -> Result<Slice<User>, StoreError> {
    let mut query = users::table
        .select(UserRow::as_select())
        .order(users::id.asc())
        .into_boxed();
    if let Some(q) = &filter.q {
        let pattern = crate::contains_pattern(q);
        query = query.filter(
            lower(users::username)
                .like(pattern.clone())
                .escape('\\')
                .or(lower(users::display_name)
                    .like(pattern.clone())
                    .escape('\\'))
                .or(lower(users::email.assume_not_null())
                    .like(pattern)
                    .escape('\\')),
        );
    }
    if let Some(role) = filter.role {
        query = query.filter(users::roles.like(format!("%\"{}\"%", role.as_str())));
    }
    if let Some(active) = filter.active {
        query = query.filter(users::active.eq(active));
    }
    if let Some(reference) = &filter.external_ref {
        match external_refs::find_entity(conn, ENTITY, &reference.system, &reference.id)? {
            Some(id) => query = query.filter(users::id.eq(id)),
            None => {
                return Ok(Slice {
                    items: Vec::new(),
                    more: false,
                })
            }
        }
    }
    if let Some(after) = after {
        query = query.filter(users::id.gt(after));
    }
    let rows = crate::load_page::<_, _, UserRow>(conn, query, limit)?;
    external_refs::attach(
        conn,
        ENTITY,
        rows,
        |row| Some(row.id.as_str()),
        |row, refs| Ok(UserRow::into_user(row, refs)),
    )
}

/// A partial update; `None` leaves a field as it is.
#[derive(Debug, Default, Clone)]
pub struct UserUpdate {
    pub email: Option<Option<String>>,
    pub display_name: Option<String>,
    pub roles: Option<Vec<Role>>,
    pub active: Option<bool>,
    pub password_hash: Option<String>,
    pub external_refs: Option<Vec<ExternalRef>>,
}

/// Applies `update` if the user is still at `expected_version` (when given).
pub fn update(
    conn: &mut DbConnection,
    ctx: &WriteContext,
    id: &str,
    expected_version: Option<i64>,
    update: UserUpdate,
) -> Result<User, StoreError> {
    let before = get(conn, id)?;
    crate::check_version(expected_version, before.version)?;
    let mut after = before.clone();
    if let Some(email) = update.email {
        after.email = email;
    }
    if let Some(display_name) = update.display_name {
        after.display_name = display_name;
    }
    if let Some(roles) = update.roles {
        after.roles = roles;
    }
    if let Some(active) = update.active {
        after.active = active;
    }
    if let Some(refs) = update.external_refs {
        after.external_refs = refs;
    }
    let mut changes = Changes::new();
    changes
        .field("email", &before.email, &after.email)
        .field("display_name", &before.display_name, &after.display_name)
        .field("roles", &before.roles, &after.roles)
        .field("active", &before.active, &after.active)
        .field("external_refs", &before.external_refs, &after.external_refs);
    if update.password_hash.is_some() {
        changes.redacted("password");
    }
    if changes.is_empty() {
        return Ok(before);
    }
    let updated = fixed_update(
        users::table,
        (
            users::email.eq(&after.email),
            users::display_name.eq(&after.display_name),
            users::roles.eq(store_roles(&after.roles)),
            users::active.eq(after.active),
            users::updated_at.eq(ctx.at),
            users::version.eq(before.version + 1),
        ),
        users::id.eq(id).and(users::version.eq(before.version)),
    )
    .execute(conn)?;
    if updated == 0 {
        return Err(StoreError::VersionMismatch {
            expected: before.version,
            actual: before.version + 1,
        });
    }
    if let Some(hash) = &update.password_hash {
        // An admin's reset: the user chooses their own password at next sign-in.
        fixed_update(
            users::table,
            (
                users::password_hash.eq(hash),
                users::must_change_password.eq(true),
            ),
            users::id.eq(id),
        )
        .execute(conn)?;
    }
    if update.password_hash.is_some() || (before.active && !after.active) {
        // Every token issued before the reset or the deactivation is refused from now on.
        fixed_update(
            users::table,
            users::valid_after.eq(ctx.at),
            users::id.eq(id),
        )
        .execute(conn)?;
    }
    if before.external_refs != after.external_refs {
        external_refs::replace(conn, ENTITY, id, &after.external_refs)?;
    }
    let user = get(conn, id)?;
    let (action, event_type) = match (before.active, user.active) {
        (true, false) => ("deactivate", "user.deactivated"),
        (false, true) => ("activate", "user.activated"),
        _ => ("update", "user.updated"),
    };
    audit::record(
        ctx,
        Mutation {
            entity_type: ENTITY,
            entity_id: id,
            action,
            changes: changes.into_value(),
            event_type,
            event_data: json!(user),
        },
    )?;
    Ok(user)
}
