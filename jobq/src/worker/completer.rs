//! Writing outcomes in batches: whatever has accumulated while the previous
//! write was in flight goes in the next statement, so the write rate adapts
//! to the load. While other attempts are still running, the first outcome
//! waits a moment for company, so that a burst of finishing jobs is one
//! statement rather than one for the first job and one for the rest.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jobq_diesel::OutcomeKind;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_util::sync::CancellationToken;

use super::backoff::Backoff;
use super::outcome_writer::{BatchWrite, Entry, PoolStore};
use super::state::{Finished, Shared};

/// Longest an outcome waits for others to share its statement.
const GATHER_WINDOW: Duration = Duration::from_millis(2);

/// Longest pause between two tries of a failing write.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(5);

/// Runs until the channel closes, or `stop` fires, and everything received
/// is written; or until `give_up` fires while writes keep failing (the jobs
/// then stay running under this worker and are rescued after its lease).
pub(crate) async fn run(
    shared: Arc<Shared>,
    mut rx: UnboundedReceiver<Finished>,
    stop: CancellationToken,
    give_up: CancellationToken,
) {
    let mut batch = BatchWrite::default();
    let mut last_round = false;
    let limit = shared.config.outcome_batch;
    loop {
        if batch.is_empty() && !last_round {
            tokio::select! {
                biased;
                received = rx.recv() => match received {
                    Some(finished) => push(&shared, &mut batch, finished),
                    None => return,
                },
                _ = stop.cancelled() => last_round = true,
            }
        }
        while batch.len() < limit {
            match rx.try_recv() {
                Ok(finished) => push(&shared, &mut batch, finished),
                Err(_) => break,
            }
        }
        if !last_round && !batch.is_empty() && !shared.attempts.is_empty() {
            let until = tokio::time::Instant::now() + GATHER_WINDOW;
            while batch.len() < limit {
                match tokio::time::timeout_at(until, rx.recv()).await {
                    Ok(Some(finished)) => push(&shared, &mut batch, finished),
                    Ok(None) | Err(_) => break,
                }
            }
        }
        if batch.is_empty() {
            return;
        }
        let n = batch.len();
        let written = write(&shared, &mut batch, &give_up).await;
        if shared.backlog.done(n) {
            // The fetcher stopped claiming at the bound; it may go on.
            shared.wake.notify_one();
        }
        if !written {
            tracing::error!(
                outcomes = n,
                "gave up writing outcomes; the jobs will be rescued after the lease"
            );
            return;
        }
        if last_round && rx.is_empty() {
            return;
        }
    }
}

/// Adds an outcome; when it is the last open job of its claim, the
/// claim's row goes with it.
fn push(shared: &Shared, batch: &mut BatchWrite, finished: Finished) {
    let settles = finished
        .claim
        .is_some_and(|claim| shared.settle_claim_job(claim));
    batch.push(Entry::new(finished.outcome, finished.claim, settles));
}

/// Writes one batch, trying again with backoff while the database is
/// away; false when `give_up` fired first.
async fn write(shared: &Shared, batch: &mut BatchWrite, give_up: &CancellationToken) -> bool {
    // Retries are due at a time this worker knows; wake for them without
    // depending on the notification reaching our own listener.
    let retry_in = batch
        .entries
        .iter()
        .filter_map(|e| match e.outcome.kind {
            OutcomeKind::Retry { delay_ms } => Some(delay_ms),
            _ => None,
        })
        .min();
    let mut backoff = Backoff::new(Duration::from_millis(50), MAX_RETRY_DELAY);
    let mut store = PoolStore(&shared.pool);
    let report = loop {
        let n = batch.len();
        let result = tokio::select! {
            result = batch.write(&mut store) => result,
            _ = give_up.cancelled() => return false,
        };
        match result {
            Ok(report) => break report,
            Err(e) => {
                let retry_in = backoff.next_delay();
                tracing::warn!(error = %e, outcomes = n, ?retry_in, "writing outcomes failed");
                tokio::select! {
                    _ = tokio::time::sleep(retry_in) => {}
                    _ = give_up.cancelled() => return false,
                }
            }
        }
    };
    for r in &report.rejected {
        // Invariant 2: the attempt was rescued (and maybe claimed again)
        // while it ran; its late outcome changes nothing.
        tracing::warn!(
            job.id = r.id,
            job.attempt = r.attempt,
            "outcome discarded: the job is no longer running this attempt (rescued)"
        );
    }
    for (id, attempt, why) in &report.degraded {
        tracing::warn!(
            job.id = id,
            job.attempt = attempt,
            error = %why,
            "the database refused this outcome as it was; it was recorded without its full message"
        );
    }
    for (id, attempt, claim, why) in &report.abandoned {
        tracing::error!(
            job.id = id,
            job.attempt = attempt,
            error = %why,
            "the database refuses every form of this outcome; the job stays running under this \
             worker and is rescued when the worker stops"
        );
        // Its claim must outlive the worker: it is how rescue finds the job.
        if let Some(claim) = claim {
            shared.open_claim(*claim, 1);
        }
    }
    if let Some(delay_ms) = retry_in {
        let delay = Duration::from_millis(u64::try_from(delay_ms).unwrap_or(0));
        shared.schedule_wake(Instant::now() + delay);
    }
    true
}
