//! `latency`: an idle worker, and jobs enqueued one at a time, `--gap-ms`
//! apart; how long until the handler starts.
//!
//! The worker runs in this process (same binary, its own pool and LISTEN
//! connection, like a separate process would have), so the handler's
//! start and the enqueue's timestamps are read from the same monotonic
//! clock (`std::time::Instant`) with no cross-process clock error. Two
//! figures per sample: from the moment the enqueue's commit returned
//! (the row: what a caller can observe as "job exists"), and from just
//! before the enqueue call (the `from_call_*` extras).
//!
//! Afterwards, on the same database, the minimal LISTEN worker
//! ([`crate::listen_limit`]) takes the same number of samples: its
//! `limit_*` figures are the floor on this machine at this moment (commit
//! and notification times move a lot on a shared disk), and `p50_to_limit`
//! is jobq's median over the floor's.

use std::time::{Duration, Instant};

use crate::cli::Options;
use crate::db;
use crate::listen_limit;
use crate::report::{ms, percentile, BenchResult};
use crate::tasks::{probe, Probe, PROBE_STARTS};

/// Runs the scenario.
pub async fn run(options: &Options) -> anyhow::Result<Vec<BenchResult>> {
    println!("== latency");
    let database = db::fresh().await?;
    let url = database.url().to_owned();
    let worker = jobq::Worker::builder()
        .tasks(crate::tasks::BASE_TASKS)
        .database_url(&url)
        .build()
        .await?
        .spawn();
    // Let the worker register, LISTEN and go idle.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    PROBE_STARTS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clear();

    let mut conn = db::connect(&url).await?;
    let mut calls = Vec::with_capacity(options.samples);
    let mut commits = Vec::with_capacity(options.samples);
    for n in 0..options.samples {
        let call = Instant::now();
        probe::enqueue(&mut conn, &Probe { n }).await?;
        commits.push(Instant::now());
        calls.push(call);
        tokio::time::sleep(Duration::from_millis(options.gap_ms)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let seen = PROBE_STARTS.lock().unwrap_or_else(|p| p.into_inner()).len();
        if seen >= options.samples || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    worker.shutdown().await?;
    let starts = std::mem::take(&mut *PROBE_STARTS.lock().unwrap_or_else(|p| p.into_inner()));
    anyhow::ensure!(
        starts.len() == options.samples,
        "latency: {} of {} probes ran",
        starts.len(),
        options.samples
    );
    let mut from_commit = Vec::with_capacity(starts.len());
    let mut from_call = Vec::with_capacity(starts.len());
    for (n, started) in starts {
        from_commit.push(started.saturating_duration_since(commits[n]));
        from_call.push(started.saturating_duration_since(calls[n]));
    }
    from_call.sort_unstable();
    let mut floor =
        listen_limit::measure(&url, options.samples, Duration::from_millis(options.gap_ms)).await?;
    floor.sort_unstable();
    let floor_p50 = ms(percentile(&floor, 50.0));
    let result = BenchResult::new(
        "latency",
        format!(
            "{} jobs {} ms apart, idle in-process worker",
            options.samples, options.gap_ms
        ),
    )
    .with_latencies(&mut from_commit)
    .extra("from_call_p50_ms", ms(percentile(&from_call, 50.0)))
    .extra("from_call_p95_ms", ms(percentile(&from_call, 95.0)))
    .extra("from_call_p99_ms", ms(percentile(&from_call, 99.0)))
    .extra(
        "from_commit_max_ms",
        ms(*from_commit.last().unwrap_or(&Duration::ZERO)),
    )
    .extra("limit_p50_ms", floor_p50)
    .extra("limit_p95_ms", ms(percentile(&floor, 95.0)))
    .extra("limit_p99_ms", ms(percentile(&floor, 99.0)))
    .extra(
        "p50_to_limit",
        ms(percentile(&from_commit, 50.0)) / floor_p50.max(1e-9),
    )
    .emit();
    Ok(vec![result])
}
