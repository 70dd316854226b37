//! Machine credentials. Only a hash of each secret is stored.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use domain::{Actor, ActorKind, ApiToken, Changes, Role};
use serde_json::json;

use crate::audit::{self, Mutation};
use crate::schema::api_tokens;
use crate::{fixed_update, utc, DbConnection, Slice, StoreError, WriteContext};

pub const ENTITY: &str = "api_token";

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = api_tokens)]
struct ApiTokenRow {
    id: String,
    name: String,
    role: String,
    created_by: Option<String>,
    created_at: NaiveDateTime,
    expires_at: Option<NaiveDateTime>,
    revoked_at: Option<NaiveDateTime>,
    scopes: Option<String>,
    last_used_at: Option<NaiveDateTime>,
    created_by_kind: Option<String>,
    created_by_name: Option<String>,
}

impl ApiTokenRow {
    fn into_token(self) -> Result<ApiToken, StoreError> {
        let created_by = match (self.created_by_kind, self.created_by_name) {
            (Some(kind), Some(username)) => Some(Actor {
                kind: kind.parse().map_err(|_| {
                    StoreError::Database(diesel::result::Error::DeserializationError(
                        format!(
                            "API token {} has the unknown creator kind {kind:?}",
                            self.id
                        )
                        .into(),
                    ))
                })?,
                id: self.created_by,
                username,
            }),
            // Tokens created before creators were recorded as actors name none.
            _ => None,
        };
        Ok(ApiToken {
            // Stored roles were validated on the way in; an unknown one grants nothing.
            role: self.role.parse().unwrap_or(Role::Requester),
            id: self.id,
            name: self.name,
            created_by,
            created_at: utc(self.created_at),
            expires_at: self.expires_at.map(utc),
            revoked_at: self.revoked_at.map(utc),
            // Stored scopes were validated on the way in; unreadable ones grant nothing.
            scopes: self
                .scopes
                .map(|s| serde_json::from_str(&s).unwrap_or_default()),
            last_used_at: self.last_used_at.map(utc),
        })
    }
}

pub struct NewApiToken {
    pub name: String,
    pub role: Role,
    pub token_hash: String,
    pub expires_at: Option<NaiveDateTime>,
    pub scopes: Option<Vec<String>>,
}

pub fn create(
    conn: &mut DbConnection,
    ctx: &WriteContext,
    new: NewApiToken,
) -> Result<ApiToken, StoreError> {
    let id = crate::new_id();
    diesel::insert_into(api_tokens::table)
        .values((
            api_tokens::id.eq(&id),
            api_tokens::name.eq(&new.name),
            api_tokens::role.eq(new.role.as_str()),
            api_tokens::token_hash.eq(&new.token_hash),
            // The creator is an actor like any other: a user, or an API token (no reference
            // to users, so that an admin token may create tokens).
            api_tokens::created_by.eq(&ctx.actor.id),
            api_tokens::created_by_kind.eq(ctx.actor.kind.as_str()),
            api_tokens::created_by_name.eq(&ctx.actor.username),
            api_tokens::created_at.eq(ctx.at),
            api_tokens::expires_at.eq(new.expires_at),
            api_tokens::scopes.eq(new.scopes.as_ref().map(|s| json!(s).to_string())),
        ))
        .execute(conn)?;
    let token = get(conn, &id)?;
    audit::record(
        ctx,
        Mutation {
            entity_type: ENTITY,
            entity_id: &id,
            action: "create",
            changes: Changes::created(&token).into_value(),
            event_type: "api_token.created",
            event_data: json!(token),
        },
    )?;
    Ok(token)
}

pub fn get(conn: &mut DbConnection, id: &str) -> Result<ApiToken, StoreError> {
    api_tokens::table
        .find(id)
        .select(ApiTokenRow::as_select())
        .get_result::<ApiTokenRow>(conn)?
        .into_token()
}

/// The most API tokens followed from a token to the user who, through tokens creating tokens,
/// created it.
const MAX_CREATOR_CHAIN: usize = 16;

/// The user on whose authority token `id` exists: its creator, or its creator's creator when
/// an API token created it, and so on. `None` when the chain ends at no user (the service, a
/// token from before creators were recorded, or a chain too long).
pub fn creating_user(conn: &mut DbConnection, id: &str) -> Result<Option<String>, StoreError> {
    let mut creator = get(conn, id)?.created_by;
    for _ in 0..MAX_CREATOR_CHAIN {
        match creator {
            Some(Actor {
                kind: ActorKind::User,
                id: Some(user),
                ..
            }) => return Ok(Some(user)),
            Some(Actor {
                kind: ActorKind::ApiToken,
                id: Some(token),
                ..
            }) => creator = get(conn, &token)?.created_by,
            _ => return Ok(None),
        }
    }
    Ok(None)
}

/// Records that the token was used at `at` (callers write this at most once a minute).
pub fn touch(conn: &mut DbConnection, id: &str, at: NaiveDateTime) -> Result<(), StoreError> {
    fixed_update(
        api_tokens::table,
        api_tokens::last_used_at.eq(at),
        api_tokens::id.eq(id),
    )
    .execute(conn)?;
    Ok(())
}

/// The token whose secret hashes to `token_hash`, whether or not it is still usable.
pub fn find_by_hash(
    conn: &mut DbConnection,
    token_hash: &str,
) -> Result<Option<ApiToken>, StoreError> {
    api_tokens::table
        .filter(api_tokens::token_hash.eq(token_hash))
        .select(ApiTokenRow::as_select())
        .get_result::<ApiTokenRow>(conn)
        .optional()?
        .map(ApiTokenRow::into_token)
        .transpose()
}

pub fn list(
    conn: &mut DbConnection,
    after: Option<&str>,
    limit: i64,
) -> Result<Slice<ApiToken>, StoreError> {
    let mut query = api_tokens::table
        .select(ApiTokenRow::as_select())
        .order(api_tokens::id.asc())
        .into_boxed();
    if let Some(after) = after {
        query = query.filter(api_tokens::id.gt(after));
    }
    let rows = crate::load_page::<_, _, ApiTokenRow>(conn, query, limit)?;
    Ok(Slice {
        more: rows.more,
        items: rows
            .items
            .into_iter()
            .map(ApiTokenRow::into_token)
            .collect::<Result<_, _>>()?,
    })
}

/// Revokes the token from now on. Revoking a revoked token is not found.
pub fn revoke(conn: &mut DbConnection, ctx: &WriteContext, id: &str) -> Result<(), StoreError> {
    let revoked = fixed_update(
        api_tokens::table,
        api_tokens::revoked_at.eq(ctx.at),
        api_tokens::id.eq(id).and(api_tokens::revoked_at.is_null()),
    )
    .execute(conn)?;
    if revoked == 0 {
        return Err(StoreError::NotFound);
    }
    let token = get(conn, id)?;
    audit::record(
        ctx,
        Mutation {
            entity_type: ENTITY,
            entity_id: id,
            action: "revoke",
            changes: json!({ "revoked_at": [null, token.revoked_at] }),
            event_type: "api_token.revoked",
            event_data: json!(token),
        },
    )?;
    Ok(())
}
