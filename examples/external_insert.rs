//! Another program writes the jobs, in plain SQL; a jobq worker runs them.
//!
//! ```text
//! cargo run --example external_insert
//! ```
//!
//! The example prints a `psql` command. Run it from another terminal (or
//! have any service, in any language, run the same `INSERT`): the worker
//! wakes at once on the insert's notification, drains whatever is due,
//! gives each job at most five seconds, and on Ctrl-C or SIGTERM lets the
//! running jobs finish before it exits.
//!
//! With `DATABASE_URL` set, it works in a fresh database on that server;
//! without it, on a throwaway PostgreSQL started from the binaries
//! installed on this machine. Either way it leaves nothing behind.

use std::time::Duration;

use diesel_async::{AsyncConnection, AsyncPgConnection};
use jobq::TaskError;
use serde::{Deserialize, Serialize};

/// What the other program inserts as the job's `payload`.
#[derive(Debug, Serialize, Deserialize)]
struct Thumbnail {
    path: String,
    /// Stands in for the time the real work takes.
    #[serde(default)]
    work_ms: u64,
}

/// The task's name is what the other program writes into `jobq.jobs.task`.
/// A job that overruns its timeout fails that attempt; three attempts in
/// all.
#[jobq::task(name = "thumbnail", concurrency = 4, timeout = "5s", max_attempts = 3)]
async fn thumbnail(ctx: jobq::Context, job: Thumbnail) -> Result<(), TaskError> {
    println!("job {}: {} started", ctx.job_id(), job.path);
    tokio::time::sleep(Duration::from_millis(job.work_ms)).await;
    println!("job {}: {} done", ctx.job_id(), job.path);
    Ok(())
}

// `pub`: tests/external_insert.rs runs this very program as its child.
#[tokio::main]
pub async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("jobq=warn")),
        )
        .with_writer(std::io::stderr)
        .init();

    let db = jobq_testkit::TestDatabase::create().await?;
    let mut conn = AsyncPgConnection::establish(db.url()).await?;
    jobq::migrate(&mut conn).await?;

    // The password, if the URL has one, is masked: you know it already.
    let url = jobq_diesel::redact(db.url());
    println!("database: {url}");
    println!("insert a job from another terminal with:");
    println!(
        "  psql '{url}' -c \"INSERT INTO jobq.jobs (task, payload) \
         VALUES ('thumbnail', '{{\\\"path\\\": \\\"cat.png\\\", \\\"work_ms\\\": 300}}')\""
    );
    println!("stop with Ctrl-C (running jobs finish first)");

    // The notification wakes the worker; the poll only covers a lost one,
    // so it can be slow.
    jobq::Worker::builder()
        .database_url(db.url())
        .poll_interval(Duration::from_secs(30))
        .shutdown_timeout(Duration::from_secs(20))
        .build()
        .await?
        .run()
        .await?;

    let stats = jobq::stats(&mut conn).await?;
    let sum = |count: fn(&jobq::TaskStats) -> i64| stats.tasks.iter().map(count).sum::<i64>();
    println!(
        "stopped: {} completed, {} failed, {} left waiting",
        sum(|t| t.completed_last_hour),
        sum(|t| t.failed),
        sum(|t| t.pending + t.scheduled)
    );
    Ok(())
}
