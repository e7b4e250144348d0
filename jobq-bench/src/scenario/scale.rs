//! `scale`: `--jobs` no-op jobs drained by 1, 2, 4, 8, 16 and 32 worker
//! processes (`--processes`). (Issue 16: 32 processes keep ≥ 0.7 of the
//! best rate, and 1 and 2 do not regress.)
//!
//! Each count gets a fresh database and the same jobs; throughput is
//! timed by the rows' own timestamps, as in `drain`. The ratios are to the
//! best count of the same run. Each process opens its pool's connections
//! as it needs them, its claim connection and its listener: 32 processes
//! need a server that allows a few hundred connections (the private
//! server allows 300; PostgreSQL's default is 100).

use crate::cli::Options;
use crate::db;
use crate::report::BenchResult;
use crate::scenario::drain::enqueue_noops;
use crate::worker::Workers;

/// Runs the scenario.
pub async fn run(options: &Options) -> anyhow::Result<Vec<BenchResult>> {
    println!("== scale");
    let mut rates = Vec::new();
    for &processes in &options.processes {
        let rate = drain(options.jobs, processes).await?;
        println!("   {processes} process(es): {rate:.0} jobs/s");
        rates.push((processes, rate));
    }
    let best = rates.iter().map(|&(_, r)| r).fold(0.0, f64::max);
    Ok(rates
        .into_iter()
        .map(|(processes, rate)| {
            BenchResult {
                jobs_per_sec: Some(rate),
                ..BenchResult::new(
                    "scale",
                    format!(
                        "{} no-op jobs, {processes} worker process(es)",
                        options.jobs
                    ),
                )
            }
            .extra("ratio_to_best", rate / best)
            .emit()
        })
        .collect())
}

/// Drains `jobs` no-op jobs with `processes` worker processes in a fresh
/// database: jobs per second.
async fn drain(jobs: usize, processes: usize) -> anyhow::Result<f64> {
    let database = db::fresh().await?;
    let url = database.url().to_owned();
    enqueue_noops(&url, jobs).await?;
    Workers::start(&url, processes, true)?.stop().await?;
    let mut conn = db::connect(&url).await?;
    db::drained_rate(&mut conn, "scale", jobs).await
}
