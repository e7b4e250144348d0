//! The fetcher: claims due jobs into free slots and starts them.
//!
//! It sleeps until the first of: a notification, a freed slot of a task
//! that may have work waiting, the next known `run_at`, the fallback poll,
//! or shutdown. Every wake is handled the same way: one claim for every
//! task with free slots. A task whose batch came back full has more work
//! waiting, so its freed slots wake the fetcher again (gathered briefly,
//! so that batches stay large); claiming goes on until batches come back
//! short. A lost notification therefore costs at most one poll interval,
//! never a job.
//!
//! Every claim statement carries a key of its own (a counter). A claim
//! call that fails may still have committed (a connection cut while the
//! reply was on its way): its key is kept, and the claim's jobs are handed
//! back by that key, exactly, before the next claim and until it works.
//!
//! Jobs due later wait as `scheduled`, outside the claim's index. Before
//! claiming, the fetcher promotes the due ones of its queues to pending
//! when a due time it knows of has passed, and at least once per poll
//! interval (for due times it never heard of); each promotion also tells
//! it the next due time of its queues, so delayed jobs and retries start
//! within a few milliseconds of their `run_at`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jobq_diesel::{ClaimRequest, ClaimedJob, LimitedClaimRequest, Outcome, OutcomeKind};
use tokio::sync::mpsc::UnboundedSender;

use super::backoff::Backoff;
use super::error_text::error_chain;
use super::executor;
use super::state::{Finished, Shared};

pub(crate) async fn run(shared: Arc<Shared>, outcomes: UnboundedSender<Finished>) {
    // Back off while the database is unreachable, but never past the poll
    // interval, which is the promise made for missed wake-ups.
    let mut backoff = Backoff::new(Duration::from_millis(50), shared.config.poll_interval);
    let mut keys = ClaimKeys::default();
    // Promote at start-up: jobs may have fallen due while no worker ran.
    let mut promote_by = Instant::now();
    loop {
        if shared.stopping.is_cancelled() {
            break;
        }
        // Waiting for a connection may take long while the database is
        // down; shutdown must not wait for it (a release cut short is
        // rolled back, and tried again below).
        let released = tokio::select! {
            released = release_lost(&shared, &mut keys) => released,
            _ = shared.stopping.cancelled() => break,
        };
        if let Err(e) = &released {
            tracing::warn!(error = %e, "handing back a claim whose reply was lost failed; retrying");
        }
        // Learnt afresh by every round's claims of rate-limited tasks.
        keys.rate_wake = None;
        let round = async {
            if promotion_due(&shared, promote_by) {
                // Not yet done until it succeeds.
                promote_by = Instant::now();
                promote(&shared).await?;
                promote_by = Instant::now() + shared.config.poll_interval;
            }
            claim_round(&shared, &outcomes, &mut keys).await
        };
        let poll = match round.await {
            Ok(()) if released.is_ok() => {
                backoff.reset();
                shared.config.poll_interval
            }
            Ok(()) => backoff.next_delay(),
            Err(e) => {
                let retry_in = backoff.next_delay();
                tracing::warn!(error = %e, ?retry_in, "claiming jobs failed; retrying");
                retry_in
            }
        };
        let deadline = next_wake(&shared, poll, keys.rate_wake);
        tokio::select! {
            _ = shared.wake.notified() => {}
            _ = shared.slots.freed() => gather_freed_slots(&shared).await,
            _ = tokio::time::sleep_until(deadline.into()) => {}
            _ = shared.stopping.cancelled() => break,
        }
    }
    // A last try, bounded, so that shutdown does not wait on a database
    // that is down. If it fails, the jobs stay running under this worker
    // and are rescued once its row goes (which uses an attempt).
    if !keys.lost.is_empty() {
        match tokio::time::timeout(LAST_RELEASE_TIMEOUT, release_lost(&shared, &mut keys)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "could not hand back a claim whose reply was lost; its jobs will be rescued")
            }
            Err(_) => tracing::warn!(
                "handing back a claim whose reply was lost timed out; its jobs will be rescued"
            ),
        }
    }
}

/// How long the fetcher's last release at shutdown may take (only when a
/// claim's reply was lost and not released yet).
const LAST_RELEASE_TIMEOUT: Duration = Duration::from_secs(2);

/// The keys of this worker's claim statements.
#[derive(Debug, Default)]
struct ClaimKeys {
    /// The last key used; keys are never reused, which the database
    /// enforces (unique per worker).
    last: i64,
    /// Keys of claims whose call failed after they may have committed,
    /// oldest first: their jobs would otherwise run under this worker,
    /// unknown to it, for as long as it heartbeats.
    lost: Vec<i64>,
    /// When the next token of a rate-limited task whose claim came back
    /// short falls due: the fetcher wakes then, once, instead of polling.
    rate_wake: Option<Instant>,
}

impl ClaimKeys {
    fn next(&mut self) -> i64 {
        self.last += 1;
        self.last
    }
}

/// Hands back the jobs of every claim whose reply was lost. A claim that
/// never committed has nothing to hand back; one still in flight is waited
/// for (see [`jobq_diesel::release_claim`]). A key is forgotten only once
/// its release has run.
async fn release_lost(shared: &Shared, keys: &mut ClaimKeys) -> Result<(), String> {
    if keys.lost.is_empty() {
        return Ok(());
    }
    let mut conn = shared.pool.get().await.map_err(|e| error_chain(&e))?;
    while let Some(&key) = keys.lost.first() {
        let released = jobq_diesel::release_claim(&mut conn, shared.worker_id, key)
            .await
            .map_err(|e| format!("releasing claim {key}: {e}"))?;
        for id in released {
            tracing::warn!(
                job.id = id,
                claim.key = key,
                "handed back a job this worker claimed but never received (the claim's reply \
                 was lost); it did not use up an attempt"
            );
        }
        keys.lost.remove(0);
    }
    Ok(())
}

/// Longest a freed slot waits for others before the fetcher claims for it.
const GATHER_WINDOW: Duration = Duration::from_millis(5);

/// A slot of a task with work waiting was freed. Claiming for that one slot
/// at once would turn a busy worker's batches into one claim per job, so
/// wait until every slot of some such task is free, or the short window
/// passes, or something else wakes the fetcher. Short jobs of one batch
/// finish within a millisecond or so of each other, so their claims stay
/// whole; long or uneven ones are claimed for at most one window later.
async fn gather_freed_slots(shared: &Shared) {
    let until = tokio::time::Instant::now() + GATHER_WINDOW;
    while !shared.slots.a_saturated_task_is_idle() {
        tokio::select! {
            _ = shared.slots.freed() => {}
            _ = shared.wake.notified() => return,
            _ = tokio::time::sleep_until(until) => return,
            _ = shared.stopping.cancelled() => return,
        }
    }
}

/// When to look again without being woken: after `poll` (the poll
/// interval, or a backoff after a failed claim), or at the next known
/// `run_at` or the next token of a rate-limited task with work waiting,
/// if that comes first.
fn next_wake(shared: &Shared, poll: Duration, rate_wake: Option<Instant>) -> Instant {
    let now = Instant::now();
    let mut at = now + poll;
    if let Some(token) = rate_wake {
        at = at.min(token.max(now));
    }
    if let Some(due) = shared.wake.earliest() {
        // A due time that passed during the round is handled by the next
        // one, at once (promotion_due takes it).
        at = at.min(due.max(now));
    }
    at
}

/// Jobs promoted per queue and statement; more due than this are promoted
/// by further statements before the claim.
const PROMOTE_BATCH: i64 = 5_000;

/// Whether this round promotes first: a known due time has passed (it is
/// taken), or a poll interval went by since the last promotion. Busy
/// workers, woken by freed slots and never by their poll timer, promote
/// thus once per poll interval too.
fn promotion_due(shared: &Shared, promote_by: Instant) -> bool {
    let now = Instant::now();
    shared.wake.take_due(now) || now >= promote_by
}

/// Promotes every due scheduled job of the served queues (in batches), so
/// that the claim that follows sees them in exact priority order, and
/// records the next due time.
async fn promote(shared: &Shared) -> Result<(), String> {
    let mut conn = tokio::select! {
        conn = shared.claim_pool.get() => conn.map_err(|e| error_chain(&e))?,
        _ = shared.stopping.cancelled() => return Ok(()),
    };
    loop {
        let promotion = jobq_diesel::promote(&mut conn, &shared.queues, PROMOTE_BATCH)
            .await
            .map_err(|e| format!("promoting due scheduled jobs: {e}"))?;
        if promotion.promoted > 0 {
            tracing::trace!(jobs = promotion.promoted, "promoted due scheduled jobs");
            // They keep their run_at, in the past: before the floors.
            shared.floors.reset();
        }
        if promotion.more && !shared.stopping.is_cancelled() {
            continue;
        }
        if let Some(us) = promotion.next_due_in_us {
            let at = Instant::now() + Duration::from_micros(u64::try_from(us).unwrap_or(0));
            // No wake-up needed: the fetcher computes its deadline next.
            shared.wake.remember(at);
        }
        return Ok(());
    }
}

/// One claim for every task with free slots: a single statement for the
/// tasks without fleet-wide limits, and one limited claim per task with
/// limits (see `jobq_diesel::claim_limited`). A task whose batch came back
/// full is marked saturated: more work may be waiting, and its freed slots
/// wake the fetcher for the next batch.
async fn claim_round(
    shared: &Arc<Shared>,
    outcomes: &UnboundedSender<Finished>,
    keys: &mut ClaimKeys,
) -> Result<(), String> {
    let asked = shared.slots.free(shared.tasks.iter().map(|t| t.limit));
    if asked.is_empty() {
        return Ok(());
    }
    if let Some(unwritten) = shared.backlog.full() {
        // The completer wakes us when it gets below the bound again.
        tracing::debug!(
            unwritten,
            limit = shared.backlog.limit(),
            "not claiming: too many outcomes wait to be written"
        );
        return Ok(());
    }
    let (limited, unlimited): (Vec<_>, Vec<_>) = asked
        .into_iter()
        .partition(|&(i, _)| shared.tasks[i].fleet.any());
    if !unlimited.is_empty() {
        claim_batch(shared, outcomes, keys, &unlimited).await?;
    }
    for one in limited {
        claim_batch(shared, outcomes, keys, &[one]).await?;
    }
    Ok(())
}

/// Claims for `asked` (task index, free slots) and starts what came back.
/// `asked` is either any number of unlimited tasks or one limited task.
async fn claim_batch(
    shared: &Arc<Shared>,
    outcomes: &UnboundedSender<Finished>,
    keys: &mut ClaimKeys,
    asked: &[(usize, u32)],
) -> Result<(), String> {
    let tasks: Vec<String> = asked
        .iter()
        .map(|&(i, _)| shared.task_names[i].clone())
        .collect();
    let slots: Vec<i32> = asked
        .iter()
        .map(|&(_, free)| i32::try_from(free).unwrap_or(i32::MAX))
        .collect();
    let indices: Vec<usize> = asked.iter().map(|&(i, _)| i).collect();
    let limits = match asked {
        [(i, _)] => Some(shared.tasks[*i].fleet).filter(|l| l.any()),
        _ => None,
    };
    let claimed: Vec<ClaimedJob> = {
        // Waiting for a connection may take long while the database is
        // down; shutdown must not wait for it. The claim itself is never
        // abandoned half-way: its jobs would be claimed and never run.
        let mut conn = tokio::select! {
            conn = shared.claim_pool.get() => conn.map_err(|e| error_chain(&e))?,
            _ = shared.stopping.cancelled() => return Ok(()),
        };
        let claim_key = keys.next();
        let result = match limits {
            None => {
                let flight = shared.floors.begin(&tasks);
                let request = ClaimRequest {
                    worker_id: shared.worker_id,
                    queues: &shared.queues,
                    tasks: &tasks,
                    slots: &slots,
                    claim_key,
                    due: cfg!(feature = "metrics"),
                    floors: &flight.floors,
                    lanes: shared.lanes.for_claim(),
                };
                let result = jobq_diesel::claim(&mut conn, &request).await;
                match &result {
                    Ok(claimed) => shared.floors.finish(
                        flight,
                        claimed.iter().map(|job| {
                            let task = job.task.as_deref().unwrap_or(tasks[0].as_str());
                            (task, job.position)
                        }),
                    ),
                    Err(_) => shared.floors.abandon(flight),
                }
                result
            }
            Some(limits) => {
                let request = LimitedClaimRequest {
                    worker_id: shared.worker_id,
                    queues: &shared.queues,
                    task: &tasks[0],
                    slots: slots[0],
                    global_concurrency: limits.global,
                    key_concurrency: limits.per_key,
                    claim_key,
                    due: cfg!(feature = "metrics"),
                    rate: limits.rate.map(|r| r.as_limit()),
                    key_rate: limits.key_rate.map(|r| r.as_limit()),
                };
                let result = jobq_diesel::claim_limited(&mut conn, &request).await;
                if let Ok(claimed) = &result {
                    if limits.rated() && claimed.len() < slots[0] as usize {
                        note_next_token(&mut conn, &mut keys.rate_wake, &request).await;
                    }
                }
                result
            }
        };
        match result {
            Ok(claimed) => claimed,
            Err(e) => {
                // Whatever the error, the claim may have committed (the
                // reply is the last thing to arrive): release it by key.
                // One that did not commit costs a statement that finds
                // nothing. Except a clash on the key itself: that claim
                // failed, and the key's row belongs to another claim (or
                // to the tombstone of a release), not to be touched.
                if !is_key_clash(&e) {
                    keys.lost.push(claim_key);
                }
                return Err(e.to_string());
            }
        }
    };
    // Every job counts towards its claim, also one that cannot be started
    // (it is handed back through the completer like any outcome): the
    // claim's row must stay while any of its jobs runs under this worker.
    let mut claims: Vec<(i64, u32)> = Vec::new();
    for job in &claimed {
        match claims.last_mut() {
            Some((claim, jobs)) if *claim == job.claim => *jobs += 1,
            _ => claims.push((job.claim, 1)),
        }
    }
    for (claim, jobs) in claims {
        shared.claims.open(claim, jobs);
    }
    let places: Vec<Option<(usize, usize)>> = claimed
        .iter()
        .map(|job| place(shared, &indices, job))
        .collect();
    let mut per_task = vec![0u32; shared.tasks.len()];
    for &(i, _) in places.iter().flatten() {
        per_task[i] += 1;
    }
    // A limited task's slots count as taken in the database until their
    // outcomes are written, not when the handler returns: the completer
    // wakes the fetcher after each write instead (see `completer::write`).
    shared.slots.claimed(asked, &per_task);
    for (job, place) in claimed.into_iter().zip(places) {
        match place {
            Some((task, queue)) => {
                executor::spawn(shared, job, task, &shared.queue_names[queue], outcomes)
            }
            None => unreachable_task(shared, &job, outcomes),
        }
    }
    Ok(())
}

/// A claim of a rate-limited task came back short: maybe for want of
/// tokens while jobs wait. Asks when the next token falls due and wakes
/// the fetcher then. A failure only costs the wake-up (the poll interval
/// still comes), so it is logged, not returned.
async fn note_next_token(
    conn: &mut jobq_diesel::PooledConnection<'_>,
    rate_wake: &mut Option<Instant>,
    request: &LimitedClaimRequest<'_>,
) {
    match jobq_diesel::next_token(conn, request.task, request.rate, request.key_rate).await {
        Ok(Some(wait)) => {
            let at = Instant::now() + wait;
            *rate_wake = Some(rate_wake.map_or(at, |w| w.min(at)));
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(
            task = request.task,
            error = %e,
            "could not learn when the task's next rate token is due; polling instead"
        ),
    }
}

fn is_key_clash(e: &diesel::result::Error) -> bool {
    matches!(
        e,
        diesel::result::Error::DatabaseError(diesel::result::DatabaseErrorKind::UniqueViolation, _)
    )
}

/// A claimed job's task and queue, as indices into what this worker
/// serves. The claim names them only when it asked for several; otherwise
/// they are the one it asked for (`tasks_asked` holds the task indices of
/// the request).
fn place(shared: &Shared, tasks_asked: &[usize], job: &ClaimedJob) -> Option<(usize, usize)> {
    let task = match &job.task {
        None => tasks_asked
            .first()
            .copied()
            .filter(|_| tasks_asked.len() == 1),
        Some(name) => shared.task_names.iter().position(|t| t == name),
    }?;
    let queue = match &job.queue {
        None => (shared.queues.len() == 1).then_some(0),
        Some(name) => shared.queue_index(name),
    }?;
    Some((task, queue))
}

fn unreachable_task(shared: &Shared, job: &ClaimedJob, outcomes: &UnboundedSender<Finished>) {
    // The claim only asks for tasks and queues this worker serves; log
    // rather than panic if the database ever returns something else, and
    // hand the job back untried rather than leave it running here.
    tracing::error!(
        job.id = job.id,
        job.task = job.task.as_deref(),
        job.queue = job.queue.as_deref(),
        "claimed a job of a task or queue this worker does not serve; handing it back"
    );
    shared.backlog.add();
    let finished = Finished {
        outcome: Outcome {
            id: job.id,
            attempt: job.attempt,
            kind: OutcomeKind::Released,
            message: Some(
                "claimed by a worker that does not serve its task or queue; handed back".into(),
            ),
            output: None,
        },
        claim: job.claim,
    };
    if outcomes.send(finished).is_err() {
        shared.backlog.done(1);
    }
}
