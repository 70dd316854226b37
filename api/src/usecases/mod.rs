//! Use cases: what happens when someone reports, links, resolves... One module per practice,
//! between the routes (which extract, authorise, call and wrap) and the repositories. Each is a
//! unit of work handed to the write path.

pub mod incidents;
pub mod problems;

use persistence::{groups, users, DbConnection};

use crate::error::{unknown_reference, ApiError, ApiResult};

/// A user a ticket refers to (caller, assignee) must exist and be active.
pub(crate) fn check_active_user(conn: &mut DbConnection, id: &str, field: &str) -> ApiResult<()> {
    match users::access(conn, id)? {
        Some((_, true, _)) => Ok(()),
        Some(_) => Err(ApiError::invalid(field, "the user is deactivated")),
        None => Err(ApiError::invalid(field, "no such user")),
    }
}

/// The assignment group must exist.
pub(crate) fn check_group(conn: &mut DbConnection, group: &str) -> ApiResult<()> {
    groups::get(conn, group)
        .map(|_| ())
        .map_err(|e| unknown_reference(e, "assignment_group", "no such group"))
}

/// An assignee must be an active member of the ticket's assignment group.
pub(crate) fn check_assignee(
    conn: &mut DbConnection,
    group: Option<&str>,
    assignee: &str,
) -> ApiResult<()> {
    check_active_user(conn, assignee, "assignee")?;
    let Some(group) = group else {
        return Err(ApiError::invalid("assignee", "needs an assignment_group"));
    };
    if !groups::is_member(conn, group, assignee)? {
        return Err(ApiError::invalid(
            "assignee",
            "must be a member of the assignment group",
        ));
    }
    Ok(())
}
