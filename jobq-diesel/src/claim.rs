//! Claiming due jobs: one statement per batch, for every task with free
//! slots at once, committed before any handler runs.

use std::sync::OnceLock;

use chrono::{DateTime, Utc};
use diesel::deserialize::{self, FromSql, QueryableByName};
use diesel::pg::Pg;
use diesel::row::{Field, NamedRow, Row};
use diesel::sql_types::{Array, BigInt, Bool, Integer, Nullable, SmallInt, Text, Timestamptz};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

use crate::claim_lanes::{self, ClaimLanes};
use crate::claim_position::ClaimPosition;
use crate::prepared::prepared;

/// What a worker asks for: up to `slots[i]` jobs of `tasks[i]`, from the
/// given queues.
#[derive(Debug, Clone, Copy)]
pub struct ClaimRequest<'a> {
    /// The claiming worker's id (from [`crate::register_worker`]).
    pub worker_id: i64,
    /// Queues the worker serves.
    pub queues: &'a [String],
    /// Task names with free slots.
    pub tasks: &'a [String],
    /// Free slots of each task, same order as `tasks`.
    pub slots: &'a [i32],
    /// This claim's identity among the worker's claims, chosen by the
    /// worker and never reused by it (a counter): if the call fails after
    /// the claim may have committed, [`release_claim`] with the same key
    /// hands exactly its jobs back.
    pub claim_key: i64,
    /// Also return each job's [`Due`] (see [`ClaimedJob::due`]): what
    /// metrics need. Without it the statement and its reply are as small
    /// as ever; with it, measured at up to a tenth fewer jobs/s in a
    /// two-worker drain of no-op jobs.
    pub due: bool,
    /// Where each task's walk starts, same order as `tasks` (`None`, or a
    /// slice shorter than `tasks`: at the task's first pending job).
    ///
    /// A floor skips the index entries before it: under a snapshot held
    /// open (a long transaction anywhere on the server), every job claimed
    /// since leaves a dead entry at the head of its task's range that
    /// nothing can remove while it is held, and a claim from the head
    /// visits each of them. The caller must give a floor at or before
    /// every job of the task that is pending for it (the worker's
    /// `ClaimFloors` keeps them so).
    pub floors: &'a [Option<ClaimPosition>],
    /// How many claims may walk the claim index at once, fleet-wide
    /// (`None`: no bound, and no transaction around the claim). See
    /// [`ClaimLanes`].
    pub lanes: Option<ClaimLanes>,
}

/// A job now running under the claiming worker: what its attempt needs.
/// (Every column returned costs the server and the worker something per
/// job on the hot path. One row per job is the cheaper reply overall:
/// aggregating the batch into arrays saved the worker 14 % of its
/// instructions but cost the server more per job than that, measured at
/// 3 % fewer jobs/s in a two-worker drain.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedJob {
    /// Row id.
    pub id: i64,
    /// Task name; `None` when the request named a single task, which is
    /// then the job's.
    pub task: Option<String>,
    /// Queue name; `None` when the request named a single queue, which is
    /// then the job's.
    pub queue: Option<String>,
    /// Payload as JSON text.
    pub payload: String,
    /// This attempt's fencing number (already incremented): every claim
    /// increments it, so it identifies the attempt in outcomes. Not the
    /// number to show: see [`ClaimedJob::number`].
    pub attempt: i32,
    /// Whether someone asked to cancel the job before it was claimed.
    pub cancel_requested: bool,
    /// The claim's row in `jobq.claims`, which holds the job for this
    /// worker until the outcome of the claim's last job is written (pass
    /// it to [`crate::write_outcomes`] then).
    pub claim: i64,
    /// Claims of the job before this one that used no attempt: hand-backs
    /// untried (at a shutdown, or after a claim whose reply was lost) and
    /// snoozes (`TaskError::retry_after`, `rate_limited`).
    pub handbacks: i32,
    /// The job's partition key, if it has one.
    pub key: Option<String>,
    /// The job's headers as the JSON text of an object, if it has any.
    pub headers: Option<String>,
    /// The job's limit of attempts and due time, when the request asked
    /// for them ([`ClaimRequest::due`]).
    pub due: Option<Due>,
    /// The job's place in its task's claim order (a claim floor for the
    /// next claim of the task is the last of these).
    pub position: ClaimPosition,
}

/// What a claim returns besides the job when asked ([`ClaimRequest::due`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Due {
    /// The job's limit of attempts, so that a failed attempt can be told
    /// apart from the last one (metrics count retries and failures).
    pub max_attempts: i32,
    /// When the job became due: the pickup latency runs from here to the
    /// attempt's start.
    pub run_at: DateTime<Utc>,
}

/// `sql`, a claim statement, with the column of [`Due`] that it does not
/// return already added to its RETURNING: built once per statement, then
/// shared by every claim.
pub(crate) fn with_due(sql: &'static str, built: &'static OnceLock<String>) -> &'static str {
    built.get_or_init(|| format!("{sql}, max_attempts"))
}

impl ClaimedJob {
    /// The attempt's number as handlers and users see it, starting at 1:
    /// the attempts the job has used, hand-backs and snoozes not counted. Never more
    /// than the job's `max_attempts`.
    pub fn number(&self) -> i32 {
        self.attempt.saturating_sub(self.handbacks)
    }
}

impl QueryableByName<Pg> for ClaimedJob {
    fn build<'a>(row: &impl NamedRow<'a, Pg>) -> deserialize::Result<Self> {
        // By position, in the order of CLAIM_SQL's RETURNING: a lookup by
        // name for every column of every row shows up in a busy worker's
        // profile.
        let id = column::<BigInt, _>(row, 0)?;
        let position = ClaimPosition {
            priority: column::<SmallInt, _>(row, 10)?,
            run_at: column::<Timestamptz, _>(row, 11)?,
            id,
        };
        Ok(ClaimedJob {
            id,
            task: column::<Nullable<Text>, _>(row, 1)?,
            queue: column::<Nullable<Text>, _>(row, 2)?,
            payload: column::<Text, _>(row, 3)?,
            attempt: column::<Integer, _>(row, 4)?,
            cancel_requested: column::<Bool, _>(row, 5)?,
            claim: column::<BigInt, _>(row, 6)?,
            handbacks: column::<Integer, _>(row, 7)?,
            key: column::<Nullable<Text>, _>(row, 8)?,
            headers: column::<Nullable<Text>, _>(row, 9)?,
            due: if row.field_count() > 12 {
                Some(Due {
                    max_attempts: column::<Integer, _>(row, 12)?,
                    run_at: position.run_at,
                })
            } else {
                None
            },
            position,
        })
    }
}

fn column<'a, ST, T: FromSql<ST, Pg>>(
    row: &impl Row<'a, Pg>,
    index: usize,
) -> deserialize::Result<T> {
    let field =
        Row::get(row, index).ok_or_else(|| format!("the claim returned no column {index}"))?;
    T::from_nullable_sql(field.value())
}

/// The conditions every job a claim takes meets, in both halves of the
/// walk: pending, due, in a served queue that is not paused, and neither
/// its task nor its key blocked.
macro_rules! claimable {
    () => {
        "state = 'pending' AND task = w.task AND run_at <= now() \
         AND queue = ANY(ARRAY(SELECT q FROM unnest($1::text[]) AS q \
             WHERE NOT EXISTS (SELECT 1 FROM jobq.paused_queues p WHERE p.queue = q))) \
         AND NOT EXISTS (SELECT 1 FROM jobq.blocks b \
             WHERE b.task = w.task AND b.key = '' AND b.until > now()) \
         AND (key IS NULL OR key <> ALL(ARRAY(SELECT b.key FROM jobq.blocks b \
             WHERE b.task = w.task AND b.until > now())))"
    };
}
pub(crate) use claimable;

/// The claim statement; `$1` queues, `$2` tasks, `$3` free slots per task,
/// `$4` the worker, `$5` the claim key, `$6`, `$7`, `$8` each task's
/// floor (priority, `run_at`, id; NULL for none). Public so that tests can
/// `EXPLAIN` the real thing.
///
/// The walk of a task starts at its floor, in two halves that are each a
/// plain range of `jobs_claim_idx` (the index runs priority DESC, so a
/// single row comparison across priorities is no range): the floor's
/// priority from the floor on, then the lower priorities from their
/// start. The second half runs only when the first does not fill the
/// slots (an Append runs its inputs in order and the LIMIT stops it).
/// Without a floor the first half is empty and the second is the whole
/// task. A floor avoids visiting the dead entries of jobs claimed since a
/// snapshot that is still held was taken: neither vacuum nor the index's
/// own pruning can remove those while it is held, and a walk from the
/// head visited every one of them on every claim.
///
/// The task and queue names come back only when the request named more
/// than one: the planner folds the CASEs to NULL otherwise, so a worker of
/// one task and one queue, the busiest kind, gets no text per job to
/// format, send and decode.
///
/// Liveness (the `EXISTS` on `jobq.workers`): only a worker whose row
/// exists and whose heartbeat is within its own lease claims anything. A
/// worker presumed dead (its row removed by a rescue) gets nothing until
/// its heartbeat has registered it again. The check is uncorrelated, so it
/// is planned as a one-time filter: one primary-key lookup per claim, and
/// nothing else runs when it fails.
///
/// Claim key (`$5`): stored with the claim's row, unique per worker, so
/// that [`release_claim`] can find the claim if its reply is lost.
///
/// Paused queues (`jobq.paused_queues`) are taken out of `$1` once per
/// statement (an uncorrelated sub-select, planned as a one-time step), so
/// a pause is honoured by every claim that starts after it commits.
///
/// Blocks (`jobq.blocks`, written when an attempt returns
/// `TaskError::rate_limited`): a task blocked as a whole is skipped, and
/// jobs of a blocked key are passed over. Both sub-selects depend on the
/// task only, so they run once per task and claim, as one-time steps: one
/// probe of a table that is empty unless a downstream asked for a pause.
/// Jobs without a key pay a NULL test. The walk meets few such jobs: the
/// outcome that writes a block moves the key's (or task's) pending
/// backlog out of this index until the block ends (see
/// [`crate::write_outcomes`]), so only jobs enqueued during the block are
/// passed over.
///
/// The key and headers come back as NULL for jobs without them, which
/// costs a reply next to nothing.
#[doc(hidden)]
pub const CLAIM_SQL: &str = concat!(
    "WITH picked AS ( \
         SELECT j.id \
         FROM unnest($2::text[], $3::int[], $6::int[], $7::timestamptz[], $8::int8[]) \
             AS w(task, slots, floor_priority, floor_run_at, floor_id) \
         CROSS JOIN LATERAL ( \
             SELECT id FROM ( \
                 SELECT id FROM ( \
                     SELECT id FROM jobq.jobs \
                     WHERE priority = w.floor_priority \
                       AND (run_at, id) >= (w.floor_run_at, w.floor_id) AND ",
    claimable!(),
    " \
                     ORDER BY run_at, id \
                     LIMIT w.slots \
                     FOR UPDATE SKIP LOCKED \
                 ) same \
                 UNION ALL \
                 SELECT id FROM ( \
                     SELECT id FROM jobq.jobs \
                     WHERE priority < coalesce(w.floor_priority, 32768) AND ",
    claimable!(),
    " \
                     ORDER BY priority DESC, run_at, id \
                     LIMIT w.slots \
                     FOR UPDATE SKIP LOCKED \
                 ) lower \
             ) walk \
             LIMIT w.slots \
         ) j \
         WHERE EXISTS ( \
             SELECT 1 FROM jobq.workers me WHERE me.id = $4 \
               AND me.heartbeat_at >= now() - me.lease_ms * interval '1 millisecond') \
     ), claim AS ( \
         INSERT INTO jobq.claims (worker_id, claim_key, jobs) \
         SELECT $4, $5, range_agg(int8range(id, id, '[]')) FROM picked HAVING count(*) > 0 \
         RETURNING id \
     ) \
     UPDATE jobq.jobs_active SET state = 'running', attempt = attempt + 1, started_at = now(), \
         worker_id = $4 \
     WHERE id = ANY(ARRAY(SELECT id FROM picked)) \
     RETURNING id, \
         CASE WHEN cardinality($2::text[]) > 1 THEN task END AS task, \
         CASE WHEN cardinality($1::text[]) > 1 THEN queue END AS queue, \
         payload::text AS payload, attempt, cancel_requested, \
         (SELECT id FROM claim) AS claim, handbacks, key, headers::text AS headers, \
         priority, run_at"
);

/// Claims due jobs: per task, the highest priority first, then the earliest
/// `run_at`, then the lowest id, skipping rows other workers hold locked.
/// Each claimed job becomes `running` under `worker_id` with its attempt
/// incremented, and the claim is recorded in `jobq.claims` (one row for
/// all the jobs of the statement), through which heartbeats and rescue
/// find the worker's jobs.
///
/// A job claimed by another worker and finished between this statement's
/// snapshot and its lock has moved to the finished partition, and
/// PostgreSQL fails the statement rather than skip the row; the claim then
/// runs again (nothing of it committed).
pub async fn claim(
    conn: &mut AsyncPgConnection,
    request: &ClaimRequest<'_>,
) -> diesel::QueryResult<Vec<ClaimedJob>> {
    crate::moved_row::rerun_if_moved!(conn, claim_once(conn, request).await)
}

async fn claim_once(
    conn: &mut AsyncPgConnection,
    request: &ClaimRequest<'_>,
) -> diesel::QueryResult<Vec<ClaimedJob>> {
    if request.tasks.is_empty() {
        return Ok(Vec::new());
    }
    static DUE: OnceLock<String> = OnceLock::new();
    let sql = if request.due {
        with_due(CLAIM_SQL, &DUE)
    } else {
        CLAIM_SQL
    };
    let floor = |i: usize| request.floors.get(i).copied().flatten();
    let tasks = 0..request.tasks.len();
    let floor_priorities: Vec<Option<i32>> = tasks
        .clone()
        .map(|i| floor(i).map(|f| i32::from(f.priority)))
        .collect();
    let floor_run_ats: Vec<Option<DateTime<Utc>>> =
        tasks.clone().map(|i| floor(i).map(|f| f.run_at)).collect();
    let floor_ids: Vec<Option<i64>> = tasks.map(|i| floor(i).map(|f| f.id)).collect();
    let query = diesel::sql_query(sql)
        .bind::<Array<Text>, _>(request.queues)
        .bind::<Array<Text>, _>(request.tasks)
        .bind::<Array<Integer>, _>(request.slots)
        .bind::<BigInt, _>(request.worker_id)
        .bind::<BigInt, _>(request.claim_key)
        .bind::<Array<Nullable<Integer>>, _>(floor_priorities)
        .bind::<Array<Nullable<Timestamptz>>, _>(floor_run_ats)
        .bind::<Array<Nullable<BigInt>>, _>(floor_ids);
    // Kept prepared: an idle worker runs it the moment a notification
    // arrives, and planning it was a quarter of the pickup latency.
    match request.lanes {
        None => prepared(query).load(conn).await,
        Some(lanes) => {
            let claimed = match claim_lanes::enter(conn, lanes, request.worker_id).await {
                Ok(()) => prepared(query).load(conn).await,
                Err(e) => return Err(e),
            };
            claim_lanes::leave(conn, claimed).await
        }
    }
}

/// Makes sure that no claim of `worker_id` under `claim_key` can commit
/// any more: a claim still in flight is waited for, one that never reached
/// the database will fail. An empty row under the key (a tombstone, which
/// lasts as long as the worker) does it; when the claim committed, its
/// own row is there and nothing is inserted.
const FENCE_CLAIM_SQL: &str = "INSERT INTO jobq.claims (worker_id, claim_key, jobs) \
    VALUES ($1, $2, '{}') ON CONFLICT (worker_id, claim_key) DO NOTHING";

/// Hands back the jobs of the claim `$2` of worker `$1`: those still
/// running under that worker in the attempt that claim started. The
/// attempt fence here is the claim's own time (`claimed_at` and the jobs'
/// `started_at` are the same `now()` of the claim's transaction) and that
/// no other claim of the worker holds the job: a job rescued since and
/// claimed again, by this worker or another, is left alone. The jobs go
/// back to pending, keeping their place in the queue, with a hand-back
/// counted instead of an attempt; the claim's row is emptied (it stays as
/// the key's tombstone).
const RELEASE_CLAIM_SQL: &str = "WITH c AS ( \
        SELECT id, jobs, claimed_at FROM jobq.claims WHERE worker_id = $1 AND claim_key = $2 \
    ), claimed AS ( \
        SELECT g.id FROM c \
        CROSS JOIN LATERAL unnest(c.jobs) AS r(ids) \
        CROSS JOIN LATERAL generate_series(lower(r.ids), upper(r.ids) - 1) AS g(id) \
    ), released AS ( \
        UPDATE jobq.jobs j SET \
            state = (CASE WHEN j.cancel_requested THEN 'cancelled' ELSE 'pending' END)::jobq.job_state, \
            finished_at = CASE WHEN j.cancel_requested THEN now() END, \
            handbacks = j.handbacks + 1, \
            worker_id = NULL, \
            errors = j.errors || jsonb_build_array(jsonb_build_object( \
                'attempt', j.attempt - j.handbacks, 'at', now(), 'message', \
                'claimed by worker ' || $1 || ', which never received it ' \
                || '(the claim''s reply was lost); handed back untried')) \
        WHERE j.id = ANY(ARRAY(SELECT id FROM claimed)) \
          AND j.state = 'running' AND j.worker_id = $1 \
          AND j.started_at = (SELECT claimed_at FROM c) \
          AND NOT EXISTS ( \
              SELECT 1 FROM jobq.claims o \
              WHERE o.worker_id = $1 AND o.id <> (SELECT id FROM c) AND o.jobs @> j.id) \
        RETURNING j.id, j.queue, j.state \
    ), emptied AS ( \
        UPDATE jobq.claims SET jobs = '{}' WHERE id = (SELECT id FROM c) \
    ), woken AS ( \
        SELECT count(pg_notify('jobq_jobs', '0 ' || queue)) AS n \
        FROM (SELECT DISTINCT queue FROM released WHERE state = 'pending') q \
    ) \
    SELECT r.id FROM released r LEFT JOIN (SELECT n FROM woken) w ON true";

#[derive(QueryableByName)]
struct ReleasedId {
    #[diesel(sql_type = BigInt)]
    id: i64,
}

/// Hands back the jobs of a claim whose reply the worker never received
/// (the call failed after the claim may have committed: a connection cut
/// mid-reply). Returns the ids handed back: none when the claim never
/// committed.
///
/// Exact, not a guess: the claim is found by its key, a claim still in
/// flight is waited for and one that has not reached the database yet is
/// made to fail, and only jobs still running the attempt that claim
/// started are touched. Each goes back to pending where it was in the
/// queue, without using up an attempt (a hand-back is counted instead),
/// and the reason goes to its error history. Safe to call again after an
/// error: two statements in one short transaction.
pub async fn release_claim(
    conn: &mut AsyncPgConnection,
    worker_id: i64,
    claim_key: i64,
) -> diesel::QueryResult<Vec<i64>> {
    let released: Vec<ReleasedId> = conn
        .transaction::<_, diesel::result::Error, _>(async |conn| {
            diesel::sql_query(FENCE_CLAIM_SQL)
                .bind::<BigInt, _>(worker_id)
                .bind::<BigInt, _>(claim_key)
                .execute(conn)
                .await?;
            // A new snapshot (READ COMMITTED): a claim the fence waited for
            // is visible now.
            diesel::sql_query(RELEASE_CLAIM_SQL)
                .bind::<BigInt, _>(worker_id)
                .bind::<BigInt, _>(claim_key)
                .load(conn)
                .await
        })
        .await?;
    Ok(released.into_iter().map(|r| r.id).collect())
}
