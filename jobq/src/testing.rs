//! A kit for testing your own tasks (feature `testing`): a throwaway
//! database, running due jobs in-process, calling a handler directly, and
//! asserting what code under test enqueued.
//!
//! ```no_run
//! use jobq::testing::{assert_enqueued, drain, TestDatabase};
//! # #[derive(Debug, serde::Serialize, serde::Deserialize)] struct Welcome { user_id: i64 }
//! #[jobq::task]
//! async fn send_welcome(job: Welcome) -> Result<(), jobq::TaskError> {
//!     Ok(())
//! }
//!
//! # async fn test() -> Result<(), Box<dyn std::error::Error>> {
//! use diesel_async::AsyncConnection;
//! let db = TestDatabase::create().await?;
//! let mut conn = diesel_async::AsyncPgConnection::establish(db.url()).await?;
//! jobq::migrate(&mut conn).await?;
//!
//! send_welcome::enqueue(&mut conn, &Welcome { user_id: 7 }).await?; // the code under test
//! assert_enqueued::<send_welcome>(&mut conn, |job| job.user_id == 7).await;
//!
//! let ran = drain(&mut conn).await?;
//! assert_eq!(ran.len(), 1);
//! assert_eq!(ran[0].state, jobq::JobState::Completed);
//! # Ok(()) }
//! ```

use std::fmt;
use std::panic::AssertUnwindSafe;

use diesel_async::AsyncPgConnection;
use futures_util::FutureExt;
use jobq_diesel::{Outcome, OutcomeKind};
use tokio_util::sync::CancellationToken;

pub use jobq_testkit::{TestDatabase, TestkitError};

use crate::registry::Registry;
use crate::retry::backoff;
use crate::state::States;
use crate::worker::message;
use crate::{Context, Error, JobId, JobState, Task, TaskError};

/// Jobs one [`drain`] call runs at most before it gives up: a task that
/// enqueues a job of its own every time would otherwise never let it end.
pub const DRAIN_LIMIT: usize = 10_000;

/// One attempt [`drain`] ran, and how its job stood afterwards.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Drained {
    /// The job.
    pub id: JobId,
    /// Its task's name.
    pub task: String,
    /// Its state after the attempt: `Completed`, `Failed` or `Cancelled`,
    /// or `Scheduled` when it failed and waits for its retry (which is not
    /// due yet, so the drain did not run it again).
    pub state: JobState,
    /// The attempt's error, if it failed.
    pub error: Option<String>,
}

/// Runs every due job of the tasks linked into this binary, one at a
/// time, in-process on `conn`, until none is due; returns each attempt it
/// ran, in order. Jobs that handlers enqueue are run too, when due. A
/// failed attempt with attempts left waits for its backoff as usual and
/// is not run again. Tasks taking a [`State<T>`](crate::State) get none
/// and fail: use [`Drain::state`] for those.
///
/// Nothing waits: the drain ends as soon as no job is due. With a pool,
/// pass a connection of it (`&mut *pool.get().await?`).
pub async fn drain(conn: &mut AsyncPgConnection) -> Result<Vec<Drained>, Error> {
    Drain::new().run(conn).await
}

/// A [`drain`] with values for the tasks' `State<T>` arguments.
///
/// ```no_run
/// # async fn f(conn: &mut diesel_async::AsyncPgConnection) -> Result<(), jobq::Error> {
/// #[derive(Clone)]
/// struct Mailer;
/// let ran = jobq::testing::Drain::new().state(Mailer).run(conn).await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Default)]
#[must_use = "a drain does nothing until it is run"]
pub struct Drain {
    states: States,
}

impl Drain {
    /// A drain without state values.
    pub fn new() -> Self {
        Self::default()
    }

    /// Gives handlers `value` as their `State<T>` argument (and through
    /// [`Context::state`]).
    pub fn state<T: Clone + Send + Sync + 'static>(mut self, value: T) -> Self {
        self.states.insert(value);
        self
    }

    /// Runs the due jobs, as [`drain`] describes.
    pub async fn run(self, conn: &mut AsyncPgConnection) -> Result<Vec<Drained>, Error> {
        let registry = Registry::from_inventory()?;
        let tasks: Vec<String> = registry.names().into_iter().map(str::to_owned).collect();
        let mut ran = Vec::new();
        while let Some(job) = jobq_diesel::start_next_due(conn, &tasks)
            .await
            .map_err(Error::db("drain: starting the next due job"))?
        {
            if ran.len() == DRAIN_LIMIT {
                return Err(Error::invalid(
                    "drain",
                    format!(
                        "more than {DRAIN_LIMIT} jobs ran and more are due: does a task \
                         enqueue a job of its own every time?"
                    ),
                ));
            }
            let Some(descriptor) = registry.get(&job.task) else {
                // The statement only starts jobs of these tasks.
                return Err(Error::invalid(
                    "drain",
                    format!("started a job of unknown task {:?}", job.task),
                ));
            };
            let id = JobId::from(job.id);
            let number = u32::try_from(job.number).unwrap_or(1).max(1);
            let cancel = CancellationToken::new();
            if job.cancel_requested {
                cancel.cancel();
            }
            let ctx = Context::new(
                id,
                number,
                descriptor,
                job.queue.as_str().into(),
                cancel,
                self.states.clone(),
                crate::context::Labels::of(job.key, job.headers.as_deref()),
            )
            .fenced(crate::complete_in::Fence::new(job.attempt));
            let (kind, error, output) =
                run_attempt(descriptor, ctx, &job.payload, number, descriptor.options).await;
            let outcome = Outcome {
                id: job.id,
                attempt: job.attempt,
                kind,
                message: error.as_deref().map(message::stored),
                output,
            };
            jobq_diesel::write_outcomes(conn, std::slice::from_ref(&outcome), &[])
                .await
                .map_err(Error::db(format!("drain: writing the outcome of job {id}")))?;
            let state = crate::job(conn, id)
                .await?
                .map_or(JobState::Failed, |info| info.state);
            ran.push(Drained {
                id,
                task: job.task,
                state,
                error,
            });
        }
        Ok(ran)
    }
}

/// One attempt, as a worker would run it: the payload decoded, the
/// handler called under the task's time limit with panics caught.
async fn run_attempt(
    descriptor: &crate::registry::TaskDescriptor,
    ctx: Context,
    payload: &str,
    attempt: u32,
    options: crate::TaskOptions,
) -> (OutcomeKind, Option<String>, Option<String>) {
    let decoded = std::panic::catch_unwind(AssertUnwindSafe(|| (descriptor.handler)(ctx, payload)));
    let future = match decoded {
        Ok(Ok(future)) => future,
        Ok(Err(e)) => {
            let message = format!(
                "task {}: the payload does not deserialize into the task's payload type: {e}",
                descriptor.name
            );
            return (OutcomeKind::Failed, Some(message), None);
        }
        Err(panic) => {
            let message = format!(
                "task {}: decoding the payload panicked: {}",
                descriptor.name,
                message::panic_message(&*panic)
            );
            return (OutcomeKind::Failed, Some(message), None);
        }
    };
    let limit = options.time_limit();
    let guarded = async move {
        match limit {
            Some(limit) => tokio::time::timeout(limit, future).await.map_err(|_| limit),
            None => Ok(future.await),
        }
    };
    let retry = |message: String| {
        let delay = backoff(options.retry_base(), attempt);
        let delay_ms = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
        (OutcomeKind::Retry { delay_ms }, Some(message), None)
    };
    match AssertUnwindSafe(guarded).catch_unwind().await {
        Ok(Ok(Ok(output))) => (OutcomeKind::Completed, None, output),
        Ok(Ok(Err(e))) => (
            e.outcome_kind(backoff(options.retry_base(), attempt)),
            Some(message::text_of(|| e.to_string())),
            None,
        ),
        Ok(Err(limit)) => retry(format!("attempt timed out after {limit:?}")),
        Err(panic) => retry(format!(
            "attempt panicked: {}",
            message::panic_message(&*panic)
        )),
    }
}

/// The facts a handler run by [`run_inline_with`] sees through its
/// [`Context`]: job id 1, attempt 1 and no state values unless set.
#[derive(Debug, Clone)]
#[must_use = "the context is returned, not changed in place"]
pub struct TestContext {
    job_id: JobId,
    attempt: u32,
    queue: Option<String>,
    cancelled: bool,
    states: States,
}

impl Default for TestContext {
    fn default() -> Self {
        Self {
            job_id: JobId::from(1),
            attempt: 1,
            queue: None,
            cancelled: false,
            states: States::default(),
        }
    }
}

impl TestContext {
    /// Job id 1, attempt 1, the task's queue, not cancelled, no state.
    pub fn new() -> Self {
        Self::default()
    }

    /// The job id the handler sees.
    pub fn job_id(mut self, id: JobId) -> Self {
        self.job_id = id;
        self
    }

    /// The attempt number the handler sees (1 is the first).
    pub fn attempt(mut self, attempt: u32) -> Self {
        self.attempt = attempt;
        self
    }

    /// The queue the handler sees, instead of the task's.
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = Some(queue.into());
        self
    }

    /// Starts the handler with [`Context::cancelled`] already resolved.
    pub fn cancelled(mut self) -> Self {
        self.cancelled = true;
        self
    }

    /// A `State<T>` value for the handler.
    pub fn state<T: Clone + Send + Sync + 'static>(mut self, value: T) -> Self {
        self.states.insert(value);
        self
    }
}

/// Calls the handler of task `T` on `payload` directly, without a
/// database, with a [`TestContext::new`] context, and returns what it
/// returned. The payload goes through JSON first, as it would through the
/// job table; a handler's panic propagates to the test. There is no job
/// row: [`Context::complete_in`](crate::Context::complete_in) checks its
/// output and changes nothing, so the handler's transaction commits its
/// own writes alone.
///
/// ```no_run
/// # #[derive(serde::Serialize, serde::Deserialize)] struct Add { a: i64, b: i64 }
/// #[jobq::task]
/// async fn add(job: Add) -> Result<i64, jobq::TaskError> {
///     Ok(job.a + job.b)
/// }
///
/// # async fn test() {
/// let sum = jobq::testing::run_inline::<add>(&Add { a: 2, b: 3 }).await.unwrap();
/// assert_eq!(sum, 5);
/// # }
/// ```
pub async fn run_inline<T: Task>(payload: &T::Payload) -> Result<T::Output, TaskError> {
    run_inline_with::<T>(payload, TestContext::new()).await
}

/// [`run_inline`] with the job id, attempt, queue, cancellation and state
/// values of `context`.
pub async fn run_inline_with<T: Task>(
    payload: &T::Payload,
    context: TestContext,
) -> Result<T::Output, TaskError> {
    let registry = Registry::from_inventory()
        .map_err(|e| TaskError::permanent(anyhow::anyhow!("run_inline: {e}")))?;
    let descriptor = registry.get(T::NAME).ok_or_else(|| {
        TaskError::permanent(anyhow::anyhow!(
            "run_inline: task {} is not registered in this binary",
            T::NAME
        ))
    })?;
    let json = serde_json::to_string(payload).map_err(|e| {
        TaskError::permanent(anyhow::anyhow!(
            "run_inline: the payload of task {} does not serialize: {e}",
            T::NAME
        ))
    })?;
    let cancel = CancellationToken::new();
    if context.cancelled {
        cancel.cancel();
    }
    let queue = context
        .queue
        .unwrap_or_else(|| T::OPTIONS.queue_name().to_owned());
    let ctx = Context::new(
        context.job_id,
        context.attempt,
        descriptor,
        queue.as_str().into(),
        cancel,
        context.states,
        None,
    );
    let future = (descriptor.handler)(ctx, &json).map_err(|e| {
        TaskError::permanent(anyhow::anyhow!(
            "task {}: the payload does not deserialize into the task's payload type: {e}",
            T::NAME
        ))
    })?;
    let output = future.await?;
    serde_json::from_str(output.as_deref().unwrap_or("null")).map_err(|e| {
        TaskError::permanent(anyhow::anyhow!(
            "task {}: the output does not decode back into its type: {e}",
            T::NAME
        ))
    })
}

/// The payloads of every job of task `T` in the database, oldest first,
/// whatever their state: what the code under test enqueued (and, after a
/// [`drain`], what ran).
pub async fn enqueued<T: Task>(conn: &mut AsyncPgConnection) -> Result<Vec<T::Payload>, Error> {
    let payloads = jobq_diesel::payloads_of(conn, T::NAME)
        .await
        .map_err(Error::db(format!("listing the jobs of task {}", T::NAME)))?;
    payloads
        .iter()
        .map(|p| {
            serde_json::from_str(p).map_err(|e| {
                Error::invalid(
                    "enqueued payload",
                    format!(
                        "a job of task {} has a payload that does not decode into its type: {e}",
                        T::NAME
                    ),
                )
            })
        })
        .collect()
}

/// Asserts that a job of task `T` whose payload satisfies `matches` is in
/// the database, and returns the first such payload. Panics otherwise
/// (it is a test assertion), listing the payloads of `T` that were
/// enqueued instead, as JSON; also panics if they cannot be read.
///
/// ```no_run
/// # #[derive(Debug, serde::Serialize, serde::Deserialize)] struct Welcome { user_id: i64 }
/// # #[jobq::task] async fn send_welcome(job: Welcome) -> Result<(), jobq::TaskError> { Ok(()) }
/// # async fn test(conn: &mut diesel_async::AsyncPgConnection) {
/// jobq::testing::assert_enqueued::<send_welcome>(conn, |job| job.user_id == 7).await;
/// # }
/// ```
pub async fn assert_enqueued<T: Task>(
    conn: &mut AsyncPgConnection,
    matches: impl Fn(&T::Payload) -> bool,
) -> T::Payload {
    let payloads = match enqueued::<T>(conn).await {
        Ok(payloads) => payloads,
        Err(e) => panic!("assert_enqueued::<{}>: {}", T::NAME, Listing(&e)),
    };
    let mut seen = Vec::with_capacity(payloads.len());
    for payload in payloads {
        if matches(&payload) {
            return payload;
        }
        seen.push(serde_json::to_string(&payload).unwrap_or_else(|e| format!("<{e}>")));
    }
    if seen.is_empty() {
        panic!(
            "assert_enqueued::<{}>: no job matches; no job of task {} was enqueued",
            T::NAME,
            T::NAME
        );
    }
    panic!(
        "assert_enqueued::<{}>: no job matches; {} job(s) of task {} were enqueued instead:\n  {}",
        T::NAME,
        seen.len(),
        T::NAME,
        seen.join("\n  ")
    );
}

/// An error with its sources, for a panic message.
struct Listing<'a>(&'a Error);

impl fmt::Display for Listing<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = std::error::Error::source(self.0);
        while let Some(e) = source {
            write!(f, ": {e}")?;
            source = e.source();
        }
        Ok(())
    }
}
