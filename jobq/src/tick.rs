//! [`Tick`]: the payload of a periodic task's job.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The tick a periodic task's job runs for: the instant the schedule named
/// (not the instant the job happened to start), so a handler knows which
/// period it covers even when it runs late or is a caught-up tick.
///
/// A task with `cron = "..."` takes it as its payload:
///
/// ```no_run
/// #[jobq::task(cron = "0 0 * * * *", timezone = "Europe/Berlin")]
/// async fn hourly_report(job: jobq::Tick) -> Result<(), jobq::TaskError> {
///     let period_end = job.at();
///     let _ = period_end;
///     Ok(())
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Tick {
    /// The scheduled instant.
    pub at: DateTime<Utc>,
    /// The schedule that produced it (the task's name for a schedule given
    /// in `#[jobq::task(cron = ...)]`).
    #[serde(default)]
    pub schedule: String,
}

impl Tick {
    /// A tick of `schedule` at `at`, e.g. to call a task fn in a test.
    #[must_use]
    pub fn new(at: DateTime<Utc>, schedule: impl Into<String>) -> Self {
        Self {
            at,
            schedule: schedule.into(),
        }
    }

    /// The scheduled instant.
    #[must_use]
    pub fn at(&self) -> DateTime<Utc> {
        self.at
    }

    /// The schedule that produced the tick.
    #[must_use]
    pub fn schedule(&self) -> &str {
        &self.schedule
    }
}
