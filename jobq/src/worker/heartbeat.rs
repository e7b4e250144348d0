//! The heartbeat loop: one statement per interval keeps the lease of every
//! job this worker holds, picks up cancellations whose notification was
//! missed, and hands back jobs this worker claimed without ever hearing of
//! them.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use jobq_diesel::{Outcome, OutcomeKind, WorkerInfo};
use tokio::sync::mpsc::UnboundedSender;

use super::error_text::error_chain;
use super::state::{Finished, Shared};

pub(crate) async fn run(
    shared: Arc<Shared>,
    info: WorkerInfo,
    outcomes: UnboundedSender<Finished>,
) {
    let mut suspects: HashSet<(i64, i32)> = HashSet::new();
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
                    // Their outcomes would be fenced out anyway: stop them.
                    let held: HashSet<(i64, i32)> = reply.held.iter().copied().collect();
                    for a in shared
                        .attempts
                        .cancel_unless(|a| held.contains(&(a.id, a.attempt)))
                    {
                        tracing::warn!(
                            job.id = a.id,
                            job.attempt = a.attempt,
                            "stopping an attempt whose job was rescued from this worker"
                        );
                    }
                }
                for id in &reply.cancel_requested {
                    if shared.attempts.cancel(*id) {
                        tracing::info!(job.id = id, "cancellation requested");
                    }
                }
                shared.forget_claims(&reply.dropped_claims);
                suspects = hand_back_unknown(&shared, &reply.held, suspects, &outcomes);
            }
            Err(e) => {
                tracing::warn!(error = %e, "heartbeat failed; the lease runs out if this goes on")
            }
        }
    }
}

/// Jobs the database says this worker runs but that it is not running: a
/// claim committed whose reply never arrived (connection cut mid-reply).
/// Nothing else would ever release them while this worker heartbeats.
///
/// A job claimed or finished around the heartbeat can look unknown for a
/// moment, so a job is handed back only when it looks unknown at two
/// heartbeats in a row, and never while a claim is being registered or
/// outcomes wait to be written. Handing back goes through the completer,
/// fenced by attempt like any outcome, so a mistake costs a repeated run,
/// never a lost job. Returns the jobs to check again next time.
fn hand_back_unknown(
    shared: &Shared,
    held: &[(i64, i32)],
    previous: HashSet<(i64, i32)>,
    outcomes: &UnboundedSender<Finished>,
) -> HashSet<(i64, i32)> {
    if shared.claiming.load(Ordering::Acquire) || !shared.backlog.is_empty() {
        return HashSet::new();
    }
    let unknown: HashSet<(i64, i32)> = held
        .iter()
        .copied()
        .filter(|(id, attempt)| shared.attempts.running(*id) != Some(*attempt))
        .collect();
    let mut next = HashSet::new();
    for job in unknown {
        if !previous.contains(&job) {
            next.insert(job);
            continue;
        }
        let (id, attempt) = job;
        tracing::warn!(
            job.id = id,
            job.attempt = attempt,
            "handing back a job this worker claimed but never received (the claim's reply was lost)"
        );
        shared.backlog.add();
        let released = Outcome {
            id,
            attempt,
            kind: OutcomeKind::Released,
            message: Some("claimed by a worker that never received it (the claim's reply was lost); handed back".into()),
        };
        // Its claim is not one this worker knows; the claim's row goes with
        // a later heartbeat, once nothing of it runs here.
        let finished = Finished {
            outcome: released,
            claim: None,
        };
        if outcomes.send(finished).is_err() {
            shared.backlog.done(1);
        }
    }
    next
}
