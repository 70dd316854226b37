//! JWT signing keys, shared by every node through the database. The newest live key signs,
//! every live key verifies, and retiring a key wipes its secret but keeps its row, so that a
//! kid is never used twice.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::schema::signing_keys;
use crate::{DbConnection, StoreError};

#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = signing_keys)]
pub struct SigningKey {
    pub kid: String,
    /// `None` for a key held in the environment (`ITSM_JWT_SECRET`), or a retired one.
    pub secret: Option<String>,
    pub created_at: NaiveDateTime,
    /// From then on the key verifies nothing; `None` while it signs.
    pub retires_at: Option<NaiveDateTime>,
}

impl SigningKey {
    pub fn is_live(&self, now: NaiveDateTime) -> bool {
        self.retires_at.is_none_or(|at| at > now)
    }
}

/// The keys that still verify at `now`, oldest first.
pub fn live(conn: &mut DbConnection, now: NaiveDateTime) -> Result<Vec<SigningKey>, StoreError> {
    Ok(signing_keys::table
        .filter(
            signing_keys::retires_at
                .is_null()
                .or(signing_keys::retires_at.gt(now)),
        )
        .order((signing_keys::created_at.asc(), signing_keys::kid.asc()))
        .select(SigningKey::as_select())
        .load(conn)?)
}

/// Every key, retired ones included, oldest first.
pub fn all(conn: &mut DbConnection) -> Result<Vec<SigningKey>, StoreError> {
    Ok(signing_keys::table
        .order((signing_keys::created_at.asc(), signing_keys::kid.asc()))
        .select(SigningKey::as_select())
        .load(conn)?)
}

pub fn exists(conn: &mut DbConnection, kid: &str) -> Result<bool, StoreError> {
    Ok(diesel::select(diesel::dsl::exists(signing_keys::table.find(kid))).get_result(conn)?)
}

/// Makes `kid` the signing key from `now`: the keys signing until now keep verifying until
/// `previous_retire_at` (when their last token can have expired), and the secrets of keys
/// already retired are wiped.
pub fn rotate(
    conn: &mut DbConnection,
    kid: &str,
    secret: Option<&str>,
    now: NaiveDateTime,
    previous_retire_at: NaiveDateTime,
) -> Result<(), StoreError> {
    diesel::update(signing_keys::table.filter(signing_keys::retires_at.is_null()))
        .set(signing_keys::retires_at.eq(previous_retire_at))
        .execute(conn)?;
    wipe_retired(conn, now)?;
    diesel::insert_into(signing_keys::table)
        .values((
            signing_keys::kid.eq(kid),
            signing_keys::secret.eq(secret),
            signing_keys::created_at.eq(now),
        ))
        .execute(conn)?;
    Ok(())
}

/// Retires `kid` at once (a leaked key): its tokens are refused from now on. Refused for the
/// key that signs now (rotate first), so that the service can always sign in. `Ok(false)` when
/// no live key has that kid.
pub fn retire_now(
    conn: &mut DbConnection,
    kid: &str,
    now: NaiveDateTime,
) -> Result<bool, StoreError> {
    let live = live(conn, now)?;
    match live.iter().position(|key| key.kid == kid) {
        None => Ok(false),
        Some(index) if index + 1 == live.len() => Err(StoreError::Conflict(format!(
            "{kid} is the key that signs now: rotate first, then retire it"
        ))),
        Some(_) => {
            diesel::update(signing_keys::table.find(kid))
                .set((
                    signing_keys::retires_at.eq(now),
                    signing_keys::secret.eq(None::<String>),
                ))
                .execute(conn)?;
            Ok(true)
        }
    }
}

/// Wipes the secrets of the keys retired by `now`.
pub fn wipe_retired(conn: &mut DbConnection, now: NaiveDateTime) -> Result<usize, StoreError> {
    Ok(diesel::update(
        signing_keys::table
            .filter(signing_keys::retires_at.le(now))
            .filter(signing_keys::secret.is_not_null()),
    )
    .set(signing_keys::secret.eq(None::<String>))
    .execute(conn)?)
}
