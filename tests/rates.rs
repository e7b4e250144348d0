//! Rate limits across a fleet: three worker processes, one of them killed
//! with SIGKILL and replaced twice, run a task with `rate = "10/s"` and
//! `burst = 5` and a task with `key_rate = "2/s"` (`burst = 1`) over three
//! keys, for more than 30 seconds. Handlers write a ledger row with the
//! time their attempt was claimed (the job row's `started_at`, the claim
//! transaction's `now()`, which the rate is computed at). From it the test
//! checks that in no one-second window more than limit + burst jobs
//! started, and that over 30 seconds the achieved rate is within 10 % of
//! the limit: the kills neither leak tokens nor stall the buckets.
//!
//! The poll interval is a second, longer than the gap between tokens: the
//! rate is reached only if workers wake when the next token is due.
//!
//! This target has no libtest harness: the same binary is the test and,
//! with `JOBQ_RATES_WORKER_URL` set, a worker process.

mod support;

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use diesel::sql_types::{BigInt, Nullable, Text, Timestamptz};
use diesel::QueryableByName;
use diesel_async::pooled_connection::AsyncDieselConnectionManager;
use diesel_async::{AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use jobq::{EnqueueOptions, TaskError};
use jobq_testkit::TestDatabase;
use serde::{Deserialize, Serialize};
use support::fleet::{self, Fleet};

const WORKER_ENV: &str = "JOBQ_RATES_WORKER_URL";
const WORKERS: usize = 3;
const RATE: f64 = 10.0;
const BURST: usize = 5;
const KEY_RATE: f64 = 2.0;
const KEY_BURST: usize = 1;
const KEYS: usize = 3;
/// The span the achieved rate is measured over.
const SPAN: Duration = Duration::from_secs(30);
/// Kills, at these offsets into the span.
const KILLS_AT: [Duration; 2] = [Duration::from_secs(10), Duration::from_secs(20)];
const DEADLINE: Duration = Duration::from_secs(150);

type Pool = bb8::Pool<AsyncDieselConnectionManager<AsyncPgConnection>>;

// ---------------------------------------------------------------- worker side

static LEDGER: OnceLock<Pool> = OnceLock::new();

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Work {
    n: usize,
}

async fn ledger(ctx: &jobq::Context) -> Result<(), TaskError> {
    let pool = LEDGER
        .get()
        .ok_or_else(|| TaskError::msg("ledger pool missing"))?;
    let mut conn = pool.get().await?;
    diesel::sql_query(
        "INSERT INTO rates_ledger (job_id, task, key, claimed_at) \
         SELECT id, task, key, started_at FROM jobq.jobs WHERE id = $1 AND state = 'running'",
    )
    .bind::<BigInt, _>(ctx.job_id().get())
    .execute(&mut conn)
    .await?;
    Ok(())
}

#[jobq::task(
    rate = "10/s",
    burst = 5,
    concurrency = 4,
    retry = "50ms",
    max_attempts = 50
)]
async fn rated(ctx: jobq::Context, job: Work) -> Result<(), TaskError> {
    let _ = job;
    ledger(&ctx).await
}

#[jobq::task(
    key_rate = "2/s",
    burst = 1,
    concurrency = 4,
    retry = "50ms",
    max_attempts = 50
)]
async fn key_rated(ctx: jobq::Context, job: Work) -> Result<(), TaskError> {
    let _ = job;
    ledger(&ctx).await
}

async fn worker_main(url: String) -> Result<(), jobq::Error> {
    let _ = LEDGER.set(fleet::side_pool(&url));
    fleet::process_worker(&url, Duration::from_secs(2))
        .poll_interval(Duration::from_secs(1))
        .pool_size(4)
        .build()
        .await?
        .run()
        .await
}

// ------------------------------------------------------------------ test side

fn main() -> std::process::ExitCode {
    if let Some(code) = fleet::worker_process(WORKER_ENV, worker_main) {
        return code;
    }
    fleet::run_tests(&[("rates", || Box::pin(rates()))])
}

#[derive(QueryableByName, Debug, Clone)]
struct Start {
    #[diesel(sql_type = Text)]
    task: String,
    #[diesel(sql_type = Nullable<Text>)]
    key: Option<String>,
    #[diesel(sql_type = Timestamptz)]
    claimed_at: DateTime<Utc>,
}

/// The most starts in any window of `width` (half-open, starting at a
/// start), and where.
fn busiest_window(starts: &[DateTime<Utc>], width: Duration) -> (usize, Option<DateTime<Utc>>) {
    let width = chrono::Duration::from_std(width).expect("small");
    let mut worst = (0, None);
    let mut end = 0;
    for (i, &from) in starts.iter().enumerate() {
        while end < starts.len() && starts[end] < from + width {
            end += 1;
        }
        if end - i > worst.0 {
            worst = (end - i, Some(from));
        }
    }
    worst
}

/// Starts within `SPAN` of the first one.
fn in_span(starts: &[DateTime<Utc>]) -> usize {
    let Some(&first) = starts.first() else {
        return 0;
    };
    let span = chrono::Duration::from_std(SPAN).expect("small");
    starts.iter().filter(|&&s| s < first + span).count()
}

fn assert_rate(what: &str, starts: &[DateTime<Utc>], rate: f64, burst: usize) {
    let limit = rate as usize;
    let (most, at) = busiest_window(starts, Duration::from_secs(1));
    assert!(
        most <= limit + burst,
        "{what}: {most} starts in the second from {at:?} (limit {limit} + burst {burst})"
    );
    let achieved = in_span(starts) as f64 / SPAN.as_secs_f64();
    assert!(
        (achieved - rate).abs() <= rate * 0.1,
        "{what}: {achieved:.2} starts/s over {SPAN:?}, not within 10 % of {rate}"
    );
    println!("{what}: {achieved:.2}/s over {SPAN:?}, busiest second {most}");
}

async fn rates() {
    let db = TestDatabase::create().await.expect("test database");
    let pool: Pool = fleet::side_pool(db.url());
    let mut conn = pool.get().await.expect("connection");
    jobq::migrate(&mut conn).await.expect("migrate");
    conn.batch_execute(
        "CREATE TABLE rates_ledger ( \
             id bigserial PRIMARY KEY, job_id bigint NOT NULL, task text NOT NULL, key text, \
             claimed_at timestamptz NOT NULL)",
    )
    .await
    .expect("ledger table");
    // More than the span can drain, so that the limit, not the backlog,
    // sets the pace throughout.
    let backlog = (RATE * SPAN.as_secs_f64() * 1.5) as usize;
    let jobs: Vec<Work> = (0..backlog).map(|n| Work { n }).collect();
    rated::enqueue_many(&mut conn, &jobs)
        .await
        .expect("enqueue");
    let per_key = (KEY_RATE * SPAN.as_secs_f64() * 1.5) as usize;
    for n in 0..per_key {
        for k in 0..KEYS {
            key_rated::enqueue_with(
                &mut conn,
                &Work { n },
                EnqueueOptions::new().key(format!("k{k}")),
            )
            .await
            .expect("enqueue");
        }
    }
    drop(conn);

    let mut fleet = Fleet::new(WORKER_ENV);
    for _ in 0..WORKERS {
        fleet.spawn(db.url());
    }
    let deadline = Instant::now() + DEADLINE;
    // The span starts with the first start.
    let first = loop {
        fleet.live();
        let mut conn = pool.get().await.expect("connection");
        let started: Vec<Start> = diesel::sql_query(
            "SELECT task, key, claimed_at FROM rates_ledger ORDER BY claimed_at LIMIT 1",
        )
        .load(&mut conn)
        .await
        .expect("ledger");
        if !started.is_empty() {
            break Instant::now();
        }
        assert!(
            Instant::now() < deadline,
            "no job started\n{}",
            fleet.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for at in KILLS_AT {
        // Timing the kills is the test's own schedule, not synchronisation.
        tokio::time::sleep_until((first + at).into()).await;
        let live = fleet.live();
        fleet.kill(live[fastrand::usize(..live.len())]);
        fleet.spawn(db.url());
    }
    tokio::time::sleep_until((first + SPAN + Duration::from_secs(2)).into()).await;
    fleet.live();
    drop(fleet);

    let mut conn = pool.get().await.expect("connection");
    let starts: Vec<Start> =
        diesel::sql_query("SELECT task, key, claimed_at FROM rates_ledger ORDER BY claimed_at, id")
            .load(&mut conn)
            .await
            .expect("ledger");
    let of = |task: &str, key: Option<&str>| -> Vec<DateTime<Utc>> {
        starts
            .iter()
            .filter(|s| s.task == task && (key.is_none() || s.key.as_deref() == key))
            .map(|s| s.claimed_at)
            .collect()
    };
    assert_rate("rated", &of("rated", None), RATE, BURST);
    let mut per_key: BTreeMap<String, usize> = BTreeMap::new();
    for k in 0..KEYS {
        let key = format!("k{k}");
        let starts = of("key_rated", Some(&key));
        per_key.insert(key.clone(), starts.len());
        assert_rate(&format!("key_rated {key}"), &starts, KEY_RATE, KEY_BURST);
    }
}
