//! Command-line options (clap).

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Throughput and latency benchmarks of jobq. The database: DATABASE_URL's
/// server if set, else a private throwaway server (fsync off: not durable
/// figures).
#[derive(Debug, Parser)]
#[command(name = "jobq-bench")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// A scenario, or the hidden worker child.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// enqueue_many in batches, single enqueues from 1 and 8 connections,
    /// and a bare INSERT + COMMIT baseline
    Enqueue(Options),
    /// N no-op jobs enqueued up front, then 1 and 2 worker processes run them
    Drain(Options),
    /// An idle in-process worker; jobs enqueued one at a time, 10 ms apart
    Latency(Options),
    /// Producers at a fixed rate while 2 worker processes drain
    Sustained(Options),
    /// Claim throughput with a big pending + finished backlog vs an empty table
    Backlog(Options),
    /// Every scenario above, in that order
    All(Options),
    /// Pickup latency, delayed-job start and drain with a million jobs due
    /// later vs an empty table (not part of `all`: minutes of set-up)
    Scheduled(Options),
    /// Drain of jobs spread over 100 tasks vs the same jobs of one task,
    /// one worker process each
    Tasks(Options),
    /// Two idle worker processes; the database is stopped for
    /// `--outage-secs` and started again: how soon does each claim again?
    /// (Always on a private server of its own, which it stops.)
    Restart(Options),
    /// The same jobs drained by 1, 2, 4, ... 32 worker processes
    Scale(Options),
    /// Drain of an unlimited task vs one with global_concurrency and one
    /// with key_concurrency = 1 over 1,000 keys (2 worker processes)
    Limits(Options),
    /// 1,000 concurrent waits (`my_task::wait`) on one Waiter: time from
    /// each job's outcome to its wait returning
    Await(Options),
    /// Every page of the web dashboard, timed over HTTP, beside
    /// `--finished-rows` finished jobs (not part of `all`: a minute of
    /// set-up)
    Dashboard(Options),
    /// The queue kept saturated for `--minutes` while 2 worker processes
    /// drain: throughput of the first and last minute, 5 s samples, table
    /// size and dead tuples (not part of `all`: minutes long)
    Soak(Options),
    /// Producers at `--rate` (default 1,000/s) and one worker process, with
    /// a snapshot held open for `--minutes` between a clean and a released
    /// minute: pickup latency and dead tuples per phase (not part of `all`)
    Pinned(Options),
    /// Drain with the worker process behind a `--rtt-ms` round trip (a
    /// network namespace with netem, set up and removed by the bench; needs
    /// root, `ip` and `tc`) vs the same drain without it. Issue 16 calls
    /// it `latency`; that name is the idle pickup scenario of `all`
    Rtt(Options),
    /// A worker process started by `drain` and `sustained`.
    #[command(hide = true)]
    Worker(WorkerOptions),
}

/// Options of the scenarios.
#[derive(Debug, Clone, Args)]
pub struct Options {
    /// Jobs per measurement (enqueue, drain, backlog claims)
    #[arg(long, default_value_t = 100_000, value_parser = at_least_one)]
    pub jobs: usize,
    /// Single enqueues per configuration
    #[arg(long, default_value_t = 5_000)]
    pub singles: usize,
    /// Latency samples
    #[arg(long, default_value_t = 500, value_parser = at_least_one)]
    pub samples: usize,
    /// Pause between latency samples, in ms
    #[arg(long, default_value_t = 10)]
    pub gap_ms: u64,
    /// Duration of the sustained run, in seconds
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub seconds: u64,
    /// Enqueue rate, jobs/s (default: 5,000 for sustained, 1,000 for
    /// pinned)
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub rate: Option<u64>,
    /// Pending rows and finished rows of the backlog table
    #[arg(long, default_value_t = 1_000_000)]
    pub backlog_rows: u64,
    /// Future-dated rows of the scheduled scenario
    #[arg(long, default_value_t = 1_000_000)]
    pub future_rows: u64,
    /// How long the `restart` scenario keeps the database down, seconds
    #[arg(long, default_value_t = 30)]
    pub outage_secs: u64,
    /// Worker process counts of the scale scenario
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 2, 4, 8, 16, 32])]
    pub processes: Vec<usize>,
    /// Concurrent waits (jobs per round) of the await scenario
    #[arg(long, default_value_t = 1_000, value_parser = at_least_one)]
    pub waiters: usize,
    /// Rounds of the await scenario
    #[arg(long, default_value_t = 5, value_parser = at_least_one)]
    pub rounds: usize,
    /// Finished jobs of the dashboard scenario
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub finished_rows: u64,
    /// Timed requests per page of the dashboard scenario (after one
    /// warm-up)
    #[arg(long, default_value_t = 10, value_parser = at_least_one)]
    pub page_requests: usize,
    /// Duration of the soak run, and of the pinned snapshot, in minutes
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub minutes: u64,
    /// Autovacuum for jobq's tables in the soak's database (default: the
    /// server's setting)
    #[arg(long, value_enum)]
    pub autovacuum: Option<Autovacuum>,
    /// Round trip between the rtt scenario's worker and the database, ms
    #[arg(long, default_value_t = 2.0, value_parser = non_negative_ms)]
    pub rtt_ms: f64,
    /// Worker process counts of the drain scenario
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 2])]
    pub workers: Vec<usize>,
}

/// Options of the hidden `worker` subcommand.
#[derive(Debug, Clone, Args)]
pub struct WorkerOptions {
    /// Database to work on.
    #[arg(long)]
    pub url: String,
    /// Stop once no job is pending or running (else: when stdin closes).
    #[arg(long)]
    pub until_empty: bool,
    /// The tasks to serve (default: the bench's own three, not the
    /// `tasks` scenario's hundred).
    #[arg(long, value_delimiter = ',')]
    pub tasks: Vec<String>,
}

/// `--autovacuum`'s values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Autovacuum {
    /// The server's autovacuum (which must be on).
    On,
    /// Off for jobq's tables in the scenario's database.
    Off,
}

impl Options {
    /// `--rate`, or the scenario's own default.
    pub fn rate_or(&self, default: u64) -> u64 {
        self.rate.unwrap_or(default)
    }
}

fn non_negative_ms(raw: &str) -> Result<f64, String> {
    match raw.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        Ok(_) => Err("must be a finite number of ms, at least 0".into()),
        Err(e) => Err(e.to_string()),
    }
}

fn at_least_one(raw: &str) -> Result<usize, String> {
    match raw.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}
