//! What operators see of rate limits and downstream blocks, and lifting a
//! block early.
//!
//! The database knows the blocks (`jobq.blocks`, written by
//! `TaskError::rate_limited`) and the rate buckets' state
//! (`jobq.rate_tokens`), not the limits themselves: `rate`, `key_rate`
//! and `burst` live in the worker binaries' task attributes (and
//! overrides), so a bucket shows when it is full again, not its rate.

use chrono::{DateTime, Utc};
use diesel::sql_types::{BigInt, Text, Timestamptz};
use diesel::QueryableByName;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

/// A live block: no job of `task` (of `key`, when it is not empty) starts
/// before `until`.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct BlockRow {
    /// The task.
    #[diesel(sql_type = Text)]
    pub task: String,
    /// The partition key, '' for a block of the whole task.
    #[diesel(sql_type = Text)]
    pub key: String,
    /// When the block ends.
    #[diesel(sql_type = Timestamptz)]
    pub until: DateTime<Utc>,
    /// Milliseconds from now (database clock) until it ends.
    #[diesel(sql_type = BigInt)]
    pub left_ms: i64,
}

/// A rate bucket that is not full: its task (or key) started jobs lately.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct BucketRow {
    /// The task.
    #[diesel(sql_type = Text)]
    pub task: String,
    /// The partition key, '' for the task's own bucket.
    #[diesel(sql_type = Text)]
    pub key: String,
    /// When the bucket is full again (GCRA's `tat`): with no start before
    /// then, the whole burst is available then. The next single token is
    /// due earlier, by the burst tolerance, which only the worker knows.
    #[diesel(sql_type = Timestamptz)]
    pub full_at: DateTime<Utc>,
    /// Milliseconds from now (database clock) until `full_at`.
    #[diesel(sql_type = BigInt)]
    pub full_in_ms: i64,
}

/// The live blocks, by task and key, at most `limit` of them (a
/// downstream can block many keys at once; a listing stays bounded).
pub async fn blocks(
    conn: &mut AsyncPgConnection,
    limit: i64,
) -> diesel::QueryResult<Vec<BlockRow>> {
    diesel::sql_query(
        "SELECT task, key, until, \
             ceil(extract(epoch FROM until - now()) * 1000)::bigint AS left_ms \
         FROM jobq.blocks WHERE until > now() ORDER BY task, key LIMIT $1",
    )
    .bind::<BigInt, _>(limit)
    .load(conn)
    .await
}

/// The rate buckets that are not full, by task and key, at most `limit`.
pub async fn rate_buckets(
    conn: &mut AsyncPgConnection,
    limit: i64,
) -> diesel::QueryResult<Vec<BucketRow>> {
    diesel::sql_query(
        "SELECT task, key, tat AS full_at, \
             ceil(extract(epoch FROM tat - now()) * 1000)::bigint AS full_in_ms \
         FROM jobq.rate_tokens WHERE tat > now() ORDER BY task, key LIMIT $1",
    )
    .bind::<BigInt, _>(limit)
    .load(conn)
    .await
}

/// Lifts the block of `$1` (key `$2`, '' for the task's) and brings back
/// the jobs it moved out of the claim path: those scheduled at exactly
/// the block's end (see the outcome statement's `parked`), found queue by
/// queue through `jobs_scheduled_idx` (the queues by skipping through the
/// index, one descent each). They become pending due now, all in this
/// statement, so they come back in claim order; the workers of their
/// queues are woken at commit. Other scheduled jobs of the key (retries,
/// snoozes) keep their own due times. One row: whether a live block was
/// lifted, and how many jobs came back.
const UNBLOCK_SQL: &str = "WITH RECURSIVE lifted AS ( \
        DELETE FROM jobq.blocks WHERE task = $1 AND key = $2 AND until > now() \
        RETURNING task, key, until \
    ), queues AS ( \
        SELECT (SELECT queue FROM jobq.jobs WHERE state = 'scheduled' \
                ORDER BY queue LIMIT 1) AS queue \
        UNION ALL \
        SELECT (SELECT s.queue FROM jobq.jobs s WHERE s.state = 'scheduled' \
                AND s.queue > queues.queue ORDER BY s.queue LIMIT 1) \
        FROM queues WHERE queues.queue IS NOT NULL \
    ), back AS ( \
        UPDATE jobq.jobs j SET state = 'pending', run_at = now() \
        WHERE j.id = ANY(ARRAY( \
                SELECT s.id FROM lifted l CROSS JOIN queues q \
                CROSS JOIN LATERAL ( \
                    SELECT p.id FROM jobq.jobs p \
                    WHERE p.state = 'scheduled' AND p.queue = q.queue AND p.run_at = l.until \
                      AND p.task = l.task AND (l.key = '' OR p.key = l.key)) s \
                WHERE q.queue IS NOT NULL)) \
          AND j.state = 'scheduled' \
        RETURNING j.queue \
    ), woken AS ( \
        SELECT count(pg_notify('jobq_jobs', '0 ' || queue)) AS n \
        FROM (SELECT DISTINCT queue FROM back) b \
    ) \
    SELECT (SELECT count(*) FROM lifted) AS lifted, (SELECT count(*) FROM back) AS back \
    FROM woken";

#[derive(QueryableByName)]
struct Lifted {
    #[diesel(sql_type = BigInt)]
    lifted: i64,
    #[diesel(sql_type = BigInt)]
    back: i64,
}

/// Lifts the live block of `task` (of `key` when it is not empty, else of
/// the whole task) before its end, and makes the jobs it held back
/// pending at once. Returns `None` when there was no live block, else the
/// number of jobs that came back.
pub async fn unblock(
    conn: &mut AsyncPgConnection,
    task: &str,
    key: &str,
) -> diesel::QueryResult<Option<i64>> {
    let row: Lifted = diesel::sql_query(UNBLOCK_SQL)
        .bind::<Text, _>(task)
        .bind::<Text, _>(key)
        .get_result(conn)
        .await?;
    Ok((row.lifted > 0).then_some(row.back))
}
