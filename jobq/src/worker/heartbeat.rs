//! The heartbeat loop: one statement per interval keeps the lease of every
//! job this worker holds, and picks up cancellations whose notification
//! was missed.

use std::sync::Arc;

use jobq_diesel::WorkerInfo;

use super::listen::error_chain;
use super::state::{lock, Shared};

pub(crate) async fn run(shared: Arc<Shared>, info: WorkerInfo) {
    let mut ticker = tokio::time::interval(shared.config.heartbeat_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let reply = match shared.pool.get().await {
            Ok(mut conn) => jobq_diesel::heartbeat(&mut conn, shared.worker_id, &info)
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(error_chain(&e)),
        };
        match reply {
            Ok(reply) => {
                if !reply.was_alive {
                    tracing::warn!(
                        worker.id = shared.worker_id,
                        "this worker had been presumed dead (no heartbeat within the lease) \
                         and its jobs rescued; it is registered again"
                    );
                }
                let in_flight = lock(&shared.in_flight);
                for id in reply.cancel_requested {
                    if let Some(job) = in_flight.get(&id) {
                        if !job.cancel.is_cancelled() {
                            tracing::info!(job.id = id, "cancellation requested");
                            job.cancel.cancel();
                        }
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "heartbeat failed; the lease runs out if this goes on")
            }
        }
    }
}
