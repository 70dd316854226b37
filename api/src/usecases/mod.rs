//! Use cases: what happens when someone reports, links, resolves... One module per practice,
//! between the routes (which extract, authorise, call and wrap) and the repositories. Each is a
//! unit of work handed to the write path.

pub mod incidents;
pub mod problems;
