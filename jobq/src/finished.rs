//! [`Finished`]: the payload of a follow-up job.

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};

use crate::{JobId, JobState};

/// How a job ended: the payload of its follow-up job
/// (`#[jobq::task(then = ...)]`).
///
/// The database builds it in the transaction that writes the job's
/// terminal state, so the follow-up is enqueued exactly once per arrival in
/// a terminal state, whatever wrote it: the worker (completed, failed by an
/// error, a panic, a timeout, exhausted attempts, or a payload that no
/// longer decodes), the rescue of a dead worker's job, `jobq::cancel`, the
/// CLI or dashboard, or raw SQL.
///
/// ```no_run
/// # #[derive(serde::Serialize, serde::Deserialize)] struct Charge { cents: u64 }
/// #[jobq::task(then = notify_client)]
/// async fn charge(job: Charge) -> Result<String, jobq::TaskError> {
///     Ok(format!("receipt for {} cents", job.cents))
/// }
///
/// #[jobq::task(queue = "callbacks")]
/// async fn notify_client(job: jobq::Finished) -> Result<(), jobq::TaskError> {
///     match job.state {
///         jobq::JobState::Completed => {
///             let receipt: Option<String> = job.output_as()?;
///             println!("job {} done: {receipt:?}", job.job_id);
///         }
///         _ => println!("job {} ended {:?}: {:?}", job.job_id, job.state, job.error),
///     }
///     Ok(())
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Finished {
    /// The job that ended.
    pub job_id: JobId,
    /// Its task's name.
    pub task: String,
    /// Its queue.
    pub queue: String,
    /// Its terminal state: completed, failed or cancelled.
    pub state: JobState,
    /// The latest message of its error history, for a job that failed or
    /// was cancelled (stored cleaned and capped, see the README's
    /// "Failures"); `None` for a completed job or when none was recorded.
    #[serde(default)]
    pub error: Option<String>,
    /// What its task fn returned, as JSON, for a completed job whose task
    /// returns a value (`Some(Value::Null)` for a returned JSON null);
    /// `None` otherwise. At most [`crate::MAX_OUTPUT_SIZE`] bytes of JSON.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub output: Option<serde_json::Value>,
    /// The attempts it used (hand-backs at shutdown not counted); 0 for a
    /// job cancelled before it ran.
    pub attempt: u32,
    /// When it was enqueued.
    pub created_at: DateTime<Utc>,
    /// When its latest attempt started; `None` if it never ran.
    #[serde(default)]
    pub started_at: Option<DateTime<Utc>>,
    /// When it reached its terminal state.
    pub finished_at: DateTime<Utc>,
}

/// An `output` key that is present is `Some`, even when it holds `null`.
fn present<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<serde_json::Value>, D::Error> {
    serde_json::Value::deserialize(deserializer).map(Some)
}

impl Finished {
    /// How job `job_id` of `task` ended, for calling a follow-up task fn
    /// in a test; the other fields are public and start empty (queue
    /// `default`, no error, no output, no attempt, all times now).
    #[must_use]
    pub fn new(job_id: JobId, task: impl Into<String>, state: JobState) -> Self {
        let now = Utc::now();
        Self {
            job_id,
            task: task.into(),
            queue: crate::TaskOptions::DEFAULT_QUEUE.to_owned(),
            state,
            error: None,
            output: None,
            attempt: 0,
            created_at: now,
            started_at: None,
            finished_at: now,
        }
    }

    /// The output decoded as `T` (the finished task's `Task::Output`):
    /// `None` when there is none.
    ///
    /// # Errors
    ///
    /// When the output does not decode as `T`.
    pub fn output_as<T: DeserializeOwned>(&self) -> Result<Option<T>, serde_json::Error> {
        self.output
            .as_ref()
            .map(|value| T::deserialize(value))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_what_the_trigger_builds() {
        // As jsonb renders it: timestamps with the session's offset.
        let json = r#"{"job_id": 7, "task": "charge", "queue": "q", "state": "failed",
            "error": "card declined", "attempt": 3,
            "created_at": "2026-12-02T10:00:00.123456+01:00",
            "started_at": null, "finished_at": "2026-12-02T09:00:01+00:00"}"#;
        let finished: Finished = serde_json::from_str(json).unwrap();
        assert_eq!(finished.job_id, JobId::from(7));
        assert_eq!(finished.state, JobState::Failed);
        assert_eq!(finished.error.as_deref(), Some("card declined"));
        assert_eq!(finished.output, None);
        assert_eq!(finished.started_at, None);
        assert_eq!(
            finished.created_at.to_rfc3339(),
            "2026-12-02T09:00:00.123456+00:00"
        );
        assert_eq!(finished.output_as::<u32>().unwrap(), None);
    }

    #[test]
    fn a_stored_null_output_is_told_from_none() {
        let mut finished = Finished::new(JobId::from(1), "t", JobState::Completed);
        finished.output = Some(serde_json::Value::Null);
        let json = serde_json::to_string(&finished).unwrap();
        let back: Finished = serde_json::from_str(&json).unwrap();
        assert_eq!(back.output, Some(serde_json::Value::Null));
        assert_eq!(back.output_as::<Option<u32>>().unwrap(), Some(None));
        finished.output = Some(serde_json::json!({"n": 5}));
        assert!(finished.output_as::<String>().is_err());
    }
}
