//! The metrics gauges (feature `metrics`): jobs by queue, task and state and
//! the oldest due job's age, read with `jobq::stats` every maintenance
//! interval by one worker at a time (a transaction-scoped advisory lock;
//! a worker that finds it taken skips the round and keeps its last values).

use std::sync::Arc;

use super::error_text::error_chain;
use super::state::Shared;
use crate::metrics::Gauges;

pub(crate) async fn run(shared: Arc<Shared>) {
    let mut ticker = tokio::time::interval(shared.config.maintenance_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut gauges = Gauges::default();
    loop {
        ticker.tick().await;
        if let Err(e) = sample(&shared, &mut gauges).await {
            tracing::warn!(error = %e, "sampling the metrics gauges failed; trying again next interval");
        }
    }
}

async fn sample(shared: &Shared, gauges: &mut Gauges) -> Result<(), String> {
    let mut conn = shared.pool.get().await.map_err(|e| error_chain(&e))?;
    let Some(rows) = jobq_diesel::sample_stats(&mut conn, crate::stats::default_lease_ms())
        .await
        .map_err(|e| format!("stats: {e}"))?
    else {
        return Ok(());
    };
    gauges.record(&crate::stats::from_rows(rows));
    Ok(())
}
