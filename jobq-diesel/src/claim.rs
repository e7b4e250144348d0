//! Claiming due jobs: one statement per batch, for every task with free
//! slots at once, committed before any handler runs.

use diesel::sql_types::{Array, BigInt, Bool, Integer, Text};
use diesel::QueryableByName;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

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
/// (Every column returned costs decoding per job on the hot path.)
#[derive(Debug, Clone, QueryableByName)]
pub struct ClaimedJob {
    /// Row id.
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    /// Task name.
    #[diesel(sql_type = Text)]
    pub task: String,
    /// Queue name.
    #[diesel(sql_type = Text)]
    pub queue: String,
    /// Payload as JSON text.
    #[diesel(sql_type = Text)]
    pub payload: String,
    /// This attempt's number (already incremented).
    #[diesel(sql_type = Integer)]
    pub attempt: i32,
    /// Whether someone asked to cancel the job before it was claimed.
    #[diesel(sql_type = Bool)]
    pub cancel_requested: bool,
}

/// The claim statement; `$1` queues, `$2` tasks, `$3` free slots per task,
/// `$4` the worker. Public so that tests can `EXPLAIN` the real thing.
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
         ) \
         UPDATE jobq.jobs SET state = 'running', attempt = attempt + 1, started_at = now(), \
             worker_id = $4 \
         WHERE id = ANY(ARRAY(SELECT id FROM picked)) \
         RETURNING id, task, queue, payload::text AS payload, attempt, cancel_requested";

/// Claims due jobs: per task, the highest priority first, then the earliest
/// `run_at`, then the lowest id, skipping rows other workers hold locked.
/// Each claimed job becomes `running` under `worker_id` with its attempt
/// incremented.
pub async fn claim(
    conn: &mut AsyncPgConnection,
    request: &ClaimRequest<'_>,
) -> diesel::QueryResult<Vec<ClaimedJob>> {
    if request.tasks.is_empty() {
        return Ok(Vec::new());
    }
    diesel::sql_query(CLAIM_SQL)
        .bind::<Array<Text>, _>(request.queues)
        .bind::<Array<Text>, _>(request.tasks)
        .bind::<Array<Integer>, _>(request.slots)
        .bind::<BigInt, _>(request.worker_id)
        .load(conn)
        .await
}
