//! Periodic tasks' schedules: declaring one at run time ([`Schedule`]),
//! pausing and resuming one fleet-wide, and listing them.

use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel_async::AsyncPgConnection;

use crate::cron::{CronSchedule, DEFAULT_TIMEZONE};
use crate::Error;

/// A schedule added at run time with
/// [`WorkerBuilder::schedule_with`](crate::WorkerBuilder::schedule_with),
/// e.g. one read from configuration. The task must take a
/// [`Tick`](crate::Tick) as its payload.
///
/// ```
/// use std::time::Duration;
///
/// let schedule = jobq::Schedule::new("cleanup", "0 30 3 * * *")
///     .name("cleanup.nightly")
///     .timezone("Europe/Berlin")
///     .catch_up(Duration::from_secs(6 * 3600));
/// # let _ = schedule;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "a schedule does nothing until given to WorkerBuilder::schedule_with"]
pub struct Schedule {
    pub(crate) name: Option<String>,
    pub(crate) task: String,
    pub(crate) expression: String,
    pub(crate) timezone: String,
    pub(crate) catch_up: Option<Duration>,
}

impl Schedule {
    /// A schedule enqueueing a job of `task` at every tick of `expression`
    /// (five fields, or six with seconds first), in UTC.
    pub fn new(task: impl Into<String>, expression: impl Into<String>) -> Self {
        Self {
            name: None,
            task: task.into(),
            expression: expression.into(),
            timezone: DEFAULT_TIMEZONE.to_owned(),
            catch_up: None,
        }
    }

    /// The schedule's name, unique in the database (default: the task's
    /// name). It names the schedule for [`pause_schedule`] and
    /// [`schedules`], and is carried in each [`Tick`](crate::Tick).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The IANA time zone the expression is read in (default `UTC`).
    pub fn timezone(mut self, timezone: impl Into<String>) -> Self {
        self.timezone = timezone.into();
        self
    }

    /// Enqueues missed ticks up to this age after downtime; without it,
    /// only the most recent missed tick runs.
    pub fn catch_up(mut self, max_age: Duration) -> Self {
        self.catch_up = Some(max_age);
        self
    }

    pub(crate) fn schedule_name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.task)
    }
}

/// A schedule as the database holds it, from [`schedules`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct ScheduleInfo {
    /// The schedule's name.
    pub name: String,
    /// The task it enqueues.
    pub task: String,
    /// The cron expression.
    pub expression: String,
    /// The time zone the expression is read in.
    pub timezone: String,
    /// Whether it is paused fleet-wide.
    pub paused: bool,
    /// The latest tick enqueued.
    pub last_tick: Option<DateTime<Utc>>,
    /// The next tick that will be enqueued (while paused: that would be);
    /// `None` when the expression never matches again or is not one this
    /// build can read.
    pub next_tick: Option<DateTime<Utc>>,
}

/// Every schedule in the database, by name.
pub async fn schedules(conn: &mut AsyncPgConnection) -> Result<Vec<ScheduleInfo>, Error> {
    let rows = jobq_diesel::list_schedules(conn)
        .await
        .map_err(Error::db("listing schedules"))?;
    let now = Utc::now();
    Ok(rows
        .into_iter()
        .map(|row| {
            let settled = row.last_tick.map_or(row.since, |t| t.max(row.since));
            let next_tick = CronSchedule::parse(&row.expression, &row.timezone)
                .ok()
                .and_then(|s| s.next_after(settled.max(now)));
            ScheduleInfo {
                name: row.name,
                task: row.task,
                expression: row.expression,
                timezone: row.timezone,
                paused: row.paused,
                last_tick: row.last_tick,
                next_tick,
            }
        })
        .collect())
}

/// Pauses the schedule `name` on every worker: none enqueues its ticks
/// until [`resume_schedule`]. Returns `false` when no such schedule exists
/// (a schedule exists once a worker declaring it has started).
pub async fn pause_schedule(conn: &mut AsyncPgConnection, name: &str) -> Result<bool, Error> {
    jobq_diesel::pause_schedule(conn, name)
        .await
        .map_err(Error::db(format!("pausing schedule {name:?}")))
}

/// Resumes the schedule `name`. The ticks that passed while it was paused
/// are skipped; the next one runs as usual. Returns `false` when no such
/// schedule exists.
pub async fn resume_schedule(conn: &mut AsyncPgConnection, name: &str) -> Result<bool, Error> {
    jobq_diesel::resume_schedule(conn, name)
        .await
        .map_err(Error::db(format!("resuming schedule {name:?}")))
}
