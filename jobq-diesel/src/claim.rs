//! Claiming due jobs: one statement per batch, for every task with free
//! slots at once, committed before any handler runs.

use diesel::deserialize::{self, FromSql, QueryableByName};
use diesel::pg::Pg;
use diesel::row::{Field, NamedRow, Row};
use diesel::sql_types::{Array, BigInt, Bool, Integer, Nullable, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

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
    /// This attempt's number (already incremented).
    pub attempt: i32,
    /// Whether someone asked to cancel the job before it was claimed.
    pub cancel_requested: bool,
    /// The claim's row in `jobq.claims`, which holds the job for this
    /// worker until the outcome of the claim's last job is written (pass
    /// it to [`crate::write_outcomes`] then).
    pub claim: i64,
}

impl QueryableByName<Pg> for ClaimedJob {
    fn build<'a>(row: &impl NamedRow<'a, Pg>) -> deserialize::Result<Self> {
        // By position, in the order of CLAIM_SQL's RETURNING: a lookup by
        // name for every column of every row shows up in a busy worker's
        // profile.
        Ok(ClaimedJob {
            id: column::<BigInt, _>(row, 0)?,
            task: column::<Nullable<Text>, _>(row, 1)?,
            queue: column::<Nullable<Text>, _>(row, 2)?,
            payload: column::<Text, _>(row, 3)?,
            attempt: column::<Integer, _>(row, 4)?,
            cancel_requested: column::<Bool, _>(row, 5)?,
            claim: column::<BigInt, _>(row, 6)?,
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

/// The claim statement; `$1` queues, `$2` tasks, `$3` free slots per task,
/// `$4` the worker. Public so that tests can `EXPLAIN` the real thing.
///
/// The task and queue names come back only when the request named more
/// than one: the planner folds the CASEs to NULL otherwise, so a worker of
/// one task and one queue, the busiest kind, gets no text per job to
/// format, send and decode.
#[doc(hidden)]
pub const CLAIM_SQL: &str = "WITH picked AS ( \
             SELECT j.id \
             FROM unnest($2::text[], $3::int[]) AS w(task, slots) \
             CROSS JOIN LATERAL ( \
                 SELECT id FROM jobq.jobs \
                 WHERE state = 'pending' AND task = w.task AND run_at <= now() \
                   AND queue = ANY($1) \
                 ORDER BY priority DESC, run_at, id \
                 LIMIT w.slots \
                 FOR UPDATE SKIP LOCKED \
             ) j \
         ), claim AS ( \
             INSERT INTO jobq.claims (worker_id, jobs) \
             SELECT $4, range_agg(int8range(id, id, '[]')) FROM picked HAVING count(*) > 0 \
             RETURNING id \
         ) \
         UPDATE jobq.jobs SET state = 'running', attempt = attempt + 1, started_at = now(), \
             worker_id = $4 \
         WHERE id = ANY(ARRAY(SELECT id FROM picked)) \
         RETURNING id, \
             CASE WHEN cardinality($2::text[]) > 1 THEN task END AS task, \
             CASE WHEN cardinality($1::text[]) > 1 THEN queue END AS queue, \
             payload::text AS payload, attempt, cancel_requested, \
             (SELECT id FROM claim) AS claim";

/// Claims due jobs: per task, the highest priority first, then the earliest
/// `run_at`, then the lowest id, skipping rows other workers hold locked.
/// Each claimed job becomes `running` under `worker_id` with its attempt
/// incremented, and the claim is recorded in `jobq.claims` (one row for
/// all the jobs of the statement), through which heartbeats and rescue
/// find the worker's jobs.
pub async fn claim(
    conn: &mut AsyncPgConnection,
    request: &ClaimRequest<'_>,
) -> diesel::QueryResult<Vec<ClaimedJob>> {
    if request.tasks.is_empty() {
        return Ok(Vec::new());
    }
    let query = diesel::sql_query(CLAIM_SQL)
        .bind::<Array<Text>, _>(request.queues)
        .bind::<Array<Text>, _>(request.tasks)
        .bind::<Array<Integer>, _>(request.slots)
        .bind::<BigInt, _>(request.worker_id);
    // Kept prepared: an idle worker runs it the moment a notification
    // arrives, and planning it was a quarter of the pickup latency.
    prepared(query).load(conn).await
}
