//! `tasks`: does the number of tasks a worker serves slow it down?
//! (Issue 16: 100 tasks with jobs spread over them drain at ≥ 0.9 of a
//! single task's rate.)
//!
//! `--jobs` no-op jobs are inserted up front, either all of the no-op task
//! (concurrency 1000) or spread evenly over the hundred tasks of
//! [`crate::spread`] (concurrency 10 each, the same thousand slots); then
//! one worker process serving just those tasks runs them, timed by the
//! rows' own timestamps as in `drain`. Both kinds are inserted by the same
//! raw statement, so only the task names differ. The single task is
//! measured first and last, each in a fresh database, and the ratio is the
//! spread drain over the mean of the two, so that a machine drifting over
//! the run is not charged to the hundred tasks.

use crate::cli::Options;
use crate::db;
use crate::report::BenchResult;
use crate::spread;
use crate::worker::Workers;

/// Runs the scenario.
pub async fn run(options: &Options) -> anyhow::Result<Vec<BenchResult>> {
    println!("== tasks");
    let single = vec!["bench.noop".to_owned()];
    let spread = spread::names();
    let first = drain(options.jobs, &single).await?;
    let many = drain(options.jobs, &spread).await?;
    let last = drain(options.jobs, &single).await?;
    let baseline = (first + last) / 2.0;
    let config_single = format!("{} jobs of 1 task (first and last)", options.jobs);
    let config_many = format!("{} jobs over {} tasks", options.jobs, spread.len());
    let results = vec![
        BenchResult {
            jobs_per_sec: Some(baseline),
            ..BenchResult::new("tasks", config_single)
        }
        .extra("first_jobs_per_sec", first)
        .extra("last_jobs_per_sec", last),
        BenchResult {
            jobs_per_sec: Some(many),
            limit_jobs_per_sec: Some(baseline),
            ..BenchResult::new("tasks", config_many)
        }
        .extra("ratio_to_one_task", many / baseline),
    ];
    Ok(results.into_iter().map(BenchResult::emit).collect())
}

/// Inserts `jobs` no-op jobs spread round-robin over `tasks` in a fresh
/// database and returns the rate at which one worker process serving
/// those tasks runs them.
async fn drain(jobs: usize, tasks: &[String]) -> anyhow::Result<f64> {
    let database = db::fresh().await?;
    let url = database.url().to_owned();
    let mut conn = db::connect(&url).await?;
    let names = tasks
        .iter()
        .map(|t| format!("'{t}'"))
        .collect::<Vec<_>>()
        .join(",");
    db::exec(
        &mut conn,
        &format!(
            "INSERT INTO jobq.jobs (task, payload) \
             SELECT (ARRAY[{names}])[1 + i % {n}], jsonb_build_object('n', i) \
             FROM generate_series(1, {jobs}) AS i",
            n = tasks.len()
        ),
    )
    .await?;
    db::settle(&mut conn).await?;
    Workers::start_serving(&url, 1, true, tasks)?.stop().await?;
    db::drained_rate(&mut conn, "tasks", jobs).await
}
