//! Idempotency keys: the first response to a POST, replayed for a retry with the same key.
//!
//! A key is claimed (a row without a response) before the request runs, so two concurrent
//! requests with one key cannot both run; the response is stored once the request finished.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::schema::idempotency_keys;
use crate::{fixed_update, DbConnection, StoreError};

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = idempotency_keys)]
pub struct StoredKey {
    pub request_hash: String,
    pub status: Option<i32>,
    pub response_body: Option<String>,
    /// JSON object of the replayed headers (content type, location, etag).
    pub response_headers: Option<String>,
    pub created_at: NaiveDateTime,
}

/// What became of an attempt to claim a key.
#[derive(Debug)]
pub enum Claim {
    /// The key is new: run the request, then `complete` or `release` it.
    Claimed,
    /// The key was used before (or is in use now).
    Existing(StoredKey),
}

/// Claims `key` for `principal`. Keys older than `not_before` are expired and claimed afresh.
pub fn claim(
    conn: &mut DbConnection,
    principal: &str,
    key: &str,
    request_hash: &str,
    at: NaiveDateTime,
    not_before: NaiveDateTime,
) -> Result<Claim, StoreError> {
    let existing: Option<StoredKey> = idempotency_keys::table
        .find((principal, key))
        .select(StoredKey::as_select())
        .get_result(conn)
        .optional()?;
    match existing {
        Some(stored) if stored.created_at >= not_before => return Ok(Claim::Existing(stored)),
        Some(_) => release(conn, principal, key)?,
        None => {}
    }
    diesel::insert_into(idempotency_keys::table)
        .values((
            idempotency_keys::principal.eq(principal),
            idempotency_keys::idem_key.eq(key),
            idempotency_keys::request_hash.eq(request_hash),
            idempotency_keys::created_at.eq(at),
        ))
        .execute(conn)?;
    Ok(Claim::Claimed)
}

/// Stores the response the key replays from now on.
pub fn complete(
    conn: &mut DbConnection,
    principal: &str,
    key: &str,
    status: u16,
    body: &str,
    headers: &str,
) -> Result<(), StoreError> {
    fixed_update(
        idempotency_keys::table,
        (
            idempotency_keys::status.eq(i32::from(status)),
            idempotency_keys::response_body.eq(body),
            idempotency_keys::response_headers.eq(headers),
        ),
        idempotency_keys::principal
            .eq(principal)
            .and(idempotency_keys::idem_key.eq(key)),
    )
    .execute(conn)?;
    Ok(())
}

/// Forgets a key, so that a request that failed without effect can be retried with it.
pub fn release(conn: &mut DbConnection, principal: &str, key: &str) -> Result<(), StoreError> {
    diesel::delete(idempotency_keys::table.find((principal, key))).execute(conn)?;
    Ok(())
}

/// Deletes keys created before `not_before`; returns how many.
pub fn purge_expired(
    conn: &mut DbConnection,
    not_before: NaiveDateTime,
) -> Result<usize, StoreError> {
    Ok(
        diesel::delete(idempotency_keys::table.filter(idempotency_keys::created_at.lt(not_before)))
            .execute(conn)?,
    )
}
