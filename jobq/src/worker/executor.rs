//! Running one attempt: decode the payload, call the task function under
//! its time limit with panics caught, and turn the result into an outcome.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use futures_util::FutureExt;
use jobq_diesel::{ClaimedJob, Outcome, OutcomeKind};
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::attempts::{AttemptRef, Owned};
use super::message;
use super::state::{Finished, Shared};
use crate::complete_in::Fence;
use crate::context::Labels;
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
    crate::trace_context::adopt(&span, job.headers.as_deref());
    // A token of its own rather than a child of `stopping`: children share
    // their parent's lock, which every attempt would take twice. Shutdown
    // cancels the attempts one by one instead (`Attempts::close`).
    let cancel = CancellationToken::new();
    if job.cancel_requested {
        cancel.cancel();
    }
    let attempt = AttemptRef {
        id: job.id,
        attempt: job.attempt,
        claim: job.claim,
        task_index,
    };
    // Registered before spawning so that a cancel notification or a
    // shutdown arriving right now finds the attempt.
    if let Some(old) = shared.attempts.start(attempt, cancel.clone()) {
        // This worker was presumed dead (no heartbeat within the lease), the
        // job was rescued and has come back to it. The old attempt's outcome
        // would be fenced out anyway; it has been asked to stop.
        tracing::warn!(
            job.id = job.id,
            old.attempt = old.attempt,
            "an earlier attempt of this job was rescued; stopping it"
        );
        // It no longer owns its outcome, so it will not free its slot, nor
        // settle its claim (whose row goes with a heartbeat or the rescue,
        // once nothing of it runs here).
        shared.slots.release(old.task_index);
        shared.claims.settle(old.claim);
    }
    let name = shared.tasks[task_index].descriptor.name;
    crate::metrics::claimed(name, queue, job.due.map(|d| d.run_at));
    // What a failed attempt means for the job is known here: with the
    // feature, the claim brought the job's limit of attempts.
    let last_attempt = job.due.is_some_and(|d| job.number() >= d.max_attempts);
    let task = Arc::clone(shared);
    let queue = Arc::clone(queue);
    let tx = outcomes.clone();
    // Boxed: the attempt's state machine is large, and tokio moves a task's
    // future several times on the way in and out; a box moves as a pointer.
    let fence = Fence::new(job.attempt);
    let attempt_future = Box::pin(async move {
        let started = crate::metrics::Stopwatch::start();
        let (kind, message, output) = run_attempt(
            &task,
            job,
            task_index,
            Arc::clone(&queue),
            cancel.clone(),
            fence.clone(),
        )
        .await;
        let (kind, message) = if kind != OutcomeKind::Completed && fence.used() {
            // Boxed: the rare path's future (a pool checkout, a query) would
            // otherwise enlarge every attempt's state machine.
            Box::pin(completed_in_handler(&task, &attempt, kind, message)).await
        } else {
            (kind, message)
        };
        if let Some(owned) = task.attempts.finish(&attempt) {
            let ended = ended(kind, last_attempt, &cancel, &task.stopping);
            crate::metrics::attempt_ended(name, &queue, ended, started.elapsed());
            task.slots.release(task_index);
            send(&task, &tx, owned, kind, message, output);
        }
    });
    let handle = tokio::spawn(attempt_future.instrument(span));
    shared.attempts.set_abort(&attempt, handle.abort_handle());
}

/// The outcome of an attempt whose handler completed its job in its own
/// transaction and then failed: when that transaction committed, the job
/// is completed and stays so, and the attempt counts as completed (its
/// outcome, now a plain completion, finds nothing left to write). When it
/// rolled back, or the database cannot tell now, the failure stands.
async fn completed_in_handler(
    shared: &Shared,
    attempt: &AttemptRef,
    kind: OutcomeKind,
    message: Option<String>,
) -> (OutcomeKind, Option<String>) {
    let committed = match shared.pool.get().await {
        Ok(mut conn) => jobq_diesel::attempt_completed(&mut conn, attempt.id, attempt.attempt)
            .await
            .unwrap_or(false),
        Err(_) => false,
    };
    if !committed {
        return (kind, message);
    }
    tracing::warn!(
        error = message.as_deref().unwrap_or(""),
        "the handler failed after its job was completed in its own transaction \
         (complete_in); the job stays completed and the failure is not recorded"
    );
    (OutcomeKind::Completed, None)
}

/// How the attempt ends for the metrics. A job whose cancellation was
/// requested ends cancelled whatever its handler returned (the outcome
/// writer sees to that); a cancelled token outside a shutdown means just
/// that request.
fn ended(
    kind: OutcomeKind,
    last_attempt: bool,
    cancel: &CancellationToken,
    stopping: &CancellationToken,
) -> crate::metrics::Ended {
    use crate::metrics::Ended;
    match kind {
        // Not an attempt used: counted as the hand-backs they are stored as.
        OutcomeKind::Released | OutcomeKind::Snoozed { .. } | OutcomeKind::RateLimited { .. } => {
            Ended::Released
        }
        OutcomeKind::Cancelled => Ended::Cancelled,
        _ if cancel.is_cancelled() && !stopping.is_cancelled() => Ended::Cancelled,
        OutcomeKind::Completed => Ended::Completed,
        OutcomeKind::Failed => Ended::Failed,
        OutcomeKind::Retry { .. } if last_attempt => Ended::Failed,
        OutcomeKind::Retry { .. } => Ended::Retried,
    }
}

/// Hands an attempt's outcome to the completer: the one way an outcome
/// leaves an attempt, and only with the [`Owned`] right to it.
pub(crate) fn send(
    shared: &Shared,
    outcomes: &UnboundedSender<Finished>,
    Owned(attempt): Owned,
    kind: OutcomeKind,
    message: Option<String>,
    output: Option<String>,
) {
    shared.backlog.add();
    let finished = Finished {
        outcome: Outcome {
            id: attempt.id,
            attempt: attempt.attempt,
            kind,
            message,
            output,
        },
        claim: attempt.claim,
    };
    if outcomes.send(finished).is_err() {
        shared.backlog.done(1);
        // Only after the completer stopped; the job stays running and is
        // rescued once this worker's heartbeats stop.
        tracing::error!(
            job.id = attempt.id,
            job.attempt = attempt.attempt,
            "outcome dropped: the completer has stopped"
        );
    }
}

async fn run_attempt(
    shared: &Shared,
    job: ClaimedJob,
    task_index: usize,
    queue: Arc<str>,
    cancel: CancellationToken,
    fence: Fence,
) -> (OutcomeKind, Option<String>, Option<String>) {
    let (kind, full, output) = attempt_outcome(shared, job, task_index, queue, cancel, fence).await;
    // The whole message goes to the log; the job's history keeps a cleaned,
    // capped copy (see `message`).
    match (&kind, &full) {
        (OutcomeKind::Completed, _) => tracing::debug!("attempt completed"),
        (kind, Some(message)) => {
            tracing::warn!(error = %message, outcome = ?kind, "attempt failed")
        }
        (kind, None) => tracing::warn!(outcome = ?kind, "attempt failed"),
    }
    (kind, full.as_deref().map(message::stored), output)
}

/// Runs the attempt and says how it ended, with the full message of a
/// failure and the output of a success. Everything the task's code does runs under `catch_unwind`:
/// decoding the payload (a custom `Deserialize` may panic), the handler,
/// and formatting its error.
async fn attempt_outcome(
    shared: &Shared,
    job: ClaimedJob,
    task_index: usize,
    queue: Arc<str>,
    cancel: CancellationToken,
    fence: Fence,
) -> (OutcomeKind, Option<String>, Option<String>) {
    let served = &shared.tasks[task_index];
    let descriptor = served.descriptor;
    // The number users see (hand-backs not counted), not the fencing one.
    let attempt = u32::try_from(job.number()).unwrap_or(1);
    let labels = Labels::of(job.key.clone(), job.headers.as_deref());
    let ctx = Context::new(
        JobId::from(job.id),
        attempt,
        descriptor,
        queue,
        cancel,
        served.states.clone(),
        labels,
    )
    .fenced(fence);
    let decoded = catch_unwind(AssertUnwindSafe(|| (descriptor.handler)(ctx, &job.payload)));
    let future = match decoded {
        Ok(Ok(future)) => future,
        Ok(Err(e)) => {
            let message = format!(
                "task {}: the payload does not deserialize into the task's payload type: {}",
                descriptor.name,
                message::text_of(|| e.to_string())
            );
            return (OutcomeKind::Failed, Some(message), None);
        }
        // It would panic again on every attempt: fail at once.
        Err(panic) => {
            let message = format!(
                "task {}: decoding the payload panicked: {}",
                descriptor.name,
                message::panic_message(&*panic)
            );
            return (OutcomeKind::Failed, Some(message), None);
        }
    };
    tracing::debug!("attempt started");
    let limit = served.timeout;
    let guarded = async move {
        match limit {
            Some(limit) => tokio::time::timeout(limit, future).await.map_err(|_| limit),
            None => Ok(future.await),
        }
    };
    let retry = |message: String| {
        let delay = backoff(served.retry_base, attempt);
        let delay_ms = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
        (OutcomeKind::Retry { delay_ms }, Some(message), None)
    };
    let result = AssertUnwindSafe(guarded).catch_unwind().await;
    match result {
        Ok(Ok(Ok(output))) => (OutcomeKind::Completed, None, output),
        Ok(Ok(Err(e))) => {
            let kind = e.outcome_kind(backoff(served.retry_base, attempt));
            let text = message::text_of(|| e.to_string());
            // A handler that gave up because the worker is shutting down
            // gets its job back in the queue untouched instead of a failed
            // attempt. A snooze keeps its delay (and a rate limit its
            // block): the handler asked for it, whatever stopped it. The
            // attempt's own timeout or a panic is no reaction to the
            // shutdown either: those stay failed attempts.
            if matches!(kind, OutcomeKind::Retry { .. }) && shared.stopping.is_cancelled() {
                (
                    OutcomeKind::Released,
                    Some(format!("worker shutting down: {text}")),
                    None,
                )
            } else {
                (kind, Some(text), None)
            }
        }
        Ok(Err(limit)) => retry(format!("attempt timed out after {limit:?}")),
        Err(panic) => retry(format!(
            "attempt panicked: {}",
            message::panic_message(&*panic)
        )),
    }
}
