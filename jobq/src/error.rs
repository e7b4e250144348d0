//! [`Error`], what jobq's API returns.

use jobq_diesel::{MigrateError, PoolError};

use crate::JobId;

/// Everything that can go wrong in jobq's API, with the context to act on it.
///
/// Messages never contain the password of a database URL.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A database statement failed.
    #[error("{context}")]
    Database {
        /// What jobq was doing.
        context: String,
        /// The database's error.
        #[source]
        source: diesel::result::Error,
    },
    /// No connection could be had from the pool (the database is down or
    /// unreachable, or the pool is exhausted).
    #[error("{context}: no database connection")]
    Pool {
        /// What jobq was doing.
        context: String,
        /// The pool's error.
        #[source]
        source: PoolError,
    },
    /// The database URL is missing or malformed.
    #[error("invalid database URL {url}: {reason}")]
    InvalidUrl {
        /// The URL with its password masked.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Connecting failed at start-up: the database stayed unreachable for
    /// the whole connect timeout, or refused the connection for a reason
    /// that waiting does not fix (authentication, unknown database).
    #[error("cannot connect to the database at {url} (gave up after {attempts} attempt(s) over {waited:?})")]
    Connect {
        /// The URL with its password masked.
        url: String,
        /// Connection attempts made.
        attempts: u32,
        /// Time spent trying.
        waited: std::time::Duration,
        /// The driver's error.
        #[source]
        source: PoolError,
    },
    /// Installing or upgrading the schema failed.
    #[error("jobq schema migration failed")]
    Migrate(#[from] MigrateError),
    /// Two tasks in this binary have the same name.
    #[error(
        "two tasks are named {name:?}: one at {first}, one at {second}; task names must be unique"
    )]
    DuplicateTask {
        /// The name.
        name: String,
        /// One definition site.
        first: String,
        /// The other definition site.
        second: String,
    },
    /// A payload could not be turned into JSON.
    #[error("task {task}: the payload does not serialize to JSON")]
    Serialize {
        /// The task.
        task: &'static str,
        /// serde's error.
        #[source]
        source: serde_json::Error,
    },
    /// A payload cannot be stored faithfully: a non-finite float (which
    /// serde_json would silently turn into `null`), the character U+0000
    /// (which `jsonb` rejects), or a size over the limit.
    #[error("task {task}: invalid payload: {reason}")]
    InvalidPayload {
        /// The task.
        task: &'static str,
        /// What is wrong, and where in the payload.
        reason: String,
    },
    /// A payload given as JSON for a task named at run time
    /// ([`enqueue_json`](crate::enqueue_json)) cannot be stored: the
    /// character U+0000, or a size over the limit.
    #[error("task {task:?}: invalid payload: {reason}")]
    InvalidJsonPayload {
        /// The task's name.
        task: String,
        /// What is wrong, and where in the payload.
        reason: String,
    },
    /// Enqueue options or worker settings are out of range.
    #[error("invalid {what}: {reason}")]
    InvalidOptions {
        /// Which option.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// The worker was configured with nothing to do.
    #[error("no task to run: {0}")]
    NoTasks(String),
    /// The worker's own task ended abnormally (a bug in jobq).
    #[error("the worker stopped abnormally: {0}")]
    WorkerPanicked(String),
    // Added with handler state and `migrate(false)` (issue 11).
    /// A task fn takes a [`State<T>`](crate::State) whose type the worker
    /// was not given with [`WorkerBuilder::state`](crate::WorkerBuilder::state).
    #[error(
        "task {task:?} (defined at {site}) takes a State<{type_name}>, but the worker \
         was given no {type_name}: add .state(value) to the worker's builder"
    )]
    MissingState {
        /// The task's name.
        task: String,
        /// Where the task is defined, `file:line:column`.
        site: String,
        /// The missing type, as `std::any::type_name` spells it.
        type_name: &'static str,
    },
    /// The worker was told not to migrate (`WorkerBuilder::migrate(false)`,
    /// `JOBQ_MIGRATE=off`) and the schema is missing or older than this
    /// binary needs.
    #[error(
        "{}, and this worker does not migrate (WorkerBuilder::migrate(false) or \
         JOBQ_MIGRATE=off): run jobq::migrate from the deploy step first, or start \
         the worker with JOBQ_MIGRATE=on",
        match found {
            None => "the jobq schema is not installed in this database".to_owned(),
            Some(found) => format!(
                "the jobq schema in this database is at version {found}, older than \
                 the {needed} this binary needs"
            ),
        }
    )]
    SchemaNotReady {
        /// The version found, `None` when the schema is not installed.
        found: Option<i64>,
        /// The version this binary needs.
        needed: i64,
    },
    // Added with `Context::complete_in` (issue 13).
    /// [`Context::complete_in`](crate::Context::complete_in): the attempt
    /// is no longer the job's live one. The job was rescued from this
    /// worker (it stopped heartbeating for longer than the lease) and may
    /// be running elsewhere, or this attempt has completed it already.
    /// Nothing changed; roll the transaction back so that its writes are
    /// not applied twice.
    #[error(
        "job {job}: attempt {attempt} is no longer the job's live attempt (the job was rescued \
         from this worker, or this attempt already completed it); roll back the transaction"
    )]
    Superseded {
        /// The job.
        job: JobId,
        /// The attempt, as [`Context::attempt`](crate::Context::attempt)
        /// counts it.
        attempt: u32,
    },
    /// [`Context::complete_in`](crate::Context::complete_in): the job's
    /// cancellation was requested while the attempt ran. Its row is marked
    /// cancelled in the transaction; roll the transaction back so that a
    /// cancelled job applies no effects (the worker then records the
    /// cancellation).
    #[error(
        "job {job} was cancelled while this attempt ran, so it cannot complete; roll back \
         the transaction"
    )]
    CancelRequested {
        /// The job.
        job: JobId,
    },
    /// What a handler gave [`Context::complete_in_with`](crate::Context::complete_in_with)
    /// is not the task's output type, or cannot be stored faithfully (a
    /// non-finite float, the character U+0000, a size over
    /// [`MAX_OUTPUT_SIZE`](crate::MAX_OUTPUT_SIZE)). A [`TaskError`](crate::TaskError)
    /// made from it with `?` is permanent: no retry would store it.
    #[error("task {task}: invalid output: {reason}")]
    InvalidOutput {
        /// The task.
        task: &'static str,
        /// What is wrong.
        reason: String,
    },
}

impl Error {
    /// Whether no retry of the attempt can help: the job should fail at
    /// once when a handler returns this error.
    pub(crate) fn is_permanent_for_a_task(&self) -> bool {
        matches!(self, Error::InvalidOutput { .. })
    }

    pub(crate) fn db(context: impl Into<String>) -> impl FnOnce(diesel::result::Error) -> Error {
        let context = context.into();
        move |source| Error::Database { context, source }
    }

    pub(crate) fn pool(context: impl Into<String>) -> impl FnOnce(PoolError) -> Error {
        let context = context.into();
        move |source| Error::Pool { context, source }
    }

    pub(crate) fn invalid(what: &'static str, reason: impl Into<String>) -> Error {
        Error::InvalidOptions {
            what,
            reason: reason.into(),
        }
    }
}

/// Lets jobq's error serve as the error type of the application's own
/// `conn.transaction(..)` around enqueue calls.
impl From<diesel::result::Error> for Error {
    fn from(source: diesel::result::Error) -> Self {
        Error::Database {
            context: "database statement failed".into(),
            source,
        }
    }
}
