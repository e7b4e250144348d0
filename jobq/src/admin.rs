//! Operating the queue: listing jobs, retrying failed ones, purging
//! finished ones, and the schema's version and removal. The `jobq`
//! command-line tool is built on these.

use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel_async::AsyncPgConnection;
use serde::Serialize;

use crate::{Error, JobId, JobState};

/// The most jobs one [`jobs`] call returns.
const MAX_LIMIT: u32 = 10_000;

/// Which jobs [`jobs`] lists: every filter given must match.
///
/// ```
/// use jobq::{JobFilter, JobState};
/// let failed_emails = JobFilter::new()
///     .state(JobState::Failed)
///     .task("send_email")
///     .limit(50);
/// # let _ = failed_emails;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobFilter {
    state: Option<JobState>,
    task: Option<String>,
    queue: Option<String>,
    dedupe_key: Option<String>,
    since: Option<DateTime<Utc>>,
    before: Option<JobId>,
    limit: u32,
}

impl Default for JobFilter {
    fn default() -> Self {
        Self::new()
    }
}

impl JobFilter {
    /// The default page size.
    pub const DEFAULT_LIMIT: u32 = 100;

    /// Every job, newest first, [`Self::DEFAULT_LIMIT`] at a time.
    pub fn new() -> Self {
        Self {
            state: None,
            task: None,
            queue: None,
            dedupe_key: None,
            since: None,
            before: None,
            limit: Self::DEFAULT_LIMIT,
        }
    }

    /// Only jobs in this state.
    #[must_use = "the filter is returned, not changed in place"]
    pub fn state(mut self, state: JobState) -> Self {
        self.state = Some(state);
        self
    }

    /// Only jobs of this task.
    #[must_use = "the filter is returned, not changed in place"]
    pub fn task(mut self, task: impl Into<String>) -> Self {
        self.task = Some(task.into());
        self
    }

    /// Only jobs on this queue.
    #[must_use = "the filter is returned, not changed in place"]
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = Some(queue.into());
        self
    }

    /// Only jobs enqueued with this dedupe key.
    #[must_use = "the filter is returned, not changed in place"]
    pub fn dedupe_key(mut self, key: impl Into<String>) -> Self {
        self.dedupe_key = Some(key.into());
        self
    }

    /// Only jobs enqueued at or after this time.
    #[must_use = "the filter is returned, not changed in place"]
    pub fn since(mut self, since: DateTime<Utc>) -> Self {
        self.since = Some(since);
        self
    }

    /// Only jobs with a smaller id than this one: pass the last id of a
    /// page to get the next page (keyset paging, which stays fast however
    /// deep the page).
    #[must_use = "the filter is returned, not changed in place"]
    pub fn before(mut self, id: JobId) -> Self {
        self.before = Some(id);
        self
    }

    /// At most this many jobs (1 to 10,000; default 100).
    #[must_use = "the filter is returned, not changed in place"]
    pub fn limit(mut self, limit: u32) -> Self {
        self.limit = limit;
        self
    }
}

/// A job as a listing shows it: [`crate::JobInfo`] without the payload and
/// the error history (see [`crate::job`] for those).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct JobSummary {
    /// The job's id.
    pub id: JobId,
    /// Its state.
    pub state: JobState,
    /// Its task's name.
    pub task: String,
    /// Its queue.
    pub queue: String,
    /// Higher runs first.
    pub priority: i16,
    /// Attempts used so far.
    pub attempt: u32,
    /// Attempts allowed in all.
    pub max_attempts: u32,
    /// When it is (or was last) due.
    pub run_at: DateTime<Utc>,
    /// When it was enqueued.
    pub created_at: DateTime<Utc>,
    /// When it reached a terminal state.
    pub finished_at: Option<DateTime<Utc>>,
    /// The dedupe key it was enqueued with.
    pub dedupe_key: Option<String>,
}

/// Jobs matching `filter`, newest (highest id) first.
///
/// Each page reads indexes: the primary key newest first, stopping when
/// the page is full, or the partial index of the state asked for (running
/// jobs are found through their claims). A task, with or without a state,
/// and a dedupe key have indexes of their own, so even a task whose jobs
/// are all old or one that never failed is listed from a few pages of
/// them. A queue or time that matches few jobs, given without a state,
/// task or key, is the exception: no index holds finished jobs by those
/// columns, so PostgreSQL may walk much of the table. Add a state or a task
/// to such a filter on a big table.
///
/// ```no_run
/// # async fn f(conn: &mut diesel_async::AsyncPgConnection) -> Result<(), jobq::Error> {
/// let mut filter = jobq::JobFilter::new().state(jobq::JobState::Failed);
/// loop {
///     let page = jobq::jobs(conn, &filter).await?;
///     let Some(last) = page.last() else { break };
///     filter = filter.before(last.id);
///     for job in &page {
///         println!("{} {}", job.id, job.task);
///     }
/// }
/// # Ok(()) }
/// ```
pub async fn jobs(
    conn: &mut AsyncPgConnection,
    filter: &JobFilter,
) -> Result<Vec<JobSummary>, Error> {
    if filter.limit == 0 || filter.limit > MAX_LIMIT {
        return Err(Error::invalid(
            "limit",
            format!("{} is not between 1 and {MAX_LIMIT}", filter.limit),
        ));
    }
    for value in [&filter.task, &filter.queue, &filter.dedupe_key] {
        // No job can hold U+0000 (PostgreSQL text cannot store it), and
        // sending it fails the statement: nothing matches.
        if value.as_deref().is_some_and(|v| v.contains('\0')) {
            return Ok(Vec::new());
        }
    }
    let query = jobq_diesel::JobQuery {
        state: filter.state.map(JobState::as_str),
        task: filter.task.as_deref(),
        queue: filter.queue.as_deref(),
        dedupe_key: filter.dedupe_key.as_deref(),
        since: filter.since,
        before_id: filter.before.map(JobId::get),
        limit: i64::from(filter.limit),
    };
    let rows = jobq_diesel::list_jobs(conn, &query)
        .await
        .map_err(Error::db("listing jobs"))?;
    rows.into_iter()
        .map(|row| {
            let state = row
                .state
                .parse::<JobState>()
                .map_err(|_| Error::InvalidOptions {
                    what: "job row",
                    reason: format!("job {}: unknown state {:?}", row.id, row.state),
                })?;
            Ok(JobSummary {
                id: JobId::from(row.id),
                state,
                task: row.task,
                queue: row.queue,
                priority: row.priority,
                attempt: u32::try_from(row.attempt).unwrap_or(0),
                max_attempts: u32::try_from(row.max_attempts).unwrap_or(0),
                run_at: row.run_at,
                created_at: row.created_at,
                finished_at: row.finished_at,
                dedupe_key: row.dedupe_key,
            })
        })
        .collect()
}

/// What [`retry`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
#[non_exhaustive]
pub enum RetryOutcome {
    /// The job is pending again.
    Retried,
    /// The job is not failed or cancelled, or does not exist: nothing
    /// changed.
    NotRetryable,
    /// Another job of the same task holds the job's dedupe key and is
    /// still scheduled, pending or running, so this one stays as it was.
    DedupeKeyHeld {
        /// The job that holds the key.
        by: JobId,
    },
}

/// Runs a failed or cancelled job again: it becomes pending, due now, with
/// its attempts reset (it gets its full `max_attempts` again), and the
/// workers of its queue are woken at commit. Its error history is kept,
/// so earlier failures stay visible; `attempt` numbers restart at 1.
///
/// Runs on `conn`, so inside a transaction it takes effect at commit.
pub async fn retry(conn: &mut AsyncPgConnection, id: JobId) -> Result<RetryOutcome, Error> {
    let result = jobq_diesel::retry(conn, id.get())
        .await
        .map_err(Error::db(format!("retrying job {id}")))?;
    Ok(match result {
        jobq_diesel::RetryResult::Retried => RetryOutcome::Retried,
        jobq_diesel::RetryResult::NotRetryable => RetryOutcome::NotRetryable,
        jobq_diesel::RetryResult::KeyTaken(by) => RetryOutcome::DedupeKeyHeld {
            by: JobId::from(by),
        },
    })
}

/// Runs every failed job of `task` again, as [`retry`] does, in one
/// statement; returns how many. A job whose dedupe key is held by a live
/// job stays failed, and of failed jobs sharing a key only the newest is
/// retried.
pub async fn retry_failed(conn: &mut AsyncPgConnection, task: &str) -> Result<u64, Error> {
    if task.contains('\0') {
        return Ok(0);
    }
    let n = jobq_diesel::retry_failed(conn, task)
        .await
        .map_err(Error::db(format!(
            "retrying the failed jobs of task {task:?}"
        )))?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// Jobs one purge statement deletes: a short transaction however many
/// jobs go in all.
const PURGE_BATCH: i64 = 5_000;

/// Deletes the jobs in `states` that finished more than `older_than` ago;
/// returns how many. Only terminal states (completed, failed, cancelled)
/// may be purged. Deletes in batches of a few thousand, each its own
/// statement, so no long lock is held; on a connection inside a
/// transaction the batches commit together.
///
/// Workers prune finished jobs on their own after their retention
/// ([`crate::WorkerBuilder::retention`]); this is for clearing up sooner.
/// A job whose [unique key](crate::EnqueueOptions::unique_key) is still
/// held is kept until its hold ends: purging it would let the key be
/// submitted again.
///
/// ```no_run
/// # async fn f(conn: &mut diesel_async::AsyncPgConnection) -> Result<(), jobq::Error> {
/// use std::time::Duration;
/// let week = Duration::from_secs(7 * 24 * 3600);
/// let gone = jobq::purge(conn, &[jobq::JobState::Completed], week).await?;
/// println!("purged {gone} jobs");
/// # Ok(()) }
/// ```
pub async fn purge(
    conn: &mut AsyncPgConnection,
    states: &[JobState],
    older_than: Duration,
) -> Result<u64, Error> {
    if states.is_empty() {
        return Err(Error::invalid("states", "name at least one state to purge"));
    }
    if let Some(active) = states.iter().find(|s| !s.is_terminal()) {
        return Err(Error::invalid(
            "states",
            format!(
                "{} jobs are not finished and cannot be purged (use cancel); \
                 only completed, failed and cancelled jobs can",
                active.as_str()
            ),
        ));
    }
    let names: Vec<String> = states.iter().map(|s| s.as_str().to_owned()).collect();
    let older_than_ms = i64::try_from(older_than.as_millis()).unwrap_or(i64::MAX);
    let mut total = 0u64;
    loop {
        let n = jobq_diesel::purge(conn, &names, older_than_ms, PURGE_BATCH)
            .await
            .map_err(Error::db(format!(
                "purging finished jobs ({total} purged so far)"
            )))?;
        total += u64::try_from(n).unwrap_or(0);
        if n < PURGE_BATCH {
            return Ok(total);
        }
    }
}

/// The version of jobq's schema installed in this database (`None` when
/// it is not installed). Compare with [`SCHEMA_VERSION`].
pub async fn schema_version(conn: &mut AsyncPgConnection) -> Result<Option<i64>, Error> {
    Ok(jobq_diesel::schema_version(conn).await?)
}

/// The schema version this build of jobq installs with [`crate::migrate`].
pub const SCHEMA_VERSION: i64 = jobq_diesel::LATEST_VERSION;

/// Removes jobq from this database: drops the `jobq` schema with every
/// job, worker row and the migration history. Not reversible; stop the
/// workers first (they would fail their next statement). Does nothing
/// when the schema is not installed.
pub async fn uninstall(conn: &mut AsyncPgConnection) -> Result<(), Error> {
    jobq_diesel::uninstall(conn)
        .await
        .map_err(Error::db("dropping the jobq schema"))
}

/// Whether the task named `task` has pending, failed or cancelled jobs in
/// this database: for tools without a task registry (the CLI) to warn
/// about a mistyped task name. Reads only indexes.
pub async fn task_has_jobs(conn: &mut AsyncPgConnection, task: &str) -> Result<bool, Error> {
    if task.contains('\0') {
        return Ok(false);
    }
    jobq_diesel::task_has_jobs(conn, task)
        .await
        .map_err(Error::db(format!("looking up jobs of task {task:?}")))
}
