//! Counting jobs and listing workers for `jobq::stats`, the CLI and the
//! metrics, without reading the whole jobs table.
//!
//! Each count reads only the index (or the few rows) of its state:
//!
//! | what | read through |
//! | --- | --- |
//! | scheduled | `jobs_scheduled_idx` |
//! | pending, oldest due | `jobs_claim_idx` |
//! | running | `jobq.claims`, then the primary key |
//! | failed, cancelled | `jobs_failed_idx` (index-only once vacuumed) |
//! | finished in the last hour | `jobs_finished_idx` from now − 1 h |
//! | completed in all | the planner's statistics: an estimate |
//!
//! Completed jobs are the bulk of the table until pruned; counting them
//! exactly means reading every one, so only the estimate PostgreSQL keeps
//! (`pg_class.reltuples` × the share of `completed` in `pg_stats`) is
//! offered, refreshed by (auto)analyze.

use chrono::{DateTime, Utc};
use diesel::sql_types::{Array, BigInt, Bool, Nullable, Text, Timestamptz};
use diesel::QueryableByName;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};

use crate::no_jit::NO_JIT;

/// Jobs of one queue, task and state.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct StateCount {
    /// Queue name.
    #[diesel(sql_type = Text)]
    pub queue: String,
    /// Task name.
    #[diesel(sql_type = Text)]
    pub task: String,
    /// scheduled, pending, running, failed or cancelled.
    #[diesel(sql_type = Text)]
    pub state: String,
    /// How many jobs.
    #[diesel(sql_type = BigInt)]
    pub jobs: i64,
    /// For pending jobs: how long ago, in milliseconds, the earliest
    /// `run_at` not in the future was (the age of the oldest due job).
    #[diesel(sql_type = Nullable<BigInt>)]
    pub oldest_due_ms: Option<i64>,
}

/// Counts of scheduled, pending, running, failed and cancelled jobs by
/// queue and task, and the oldest due pending job of each. One statement.
pub const STATE_COUNTS_SQL: &str = "\
    SELECT queue, task, 'scheduled' AS state, count(*) AS jobs, \
           NULL::bigint AS oldest_due_ms \
    FROM jobq.jobs WHERE state = 'scheduled' GROUP BY queue, task \
    UNION ALL \
    SELECT queue, task, 'pending', count(*), \
           (extract(epoch FROM now() - min(run_at) FILTER (WHERE run_at <= now())) * 1000)::bigint \
    FROM jobq.jobs WHERE state = 'pending' GROUP BY queue, task \
    UNION ALL \
    SELECT queue, task, 'running', count(*), NULL \
    FROM jobq.jobs \
    WHERE state = 'running' AND id = ANY(ARRAY( \
        SELECT generate_series(lower(r), upper(r) - 1) \
        FROM jobq.claims c, unnest(c.jobs) AS r)) \
    GROUP BY queue, task \
    UNION ALL \
    SELECT queue, task, state::text, count(*), NULL \
    FROM jobq.jobs WHERE state IN ('failed', 'cancelled') GROUP BY queue, task, state \
    ORDER BY 1, 2, 3";

/// Jobs of one queue and task that finished recently.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct RecentCount {
    /// Queue name.
    #[diesel(sql_type = Text)]
    pub queue: String,
    /// Task name.
    #[diesel(sql_type = Text)]
    pub task: String,
    /// Completed in the last minute.
    #[diesel(sql_type = BigInt)]
    pub completed_last_minute: i64,
    /// Failed (for good) in the last minute.
    #[diesel(sql_type = BigInt)]
    pub failed_last_minute: i64,
    /// Completed in the last hour.
    #[diesel(sql_type = BigInt)]
    pub completed_last_hour: i64,
    /// Failed (for good) in the last hour.
    #[diesel(sql_type = BigInt)]
    pub failed_last_hour: i64,
}

/// Completions and failures of the last minute and hour by queue and
/// task, through `jobs_finished_idx` and, for jobs still holding a unique
/// key, `jobs_held_finished_idx`, from an hour ago: its cost follows the
/// last hour's finished jobs.
pub const RECENT_COUNTS_SQL: &str = "\
    WITH recent AS ( \
        SELECT queue, task, state, finished_at FROM jobq.jobs \
        WHERE state IN ('completed', 'failed', 'cancelled') AND unique_until IS NULL \
          AND finished_at >= now() - interval '1 hour' \
        UNION ALL \
        SELECT queue, task, state, finished_at FROM jobq.jobs \
        WHERE state IN ('completed', 'failed', 'cancelled') AND unique_until IS NOT NULL \
          AND finished_at >= now() - interval '1 hour') \
    SELECT queue, task, \
        count(*) FILTER (WHERE state = 'completed' \
                         AND finished_at >= now() - interval '1 minute') AS completed_last_minute, \
        count(*) FILTER (WHERE state = 'failed' \
                         AND finished_at >= now() - interval '1 minute') AS failed_last_minute, \
        count(*) FILTER (WHERE state = 'completed') AS completed_last_hour, \
        count(*) FILTER (WHERE state = 'failed') AS failed_last_hour \
    FROM recent \
    GROUP BY queue, task \
    ORDER BY queue, task";

#[derive(QueryableByName)]
struct Estimate {
    #[diesel(sql_type = Nullable<BigInt>)]
    n: Option<i64>,
}

/// The planner's estimate of completed jobs: over the partitions of the
/// finished jobs, each one's estimated rows times the share of `completed`
/// in its `state` statistics. `None` until one of them has been analyzed.
pub const COMPLETED_ESTIMATE_SQL: &str = "\
    SELECT CASE WHEN bool_and(c.reltuples < 0) THEN NULL \
                ELSE sum(CASE WHEN c.reltuples < 0 THEN 0 ELSE coalesce(( \
                    SELECT round(c.reltuples * f.freq)::bigint \
                    FROM pg_stats s, \
                         unnest(s.most_common_vals::text::text[], s.most_common_freqs) \
                             AS f(val, freq) \
                    WHERE s.schemaname = 'jobq' AND s.tablename = c.relname \
                      AND s.attname = 'state' AND f.val = 'completed'), 0) END)::bigint \
           END AS n \
    FROM pg_partition_tree('jobq.jobs_finished') t \
    JOIN pg_class c ON c.oid = t.relid \
    WHERE t.isleaf";

/// A worker process's row.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct WorkerRow {
    /// Its id.
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    /// Host name.
    #[diesel(sql_type = Text)]
    pub hostname: String,
    /// Process id.
    #[diesel(sql_type = diesel::sql_types::Integer)]
    pub pid: i32,
    /// Queues served.
    #[diesel(sql_type = Array<Text>)]
    pub queues: Vec<String>,
    /// When it registered.
    #[diesel(sql_type = Timestamptz)]
    pub started_at: DateTime<Utc>,
    /// Its last heartbeat.
    #[diesel(sql_type = Timestamptz)]
    pub heartbeat_at: DateTime<Utc>,
    /// Its lease in milliseconds (`None` for workers of an older jobq).
    #[diesel(sql_type = Nullable<BigInt>)]
    pub lease_ms: Option<i64>,
    /// Whether its last heartbeat is within its lease (or, without one,
    /// within `default_lease_ms`).
    #[diesel(sql_type = Bool)]
    pub alive: bool,
    /// Jobs it is running now.
    #[diesel(sql_type = BigInt)]
    pub running: i64,
}

/// Every worker row, oldest first, with the jobs each runs (found through
/// its claims and the primary key).
pub const WORKERS_SQL: &str = "\
    SELECT w.id, w.hostname, w.pid, w.queues, w.started_at, w.heartbeat_at, w.lease_ms, \
        w.heartbeat_at >= now() - coalesce(w.lease_ms, $1) * interval '1 millisecond' AS alive, \
        (SELECT count(*) FROM jobq.jobs j \
         WHERE j.state = 'running' AND j.worker_id = w.id AND j.id = ANY(ARRAY( \
             SELECT generate_series(lower(r), upper(r) - 1) \
             FROM jobq.claims c, unnest(c.jobs) AS r WHERE c.worker_id = w.id))) AS running \
    FROM jobq.workers w \
    ORDER BY w.id";

/// Every worker row ([`WORKERS_SQL`]). `default_lease_ms` judges rows
/// without a lease. One transaction, without JIT (see below).
pub async fn workers(
    conn: &mut AsyncPgConnection,
    default_lease_ms: i64,
) -> diesel::QueryResult<Vec<WorkerRow>> {
    conn.transaction::<_, diesel::result::Error, _>(async |conn| {
        conn.batch_execute(NO_JIT).await?;
        load_workers(conn, default_lease_ms).await
    })
    .await
}

async fn load_workers(
    conn: &mut AsyncPgConnection,
    default_lease_ms: i64,
) -> diesel::QueryResult<Vec<WorkerRow>> {
    diesel::sql_query(WORKERS_SQL)
        .bind::<BigInt, _>(default_lease_ms)
        .load(conn)
        .await
}

/// Everything `jobq::stats` reports, read in one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsRows {
    /// [`STATE_COUNTS_SQL`]. Running jobs are found through the claims
    /// that hold them (every claim records its jobs), so a running job
    /// written by raw SQL without a claim is not counted.
    pub states: Vec<StateCount>,
    /// [`RECENT_COUNTS_SQL`].
    pub recent: Vec<RecentCount>,
    /// [`COMPLETED_ESTIMATE_SQL`].
    pub completed_estimate: Option<i64>,
    /// [`WORKERS_SQL`].
    pub workers: Vec<WorkerRow>,
}

/// Reads [`StatsRows`]: four read-only statements in one transaction (one
/// snapshot when `conn`'s isolation is repeatable read or stricter).
///
/// JIT is off for the transaction: the claims' id ranges are expanded with
/// `generate_series`, whose row estimates put the plans far above
/// `jit_above_cost` although they touch only the running jobs, and
/// compiling would cost more than the statements.
pub async fn stats(
    conn: &mut AsyncPgConnection,
    default_lease_ms: i64,
) -> diesel::QueryResult<StatsRows> {
    conn.transaction::<_, diesel::result::Error, _>(async |conn| {
        conn.batch_execute(NO_JIT).await?;
        let states = diesel::sql_query(STATE_COUNTS_SQL).load(conn).await?;
        let recent = diesel::sql_query(RECENT_COUNTS_SQL).load(conn).await?;
        let estimate: Estimate = diesel::sql_query(COMPLETED_ESTIMATE_SQL)
            .get_result(conn)
            .await?;
        let workers = load_workers(conn, default_lease_ms).await?;
        Ok(StatsRows {
            states,
            recent,
            completed_estimate: estimate.n,
            workers,
        })
    })
    .await
}

/// Jobs that finished in one minute of the last hour.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct MinuteCount {
    /// How many whole minutes ago the minute started counting back from
    /// now: 0 is the last 60 seconds, 59 the oldest.
    #[diesel(sql_type = BigInt)]
    pub minutes_ago: i64,
    /// Completed in that minute.
    #[diesel(sql_type = BigInt)]
    pub completed: i64,
    /// Failed for good in that minute.
    #[diesel(sql_type = BigInt)]
    pub failed: i64,
}

/// Completions and failures of the last hour by minute (all queues and
/// tasks), through `jobs_finished_idx` and `jobs_held_finished_idx` from
/// an hour ago like [`RECENT_COUNTS_SQL`]: its cost follows the last
/// hour's finished jobs. Minutes without a finished job have no row.
pub const THROUGHPUT_SQL: &str = "\
    WITH recent AS ( \
        SELECT state, finished_at FROM jobq.jobs \
        WHERE state IN ('completed', 'failed', 'cancelled') AND unique_until IS NULL \
          AND finished_at >= now() - interval '1 hour' \
        UNION ALL \
        SELECT state, finished_at FROM jobq.jobs \
        WHERE state IN ('completed', 'failed', 'cancelled') AND unique_until IS NOT NULL \
          AND finished_at >= now() - interval '1 hour') \
    SELECT greatest(0, floor(extract(epoch FROM now() - finished_at) / 60))::bigint \
               AS minutes_ago, \
           count(*) FILTER (WHERE state = 'completed') AS completed, \
           count(*) FILTER (WHERE state = 'failed') AS failed \
    FROM recent \
    GROUP BY 1 \
    ORDER BY 1";

/// Reads [`THROUGHPUT_SQL`].
pub async fn throughput(conn: &mut AsyncPgConnection) -> diesel::QueryResult<Vec<MinuteCount>> {
    diesel::sql_query(THROUGHPUT_SQL).load(conn).await
}

/// Key of the transaction-scoped advisory lock under which one worker at a
/// time samples [`stats`] for the metrics gauges.
const SAMPLE_LOCK: i64 = 0x6a6f_6271_6d65_7472; // "jobqmetr"

/// [`stats`], unless another worker is sampling them right now (`None`
/// then): the metrics gauges of a fleet cost the database one sampler at a
/// time, not one per worker. The lock is transaction-scoped, so a worker
/// that dies while sampling holds nothing.
pub async fn sample_stats(
    conn: &mut AsyncPgConnection,
    default_lease_ms: i64,
) -> diesel::QueryResult<Option<StatsRows>> {
    conn.transaction::<_, diesel::result::Error, _>(async |conn| {
        let lock: Held = diesel::sql_query("SELECT pg_try_advisory_xact_lock($1) AS held")
            .bind::<BigInt, _>(SAMPLE_LOCK)
            .get_result(conn)
            .await?;
        if !lock.held {
            return Ok(None);
        }
        stats(conn, default_lease_ms).await.map(Some)
    })
    .await
}

#[derive(QueryableByName)]
struct Held {
    #[diesel(sql_type = Bool)]
    held: bool,
}
