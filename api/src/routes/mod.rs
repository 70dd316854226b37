//! One module per resource; each registers its own routes.

pub mod alerts;
pub mod assignment_rules;
pub mod auth;
pub mod change_config;
pub mod changes;
pub mod cmdb;
pub mod feed;
pub mod groups;
pub mod health;
pub mod incidents;
pub mod problems;
pub mod sla;
pub mod sla_timers;
pub mod users;
pub mod webhooks;

pub fn configure(cfg: &mut actix_web::web::ServiceConfig) {
    // actix tries the routes in the order they were registered, each path with a parameter by
    // a regular expression: an alert sent after them all cost a fifth of the server's time in
    // route matching during a storm. The intake's two paths are static, so placed first they
    // cost every other request two string comparisons. Incidents, the busiest tickets, come
    // next: behind the users' and groups' routes, a GET by number ran fifteen regular
    // expressions before its own (a fifth more instructions per request than before them).
    alerts::configure_intake(cfg);
    incidents::configure(cfg);
    health::configure(cfg);
    auth::configure(cfg);
    users::configure(cfg);
    groups::configure(cfg);
    feed::configure(cfg);
    problems::configure(cfg);
    changes::configure(cfg);
    change_config::configure(cfg);
    sla::configure(cfg);
    sla_timers::configure(cfg);
    assignment_rules::configure(cfg);
    alerts::configure(cfg);
    cmdb::configure(cfg);
    webhooks::configure(cfg);
}
