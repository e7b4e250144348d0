//! The heartbeat loop: one statement per interval keeps the lease of every
//! job this worker holds, picks up cancellations whose notification was
//! missed, and stops attempts whose jobs were rescued from this worker.

use std::sync::Arc;
use std::time::Duration;

use jobq_diesel::WorkerInfo;
use rustc_hash::FxHashSet;

use super::backoff::Backoff;
use super::error_text::error_chain;
use super::state::Shared;

pub(crate) async fn run(shared: Arc<Shared>, info: WorkerInfo) {
    let interval = shared.config.heartbeat_interval;
    // After a failed heartbeat, try again soon rather than a whole interval
    // later: once the database is back, the worker's row is fresh (and it
    // claims again, claims needing a live row) within a fraction of a
    // second.
    let mut retry = Backoff::new(Duration::from_millis(100), interval);
    let mut pause = Duration::ZERO;
    loop {
        tokio::time::sleep(pause).await;
        // Taken before the statement: each of these attempts was claimed by
        // a statement that had committed before the heartbeat's began, so
        // the heartbeat sees its job (see `stop_rescued`).
        let running = shared.attempts.snapshot();
        let reply = match shared.pool.get().await {
            Ok(mut conn) => jobq_diesel::heartbeat(&mut conn, shared.worker_id, &info)
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(error_chain(&e)),
        };
        shared
            .standing
            .heartbeat(reply.is_ok(), std::time::Instant::now());
        pause = if reply.is_ok() {
            retry.reset();
            interval
        } else {
            retry.next_delay()
        };
        match reply {
            Ok(reply) => {
                shared.lanes.fleet_seen(reply.fleet);
                if !reply.was_alive {
                    tracing::warn!(
                        worker.id = shared.worker_id,
                        "this worker had been presumed dead (no heartbeat within its lease) \
                         and its row removed; it is registered again and claims again"
                    );
                    // Claims found nothing while the row was gone; there
                    // may be work waiting.
                    shared.wake.now();
                }
                for id in &reply.cancel_requested {
                    if shared.attempts.cancel(*id) {
                        tracing::info!(job.id = id, "cancellation requested");
                    }
                }
                shared.claims.forget(&reply.dropped_claims);
                stop_rescued(&shared, &running, &reply.held);
            }
            Err(e) => {
                tracing::warn!(error = %e, "heartbeat failed; the lease runs out if this goes on")
            }
        }
    }
}

/// Stops the attempts whose jobs the database no longer has running under
/// this worker: they were rescued while it was presumed dead (and may run
/// elsewhere by now). Their outcomes would be fenced out anyway; stopping
/// them frees the handler's resources and says what happened.
///
/// Exact, not a guess: `running` are the attempts in flight before the
/// heartbeat statement began, whose claims it therefore sees. One of them
/// still in flight afterwards has no outcome written, so its job is
/// running under this worker in that attempt unless a rescue took it;
/// `held` is what the heartbeat found running under this worker.
fn stop_rescued(shared: &Shared, running: &[(i64, i32)], held: &[(i64, i32)]) {
    if running.is_empty() {
        return;
    }
    let held: FxHashSet<(i64, i32)> = held.iter().copied().collect();
    let before: FxHashSet<(i64, i32)> = running.iter().copied().collect();
    // An attempt that started after the snapshot may not be in `held` yet;
    // one that finished meanwhile is no longer among the attempts.
    let stopped = shared.attempts.cancel_unless(|a| {
        let key = (a.id, a.attempt);
        !before.contains(&key) || held.contains(&key)
    });
    for a in stopped {
        tracing::warn!(
            job.id = a.id,
            job.attempt = a.attempt,
            "this job was rescued from this worker (presumed dead: no heartbeat within its \
             lease); stopping the attempt, whose outcome will be discarded"
        );
    }
}
