//! Awaiting a job: [`Waiter`], one LISTEN connection shared by any number
//! of waits, and `my_task::wait(&waiter, id, timeout)`, which resolves with
//! the job's typed output, or its failure, cancellation or a timeout.
//!
//! How it learns of outcomes: the waiter registers the ids it waits for in
//! `jobq.awaited`, and a statement-level trigger on the jobs table
//! (migrations `finished_notify`, `awaited_jobs`) sends, at commit, those
//! of the ids each statement took to `completed`, `failed` or `cancelled`
//! that are registered, on the channel `jobq_finished`, whichever path did
//! it (the workers' outcome batches, `jobq::cancel`, the CLI and
//! dashboard, a rescue failing a job out of attempts, an outcome written
//! in the handler's transaction, raw SQL). Jobs nobody waits for are not
//! announced at all. The waiter's connection LISTENs, and looks up the
//! waited ones among them, on the same connection, in one statement.
//!
//! What a wait promises: it returns the job's outcome once the job's
//! terminal state has committed, normally within a notification's trip and
//! one look-up; a notification that never arrives (the connection dropped,
//! LISTEN not delivered through a pooler) delays it by at most the poll
//! interval, or until the reconnection, which looks at every waited job.
//! It does not promise: that the job exists (wait after the enqueue
//! commits; a pruned job is [`WaitError::NotFound`]), that a job which
//! keeps retrying ends before the timeout, or anything about jobs whose
//! rows change back from a terminal state (`jobq::retry`): a wait resolves
//! at the first terminal state it sees.
//!
//! Map, look-ups and reconnection: see [`waits`] (who waits for what),
//! [`driver`] (the connection's task: registration, look-ups,
//! reconnection) and [`recheck`] (jobs whose outcome may have been written
//! just before their registration committed).

mod driver;
mod error;
mod finish;
mod recheck;
mod waits;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jobq_diesel::{ConnectOptions, Connector, ListenerError, Pool};
use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::{Error, JobId, Task};
use driver::{Driver, Shared, Source};
pub use error::WaitError;
use finish::Finish;
use waits::Waits;

/// One connection to the database that learns when jobs finish, shared by
/// any number of waits (`my_task::wait(&waiter, id, timeout)`): make one
/// at start-up and clone it into every request handler.
///
/// Cloning is cheap (an `Arc`); the connection closes when the last clone
/// is dropped. It reconnects by itself, with backoff, when the connection
/// drops, and loses no wake-up doing so.
///
/// ```no_run
/// # #[jobq::task] async fn resize(w: u32) -> Result<String, jobq::TaskError> { Ok(String::new()) }
/// # async fn f(conn: &mut diesel_async::AsyncPgConnection) -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
///
/// let waiter = jobq::Waiter::connect("postgres://app@db/app").await?;
/// // In a request handler:
/// let id = resize::enqueue(conn, &640).await?;
/// let path: String = resize::wait(&waiter, id, Duration::from_secs(30)).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
#[must_use = "a Waiter closes its connection when dropped"]
pub struct Waiter {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    /// Stops the driver when the last handle goes.
    _stop: DropGuard,
}

impl std::fmt::Debug for Waiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Waiter")
            .field("waiting", &self.waiting())
            .field("down", &self.inner.shared.down_reason())
            .finish()
    }
}

impl Waiter {
    /// The default interval of the fallback poll: see
    /// [`WaiterBuilder::poll_interval`].
    pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(1);

    /// Connects to `url` (a `postgres://` URL or key-value string, read
    /// like the worker's: TLS and keepalive settings included) with the
    /// default settings. Errors when the first connection fails.
    pub async fn connect(url: &str) -> Result<Waiter, Error> {
        Waiter::builder().connect(url).await
    }

    /// Uses a dedicated connection of `pool` (made like its others, and
    /// outside its accounting: a connection that LISTENs never goes back
    /// to a pool), reconnecting through the pool.
    pub async fn from_pool(pool: &Pool) -> Result<Waiter, Error> {
        Waiter::builder().pool(pool).await
    }

    /// A builder, for the poll interval.
    pub fn builder() -> WaiterBuilder {
        WaiterBuilder {
            poll_interval: Waiter::DEFAULT_POLL_INTERVAL,
        }
    }

    /// How many jobs are being waited on now (each counted once, however
    /// many waits it has).
    #[must_use]
    pub fn waiting(&self) -> usize {
        self.inner.shared.waits.len()
    }

    /// Whether the connection is up (it reconnects by itself when not).
    #[must_use]
    pub fn is_connected(&self) -> bool {
        self.inner.shared.down_reason().is_none()
    }

    /// How job `id` ended, or why the wait gave up.
    async fn finished(&self, id: JobId, timeout: Duration) -> Result<Arc<Finish>, WaitError> {
        let shared = &self.inner.shared;
        let mut registration = shared.waits.register(id.get());
        // The driver's first look-up of this id; it holds the receiver as
        // long as any handle lives, which this one does.
        let _ = shared.fresh.send(id.get());
        match tokio::time::timeout(timeout, registration.finished()).await {
            Ok(Some(finish)) => Ok(finish),
            Ok(None) | Err(_) => Err(match shared.down_reason() {
                Some(reason) => WaitError::Disconnected {
                    id,
                    timeout,
                    reason,
                },
                None => WaitError::Timeout { id, timeout },
            }),
        }
    }
}

/// Settings of a [`Waiter`].
#[derive(Debug, Clone)]
#[must_use]
pub struct WaiterBuilder {
    poll_interval: Duration,
}

impl WaiterBuilder {
    /// How often every waited job is looked up in case its notification
    /// was lost (default 1 s). Notifications normally resolve waits at
    /// once, and a reconnection looks at every waited job, so this only
    /// bounds the delay when notifications do not arrive at all (e.g. a
    /// pooler in transaction mode between the waiter and PostgreSQL).
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval.max(Duration::from_millis(10));
        self
    }

    /// Connects to `url`; see [`Waiter::connect`].
    pub async fn connect(self, url: &str) -> Result<Waiter, Error> {
        let options = crate::worker::url::parse(url)?;
        self.connect_with(options).await
    }

    /// Connects with `options` (for settings a URL cannot express).
    pub async fn connect_with(self, options: ConnectOptions) -> Result<Waiter, Error> {
        self.start(Source::Connector(Box::new(Connector::new(options))))
            .await
    }

    /// Uses `pool`'s connections; see [`Waiter::from_pool`].
    pub async fn pool(self, pool: &Pool) -> Result<Waiter, Error> {
        self.start(Source::Pool(pool.clone())).await
    }

    async fn start(self, source: Source) -> Result<Waiter, Error> {
        let started = Instant::now();
        let listener = source.connect().await.map_err(|e| match e {
            ListenerError::Connect { url, source } => Error::Connect {
                url,
                attempts: 1,
                waited: started.elapsed(),
                source: bb8::RunError::User(source),
            },
            ListenerError::Connection(source) => Error::Database {
                context: "starting to LISTEN on the waiter's connection".to_owned(),
                source,
            },
        })?;
        let (fresh_tx, fresh_rx) = mpsc::unbounded_channel();
        let (gone_tx, gone_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            waits: Arc::new(Waits::new(gone_tx)),
            fresh: fresh_tx,
            down: Mutex::new(None),
        });
        let stop = CancellationToken::new();
        let driver = Driver {
            shared: Arc::clone(&shared),
            fresh: fresh_rx,
            gone: gone_rx,
            source,
            poll_interval: self.poll_interval,
            stop: stop.clone(),
            waiter: waiter_name(),
        };
        tokio::spawn(driver.run(listener));
        Ok(Waiter {
            inner: Arc::new(Inner {
                shared,
                _stop: stop.drop_guard(),
            }),
        })
    }
}

/// Waits for job `id` of task `T`: its output when it completes, else why
/// not. Called as `my_task::wait(&waiter, id, timeout)`.
pub async fn wait<T: Task>(
    waiter: &Waiter,
    id: JobId,
    timeout: Duration,
) -> Result<T::Output, WaitError> {
    waiter.finished(id, timeout).await?.to_result::<T>(id)
}

/// A random name for a Waiter's rows in `jobq.awaited`: 63 random bits
/// from the standard library's per-instance random hasher keys (no other
/// use of randomness in jobq justifies a crate). Two Waiters drawing the
/// same name would only see each other's notifications, and remove each
/// other's rows on reconnecting (their poll still resolves every wait).
fn waiter_name() -> i64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    // Positive, so that it reads well in psql.
    i64::try_from(hasher.finish() >> 1).unwrap_or(i64::MAX)
}
