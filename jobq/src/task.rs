//! The [`Task`] trait that `#[jobq::task]` implements, and the per-task options.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::FollowUp;

/// A registered task: its payload type, its unique name and its options.
///
/// You do not implement this by hand: `#[jobq::task]` implements it on the
/// type it generates next to your function. Generic code can use it to enqueue
/// any task, see [`crate::enqueue`].
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a jobq task",
    label = "not a task",
    note = "a task is the type `#[jobq::task]` generates next to its async fn, and has the fn's name"
)]
pub trait Task: 'static {
    /// The job's payload, stored as `jsonb`.
    type Payload: Serialize + DeserializeOwned + Send + Sync + 'static;

    /// What the task fn returns on success (the `T` of its
    /// `Result<T, TaskError>`), stored with the completed job as `jsonb`
    /// and read back with [`crate::output`]. `()` stores nothing.
    type Output: Serialize + DeserializeOwned + Send + 'static;

    /// The name stored in each job row; unique within a worker binary.
    const NAME: &'static str;

    /// The options given in the attribute; unset fields take the defaults
    /// documented on [`TaskOptions`].
    const OPTIONS: TaskOptions;
}

/// Options of a task, as written in `#[jobq::task(...)]`.
///
/// Every field is optional; [`TaskOptions::new`] leaves them unset and the
/// accessors return the defaults below.
///
/// | option | default |
/// | --- | --- |
/// | `queue` | `"default"` |
/// | `concurrency` | 10 per worker process |
/// | `retry` (backoff base) | 1 s |
/// | `max_attempts` | 20 |
/// | `timeout` | none |
/// | `priority` | 0 |
/// | `global_concurrency` | none (no fleet-wide limit) |
/// | `key_concurrency` | none (no per-key limit) |
/// | `rate` | none (no rate limit) |
/// | `key_rate` | none (no per-key rate limit) |
/// | `then` | none (no follow-up job) |
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskOptions {
    queue: Option<&'static str>,
    concurrency: Option<u32>,
    retry: Option<Duration>,
    max_attempts: Option<u32>,
    timeout: Option<Duration>,
    priority: Option<i16>,
    global_concurrency: Option<u32>,
    key_concurrency: Option<u32>,
    rate: Option<crate::Rate>,
    key_rate: Option<crate::Rate>,
    // Periodic tasks (`cron = ...`).
    cron: Option<&'static str>,
    timezone: Option<&'static str>,
    catch_up: Option<Duration>,
    // Follow-up jobs (`then = ...`).
    then: Option<&'static FollowUp>,
}

impl TaskOptions {
    /// Queue used when neither the attribute nor the enqueue call names one.
    pub const DEFAULT_QUEUE: &'static str = "default";
    /// Attempts of one task that one worker process runs at once.
    pub const DEFAULT_CONCURRENCY: u32 = 10;
    /// Base delay of the exponential backoff between attempts.
    pub const DEFAULT_RETRY: Duration = Duration::from_secs(1);
    /// Attempts in all, the first one included.
    pub const DEFAULT_MAX_ATTEMPTS: u32 = 20;

    /// Options with every field unset.
    pub const fn new() -> Self {
        Self {
            queue: None,
            concurrency: None,
            retry: None,
            max_attempts: None,
            timeout: None,
            priority: None,
            global_concurrency: None,
            key_concurrency: None,
            rate: None,
            key_rate: None,
            cron: None,
            timezone: None,
            catch_up: None,
            then: None,
        }
    }

    /// Sets the default queue of the task's jobs.
    pub const fn queue(mut self, queue: &'static str) -> Self {
        self.queue = Some(queue);
        self
    }

    /// Sets how many attempts of this task one worker process runs at once.
    pub const fn concurrency(mut self, concurrency: u32) -> Self {
        self.concurrency = Some(concurrency);
        self
    }

    /// Sets the base delay of the exponential backoff between attempts.
    pub const fn retry(mut self, base: Duration) -> Self {
        self.retry = Some(base);
        self
    }

    /// Sets the number of attempts, the first one included.
    pub const fn max_attempts(mut self, max_attempts: u32) -> Self {
        self.max_attempts = Some(max_attempts);
        self
    }

    /// Sets the time limit of one attempt.
    pub const fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Sets the default priority of the task's jobs (higher runs first).
    pub const fn priority(mut self, priority: i16) -> Self {
        self.priority = Some(priority);
        self
    }

    /// Sets the most attempts of this task running at once across every
    /// worker process (see the README's "Flow control").
    pub const fn global_concurrency(mut self, limit: u32) -> Self {
        self.global_concurrency = Some(limit);
        self
    }

    /// Sets the most attempts running at once per partition key
    /// ([`crate::EnqueueOptions::key`]) across every worker process; 1
    /// runs each key's jobs one at a time, in priority then enqueue order.
    pub const fn key_concurrency(mut self, limit: u32) -> Self {
        self.key_concurrency = Some(limit);
        self
    }

    /// Sets the most starts of this task per unit of time across every
    /// worker process (see the README's "Rate limits").
    pub const fn rate(mut self, rate: crate::Rate) -> Self {
        self.rate = Some(rate);
        self
    }

    /// Sets the most starts per partition key per unit of time across
    /// every worker process.
    pub const fn key_rate(mut self, rate: crate::Rate) -> Self {
        self.key_rate = Some(rate);
        self
    }

    /// The task's rate limit, if any.
    pub const fn rate_limit(&self) -> Option<crate::Rate> {
        self.rate
    }

    /// The per-key rate limit, if any.
    pub const fn key_rate_limit(&self) -> Option<crate::Rate> {
        self.key_rate
    }

    /// The fleet-wide limit, if any.
    pub const fn global_limit(&self) -> Option<u32> {
        self.global_concurrency
    }

    /// The per-key limit, if any.
    pub const fn key_limit(&self) -> Option<u32> {
        self.key_concurrency
    }

    /// The queue, or [`Self::DEFAULT_QUEUE`].
    pub const fn queue_name(&self) -> &'static str {
        match self.queue {
            Some(q) => q,
            None => Self::DEFAULT_QUEUE,
        }
    }

    /// The concurrency limit, or [`Self::DEFAULT_CONCURRENCY`].
    pub const fn concurrency_limit(&self) -> u32 {
        match self.concurrency {
            Some(c) => c,
            None => Self::DEFAULT_CONCURRENCY,
        }
    }

    /// The backoff base, or [`Self::DEFAULT_RETRY`].
    pub const fn retry_base(&self) -> Duration {
        match self.retry {
            Some(d) => d,
            None => Self::DEFAULT_RETRY,
        }
    }

    /// The attempt limit, or [`Self::DEFAULT_MAX_ATTEMPTS`].
    pub const fn attempt_limit(&self) -> u32 {
        match self.max_attempts {
            Some(n) => n,
            None => Self::DEFAULT_MAX_ATTEMPTS,
        }
    }

    /// The per-attempt time limit, if any.
    pub const fn time_limit(&self) -> Option<Duration> {
        self.timeout
    }

    /// The default priority, or 0.
    pub const fn default_priority(&self) -> i16 {
        match self.priority {
            Some(p) => p,
            None => 0,
        }
    }
}

// Periodic tasks: the schedule given in `#[jobq::task(cron = ...)]`.
impl TaskOptions {
    /// Enqueues a job of the task at every tick of the cron expression
    /// (five fields, or six with seconds first), read in
    /// [`timezone`](Self::timezone). `#[jobq::task]` checks the expression
    /// at compile time.
    pub const fn cron(mut self, expression: &'static str) -> Self {
        self.cron = Some(expression);
        self
    }

    /// The IANA time zone of the cron expression (default `UTC`).
    pub const fn timezone(mut self, timezone: &'static str) -> Self {
        self.timezone = Some(timezone);
        self
    }

    /// Enqueues missed ticks up to this age after downtime; without it,
    /// only the most recent missed tick runs.
    pub const fn catch_up(mut self, max_age: Duration) -> Self {
        self.catch_up = Some(max_age);
        self
    }

    /// The cron expression, for a periodic task.
    pub const fn cron_expression(&self) -> Option<&'static str> {
        self.cron
    }

    /// The time zone of the cron expression.
    pub const fn cron_timezone(&self) -> &'static str {
        match self.timezone {
            Some(tz) => tz,
            None => "UTC",
        }
    }

    /// How old a missed tick may be and still run.
    pub const fn catch_up_window(&self) -> Option<Duration> {
        self.catch_up
    }
}

// Follow-up jobs: the task given in `#[jobq::task(then = ...)]`.
impl TaskOptions {
    /// Enqueues a job of the follow-up task when a job of this task ends
    /// (completed, failed or cancelled), with a [`crate::Finished`]
    /// payload. `#[jobq::task(then = notify_client)]` sets it and checks at
    /// compile time that `notify_client` is a task taking
    /// `jobq::Finished`.
    pub const fn then(mut self, follow_up: &'static FollowUp) -> Self {
        self.then = Some(follow_up);
        self
    }

    /// The follow-up, if the task has one.
    pub const fn follow_up(&self) -> Option<&'static FollowUp> {
        self.then
    }
}

impl Default for TaskOptions {
    fn default() -> Self {
        Self::new()
    }
}
