//! [`Context`], facts about the running attempt that a task function may
//! take besides its payload.

use std::any::TypeId;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use diesel_async::AsyncPgConnection;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::complete_in::{Completing, Fence};
use crate::registry::TaskDescriptor;
use crate::state::States;
use crate::{Error, JobId};

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
    task: &'static TaskDescriptor,
    queue: Arc<str>,
    cancel: CancellationToken,
    states: States,
    /// Key and headers; `None` for the many jobs with neither, which then
    /// cost an attempt nothing.
    labels: Option<Arc<Labels>>,
    /// The live attempt, for [`Context::complete_in`]; `None` where no job
    /// row exists ([`crate::testing::run_inline`]).
    fence: Option<Fence>,
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
        task: &'static TaskDescriptor,
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
            fence: None,
        }
    }

    /// This context with the job row's attempt, which
    /// [`Context::complete_in`] fences on.
    pub(crate) fn fenced(mut self, fence: Fence) -> Self {
        self.fence = Some(fence);
        self
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
        self.task.name
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

    /// Marks the job completed on `conn`, as part of the transaction open
    /// on it: the handler's own writes and the job's completion commit
    /// together, or not at all. For tasks that return `()`; tasks with an
    /// output use [`Context::complete_in_with`].
    ///
    /// The completion is fenced by the attempt, like the worker's own: it
    /// changes the job only while this attempt is the job's live one. When
    /// the job was rescued from this worker meanwhile (the worker stopped
    /// heartbeating for longer than the lease, and the job may be running
    /// elsewhere), it changes nothing and returns [`Error::Superseded`];
    /// when the job's cancellation was requested, it returns
    /// [`Error::CancelRequested`]. Return the error from the transaction
    /// (`?` does) so that it rolls back: an attempt that lost its job never
    /// applies its effects. Once the transaction commits, the job is
    /// completed; the worker records nothing more for the attempt, and an
    /// error the handler returns afterwards is only logged. Call it once
    /// per attempt, last in the transaction: it holds the job's row lock
    /// until the commit.
    ///
    /// `conn` must be on the database that holds jobq's tables. Outside a
    /// transaction, the job is completed at once.
    ///
    /// ```no_run
    /// # #[derive(serde::Serialize, serde::Deserialize)] struct Charge { order: i64, cents: i64 }
    /// use diesel_async::{AsyncConnection, RunQueryDsl};
    /// use jobq::{Context, Pool, State, TaskError};
    ///
    /// #[jobq::task]
    /// async fn charge(ctx: Context, State(pool): State<Pool>, job: Charge) -> Result<(), TaskError> {
    ///     let mut conn = pool.get().await?;
    ///     conn.transaction::<_, TaskError, _>(async |conn| {
    ///         diesel::sql_query("INSERT INTO payments (order_id, cents) VALUES ($1, $2)")
    ///             .bind::<diesel::sql_types::BigInt, _>(job.order)
    ///             .bind::<diesel::sql_types::BigInt, _>(job.cents)
    ///             .execute(conn)
    ///             .await?;
    ///         // Commits with the payment, or not at all.
    ///         ctx.complete_in(conn).await?;
    ///         Ok(())
    ///     })
    ///     .await
    /// }
    /// ```
    pub async fn complete_in(&self, conn: &mut AsyncPgConnection) -> Result<(), Error> {
        self.complete_in_with(conn, &()).await
    }

    /// [`Context::complete_in`] for a task with an output: `output` is
    /// stored with the job in the same statement, as the worker would
    /// store the handler's return value. It must be of the task's output
    /// type (the `T` of its `Result<T, TaskError>`) and storable, or
    /// nothing changes and [`Error::InvalidOutput`] says why. Once the
    /// completion commits, the output stored is this one: the value the
    /// handler returns afterwards is not stored, so return the same.
    ///
    /// ```no_run
    /// # #[derive(serde::Serialize, serde::Deserialize)] struct Resize { w: u32 }
    /// use jobq::{Context, Pool, State, TaskError};
    /// use diesel_async::AsyncConnection;
    ///
    /// #[jobq::task]
    /// async fn resize(ctx: Context, State(pool): State<Pool>, job: Resize) -> Result<String, TaskError> {
    ///     let path = format!("thumbs/{}.png", job.w);
    ///     let mut conn = pool.get().await?;
    ///     conn.transaction::<_, TaskError, _>(async |conn| {
    ///         // ... record the thumbnail in the application's tables ...
    ///         ctx.complete_in_with(conn, &path).await?;
    ///         Ok(())
    ///     })
    ///     .await?;
    ///     Ok(path)
    /// }
    /// ```
    pub fn complete_in_with<'a, O: Serialize + 'static>(
        &'a self,
        conn: &'a mut AsyncPgConnection,
        output: &O,
    ) -> impl Future<Output = Result<(), Error>> + Send + 'a {
        // Checked and turned into JSON now, so that the future holds no
        // reference to `output` (which need not be `Sync`).
        let stored = self.output_to_store(output);
        async move {
            let stored = stored?;
            let attempt = Completing {
                job: self.job_id,
                number: self.attempt,
                task: self.task.name,
                fence: self.fence.as_ref(),
            };
            crate::complete_in::complete(conn, attempt, stored).await
        }
    }

    /// `output` as the job row would store it, if it is of the task's
    /// output type and storable.
    fn output_to_store<O: Serialize + 'static>(&self, output: &O) -> Result<Option<String>, Error> {
        let invalid = |reason: String| Error::InvalidOutput {
            task: self.task.name,
            reason,
        };
        if TypeId::of::<O>() != (self.task.output_type)() {
            let returns = (self.task.output_type_name)();
            return Err(invalid(if TypeId::of::<O>() == TypeId::of::<()>() {
                format!("the task returns {returns}: give it to complete_in_with")
            } else {
                format!(
                    "the task returns {returns}, not the {} given to complete_in_with",
                    std::any::type_name::<O>()
                )
            }));
        }
        crate::output::stored_json(output).map_err(invalid)
    }
}
