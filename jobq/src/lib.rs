//! Typed background jobs on PostgreSQL.
//!
//! Annotate an async fn with [`task`], enqueue its typed payload inside your
//! own diesel-async transaction, and run [`run`] in a worker binary:
//!
//! ```no_run
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! struct Welcome {
//!     user_id: i64,
//! }
//!
//! #[jobq::task(concurrency = 4, retry = "30s")]
//! async fn send_welcome(job: Welcome) -> Result<(), jobq::TaskError> {
//!     println!("welcome, user {}", job.user_id);
//!     Ok(())
//! }
//!
//! # async fn handler(conn: &mut diesel_async::AsyncPgConnection) -> Result<(), jobq::Error> {
//! // In a request handler, on the app's connection (or inside its transaction):
//! let id = send_welcome::enqueue(conn, &Welcome { user_id: 7 }).await?;
//! # Ok(()) }
//!
//! // In the worker binary:
//! #[tokio::main]
//! async fn main() -> Result<(), jobq::Error> {
//!     jobq::run().await
//! }
//! ```
//!
//! A job's life, the guarantees and the defaults are described in the
//! repository's README.
//!
//! Idempotent submission: [`EnqueueOptions::unique_key`] and
//! [`enqueue_unique`]. Typed outputs: a task fn returning `Result<T, _>`,
//! read with [`output`], or awaited with a [`Waiter`] (`my_task::wait`). The feature `testing` adds `jobq::testing`, a kit
//! for tests of your own tasks (a throwaway database, `drain`,
//! `run_inline`, `assert_enqueued`).

mod admin;
mod complete_in;
mod context;
mod cron;
mod enqueue;
mod error;
mod finished;
mod follow_up;
mod headers;
mod job;
mod job_id;
mod limits;
mod metrics;
mod migrate;
mod output;
mod pause;
mod payload_check;
mod rate;
mod registry;
mod retry;
mod schedules;
mod state;
mod stats;
mod task;
mod task_error;
#[cfg(feature = "testing")]
pub mod testing;
mod tick;
mod trace_context;
mod wait;
mod worker;

#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;

pub use admin::{
    jobs, purge, retry, retry_failed, schema_version, task_has_jobs, uninstall, JobFilter,
    JobSummary, RetryOutcome, SCHEMA_VERSION,
};
pub use context::Context;
pub use enqueue::{
    enqueue, enqueue_json, enqueue_many, enqueue_many_with, enqueue_unique, enqueue_with,
    EnqueueOptions, Enqueued,
};
pub use error::Error;
// Follow-up jobs (`then = ...`).
pub use finished::Finished;
pub use follow_up::FollowUp;
pub use job::{cancel, job, job_by_key, ErrorRecord, JobInfo, JobState};
pub use job_id::JobId;
pub use jobq_macros::task;
pub use limits::{blocks, rate_buckets, unblock, Block, RateBucket};
pub use migrate::migrate;
pub use output::{output, MAX_OUTPUT_SIZE};
pub use pause::{pause_queue, paused_queues, resume_queue};
pub use rate::{ParseRateError, Rate};
pub use state::State;
pub use stats::{stats, workers, Stats, TaskStats, WorkerStatus};
pub use stats::{throughput, MinuteCounts};
pub use task::{Task, TaskOptions};
pub use task_error::{TaskError, MAX_SNOOZE};
// Periodic tasks.
pub use schedules::{pause_schedule, resume_schedule, schedules, Schedule, ScheduleInfo};
pub use tick::Tick;
// Awaiting a job's outcome.
pub use wait::{WaitError, Waiter, WaiterBuilder};
pub use worker::{run, Pool, ShutdownHandle, Worker, WorkerBuilder};
// Connection set-up (TLS, the connect hook): see WorkerBuilder::connect_with.
pub use jobq_diesel::{moved_between_partitions, ConnectOptions, SslMode};
