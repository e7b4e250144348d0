//! [`Context`], facts about the running attempt that a task function may
//! take besides its payload.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::state::States;
use crate::JobId;

/// Facts about the running attempt, and the signal to stop it.
///
/// Take it as the first argument of a task function:
///
/// ```
/// # #[derive(serde::Serialize, serde::Deserialize)] struct Report { day: u32 }
/// #[jobq::task(name = "reports.nightly", queue = "reports")]
/// async fn nightly(ctx: jobq::Context, job: Report) -> Result<(), jobq::TaskError> {
///     tokio::select! {
///         _ = ctx.cancelled() => Err(jobq::TaskError::msg("stopped")),
///         _ = async { /* the real work */ } => Ok(()),
///     }
/// }
/// ```
#[derive(Debug, Clone)]
pub struct Context {
    job_id: JobId,
    attempt: u32,
    task: &'static str,
    queue: Arc<str>,
    cancel: CancellationToken,
    states: States,
    /// Key and headers; `None` for the many jobs with neither, which then
    /// cost an attempt nothing.
    labels: Option<Arc<Labels>>,
}

/// A job's partition key and headers, as its attempt sees them.
#[derive(Debug, Default)]
pub(crate) struct Labels {
    pub(crate) key: Option<String>,
    pub(crate) headers: BTreeMap<String, String>,
}

impl Labels {
    /// A job's labels as stored (headers as the JSON text of an object);
    /// `None` when it has neither.
    pub(crate) fn of(key: Option<String>, headers: Option<&str>) -> Option<Arc<Labels>> {
        match (key, headers) {
            (None, None) => None,
            (key, headers) => Some(Arc::new(Labels {
                key,
                headers: crate::headers::parse(headers),
            })),
        }
    }
}

impl Context {
    pub(crate) fn new(
        job_id: JobId,
        attempt: u32,
        task: &'static str,
        queue: Arc<str>,
        cancel: CancellationToken,
        states: States,
        labels: Option<Arc<Labels>>,
    ) -> Self {
        Self {
            job_id,
            attempt,
            task,
            queue,
            cancel,
            states,
            labels,
        }
    }

    /// The job's id.
    pub fn job_id(&self) -> JobId {
        self.job_id
    }

    /// This attempt's number, starting at 1.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The task's name.
    pub fn task(&self) -> &'static str {
        self.task
    }

    /// The queue the job was enqueued on.
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// The error that puts this job back to wait for `delay` without
    /// using up an attempt: [`crate::TaskError::retry_after`], for handlers
    /// that read better as "snooze". Return it:
    ///
    /// ```
    /// # #[derive(serde::Serialize, serde::Deserialize)] struct Poll { order: u64 }
    /// # async fn shipped(_: u64) -> bool { true }
    /// use std::time::Duration;
    ///
    /// #[jobq::task]
    /// async fn wait_for_shipping(ctx: jobq::Context, job: Poll) -> Result<(), jobq::TaskError> {
    ///     if !shipped(job.order).await {
    ///         // Not yet: look again in a minute, as often as it takes.
    ///         return Err(ctx.snooze(Duration::from_secs(60)));
    ///     }
    ///     Ok(())
    /// }
    /// ```
    #[must_use = "return the error from the handler: `return Err(ctx.snooze(d))`"]
    pub fn snooze(&self, delay: std::time::Duration) -> crate::TaskError {
        crate::TaskError::retry_after(delay)
    }

    /// The job's partition key ([`crate::EnqueueOptions::key`]), if any.
    pub fn key(&self) -> Option<&str> {
        self.labels.as_deref()?.key.as_deref()
    }

    /// The value of the header `name` ([`crate::EnqueueOptions::header`]),
    /// if the job has it.
    ///
    /// ```
    /// # #[derive(serde::Serialize, serde::Deserialize)] struct Report { day: u32 }
    /// #[jobq::task]
    /// async fn nightly(ctx: jobq::Context, job: Report) -> Result<(), jobq::TaskError> {
    ///     let request = ctx.header("request-id").unwrap_or("none");
    ///     tracing::info!(request, "building the report");
    ///     Ok(())
    /// }
    /// ```
    pub fn header(&self, name: &str) -> Option<&str> {
        self.labels
            .as_deref()?
            .headers
            .get(name)
            .map(String::as_str)
    }

    /// Every header of the job, by name.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> {
        self.labels
            .iter()
            .flat_map(|l| l.headers.iter())
            .map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Resolves when the worker asks this attempt to stop: the job was
    /// cancelled with [`crate::cancel`], or the worker is shutting down.
    /// Work that stops early should return an error; the worker then
    /// records the job as cancelled or hands it back to the queue.
    pub async fn cancelled(&self) {
        self.cancel.cancelled().await
    }

    /// Whether [`Context::cancelled`] has resolved.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// The value of type `T` the worker was given with
    /// [`WorkerBuilder::state`](crate::WorkerBuilder::state), if any.
    ///
    /// Unlike a [`State<T>`](crate::State) argument, which the worker
    /// checks when it is built, this is looked up when called: use it for
    /// state a task can do without.
    ///
    /// ```
    /// # #[derive(serde::Serialize, serde::Deserialize)] struct Report { day: u32 }
    /// #[derive(Clone)]
    /// struct Metrics;
    ///
    /// #[jobq::task]
    /// async fn nightly(ctx: jobq::Context, job: Report) -> Result<(), jobq::TaskError> {
    ///     if let Some(_metrics) = ctx.state::<Metrics>() {
    ///         // count the report
    ///     }
    ///     Ok(())
    /// }
    /// ```
    pub fn state<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.states.get::<T>()
    }
}
