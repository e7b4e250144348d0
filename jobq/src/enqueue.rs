//! Enqueueing typed jobs on the caller's connection.

use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel_async::AsyncPgConnection;
use jobq_diesel::{NewJob, NewJobs};

use crate::{Error, JobId, Task};

/// Per-job overrides of a task's defaults.
///
/// ```
/// use std::time::Duration;
/// let options = jobq::EnqueueOptions::new()
///     .priority(9)
///     .delay(Duration::from_secs(60))
///     .queue("other")
///     .max_attempts(2)
///     .dedupe_key("user-42")
///     .key("customer-42")
///     .header("request-id", "7f3a");
/// # let _ = options;
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnqueueOptions {
    priority: Option<i16>,
    delay: Option<Duration>,
    run_at: Option<DateTime<Utc>>,
    queue: Option<String>,
    max_attempts: Option<u32>,
    dedupe_key: Option<String>,
    max_payload_size: Option<usize>,
    key: Option<String>,
    headers: Vec<(String, String)>,
}

impl EnqueueOptions {
    /// The default limit on a payload's JSON text, in bytes: 1 MiB.
    /// Job rows are read by every claim and kept until pruned; large data
    /// belongs in the application's tables, with its key in the payload.
    pub const DEFAULT_MAX_PAYLOAD_SIZE: usize = 1024 * 1024;

    /// No overrides: the task's defaults apply.
    pub fn new() -> Self {
        Self::default()
    }

    /// Priority of the job; higher runs first.
    #[must_use = "the options are returned, not changed in place"]
    pub fn priority(mut self, priority: i16) -> Self {
        self.priority = Some(priority);
        self
    }

    /// Run no earlier than this long after the enqueue (measured by the
    /// database's clock). A negative delay cannot be expressed
    /// ([`Duration`] is unsigned): to run a job now, leave the delay unset.
    /// Replaces an earlier [`Self::run_at`].
    ///
    /// A delayed job is `scheduled` until due, then runs within a few
    /// milliseconds of its time when a worker of its queue is idle.
    #[must_use = "the options are returned, not changed in place"]
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self.run_at = None;
        self
    }

    /// Run no earlier than this time, compared with the database's clock;
    /// a time already past means now. Replaces an earlier [`Self::delay`].
    ///
    /// ```
    /// let tomorrow = chrono::Utc::now() + chrono::Duration::days(1);
    /// let options = jobq::EnqueueOptions::new().run_at(tomorrow);
    /// # let _ = options;
    /// ```
    #[must_use = "the options are returned, not changed in place"]
    pub fn run_at(mut self, at: DateTime<Utc>) -> Self {
        self.run_at = Some(at);
        self.delay = None;
        self
    }

    /// Put the job on this queue instead of the task's.
    #[must_use = "the options are returned, not changed in place"]
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = Some(queue.into());
        self
    }

    /// Attempts in all, the first one included.
    #[must_use = "the options are returned, not changed in place"]
    pub fn max_attempts(mut self, max_attempts: u32) -> Self {
        self.max_attempts = Some(max_attempts);
        self
    }

    /// While a job of the same task with this key is scheduled, pending or
    /// running, enqueueing again inserts nothing and returns that job's id.
    #[must_use = "the options are returned, not changed in place"]
    pub fn dedupe_key(mut self, key: impl Into<String>) -> Self {
        self.dedupe_key = Some(key.into());
        self
    }

    /// The job's partition key (1 to 200 characters): a task's
    /// `key_concurrency` limits the attempts running at once per key
    /// across the fleet, and with `key_concurrency = 1` a key's jobs run
    /// one at a time in priority, then enqueue order. Shown in
    /// [`crate::JobInfo::key`] and [`crate::Context::key`]. A key holding
    /// U+0000, which PostgreSQL text cannot store, is refused at enqueue.
    #[must_use = "the options are returned, not changed in place"]
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Attaches a header: a string pair the handler reads with
    /// [`crate::Context::header`] (request ids, tenant, trace context).
    /// Setting a name twice keeps the later value. Names are 1 to 200
    /// characters; all headers together are at most 64 KiB of JSON; a name
    /// or value holding U+0000, which `jsonb` cannot store, is refused at
    /// enqueue (the error never shows values).
    ///
    /// ```
    /// let options = jobq::EnqueueOptions::new()
    ///     .header("request-id", "7f3a")
    ///     .header("tenant", "acme");
    /// # let _ = options;
    /// ```
    #[must_use = "the options are returned, not changed in place"]
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Refuse payloads whose JSON text is larger than this many bytes
    /// (default [`Self::DEFAULT_MAX_PAYLOAD_SIZE`]). The check happens
    /// before anything is sent to the database, and the error names the
    /// task, the size and the limit.
    #[must_use = "the options are returned, not changed in place"]
    pub fn max_payload_size(mut self, bytes: usize) -> Self {
        self.max_payload_size = Some(bytes);
        self
    }
}

/// The options of one enqueue call, checked and resolved against the task.
struct Resolved<'a> {
    queue: &'a str,
    priority: i16,
    max_attempts: i32,
    delay_ms: i64,
    run_at: Option<DateTime<Utc>>,
    dedupe_key: Option<&'a str>,
    max_payload_size: usize,
    key: Option<&'a str>,
    headers: Option<String>,
}

const MAX_NAME_LEN: usize = 200;

fn resolve<'a, T: Task>(options: &'a EnqueueOptions) -> Result<Resolved<'a>, Error> {
    let queue = options.queue.as_deref().unwrap_or(T::OPTIONS.queue_name());
    if queue.is_empty() {
        return Err(Error::invalid("queue", "the queue name is empty"));
    }
    if queue.chars().count() > MAX_NAME_LEN {
        return Err(Error::invalid(
            "queue",
            format!("the queue name is longer than {MAX_NAME_LEN} characters"),
        ));
    }
    let max_attempts = options.max_attempts.unwrap_or(T::OPTIONS.attempt_limit());
    if max_attempts == 0 {
        return Err(Error::invalid("max_attempts", "must be at least 1"));
    }
    let max_attempts = i32::try_from(max_attempts).map_err(|_| {
        Error::invalid(
            "max_attempts",
            format!("{max_attempts} is larger than {}", i32::MAX),
        )
    })?;
    let delay_ms = match options.delay {
        None => 0,
        Some(d) => i64::try_from(d.as_millis())
            .map_err(|_| Error::invalid("delay", format!("{d:?} is too long")))?,
    };
    if let Some(key) = &options.dedupe_key {
        if key.is_empty() {
            return Err(Error::invalid("dedupe_key", "the key is empty"));
        }
    }
    if let Some(key) = &options.key {
        crate::headers::check_key(key)?;
    }
    let headers = crate::headers::to_json(&options.headers)?;
    Ok(Resolved {
        key: options.key.as_deref(),
        headers,
        queue,
        priority: options.priority.unwrap_or(T::OPTIONS.default_priority()),
        max_attempts,
        delay_ms,
        run_at: options.run_at,
        dedupe_key: options.dedupe_key.as_deref(),
        max_payload_size: options
            .max_payload_size
            .unwrap_or(EnqueueOptions::DEFAULT_MAX_PAYLOAD_SIZE),
    })
}

/// The payload as JSON text, refused with the task named when JSON or
/// `jsonb` cannot hold it faithfully or it is over the size limit.
/// `which` says which payload of an `enqueue_many` call it is.
fn to_json<T: Task>(
    payload: &T::Payload,
    max_size: usize,
    which: Option<usize>,
) -> Result<String, Error> {
    let invalid = |reason: String| Error::InvalidPayload {
        task: T::NAME,
        reason: match which {
            Some(i) => format!("payload #{i} of the batch: {reason}"),
            None => reason,
        },
    };
    crate::payload_check::check(payload).map_err(|p| invalid(p.0))?;
    let json = serde_json::to_string(payload).map_err(|source| Error::Serialize {
        task: T::NAME,
        source,
    })?;
    if json.len() > max_size {
        return Err(invalid(format!(
            "its JSON text is {} bytes, over the limit of {max_size} bytes \
             (EnqueueOptions::max_payload_size)",
            json.len()
        )));
    }
    Ok(json)
}

/// Enqueues one job of task `T` with its default options.
///
/// The insert runs on `conn`: inside a transaction it commits or rolls back
/// with it, and workers are woken only at commit.
pub async fn enqueue<T: Task>(
    conn: &mut AsyncPgConnection,
    payload: &T::Payload,
) -> Result<JobId, Error> {
    enqueue_with::<T>(conn, payload, EnqueueOptions::new()).await
}

/// Enqueues one job of task `T` with per-job options.
pub async fn enqueue_with<T: Task>(
    conn: &mut AsyncPgConnection,
    payload: &T::Payload,
    options: EnqueueOptions,
) -> Result<JobId, Error> {
    let resolved = resolve::<T>(&options)?;
    let json = to_json::<T>(payload, resolved.max_payload_size, None)?;
    let job = NewJob {
        task: T::NAME,
        queue: resolved.queue,
        payload: &json,
        priority: resolved.priority,
        max_attempts: resolved.max_attempts,
        delay_ms: resolved.delay_ms,
        run_at: resolved.run_at,
        dedupe_key: resolved.dedupe_key,
        key: resolved.key,
        headers: resolved.headers.as_deref(),
    };
    let id = jobq_diesel::insert_job(conn, &job)
        .await
        .map_err(Error::db(format!("enqueueing a job of task {}", T::NAME)))?;
    Ok(JobId::from(id))
}

/// Enqueues one job of task `T` per payload, in one statement; returns the
/// ids in the order of `payloads`.
///
/// The payloads travel as one array parameter, so the count is not bound
/// by PostgreSQL's limit of 65,535 parameters per statement.
pub async fn enqueue_many<T: Task>(
    conn: &mut AsyncPgConnection,
    payloads: &[T::Payload],
) -> Result<Vec<JobId>, Error> {
    enqueue_many_with::<T>(conn, payloads, EnqueueOptions::new()).await
}

/// Enqueues one job of task `T` per payload with the same options, in one
/// statement. A dedupe key is refused: it could hold for one job only.
pub async fn enqueue_many_with<T: Task>(
    conn: &mut AsyncPgConnection,
    payloads: &[T::Payload],
    options: EnqueueOptions,
) -> Result<Vec<JobId>, Error> {
    if options.dedupe_key.is_some() {
        return Err(Error::invalid(
            "dedupe_key",
            "enqueue_many_with inserts many jobs; a dedupe key holds for one job, use enqueue_with",
        ));
    }
    let resolved = resolve::<T>(&options)?;
    let json = payloads
        .iter()
        .enumerate()
        .map(|(i, p)| to_json::<T>(p, resolved.max_payload_size, Some(i)))
        .collect::<Result<Vec<_>, _>>()?;
    let jobs = NewJobs {
        task: T::NAME,
        queue: resolved.queue,
        payloads: &json,
        priority: resolved.priority,
        max_attempts: resolved.max_attempts,
        delay_ms: resolved.delay_ms,
        run_at: resolved.run_at,
        key: resolved.key,
        headers: resolved.headers.as_deref(),
    };
    let ids = jobq_diesel::insert_jobs(conn, &jobs)
        .await
        .map_err(Error::db(format!(
            "enqueueing {} jobs of task {}",
            payloads.len(),
            T::NAME
        )))?;
    Ok(ids.into_iter().map(JobId::from).collect())
}
