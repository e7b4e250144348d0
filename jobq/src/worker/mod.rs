//! The worker: claims jobs of the registered tasks and runs them.
//!
//! `running.rs` starts and stops a handful of tokio tasks, one file each:
//! the fetcher claims into free slots and hands each job to the executor,
//! which runs it as one tokio task per attempt; the completer writes
//! outcomes in batches (through `outcome_writer`, which keeps one refused
//! outcome from holding up the others); the listener turns notifications
//! into wake-ups; the heartbeat and maintenance loops keep leases and
//! rescue the jobs of dead workers. An attempt's life, from claimed to an
//! outcome sent (or handed back, or superseded), is the protocol of
//! `attempts.rs`; what the loops share is in `state.rs`.

mod attempts;
mod backlog;
pub(crate) mod backoff;
mod builder;
mod claim_floors;
mod completer;
mod config;
pub(crate) mod error_text;
mod executor;
mod fetcher;
#[cfg(feature = "metrics")]
mod gauges;
mod head_probe;
mod heartbeat;
mod lane_gate;
mod listen;
mod maintenance;
pub(crate) mod message;
mod open_claims;
mod outcome_writer;
mod overrides;
mod repeated_warning;
mod running;
mod scheduler;
mod shutdown;
mod slots;
mod standing;
mod state;
pub(crate) mod url;
mod vacuum;
mod wakeups;

use std::future::Future;
use std::sync::Arc;

pub use builder::WorkerBuilder;
pub use jobq_diesel::Pool;
use jobq_diesel::WorkerInfo;
pub use shutdown::ShutdownHandle;
use tokio_util::sync::CancellationToken;

use self::config::Config;
use self::state::{Pools, ServedTask, Shared};
use crate::Error;

/// A configured worker, ready to run. Build one with [`Worker::builder`].
#[derive(Debug)]
pub struct Worker {
    pools: Pools,
    config: Config,
    /// Every task of the binary with its effective settings, by name.
    tasks: Vec<ServedTask>,
    queues: Vec<String>,
    schedules: Arc<[scheduler::ScheduleSpec]>,
}

impl Worker {
    /// Starts configuring a worker.
    pub fn builder() -> WorkerBuilder {
        WorkerBuilder::default()
    }

    fn new(
        pools: Pools,
        config: Config,
        tasks: Vec<ServedTask>,
        queues: Vec<String>,
        schedules: Vec<scheduler::ScheduleSpec>,
    ) -> Result<Self, Error> {
        if queues.is_empty() {
            return Err(Error::NoTasks(
                "no queue to serve: register a task with #[jobq::task] or pass .queues(..)".into(),
            ));
        }
        if tasks.is_empty() {
            return Err(Error::NoTasks(
                "no task is registered in this binary; annotate an async fn with #[jobq::task]"
                    .into(),
            ));
        }
        Ok(Self {
            pools,
            config,
            tasks,
            queues,
            schedules: schedules.into(),
        })
    }

    /// Runs until SIGINT or SIGTERM, then shuts down gracefully.
    pub async fn run(self) -> Result<(), Error> {
        self.run_until(shutdown::signal()).await
    }

    /// Runs until `signal` resolves, then shuts down gracefully: stops
    /// claiming, lets running jobs finish within the shutdown timeout, hands
    /// the rest back to the queue and writes every outcome.
    pub async fn run_until<F>(self, signal: F) -> Result<(), Error>
    where
        F: Future<Output = ()> + Send,
    {
        let info = WorkerInfo {
            hostname: hostname(),
            pid: i32::try_from(std::process::id()).unwrap_or(0),
            queues: self.queues.clone(),
            lease: self.config.lease,
        };
        let worker_id = {
            let mut conn = self
                .pools
                .main
                .get()
                .await
                .map_err(Error::pool("registering the worker"))?;
            jobq_diesel::register_worker(&mut conn, &info)
                .await
                .map_err(Error::db("registering the worker"))?
        };
        let shared = Shared::new_arc(self.pools, self.config, worker_id, self.queues, self.tasks);
        report_unknown_tasks(&shared).await;
        tracing::info!(
            worker.id = worker_id,
            queues = ?shared.queues,
            tasks = ?shared.task_names,
            "jobq worker started"
        );
        let running = running::Running::start(Arc::clone(&shared), info, self.schedules);
        signal.await;
        tracing::info!(worker.id = worker_id, "shutting down");
        running.stop().await;
        Ok(())
    }

    /// Runs in a background tokio task; the handle stops it.
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), jobq::Error> {
    /// let handle = jobq::Worker::builder().build().await?.spawn();
    /// // ... serve requests ...
    /// handle.shutdown().await?;
    /// # Ok(()) }
    /// ```
    #[must_use = "dropping the handle leaves the worker running with no way to stop it gracefully; call .shutdown().await on it"]
    pub fn spawn(self) -> ShutdownHandle {
        let stop = CancellationToken::new();
        let signal = stop.clone();
        let join = tokio::spawn(async move { self.run_until(signal.cancelled_owned()).await });
        ShutdownHandle::new(stop, join)
    }
}

/// Builds a worker from the environment (`DATABASE_URL`, `JOBQ_*`) and runs
/// every registered task until SIGINT or SIGTERM.
///
/// ```no_run
/// #[tokio::main]
/// async fn main() -> Result<(), jobq::Error> {
///     jobq::run().await
/// }
/// ```
pub async fn run() -> Result<(), Error> {
    Worker::builder().build().await?.run().await
}

async fn report_unknown_tasks(shared: &Shared) {
    let result = match shared.pool.get().await {
        Ok(mut conn) => {
            jobq_diesel::pending_unknown_tasks(&mut conn, &shared.queues, &shared.task_names)
                .await
                .map_err(|e| e.to_string())
        }
        Err(e) => Err(e.to_string()),
    };
    match result {
        Ok(unknown) if !unknown.is_empty() => {
            let list: Vec<String> = unknown
                .iter()
                .map(|u| format!("{} ({} pending)", u.task, u.pending))
                .collect();
            tracing::warn!(
                tasks = %list.join(", "),
                "pending jobs of tasks this worker does not know; it will not run them"
            );
        }
        Ok(_) => {}
        Err(e) => tracing::debug!(error = %e, "could not list pending jobs of unknown tasks"),
    }
}

/// The machine's name as the OS reports it (in a container, the
/// container's), recorded with the worker so that operators can find it.
fn hostname() -> String {
    let name = gethostname::gethostname();
    let name = name.to_string_lossy();
    let name = name.trim();
    if name.is_empty() {
        "unknown".to_owned()
    } else {
        name.to_owned()
    }
}
