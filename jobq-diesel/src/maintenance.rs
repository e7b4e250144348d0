//! Maintenance: rescuing jobs of dead workers and pruning finished jobs.
//!
//! Every worker runs these on a timer; a transaction-scoped advisory lock
//! taken inside each statement lets one worker at a time do the work while
//! the others' calls return at once.

use std::time::Duration;

use diesel::sql_types::{BigInt, Integer, Text};
use diesel::QueryableByName;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};

use crate::no_jit::NO_JIT;

const RESCUE_LOCK: i64 = 0x6a6f_6271_7265_7363; // "jobqresc"
const PRUNE_LOCK: i64 = 0x6a6f_6271_7072_756e; // "jobqprun"

/// A running job taken back from a worker that stopped heartbeating.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct RescuedJob {
    /// Job id.
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    /// The attempt that was lost, as users count them (hand-backs not
    /// included).
    #[diesel(sql_type = Integer)]
    pub attempt: i32,
    /// The job's task.
    #[diesel(sql_type = Text)]
    pub task: String,
    /// The job's queue.
    #[diesel(sql_type = Text)]
    pub queue: String,
    /// Its state now: pending, or failed when it had no attempts left.
    #[diesel(sql_type = Text)]
    pub state: String,
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The rescue statement; `$1` the advisory lock's key, `$2` the lease in
/// milliseconds for worker rows that have none (written by an older jobq),
/// `$3` the rescuing worker, which never rescues itself, `$4` how long (in
/// milliseconds) the rescuer has seen the database without a break. Public
/// so that tests can `EXPLAIN` the real thing.
///
/// Each worker is judged by its own lease (`lease_ms` in its row), never
/// by the rescuer's: workers with different settings never rescue each
/// other's live jobs. A rescue uses up the lost attempt (it may be the job
/// that killed its worker), so a job on its last attempt, counted without
/// hand-backs, fails.
#[doc(hidden)]
pub const RESCUE_SQL: &str = "WITH lock AS (SELECT pg_try_advisory_xact_lock($1) AS held), \
         dead AS ( \
             DELETE FROM jobq.workers w \
             WHERE (SELECT held FROM lock) AND w.id <> $3 \
               AND w.heartbeat_at < now() - coalesce(w.lease_ms, $2) * interval '1 millisecond' \
               AND $4 >= coalesce(w.lease_ms, $2) \
             RETURNING w.id, coalesce(w.lease_ms, $2) AS lease_ms \
         ), orphans AS ( \
             SELECT c.id, c.worker_id, c.jobs FROM jobq.claims c \
             WHERE (SELECT held FROM lock) AND c.worker_id <> $3 \
               AND (c.worker_id IN (SELECT id FROM dead) \
                    OR NOT EXISTS (SELECT 1 FROM jobq.workers w WHERE w.id = c.worker_id)) \
         ), claimed AS ( \
             SELECT o.id AS claim, o.worker_id, g.id \
             FROM orphans o \
             CROSS JOIN LATERAL unnest(o.jobs) AS r(ids) \
             CROSS JOIN LATERAL generate_series(lower(r.ids), upper(r.ids) - 1) AS g(id) \
         ), still AS ( \
             SELECT j.id, j.worker_id FROM jobq.jobs j \
             WHERE j.id = ANY(ARRAY(SELECT id FROM claimed)) AND j.state = 'running' \
         ), lost AS ( \
             SELECT j.id, \
                 CASE WHEN j.cancel_requested THEN 'cancelled' \
                      WHEN j.attempt - j.handbacks >= j.max_attempts THEN 'failed' \
                      ELSE 'pending' END AS new_state, \
                 (SELECT d.lease_ms FROM dead d WHERE d.id = j.worker_id) AS lease_ms \
             FROM jobq.jobs j \
             WHERE j.id = ANY(ARRAY(SELECT id FROM claimed)) AND j.state = 'running' \
               AND j.worker_id IN (SELECT worker_id FROM orphans) \
             FOR UPDATE OF j SKIP LOCKED \
         ), cleared AS ( \
             DELETE FROM jobq.claims c \
             WHERE c.id IN (SELECT id FROM orphans) \
               AND c.id NOT IN ( \
                   SELECT cl.claim FROM claimed cl \
                   JOIN still s ON s.id = cl.id AND s.worker_id = cl.worker_id) \
         ), rescued AS ( \
             UPDATE jobq.jobs j SET \
                 state = lost.new_state::jobq.job_state, \
                 run_at = now(), \
                 finished_at = CASE WHEN lost.new_state = 'pending' THEN NULL ELSE now() END, \
                 errors = j.errors || jsonb_build_array(jsonb_build_object( \
                     'attempt', j.attempt - j.handbacks, 'at', now(), 'message', \
                     'rescued: worker ' || coalesce(j.worker_id::text, 'unknown') \
                     || CASE WHEN lost.lease_ms IS NULL \
                         THEN ' stopped heartbeating (its row is gone)' \
                         ELSE ' stopped heartbeating for longer than its lease of ' \
                             || lost.lease_ms || ' ms' END \
                     || ' while running this attempt')), \
                 worker_id = NULL \
             FROM lost \
             WHERE j.id = lost.id AND j.state = 'running' \
             RETURNING j.id, j.attempt - j.handbacks AS attempt, j.task, j.queue, \
                 j.state::text AS state \
         ), woken AS ( \
             SELECT count(pg_notify('jobq_jobs', '0 ' || queue)) AS n \
             FROM (SELECT DISTINCT queue FROM rescued WHERE state = 'pending') q \
         ) \
         SELECT r.id, r.attempt, r.task, r.queue, r.state FROM rescued r \
         LEFT JOIN (SELECT n FROM woken) w ON true";

/// Removes workers whose heartbeat is older than their own lease (`lease`
/// stands in for rows without one, written by an older jobq) and takes
/// back the running jobs of workers that are gone: pending again (due
/// now), or failed when out of attempts, cancelled when cancellation was
/// asked for; each with the reason in its error history. The lost attempt
/// counts as used. Returns nothing when another worker is doing the same
/// right now.
///
/// A database that was away is not a worker that died: the `rescuer` is
/// left alone whatever its heartbeat says (it runs this, so it lives), and
/// another worker is judged dead only when the rescuer has seen the
/// database for at least that worker's lease without a break
/// (`seen_for`), i.e. when the other had the time to heartbeat. Workers
/// whose row is already gone are rescued at once.
///
/// A gone worker's jobs are found through its claims, by primary key (a
/// join on the id ranges would be planned on statistics that see no
/// running job, as a scan of the whole table). A claim row goes only once
/// a pass finds none of its jobs running under its worker, i.e. at the
/// pass after its jobs were taken back: a job skipped this time because a
/// late outcome holds its row lock is still found next time.
pub async fn rescue(
    conn: &mut AsyncPgConnection,
    rescuer: i64,
    lease: Duration,
    seen_for: Duration,
) -> diesel::QueryResult<Vec<RescuedJob>> {
    conn.transaction::<_, diesel::result::Error, _>(async |conn| {
        conn.batch_execute(NO_JIT).await?;
        diesel::sql_query(RESCUE_SQL)
            .bind::<BigInt, _>(RESCUE_LOCK)
            .bind::<BigInt, _>(millis(lease))
            .bind::<BigInt, _>(rescuer)
            .bind::<BigInt, _>(millis(seen_for))
            .load(conn)
            .await
    })
    .await
}

/// How long finished jobs stay visible before pruning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// For completed jobs.
    pub completed: Duration,
    /// For failed and cancelled jobs, which people come to inspect.
    pub failed: Duration,
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// Deletes up to `limit` finished jobs of each kind older than their
/// retention, except jobs still holding a unique key (`unique_for`,
/// `unique_forever`; those whose hold has ended are a third kind, found
/// by the end of their hold), in one short statement; returns how many went. Call again
/// while it returns a full batch.
///
/// The same statement removes blocks that have passed and token buckets
/// that are full again (`tat` in the past): either reads exactly as a
/// missing row, so removing them changes no claim.
pub async fn prune(
    conn: &mut AsyncPgConnection,
    retention: Retention,
    limit: i64,
) -> diesel::QueryResult<i64> {
    let row: Count = diesel::sql_query(
        "WITH lock AS (SELECT pg_try_advisory_xact_lock($1) AS held), \
         gone AS ( \
             DELETE FROM jobq.jobs_finished_kept WHERE id = ANY(ARRAY( \
                 (SELECT id FROM jobq.jobs_finished_kept \
                  WHERE (SELECT held FROM lock) AND state = 'completed' \
                    AND finished_at < now() - $2 * interval '1 millisecond' \
                    AND unique_until IS NULL \
                  LIMIT $4) \
                 UNION ALL \
                 (SELECT id FROM jobq.jobs_finished_kept \
                  WHERE (SELECT held FROM lock) AND state IN ('failed', 'cancelled') \
                    AND finished_at < now() - $3 * interval '1 millisecond' \
                    AND unique_until IS NULL \
                  LIMIT $4) \
                 UNION ALL \
                 (SELECT id FROM jobq.jobs_finished_kept \
                  WHERE (SELECT held FROM lock) \
                    AND unique_until IS NOT NULL AND unique_until <= now() \
                    AND state IN ('completed', 'failed', 'cancelled') \
                    AND finished_at < now() - CASE WHEN state = 'completed' THEN $2 ELSE $3 END \
                        * interval '1 millisecond' \
                  LIMIT $4))) \
             RETURNING 1 \
         ), \
         passed_blocks AS ( \
             DELETE FROM jobq.blocks WHERE (SELECT held FROM lock) AND until < now() \
         ), \
         full_buckets AS ( \
             DELETE FROM jobq.rate_tokens WHERE (SELECT held FROM lock) AND tat < now() \
         ) \
         SELECT count(*) AS n FROM gone",
    )
    .bind::<BigInt, _>(PRUNE_LOCK)
    .bind::<BigInt, _>(millis(retention.completed))
    .bind::<BigInt, _>(millis(retention.failed))
    .bind::<BigInt, _>(limit)
    .get_result(conn)
    .await?;
    Ok(row.n)
}
