//! Demo and benchmark data, created through the same domain rules and repositories as the API
//! (every incident with its audit entry and event), many per unit of work.

use domain::incident::{
    Channel, IncidentAction, NewIncident, OnHoldReason, Relation, ResolutionCode, TransitionInput,
};
use domain::priority::{Impact, Urgency};
use domain::problem::{NewProblem, ProblemAction, ProblemInput, ProblemRelation};
use domain::ticket::Lifecycle;
use domain::Role;
use persistence::groups::{self, NewGroup};
use persistence::tickets::{self, Change};
use persistence::users::{self, NewUser};
use persistence::{incidents, problems, Database, StoreError, WriteContext};

const PER_UNIT: usize = 25;
const IN_FLIGHT: usize = 128;
const CATEGORIES: [&str; 6] = [
    "network", "hardware", "software", "access", "email", "database",
];
const WORDS: [&str; 12] = [
    "vpn", "printer", "laptop", "password", "outlook", "server", "latency", "disk", "backup",
    "wifi", "license", "timeout",
];

/// What `seed` created, for the caller to use.
pub struct Seeded {
    pub agents: Vec<String>,
    pub groups: Vec<String>,
    pub incidents: usize,
    pub problems: usize,
}

/// An SLA policy for every incident on the built-in 24x7 calendar: a response and a
/// resolution target of `target_seconds` for every priority (the SLA benchmark).
pub async fn sla_policy(db: &Database, target_seconds: i64) -> Result<(), StoreError> {
    db.write(move |conn| {
        let targets = domain::priority::Priority::ALL
            .iter()
            .flat_map(|&priority| {
                domain::sla::SlaMetric::ALL
                    .iter()
                    .map(move |&metric| domain::sla::Target {
                        metric,
                        priority,
                        duration_seconds: target_seconds,
                    })
            })
            .collect();
        let policy = domain::sla::PolicyDefinition {
            name: format!("Seed SLA {}", uuid::Uuid::now_v7().simple()),
            precedence: 1000,
            applies_to: domain::sla::AppliesTo {
                ticket_type: domain::ticket::TicketKind::Incident,
                priorities: Vec::new(),
                category: None,
                service: None,
                assignment_group: None,
            },
            calendar_id: "24x7".into(),
            warning_percent: 75,
            targets,
            pause_on: None,
            escalations: Vec::new(),
        }
        .validated()
        .map_err(|e| StoreError::Conflict(e.to_string()))?;
        persistence::sla::create_policy(conn, &WriteContext::system("seed"), &policy).map(|_| ())
    })
    .await
}

/// The write context of seeded tickets: the SLA policies in force, so that open incidents
/// run timers as they would through the API.
fn seed_context(rules: &Option<std::sync::Arc<domain::sla_timers::SlaRules>>) -> WriteContext {
    let mut ctx = WriteContext::system("seed");
    ctx.sla = rules.clone();
    ctx
}

/// A small deterministic generator, so that two seeds of the same size hold the same data.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) as usize
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.next() % items.len()]
    }
}

/// Creates 4 groups with 5 agents each, then `count` incidents in varied states and one
/// problem per hundred incidents, half of them known errors.
pub async fn seed(db: &Database, count: usize) -> Result<Seeded, StoreError> {
    let (agents, group_ids) = db
        .write(|conn| -> Result<(Vec<String>, Vec<String>), StoreError> {
            let ctx = WriteContext::system("seed");
            let mut agents = Vec::new();
            let mut group_ids = Vec::new();
            let suffix = uuid::Uuid::now_v7().simple().to_string();
            for g in 0..4 {
                let group = groups::create(
                    conn,
                    &ctx,
                    NewGroup {
                        name: format!("Seed group {g} {}", &suffix[20..]),
                        description: "seeded".into(),
                        email: None,
                        external_refs: Vec::new(),
                    },
                )?;
                for a in 0..5 {
                    let user = users::create(
                        conn,
                        &ctx,
                        NewUser {
                            username: format!("seed-agent-{g}-{a}-{}", &suffix[20..]),
                            email: None,
                            display_name: format!("Seed agent {g}.{a}"),
                            password_hash: None,
                            roles: vec![Role::Agent],
                            external_refs: Vec::new(),
                        },
                    )?;
                    groups::add_member(conn, &ctx, &group.id, &user.id)?;
                    agents.push(user.id);
                }
                group_ids.push(group.id);
            }
            Ok((agents, group_ids))
        })
        .await?;
    let rules = Some(std::sync::Arc::new(db.read(persistence::sla::rules).await?));
    let mut pending = Vec::new();
    let mut created = 0;
    let mut unit = 0u64;
    while created < count {
        let size = PER_UNIT.min(count - created);
        let (agents, group_ids) = (agents.clone(), group_ids.clone());
        let seed_value = unit;
        let rules = rules.clone();
        pending.push(db.write_new_rows(move |conn| -> Result<(), StoreError> {
            let ctx = seed_context(&rules);
            let mut random = Lcg(seed_value);
            for _ in 0..size {
                let (new, steps, input) = draft(&mut random, &agents, &group_ids);
                let reported = incidents::create(conn, &ctx, new)?;
                if !steps.is_empty() {
                    let mut worked = reported.clone();
                    for step in steps {
                        // Every step is allowed from the state the previous one left; a
                        // refusal would only leave the incident in an earlier state.
                        let _ = worked.apply(*step, &input, AGENT, ctx.at.and_utc());
                    }
                    tickets::save(conn, &ctx, &reported, &worked, Change::action("seed"))?;
                }
            }
            Ok(())
        }));
        created += size;
        unit += 1;
        if pending.len() >= IN_FLIGHT {
            for write in pending.drain(..) {
                write.await?;
            }
        }
    }
    for write in pending {
        write.await?;
    }
    let problems = count.div_ceil(100);
    let problem_agents = agents.clone();
    db.write(move |conn| -> Result<(), StoreError> {
        let ctx = WriteContext::system("seed");
        let mut random = Lcg(u64::MAX / 3);
        for n in 0..problems {
            let (new, known) = problem_draft(&mut random, n);
            let recorded = problems::create(conn, &ctx, new)?;
            if known {
                let mut worked = recorded.clone();
                let input = ProblemInput {
                    assignee: Some(problem_agents[random.next() % problem_agents.len()].clone()),
                    ..ProblemInput::default()
                };
                for step in [ProblemAction::Assess, ProblemAction::DeclareKnownError] {
                    let _ = worked.apply(step, &input, MANAGER, ctx.at.and_utc());
                }
                tickets::save(conn, &ctx, &recorded, &worked, Change::action("seed"))?;
            }
        }
        Ok(())
    })
    .await?;
    Ok(Seeded {
        agents,
        groups: group_ids,
        incidents: count,
        problems,
    })
}

const MANAGER: ProblemRelation = ProblemRelation { manages: true };

/// The `n`th problem; every other one has a workaround and becomes a known error.
fn problem_draft(random: &mut Lcg, n: usize) -> (NewProblem, bool) {
    let known = n.is_multiple_of(2);
    let new = NewProblem {
        title: format!(
            "Recurring {} {} failures",
            random.pick(&WORDS),
            random.pick(&WORDS)
        ),
        description: format!("Several incidents with {}", random.pick(&WORDS)),
        impact: random.pick(&[Impact::High, Impact::Medium, Impact::Low]),
        urgency: random.pick(&[Urgency::High, Urgency::Medium, Urgency::Low]),
        category: Some(random.pick(&CATEGORIES).to_owned()),
        assignment_group: None,
        assignee: None,
        root_cause: None,
        workaround: known.then(|| format!("Restart the {} service", random.pick(&WORDS))),
        external_refs: Vec::new(),
        configuration_items: Vec::new(),
        service: None,
    };
    (new, known)
}

const AGENT: Relation = Relation {
    is_agent: true,
    is_caller: false,
    parent_final: false,
};

/// One incident as reported, and the steps that take it to a random state.
fn draft(
    random: &mut Lcg,
    agents: &[String],
    group_ids: &[String],
) -> (NewIncident, &'static [IncidentAction], TransitionInput) {
    let impact = random.pick(&[Impact::High, Impact::Medium, Impact::Low]);
    let urgency = random.pick(&[Urgency::High, Urgency::Medium, Urgency::Low]);
    let group_index = random.next() % group_ids.len();
    let caller = agents[random.next() % agents.len()].clone();
    let new = NewIncident {
        title: format!("{} {} issue", random.pick(&WORDS), random.pick(&WORDS)),
        description: format!(
            "Reported {} problem with {}",
            random.pick(&WORDS),
            random.pick(&WORDS)
        ),
        caller,
        channel: random.pick(&[
            Channel::Api,
            Channel::Email,
            Channel::Phone,
            Channel::Portal,
            Channel::Monitoring,
        ]),
        category: Some(random.pick(&CATEGORIES).to_owned()),
        subcategory: None,
        impact,
        urgency,
        assignment_group: Some(group_ids[group_index].clone()),
        assignee: None,
        parent_id: None,
        external_refs: Vec::new(),
        configuration_items: Vec::new(),
        service: None,
    };
    let steps: &[IncidentAction] = match random.next() % 5 {
        0 => &[],
        1 => &[IncidentAction::Assign],
        2 => &[IncidentAction::Assign, IncidentAction::Hold],
        3 => &[IncidentAction::Assign, IncidentAction::Resolve],
        _ => &[
            IncidentAction::Assign,
            IncidentAction::Resolve,
            IncidentAction::Close,
        ],
    };
    let input = TransitionInput {
        assignee: Some(agents[group_index * 5 + random.next() % 5].clone()),
        on_hold_reason: Some(OnHoldReason::AwaitingVendor),
        resolution_code: Some(ResolutionCode::Fixed),
        resolution_notes: Some("Seeded resolution".into()),
        ..TransitionInput::default()
    };
    (new, steps, input)
}
