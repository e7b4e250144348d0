//! [`TaskError`], what a task function returns when an attempt fails.

use std::fmt;
use std::time::Duration;

use jobq_diesel::OutcomeKind;

/// The error of a failed attempt.
///
/// `?` converts any `std::error::Error + Send + Sync + 'static` and any
/// `anyhow::Error` into a retryable `TaskError` (except
/// [`Error::InvalidOutput`](crate::Error::InvalidOutput), which is
/// permanent). Use [`TaskError::permanent`]
/// for failures that no retry can fix: the job then fails at once.
///
/// `TaskError` deliberately does not implement `std::error::Error` itself:
/// that is what lets the blanket `From` impl cover both kinds of errors.
///
/// ```
/// # #[derive(serde::Serialize, serde::Deserialize)] struct Charge { cents: i64 }
/// async fn charge(job: Charge) -> Result<(), jobq::TaskError> {
///     if job.cents < 0 {
///         return Err(jobq::TaskError::permanent(std::io::Error::other("negative amount")));
///     }
///     let _n: u32 = "42".parse()?; // any std error retries
///     Ok(())
/// }
/// ```
pub struct TaskError {
    inner: anyhow::Error,
    kind: Kind,
}

/// What the worker does with the job after this error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Retry with the task's backoff while attempts remain.
    Retry,
    /// Fail at once.
    Permanent,
    /// Run again after the delay, without using an attempt.
    Snooze(Duration),
    /// Like `Snooze`, and hold back the task (or the job's key) fleet-wide
    /// for as long.
    RateLimited(Duration),
}

/// Longest wait a snooze or a rate limit asks for; longer ones are cut to
/// it (a downstream that says "come back in a century" gets a year).
pub const MAX_SNOOZE: Duration = Duration::from_secs(365 * 24 * 3600);

impl TaskError {
    /// A failure that retrying cannot fix: the job fails without retry.
    pub fn permanent<E>(error: E) -> Self
    where
        E: Into<anyhow::Error>,
    {
        Self {
            inner: error.into(),
            kind: Kind::Permanent,
        }
    }

    /// Run the job again after `delay`, **without using up an attempt**:
    /// for a downstream that answered "not now" (HTTP 429 or 503 with a
    /// `Retry-After`). The job waits as scheduled until then; other jobs
    /// of the task keep running. A job may snooze any number of times.
    /// Delays are capped at [`MAX_SNOOZE`].
    ///
    /// ```
    /// # #[derive(serde::Serialize, serde::Deserialize)] struct Sync { account: u64 }
    /// # fn call_api() -> Result<(), Option<std::time::Duration>> { Ok(()) }
    /// use std::time::Duration;
    ///
    /// #[jobq::task]
    /// async fn sync(job: Sync) -> Result<(), jobq::TaskError> {
    ///     match call_api() {
    ///         Ok(()) => Ok(()),
    ///         // The API said 429, Retry-After: 30.
    ///         Err(retry_after) => Err(jobq::TaskError::retry_after(
    ///             retry_after.unwrap_or(Duration::from_secs(30)),
    ///         )),
    ///     }
    /// }
    /// ```
    pub fn retry_after(delay: Duration) -> Self {
        let delay = delay.min(MAX_SNOOZE);
        Self {
            inner: anyhow::Error::msg(format!("snoozed for {}", humantime::format_duration(delay))),
            kind: Kind::Snooze(delay),
        }
    }

    /// Like [`retry_after`](Self::retry_after), and also **no worker of
    /// the fleet starts another job of this task until then**, or, when
    /// the job has a partition key ([`crate::EnqueueOptions::key`]), no job
    /// of that key: the whole fleet honours the downstream's
    /// `Retry-After`. The block is a row in `jobq.blocks` that every claim
    /// reads; a later block never shortens an earlier, longer one. The
    /// pending jobs of the task (or key) wait as scheduled until the block
    /// ends, their `run_at` moved to its end, and come back then in their
    /// order; [`crate::blocks`] lists blocks and [`crate::unblock`] lifts
    /// one early.
    ///
    /// ```
    /// # #[derive(serde::Serialize, serde::Deserialize)] struct Push { user: u64 }
    /// use std::time::Duration;
    ///
    /// #[jobq::task]
    /// async fn push(job: Push) -> Result<(), jobq::TaskError> {
    ///     let throttled = job.user == 0; // the provider answered 429
    ///     if throttled {
    ///         return Err(jobq::TaskError::rate_limited(Duration::from_secs(60)));
    ///     }
    ///     Ok(())
    /// }
    /// ```
    pub fn rate_limited(delay: Duration) -> Self {
        let delay = delay.min(MAX_SNOOZE);
        Self {
            inner: anyhow::Error::msg(format!(
                "rate limited: the task (or key) waits {} fleet-wide",
                humantime::format_duration(delay)
            )),
            kind: Kind::RateLimited(delay),
        }
    }

    /// How long the job waits without using an attempt, when this is a
    /// [`retry_after`](Self::retry_after) or
    /// [`rate_limited`](Self::rate_limited).
    pub fn snooze_delay(&self) -> Option<Duration> {
        match self.kind {
            Kind::Snooze(d) | Kind::RateLimited(d) => Some(d),
            _ => None,
        }
    }

    /// Whether this error holds back the task or key fleet-wide
    /// ([`rate_limited`](Self::rate_limited)).
    pub fn is_rate_limited(&self) -> bool {
        matches!(self.kind, Kind::RateLimited(_))
    }

    /// The outcome a worker writes for this error; `retry` is the backoff
    /// the attempt would wait before a retry.
    pub(crate) fn outcome_kind(&self, retry: Duration) -> OutcomeKind {
        let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        match self.kind {
            Kind::Retry => OutcomeKind::Retry {
                delay_ms: ms(retry),
            },
            Kind::Permanent => OutcomeKind::Failed,
            Kind::Snooze(d) => OutcomeKind::Snoozed { delay_ms: ms(d) },
            Kind::RateLimited(d) => OutcomeKind::RateLimited { delay_ms: ms(d) },
        }
    }

    /// A failure worth retrying, from a message.
    pub fn msg<M>(message: M) -> Self
    where
        M: fmt::Display + fmt::Debug + Send + Sync + 'static,
    {
        Self {
            inner: anyhow::Error::msg(message),
            kind: Kind::Retry,
        }
    }

    /// Whether this failure skips the remaining attempts.
    pub fn is_permanent(&self) -> bool {
        self.kind == Kind::Permanent
    }

    /// The underlying error.
    pub fn as_anyhow(&self) -> &anyhow::Error {
        &self.inner
    }
}

impl<E> From<E> for TaskError
where
    E: Into<anyhow::Error>,
{
    fn from(error: E) -> Self {
        let inner = error.into();
        // jobq's own errors that no retry fixes (an output that cannot be
        // stored) stay permanent through the handler's `?`.
        let kind = if inner
            .downcast_ref::<crate::Error>()
            .is_some_and(crate::Error::is_permanent_for_a_task)
        {
            Kind::Permanent
        } else {
            Kind::Retry
        };
        Self { inner, kind }
    }
}

impl fmt::Debug for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskError")
            .field("error", &self.inner)
            .field("kind", &self.kind)
            .finish()
    }
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `{:#}` prints the whole cause chain on one line, which is what the
        // job's error history should keep.
        write!(f, "{:#}", self.inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_maps_to_its_outcome_and_snoozes_are_capped() {
        let backoff = Duration::from_millis(250);
        assert_eq!(
            TaskError::msg("x").outcome_kind(backoff),
            OutcomeKind::Retry { delay_ms: 250 }
        );
        assert_eq!(
            TaskError::permanent(std::io::Error::other("x")).outcome_kind(backoff),
            OutcomeKind::Failed
        );
        let snooze = TaskError::retry_after(Duration::from_secs(2));
        assert_eq!(
            snooze.outcome_kind(backoff),
            OutcomeKind::Snoozed { delay_ms: 2000 }
        );
        assert_eq!(snooze.snooze_delay(), Some(Duration::from_secs(2)));
        assert!(!snooze.is_permanent() && !snooze.is_rate_limited());
        assert_eq!(snooze.to_string(), "snoozed for 2s");
        // A downstream asking for forever gets a year, which the database
        // can add to now().
        let forever = TaskError::rate_limited(Duration::MAX);
        assert!(forever.is_rate_limited());
        assert_eq!(forever.snooze_delay(), Some(MAX_SNOOZE));
        let year_ms = i64::try_from(MAX_SNOOZE.as_millis()).unwrap();
        assert_eq!(
            forever.outcome_kind(backoff),
            OutcomeKind::RateLimited { delay_ms: year_ms }
        );
    }
}
