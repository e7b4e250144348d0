//! `scheduled`: do jobs waiting for a later time slow down the work that is
//! due? (Invariant 8: a claim's cost follows due work.)
//!
//! Four fresh databases, measured alike: one holding nothing else
//! ("empty", measured first and again last), one holding `--future-rows` jobs of the measured task due in
//! an hour at the same priority as the measured jobs, and one holding as
//! many at a higher priority (which the claim's order puts first). The
//! future rows are inserted by raw SQL with the default state, as another
//! service would, and the table is then vacuumed and analyzed. In each:
//!
//! - **pickup**: an idle in-process worker; `--samples` jobs enqueued one
//!   at a time, `--gap-ms` apart; from the enqueue's commit to the
//!   handler's start (as in `latency`).
//! - **delayed**: the same worker; `--samples` jobs enqueued with a delay
//!   of [`DELAY`], `--gap-ms` apart (so several wait at once); from the
//!   moment each was due to its handler's start. "Due" is taken as the
//!   enqueue call's start plus the delay, before the database's `now()`,
//!   so the figure errs on the late side by the call's first half trip.
//! - **drain**: `--jobs` due jobs enqueued up front, then one worker
//!   process with default settings runs them (as in `drain`), timed by
//!   the rows' own timestamps.
//!
//! Ratios are to the empty databases of the same run (both measurements
//! pooled), so that 1.0 means no slowdown: for pickup the empty database's p50 over this one's, for
//! drain this one's jobs/s over the empty one's. Not part of `all`: it
//! fills two tables of a million rows, minutes on a small machine.

use std::time::{Duration, Instant};

use diesel::sql_types::{BigInt, SmallInt, Text};
use diesel_async::RunQueryDsl;

use crate::cli::Options;
use crate::db;
use crate::report::{ms, percentile, BenchResult};
use crate::tasks::{timed, Timed, TIMED, TIMED_STARTS};
use crate::worker::Workers;

/// Delay of the delayed jobs.
const DELAY: Duration = Duration::from_millis(100);

/// Payload numbers of the drain's jobs start here, above the samples'.
const DRAIN_BASE: u64 = 1 << 40;

/// One database's figures.
struct Figures {
    pickup: Vec<Duration>,
    delayed: Vec<Duration>,
    drain_jobs_per_sec: f64,
}

/// Runs the scenario.
pub async fn run(options: &Options) -> anyhow::Result<Vec<BenchResult>> {
    println!("== scheduled");
    let rows = options.future_rows;
    // The empty table is measured first and last, and the baseline pools
    // both: a shared machine drifts over the minutes a run takes, and a
    // baseline taken at one end only would charge the drift to the rows.
    let first = measure(options, None).await?;
    let same = measure(options, Some((rows, 0))).await?;
    let higher = measure(options, Some((rows, 10))).await?;
    let last = measure(options, None).await?;
    let empty = Figures {
        pickup: [first.pickup, last.pickup].concat(),
        delayed: [first.delayed, last.delayed].concat(),
        drain_jobs_per_sec: (first.drain_jobs_per_sec + last.drain_jobs_per_sec) / 2.0,
    };
    println!(
        "  empty table: drain {:.0} jobs/s first, {:.0} jobs/s last",
        first.drain_jobs_per_sec, last.drain_jobs_per_sec
    );
    let empty_p50 = ms(median(&empty.pickup));
    let empty_drain = empty.drain_jobs_per_sec;
    let mut results = Vec::new();
    for (label, figures) in [
        ("empty table (first and last)".to_owned(), empty),
        (format!("{rows} due in 1 h, same priority"), same),
        (format!("{rows} due in 1 h, higher priority"), higher),
    ] {
        let Figures {
            mut pickup,
            mut delayed,
            drain_jobs_per_sec,
        } = figures;
        pickup.sort_unstable();
        let pickup_p50 = ms(percentile(&pickup, 50.0));
        results.push(
            BenchResult::new("scheduled", format!("pickup, {label}"))
                .with_latencies(&mut pickup)
                .extra("ratio_to_empty", empty_p50 / pickup_p50.max(1e-9))
                .emit(),
        );
        results.push(
            BenchResult::new(
                "scheduled",
                format!(
                    "start after run_at ({} ms delay), {label}",
                    DELAY.as_millis()
                ),
            )
            .with_latencies(&mut delayed)
            .emit(),
        );
        results.push(
            BenchResult {
                jobs_per_sec: Some(drain_jobs_per_sec),
                ..BenchResult::new("scheduled", format!("drain {}, {label}", options.jobs))
            }
            .extra("ratio_to_empty", drain_jobs_per_sec / empty_drain.max(1e-9))
            .emit(),
        );
    }
    Ok(results)
}

/// The three measurements on a fresh database holding `future` (rows,
/// priority) jobs of the measured task due in an hour.
async fn measure(options: &Options, future: Option<(u64, i16)>) -> anyhow::Result<Figures> {
    let database = db::fresh().await?;
    let url = database.url().to_owned();
    let mut conn = db::connect(&url).await?;
    if let Some((rows, priority)) = future {
        let fill = Instant::now();
        // Filed `scheduled` as jobq's own enqueue files a delayed job (a
        // raw insert leaving the state to its default is filed by the
        // insert trigger with one more update per row: a different cost).
        diesel::sql_query(
            "INSERT INTO jobq.jobs (task, payload, priority, run_at, state) \
             SELECT $1, jsonb_build_object('n', g), $3, \
                 now() + interval '1 hour' + g * interval '1 millisecond', 'scheduled' \
             FROM generate_series(1, $2) AS g",
        )
        .bind::<Text, _>(TIMED)
        .bind::<BigInt, _>(i64::try_from(rows)?)
        .bind::<SmallInt, _>(priority)
        .execute(&mut conn)
        .await?;
        println!(
            "  {rows} rows due in 1 h at priority {priority} ready in {:.1} s",
            fill.elapsed().as_secs_f64()
        );
    }
    db::settle(&mut conn).await?;

    let worker = jobq::Worker::builder()
        .tasks(crate::tasks::BASE_TASKS)
        .database_url(&url)
        .build()
        .await?
        .spawn();
    // Let the worker register, LISTEN and go idle.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let gap = Duration::from_millis(options.gap_ms);

    // Pickup: from the commit of each enqueue to its handler's start.
    let mut commits = Vec::with_capacity(options.samples);
    for n in 0..options.samples {
        timed::enqueue(&mut conn, &Timed { n: n as u64 }).await?;
        commits.push(Instant::now());
        tokio::time::sleep(gap).await;
    }
    let starts = collect(options.samples, "pickup").await?;
    let pickup: Vec<Duration> = starts
        .into_iter()
        .map(|(n, started)| started.saturating_duration_since(commits[n as usize]))
        .collect();

    // Delayed: from the due time of each to its handler's start.
    let mut due = Vec::with_capacity(options.samples);
    for n in 0..options.samples {
        let call = Instant::now();
        timed::enqueue_with(
            &mut conn,
            &Timed { n: n as u64 },
            jobq::EnqueueOptions::new().delay(DELAY),
        )
        .await?;
        due.push(call + DELAY);
        tokio::time::sleep(gap).await;
    }
    let starts = collect(options.samples, "delayed").await?;
    let delayed: Vec<Duration> = starts
        .into_iter()
        .map(|(n, started)| started.saturating_duration_since(due[n as usize]))
        .collect();
    worker.shutdown().await?;

    // Drain: the due jobs up front, then one worker process.
    let mut n = DRAIN_BASE;
    while n < DRAIN_BASE + options.jobs as u64 {
        let size = 1000.min(DRAIN_BASE + options.jobs as u64 - n);
        let payloads: Vec<Timed> = (n..n + size).map(|n| Timed { n }).collect();
        timed::enqueue_many(&mut conn, &payloads).await?;
        n += size;
    }
    db::settle(&mut conn).await?;
    Workers::start(&url, 1, true)?.stop().await?;
    let drained = db::count(
        &mut conn,
        &format!(
            "SELECT count(*) AS n FROM jobq.jobs WHERE task = '{TIMED}' AND state = 'completed' \
             AND (payload->>'n')::bigint >= {DRAIN_BASE}"
        ),
    )
    .await?;
    anyhow::ensure!(
        drained == options.jobs as i64,
        "scheduled: {drained} of {} due jobs completed",
        options.jobs
    );
    let span = db::seconds(
        &mut conn,
        &format!(
            "SELECT extract(epoch FROM max(finished_at) - min(started_at))::float8 AS s \
             FROM jobq.jobs WHERE task = '{TIMED}' AND (payload->>'n')::bigint >= {DRAIN_BASE}"
        ),
    )
    .await?;
    let drain_jobs_per_sec = options.jobs as f64 / span.max(1e-9);
    let waiting = db::count(
        &mut conn,
        &format!("SELECT count(*) AS n FROM jobq.jobs WHERE task = '{TIMED}' AND run_at > now()"),
    )
    .await?;
    let expected = future.map_or(0, |(rows, _)| rows as i64);
    anyhow::ensure!(
        waiting == expected,
        "scheduled: {waiting} future rows left of {expected}"
    );
    println!(
        "  pickup p50 {:.2} ms, delayed p50 {:.2} ms, drain {drain_jobs_per_sec:.0} jobs/s",
        ms(median(&pickup)),
        ms(median(&delayed)),
    );
    Ok(Figures {
        pickup,
        delayed,
        drain_jobs_per_sec,
    })
}

fn median(samples: &[Duration]) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    percentile(&sorted, 50.0)
}

/// Waits (up to 10 s) for `count` handler starts and takes them.
async fn collect(count: usize, what: &str) -> anyhow::Result<Vec<(u64, Instant)>> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let seen = TIMED_STARTS.lock().unwrap_or_else(|p| p.into_inner()).len();
        if seen >= count || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let starts = std::mem::take(&mut *TIMED_STARTS.lock().unwrap_or_else(|p| p.into_inner()));
    anyhow::ensure!(
        starts.len() == count,
        "scheduled ({what}): {} of {count} jobs ran",
        starts.len()
    );
    Ok(starts)
}
