//! Fleet-wide limits under fire: three worker processes, repeatedly killed
//! with SIGKILL and replaced, run a task with `global_concurrency = 2` and
//! a task with `key_concurrency = 1` over six keys. Handlers write a ledger
//! row before their work and one after it, each in its own transaction; from
//! it the test checks that the limits were never exceeded at any instant,
//! that every key's jobs started in priority-then-enqueue order, and that
//! no job was lost.
//!
//! A killed attempt has a start row and no end row. Its slot is held until
//! the rescue moves its row out of `running`, so its interval is closed at
//! the time of the rescue, which the job's error history records for that
//! attempt. Ledger intervals lie inside the real slot intervals (a start
//! row is written after the claim committed, an end row before the outcome
//! is written), so an overlap in the ledger is an overlap in the database.
//!
//! This target has no libtest harness: the same binary is the test and,
//! with `JOBQ_LIMITS_WORKER_URL` set, a worker process.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use diesel::sql_types::{BigInt, Integer, Nullable, SmallInt, Text, Timestamptz};
use diesel::QueryableByName;
use diesel_async::pooled_connection::AsyncDieselConnectionManager;
use diesel_async::{AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use jobq::{EnqueueOptions, TaskError};
use jobq_testkit::TestDatabase;
use serde::{Deserialize, Serialize};
use support::fleet::{self, Fleet};

const WORKER_ENV: &str = "JOBQ_LIMITS_WORKER_URL";
const WORKERS: usize = 3;
const KILLS: usize = 4;
const GLOBAL_LIMIT: usize = 2;
const GLOBAL_JOBS: usize = 120;
const KEYS: usize = 6;
const JOBS_PER_KEY: usize = 20;
const LEASE: Duration = Duration::from_secs(2);
const DEADLINE: Duration = Duration::from_secs(120);

type Pool = bb8::Pool<AsyncDieselConnectionManager<AsyncPgConnection>>;

// ---------------------------------------------------------------- worker side

static LEDGER: OnceLock<Pool> = OnceLock::new();

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Work {
    n: usize,
}

/// Writes the ledger row of `phase` in a transaction of its own.
async fn ledger(ctx: &jobq::Context, phase: &str) -> Result<(), TaskError> {
    let pool = LEDGER
        .get()
        .ok_or_else(|| TaskError::msg("ledger pool missing"))?;
    let mut conn = pool.get().await?;
    diesel::sql_query(
        "INSERT INTO limits_ledger (job_id, attempt, task, key, phase, pid) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind::<BigInt, _>(ctx.job_id().get())
    .bind::<Integer, _>(i32::try_from(ctx.attempt()).unwrap_or(i32::MAX))
    .bind::<Text, _>(ctx.task())
    .bind::<Nullable<Text>, _>(ctx.key())
    .bind::<Text, _>(phase)
    .bind::<Integer, _>(i32::try_from(std::process::id()).unwrap_or(0))
    .execute(&mut conn)
    .await?;
    Ok(())
}

async fn work(ctx: jobq::Context) -> Result<(), TaskError> {
    ledger(&ctx, "start").await?;
    // Work, not synchronisation: long enough for attempts to overlap.
    tokio::time::sleep(Duration::from_millis(fastrand::u64(20..=60))).await;
    ledger(&ctx, "end").await
}

#[jobq::task(
    global_concurrency = 2,
    concurrency = 3,
    retry = "50ms",
    max_attempts = 50
)]
async fn global_job(ctx: jobq::Context, job: Work) -> Result<(), TaskError> {
    let _ = job;
    work(ctx).await
}

#[jobq::task(
    key_concurrency = 1,
    concurrency = 4,
    retry = "50ms",
    max_attempts = 50
)]
async fn keyed_job(ctx: jobq::Context, job: Work) -> Result<(), TaskError> {
    let _ = job;
    work(ctx).await
}

async fn worker_main(url: String) -> Result<(), jobq::Error> {
    let _ = LEDGER.set(fleet::side_pool(&url));
    fleet::process_worker(&url, LEASE)
        .pool_size(6)
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
    fleet::run_tests(&[("limits", || Box::pin(limits()))])
}

#[derive(QueryableByName)]
struct N {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[derive(QueryableByName, Debug, Clone)]
struct LedgerRow {
    #[diesel(sql_type = BigInt)]
    job_id: i64,
    #[diesel(sql_type = Integer)]
    attempt: i32,
    #[diesel(sql_type = Text)]
    task: String,
    #[diesel(sql_type = Nullable<Text>)]
    key: Option<String>,
    #[diesel(sql_type = Text)]
    phase: String,
    #[diesel(sql_type = Timestamptz)]
    at: DateTime<Utc>,
}

/// When each rescued attempt's slot was freed, from the error history.
#[derive(QueryableByName, Debug)]
struct Rescue {
    #[diesel(sql_type = BigInt)]
    job_id: i64,
    #[diesel(sql_type = Integer)]
    attempt: i32,
    #[diesel(sql_type = Timestamptz)]
    at: DateTime<Utc>,
}

#[derive(QueryableByName, Debug)]
struct JobRow {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Text)]
    task: String,
    #[diesel(sql_type = Nullable<Text>)]
    key: Option<String>,
    #[diesel(sql_type = SmallInt)]
    priority: i16,
    #[diesel(sql_type = Text)]
    state: String,
}

async fn count(pool: &Pool, sql: &str) -> i64 {
    let mut conn = pool.get().await.expect("connection");
    diesel::sql_query(sql)
        .get_result::<N>(&mut conn)
        .await
        .expect(sql)
        .n
}

/// One attempt's hold on a slot, as far as the ledger shows it.
#[derive(Debug, Clone)]
struct Interval {
    job: i64,
    attempt: i32,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
}

/// The most intervals covering one instant. At equal times a start counts
/// before an end: touching intervals count as overlapping, the strict
/// reading (a real hand-over leaves a gap: the outcome commits after the
/// end row, the next claim before its start row).
fn max_overlap(intervals: &[&Interval]) -> (usize, Vec<(i64, i32)>) {
    let mut events: Vec<(DateTime<Utc>, i32, usize)> = Vec::new();
    for (i, iv) in intervals.iter().enumerate() {
        events.push((iv.start, 0, i));
        events.push((iv.end, 1, i));
    }
    events.sort();
    let mut open: Vec<usize> = Vec::new();
    let mut worst = (0, Vec::new());
    for (_, kind, i) in events {
        if kind == 0 {
            open.push(i);
            if open.len() > worst.0 {
                worst = (
                    open.len(),
                    open.iter()
                        .map(|&o| (intervals[o].job, intervals[o].attempt))
                        .collect(),
                );
            }
        } else {
            open.retain(|&o| o != i);
        }
    }
    worst
}

async fn limits() {
    let wall = Instant::now();
    let db = TestDatabase::create().await.expect("test database");
    let pool: Pool = fleet::side_pool(db.url());
    let mut conn = pool.get().await.expect("connection");
    jobq::migrate(&mut conn).await.expect("migrate");
    conn.batch_execute(
        "CREATE TABLE limits_ledger ( \
             id bigserial PRIMARY KEY, job_id bigint NOT NULL, attempt int NOT NULL, \
             task text NOT NULL, key text, phase text NOT NULL, pid int NOT NULL, \
             at timestamptz NOT NULL DEFAULT clock_timestamp())",
    )
    .await
    .expect("ledger table");

    // Everything is enqueued before any worker starts, so that each key's
    // order is settled when dispatch begins. Keys are interleaved, and
    // every fifth job of a key has a higher priority: it must run before
    // the key's earlier jobs of lower priority.
    let global: Vec<Work> = (0..GLOBAL_JOBS).map(|n| Work { n }).collect();
    global_job::enqueue_many(&mut conn, &global)
        .await
        .expect("enqueue");
    for n in 0..JOBS_PER_KEY {
        for k in 0..KEYS {
            let mut options = EnqueueOptions::new().key(format!("customer-{k}"));
            if n % 5 == 4 {
                options = options.priority(5);
            }
            keyed_job::enqueue_with(&mut conn, &Work { n }, options)
                .await
                .expect("enqueue");
        }
    }
    drop(conn);
    let total = i64::try_from(GLOBAL_JOBS + KEYS * JOBS_PER_KEY).expect("small");

    let mut fleet = Fleet::new(WORKER_ENV);
    for _ in 0..WORKERS {
        fleet.spawn(db.url());
    }

    // Kill a worker with jobs under way, replace it, and again.
    let mut kills = 0;
    let deadline = Instant::now() + DEADLINE;
    while kills < KILLS {
        assert!(
            Instant::now() < deadline,
            "workers never got going\n{}",
            fleet.logs()
        );
        // Only a worker holding running jobs makes a kill worth it.
        let live = fleet.live();
        let busy = count(
            &pool,
            "SELECT count(DISTINCT pid)::bigint AS n FROM jobq.jobs j \
             JOIN jobq.workers w ON w.id = j.worker_id WHERE j.state = 'running'",
        )
        .await;
        let done = count(
            &pool,
            "SELECT count(*) AS n FROM jobq.jobs WHERE state = 'completed'",
        )
        .await;
        if busy > 0 && done >= (kills as i64 + 1) * 20 {
            let pid = live[fastrand::usize(..live.len())];
            fleet.kill(pid);
            kills += 1;
            fleet.spawn(db.url());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Every job completes.
    loop {
        fleet.live();
        let done = count(
            &pool,
            "SELECT count(*) AS n FROM jobq.jobs WHERE state = 'completed'",
        )
        .await;
        if done == total {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {done} of {total} jobs completed\n{}",
            fleet.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(fleet);

    let mut conn = pool.get().await.expect("connection");
    let jobs: Vec<JobRow> = diesel::sql_query(
        "SELECT id, task, key, priority, state::text AS state FROM jobq.jobs ORDER BY id",
    )
    .load(&mut conn)
    .await
    .expect("jobs");
    assert_eq!(jobs.len() as i64, total, "no job may be lost");
    assert!(jobs.iter().all(|j| j.state == "completed"));
    let rows: Vec<LedgerRow> = diesel::sql_query(
        "SELECT job_id, attempt, task, key, phase, at FROM limits_ledger ORDER BY at, id",
    )
    .load(&mut conn)
    .await
    .expect("ledger");
    let rescues: Vec<Rescue> = diesel::sql_query(
        "SELECT j.id AS job_id, (e->>'attempt')::int AS attempt, (e->>'at')::timestamptz AS at \
         FROM jobq.jobs j, jsonb_array_elements(j.errors) e",
    )
    .load(&mut conn)
    .await
    .expect("error history");
    assert!(
        !rescues.is_empty(),
        "no attempt was rescued: the kills hit nothing"
    );
    let rescued_at: HashMap<(i64, i32), DateTime<Utc>> = rescues
        .iter()
        .map(|r| ((r.job_id, r.attempt), r.at))
        .collect();

    // Intervals per attempt.
    let mut starts: BTreeMap<(i64, i32), &LedgerRow> = BTreeMap::new();
    let mut ends: HashMap<(i64, i32), DateTime<Utc>> = HashMap::new();
    for row in &rows {
        match row.phase.as_str() {
            "start" => {
                let old = starts.insert((row.job_id, row.attempt), row);
                assert!(
                    old.is_none(),
                    "attempt {:?} started twice",
                    (row.job_id, row.attempt)
                );
            }
            _ => {
                ends.insert((row.job_id, row.attempt), row.at);
            }
        }
    }
    let intervals: Vec<(&LedgerRow, Interval)> = starts
        .iter()
        .map(|(&(job, attempt), row)| {
            let end = ends
                .get(&(job, attempt))
                .or_else(|| rescued_at.get(&(job, attempt)))
                .copied()
                .unwrap_or_else(|| {
                    panic!("attempt {attempt} of job {job} has no end and was not rescued")
                });
            (
                *row,
                Interval {
                    job,
                    attempt,
                    start: row.at,
                    end,
                },
            )
        })
        .collect();

    // global_concurrency: never more than the limit, and the limit reached.
    let global: Vec<&Interval> = intervals
        .iter()
        .filter(|(r, _)| r.task == "global_job")
        .map(|(_, i)| i)
        .collect();
    let (most, which) = max_overlap(&global);
    assert!(
        most <= GLOBAL_LIMIT,
        "{most} attempts of global_job ran at once (limit {GLOBAL_LIMIT}): {which:?}"
    );
    assert_eq!(most, GLOBAL_LIMIT, "the fleet never used its two slots");

    // key_concurrency = 1: one attempt per key at any instant, while keys
    // run in parallel.
    let keyed: Vec<&(&LedgerRow, Interval)> = intervals
        .iter()
        .filter(|(r, _)| r.task == "keyed_job")
        .collect();
    for k in 0..KEYS {
        let key = format!("customer-{k}");
        let of_key: Vec<&Interval> = keyed
            .iter()
            .filter(|(r, _)| r.key.as_deref() == Some(key.as_str()))
            .map(|(_, i)| i)
            .collect();
        let (most, which) = max_overlap(&of_key);
        assert!(most <= 1, "{most} attempts of {key} ran at once: {which:?}");
    }
    let all_keyed: Vec<&Interval> = keyed.iter().map(|(_, i)| i).collect();
    assert!(
        max_overlap(&all_keyed).0 > 1,
        "keys never ran in parallel: the test shows nothing"
    );

    // Per-key order: the attempts of a key, in start order, belong to jobs
    // in priority-then-enqueue order (a rescued job goes back to pending
    // in its place, so it runs again before the jobs behind it).
    let rank: HashMap<i64, (i16, i64)> = jobs.iter().map(|j| (j.id, (-j.priority, j.id))).collect();
    for k in 0..KEYS {
        let key = format!("customer-{k}");
        let mut last: Option<(i16, i64)> = None;
        for row in rows
            .iter()
            .filter(|r| r.phase == "start" && r.key.as_deref() == Some(key.as_str()))
        {
            let r = rank[&row.job_id];
            if let Some(prev) = last {
                assert!(
                    r >= prev,
                    "{key}: job {} (priority {}) started after job {} (priority {}) of lower rank",
                    row.job_id,
                    -r.0,
                    prev.1,
                    -prev.0
                );
            }
            last = Some(r);
        }
    }
    // Every job ran to its end at least once.
    for j in &jobs {
        assert!(
            ends.keys().any(|&(job, _)| job == j.id),
            "job {} ({}, {:?}) completed without a finished attempt",
            j.id,
            j.task,
            j.key
        );
    }
    println!(
        "limits: {} jobs, {} attempts, {} rescued, {KILLS} kills, in {:?}",
        jobs.len(),
        starts.len(),
        rescues.len(),
        wall.elapsed()
    );
}
