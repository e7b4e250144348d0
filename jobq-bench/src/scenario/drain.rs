//! `drain`: `--jobs` no-op jobs enqueued up front, then 1 (and 2) worker
//! processes with default settings run them all.
//!
//! Throughput is measured by the database's own clock, from the first
//! claim (`min(started_at)`, set by the claim statement right before the
//! first handler starts) to the last outcome written (`max(finished_at)`):
//! both timestamps come from one server, so process start-up and shutdown
//! are excluded and no cross-process clock is needed. The limit is the
//! minimal SQL loop with as many connections as there are workers, on a
//! fresh set of jobs in the same database afterwards; then the same with
//! jobq's own statements ([`crate::sql_loop`]), which tells how much of the
//! distance to the limit is the statements and how much the runtime.
//!
//! Each of the three phases also reports where the CPU went ([`crate::cpu`]):
//! the server's CPU per job (for jobq including the workers' start-up and
//! shutdown), the workers' own, and how busy the machine was (for jobq
//! from the first claim to the last outcome). On a machine whose cores the
//! server and the workers share, these say whether a gap to the limit is
//! more work per job or idle cores.

use std::time::Instant;

use diesel_async::AsyncPgConnection;

use crate::cli::Options;
use crate::cpu::{self, MachineSampler, Sample};
use crate::db;
use crate::limit;
use crate::report::BenchResult;
use crate::sql_loop;
use crate::tasks::{noop, noops};
use crate::worker::{max_rss_mib, total_cpu_s, Workers};

/// Runs the scenario.
pub async fn run(options: &Options) -> anyhow::Result<Vec<BenchResult>> {
    println!("== drain");
    let mut results = Vec::new();
    for &workers in &options.workers {
        results.push(run_one(options, workers).await?);
    }
    Ok(results)
}

/// Enqueues `jobs` no-op jobs through the typed API, in batches of 1,000.
pub async fn enqueue_noops(url: &str, jobs: usize) -> anyhow::Result<()> {
    let mut conn = db::connect(url).await?;
    enqueue_noops_only(&mut conn, jobs).await?;
    db::settle(&mut conn).await
}

/// The same on `conn`, in its transaction if one is open, without
/// settling the table afterwards.
pub async fn enqueue_noops_only(conn: &mut AsyncPgConnection, jobs: usize) -> anyhow::Result<()> {
    let mut n = 0u64;
    while (n as usize) < jobs {
        let size = 1000.min(jobs - n as usize);
        let payloads = noops(&mut n, size);
        noop::enqueue_many(conn, &payloads).await?;
    }
    Ok(())
}

async fn run_one(options: &Options, workers: usize) -> anyhow::Result<BenchResult> {
    let database = db::fresh().await?;
    let url = database.url().to_owned();
    enqueue_noops(&url, options.jobs).await?;
    let wall = Instant::now();
    let server_cpu = Sample::now();
    let sampler = MachineSampler::start();
    let reports = Workers::start(&url, workers, true)?.stop().await?;
    let wall = wall.elapsed();
    let samples = sampler.stop();
    let server_cpu = server_cpu.until(&Sample::after_disconnect().await);
    let mut conn = db::connect(&url).await?;
    let completed = db::count(
        &mut conn,
        "SELECT count(*) AS n FROM jobq.jobs WHERE task = 'bench.noop' AND state = 'completed'",
    )
    .await?;
    anyhow::ensure!(
        completed == options.jobs as i64,
        "drain: {completed} of {} jobs completed",
        options.jobs
    );
    let span = db::seconds(
        &mut conn,
        "SELECT extract(epoch FROM max(finished_at) - min(started_at))::float8 AS s \
         FROM jobq.jobs WHERE task = 'bench.noop'",
    )
    .await?;
    let jobs_per_sec = options.jobs as f64 / span.max(1e-9);
    let first_claim = db::seconds(
        &mut conn,
        "SELECT extract(epoch FROM min(started_at))::float8 AS s \
         FROM jobq.jobs WHERE task = 'bench.noop'",
    )
    .await?;
    let busy = cpu::busy_within(&samples, first_claim, first_claim + span);
    // Every statement has its own now(): distinct timestamps count the
    // claim and outcome statements, i.e. the average batch sizes.
    let claims = db::count(
        &mut conn,
        "SELECT count(DISTINCT started_at) AS n FROM jobq.jobs WHERE task = 'bench.noop'",
    )
    .await?;
    let outcome_writes = db::count(
        &mut conn,
        "SELECT count(DISTINCT finished_at) AS n FROM jobq.jobs WHERE task = 'bench.noop'",
    )
    .await?;
    let limit = limit::measure(&url, options.jobs as u64, workers).await?;
    let sql_loop = sql_loop::measure(&url, options.jobs as u64, workers).await?;
    let jobs = options.jobs;
    Ok(BenchResult {
        jobs_per_sec: Some(jobs_per_sec),
        limit_jobs_per_sec: Some(limit.jobs_per_sec),
        rss_mib: max_rss_mib(&reports),
        ..BenchResult::new(
            "drain",
            format!("{} no-op jobs, {workers} worker process(es)", options.jobs),
        )
    }
    .extra("ratio_to_limit", jobs_per_sec / limit.jobs_per_sec)
    .extra("sql_loop_jobs_per_sec", sql_loop.jobs_per_sec)
    .extra(
        "sql_loop_ratio_to_limit",
        sql_loop.jobs_per_sec / limit.jobs_per_sec,
    )
    .extra("ratio_to_sql_loop", jobs_per_sec / sql_loop.jobs_per_sec)
    .extra("wall_s_incl_startup", wall.as_secs_f64())
    .extra("worker_cpu_s", total_cpu_s(&reports))
    .extra(
        "worker_cpu_us_per_job",
        total_cpu_s(&reports) * 1e6 / jobs as f64,
    )
    .extra("server_cpu_us_per_job", server_cpu.server_us_per_job(jobs))
    .extra(
        "limit_server_cpu_us_per_job",
        limit.cpu.server_us_per_job(limit.jobs),
    )
    .extra(
        "sql_loop_server_cpu_us_per_job",
        sql_loop.cpu.server_us_per_job(sql_loop.jobs),
    )
    .extra("busy", busy)
    .extra("limit_busy", limit.cpu.busy)
    .extra("sql_loop_busy", sql_loop.cpu.busy)
    .extra("drain_s", span)
    .extra("claim_statements", claims)
    .extra("outcome_statements", outcome_writes)
    .emit())
}
