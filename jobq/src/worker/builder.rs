//! [`WorkerBuilder`]: configuring and starting a worker.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jobq_diesel::{
    build_pool, AsyncPgConnection, ClaimLanes, ConnectHook, ConnectOptions, Connector, Pool,
};

use super::backoff::Backoff;
use super::config::{env_bool, env_duration, env_list, env_u16, Config};
use super::error_text::error_chain;
use super::overrides::{self, TaskOverrides};
use super::state::Pools;
use super::url;
use super::Worker;
use crate::registry::Registry;
use crate::state::States;
use crate::{Error, Schedule};

/// Configures a [`Worker`]. Unset settings come from the environment, then
/// from the defaults:
///
/// | setting | environment | default |
/// | --- | --- | --- |
/// | [`database_url`](Self::database_url) | `DATABASE_URL` | required unless [`pool`](Self::pool) is given |
/// | [`queues`](Self::queues) | `JOBQ_QUEUES` (comma-separated) | every registered task's queue |
/// | [`poll_interval`](Self::poll_interval) | `JOBQ_POLL_INTERVAL` | 1 s |
/// | [`shutdown_timeout`](Self::shutdown_timeout) | `JOBQ_SHUTDOWN_TIMEOUT` | 30 s |
/// | [`lease`](Self::lease) | `JOBQ_LEASE` | 30 s |
/// | [`heartbeat_interval`](Self::heartbeat_interval) | | 5 s |
/// | [`maintenance_interval`](Self::maintenance_interval) | | 5 s |
/// | [`retention_completed`](Self::retention_completed) | `JOBQ_RETENTION_COMPLETED` | 1 min |
/// | [`retention_failed`](Self::retention_failed) | `JOBQ_RETENTION_FAILED` | 7 days (failed and cancelled jobs) |
/// | [`vacuum`](Self::vacuum) | `JOBQ_VACUUM` (`on`/`off`) | on (acts where autovacuum is off or far behind) |
/// | [`listen`](Self::listen) | | on |
/// | [`listen_url`](Self::listen_url) | `JOBQ_LISTEN_URL` | the pool's database |
/// | [`connect_timeout`](Self::connect_timeout) | `JOBQ_CONNECT_TIMEOUT` | 30 s |
/// | pool size (own pool) | | 8 |
/// | [`migrate`](Self::migrate) | `JOBQ_MIGRATE` (`on`/`off`) | on: install or upgrade the schema |
/// | [`task_concurrency`](Self::task_concurrency) | `JOBQ_TASK_CONCURRENCY` | the attribute's `concurrency` |
/// | [`task_timeout`](Self::task_timeout) | `JOBQ_TASK_TIMEOUT` | the attribute's `timeout` |
/// | [`task_retry`](Self::task_retry) | `JOBQ_TASK_RETRY` | the attribute's `retry` |
/// | [`task_global_concurrency`](Self::task_global_concurrency) | | the attribute's `global_concurrency` |
/// | [`task_key_concurrency`](Self::task_key_concurrency) | | the attribute's `key_concurrency` |
/// | [`task_rate`](Self::task_rate), [`task_key_rate`](Self::task_key_rate) | | the attribute's `rate`, `key_rate` and `burst` |
/// | [`state`](Self::state) | | none |
/// | [`lock_timeout`](Self::lock_timeout) (own pool) | `JOBQ_LOCK_TIMEOUT` | 5 s |
/// | [`statement_timeout`](Self::statement_timeout) (own pool) | `JOBQ_STATEMENT_TIMEOUT` | 60 s |
/// | [`connect_with`](Self::connect_with) | | jobq connects by itself |
/// | [`claim_lanes`](Self::claim_lanes) | `JOBQ_CLAIM_LANES` | 4 claims at once across a fleet of more than 4 workers |
///
/// The per-task variables hold `task=value` entries separated by commas,
/// e.g. `JOBQ_TASK_CONCURRENCY="send_welcome=8,reports.nightly=2"` or
/// `JOBQ_TASK_TIMEOUT="reports.nightly=10m"`; an entry is split at its last
/// `=`, so names with dots work. A setting made on the builder wins over
/// the environment, which wins over the attribute.
///
/// **TLS.** The URL's `sslmode` (`disable`, `prefer` — the default —,
/// `require`, `verify-ca`, `verify-full`) and `sslrootcert` work as in
/// libpq; see [`ConnectOptions`] and the README's "TLS and connection
/// settings".
///
/// **Database down at start-up.** [`build`](Self::build) keeps trying to
/// connect, with backoff from 100 ms up to 5 s, for the connect timeout,
/// logging each failure as a warning and the success as info; then it
/// fails with [`Error::Connect`]. Errors that waiting cannot fix (failed
/// authentication, unknown database or role, no `pg_hba.conf` entry, a
/// refused TLS certificate, a server without TLS under `sslmode=require`)
/// fail at once. `connect_timeout(Duration::ZERO)` fails fast on the first
/// error. Once running, a worker rides out outages by itself: it retries
/// claims, outcome writes and heartbeats, and reconnects its listener.
///
/// **PgBouncer.** Behind a transaction-pooling PgBouncer, LISTEN cannot
/// work (notifications go to whichever server connection ran the LISTEN).
/// The worker checks, once, that a notification it sends comes back on its
/// listener; if it does not, it logs one warning and runs on polling alone.
/// Give the listener a direct URL with [`listen_url`](Self::listen_url) to
/// keep prompt wake-ups.
///
/// ```no_run
/// # async fn f() -> Result<(), jobq::Error> {
/// use std::time::Duration;
/// let worker = jobq::Worker::builder()
///     .database_url("postgres://app@localhost/app")
///     .queues(&["default", "reports"])
///     .shutdown_timeout(Duration::from_secs(60))
///     .build()
///     .await?;
/// worker.run().await
/// # }
/// ```
#[derive(Debug, Default)]
#[must_use = "a builder does nothing until .build().await"]
pub struct WorkerBuilder {
    url: Option<String>,
    pool: Option<Pool>,
    queues: Option<Vec<String>>,
    tasks: Option<Vec<String>>,
    poll_interval: Option<Duration>,
    shutdown_timeout: Option<Duration>,
    lease: Option<Duration>,
    heartbeat_interval: Option<Duration>,
    maintenance_interval: Option<Duration>,
    vacuum: Option<bool>,
    listen: Option<bool>,
    pool_size: Option<u32>,
    connect_timeout: Option<Duration>,
    listen_url: Option<String>,
    // Handler state, per-task overrides, migrate switch, split retention
    // (issue 11).
    states: States,
    overrides: TaskOverrides,
    migrate: Option<bool>,
    retention_completed: Option<Duration>,
    retention_failed: Option<Duration>,
    connect_hook: Hook,
    lock_timeout: Option<Duration>,
    statement_timeout: Option<Duration>,
    claim_lanes: Option<u16>,
    // Periodic tasks: schedules added at run time.
    schedules: Vec<Schedule>,
}

/// The application's connection hook, if any (a closure has no `Debug`).
#[derive(Default, Clone)]
struct Hook(Option<ConnectHook>);

impl std::fmt::Debug for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "Some(..)" } else { "None" })
    }
}

impl WorkerBuilder {
    /// The database to work on (default: `DATABASE_URL`).
    pub fn database_url(mut self, url: impl Into<String>) -> Self {
        self.url = Some(url.into());
        self
    }

    /// Share the application's bb8 pool instead of opening one. The
    /// LISTEN connection is still a dedicated connection made by the pool's
    /// manager, outside the pool.
    pub fn pool(mut self, pool: Pool) -> Self {
        self.pool = Some(pool);
        self
    }

    /// Serve only these queues (default: every registered task's queue):
    /// `.queues(["default", "reports"])`, `.queues(&names)` with a
    /// `Vec<String>`, or any iterator of strings.
    pub fn queues<I>(mut self, queues: I) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        self.queues = Some(queues.into_iter().map(|q| q.as_ref().to_owned()).collect());
        self
    }

    /// Serve only these of the binary's tasks (default: all of them), for
    /// deployments that split work by task as well as by queue; also
    /// `JOBQ_TASKS=a,b`. A name no task of the binary has is refused by
    /// [`build`](Self::build). Without [`queues`](Self::queues), the
    /// worker serves these tasks' queues.
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), jobq::Error> {
    /// let worker = jobq::Worker::builder().tasks(["send_welcome"]).build().await?;
    /// # Ok(()) }
    /// ```
    pub fn tasks<I>(mut self, tasks: I) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        self.tasks = Some(tasks.into_iter().map(|t| t.as_ref().to_owned()).collect());
        self
    }

    /// How often to look for due jobs when no notification arrives: the
    /// longest a missed notification can delay a job.
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = Some(interval);
        self
    }

    /// How long running jobs may take to finish at shutdown before they are
    /// stopped and handed back to the queue.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = Some(timeout);
        self
    }

    /// How long a worker may go without heartbeating before its jobs are
    /// rescued by other workers.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = Some(lease);
        self
    }

    /// How often this worker refreshes its lease (at most half the lease).
    pub fn heartbeat_interval(mut self, interval: Duration) -> Self {
        self.heartbeat_interval = Some(interval);
        self
    }

    /// How often this worker tries to rescue and prune (one worker at a
    /// time does it).
    pub fn maintenance_interval(mut self, interval: Duration) -> Self {
        self.maintenance_interval = Some(interval);
        self
    }

    /// Sets both retentions at once: the same as
    /// [`retention_completed`](Self::retention_completed)`(completed)` and
    /// [`retention_failed`](Self::retention_failed)`(failed)`.
    pub fn retention(self, completed: Duration, failed: Duration) -> Self {
        self.retention_completed(completed).retention_failed(failed)
    }

    /// Whether the worker vacuums jobq's tables itself where the server's
    /// autovacuum is off for them, or has fallen far behind (default on).
    /// Every job leaves dead row versions behind; without any vacuum the
    /// table grows for ever, and autovacuum, visiting a table once a
    /// minute, lets a busy active partition gather millions of them. The
    /// worker reads the statistics every second (or every maintenance
    /// interval, when shorter) and vacuums a partition once its dead rows
    /// pass autovacuum's threshold where autovacuum is off, ten times that
    /// where it is on. It needs the role to own the tables (or the
    /// database); otherwise, where autovacuum is off, the worker logs one
    /// warning and leaves it.
    pub fn vacuum(mut self, vacuum: bool) -> Self {
        self.vacuum = Some(vacuum);
        self
    }

    /// Whether to LISTEN for wake-ups (default on). Off, the worker relies
    /// on polling alone, e.g. behind a transaction-pooling PgBouncer.
    pub fn listen(mut self, listen: bool) -> Self {
        self.listen = Some(listen);
        self
    }

    /// How long [`build`](Self::build) keeps retrying while the database is
    /// unreachable (default 30 s, `JOBQ_CONNECT_TIMEOUT`); zero fails on
    /// the first error.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = Some(timeout);
        self
    }

    /// A separate database URL for the LISTEN connection only (default:
    /// the pool's, `JOBQ_LISTEN_URL`). Use it when the pool goes through
    /// a transaction-pooling PgBouncer: point this one at PostgreSQL
    /// directly (or at a session-pooling PgBouncer).
    pub fn listen_url(mut self, url: impl Into<String>) -> Self {
        self.listen_url = Some(url.into());
        self
    }

    /// Connections of the pool the worker opens itself (ignored with
    /// [`pool`](Self::pool)). The worker opens one more for its claims,
    /// and one for LISTEN.
    pub fn pool_size(mut self, size: u32) -> Self {
        self.pool_size = Some(size);
        self
    }

    // ---- connection set-up: the hook and the server-side timeouts ----

    /// Opens every connection jobq makes (its own pool's and the LISTEN
    /// connection, `listen_url`'s included) with `hook` instead of by
    /// itself: for IAM tokens as passwords, client certificates, or a
    /// rustls configuration of your own. The hook gets the options jobq
    /// read from the URL (TLS settings, keepalives, timeouts) and returns
    /// a connection; [`ConnectOptions::connect`] and
    /// [`ConnectOptions::connect_with_tls`] do the work. A shared
    /// [`pool`](Self::pool) is not affected: its connections, and the
    /// LISTEN connection made by its manager, are made as that pool says.
    ///
    /// ```no_run
    /// # async fn fresh_token() -> String { String::new() }
    /// # async fn f() -> Result<(), jobq::Error> {
    /// let worker = jobq::Worker::builder()
    ///     .database_url("postgres://app@db.example.com/app?sslmode=verify-full")
    ///     .connect_with(|mut options: jobq::ConnectOptions| async move {
    ///         // A short-lived token, fetched for each new connection.
    ///         options.config_mut().password(fresh_token().await);
    ///         options.connect().await
    ///     })
    ///     .build()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn connect_with<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn(ConnectOptions) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<AsyncPgConnection, diesel::ConnectionError>> + Send + 'static,
    {
        self.connect_hook = Hook(Some(Arc::new(move |options| Box::pin(hook(options)))));
        self
    }

    /// The server-side `lock_timeout` of the connections jobq opens itself
    /// (default 5 s, `JOBQ_LOCK_TIMEOUT`; zero leaves the server's). An
    /// application transaction that holds a job's row then delays one of
    /// jobq's writes by at most this long; the write fails and is retried.
    /// A shared [`pool`](Self::pool) keeps its own settings.
    pub fn lock_timeout(mut self, timeout: Duration) -> Self {
        self.lock_timeout = Some(timeout);
        self
    }

    /// The server-side `statement_timeout` of the connections jobq opens
    /// itself (default 60 s, `JOBQ_STATEMENT_TIMEOUT`; zero leaves the
    /// server's). Schema migrations run without it. A shared
    /// [`pool`](Self::pool) keeps its own settings.
    pub fn statement_timeout(mut self, timeout: Duration) -> Self {
        self.statement_timeout = Some(timeout);
        self
    }

    // ---- end of connection set-up ----

    /// How many claims may run at once across every worker of the
    /// database (default 4, `JOBQ_CLAIM_LANES`; 0 for no bound). Claims in
    /// flight together all start at the head of the queue and step over
    /// each other's rows, work that grows with the square of their number;
    /// beyond the bound a claim waits for one before it to commit, then
    /// finds every row it passes free. A worker takes a lane only while
    /// the fleet (as its heartbeats count it) has more workers than lanes,
    /// since each worker runs one claim at a time: a lane costs a claim two
    /// more round trips, which a small fleet never pays. Raise it for a
    /// database with many cores and many workers; give every worker of a
    /// fleet the same number. Limited tasks (global or per-key
    /// concurrency, rates) claim one task at a time under locks of their
    /// own and take no lane.
    pub fn claim_lanes(mut self, lanes: u16) -> Self {
        self.claim_lanes = Some(lanes);
        self
    }

    /// Checks the settings and the task registry, connects, and installs or
    /// upgrades the schema (or, with [`migrate(false)`](Self::migrate),
    /// checks its version).
    ///
    /// Fails on duplicate task names (naming both definition sites), a task
    /// taking a [`State<T>`](crate::State) the builder was not given, an
    /// override naming no task, a missing or malformed URL, an unreachable
    /// database or a schema newer than this binary. Error messages never
    /// contain the password.
    pub async fn build(self) -> Result<Worker, Error> {
        let all = Registry::from_inventory()?;
        let subset = match self.tasks.or_else(|| env_list("JOBQ_TASKS")) {
            Some(names) => Some(all.only(&names)?),
            None => None,
        };
        let registry = subset.as_ref().unwrap_or(&all);
        // Checked before connecting: a missing state or a mistyped override
        // is a deployment mistake that no database can fix.
        registry.check_states(&self.states)?;
        let tasks = overrides::served_tasks(&all, registry, &self.overrides, &self.states)?;
        let schedules = super::scheduler::plan(&all, registry, &self.schedules)?;
        let migrate = match self.migrate {
            Some(migrate) => migrate,
            None => env_bool("JOBQ_MIGRATE")?.unwrap_or(true),
        };
        let defaults = Config::default();
        let mut config = Config {
            poll_interval: or_env(
                self.poll_interval,
                "JOBQ_POLL_INTERVAL",
                defaults.poll_interval,
            )?,
            shutdown_timeout: or_env(
                self.shutdown_timeout,
                "JOBQ_SHUTDOWN_TIMEOUT",
                defaults.shutdown_timeout,
            )?,
            lease: or_env(self.lease, "JOBQ_LEASE", defaults.lease)?,
            heartbeat_interval: self
                .heartbeat_interval
                .unwrap_or(defaults.heartbeat_interval),
            maintenance_interval: self
                .maintenance_interval
                .unwrap_or(defaults.maintenance_interval),
            retention: jobq_diesel::Retention {
                completed: or_env(
                    self.retention_completed,
                    "JOBQ_RETENTION_COMPLETED",
                    defaults.retention.completed,
                )?,
                failed: or_env(
                    self.retention_failed,
                    "JOBQ_RETENTION_FAILED",
                    defaults.retention.failed,
                )?,
            },
            vacuum: match self.vacuum {
                Some(vacuum) => vacuum,
                None => env_bool("JOBQ_VACUUM")?.unwrap_or(defaults.vacuum),
            },
            listen: self.listen.unwrap_or(defaults.listen),
            pool_size: self.pool_size.unwrap_or(defaults.pool_size),
            outcome_batch: defaults.outcome_batch,
            connect_timeout: or_env(
                self.connect_timeout,
                "JOBQ_CONNECT_TIMEOUT",
                defaults.connect_timeout,
            )?,
            listen_url: None,
            lock_timeout: nonzero(or_env(
                self.lock_timeout,
                "JOBQ_LOCK_TIMEOUT",
                defaults.lock_timeout.unwrap_or_default(),
            )?),
            statement_timeout: nonzero(or_env(
                self.statement_timeout,
                "JOBQ_STATEMENT_TIMEOUT",
                defaults.statement_timeout.unwrap_or_default(),
            )?),
            claim_lanes: match self.claim_lanes {
                Some(lanes) => ClaimLanes::new(lanes),
                None => match env_u16("JOBQ_CLAIM_LANES")? {
                    Some(lanes) => ClaimLanes::new(lanes),
                    None => defaults.claim_lanes,
                },
            },
        };
        let hook = self.connect_hook.0;
        let (lock_timeout, statement_timeout) = (config.lock_timeout, config.statement_timeout);
        // Every connection jobq opens from a URL: TLS and keepalives from
        // the URL, jobq's timeouts, the application's hook.
        let connector = |url: &str| -> Result<Connector, Error> {
            let mut options = url::parse(url)?;
            options.session_timeouts(lock_timeout, statement_timeout);
            Ok(Connector::new(options).with_hook(hook.clone()))
        };
        config.listen_url = match self
            .listen_url
            .or_else(|| std::env::var("JOBQ_LISTEN_URL").ok())
        {
            Some(u) if !u.trim().is_empty() => Some(super::config::ListenUrl(connector(&u)?)),
            _ => None,
        };
        config.validate()?;
        let (pools, first) = match self.pool {
            Some(pool) => (
                Pools {
                    main: pool.clone(),
                    claims: pool.clone(),
                    vacuum: None,
                },
                First::Pool(pool),
            ),
            None => {
                let url = match self.url {
                    Some(url) => url,
                    None => std::env::var("DATABASE_URL").map_err(|_| Error::InvalidUrl {
                        url: String::new(),
                        reason:
                            "DATABASE_URL is not set; set it or call WorkerBuilder::database_url"
                                .into(),
                    })?,
                };
                let connector = connector(&url)?;
                // Shorter than the lease: a loop waiting for a connection
                // while the database is away tries again (and heartbeats)
                // well within it, instead of after bb8's default 30 s.
                let checkout =
                    (config.lease / 4).clamp(Duration::from_secs(1), Duration::from_secs(10));
                let pools = Pools {
                    main: build_pool(connector.clone(), config.pool_size, checkout),
                    // The fetcher claims and promotes one statement at a
                    // time. While the database is away, bb8 tries to
                    // connect again after up to half the checkout timeout:
                    // a short one has the fetcher claim within about a
                    // second of the database's return.
                    claims: build_pool(
                        connector.with_generic_plans(),
                        1,
                        checkout.min(CLAIM_CHECKOUT),
                    ),
                    vacuum: Some(build_pool(connector.without_timeouts(), 1, checkout)),
                };
                // Migrations may rightly run longer than the statement
                // timeout: the first connection goes without it.
                (
                    pools,
                    First::Connector(Box::new(connector.without_timeouts())),
                )
            }
        };
        let mut conn = connect(&first, config.connect_timeout).await?;
        if migrate {
            crate::migrate(&mut conn).await?;
        } else {
            check_schema(&mut conn).await?;
        }
        drop(conn);
        let queues = self
            .queues
            .or_else(|| env_list("JOBQ_QUEUES"))
            .unwrap_or_else(|| {
                let mut queues: Vec<String> = registry
                    .iter()
                    .map(|d| d.options.queue_name().to_owned())
                    .collect();
                queues.sort();
                queues.dedup();
                queues
            });
        Worker::new(pools, config, tasks, queues, schedules)
    }
}

/// The claim pool's checkout timeout, at most (see where it is built).
const CLAIM_CHECKOUT: Duration = Duration::from_secs(2);

// Setters added for issue 11: handler state, per-task overrides, the
// migrate switch and the two retentions.
impl WorkerBuilder {
    /// Gives task functions a value of type `T`: a pool, an HTTP client, a
    /// config. A task fn takes it as a [`State<T>`](crate::State) argument
    /// (or looks it up with [`Context::state`](crate::Context::state)).
    ///
    /// Several types may be registered, one value per type; registering a
    /// type again replaces the earlier value. [`build`](Self::build)
    /// refuses a worker whose tasks take a `State<T>` it was not given,
    /// naming the task, where it is defined and the type.
    ///
    /// Each attempt gets a clone of the value, so share what must be
    /// shared through an `Arc` (bb8 pools and most clients already are).
    ///
    /// ```no_run
    /// # #[derive(serde::Serialize, serde::Deserialize)] struct Welcome { user_id: i64 }
    /// use jobq::State;
    ///
    /// #[derive(Clone)]
    /// struct Mailer;
    ///
    /// #[jobq::task]
    /// async fn send_welcome(State(mailer): State<Mailer>, job: Welcome) -> Result<(), jobq::TaskError> {
    ///     let _ = (mailer, job.user_id);
    ///     Ok(())
    /// }
    ///
    /// # async fn f() -> Result<(), jobq::Error> {
    /// jobq::Worker::builder().state(Mailer).build().await?.run().await
    /// # }
    /// ```
    pub fn state<T: Clone + Send + Sync + 'static>(mut self, value: T) -> Self {
        self.states.insert(value);
        self
    }

    /// Runs at most `limit` attempts of task `task` at once in this worker
    /// process, instead of the attribute's `concurrency`
    /// (environment: `JOBQ_TASK_CONCURRENCY="send_welcome=8,reports.nightly=2"`).
    /// [`build`](Self::build) refuses a name that is not a task of this
    /// binary, listing the ones there are, and a limit outside 1 to
    /// `i32::MAX`.
    pub fn task_concurrency(mut self, task: impl Into<String>, limit: u32) -> Self {
        self.overrides.concurrency.insert(task.into(), limit);
        self
    }

    /// Sets the fleet-wide limit of task `task` (see "Flow control" in the
    /// README), instead of the attribute's `global_concurrency`. Every
    /// worker of the fleet must be given the same value: each claims
    /// within the limit it knows. Builder only, no environment variable,
    /// for that reason. [`build`](Self::build) refuses an unknown task and
    /// a limit outside 1 to `i32::MAX`.
    pub fn task_global_concurrency(mut self, task: impl Into<String>, limit: u32) -> Self {
        self.overrides.global_concurrency.insert(task.into(), limit);
        self
    }

    /// Sets the per-key fleet-wide limit of task `task`, instead of the
    /// attribute's `key_concurrency`; the same rules as
    /// [`task_global_concurrency`](Self::task_global_concurrency).
    pub fn task_key_concurrency(mut self, task: impl Into<String>, limit: u32) -> Self {
        self.overrides.key_concurrency.insert(task.into(), limit);
        self
    }

    /// Sets the fleet-wide rate limit of task `task`, instead of the
    /// attribute's `rate` and `burst` (builder only, like
    /// [`task_global_concurrency`](Self::task_global_concurrency): every
    /// worker of the fleet must be given the same rate).
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), jobq::Error> {
    /// let worker = jobq::Worker::builder()
    ///     .task_rate("push.send", jobq::Rate::per_second(50).with_burst(10))
    ///     .build()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn task_rate(mut self, task: impl Into<String>, rate: crate::Rate) -> Self {
        self.overrides.rate.insert(task.into(), rate);
        self
    }

    /// Sets the per-key fleet-wide rate limit of task `task`, instead of
    /// the attribute's `key_rate`; the same rules as
    /// [`task_rate`](Self::task_rate).
    pub fn task_key_rate(mut self, task: impl Into<String>, rate: crate::Rate) -> Self {
        self.overrides.key_rate.insert(task.into(), rate);
        self
    }

    /// Limits each attempt of task `task` to `timeout`, instead of the
    /// attribute's `timeout` (environment:
    /// `JOBQ_TASK_TIMEOUT="reports.nightly=10m"`). Must be longer than zero.
    pub fn task_timeout(mut self, task: impl Into<String>, timeout: Duration) -> Self {
        self.overrides.timeout.insert(task.into(), timeout);
        self
    }

    /// Uses `base` as the backoff base between attempts of task `task`,
    /// instead of the attribute's `retry` (environment:
    /// `JOBQ_TASK_RETRY="send_welcome=30s"`). Must be longer than zero.
    pub fn task_retry(mut self, task: impl Into<String>, base: Duration) -> Self {
        self.overrides.retry.insert(task.into(), base);
        self
    }

    /// Whether [`build`](Self::build) installs or upgrades jobq's schema
    /// (default on, `JOBQ_MIGRATE`). Off, for deployments where a separate
    /// step runs [`crate::migrate`], it only reads the schema's version and
    /// refuses to start when the schema is missing or older than this
    /// binary needs ([`Error::SchemaNotReady`]), or newer than it knows.
    pub fn migrate(mut self, migrate: bool) -> Self {
        self.migrate = Some(migrate);
        self
    }

    /// How long completed jobs stay in the table before the maintenance
    /// pass deletes them (default 1 minute, `JOBQ_RETENTION_COMPLETED`).
    /// Until then [`crate::job`] shows them; afterwards it returns `None`.
    ///
    /// The short default keeps a busy queue's table at about (jobs per
    /// second × one minute) finished rows. Raise it to keep a longer
    /// history in the table; claims stay as fast, since they only look at
    /// pending jobs.
    pub fn retention_completed(mut self, retention: Duration) -> Self {
        self.retention_completed = Some(retention);
        self
    }

    /// How long failed and cancelled jobs stay in the table, for people
    /// to inspect (default 7 days, `JOBQ_RETENTION_FAILED`).
    pub fn retention_failed(mut self, retention: Duration) -> Self {
        self.retention_failed = Some(retention);
        self
    }
}

// Periodic tasks added at run time.
impl WorkerBuilder {
    /// Enqueues a job of task `task` at every tick of the cron
    /// `expression` (five fields, or six with seconds first), in UTC; the
    /// schedule is named after the task. For a time zone, a catch-up
    /// window or another name, use [`schedule_with`](Self::schedule_with).
    ///
    /// [`build`](Self::build) refuses an expression that does not parse, a
    /// task that is not in this binary or does not take a
    /// [`Tick`](crate::Tick), and two schedules of the same name (a task
    /// with `cron = ...` already has a schedule named after it).
    ///
    /// ```no_run
    /// #[jobq::task]
    /// async fn cleanup(job: jobq::Tick) -> Result<(), jobq::TaskError> {
    ///     let _ = job;
    ///     Ok(())
    /// }
    ///
    /// # async fn f() -> Result<(), jobq::Error> {
    /// let expression = std::env::var("CLEANUP_CRON").unwrap_or("0 */10 * * * *".into());
    /// jobq::Worker::builder()
    ///     .schedule("cleanup", expression)
    ///     .build()
    ///     .await?
    ///     .run()
    ///     .await
    /// # }
    /// ```
    pub fn schedule(self, task: impl Into<String>, expression: impl Into<String>) -> Self {
        self.schedule_with(Schedule::new(task, expression))
    }

    /// Adds a schedule built with [`Schedule`]: its name, time zone and
    /// catch-up window. Checked by [`build`](Self::build) as for
    /// [`schedule`](Self::schedule).
    pub fn schedule_with(mut self, schedule: Schedule) -> Self {
        self.schedules.push(schedule);
        self
    }
}

/// For a worker that does not migrate: the schema must be exactly what this
/// binary needs, or newer is refused as [`crate::migrate`] refuses it.
async fn check_schema(conn: &mut jobq_diesel::AsyncPgConnection) -> Result<(), Error> {
    let needed = jobq_diesel::LATEST_VERSION;
    match jobq_diesel::schema_version(conn).await? {
        Some(found) if found == needed => Ok(()),
        Some(found) if found > needed => {
            Err(Error::Migrate(jobq_diesel::MigrateError::SchemaTooNew {
                found,
                supported: needed,
            }))
        }
        found => Err(Error::SchemaNotReady { found, needed }),
    }
}

/// How the first connection (the one that migrates) is made.
enum First {
    /// A dedicated connection of the application's pool.
    Pool(Pool),
    /// jobq's own connector, without its timeouts.
    Connector(Box<Connector>),
}

impl First {
    fn shown(&self) -> String {
        match self {
            First::Pool(_) => "the given pool".to_owned(),
            First::Connector(c) => c.options().to_string(),
        }
    }

    async fn connect(&self) -> Result<AsyncPgConnection, jobq_diesel::PoolError> {
        match self {
            First::Pool(pool) => pool
                .dedicated_connection()
                .await
                .map_err(bb8::RunError::User),
            First::Connector(c) => c.connect().await.map_err(|e| {
                bb8::RunError::User(diesel_async::pooled_connection::PoolError::ConnectionError(
                    e,
                ))
            }),
        }
    }
}

/// A dedicated connection, retried with backoff while the database is
/// unreachable, up to `timeout`. A dedicated connection reports the
/// driver's own error at once, where a pool checkout would wait out its
/// timeout first.
async fn connect(first: &First, timeout: Duration) -> Result<AsyncPgConnection, Error> {
    let shown_url = first.shown();
    let started = Instant::now();
    let mut backoff = Backoff::new(Duration::from_millis(100), MAX_CONNECT_DELAY);
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let source = match first.connect().await {
            Ok(conn) => {
                if attempts > 1 {
                    tracing::info!(
                        url = %shown_url,
                        attempts,
                        waited = ?started.elapsed(),
                        "the database is reachable; starting"
                    );
                }
                return Ok(conn);
            }
            Err(source) => source,
        };
        // error_chain says the message bb8's wrapper repeats only once.
        let message = error_chain(&source);
        let waited = started.elapsed();
        if is_permanent(&message) || waited >= timeout {
            return Err(Error::Connect {
                url: shown_url,
                attempts,
                waited,
                source,
            });
        }
        let pause = backoff.next_delay().min(timeout - waited);
        tracing::warn!(
            url = %shown_url,
            error = %message,
            retry_in = ?pause,
            giving_up_in = ?(timeout - waited),
            "the database is unreachable; retrying"
        );
        tokio::time::sleep(pause).await;
    }
}

const MAX_CONNECT_DELAY: Duration = Duration::from_secs(5);

/// Connection errors that retrying does not fix.
fn is_permanent(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    [
        "authentication failed",
        "password authentication",
        "no pg_hba.conf entry",
        "does not exist",
        "invalid connection string",
        "invalid configuration",
        "unknown host",
        // TLS: a refused certificate, a server without TLS under
        // sslmode=require, an unreadable sslrootcert.
        "invalid peer certificate",
        "server does not support tls",
        "sslrootcert",
    ]
    .iter()
    .any(|p| m.contains(p))
}

/// Zero means "leave the server's setting".
fn nonzero(d: Duration) -> Option<Duration> {
    (!d.is_zero()).then_some(d)
}

fn or_env(
    explicit: Option<Duration>,
    var: &'static str,
    default: Duration,
) -> Result<Duration, Error> {
    match explicit {
        Some(d) => Ok(d),
        None => Ok(env_duration(var)?.unwrap_or(default)),
    }
}
