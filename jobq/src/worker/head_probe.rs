//! The probe that keeps the claim floors honest: once per poll interval
//! it finds each unlimited task's first claimable job and lowers a floor
//! that lies past it (see `super::claim_floors` for what nothing else
//! announces). It walks whatever dead index entries lie below the floors,
//! so that no claim a handler waits for has to.

use std::sync::Arc;

use super::error_text::error_chain;
use super::state::Shared;

pub(crate) async fn run(shared: Arc<Shared>) {
    let tasks = shared.floors.tasks();
    if tasks.is_empty() {
        return;
    }
    let mut ticker = tokio::time::interval(shared.config.poll_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if shared.floors.is_off() {
            // Every claim walks from the head: nothing to keep honest.
            return;
        }
        if let Err(e) = probe(&shared, &tasks).await {
            // Until a probe succeeds, claims find everything from the head.
            shared.floors.reset();
            tracing::debug!(error = %e, "probing where the tasks' claimable jobs begin failed");
        }
    }
}

async fn probe(shared: &Shared, tasks: &[String]) -> Result<(), String> {
    let mut conn = shared.pool.get().await.map_err(|e| error_chain(&e))?;
    let heads = jobq_diesel::claim_heads(&mut conn, &shared.queues, tasks)
        .await
        .map_err(|e| e.to_string())?;
    let mut lowered = false;
    for (task, at) in heads {
        lowered |= shared.floors.lower(&task, at);
    }
    if lowered {
        shared.wake.now();
    }
    Ok(())
}
