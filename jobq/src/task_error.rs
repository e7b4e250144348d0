//! [`TaskError`], what a task function returns when an attempt fails.

use std::fmt;

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
    permanent: bool,
}

impl TaskError {
    /// A failure that retrying cannot fix: the job fails without retry.
    pub fn permanent<E>(error: E) -> Self
    where
        E: Into<anyhow::Error>,
    {
        Self {
            inner: error.into(),
            permanent: true,
        }
    }

    /// A failure worth retrying, from a message.
    pub fn msg<M>(message: M) -> Self
    where
        M: fmt::Display + fmt::Debug + Send + Sync + 'static,
    {
        Self {
            inner: anyhow::Error::msg(message),
            permanent: false,
        }
    }

    /// Whether this failure skips the remaining attempts.
    pub fn is_permanent(&self) -> bool {
        self.permanent
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
        let permanent = inner
            .downcast_ref::<crate::Error>()
            .is_some_and(crate::Error::is_permanent_for_a_task);
        Self { inner, permanent }
    }
}

impl fmt::Debug for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskError")
            .field("error", &self.inner)
            .field("permanent", &self.permanent)
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
