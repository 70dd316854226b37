//! Comments and work notes, for any kind of ticket.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use domain::notes::{Note, Visibility};
use serde_json::json;

use crate::audit::{self, Mutation};
use crate::schema::notes;
use crate::{utc, DbConnection, Slice, StoreError, WriteContext};

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = notes)]
struct NoteRow {
    id: String,
    author_id: Option<String>,
    author_name: String,
    visibility: String,
    body: String,
    created_at: NaiveDateTime,
}

impl NoteRow {
    fn into_note(self) -> Note {
        Note {
            id: self.id,
            // Only public notes are stored as such; anything else stays internal.
            visibility: self.visibility.parse().unwrap_or(Visibility::Internal),
            body: self.body,
            author_id: self.author_id,
            author_name: self.author_name,
            created_at: utc(self.created_at),
        }
    }
}

/// Adds a note to `entity_type`/`entity_id` and records it. The audit action tells comments
/// (`add_comment`) from work notes (`add_work_note`), so views for requesters can leave the
/// latter out.
pub fn add(
    conn: &mut DbConnection,
    ctx: &WriteContext,
    entity_type: &str,
    entity_id: &str,
    visibility: Visibility,
    body: &str,
    event_type: &str,
) -> Result<Note, StoreError> {
    let id = crate::new_id();
    diesel::insert_into(notes::table)
        .values((
            notes::id.eq(&id),
            notes::entity_type.eq(entity_type),
            notes::entity_id.eq(entity_id),
            notes::author_id.eq(&ctx.actor.id),
            notes::author_name.eq(&ctx.actor.username),
            notes::visibility.eq(visibility.as_str()),
            notes::body.eq(body),
            notes::created_at.eq(ctx.at),
        ))
        .execute(conn)?;
    let note = Note {
        id,
        visibility,
        body: body.to_owned(),
        author_id: ctx.actor.id.clone(),
        author_name: ctx.actor.username.clone(),
        created_at: utc(ctx.at),
    };
    audit::record(
        ctx,
        Mutation {
            entity_type,
            entity_id,
            action: add_action(visibility),
            changes: json!({ "note": [null, note] }),
            event_type,
            event_data: json!({ "entity_id": entity_id, "note": note }),
        },
    )?;
    Ok(note)
}

/// The audit action recording a note of `visibility`.
pub fn add_action(visibility: Visibility) -> &'static str {
    match visibility {
        Visibility::Public => "add_comment",
        Visibility::Internal => "add_work_note",
    }
}

/// Notes in the order they were written; internal ones only when `include_internal`.
pub fn list(
    conn: &mut DbConnection,
    entity_type: &str,
    entity_id: &str,
    include_internal: bool,
    after: Option<&str>,
    limit: i64,
) -> Result<Slice<Note>, StoreError> {
    let mut query = notes::table
        .filter(notes::entity_type.eq(entity_type))
        .filter(notes::entity_id.eq(entity_id))
        .select(NoteRow::as_select())
        .order(notes::id.asc())
        .into_boxed();
    if !include_internal {
        query = query.filter(notes::visibility.eq(Visibility::Public.as_str()));
    }
    if let Some(after) = after {
        query = query.filter(notes::id.gt(after));
    }
    let rows = crate::load_page::<_, _, NoteRow>(conn, query, limit)?;
    Ok(Slice {
        more: rows.more,
        items: rows.items.into_iter().map(NoteRow::into_note).collect(),
    })
}
