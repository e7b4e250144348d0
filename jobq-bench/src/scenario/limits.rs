//! `limits`: the drain of `--jobs` no-op jobs by two worker processes, for
//! an unlimited task, a task with `global_concurrency` (set above what the
//! workers can hold, so that it measures the limited claim, not the
//! limit), a task with `key_concurrency = 1` over 1,000 keys, and a task
//! with `rate = "1000000/s"` and `burst = 1000` (above the achievable
//! rate: it measures spending tokens in the claim); each
//! reported with its ratio to the unlimited drain of the same run. Timed
//! like `drain`: from the first claim to the last outcome, by the
//! database's clock.

use diesel_async::RunQueryDsl;

use crate::cli::Options;
use crate::db;
use crate::report::BenchResult;
use crate::tasks::{global_noop, keyed_noop, noop, noops, rated_noop};
use crate::worker::Workers;

/// Keys of the keyed drain.
const KEYS: u64 = 1000;
const WORKERS: usize = 2;

/// Runs the scenario.
pub async fn run(options: &Options) -> anyhow::Result<Vec<BenchResult>> {
    println!("== limits");
    let unlimited = drain(options, "bench.noop").await?;
    let mut results = Vec::new();
    for (task, config) in [
        ("bench.noop", "unlimited"),
        ("bench.global", "global_concurrency = 2000"),
        ("bench.keyed", "key_concurrency = 1, 1000 keys"),
        ("bench.rated", "rate = 1000000/s, burst = 1000"),
    ] {
        let jobs_per_sec = if task == "bench.noop" {
            unlimited
        } else {
            drain(options, task).await?
        };
        results.push(
            BenchResult {
                jobs_per_sec: Some(jobs_per_sec),
                ..BenchResult::new(
                    "limits",
                    format!("{} jobs, {WORKERS} workers, {config}", options.jobs),
                )
            }
            .extra("ratio_to_unlimited", jobs_per_sec / unlimited)
            .emit(),
        );
    }
    Ok(results)
}

/// Drains `--jobs` jobs of `task` in a fresh database; jobs per second.
async fn drain(options: &Options, task: &str) -> anyhow::Result<f64> {
    let database = db::fresh().await?;
    let url = database.url().to_owned();
    let mut conn = db::connect(&url).await?;
    let mut n = 0u64;
    while (n as usize) < options.jobs {
        let size = 1000.min(options.jobs - n as usize);
        let payloads = noops(&mut n, size);
        match task {
            "bench.global" => {
                global_noop::enqueue_many(&mut conn, &payloads).await?;
            }
            "bench.keyed" => {
                keyed_noop::enqueue_many(&mut conn, &payloads).await?;
            }
            "bench.rated" => {
                rated_noop::enqueue_many(&mut conn, &payloads).await?;
            }
            _ => {
                noop::enqueue_many(&mut conn, &payloads).await?;
            }
        }
    }
    if task == "bench.keyed" {
        // Keys round-robin over the jobs, set before any worker starts (one
        // statement instead of one enqueue call per key and batch).
        diesel::sql_query(format!(
            "UPDATE jobq.jobs SET key = 'key-' || (id % {KEYS}) WHERE task = 'bench.keyed'"
        ))
        .execute(&mut conn)
        .await?;
    }
    db::settle(&mut conn).await?;
    Workers::start_serving(&url, WORKERS, true, &[task.to_owned()])?
        .stop()
        .await?;
    let completed = db::count(
        &mut conn,
        &format!(
            "SELECT count(*) AS n FROM jobq.jobs WHERE task = '{task}' AND state = 'completed'"
        ),
    )
    .await?;
    anyhow::ensure!(
        completed == options.jobs as i64,
        "limits: {completed} of {} jobs of {task} completed",
        options.jobs
    );
    let span = db::seconds(
        &mut conn,
        &format!(
            "SELECT extract(epoch FROM max(finished_at) - min(started_at))::float8 AS s \
             FROM jobq.jobs WHERE task = '{task}'"
        ),
    )
    .await?;
    Ok(options.jobs as f64 / span.max(1e-9))
}
