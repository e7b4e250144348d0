//! `soak`: the queue kept saturated for `--minutes` while two worker
//! processes (default settings, default retention) drain it. (Issue 16:
//! the last minute's throughput ≥ 0.9 of the first's, no 5 s sample below
//! 0.8 of the median, and jobq's tables bounded.)
//!
//! Two producer connections keep at least [`LOW`] jobs pending, topping
//! the backlog up towards [`HIGH`] with `enqueue_many` in batches of
//! 1,000, so the workers never wait for work. They judge the backlog by
//! ids ([`HEAD_SQL`]), not by counting it: a count of 25,000 pending rows
//! fifty times a second took a tenth of the server's time, and more as
//! dead rows piled up, which the figures would have charged to jobq.
//! Every 5 s the bench counts
//! the jobs finished in the window by their `finished_at` (up to a second
//! ago, so that outcome transactions already under way have committed;
//! finished jobs are pruned a minute after they finish, long after they
//! were counted), and samples the jobs table's total size, live and dead
//! tuples and the claim index's size.
//!
//! `--autovacuum off` turns autovacuum off for jobq's tables in the fresh
//! database only (`ALTER TABLE ... SET (autovacuum_enabled = false)`), as
//! on the CI server where only jobq's maintenance vacuums; `on` needs a
//! server with autovacuum on (the private throwaway server has it; a table
//! cannot turn it on where the server has it off). Without the option the
//! server's setting applies.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cli::{Autovacuum, Options};
use crate::db;
use crate::report::BenchResult;
use crate::scenario::drain::enqueue_noops;
use crate::storage::{self, mib, Storage};
use crate::tasks::{noop, noops};
use crate::windows::{steadiness, Window};
use crate::worker::{max_rss_mib, Workers};

/// Worker processes.
const WORKERS: usize = 2;
/// Producer connections.
const PRODUCERS: u64 = 2;
/// The backlog never to fall below.
const LOW: i64 = 20_000;
/// The backlog the producers top up to.
const HIGH: i64 = 30_000;
/// Sampling window.
const WINDOW: Duration = Duration::from_secs(5);
/// Workers' start-up before the first window: process start, pool, first
/// claims.
const WARM_UP: Duration = Duration::from_secs(5);

/// The pending backlog, counted up to [`HIGH`] only (no need to read
/// further): reported every 5 s.
const BACKLOG_SQL: &str = "SELECT count(*) AS n FROM \
     (SELECT 1 FROM jobq.jobs WHERE state = 'pending' LIMIT 30000) p";

/// The id of the next job a claim takes (0 with none pending): one
/// descent of the claim index. Jobs of the soak have one task and one
/// priority and are claimed about in id order, so the jobs from it to the
/// last enqueued id are about the backlog (an enqueue that commits out of
/// id order misplaces one batch at most).
const HEAD_SQL: &str = "SELECT coalesce((SELECT id FROM jobq.jobs WHERE state = 'pending' \
     ORDER BY task, priority DESC, run_at, id LIMIT 1), 0) AS n";

/// The highest job id there is (0 with none).
const LAST_ID_SQL: &str = "SELECT coalesce(max(id), 0) AS n FROM jobq.jobs";

/// Applies `--autovacuum` to the fresh database; returns what holds.
async fn apply_autovacuum(
    conn: &mut diesel_async::AsyncPgConnection,
    wanted: Option<Autovacuum>,
) -> anyhow::Result<&'static str> {
    let server_on = db::count(
        conn,
        "SELECT (current_setting('autovacuum') = 'on')::int::int8 AS n",
    )
    .await?
        == 1;
    match wanted {
        Some(Autovacuum::Off) => {
            let tables = storage::disable_autovacuum(conn).await?;
            println!(
                "   autovacuum off for jobq's {} tables (this database only)",
                tables.len()
            );
            Ok("off (tables)")
        }
        Some(Autovacuum::On) if !server_on => anyhow::bail!(
            "--autovacuum on: this server has autovacuum off, which no table setting \
             overrides; unset DATABASE_URL to use the private server (autovacuum on)"
        ),
        _ if server_on => Ok("on (server)"),
        _ => Ok("off (server)"),
    }
}

/// Runs the scenario.
pub async fn run(options: &Options) -> anyhow::Result<Vec<BenchResult>> {
    println!("== soak");
    let database = db::fresh().await?;
    let url = database.url().to_owned();
    let mut conn = db::connect(&url).await?;
    let autovacuum = apply_autovacuum(&mut conn, options.autovacuum).await?;
    enqueue_noops(&url, HIGH as usize).await?;

    let stop = Arc::new(AtomicBool::new(false));
    // The highest id enqueued so far, by any producer.
    let last_id = Arc::new(AtomicI64::new(db::count(&mut conn, LAST_ID_SQL).await?));
    let mut producers = Vec::new();
    for p in 0..PRODUCERS {
        let mut conn = db::connect(&url).await?;
        let stop = Arc::clone(&stop);
        let last_id = Arc::clone(&last_id);
        producers.push(tokio::spawn(async move {
            let mut n = (p + 1) << 40;
            let mut sent = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let head = db::count(&mut conn, HEAD_SQL).await?;
                let last = last_id.load(Ordering::Relaxed);
                let backlog = if head == 0 { 0 } else { last - head + 1 };
                if backlog >= LOW + (HIGH - LOW) / 2 {
                    // Pacing, not synchronisation: look again soon.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                // Each producer tops up its share of the gap.
                let mut owed = ((HIGH - backlog) / PRODUCERS as i64).max(1000) as usize;
                while owed > 0 && !stop.load(Ordering::Relaxed) {
                    let size = owed.min(1000);
                    let ids = noop::enqueue_many(&mut conn, &noops(&mut n, size)).await?;
                    if let Some(max) = ids.iter().map(|id| id.get()).max() {
                        last_id.fetch_max(max, Ordering::Relaxed);
                    }
                    owed -= size;
                    sent += size as u64;
                }
            }
            anyhow::Ok(sent)
        }));
    }
    let workers = Workers::start(&url, WORKERS, false)?;
    tokio::time::sleep(WARM_UP).await;

    let run_for = Duration::from_secs(options.minutes * 60);
    let t0 = storage::db_now(&mut conn).await? - 1.0;
    let mut after = t0;
    let mut windows = Vec::new();
    let mut looks: Vec<Storage> = Vec::new();
    let mut lowest_backlog = i64::MAX;
    let started = Instant::now();
    let mut next = started + WINDOW;
    while started.elapsed() < run_for {
        tokio::time::sleep_until(next.into()).await;
        next += WINDOW;
        let upto = storage::db_now(&mut conn).await? - 1.0;
        let jobs = storage::finished_count(&mut conn, after, upto).await?;
        let look = storage::storage(&mut conn).await?;
        let backlog = db::count(&mut conn, BACKLOG_SQL).await?;
        lowest_backlog = lowest_backlog.min(backlog);
        let window = Window {
            start_s: after - t0,
            end_s: upto - t0,
            jobs,
        };
        println!(
            "  t={:>5.0}s  {:>7.0} jobs/s  table={:>7.1} MiB  active={:>6.1} MiB  \
             claim idx={:>6.1} MiB  live={:>8}  dead={:>8}  active dead={:>7}  vacuums={}  \
             backlog={}",
            window.end_s,
            window.rate(),
            mib(look.total_bytes),
            mib(look.active_bytes),
            mib(look.claim_index_bytes),
            look.live,
            look.dead,
            look.active_dead,
            look.vacuums,
            backlog
        );
        windows.push(window);
        looks.push(look);
        after = upto;
    }
    stop.store(true, Ordering::Relaxed);
    let mut enqueued = HIGH as u64;
    for p in producers {
        enqueued += p.await??;
    }
    let reports = workers.stop().await?;

    let s =
        steadiness(&windows, 60.0).ok_or_else(|| anyhow::anyhow!("soak: no window was sampled"))?;
    let peak = |of: fn(&Storage) -> i64| looks.iter().map(of).max().unwrap_or(0);
    let finished: u64 = windows.iter().map(|w| w.jobs).sum();
    let span = windows.last().map_or(0.0, |w| w.end_s);
    Ok(vec![BenchResult {
        jobs_per_sec: Some(finished as f64 / span.max(1e-9)),
        rss_mib: max_rss_mib(&reports),
        ..BenchResult::new(
            "soak",
            format!(
                "saturated {} min, {WORKERS} workers, autovacuum {autovacuum}",
                options.minutes
            ),
        )
    }
    .extra("first_minute_jobs_per_sec", s.first)
    .extra("last_minute_jobs_per_sec", s.last)
    .extra("last_to_first", s.last_to_first())
    .extra("median_5s_jobs_per_sec", s.median)
    .extra("lowest_5s_jobs_per_sec", s.lowest)
    .extra("lowest_to_median", s.lowest_to_median())
    .extra("table_mib_max", mib(peak(|l| l.total_bytes)))
    .extra(
        "table_mib_end",
        looks.last().map_or(0.0, |l| mib(l.total_bytes)),
    )
    .extra("active_mib_max", mib(peak(|l| l.active_bytes)))
    .extra("active_dead_tuples_max", peak(|l| l.active_dead))
    .extra("claim_index_mib_max", mib(peak(|l| l.claim_index_bytes)))
    .extra("dead_tuples_max", peak(|l| l.dead))
    .extra("live_tuples_max", peak(|l| l.live))
    .extra("vacuums", looks.last().map_or(0, |l| l.vacuums))
    .extra("lowest_backlog", lowest_backlog)
    .extra("enqueued", enqueued)
    .extra("load_average", crate::cpu::load_average())
    .emit()])
}
