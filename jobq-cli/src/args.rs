//! The command line, as clap reads it. Each command group's arguments sit
//! next to each other here; what a command does lives in `commands/`.

use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// Exit codes, shown at the end of `--help`.
const AFTER_HELP: &str = "\
Exit codes:
  0  success
  1  error (database unreachable or refused, schema missing, a job not retried/cancelled, ...)
  2  usage error (unknown command or option, bad value, `uninstall` without --yes)

The database URL is read from --database-url or DATABASE_URL, in either form libpq takes
(postgres://user:password@host/db?sslmode=require, or host=... user=... key-value pairs),
with TLS as jobq's workers use it. Passwords are never printed.";

/// Operate a jobq queue: install its schema, see what it is doing, retry,
/// cancel and purge jobs, enqueue by hand.
#[derive(Debug, Parser)]
#[command(name = "jobq", version, after_help = AFTER_HELP)]
pub struct Cli {
    /// PostgreSQL connection string.
    #[arg(
        long,
        env = "DATABASE_URL",
        hide_env_values = true,
        global = true,
        value_name = "URL"
    )]
    pub database_url: Option<String>,

    /// Print JSON for scripts instead of tables.
    #[arg(long, global = true)]
    pub json: bool,

    #[command(subcommand)]
    pub command: Command,
}

/// The top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Install or upgrade jobq's schema in the database.
    Migrate,
    /// Drop jobq's schema with every job in it (needs --yes).
    Uninstall {
        /// Confirm: all jobs, worker rows and the history go.
        #[arg(long)]
        yes: bool,
    },
    /// The binary's version and the schema versions it supports and finds.
    Version,
    /// Jobs by queue, task and state, recent throughput, live workers.
    Status {
        /// Refresh until interrupted.
        #[arg(long)]
        watch: bool,
        /// Time between refreshes with --watch (e.g. 2s, 500ms).
        #[arg(long, default_value = "2s", value_parser = duration)]
        interval: Duration,
    },
    /// List, show, retry, cancel and purge jobs.
    #[command(subcommand)]
    Jobs(JobsCommand),
    /// Worker processes and their heartbeats.
    Workers,
    /// Pause, resume and list paused queues.
    #[command(subcommand)]
    Queues(QueuesCommand),
    /// Periodic tasks' schedules: list, pause, resume.
    #[command(subcommand)]
    Schedules(SchedulesCommand),
    /// Rate limits and downstream blocks: list them, lift a block early.
    #[command(subcommand)]
    Limits(LimitsCommand),
    /// Enqueue a job by task name.
    ///
    /// The CLI has no registered tasks, so it cannot check the name: it warns
    /// when the database holds no pending, failed or cancelled job of the task.
    Enqueue(EnqueueArgs),
    /// Serve the web dashboard (read-only unless a token is given).
    Dashboard(DashboardArgs),
}

/// `jobq dashboard`
#[derive(Debug, Args)]
pub struct DashboardArgs {
    /// Address to listen on. Keep it on localhost (or behind a proxy with
    /// TLS): the login token travels in the clear over plain HTTP.
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    pub listen: std::net::SocketAddr,
    /// Allow retry and cancel to whoever logs in with this token. Prefer the
    /// environment variable: a command line is visible to other users.
    #[arg(
        long,
        env = "JOBQ_DASHBOARD_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,
    /// Also answer requests for this host name (repeatable), e.g. the name
    /// a reverse proxy forwards. On a loopback address only localhost,
    /// 127.0.0.1 and [::1] are answered otherwise (against DNS rebinding);
    /// on other addresses any name is, unless this is given.
    #[arg(long = "allow-host", value_name = "NAME")]
    pub allow_hosts: Vec<String>,
}

/// `jobq queues ...`
#[derive(Debug, Subcommand)]
pub enum QueuesCommand {
    /// The paused queues.
    List,
    /// Stop every worker from claiming jobs of this queue (running jobs
    /// finish); lasts until resumed, across restarts.
    Pause {
        /// The queue's name.
        name: String,
    },
    /// Let workers claim jobs of this paused queue again (at once).
    Resume {
        /// The queue's name.
        name: String,
    },
}

/// `jobq limits ...`
#[derive(Debug, Subcommand)]
pub enum LimitsCommand {
    /// The live blocks (TaskError::rate_limited: task or key, until, time
    /// left) and the rate buckets that are not full (when each is full
    /// again). The rates themselves live in the worker binaries.
    List,
    /// Lift a block before its end: the jobs it held back run at once.
    Unblock {
        /// The task's name.
        task: String,
        /// Lift the block of this partition key (without it: the block of
        /// the whole task).
        #[arg(long)]
        key: Option<String>,
    },
}

/// `jobq schedules ...`
#[derive(Debug, Subcommand)]
pub enum SchedulesCommand {
    /// Every schedule: task, expression, time zone, paused, last and next tick.
    List,
    /// Stop the schedule enqueueing ticks on every worker.
    Pause {
        /// The schedule's name (by default its task's name).
        name: String,
    },
    /// Let the schedule enqueue ticks again; the ticks it missed are skipped.
    Resume {
        /// The schedule's name.
        name: String,
    },
}

/// `jobq jobs ...`
#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// Jobs, newest first, with filters.
    List(ListArgs),
    /// One job: its row, payload and error history.
    Show {
        /// The job's id.
        id: i64,
    },
    /// Run failed or cancelled jobs again, with their attempts reset.
    Retry(RetryArgs),
    /// Cancel scheduled, pending or running jobs.
    Cancel {
        /// The jobs' ids.
        #[arg(required = true)]
        ids: Vec<i64>,
    },
    /// Delete finished jobs older than a given age.
    Purge {
        /// States to purge: completed, failed, cancelled (repeat or separate with commas).
        #[arg(long = "state", required = true, value_delimiter = ',')]
        states: Vec<String>,
        /// Minimum age since the job finished (e.g. 7d, 12h, 30m).
        #[arg(long, value_parser = duration)]
        older_than: Duration,
    },
}

/// `jobq jobs list`
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only jobs in this state (scheduled, pending, running, completed, failed, cancelled).
    #[arg(long)]
    pub state: Option<String>,
    /// Only jobs of this task.
    #[arg(long)]
    pub task: Option<String>,
    /// Only jobs on this queue.
    #[arg(long)]
    pub queue: Option<String>,
    /// Only jobs with this dedupe key.
    #[arg(long)]
    pub key: Option<String>,
    /// Only jobs enqueued since: an age (1h, 2d) or a time (2026-11-30T12:00:00Z).
    #[arg(long)]
    pub since: Option<String>,
    /// Only jobs with a smaller id (the next page after this id).
    #[arg(long, value_name = "ID")]
    pub before: Option<i64>,
    /// At most this many (1 to 10000).
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
}

/// `jobq jobs retry`
#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("which").required(true).args(["ids", "all_failed"]))]
pub struct RetryArgs {
    /// The jobs' ids.
    pub ids: Vec<i64>,
    /// Every failed job of --task.
    #[arg(long, requires = "task")]
    pub all_failed: bool,
    /// The task whose failed jobs --all-failed retries.
    #[arg(long, requires = "all_failed")]
    pub task: Option<String>,
}

/// `jobq enqueue`
#[derive(Debug, Args)]
pub struct EnqueueArgs {
    /// The task's name.
    pub task: String,
    /// The payload, as JSON; `-` reads it from stdin (for large payloads).
    #[arg(long, allow_hyphen_values = true)]
    pub payload: String,
    /// Queue (default: "default").
    #[arg(long)]
    pub queue: Option<String>,
    /// Priority; higher runs first (default 0).
    #[arg(long, allow_negative_numbers = true)]
    pub priority: Option<i16>,
    /// Run no earlier than this long from now (e.g. 10m).
    #[arg(long, value_parser = duration)]
    pub delay: Option<Duration>,
    /// Dedupe key: while a job of the task with this key is live, no new one is added.
    #[arg(long)]
    pub key: Option<String>,
    /// Attempts in all (default 20).
    #[arg(long)]
    pub max_attempts: Option<u32>,
}

/// A duration as humans write it: `7d`, `12h`, `30m`, `1h 30m`, `500ms`.
fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (write e.g. 7d, 12h, 30m, 500ms)"))
}
