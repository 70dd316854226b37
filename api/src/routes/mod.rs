//! One module per resource; each registers its own routes.

pub mod assignment_rules;
pub mod auth;
pub mod cmdb;
pub mod feed;
pub mod groups;
pub mod health;
pub mod incidents;
pub mod problems;
pub mod sla;
pub mod users;
pub mod webhooks;

pub fn configure(cfg: &mut actix_web::web::ServiceConfig) {
    health::configure(cfg);
    auth::configure(cfg);
    users::configure(cfg);
    groups::configure(cfg);
    feed::configure(cfg);
    incidents::configure(cfg);
    problems::configure(cfg);
    sla::configure(cfg);
    assignment_rules::configure(cfg);
    cmdb::configure(cfg);
    webhooks::configure(cfg);
}
