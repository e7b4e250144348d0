//! [`WaitError`], why a wait for a job returned no output.

use std::time::Duration;

use crate::JobId;

/// Why [`Waiter`](crate::Waiter)'s `my_task::wait` returned no output.
///
/// ```no_run
/// # #[jobq::task] async fn resize(w: u32) -> Result<String, jobq::TaskError> { Ok(String::new()) }
/// # async fn f(waiter: &jobq::Waiter, id: jobq::JobId) {
/// use std::time::Duration;
/// match resize::wait(waiter, id, Duration::from_secs(10)).await {
///     Ok(path) => println!("done: {path}"),
///     Err(jobq::WaitError::Timeout { .. }) => println!("still running; ask again later"),
///     Err(e) => println!("{e}"),
/// }
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WaitError {
    /// The job failed for good (out of attempts, a permanent error, or
    /// failed by a rescue).
    #[error("job {id} failed: {}", error.as_deref().unwrap_or("no error message was recorded"))]
    Failed {
        /// The job.
        id: JobId,
        /// The message of the last error in its history.
        error: Option<String>,
    },
    /// The job was cancelled.
    #[error("job {id} was cancelled")]
    Cancelled {
        /// The job.
        id: JobId,
    },
    /// The job did not finish in time; it may still finish later.
    #[error("job {id} did not finish within {timeout:?}; it may still finish: wait again or read it with jobq::job")]
    Timeout {
        /// The job.
        id: JobId,
        /// How long the wait lasted.
        timeout: Duration,
    },
    /// No such job: its enqueue has not committed (wait after the commit),
    /// or it finished and was pruned or purged since.
    #[error("job {id} does not exist: wait after its enqueue has committed (finished jobs disappear once pruned)")]
    NotFound {
        /// The job.
        id: JobId,
    },
    /// The wait timed out while the waiter's connection to the database
    /// was down, so whether the job finished is unknown. The waiter keeps
    /// reconnecting; a later wait may succeed.
    #[error("gave up waiting for job {id} after {timeout:?} with the waiter's database connection down: {reason}")]
    Disconnected {
        /// The job.
        id: JobId,
        /// How long the wait lasted.
        timeout: Duration,
        /// The last connection error.
        reason: String,
    },
    /// The job belongs to another task than the one waited with.
    #[error("job {id} is a job of task {task:?}, not of task {expected:?}")]
    WrongTask {
        /// The job.
        id: JobId,
        /// Its task.
        task: String,
        /// The task it was waited for as.
        expected: &'static str,
    },
    /// The job completed, but its output cannot be read as the task's
    /// output type (the type changed since the job ran).
    #[error("job {id} of task {task} completed, but its output cannot be read: {reason}")]
    Output {
        /// The job.
        id: JobId,
        /// The task.
        task: &'static str,
        /// What went wrong.
        reason: String,
    },
}
