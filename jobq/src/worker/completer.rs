//! Writing outcomes in batches: whatever has accumulated while the previous
//! write was in flight goes in the next statement, so the write rate adapts
//! to the load. While other attempts are still running, the first outcome
//! waits a moment for company, so that a burst of finishing jobs is one
//! statement rather than one for the first job and one for the rest.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jobq_diesel::{Outcome, OutcomeKind};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_util::sync::CancellationToken;

use super::state::{lock, Finished, Shared};

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
    let mut batch = Batch::new(shared.config.outcome_batch);
    let mut last_round = false;
    loop {
        if batch.outcomes.is_empty() && !last_round {
            tokio::select! {
                biased;
                received = rx.recv() => match received {
                    Some(finished) => batch.push(&shared, finished),
                    None => return,
                },
                _ = stop.cancelled() => last_round = true,
            }
        }
        while batch.outcomes.len() < shared.config.outcome_batch {
            match rx.try_recv() {
                Ok(finished) => batch.push(&shared, finished),
                Err(_) => break,
            }
        }
        if !last_round && !batch.outcomes.is_empty() && !lock(&shared.in_flight).is_empty() {
            let until = tokio::time::Instant::now() + GATHER_WINDOW;
            while batch.outcomes.len() < shared.config.outcome_batch {
                match tokio::time::timeout_at(until, rx.recv()).await {
                    Ok(Some(finished)) => batch.push(&shared, finished),
                    Ok(None) | Err(_) => break,
                }
            }
        }
        if batch.outcomes.is_empty() {
            return;
        }
        let written = write(&shared, &batch, &give_up).await;
        shared
            .unwritten
            .fetch_sub(batch.outcomes.len(), Ordering::AcqRel);
        if !written {
            tracing::error!(
                outcomes = batch.outcomes.len(),
                "gave up writing outcomes; the jobs will be rescued after the lease"
            );
            return;
        }
        batch.clear();
        if last_round && rx.is_empty() {
            return;
        }
    }
}

/// Outcomes to write in one statement, and the claims they settle.
struct Batch {
    outcomes: Vec<Outcome>,
    settled_claims: Vec<i64>,
}

impl Batch {
    fn new(capacity: usize) -> Self {
        Self {
            outcomes: Vec::with_capacity(capacity),
            settled_claims: Vec::new(),
        }
    }

    /// Adds an outcome; when it is the last open job of its claim, the
    /// claim's row goes in the same statement.
    fn push(&mut self, shared: &Shared, finished: Finished) {
        if let Some(claim) = finished.claim {
            if shared.settle_claim_job(claim) {
                self.settled_claims.push(claim);
            }
        }
        self.outcomes.push(finished.outcome);
    }

    fn clear(&mut self) {
        self.outcomes.clear();
        self.settled_claims.clear();
    }
}

/// Writes one batch, retrying with backoff; false when `give_up` fired.
async fn write(shared: &Shared, batch: &Batch, give_up: &CancellationToken) -> bool {
    let mut delay = Duration::from_millis(50);
    loop {
        match try_write(shared, batch).await {
            Ok(()) => return true,
            Err(message) => {
                tracing::warn!(error = %message, outcomes = batch.outcomes.len(), retry_in = ?delay, "writing outcomes failed");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = give_up.cancelled() => return false,
        }
        delay = (delay * 2).min(MAX_RETRY_DELAY);
    }
}

async fn try_write(shared: &Shared, batch: &Batch) -> Result<(), String> {
    let mut conn = shared
        .pool
        .get()
        .await
        .map_err(|e| format!("no connection: {e}"))?;
    let rejected = jobq_diesel::write_outcomes(&mut conn, &batch.outcomes, &batch.settled_claims)
        .await
        .map_err(|e| e.to_string())?;
    for r in &rejected {
        // Invariant 2: the attempt was rescued (and maybe claimed again)
        // while it ran; its late outcome changes nothing.
        let kind = batch
            .outcomes
            .iter()
            .find(|o| o.id == r.id && o.attempt == r.attempt)
            .map(|o| o.kind);
        tracing::warn!(
            job.id = r.id,
            job.attempt = r.attempt,
            outcome = ?kind,
            "outcome discarded: the job is no longer running this attempt (rescued)"
        );
    }
    tracing::trace!(
        outcomes = batch.outcomes.len(),
        rejected = rejected.len(),
        "outcomes written"
    );
    // Retries are due at a time this worker knows; wake for them without
    // depending on the notification reaching our own listener.
    let retry_in = batch
        .outcomes
        .iter()
        .filter_map(|o| match o.kind {
            OutcomeKind::Retry { delay_ms } => Some(delay_ms),
            _ => None,
        })
        .min();
    if let Some(delay_ms) = retry_in {
        let delay = Duration::from_millis(u64::try_from(delay_ms).unwrap_or(0));
        shared.schedule_wake(Instant::now() + delay);
    }
    Ok(())
}
