//! Looking at and cancelling jobs.

use chrono::{DateTime, Utc};
use diesel_async::AsyncPgConnection;
use serde::{Deserialize, Serialize};

use crate::{Error, JobId};

/// Where a job is in its life: `Scheduled` (if due later) → `Pending` →
/// `Running` → `Completed`, `Failed` or `Cancelled`; a failed attempt with
/// attempts left goes back to `Scheduled` for its backoff.
///
/// New states may be added, so a `match` needs a wildcard arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum JobState {
    /// Waiting for its `run_at`, which lies in the future: a delayed job,
    /// or a retry waiting on its backoff. When due it becomes `Pending`
    /// (workers promote due jobs in bulk, at the due time they learn from
    /// notifications and at every poll).
    Scheduled,
    /// Due, waiting for a free worker slot.
    Pending,
    /// Claimed by a worker; an attempt is under way.
    Running,
    /// Finished successfully.
    Completed,
    /// Out of attempts, or failed permanently.
    Failed,
    /// Cancelled before or while running.
    Cancelled,
}

impl JobState {
    /// Whether the job will never run again.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Completed | JobState::Failed | JobState::Cancelled
        )
    }

    /// Its name in the database and in JSON: `"pending"`, `"failed"`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Scheduled => "scheduled",
            JobState::Pending => "pending",
            JobState::Running => "running",
            JobState::Completed => "completed",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "scheduled" => JobState::Scheduled,
            "pending" => JobState::Pending,
            "running" => JobState::Running,
            "completed" => JobState::Completed,
            "failed" => JobState::Failed,
            "cancelled" => JobState::Cancelled,
            _ => return None,
        })
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Reads a state's name as [`JobState::as_str`] writes it.
///
/// ```
/// assert_eq!("failed".parse::<jobq::JobState>().unwrap(), jobq::JobState::Failed);
/// assert!("done".parse::<jobq::JobState>().is_err());
/// ```
impl std::str::FromStr for JobState {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        JobState::parse(s).ok_or_else(|| {
            Error::invalid(
                "job state",
                format!(
                    "{s:?} is not one of scheduled, pending, running, completed, failed, cancelled"
                ),
            )
        })
    }
}

/// One entry of a job's error history.
///
/// Fields may be added, so it is read, never built, outside jobq.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ErrorRecord {
    /// The attempt that failed.
    pub attempt: u32,
    /// When the failure was recorded.
    pub at: DateTime<Utc>,
    /// What went wrong.
    pub message: String,
}

/// A snapshot of a job row.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct JobInfo {
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
    /// Attempts started so far.
    pub attempt: u32,
    /// Attempts allowed in all.
    pub max_attempts: u32,
    /// When it is (or was last) due.
    pub run_at: DateTime<Utc>,
    /// When it was enqueued.
    pub created_at: DateTime<Utc>,
    /// When its latest attempt started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it reached a terminal state.
    pub finished_at: Option<DateTime<Utc>>,
    /// The dedupe key it was enqueued with.
    pub dedupe_key: Option<String>,
    /// The payload as stored.
    pub payload: serde_json::Value,
    /// Every failed attempt, oldest first.
    pub errors: Vec<ErrorRecord>,
    /// What the task fn returned, once the job completed; `None` before,
    /// and for tasks that return `()`. Read it typed with
    /// [`crate::output`] (or the task's `output`).
    pub output: Option<serde_json::Value>,
    /// The unique key it was enqueued with
    /// ([`EnqueueOptions::unique_key`](crate::EnqueueOptions::unique_key)).
    pub unique_key: Option<String>,
    /// Its partition key ([`crate::EnqueueOptions::key`]).
    pub key: Option<String>,
    /// Its headers ([`crate::EnqueueOptions::header`]), by name.
    pub headers: std::collections::BTreeMap<String, String>,
}

/// The job with this id, or `None` if there is none: never enqueued, or
/// finished and pruned after its retention (by default one minute for
/// completed jobs, a week for failed and cancelled ones; see
/// [`crate::WorkerBuilder::retention`]).
///
/// ```no_run
/// # async fn f(conn: &mut diesel_async::AsyncPgConnection, id: jobq::JobId) -> Result<(), jobq::Error> {
/// if let Some(info) = jobq::job(conn, id).await? {
///     println!("{} is {:?} after {} attempts", info.id, info.state, info.attempt);
/// }
/// # Ok(()) }
/// ```
pub async fn job(conn: &mut AsyncPgConnection, id: JobId) -> Result<Option<JobInfo>, Error> {
    let context = || format!("reading job {id}");
    let row = jobq_diesel::find_job(conn, id.get())
        .await
        .map_err(Error::db(context()))?;
    row.map(info).transpose()
}

/// The job of task `task` (its name) that holds the unique key `key`, or
/// held it last, or `None` if no job of the task was ever submitted with
/// it (or all such jobs were pruned): the lookup of a client's request by
/// its key.
///
/// ```no_run
/// # async fn f(conn: &mut diesel_async::AsyncPgConnection) -> Result<(), jobq::Error> {
/// if let Some(info) = jobq::job_by_key(conn, "charge", "client-7/req-123").await? {
///     println!("request is job {} ({:?})", info.id, info.state);
/// }
/// # Ok(()) }
/// ```
pub async fn job_by_key(
    conn: &mut AsyncPgConnection,
    task: &str,
    key: &str,
) -> Result<Option<JobInfo>, Error> {
    // A key PostgreSQL cannot hold was never stored: nothing to find.
    if key.contains('\0') || task.contains('\0') {
        return Ok(None);
    }
    let row = jobq_diesel::find_job_by_key(conn, task, key)
        .await
        .map_err(Error::db(format!(
            "looking up a job of task {task:?} by its unique key"
        )))?;
    row.map(info).transpose()
}

fn info(row: jobq_diesel::JobRow) -> Result<JobInfo, Error> {
    let id = JobId::from(row.id);
    let corrupt = |what: String| Error::InvalidOptions {
        what: "job row",
        reason: format!("job {id}: {what}"),
    };
    let state = JobState::parse(&row.state)
        .ok_or_else(|| corrupt(format!("unknown state {:?}", row.state)))?;
    let errors: Vec<ErrorRecord> = serde_json::from_str(&row.errors)
        .map_err(|e| corrupt(format!("unreadable error history: {e}")))?;
    let payload = serde_json::from_str(&row.payload)
        .map_err(|e| corrupt(format!("unreadable payload: {e}")))?;
    let output = row
        .output
        .map(|o| serde_json::from_str(&o))
        .transpose()
        .map_err(|e| corrupt(format!("unreadable output: {e}")))?;
    Ok(JobInfo {
        id,
        state,
        task: row.task,
        queue: row.queue,
        priority: row.priority,
        attempt: u32::try_from(row.attempt).unwrap_or(0),
        max_attempts: u32::try_from(row.max_attempts).unwrap_or(0),
        run_at: row.run_at,
        created_at: row.created_at,
        started_at: row.started_at,
        finished_at: row.finished_at,
        dedupe_key: row.dedupe_key,
        payload,
        errors,
        output,
        unique_key: row.unique_key,
        headers: crate::headers::parse(row.headers.as_deref()),
        key: row.key,
    })
}

/// Cancels a job: a scheduled or pending job becomes cancelled at once; a
/// running one is asked to stop through [`crate::Context::cancelled`] and
/// ends cancelled. Returns whether the job was scheduled, pending or
/// running (false when it had already finished or does not exist).
///
/// Runs on `conn`, so inside a transaction it takes effect at commit.
pub async fn cancel(conn: &mut AsyncPgConnection, id: JobId) -> Result<bool, Error> {
    let cancel = jobq_diesel::cancel(conn, id.get())
        .await
        .map_err(Error::db(format!("cancelling job {id}")))?;
    if let (jobq_diesel::CancelResult::Cancelled, Some((task, queue))) =
        (&cancel.result, &cancel.job)
    {
        crate::metrics::cancelled(task, queue);
    }
    Ok(!matches!(
        cancel.result,
        jobq_diesel::CancelResult::NotCancellable
    ))
}
