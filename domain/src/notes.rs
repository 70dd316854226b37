//! Comments and work notes on any ticket.

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use crate::enums::string_enum;

string_enum!(
    /// `public` comments are seen by the requester; `internal` work notes never are.
    Visibility { Public => "public", Internal => "internal" }
);

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Note {
    pub id: String,
    pub visibility: Visibility,
    pub body: String,
    /// The author's user id (or API token id).
    pub author_id: Option<String>,
    pub author_name: String,
    pub created_at: DateTime<Utc>,
}

impl Note {
    pub const MAX_BODY_CHARS: usize = 20_000;
}
