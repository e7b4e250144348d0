//! Snoozing and listening to the downstream: `TaskError::retry_after` and
//! `ctx.snooze` put a job back without using an attempt, and
//! `TaskError::rate_limited` holds back the task, or the job's key, on
//! every worker until then. Also the builder's rate override (the rate
//! itself is measured across processes in `tests/rates.rs`).

mod support;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use jobq::{EnqueueOptions, JobId, JobState, TaskError};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Unit {
    n: u32,
}

/// A job among those of every test of this binary: the tests run at once,
/// each on a database of its own, so ids repeat; each task belongs to one
/// test.
type Job = (&'static str, JobId);

/// Runs of each job: (attempt number the handler saw, when it started).
static RUNS: Mutex<Vec<(Job, u32, Instant)>> = Mutex::new(Vec::new());

fn runs_of(job: Job) -> Vec<(u32, Instant)> {
    RUNS.lock()
        .unwrap()
        .iter()
        .filter(|r| r.0 == job)
        .map(|r| (r.1, r.2))
        .collect()
}

fn record(ctx: &jobq::Context) -> usize {
    let job = (ctx.task(), ctx.job_id());
    let mut runs = RUNS.lock().unwrap();
    runs.push((job, ctx.attempt(), Instant::now()));
    runs.iter().filter(|r| r.0 == job).count()
}

const SNOOZES: usize = 10;

/// Snoozes ten times, then fails once (an attempt), then succeeds: with
/// `max_attempts = 2` it completes only if no snooze used an attempt.
#[jobq::task(max_attempts = 2, retry = "10ms")]
async fn patient(ctx: jobq::Context, job: Unit) -> Result<(), TaskError> {
    let _ = job;
    let run = record(&ctx);
    match run {
        1..=SNOOZES if run % 2 == 0 => Err(ctx.snooze(Duration::from_millis(20))),
        1..=SNOOZES => Err(TaskError::retry_after(Duration::from_millis(20))),
        n if n == SNOOZES + 1 => Err(TaskError::msg("a real failure")),
        _ => Ok(()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snoozes_use_no_attempt_and_wait_their_delay() {
    let env = support::env().await;
    let worker = env.worker().build().await.unwrap().spawn();
    let mut conn = env.conn().await;
    let id = patient::enqueue(&mut conn, &Unit { n: 0 }).await.unwrap();
    let info = env.wait_state(id, JobState::Completed).await;
    assert_eq!(info.attempt, 2, "two attempts used, ten snoozes free");
    let runs = runs_of(("patient", id));
    assert_eq!(runs.len(), SNOOZES + 2);
    // Every snoozed run and the failing one were attempt 1; the last, 2.
    assert!(runs[..=SNOOZES].iter().all(|r| r.0 == 1), "{runs:?}");
    assert_eq!(runs[SNOOZES + 1].0, 2);
    // Each snooze waited its delay before the next run.
    for pair in runs[..=SNOOZES].windows(2) {
        assert!(pair[1].1 - pair[0].1 >= Duration::from_millis(20));
    }
    // The history shows the snoozes as what they were.
    let snoozed = info
        .errors
        .iter()
        .filter(|e| e.message.starts_with("snoozed for"))
        .count();
    assert_eq!(snoozed, SNOOZES, "{:?}", info.errors);
    worker.shutdown().await.unwrap();
}

/// When each job of the blocking tests started, by job id (database time:
/// the job row's `started_at`, read by the handler).
static STARTS: Mutex<Vec<(Job, DateTime<Utc>)>> = Mutex::new(Vec::new());

/// The first run of job `n == 0` tells the fleet to back off for 1.5 s.
async fn throttle_first(ctx: &jobq::Context, n: u32) -> Result<(), TaskError> {
    if n == 0 && record(ctx) == 1 {
        return Err(TaskError::rate_limited(Duration::from_millis(1500)));
    }
    STARTS
        .lock()
        .unwrap()
        .push(((ctx.task(), ctx.job_id()), Utc::now()));
    Ok(())
}

#[jobq::task(concurrency = 4)]
async fn throttled(ctx: jobq::Context, job: Unit) -> Result<(), TaskError> {
    throttle_first(&ctx, job.n).await
}

#[jobq::task(concurrency = 4)]
async fn throttled_per_key(ctx: jobq::Context, job: Unit) -> Result<(), TaskError> {
    throttle_first(&ctx, job.n).await
}

#[jobq::task(concurrency = 4)]
async fn bystander(ctx: jobq::Context, job: Unit) -> Result<(), TaskError> {
    let _ = job;
    STARTS
        .lock()
        .unwrap()
        .push(((ctx.task(), ctx.job_id()), Utc::now()));
    Ok(())
}

async fn block_until(env: &support::Env, key: &str) -> DateTime<Utc> {
    use diesel::sql_types::{Text, Timestamptz};
    use diesel_async::RunQueryDsl;
    #[derive(diesel::QueryableByName)]
    struct Until {
        #[diesel(sql_type = Timestamptz)]
        until: DateTime<Utc>,
    }
    let mut conn = env.conn().await;
    let rows: Vec<Until> = diesel::sql_query("SELECT until FROM jobq.blocks WHERE key = $1")
        .bind::<Text, _>(key)
        .load(&mut conn)
        .await
        .unwrap();
    rows.iter()
        .map(|r| r.until)
        .next()
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

fn started(job: Job) -> Option<DateTime<Utc>> {
    STARTS
        .lock()
        .unwrap()
        .iter()
        .find(|s| s.0 == job)
        .map(|s| s.1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limited_holds_back_the_task_on_every_worker_then_resumes() {
    let env = support::env().await;
    let a = env.worker().build().await.unwrap().spawn();
    let b = env.worker().build().await.unwrap().spawn();
    let mut conn = env.conn().await;
    let first = throttled::enqueue(&mut conn, &Unit { n: 0 }).await.unwrap();
    support::wait_until("the block", || async {
        block_until(&env, "").await > DateTime::<Utc>::MIN_UTC
    })
    .await;
    let until = block_until(&env, "").await;
    // Jobs of the task enqueued during the block wait for it on both
    // workers; other tasks go on.
    let mut held = Vec::new();
    for n in 1..=6 {
        held.push(throttled::enqueue(&mut conn, &Unit { n }).await.unwrap());
    }
    let other = bystander::enqueue(&mut conn, &Unit { n: 0 }).await.unwrap();
    env.wait_state(other, JobState::Completed).await;
    assert!(
        Utc::now() < until,
        "the test is too slow to show anything: the block is over"
    );
    assert!(held.iter().all(|&id| started(("throttled", id)).is_none()));
    for &id in held.iter().chain([&first]) {
        env.wait_state(id, JobState::Completed).await;
        let at = started(("throttled", id)).unwrap();
        assert!(
            at >= until,
            "job {id} started at {at}, before the block ended at {until}"
        );
    }
    // The throttled job itself used no attempt.
    assert_eq!(env.job(first).await.attempt, 1);
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limited_holds_back_only_the_jobs_key_when_it_has_one() {
    let env = support::env().await;
    let a = env.worker().build().await.unwrap().spawn();
    let b = env.worker().build().await.unwrap().spawn();
    let mut conn = env.conn().await;
    let key = |k: &str| EnqueueOptions::new().key(k);
    let first = throttled_per_key::enqueue_with(&mut conn, &Unit { n: 0 }, key("acme"))
        .await
        .unwrap();
    support::wait_until("the block", || async {
        block_until(&env, "acme").await > DateTime::<Utc>::MIN_UTC
    })
    .await;
    let until = block_until(&env, "acme").await;
    let mut jobs: HashMap<JobId, &str> = HashMap::new();
    for n in 1..=3 {
        for k in ["acme", "globex"] {
            let id = throttled_per_key::enqueue_with(&mut conn, &Unit { n }, key(k))
                .await
                .unwrap();
            jobs.insert(id, k);
        }
    }
    // The other key runs at once, during the block.
    for (&id, _) in jobs.iter().filter(|(_, &k)| k == "globex") {
        env.wait_state(id, JobState::Completed).await;
        assert!(started(("throttled_per_key", id)).unwrap() < until);
    }
    for (&id, _) in jobs.iter().filter(|(_, &k)| k == "acme") {
        env.wait_state(id, JobState::Completed).await;
        let at = started(("throttled_per_key", id)).unwrap();
        assert!(at >= until, "acme job {id} started at {at}, before {until}");
    }
    env.wait_state(first, JobState::Completed).await;
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

/// Serialized per key: the order in which a blocked key's backlog comes
/// back is the order its jobs run in.
#[jobq::task(concurrency = 4, key_concurrency = 1)]
async fn serialized(ctx: jobq::Context, job: Unit) -> Result<(), TaskError> {
    throttle_first(&ctx, job.n).await
}

fn start_order(task: &'static str) -> Vec<JobId> {
    let mut starts: Vec<(DateTime<Utc>, JobId)> = STARTS
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.0 .0 == task)
        .map(|s| (s.1, s.0 .1))
        .collect();
    starts.sort();
    starts.into_iter().map(|s| s.1).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_keys_backlog_waits_out_of_the_claim_path_then_runs_in_order() {
    let env = support::env().await;
    let mut conn = env.conn().await;
    let key = |priority: i16| EnqueueOptions::new().key("acme").priority(priority);
    // The job that will be told to back off comes first (highest
    // priority); its backlog is in mixed priorities, enqueued before any
    // worker runs, so that it is pending when the block is written.
    let first = serialized::enqueue_with(&mut conn, &Unit { n: 0 }, key(9))
        .await
        .unwrap();
    let mut backlog = Vec::new();
    for (n, priority) in [(1, 0), (2, 5), (3, 0), (4, 5), (5, 1), (6, 0)] {
        let id = serialized::enqueue_with(&mut conn, &Unit { n }, key(priority))
            .await
            .unwrap();
        backlog.push((priority, id));
    }
    let a = env.worker().build().await.unwrap().spawn();
    let b = env.worker().build().await.unwrap().spawn();
    support::wait_until("the block", || async {
        block_until(&env, "acme").await > DateTime::<Utc>::MIN_UTC
    })
    .await;
    let until = block_until(&env, "acme").await;
    // The block moved the whole backlog out of the claim path at once:
    // nothing of the key is pending while it lasts, and all of it waits
    // for the block's end.
    let waiting = env
        .count(
            "SELECT count(*) AS n FROM jobq.jobs WHERE key = 'acme' AND state = 'scheduled' \
             AND run_at = (SELECT until FROM jobq.blocks WHERE key = 'acme')",
        )
        .await;
    let pending = env
        .count("SELECT count(*) AS n FROM jobq.jobs WHERE key = 'acme' AND state = 'pending'")
        .await;
    assert!(
        Utc::now() < until,
        "the test is too slow to show anything: the block is over"
    );
    assert_eq!((waiting, pending), (7, 0));

    // After the block, the throttled job and then its backlog, one at a
    // time, in priority then enqueue order.
    for &(_, id) in &backlog {
        env.wait_state(id, JobState::Completed).await;
    }
    env.wait_state(first, JobState::Completed).await;
    backlog.sort_by_key(|&(priority, id)| (std::cmp::Reverse(priority), id));
    let expected: Vec<JobId> = std::iter::once(first)
        .chain(backlog.iter().map(|&(_, id)| id))
        .collect();
    assert_eq!(start_order("serialized"), expected);
    assert!(start_order("serialized")
        .iter()
        .all(|&id| started(("serialized", id)).unwrap() >= until));
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[jobq::task(concurrency = 8)]
async fn unrated(ctx: jobq::Context, job: Unit) -> Result<(), TaskError> {
    let _ = job;
    STARTS
        .lock()
        .unwrap()
        .push((("unrated", ctx.job_id()), Utc::now()));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_override_limits_a_task_without_one_and_is_checked() {
    let env = support::env().await;
    // One start a minute, a burst of one: two of the five jobs start, the
    // rest wait for tokens that come long after the test.
    let worker = env
        .worker()
        .task_rate("unrated", jobq::Rate::per_minute(1).with_burst(1))
        .build()
        .await
        .unwrap()
        .spawn();
    let mut conn = env.conn().await;
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(unrated::enqueue(&mut conn, &Unit { n }).await.unwrap());
    }
    let completed = "SELECT count(*) AS n FROM jobq.jobs WHERE task = 'unrated' \
                     AND state = 'completed'";
    support::wait_until("two starts", || async { env.count(completed).await == 2 }).await;
    // The others stay pending through several poll intervals and claims.
    let until = Instant::now() + Duration::from_secs(1);
    while Instant::now() < until {
        assert_eq!(env.count(completed).await, 2, "a third job started");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    worker.shutdown().await.unwrap();

    let refused = env
        .worker()
        .task_key_rate("unratd", jobq::Rate::per_second(1))
        .build()
        .await;
    let Err(error) = refused else {
        panic!("a rate for an unknown task was accepted");
    };
    let message = error.to_string();
    assert!(
        message.contains("task_key_rate") && message.contains("\"unratd\""),
        "{message}"
    );
}
