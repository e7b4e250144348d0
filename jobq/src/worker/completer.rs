//! Writing outcomes in batches: whatever has accumulated while the previous
//! write was in flight goes in the next statement, so the write rate adapts
//! to the load. While other attempts are still running, the first outcome
//! waits a moment for company, so that a burst of finishing jobs is one
//! statement rather than one for the first job and one for the rest.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedReceiver;
use tokio_util::sync::CancellationToken;

use super::backoff::Backoff;
use super::outcome_writer::{BatchWrite, Entry, ParkedBecause, PoolStore};
use super::state::{Finished, Shared};

/// Longest an outcome waits for others to share its statement.
const GATHER_WINDOW: Duration = Duration::from_millis(2);

/// Longest pause between two tries of a failing write.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(5);

/// First pause before parked outcomes are tried again. Short, because
/// the usual lock on a job's row is a claim of another worker's passing
/// over it: a `FOR UPDATE SKIP LOCKED` walk that reaches a row claimed
/// after its snapshot was taken locks the row before it sees that the
/// row is no longer pending, and PostgreSQL keeps that lock until the
/// claim commits, milliseconds later (longer with many workers on a busy
/// server). A retry is written around locks, so it costs one statement
/// and never waits.
const FIRST_PARKED_DELAY: Duration = Duration::from_millis(50);

/// Longest pause between two tries of outcomes the database refused.
const MAX_PARKED_DELAY: Duration = Duration::from_secs(30);

/// How long a job's row may stay locked by another transaction before
/// the waiting outcome is logged as a warning: past anything a claim
/// holds it for, so the application's own long transaction.
const LONG_LOCK: Duration = Duration::from_secs(10);

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
    let mut parked = Parked::default();
    let mut last_round = false;
    let limit = shared.config.outcome_batch;
    loop {
        if batch.is_empty() && !last_round {
            let parked_wait = async {
                match parked.due {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                received = rx.recv() => match received {
                    Some(finished) => push(&shared, &mut batch, finished),
                    None => last_round = true,
                },
                _ = stop.cancelled() => last_round = true,
                _ = parked_wait => {}
            }
        }
        if let Some(entries) = parked.take_due(last_round) {
            // On their own and around row locks, so that a lock still held
            // holds up nothing else.
            let mut retry = BatchWrite::retrying(entries);
            let n = retry.len();
            let Some(again) = write(&shared, &mut retry, &give_up).await else {
                shared.backlog.done(n);
                return;
            };
            parked.put_back(&shared, n, again, last_round);
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
            if last_round {
                return;
            }
            continue;
        }
        let n = batch.len();
        let Some(newly_parked) = write(&shared, &mut batch, &give_up).await else {
            shared.backlog.done(n);
            tracing::error!(
                outcomes = n,
                "gave up writing outcomes; the jobs will be rescued after the lease"
            );
            return;
        };
        parked.put_back(&shared, n, newly_parked, last_round);
        if last_round && rx.is_empty() && parked.is_empty() {
            return;
        }
    }
}

/// Outcomes parked by `outcome_writer` (the database refused every form
/// of them, or their row stays locked), tried again on their own from
/// time to time. They stay in the backlog until they are written.
struct Parked {
    entries: Vec<Entry>,
    due: Option<tokio::time::Instant>,
    backoff: Backoff,
}

impl Default for Parked {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
            due: None,
            backoff: Backoff::new(FIRST_PARKED_DELAY, MAX_PARKED_DELAY),
        }
    }
}

impl Parked {
    /// The parked outcomes, when it is time to try them again (always on
    /// the last round).
    fn take_due(&mut self, last_round: bool) -> Option<Vec<Entry>> {
        let due = last_round || self.due.is_some_and(|at| at <= tokio::time::Instant::now());
        if !due || self.entries.is_empty() {
            return None;
        }
        self.due = None;
        Some(std::mem::take(&mut self.entries))
    }

    /// After a write of `n` outcomes of which `again` were parked: the
    /// others leave the backlog; the parked ones wait for their next try,
    /// or are given up on the last round.
    fn put_back(&mut self, shared: &Shared, n: usize, again: Vec<Entry>, last_round: bool) {
        if shared.backlog.done(n - again.len()) {
            // The fetcher stopped claiming at the bound; it may go on.
            shared.wake.now();
        }
        if again.is_empty() {
            if self.entries.is_empty() {
                self.backoff.reset();
            }
        } else if last_round {
            shared.backlog.done(again.len());
            tracing::error!(
                outcomes = again.len(),
                "gave up outcomes the database refuses, at shutdown; their jobs are rescued once \
                 this worker is gone"
            );
        } else {
            self.entries.extend(again);
            self.due = Some(tokio::time::Instant::now() + self.backoff.next_delay());
        }
    }

    fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Adds an outcome; when it is the last open job of its claim, the
/// claim's row goes with it.
fn push(shared: &Shared, batch: &mut BatchWrite, finished: Finished) {
    let settles = shared.claims.settle(finished.claim);
    batch.push(Entry::new(finished.outcome, Some(finished.claim), settles));
}

/// Writes one batch, trying again with backoff while the database is
/// away; returns the outcomes parked (see `outcome_writer`), or `None`
/// when `give_up` fired first.
async fn write(
    shared: &Shared,
    batch: &mut BatchWrite,
    give_up: &CancellationToken,
) -> Option<Vec<Entry>> {
    // Retries are due at a time this worker knows; wake for them without
    // depending on the notification reaching our own listener.
    let retry_in = batch
        .entries
        .iter()
        .filter_map(|e| e.outcome.kind.delay_ms())
        .min();
    let mut backoff = Backoff::new(Duration::from_millis(50), MAX_RETRY_DELAY);
    let mut store = PoolStore(&shared.pool);
    let report = loop {
        let n = batch.len();
        let result = tokio::select! {
            result = batch.write(&mut store) => result,
            _ = give_up.cancelled() => return None,
        };
        match result {
            Ok(report) => break report,
            Err(e) => {
                let retry_in = backoff.next_delay();
                tracing::warn!(error = %e, outcomes = n, ?retry_in, "writing outcomes failed");
                tokio::select! {
                    _ = tokio::time::sleep(retry_in) => {}
                    _ = give_up.cancelled() => return None,
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
    let mut parked = Vec::new();
    let mut locked = 0;
    for (mut entry, why) in report.parked {
        match why {
            ParkedBecause::Refused(error) => tracing::error!(
                job.id = entry.outcome.id,
                job.attempt = entry.outcome.attempt,
                error = %error,
                "the database refuses every form of this outcome for now; trying it again later \
                 (its job stays running under this worker meanwhile)"
            ),
            ParkedBecause::Locked { since } => {
                locked += 1;
                if since.elapsed() >= LONG_LOCK && !entry.long_lock_logged {
                    entry.long_lock_logged = true;
                    tracing::warn!(
                        job.id = entry.outcome.id,
                        job.attempt = entry.outcome.attempt,
                        locked_for = ?since.elapsed(),
                        "another transaction keeps this job's row locked; its outcome waits \
                         (the job stays running under this worker meanwhile)"
                    );
                }
            }
        }
        parked.push(entry);
    }
    if locked > 0 {
        tracing::debug!(
            outcomes = locked,
            "outcomes wait for row locks of other transactions; trying them again shortly"
        );
    }
    if let Some(delay_ms) = retry_in {
        let delay = Duration::from_millis(u64::try_from(delay_ms).unwrap_or(0));
        shared.wake.at(Instant::now() + delay);
    }
    if shared.serves_limited_tasks {
        // A fleet-wide slot is free once the outcome that settles it is
        // written, not when the handler returns: claim for it now.
        shared.wake.now();
    }
    Some(parked)
}
