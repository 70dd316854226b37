//! Service-wide settings kept in the database so that every node of a cluster shares them.

use diesel::prelude::*;

use crate::schema::settings;
use crate::{DbConnection, StoreError};

pub fn get(conn: &mut DbConnection, name: &str) -> Result<Option<String>, StoreError> {
    Ok(settings::table
        .find(name)
        .select(settings::value)
        .get_result(conn)
        .optional()?)
}

/// Stores `value` unless the setting exists, and returns the value that is stored: the first
/// node to start wins and every other node adopts its value.
pub fn get_or_insert(
    conn: &mut DbConnection,
    name: &str,
    value: &str,
) -> Result<String, StoreError> {
    if let Some(existing) = get(conn, name)? {
        return Ok(existing);
    }
    diesel::insert_into(settings::table)
        .values((settings::name.eq(name), settings::value.eq(value)))
        .execute(conn)?;
    Ok(value.to_owned())
}
