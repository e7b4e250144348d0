//! `sustained`: producers enqueue at a fixed rate for `--seconds` while two
//! worker processes (default settings, default retention) drain.
//!
//! Two producer connections each call `enqueue_many` every 10 ms with
//! their share of `--rate`. Throughput is the steady state: jobs created
//! after the first fifth of the run (warm-up) until the producers stop, by
//! the database clock. Latency is `started_at - created_at` of those jobs,
//! both set by the server (`created_at` is the enqueue transaction's start,
//! `started_at` the claim's), so the workers being separate processes needs
//! no shared clock. Completed jobs are pruned a minute after they finish
//! (the default retention), so the figures are collected every few seconds
//! from the jobs finished since the last look. The jobs table's size, live
//! rows and dead tuples are sampled at the same moments and reported at
//! the end: with the default retention, live rows level off at about
//! rate × one minute once pruning starts, and dead tuples stay bounded by
//! vacuum (autovacuum, or jobq's own where autovacuum is off). Runs longer
//! than a minute (`--seconds 180`) show the plateau.

use std::time::{Duration, Instant};

use diesel::sql_types::Double;
use diesel::QueryableByName;
use diesel_async::RunQueryDsl;

use crate::cli::Options;
use crate::db;
use crate::limit;
use crate::report::BenchResult;
use crate::tasks::{noop, noops};
use crate::worker::{max_rss_mib, Workers};

const PRODUCERS: u64 = 2;
const WORKERS: usize = 2;
const TICK: Duration = Duration::from_millis(10);

/// One finished job: when it was created, and how long it waited.
#[derive(QueryableByName)]
struct Finished {
    #[diesel(sql_type = Double)]
    created: f64,
    #[diesel(sql_type = Double)]
    latency_ms: f64,
}

/// Jobs completed from `after` (exclusive) up to one second ago, by the
/// database clock; returns the new `after`. The second of margin lets
/// outcome transactions that started before it commit.
async fn collect(
    conn: &mut diesel_async::AsyncPgConnection,
    after: f64,
    into: &mut Vec<Finished>,
) -> anyhow::Result<f64> {
    let upto = db::seconds(
        conn,
        "SELECT extract(epoch FROM now() - interval '1 second')::float8 AS s",
    )
    .await?;
    let rows: Vec<Finished> = diesel::sql_query(format!(
        "SELECT extract(epoch FROM created_at)::float8 AS created, \
             extract(epoch FROM started_at - created_at)::float8 * 1000 AS latency_ms \
         FROM jobq.jobs WHERE task = 'bench.noop' AND state = 'completed' \
           AND finished_at > to_timestamp({after}) AND finished_at <= to_timestamp({upto})"
    ))
    .load(conn)
    .await?;
    into.extend(rows);
    Ok(upto.max(after))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Runs the scenario.
pub async fn run(options: &Options) -> anyhow::Result<Vec<BenchResult>> {
    println!("== sustained");
    let database = db::fresh().await?;
    let url = database.url().to_owned();
    let workers = Workers::start(&url, WORKERS, false)?;
    let mut conn = db::connect(&url).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let t0 = db::seconds(&mut conn, "SELECT extract(epoch FROM now())::float8 AS s").await?;

    let run_for = Duration::from_secs(options.seconds);
    let rate = options.rate_or(5_000);
    let per_tick = rate as f64 / PRODUCERS as f64 * TICK.as_secs_f64();
    let mut producers = Vec::new();
    for p in 0..PRODUCERS {
        let mut conn = db::connect(&url).await?;
        producers.push(tokio::spawn(async move {
            let started = Instant::now();
            let mut ticker = tokio::time::interval(TICK);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let (mut n, mut sent) = (p << 40, 0u64);
            while started.elapsed() < run_for {
                ticker.tick().await;
                // What the schedule owes by now: a slow commit is caught
                // up by the next call, so the offered rate holds.
                let due = (started.elapsed().as_secs_f64() / TICK.as_secs_f64() * per_tick) as u64;
                let size = due.saturating_sub(sent) as usize;
                if size == 0 {
                    continue;
                }
                let payloads = noops(&mut n, size);
                noop::enqueue_many(&mut conn, &payloads).await?;
                sent += size as u64;
            }
            anyhow::Ok(sent)
        }));
    }

    let started = Instant::now();
    let mut samples = Vec::new();
    let mut finished = Vec::new();
    let mut seen_up_to = t0;
    let mut peak_rss_kib = 0u64;
    while started.elapsed() < run_for {
        tokio::time::sleep(Duration::from_secs(5).min(run_for)).await;
        seen_up_to = collect(&mut conn, seen_up_to, &mut finished).await?;
        let stats = db::table_stats(&mut conn).await?;
        peak_rss_kib = peak_rss_kib.max(workers.current_vmhwm_kib().into_iter().max().unwrap_or(0));
        let pending = db::count(
            &mut conn,
            "SELECT count(*) AS n FROM jobq.jobs WHERE state IN ('pending', 'running')",
        )
        .await?;
        println!(
            "  t={:>4.0}s  table={:>7.1} MiB  live={:>8}  dead={:>7}  autovacuums={}  vacuums={}  backlog={}",
            started.elapsed().as_secs_f64(),
            stats.total_bytes as f64 / 1048576.0,
            stats.live,
            stats.dead,
            stats.autovacuums,
            stats.vacuums,
            pending
        );
        samples.push(stats);
    }
    let mut sent = 0;
    for p in producers {
        sent += p.await??;
    }
    let t_end = t0 + started.elapsed().as_secs_f64();
    // Let the workers finish what is queued.
    let drain_deadline = Instant::now() + Duration::from_secs(60);
    while db::count(
        &mut conn,
        "SELECT count(*) AS n FROM jobq.jobs WHERE state IN ('pending', 'running')",
    )
    .await?
        > 0
        && Instant::now() < drain_deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let reports = workers.stop().await?;
    // Past the last outcome's commit, then the rest of the finished jobs.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    collect(&mut conn, seen_up_to, &mut finished).await?;

    let warm = (t_end - t0) / 5.0;
    let mut latencies: Vec<f64> = finished
        .iter()
        .filter(|f| f.created >= t0 + warm && f.created < t_end)
        .map(|f| f.latency_ms)
        .collect();
    latencies.sort_by(f64::total_cmp);
    let steady = latencies.len() as f64 / (t_end - t0 - warm).max(1e-9);
    // Statistics lag a little; give the collector a moment.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let end = db::table_stats(&mut conn).await?;
    let peak =
        |of: fn(&db::TableStats) -> i64| samples.iter().chain([&end]).map(of).max().unwrap_or(0);
    let max_dead = peak(|s| s.dead);
    let max_bytes = peak(|s| s.total_bytes);
    let limit = limit::measure(&url, options.jobs as u64, WORKERS)
        .await?
        .jobs_per_sec;
    let rss = max_rss_mib(&reports).map(|r| r.max(peak_rss_kib as f64 / 1024.0));
    Ok(vec![BenchResult {
        jobs_per_sec: Some(steady),
        p50_ms: Some(percentile(&latencies, 0.50)),
        p95_ms: Some(percentile(&latencies, 0.95)),
        p99_ms: Some(percentile(&latencies, 0.99)),
        limit_jobs_per_sec: Some(limit),
        rss_mib: rss,
        ..BenchResult::new(
            "sustained",
            format!(
                "{} jobs/s offered for {} s, {WORKERS} workers",
                rate, options.seconds
            ),
        )
    }
    .extra("enqueued", sent)
    .extra("latency_clock", "db: started_at - created_at")
    .extra("table_mib_end", end.total_bytes as f64 / 1048576.0)
    .extra("live_rows_end", end.live)
    .extra("dead_tuples_end", end.dead)
    .extra("dead_tuples_max", max_dead)
    .extra("table_mib_max", max_bytes as f64 / 1048576.0)
    .extra("autovacuums", end.autovacuums)
    .extra("vacuums", end.vacuums)
    .emit()])
}
