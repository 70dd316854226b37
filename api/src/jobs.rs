//! Background jobs: each step claims its work through version-checked writes and is
//! idempotent, so several nodes may run them at once.

use std::time::Duration;

use actix_web::web;
use persistence::{idempotency, incidents};

use crate::config::Config;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::usecases;

/// Background jobs: automatic closure of resolved incidents every tick, the purge of expired
/// idempotency keys every ten minutes, and planner statistics every hour. Each step is idempotent and claims its work
/// through version-checked writes, so several nodes may run them at once.
pub fn spawn(state: web::Data<AppState>, config: &Config) {
    let interval = Duration::from_secs(config.job_interval_seconds);
    let auto_close_after = chrono::TimeDelta::seconds(config.auto_close_after_seconds);
    actix_web::rt::spawn(async move {
        let mut ticks = actix_web::rt::time::interval(interval);
        let purge_every = (600 / interval.as_secs().max(1)).max(1);
        let mut tick: u64 = 0;
        loop {
            ticks.tick().await;
            match auto_close(&state, auto_close_after).await {
                Ok(0) => {}
                Ok(n) => log::info!("closed {n} resolved incident(s) automatically"),
                Err(e) => log::warn!("automatic closure failed: {e}"),
            }
            if tick.is_multiple_of(purge_every * 6) {
                if let Err(e) = state.db.optimize().await {
                    log::warn!("planner statistics refresh failed: {e}");
                }
            }
            if tick.is_multiple_of(purge_every) {
                let not_before = persistence::now_utc() - crate::idempotency::RETENTION;
                match state
                    .db
                    .write(move |conn| idempotency::purge_expired(conn, not_before))
                    .await
                {
                    Ok(0) => {}
                    Ok(n) => log::info!("purged {n} expired idempotency key(s)"),
                    Err(e) => log::warn!("idempotency purge failed: {e}"),
                }
                let now = persistence::now_utc();
                if let Err(e) = state
                    .db
                    .write(move |conn| persistence::users::purge_revoked_tokens(conn, now))
                    .await
                {
                    log::warn!("revoked token purge failed: {e}");
                }
            }
            tick += 1;
        }
    });
}

/// Timers the SLA worker looks at per round; a full round is followed by another at once.
const SLA_BATCH: i64 = 500;

/// The SLA worker: every `interval` it announces the warnings and breaches that fell due
/// (`sla.warning`, `sla.breached`, and the policy's escalations), each once. A timer is claimed
/// by a version-checked write, so several nodes may run it at once; what fell due while no node
/// ran is announced by the first round after start.
pub fn spawn_sla_worker(state: web::Data<AppState>, interval: Duration) {
    actix_web::rt::spawn(async move {
        let mut ticks = actix_web::rt::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            if state.stopping.load(std::sync::atomic::Ordering::Acquire) {
                return;
            }
            loop {
                match announce_due_timers(&state).await {
                    Ok(seen) if seen == SLA_BATCH as usize => continue,
                    Ok(_) => break,
                    Err(e) => {
                        log::warn!("SLA worker round failed: {e}");
                        break;
                    }
                }
            }
        }
    });
}

/// Timers the SLA worker settles in one unit of work.
const SLA_CHUNK: usize = 50;

/// One round of the SLA worker: the timers due by now, settled in units of `SLA_CHUNK` (all
/// sent at once, so the write path batches them). A unit that fails is tried again timer by
/// timer, so that one timer that cannot be settled holds back no other. The number of timers
/// looked at.
pub async fn announce_due_timers(state: &AppState) -> ApiResult<usize> {
    let rules = state.sla_rules().await?;
    let now = state.clock.now();
    let due = state
        .db
        .read(move |conn| persistence::sla_timers::due(conn, now, SLA_BATCH))
        .await?;
    let seen = due.len();
    let context = || {
        let mut ctx = persistence::WriteContext::system("sla");
        ctx.at = now;
        ctx.sla = Some(rules.clone());
        ctx
    };
    let fire = |chunk: Vec<persistence::sla_timers::DueTimer>| {
        let ctx = context();
        state
            .db
            .write(move |conn| persistence::sla_timers::fire_all(conn, &ctx, &chunk))
    };
    let chunks: Vec<Vec<_>> = due.chunks(SLA_CHUNK).map(<[_]>::to_vec).collect();
    let results = futures_util::future::join_all(chunks.iter().cloned().map(fire)).await;
    for (chunk, result) in chunks.into_iter().zip(results) {
        if let Err(e) = result {
            if e.outage().is_some() {
                return Err(e.into());
            }
            log::warn!(
                "SLA worker: a unit of {} timers failed ({e}); one by one",
                chunk.len()
            );
            for timer in chunk {
                let id = timer.id().to_owned();
                if let Err(e) = fire(vec![timer]).await {
                    log::warn!("SLA worker: timer {id} cannot be settled: {e}");
                }
            }
        }
    }
    Ok(seen)
}

/// Closes incidents resolved longer ago than `after`. Each closure is its own unit of work and
/// is skipped when the incident changed meanwhile.
pub async fn auto_close(state: &AppState, after: chrono::TimeDelta) -> ApiResult<usize> {
    let cutoff = state.clock.now() - after;
    let due = state
        .db
        .read(move |conn| incidents::resolved_before(conn, cutoff, 200))
        .await?;
    let mut closed = 0;
    for id in due {
        let result = state
            .db
            .write(move |conn| usecases::incidents::auto_close(conn, &id))
            .await;
        match result {
            Ok(true) => closed += 1,
            Ok(false) => {}
            Err(ApiError::VersionMismatch { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(closed)
}
