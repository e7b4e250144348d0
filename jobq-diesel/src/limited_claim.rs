//! Claiming jobs of a task with a fleet-wide limit (`global_concurrency`,
//! `key_concurrency`): exact under any number of concurrent claimers.
//!
//! The limits are checked against the rows themselves: the attempts
//! running are the task's rows in state `running` that a limited claim
//! took (`limited`, counted through `jobs_limited_running_idx`). Nothing
//! is counted up or down elsewhere, so an outcome, a hand-back or the
//! rescue of a dead worker's job frees its slot by moving the row out of
//! `running`, in the same statement; no slot can leak.
//!
//! Exactness needs the claims of one task to be serialized: two claimers
//! that each see one free slot would otherwise both take it. Each limited
//! claim therefore first takes a transaction-scoped advisory lock keyed by
//! the task, in a statement of its own, and only then runs the claim: in
//! READ COMMITTED the claim's snapshot is taken after the lock was
//! granted, so it sees every row the previous holder claimed (PostgreSQL
//! makes a commit visible before it releases the transaction's locks).
//! Claims of unlimited tasks take no lock and go through
//! [`crate::claim`], unchanged.

use diesel::sql_types::{BigInt, Integer, Nullable, Text};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

use crate::claim::ClaimedJob;
use crate::prepared::prepared;

/// A claim of one task with fleet-wide limits.
#[derive(Debug, Clone, Copy)]
pub struct LimitedClaimRequest<'a> {
    /// The claiming worker's id.
    pub worker_id: i64,
    /// Queues the worker serves.
    pub queues: &'a [String],
    /// The task.
    pub task: &'a str,
    /// This worker's free slots of the task.
    pub slots: i32,
    /// Most attempts of the task running at once, fleet-wide.
    pub global_concurrency: Option<i32>,
    /// Most attempts running at once per partition key, fleet-wide.
    pub key_concurrency: Option<i32>,
    /// The claim's key among the worker's claims (see
    /// [`crate::ClaimRequest::claim_key`]).
    pub claim_key: i64,
}

/// First of the two keys of the advisory lock that serializes the limited
/// claims of one task (the second is the task name's hash). Two-key
/// advisory locks never collide with the one-key locks jobq's maintenance
/// and migrations take; a hash collision between two task names only
/// makes their claims wait for each other.
const LIMIT_LOCK_CLASS: i32 = 0x6a71_6c6d; // "jqlm"

const LOCK_SQL: &str = "SELECT pg_advisory_xact_lock($1, hashtext($2))";

/// The claim, run after the lock. `$1` queues, `$2` task, `$3` free slots,
/// `$4` global limit (NULL: none), `$5` key limit (NULL: none), `$6`
/// worker, `$7` claim key.
///
/// Global limit: at most `$4` minus the task's limited running rows.
///
/// Key limit: a job with a key is taken only when the running attempts of
/// its key plus the pending jobs of its key ahead of it (higher priority,
/// or the same priority and enqueued earlier) are fewer than `$5`. So with
/// `$5 = 1` only the first waiting job of a key, when none of the key
/// runs, and several jobs of one key in one batch never exceed the limit
/// (each one sees the others ahead of it). The check reads the snapshot,
/// not the locks, so a job ahead that another transaction holds locked
/// (and that SKIP LOCKED passes over) still holds back the ones behind it.
/// Jobs without a key are limited by the global limit only.
#[doc(hidden)]
pub const LIMITED_CLAIM_SQL: &str = "WITH running AS ( \
             SELECT count(*)::int AS n FROM jobq.jobs \
             WHERE task = $2 AND state = 'running' AND limited \
         ), picked AS ( \
             SELECT j.id FROM jobq.jobs j \
             WHERE j.state = 'pending' AND j.task = $2 AND j.run_at <= now() \
               AND j.queue = ANY(ARRAY(SELECT q FROM unnest($1::text[]) AS q \
                   WHERE NOT EXISTS (SELECT 1 FROM jobq.paused_queues p WHERE p.queue = q))) \
               AND ($5::int IS NULL OR j.key IS NULL OR \
                    (SELECT count(*) FROM jobq.jobs r \
                     WHERE r.task = $2 AND r.key = j.key AND r.state = 'running' AND r.limited) \
                    + (SELECT count(*) FROM ( \
                         SELECT 1 FROM jobq.jobs a \
                         WHERE a.task = $2 AND a.key = j.key AND a.state = 'pending' \
                           AND (a.priority > j.priority OR (a.priority = j.priority AND a.id < j.id)) \
                         LIMIT $5) ahead) < $5) \
               AND EXISTS ( \
                   SELECT 1 FROM jobq.workers me WHERE me.id = $6 \
                     AND me.heartbeat_at >= now() - me.lease_ms * interval '1 millisecond') \
             ORDER BY j.priority DESC, j.run_at, j.id \
             LIMIT greatest(0, least($3, coalesce($4 - (SELECT n FROM running), $3))) \
             FOR UPDATE OF j SKIP LOCKED \
         ), claim AS ( \
             INSERT INTO jobq.claims (worker_id, claim_key, jobs) \
             SELECT $6, $7, range_agg(int8range(id, id, '[]')) FROM picked HAVING count(*) > 0 \
             RETURNING id \
         ) \
         UPDATE jobq.jobs SET state = 'running', attempt = attempt + 1, started_at = now(), \
             worker_id = $6, limited = true \
         WHERE id = ANY(ARRAY(SELECT id FROM picked)) \
         RETURNING id, NULL::text AS task, \
             CASE WHEN cardinality($1::text[]) > 1 THEN queue END AS queue, \
             payload::text AS payload, attempt, cancel_requested, \
             (SELECT id FROM claim) AS claim, handbacks, key, headers::text AS headers";

/// Claims jobs of one task within its fleet-wide limits: the lock, then
/// the claim, in one short transaction (three round trips besides the
/// claim's own: BEGIN, the lock, COMMIT). The returned jobs name no task
/// (it is the request's) and name their queue when the request named
/// several, as [`crate::claim`]'s do.
///
/// With neither limit set this is still correct, only slower than
/// [`crate::claim`].
pub async fn claim_limited(
    conn: &mut AsyncPgConnection,
    request: &LimitedClaimRequest<'_>,
) -> diesel::QueryResult<Vec<ClaimedJob>> {
    if request.slots <= 0 {
        return Ok(Vec::new());
    }
    conn.transaction::<_, diesel::result::Error, _>(async |conn| {
        prepared(
            diesel::sql_query(LOCK_SQL)
                .bind::<Integer, _>(LIMIT_LOCK_CLASS)
                .bind::<Text, _>(request.task),
        )
        .execute(conn)
        .await?;
        // READ COMMITTED: a new snapshot, taken with the lock held.
        let query = diesel::sql_query(LIMITED_CLAIM_SQL)
            .bind::<diesel::sql_types::Array<Text>, _>(request.queues)
            .bind::<Text, _>(request.task)
            .bind::<Integer, _>(request.slots)
            .bind::<Nullable<Integer>, _>(request.global_concurrency)
            .bind::<Nullable<Integer>, _>(request.key_concurrency)
            .bind::<BigInt, _>(request.worker_id)
            .bind::<BigInt, _>(request.claim_key);
        prepared(query).load(conn).await
    })
    .await
}
