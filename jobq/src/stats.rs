//! [`stats`] and [`workers`]: what the queue holds and who works it, read
//! cheaply enough to poll (the CLI's `status --watch`, metrics, benchmarks).

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel_async::AsyncPgConnection;
use serde::{Serialize, Serializer};

use crate::Error;

/// The lease of workers whose row records none (workers of a jobq from
/// before per-worker leases): the worker default.
const DEFAULT_LEASE: Duration = Duration::from_secs(30);

/// A snapshot of the queue: jobs by queue, task and state, recent
/// throughput, and live workers. See [`stats`].
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Stats {
    /// One entry per queue and task that has any active, failed or
    /// cancelled job or finished a job in the last hour; sorted by queue,
    /// then task.
    pub tasks: Vec<TaskStats>,
    /// The planner's estimate of completed jobs in the table (all queues
    /// and tasks), `None` before the table was first analyzed. An estimate
    /// because counting completed jobs exactly means reading each one; it
    /// follows autovacuum's analyze, so it lags by up to a few percent of
    /// the table.
    pub completed_estimate: Option<i64>,
    /// Workers whose heartbeat is within their lease.
    pub live_workers: usize,
}

/// Jobs of one queue and task. Counts of active, failed and cancelled jobs
/// are exact; finished ones are counted for the last minute and hour.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct TaskStats {
    /// The queue.
    pub queue: String,
    /// The task's name.
    pub task: String,
    /// Jobs waiting for a later `run_at` (delayed, or retrying after a
    /// backoff).
    pub scheduled: i64,
    /// Jobs due and waiting for a worker.
    pub pending: i64,
    /// Jobs a worker is running now.
    pub running: i64,
    /// Jobs that failed for good and are not yet pruned.
    pub failed: i64,
    /// Cancelled jobs not yet pruned.
    pub cancelled: i64,
    /// How long the oldest pending job has been due: how far behind the
    /// workers of this queue and task are. `None` with no pending job.
    /// In JSON, seconds as a number (`oldest_due_age_secs`).
    #[serde(rename = "oldest_due_age_secs", serialize_with = "secs")]
    pub oldest_due_age: Option<Duration>,
    /// Jobs completed in the last minute.
    pub completed_last_minute: i64,
    /// Jobs that failed for good in the last minute.
    pub failed_last_minute: i64,
    /// Jobs completed in the last hour.
    pub completed_last_hour: i64,
    /// Jobs that failed for good in the last hour.
    pub failed_last_hour: i64,
}

pub(crate) fn default_lease_ms() -> i64 {
    i64::try_from(DEFAULT_LEASE.as_millis()).unwrap_or(i64::MAX)
}

fn entry(
    tasks: &mut BTreeMap<(String, String), TaskStats>,
    queue: String,
    task: String,
) -> &mut TaskStats {
    tasks
        .entry((queue.clone(), task.clone()))
        .or_insert_with(|| TaskStats {
            queue,
            task,
            ..TaskStats::default()
        })
}

fn secs<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&d.as_secs_f64()),
        None => s.serialize_none(),
    }
}

/// Counts jobs by queue, task and state, the age of the oldest due job,
/// completions and failures of the last minute and hour, and live workers.
///
/// Cheap enough to call every second: no statement reads the whole jobs
/// table. Active states are counted through their partial indexes (their
/// cost follows the active jobs), failed and cancelled ones through
/// `jobs_failed_idx` alone, recent completions through `jobs_finished_idx`
/// from an hour ago (their cost follows the last hour's throughput), and
/// completed jobs in all are the planner's estimate
/// ([`Stats::completed_estimate`]). Four short read-only statements in one
/// transaction (a nested one, with a savepoint, inside yours); they see one
/// snapshot only under repeatable read. PostgreSQL's JIT is turned off for
/// that transaction (`SET LOCAL jit = off`; inside your transaction, for
/// the rest of it): the planner's estimates for the running jobs' id ranges
/// would otherwise make it compile for longer than the queries run.
///
/// ```no_run
/// # async fn f(conn: &mut diesel_async::AsyncPgConnection) -> Result<(), jobq::Error> {
/// let stats = jobq::stats(conn).await?;
/// for t in &stats.tasks {
///     println!("{}/{}: {} pending, {} running", t.queue, t.task, t.pending, t.running);
/// }
/// # Ok(()) }
/// ```
pub async fn stats(conn: &mut AsyncPgConnection) -> Result<Stats, Error> {
    let rows = jobq_diesel::stats(conn, default_lease_ms())
        .await
        .map_err(Error::db("reading queue statistics"))?;
    Ok(from_rows(rows))
}

/// Folds the rows of `jobq_diesel::stats` into a [`Stats`].
pub(crate) fn from_rows(rows: jobq_diesel::StatsRows) -> Stats {
    let live_workers = rows.workers.iter().filter(|w| w.alive).count();
    let mut tasks: BTreeMap<(String, String), TaskStats> = BTreeMap::new();
    for row in rows.states {
        let t = entry(&mut tasks, row.queue, row.task);
        match row.state.as_str() {
            "scheduled" => t.scheduled = row.jobs,
            "pending" => {
                t.pending = row.jobs;
                t.oldest_due_age = row
                    .oldest_due_ms
                    .map(|ms| Duration::from_millis(u64::try_from(ms).unwrap_or(0)));
            }
            "running" => t.running = row.jobs,
            "failed" => t.failed = row.jobs,
            "cancelled" => t.cancelled = row.jobs,
            other => tracing::warn!(state = other, "stats: unexpected job state"),
        }
    }
    for row in rows.recent {
        let t = entry(&mut tasks, row.queue, row.task);
        t.completed_last_minute = row.completed_last_minute;
        t.failed_last_minute = row.failed_last_minute;
        t.completed_last_hour = row.completed_last_hour;
        t.failed_last_hour = row.failed_last_hour;
    }
    Stats {
        tasks: tasks.into_values().collect(),
        completed_estimate: rows.completed_estimate,
        live_workers,
    }
}

/// A worker process as its row shows it. See [`workers`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct WorkerStatus {
    /// The worker's id (its row's).
    pub id: i64,
    /// The host it runs on.
    pub hostname: String,
    /// Its process id.
    pub pid: i32,
    /// The queues it serves.
    pub queues: Vec<String>,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// Its last heartbeat.
    pub heartbeat_at: DateTime<Utc>,
    /// Its lease; `None` for a worker of an older jobq, judged by the
    /// default of 30 s. In JSON, seconds (`lease_secs`).
    #[serde(rename = "lease_secs", serialize_with = "secs")]
    pub lease: Option<Duration>,
    /// Whether its last heartbeat is within its lease. A worker that is
    /// not alive is about to have its jobs rescued.
    pub alive: bool,
    /// Jobs it is running.
    pub running: i64,
}

/// Every registered worker, oldest first, with whether it is alive and the
/// jobs it runs. Reads the workers table (one row per process) and each
/// worker's running jobs by primary key.
pub async fn workers(conn: &mut AsyncPgConnection) -> Result<Vec<WorkerStatus>, Error> {
    let rows = jobq_diesel::workers(conn, default_lease_ms())
        .await
        .map_err(Error::db("listing workers"))?;
    Ok(rows
        .into_iter()
        .map(|w| WorkerStatus {
            id: w.id,
            hostname: w.hostname,
            pid: w.pid,
            queues: w.queues,
            started_at: w.started_at,
            heartbeat_at: w.heartbeat_at,
            lease: w
                .lease_ms
                .and_then(|ms| u64::try_from(ms).ok())
                .map(Duration::from_millis),
            alive: w.alive,
            running: w.running,
        })
        .collect())
}

/// Jobs that finished in one minute of the last hour. See [`throughput`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct MinuteCounts {
    /// Which minute, counted back from now: 0 is the last 60 seconds, 59
    /// the oldest of the hour.
    pub minutes_ago: u32,
    /// Jobs completed in that minute.
    pub completed: i64,
    /// Jobs that failed for good in that minute.
    pub failed: i64,
}

/// Completions and failures of the last hour, minute by minute (all
/// queues and tasks): always 60 entries, oldest first, minutes without
/// finished jobs counted as 0. For a throughput chart.
///
/// One statement through `jobs_finished_idx` from an hour ago, like the
/// last hour's counts of [`stats`]: its cost follows the last hour's
/// finished jobs, not the table.
///
/// ```no_run
/// # async fn f(conn: &mut diesel_async::AsyncPgConnection) -> Result<(), jobq::Error> {
/// let hour = jobq::throughput(conn).await?;
/// let failed: i64 = hour.iter().map(|m| m.failed).sum();
/// println!("{failed} jobs failed in the last hour");
/// # Ok(()) }
/// ```
pub async fn throughput(conn: &mut AsyncPgConnection) -> Result<Vec<MinuteCounts>, Error> {
    let rows = jobq_diesel::throughput(conn)
        .await
        .map_err(Error::db("reading the last hour's throughput"))?;
    let mut minutes: Vec<MinuteCounts> = (0..60)
        .rev()
        .map(|minutes_ago| MinuteCounts {
            minutes_ago,
            ..MinuteCounts::default()
        })
        .collect();
    for row in rows {
        // The newest minute is last; a clock step can put a finish a
        // moment past the hour, which counts as the oldest minute.
        let ago = usize::try_from(row.minutes_ago.clamp(0, 59)).unwrap_or(59);
        let m = &mut minutes[59 - ago];
        m.completed += row.completed;
        m.failed += row.failed;
    }
    Ok(minutes)
}
