//! Enqueueing typed jobs on the caller's connection.

use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel_async::AsyncPgConnection;
use jobq_diesel::{KeyHold, NewJob, NewJobs};

use crate::{Error, JobId, Task, TaskOptions};

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
    unique_key: Option<String>,
    uniqueness: Option<Uniqueness>,
    key: Option<String>,
    headers: Vec<(String, String)>,
}

/// How long a unique key stays taken (see [`EnqueueOptions::unique_key`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Uniqueness {
    For(Duration),
    Forever,
}

impl EnqueueOptions {
    /// The default limit on a payload's JSON text, in bytes: 1 MiB.
    /// Job rows are read by every claim and kept until pruned; large data
    /// belongs in the application's tables, with its key in the payload.
    pub const DEFAULT_MAX_PAYLOAD_SIZE: usize = 1024 * 1024;

    /// The longest [unique key](Self::unique_key), in bytes of UTF-8. Keys
    /// are indexed, and PostgreSQL limits the size of an index entry.
    pub const MAX_UNIQUE_KEY_BYTES: usize = 1024;

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

    /// Submits the job idempotently under `key`, unique per task: while a
    /// job of the same task holds the key, submitting again creates
    /// nothing and returns that job (use [`crate::enqueue_unique`], or a
    /// task's `enqueue_unique`, to learn whether the job was created).
    ///
    /// By default the job holds its key while it is scheduled, pending or
    /// running, like [`Self::dedupe_key`]; [`Self::unique_for`] and
    /// [`Self::unique_forever`] hold it past the job's end. The scope is
    /// the holding job's: it is fixed when the job is created.
    ///
    /// A key is any text of 1 to [`Self::MAX_UNIQUE_KEY_BYTES`] bytes
    /// without the character U+0000 (which PostgreSQL's `text` cannot
    /// hold); others are refused before anything is sent to the database.
    /// Hash longer keys yourself if you need them.
    ///
    /// ```
    /// use std::time::Duration;
    /// let options = jobq::EnqueueOptions::new()
    ///     .unique_key("client-7/req-123")
    ///     .unique_for(Duration::from_secs(86_400));
    /// # let _ = options;
    /// ```
    #[must_use = "the options are returned, not changed in place"]
    pub fn unique_key(mut self, key: impl Into<String>) -> Self {
        self.unique_key = Some(key.into());
        self
    }

    /// Holds the [unique key](Self::unique_key) for this long after the
    /// enqueue, whether the job has finished or not (and while it is
    /// still active, in any case): a client retrying within the window
    /// gets the same job, even a completed or failed one. Pruning keeps
    /// the job until the window has passed. Replaces an earlier
    /// [`Self::unique_forever`].
    #[must_use = "the options are returned, not changed in place"]
    pub fn unique_for(mut self, window: Duration) -> Self {
        self.uniqueness = Some(Uniqueness::For(window));
        self
    }

    /// Holds the [unique key](Self::unique_key) for good: the key names
    /// this one job from now on, and pruning never deletes it. Replaces
    /// an earlier [`Self::unique_for`].
    #[must_use = "the options are returned, not changed in place"]
    pub fn unique_forever(mut self) -> Self {
        self.uniqueness = Some(Uniqueness::Forever);
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
    unique: Option<(&'a str, KeyHold)>,
    key: Option<&'a str>,
    headers: Option<String>,
    follow_up: Option<String>,
}

impl Resolved<'_> {
    /// The row to insert for `task` with the payload's JSON text. (A
    /// unique key and a dedupe key never come together: `resolve` refuses
    /// that.)
    fn new_job<'b>(&'b self, task: &'b str, payload: &'b str) -> NewJob<'b> {
        NewJob {
            task,
            queue: self.queue,
            payload,
            priority: self.priority,
            max_attempts: self.max_attempts,
            delay_ms: self.delay_ms,
            run_at: self.run_at,
            dedupe_key: self.dedupe_key,
            key: self.key,
            headers: self.headers.as_deref(),
            follow_up: self.follow_up.as_deref(),
        }
    }
}

const MAX_NAME_LEN: usize = 200;

/// The longest `unique_for` window: PostgreSQL's timestamps end in the
/// year 294276, but nobody needs more than this, and `unique_forever`
/// says it better.
const MAX_UNIQUE_FOR: Duration = Duration::from_secs(1000 * 366 * 24 * 60 * 60);

fn resolve<'a, T: Task>(options: &'a EnqueueOptions) -> Result<Resolved<'a>, Error> {
    resolve_with(options, &T::OPTIONS)
}

/// [`resolve`] against a task's defaults given as a value, for jobs
/// enqueued by task name (see [`crate::enqueue_json`]).
fn resolve_with<'a>(
    options: &'a EnqueueOptions,
    defaults: &TaskOptions,
) -> Result<Resolved<'a>, Error> {
    let queue = options.queue.as_deref().unwrap_or(defaults.queue_name());
    if queue.is_empty() {
        return Err(Error::invalid("queue", "the queue name is empty"));
    }
    if queue.chars().count() > MAX_NAME_LEN {
        return Err(Error::invalid(
            "queue",
            format!("the queue name is longer than {MAX_NAME_LEN} characters"),
        ));
    }
    if queue.contains('\0') {
        return Err(Error::invalid(
            "queue",
            "the queue name contains the character U+0000, which PostgreSQL text cannot store",
        ));
    }
    let max_attempts = options.max_attempts.unwrap_or(defaults.attempt_limit());
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
        if key.contains('\0') {
            return Err(Error::invalid(
                "dedupe_key",
                "the key contains the character U+0000, which PostgreSQL text cannot store",
            ));
        }
    }
    let unique = match (&options.unique_key, options.uniqueness) {
        (None, None) => None,
        (None, Some(_)) => {
            return Err(Error::invalid(
                "unique_key",
                "unique_for or unique_forever was given without a unique_key",
            ))
        }
        (Some(key), scope) => {
            check_unique_key(key)?;
            if options.dedupe_key.is_some() {
                return Err(Error::invalid(
                    "unique_key",
                    "a job takes a unique_key or a dedupe_key, not both",
                ));
            }
            let hold = match scope {
                None => KeyHold::WhileActive,
                Some(Uniqueness::Forever) => KeyHold::Forever,
                Some(Uniqueness::For(d)) if d > MAX_UNIQUE_FOR => {
                    return Err(Error::invalid(
                        "unique_for",
                        format!(
                            "{d:?} is longer than 1,000 years (timestamps cannot hold it); \
                             use unique_forever"
                        ),
                    ))
                }
                Some(Uniqueness::For(d)) => {
                    // At most 1,000 years: fits.
                    KeyHold::ForMillis(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
                }
            };
            Some((key.as_str(), hold))
        }
    };
    if let Some(key) = &options.key {
        crate::headers::check_key(key)?;
    }
    let headers = crate::headers::to_json(&crate::trace_context::with_current(&options.headers))?;
    Ok(Resolved {
        follow_up: defaults.follow_up().map(crate::FollowUp::column_text),
        unique,
        key: options.key.as_deref(),
        headers,
        queue,
        priority: options.priority.unwrap_or(defaults.default_priority()),
        max_attempts,
        delay_ms,
        run_at: options.run_at,
        dedupe_key: options.dedupe_key.as_deref(),
        max_payload_size: options
            .max_payload_size
            .unwrap_or(EnqueueOptions::DEFAULT_MAX_PAYLOAD_SIZE),
    })
}

fn check_unique_key(key: &str) -> Result<(), Error> {
    if key.is_empty() {
        return Err(Error::invalid("unique_key", "the key is empty"));
    }
    if key.len() > EnqueueOptions::MAX_UNIQUE_KEY_BYTES {
        return Err(Error::invalid(
            "unique_key",
            format!(
                "the key is {} bytes long, over the limit of {} bytes \
                 (EnqueueOptions::MAX_UNIQUE_KEY_BYTES); hash longer keys",
                key.len(),
                EnqueueOptions::MAX_UNIQUE_KEY_BYTES
            ),
        ));
    }
    if let Some(at) = key.find('\0') {
        return Err(Error::invalid(
            "unique_key",
            format!(
                "the key contains the character U+0000 (at byte {at}), \
                 which PostgreSQL's text cannot store"
            ),
        ));
    }
    Ok(())
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
    if options.unique_key.is_some() {
        return enqueue_unique::<T>(conn, payload, options)
            .await
            .map(|e| e.id);
    }
    let resolved = resolve::<T>(&options)?;
    let json = to_json::<T>(payload, resolved.max_payload_size, None)?;
    let job = resolved.new_job(T::NAME, &json);
    let id = jobq_diesel::insert_job(conn, &job)
        .await
        .map_err(Error::db(format!("enqueueing a job of task {}", T::NAME)))?;
    crate::metrics::enqueued(T::NAME, resolved.queue, 1);
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
    if options.unique_key.is_some() || options.uniqueness.is_some() {
        return Err(Error::invalid(
            "unique_key",
            "enqueue_many_with inserts many jobs; a unique key holds for one job, use enqueue_unique",
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
        follow_up: resolved.follow_up.as_deref(),
    };
    let ids = jobq_diesel::insert_jobs(conn, &jobs)
        .await
        .map_err(Error::db(format!(
            "enqueueing {} jobs of task {}",
            payloads.len(),
            T::NAME
        )))?;
    crate::metrics::enqueued(T::NAME, resolved.queue, ids.len());
    Ok(ids.into_iter().map(JobId::from).collect())
}

/// Enqueues one job of the task named `task` with a JSON payload: for
/// tools that have no task types, such as the `jobq` command-line tool.
///
/// The job is checked like any other: the payload must hold no U+0000 and
/// fit [`EnqueueOptions::max_payload_size`], the names fit their limits
/// (1 to 200 characters, no U+0000). Options the call leaves unset take the
/// defaults of [`TaskOptions`] (queue `default`, 20 attempts, priority 0),
/// not those of the task's `#[jobq::task]` attribute, which this function
/// cannot see. Nothing checks that a worker knows the task: a worker fails
/// a job of a task it does not have only once it is claimed, and a worker
/// only claims tasks it has.
///
/// ```no_run
/// # async fn f(conn: &mut diesel_async::AsyncPgConnection) -> Result<(), jobq::Error> {
/// let payload = serde_json::json!({ "user_id": 7 });
/// let id = jobq::enqueue_json(conn, "send_welcome", &payload, jobq::EnqueueOptions::new()).await?;
/// # let _ = id; Ok(()) }
/// ```
pub async fn enqueue_json(
    conn: &mut AsyncPgConnection,
    task: &str,
    payload: &serde_json::Value,
    options: EnqueueOptions,
) -> Result<JobId, Error> {
    if task.is_empty() || task.chars().count() > MAX_NAME_LEN || task.contains('\0') {
        return Err(Error::invalid(
            "task",
            format!(
                "a task name has 1 to {MAX_NAME_LEN} characters and no U+0000 \
                 (got {} characters)",
                task.chars().count()
            ),
        ));
    }
    let defaults = TaskOptions::new();
    let resolved = resolve_with(&options, &defaults)?;
    let invalid = |reason: String| Error::InvalidJsonPayload {
        task: task.to_owned(),
        reason,
    };
    crate::payload_check::check(payload).map_err(|p| invalid(p.0))?;
    let json = serde_json::to_string(payload).map_err(|e| invalid(e.to_string()))?;
    if json.len() > resolved.max_payload_size {
        return Err(invalid(format!(
            "its JSON text is {} bytes, over the limit of {} bytes \
             (EnqueueOptions::max_payload_size)",
            json.len(),
            resolved.max_payload_size
        )));
    }
    let job = resolved.new_job(task, &json);
    let context = || format!("enqueueing a job of task {task:?}");
    let (id, created) = match resolved.unique {
        Some((key, hold)) => {
            let inserted = jobq_diesel::insert_unique_job(conn, &job, key, hold)
                .await
                .map_err(Error::db(context()))?;
            (inserted.job_id, inserted.created)
        }
        None => {
            let id = jobq_diesel::insert_job(conn, &job)
                .await
                .map_err(Error::db(context()))?;
            (id, true)
        }
    };
    crate::metrics::enqueued(task, resolved.queue, usize::from(created));
    Ok(JobId::from(id))
}

/// What [`enqueue_unique`] did: the id of the job holding the key, and
/// whether this call created it (an HTTP handler answers 201 or 200).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
#[must_use]
pub struct Enqueued {
    /// The job holding the key.
    pub id: JobId,
    /// Whether this call created the job; `false` when a job of the same
    /// task already held the key.
    pub created: bool,
}

/// Submits one job of task `T` idempotently, under the
/// [unique key](EnqueueOptions::unique_key) of `options` (which must have
/// one): creates the job unless a job of `T` holds the key, and returns
/// the id of the job holding it either way.
///
/// Concurrent submissions of one key, in transactions at READ COMMITTED
/// or REPEATABLE READ, end with one job: each waits for the other's
/// transaction on the key, and all get the same id without error. The
/// ids of keyed jobs are derived from the task, the key and how many jobs
/// held the key before (a large number, above those of other jobs).
///
/// ```no_run
/// # #[derive(serde::Serialize, serde::Deserialize)] struct Charge { cents: u64 }
/// #[jobq::task]
/// async fn charge(job: Charge) -> Result<(), jobq::TaskError> {
///     Ok(())
/// }
///
/// # async fn f(conn: &mut diesel_async::AsyncPgConnection) -> Result<(), jobq::Error> {
/// let options = jobq::EnqueueOptions::new().unique_key("client-7/req-123");
/// let job = charge::enqueue_unique(conn, &Charge { cents: 500 }, options).await?;
/// let status = if job.created { 201 } else { 200 };
/// # let _ = status; Ok(()) }
/// ```
pub async fn enqueue_unique<T: Task>(
    conn: &mut AsyncPgConnection,
    payload: &T::Payload,
    options: EnqueueOptions,
) -> Result<Enqueued, Error> {
    let resolved = resolve::<T>(&options)?;
    let Some((key, hold)) = resolved.unique else {
        return Err(Error::invalid(
            "unique_key",
            "enqueue_unique needs EnqueueOptions::unique_key",
        ));
    };
    let json = to_json::<T>(payload, resolved.max_payload_size, None)?;
    let job = resolved.new_job(T::NAME, &json);
    let inserted = jobq_diesel::insert_unique_job(conn, &job, key, hold)
        .await
        .map_err(Error::db(format!(
            "enqueueing a job of task {} under a unique key",
            T::NAME
        )))?;
    crate::metrics::enqueued(T::NAME, resolved.queue, usize::from(inserted.created));
    Ok(Enqueued {
        id: JobId::from(inserted.job_id),
        created: inserted.created,
    })
}
