//! PostgreSQL storage of jobq on diesel and diesel-async.
//!
//! Every SQL statement jobq runs lives in this crate: enqueue, promotion
//! of scheduled jobs, claim, outcomes, heartbeats, rescue, pruning,
//! vacuuming, cancel and status lookups, the schema migrations and the
//! LISTEN connection. It knows nothing of task functions, payload types or
//! the dispatcher: payloads are JSON text here.
//!
//! Each function is one statement (one short transaction) unless its docs
//! say otherwise, so none holds locks while a handler runs.

mod admin;
mod awaited;
mod blocks;
mod claim;
mod claim_heads;
mod claim_lanes;
mod claim_position;
mod completed_segments;
mod connect;
mod conninfo;
mod enqueue;
mod finished;
mod jobs;
mod limited_claim;
mod listener;
mod maintenance;
mod migrations;
mod moved_row;
mod no_jit;
mod outcome;
mod pause;
mod ping;
mod pool;
mod prepared;
mod promote;
mod rate;
mod schedules;
pub mod schema;
mod stats;
mod testing;
#[cfg(feature = "tls")]
mod tls;
mod vacuum;
mod workers;

pub use admin::{
    list_jobs, list_jobs_sql, purge, retry, retry_failed, retry_failed_sql, task_has_jobs,
    uninstall, JobQuery, JobSummaryRow, RetryResult, PURGE_SQL, TASK_HAS_JOBS_SQL,
};
pub use awaited::{clean_awaited, AWAITED_MAX_AGE_HOURS};
pub use blocks::{blocks, rate_buckets, unblock, BlockRow, BucketRow};
pub use claim::{claim, release_claim, ClaimRequest, ClaimedJob, CLAIM_SQL};
pub use claim_heads::{claim_heads, CLAIM_HEADS_SQL};
pub use claim_lanes::{ClaimLanes, CLAIM_LANE_SQL, LANE_LOCK_CLASS};
pub use claim_position::ClaimPosition;
pub use completed_segments::{turn_completed_segments, TruncationWait, Turned};
pub use connect::{
    redact, ConnectFuture, ConnectHook, ConnectOptions, ConnectOptionsError, Connector, SslMode,
};
pub use enqueue::{
    insert_job, insert_jobs, insert_unique_job, KeyHold, NewJob, NewJobs, UniqueInsert,
};
pub use finished::{FinishedListener, WaitedJob, FINISHED_CHANNEL};
pub use jobs::{
    cancel, find_job, find_job_by_key, find_output, pending_unknown_tasks, Cancel, CancelResult,
    JobRow, OutputRow, UnknownTask,
};
pub use limited_claim::{claim_limited, LimitedClaimRequest, GLOBAL_CLAIM_SQL, KEYED_CLAIM_SQL};
pub use listener::{send_probe, Listener, ListenerError, Notification};
pub use maintenance::{prune, rescue, RescuedJob, Retention, RESCUE_SQL};
pub use migrations::{migrate, migrate_to, schema_version, MigrateError, LATEST_VERSION};
pub use moved_row::moved_between_partitions;
pub use outcome::{
    attempt_completed, complete_in_transaction, write_outcomes, write_outcomes_around_locks,
    CompletedIn, NotWritten, Outcome, OutcomeKind, RejectedOutcome, JOB_COLUMNS,
};
pub use pause::{pause_queue, paused_queues, resume_queue};
pub use ping::ping;
pub use pool::{build_pool, Pool, PoolError, PooledConnection};
pub use promote::{promote, Promotion, PROMOTE_SQL};
pub use rate::{next_token, RateLimit};
pub use schedules::{
    declare_schedules, enqueue_ticks, find_schedule, list_schedules, pause_schedule,
    resume_schedule, ScheduleDef, ScheduleRow, TickBatch, TickResult, ENQUEUE_TICKS_SQL,
};
pub use stats::{
    sample_stats, stats, workers, RecentCount, StateCount, StatsRows, WorkerRow,
    COMPLETED_ESTIMATE_SQL, RECENT_COUNTS_SQL, STATE_COUNTS_SQL, WORKERS_SQL,
};
pub use stats::{throughput, MinuteCount, THROUGHPUT_SQL};
pub use testing::{payloads_of, start_next_due, StartedJob};
pub use vacuum::{check_vacuum, vacuum, StatementTimeout, Vacuum, VacuumDue, VacuumPace};
pub use workers::{
    deregister_worker, heartbeat, register_worker, HeartbeatReply, WorkerInfo, HEARTBEAT_SQL,
};

/// The connection type every function here takes.
pub use diesel_async::AsyncPgConnection;
/// The driver under diesel-async, for [`ConnectOptions::config_mut`] and
/// [`ConnectOptions::connect_with_tls`].
pub use tokio_postgres;
