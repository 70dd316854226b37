//! The configuration items each ticket concerns, for every ticket type.

use std::collections::HashMap;

use diesel::prelude::*;
use domain::ticket::TicketKind;

use crate::conditions::InList;
use crate::schema::ticket_configuration_items as links;
use crate::{DbConnection, StoreError};

/// The item ids of one ticket, in id order.
pub fn of(
    conn: &mut DbConnection,
    kind: TicketKind,
    ticket_id: &str,
) -> Result<Vec<String>, StoreError> {
    Ok(links::table
        .filter(links::ticket_type.eq(kind.as_str()))
        .filter(links::ticket_id.eq(ticket_id))
        .order(links::ci_id.asc())
        .select(links::ci_id)
        .load(conn)?)
}

/// The item ids of several tickets, by ticket id (one query).
pub fn of_many(
    conn: &mut DbConnection,
    kind: TicketKind,
    ticket_ids: &[&str],
) -> Result<HashMap<String, Vec<String>>, StoreError> {
    let mut by_ticket: HashMap<String, Vec<String>> = HashMap::new();
    if ticket_ids.is_empty() {
        return Ok(by_ticket);
    }
    let rows: Vec<(String, String)> = links::table
        .filter(links::ticket_type.eq(kind.as_str()))
        .filter(InList::bound(
            "ticket_configuration_items.ticket_id",
            ticket_ids.iter().map(|id| id.to_string()).collect(),
        ))
        .order((links::ticket_id.asc(), links::ci_id.asc()))
        .select((links::ticket_id, links::ci_id))
        .load(conn)?;
    for (ticket, item) in rows {
        by_ticket.entry(ticket).or_default().push(item);
    }
    Ok(by_ticket)
}

/// Replaces the items of a ticket.
pub(crate) fn replace(
    conn: &mut DbConnection,
    kind: TicketKind,
    ticket_id: &str,
    items: &[String],
) -> Result<(), StoreError> {
    diesel::delete(
        links::table
            .filter(links::ticket_type.eq(kind.as_str()))
            .filter(links::ticket_id.eq(ticket_id)),
    )
    .execute(conn)?;
    for item in items {
        diesel::insert_into(links::table)
            .values((
                links::ticket_type.eq(kind.as_str()),
                links::ticket_id.eq(ticket_id),
                links::ci_id.eq(item),
            ))
            .execute(conn)?;
    }
    Ok(())
}

/// The ids of the tickets of `kind` that concern item `ci_id`.
pub fn tickets_of(
    conn: &mut DbConnection,
    kind: TicketKind,
    ci_id: &str,
) -> Result<Vec<String>, StoreError> {
    Ok(links::table
        .filter(links::ci_id.eq(ci_id))
        .filter(links::ticket_type.eq(kind.as_str()))
        .select(links::ticket_id)
        .load(conn)?)
}
