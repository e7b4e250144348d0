//! The maintenance loop: rescue jobs of dead workers and prune finished
//! jobs. Every worker runs it; an advisory lock inside each statement lets
//! one at a time do the work.

use std::sync::Arc;

use super::error_text::error_chain;
use super::state::Shared;

/// Rows deleted per prune statement, to keep each transaction short.
const PRUNE_BATCH: i64 = 5_000;

pub(crate) async fn run(shared: Arc<Shared>) {
    let mut ticker = tokio::time::interval(shared.config.maintenance_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if let Err(e) = tick(&shared).await {
            tracing::warn!(error = %e, "maintenance failed; trying again next interval");
        }
    }
}

async fn tick(shared: &Shared) -> Result<(), String> {
    let mut conn = shared.pool.get().await.map_err(|e| error_chain(&e))?;
    let rescued = jobq_diesel::rescue(&mut conn, shared.config.lease)
        .await
        .map_err(|e| format!("rescue: {e}"))?;
    for job in &rescued {
        tracing::warn!(
            job.id = job.id,
            job.task = %job.task,
            job.attempt = job.attempt,
            state = %job.state,
            "rescued a job whose worker stopped heartbeating"
        );
    }
    loop {
        let pruned = jobq_diesel::prune(&mut conn, shared.config.retention, PRUNE_BATCH)
            .await
            .map_err(|e| format!("prune: {e}"))?;
        if pruned > 0 {
            tracing::debug!(pruned, "pruned finished jobs");
        }
        if pruned < PRUNE_BATCH {
            return Ok(());
        }
    }
}
