//! Running one attempt: decode the payload, call the task function under
//! its time limit with panics caught, and turn the result into an outcome.

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures_util::FutureExt;
use jobq_diesel::{ClaimedJob, Outcome, OutcomeKind};
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::state::{lock, Finished, InFlight, Shared};
use crate::retry::backoff;
use crate::{Context, JobId};

/// Starts the attempt of a claimed job on the runtime. The slot of its task
/// was taken by the fetcher; it is freed when the handler returns.
pub(crate) fn spawn(
    shared: &Arc<Shared>,
    job: ClaimedJob,
    task_index: usize,
    queue: &Arc<str>,
    outcomes: &UnboundedSender<Finished>,
) {
    let span = tracing::info_span!(
        "job",
        job.id = job.id,
        job.task = shared.tasks[task_index].descriptor.name,
        job.queue = &**queue,
        job.attempt = job.attempt,
    );
    // A token of its own rather than a child of `stopping`: children share
    // their parent's lock, which every attempt would take twice. Shutdown
    // cancels the tokens in `in_flight` one by one instead.
    let cancel = CancellationToken::new();
    if job.cancel_requested {
        cancel.cancel();
    }
    // Register before spawning so that a cancel notification or a shutdown
    // arriving right now finds the attempt.
    let superseded = {
        let mut in_flight = lock(&shared.in_flight);
        // Checked under the lock shutdown holds while it cancels the
        // attempts in flight: an attempt is either among them or sees the
        // shutdown here.
        if shared.stopping.is_cancelled() {
            cancel.cancel();
        }
        in_flight.insert(
            job.id,
            InFlight {
                attempt: job.attempt,
                claim: job.claim,
                cancel: cancel.clone(),
                abort: None,
            },
        )
    };
    if let Some(old) = superseded {
        // This worker was presumed dead (no heartbeat within the lease), the
        // job was rescued and has come back to it. The old attempt's outcome
        // would be fenced out anyway: ask it to stop.
        tracing::warn!(
            job.id = job.id,
            old.attempt = old.attempt,
            "an earlier attempt of this job was rescued; stopping it"
        );
        old.cancel.cancel();
        // It no longer owns its outcome, so it will not free its slot, nor
        // settle its claim (whose row goes with a heartbeat or the rescue,
        // once nothing of it runs here).
        shared.release_slot(task_index);
        shared.settle_claim_job(old.claim);
    }
    let id = job.id;
    let attempt = job.attempt;
    let claim = job.claim;
    let task = Arc::clone(shared);
    let queue = Arc::clone(queue);
    let tx = outcomes.clone();
    // Boxed: the attempt's state machine is large, and tokio moves a task's
    // future several times on the way in and out; a box moves as a pointer.
    let attempt_future = Box::pin(async move {
        let kind_and_message = run_attempt(&task, job, task_index, queue, cancel).await;
        finish(
            &task,
            (id, attempt, claim),
            task_index,
            kind_and_message,
            &tx,
        );
    });
    let handle = tokio::spawn(attempt_future.instrument(span));
    if let Some(entry) = lock(&shared.in_flight).get_mut(&id) {
        entry.abort = Some(handle.abort_handle());
    }
}

async fn run_attempt(
    shared: &Shared,
    job: ClaimedJob,
    task_index: usize,
    queue: Arc<str>,
    cancel: CancellationToken,
) -> (OutcomeKind, Option<String>) {
    let descriptor = shared.tasks[task_index].descriptor;
    // The number users see (hand-backs not counted), not the fencing one.
    let attempt = u32::try_from(job.number()).unwrap_or(1);
    let ctx = Context::new(JobId::from(job.id), attempt, descriptor.name, queue, cancel);
    let future = match (descriptor.handler)(ctx, &job.payload) {
        Ok(future) => future,
        Err(e) => {
            let message = format!(
                "task {}: the payload does not deserialize into the task's payload type: {e}",
                descriptor.name
            );
            tracing::error!(error = %message, "failing the job permanently");
            return (OutcomeKind::Failed, Some(message));
        }
    };
    tracing::debug!("attempt started");
    let limit = descriptor.options.time_limit();
    let guarded = async move {
        match limit {
            Some(limit) => tokio::time::timeout(limit, future).await.map_err(|_| limit),
            None => Ok(future.await),
        }
    };
    let retry = |message: String| {
        let delay = backoff(descriptor.options.retry_base(), attempt);
        let delay_ms = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
        (OutcomeKind::Retry { delay_ms }, Some(message))
    };
    let result = AssertUnwindSafe(guarded).catch_unwind().await;
    let outcome = match result {
        Ok(Ok(Ok(()))) => (OutcomeKind::Completed, None),
        Ok(Ok(Err(e))) if e.is_permanent() => (OutcomeKind::Failed, Some(e.to_string())),
        Ok(Ok(Err(e))) => retry(e.to_string()),
        Ok(Err(limit)) => retry(format!("attempt timed out after {limit:?}")),
        Err(panic) => retry(format!("attempt panicked: {}", panic_message(&*panic))),
    };
    // A handler that stopped because the worker is shutting down gets its
    // job back in the queue untouched instead of a failed attempt.
    if outcome.0 != OutcomeKind::Completed
        && shared.stopping.is_cancelled()
        && outcome.0 != OutcomeKind::Failed
    {
        return (
            OutcomeKind::Released,
            Some(format!(
                "worker shutting down: {}",
                outcome.1.unwrap_or_default()
            )),
        );
    }
    match &outcome {
        (OutcomeKind::Completed, _) => tracing::debug!("attempt completed"),
        (kind, Some(message)) => {
            tracing::warn!(error = %message, outcome = ?kind, "attempt failed")
        }
        (kind, None) => tracing::warn!(outcome = ?kind, "attempt failed"),
    }
    outcome
}

/// Hands the outcome to the completer, unless shutdown already took the
/// attempt back (then it owns the outcome).
fn finish(
    shared: &Shared,
    (id, attempt, claim): (i64, i32, i64),
    task_index: usize,
    (kind, message): (OutcomeKind, Option<String>),
    outcomes: &UnboundedSender<Finished>,
) {
    // Counted before the attempt leaves `in_flight`, so that the heartbeat
    // never sees it in neither place.
    shared.unwritten.fetch_add(1, Ordering::AcqRel);
    let (owned, now_idle) = {
        let mut in_flight = lock(&shared.in_flight);
        // Only this attempt's own entry: a later attempt of the same job may
        // have taken the id's place (see `spawn`).
        let owned = in_flight.get(&id).is_some_and(|job| job.attempt == attempt);
        if owned {
            in_flight.remove(&id);
        }
        (owned, in_flight.is_empty())
    };
    if now_idle {
        shared.idle.notify_one();
    }
    if !owned {
        shared.unwritten.fetch_sub(1, Ordering::AcqRel);
        return;
    }
    shared.release_slot(task_index);
    let outcome = Outcome {
        id,
        attempt,
        kind,
        message,
    };
    let finished = Finished {
        outcome,
        claim: Some(claim),
    };
    if outcomes.send(finished).is_err() {
        shared.unwritten.fetch_sub(1, Ordering::AcqRel);
        // Only after the completer stopped; the job stays running and is
        // rescued once this worker's heartbeats stop.
        tracing::error!("outcome dropped: the completer has stopped");
    }
}

fn panic_message(panic: &(dyn Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&'static str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "a non-string panic payload".to_owned()
    }
}
