//! Worker rows: registration, heartbeats (the lease of every job a worker
//! holds) and deregistration.

use std::time::Duration;

use diesel::sql_types::{Array, BigInt, Integer, Nullable, Text};
use diesel::QueryableByName;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};

use crate::no_jit::NO_JIT;

/// Identity of a worker process, stored in its row.
#[derive(Debug, Clone)]
pub struct WorkerInfo {
    /// Host name, for operators.
    pub hostname: String,
    /// Process id, for operators.
    pub pid: i32,
    /// Queues served.
    pub queues: Vec<String>,
    /// The worker's lease: how long it may go without heartbeating before
    /// its jobs are rescued. Stored in its row, so that every rescuer
    /// judges it by its own setting, and its claims need a heartbeat
    /// within it.
    pub lease: Duration,
}

impl WorkerInfo {
    fn lease_ms(&self) -> i64 {
        i64::try_from(self.lease.as_millis()).unwrap_or(i64::MAX)
    }
}

#[derive(QueryableByName)]
struct Id {
    #[diesel(sql_type = BigInt)]
    id: i64,
}

/// Creates the worker's row and returns its id.
pub async fn register_worker(
    conn: &mut AsyncPgConnection,
    info: &WorkerInfo,
) -> diesel::QueryResult<i64> {
    let row: Id = diesel::sql_query(
        "INSERT INTO jobq.workers (hostname, pid, queues, lease_ms) VALUES ($1, $2, $3, $4) \
         RETURNING id",
    )
    .bind::<Text, _>(&info.hostname)
    .bind::<Integer, _>(info.pid)
    .bind::<Array<Text>, _>(&info.queues)
    .bind::<BigInt, _>(info.lease_ms())
    .get_result(conn)
    .await?;
    Ok(row.id)
}

/// What a heartbeat learns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeartbeatReply {
    /// False when the row had been removed (by a rescue: the worker was
    /// presumed dead); the heartbeat re-created it. The jobs rescued
    /// meanwhile are missing from `held`, and their outcomes will be fenced
    /// out.
    pub was_alive: bool,
    /// Jobs this worker runs whose cancellation was requested: the
    /// fallback for a missed cancel notification.
    pub cancel_requested: Vec<i64>,
    /// Every job the database says this worker is running, as
    /// (id, attempt): an attempt the worker runs that is missing here was
    /// rescued from it.
    pub held: Vec<(i64, i32)>,
    /// Claims of this worker removed because none of their jobs runs under
    /// it any more (their jobs were rescued).
    pub dropped_claims: Vec<i64>,
    /// Workers registered in the database, this one included: an upper
    /// bound on the claims that can be in flight at once (a worker runs
    /// one at a time), which is what [`crate::ClaimLanes`] bound.
    pub fleet: i64,
}

#[derive(QueryableByName)]
struct HeartbeatRow {
    #[diesel(sql_type = Nullable<BigInt>)]
    existed: Option<i64>,
    #[diesel(sql_type = Array<BigInt>)]
    cancel_requested: Vec<i64>,
    #[diesel(sql_type = Array<BigInt>)]
    held_ids: Vec<i64>,
    #[diesel(sql_type = Array<Integer>)]
    held_attempts: Vec<i32>,
    #[diesel(sql_type = Array<BigInt>)]
    dropped_claims: Vec<i64>,
    #[diesel(sql_type = BigInt)]
    fleet: i64,
}

/// The heartbeat statement; `$1` the worker, `$2` host, `$3` pid, `$4`
/// queues, `$5` lease in milliseconds. Public so that tests can `EXPLAIN`
/// the real thing.
///
/// Empty claim rows are kept: they are the tombstones of released claim
/// keys (see [`crate::release_claim`]), which must outlive any claim
/// under that key that might still arrive.
#[doc(hidden)]
pub const HEARTBEAT_SQL: &str = "WITH before AS (SELECT id FROM jobq.workers WHERE id = $1), \
         beat AS ( \
             INSERT INTO jobq.workers (id, hostname, pid, queues, lease_ms) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (id) DO UPDATE SET heartbeat_at = now() \
             RETURNING id), \
         claimed AS ( \
             SELECT c.id AS claim, g.id \
             FROM jobq.claims c \
             CROSS JOIN LATERAL unnest(c.jobs) AS r(ids) \
             CROSS JOIN LATERAL generate_series(lower(r.ids), upper(r.ids) - 1) AS g(id) \
             WHERE c.worker_id = $1 \
         ), held AS ( \
             SELECT j.id, j.attempt, j.cancel_requested FROM jobq.jobs j \
             WHERE j.id = ANY(ARRAY(SELECT id FROM claimed)) \
               AND j.worker_id = $1 AND j.state = 'running' \
         ), dropped AS ( \
             DELETE FROM jobq.claims c \
             WHERE c.worker_id = $1 AND NOT isempty(c.jobs) \
               AND c.id NOT IN (SELECT claim FROM claimed WHERE id IN (SELECT id FROM held)) \
             RETURNING c.id \
         ) \
         SELECT (SELECT id FROM before) AS existed, \
             coalesce(h.cancel_requested, '{}') AS cancel_requested, \
             coalesce(h.held_ids, '{}') AS held_ids, \
             coalesce(h.held_attempts, '{}') AS held_attempts, \
             coalesce((SELECT array_agg(id) FROM dropped), '{}') AS dropped_claims, \
             (SELECT count(*) FROM jobq.workers o WHERE o.id <> $1) + 1 AS fleet \
         FROM beat LEFT JOIN LATERAL ( \
             SELECT array_agg(held.id) FILTER (WHERE held.cancel_requested) \
                     AS cancel_requested, \
                 array_agg(held.id ORDER BY held.id) AS held_ids, \
                 array_agg(held.attempt ORDER BY held.id) AS held_attempts \
             FROM held \
         ) h ON true";

/// Refreshes the worker's lease in one statement (in a short transaction
/// that first turns JIT off, see `no_jit`), whatever the number of jobs it
/// holds, re-creating its row if a rescue had removed it. The jobs
/// it holds are found through its claims (`jobq.claims`) by primary key;
/// claims with none of their jobs running under it any more are removed.
/// (By primary key, not by a join on the id ranges: statistics nearly
/// always see no running job, and a planner that believes them scans the
/// whole table for the join.)
pub async fn heartbeat(
    conn: &mut AsyncPgConnection,
    worker_id: i64,
    info: &WorkerInfo,
) -> diesel::QueryResult<HeartbeatReply> {
    let row: HeartbeatRow = conn
        .transaction::<_, diesel::result::Error, _>(async |conn| {
            conn.batch_execute(NO_JIT).await?;
            diesel::sql_query(HEARTBEAT_SQL)
                .bind::<BigInt, _>(worker_id)
                .bind::<Text, _>(&info.hostname)
                .bind::<Integer, _>(info.pid)
                .bind::<Array<Text>, _>(&info.queues)
                .bind::<BigInt, _>(info.lease_ms())
                .get_result(conn)
                .await
        })
        .await?;
    Ok(HeartbeatReply {
        was_alive: row.existed.is_some(),
        cancel_requested: row.cancel_requested,
        held: row.held_ids.into_iter().zip(row.held_attempts).collect(),
        dropped_claims: row.dropped_claims,
        fleet: row.fleet,
    })
}

/// Removes the worker's row at a clean shutdown, once it holds no jobs.
pub async fn deregister_worker(
    conn: &mut AsyncPgConnection,
    worker_id: i64,
) -> diesel::QueryResult<()> {
    diesel::sql_query("DELETE FROM jobq.workers WHERE id = $1")
        .bind::<BigInt, _>(worker_id)
        .execute(conn)
        .await?;
    Ok(())
}
