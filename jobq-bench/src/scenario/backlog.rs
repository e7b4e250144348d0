//! `backlog`: does a big table slow claiming down?
//!
//! Two fresh databases: one holding only the `--jobs` jobs to claim
//! ("empty"), one where they sit behind `--backlog-rows` pending jobs of
//! the same task and next to `--backlog-rows` completed ones (finished
//! within the retention, so not prunable). In each, `--jobs` jobs are
//! claimed 1,000 at a time with jobq's own claim statement and completed
//! with its own outcome statement, on one connection: the worker's hot
//! path without the runtime around it, so the ratio isolates what the
//! table's size does to the SQL. Reported: claim throughput with the
//! backlog, the limit (minimal SQL loop) in the same backlog database, and
//! the ratio to the empty table.

use std::time::Instant;

use diesel::sql_types::{BigInt, Text};
use diesel_async::RunQueryDsl;

use crate::cli::Options;
use crate::db;
use crate::limit;
use crate::report::{rate, BenchResult};
use crate::sql_loop;

const TASK: &str = "bench.noop";

/// Runs the scenario.
pub async fn run(options: &Options) -> anyhow::Result<Vec<BenchResult>> {
    println!("== backlog");
    let (empty, _) = measure(options, 0).await?;
    let (full, limit) = measure(options, options.backlog_rows).await?;
    let ratio = full / empty;
    let result = BenchResult {
        jobs_per_sec: Some(full),
        limit_jobs_per_sec: Some(limit),
        ..BenchResult::new(
            "backlog",
            format!(
                "claim {}, {} pending + {} finished",
                options.jobs, options.backlog_rows, options.backlog_rows
            ),
        )
    }
    .extra("empty_table_jobs_per_sec", empty)
    .extra("ratio_to_empty", ratio)
    .emit();
    Ok(vec![result])
}

/// Claim throughput (jobs/s) with `backlog` pending and finished rows,
/// and the minimal loop's in the same database.
async fn measure(options: &Options, backlog: u64) -> anyhow::Result<(f64, f64)> {
    let database = db::fresh().await?;
    let url = database.url().to_owned();
    let mut conn = db::connect(&url).await?;
    let fill = Instant::now();
    if backlog > 0 {
        diesel::sql_query(
            "INSERT INTO jobq.jobs (task, payload, state, attempt, started_at, finished_at) \
             SELECT $1, jsonb_build_object('n', g), 'completed', 1, now(), now() \
             FROM generate_series(1, $2) AS g",
        )
        .bind::<Text, _>(TASK)
        .bind::<BigInt, _>(i64::try_from(backlog)?)
        .execute(&mut conn)
        .await?;
    }
    // The jobs to claim come first in claim order; the pending backlog
    // sits behind them in the same index.
    limit::insert_jobs(&mut conn, TASK, options.jobs as u64).await?;
    if backlog > 0 {
        limit::insert_jobs(&mut conn, TASK, backlog).await?;
    }
    db::exec(&mut conn, "VACUUM ANALYZE jobq.jobs").await?;
    if backlog > 0 {
        println!(
            "  backlog of {backlog} + {backlog} rows ready in {:.1} s",
            fill.elapsed().as_secs_f64()
        );
    }

    let started = Instant::now();
    let done = sql_loop::drain_on(&mut conn, TASK, Some(options.jobs)).await?;
    anyhow::ensure!(done >= options.jobs, "backlog: ran out of jobs");
    let jobs_per_sec = rate(done, started.elapsed());
    let limit = limit::measure(&url, options.jobs as u64, 1)
        .await?
        .jobs_per_sec;
    println!(
        "  {} rows of backlog: jobq claim+complete {jobs_per_sec:.0} jobs/s, minimal loop {limit:.0} jobs/s",
        backlog
    );
    Ok((jobs_per_sec, limit))
}
