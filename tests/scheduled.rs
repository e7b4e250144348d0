//! Jobs due later wait as `scheduled`, outside the claim's index, and run
//! when due: delayed enqueues, `run_at`, retries on backoff, raw SQL
//! inserts; cancel, dedupe and priority order across promoted and pending
//! jobs.

mod support;

use std::sync::Mutex;
use std::time::Duration;

use jobq::{EnqueueOptions, JobState, TaskError};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Note {
    text: String,
}

fn note(text: &str) -> Note {
    Note { text: text.into() }
}

#[jobq::task]
async fn later(job: Note) -> Result<(), TaskError> {
    let _ = job;
    Ok(())
}

/// A poll interval no test waits for: what runs in these tests runs
/// because the worker knew when it was due, not because it polled.
const NEVER: Duration = Duration::from_secs(3600);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_job_is_scheduled_until_due_then_runs_without_polling() {
    let env = support::env().await;
    let mut conn = env.conn().await;
    let delay = Duration::from_millis(800);
    let id = later::enqueue_with(&mut conn, &note("x"), EnqueueOptions::new().delay(delay))
        .await
        .unwrap();
    assert_eq!(env.job(id).await.state, JobState::Scheduled);
    let handle = env
        .worker()
        .poll_interval(NEVER)
        .build()
        .await
        .unwrap()
        .spawn();
    let info = env.wait_state(id, JobState::Completed).await;
    handle.shutdown().await.unwrap();
    assert!(
        info.started_at.unwrap() >= info.run_at,
        "started at {:?}, before its run_at {}",
        info.started_at,
        info.run_at
    );
    assert_eq!(info.attempt, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_enqueued_while_the_worker_runs_starts_when_due_without_polling() {
    let env = support::env().await;
    let handle = env
        .worker()
        .poll_interval(NEVER)
        .build()
        .await
        .unwrap()
        .spawn();
    env.wait_listening().await;
    let mut conn = env.conn().await;
    // The worker learns the due time from the insert's notification. Two
    // jobs, so that the second is due after the first has been promoted:
    // its time comes from the promotion's answer.
    let first = later::enqueue_with(
        &mut conn,
        &note("first"),
        EnqueueOptions::new().delay(Duration::from_millis(300)),
    )
    .await
    .unwrap();
    let second = later::enqueue_with(
        &mut conn,
        &note("second"),
        EnqueueOptions::new().delay(Duration::from_millis(900)),
    )
    .await
    .unwrap();
    for id in [first, second] {
        let info = env.wait_state(id, JobState::Completed).await;
        assert!(info.started_at.unwrap() >= info.run_at, "{info:#?}");
    }
    handle.shutdown().await.unwrap();
}

#[tokio::test]
async fn run_at_sets_the_due_time_and_the_state_follows_it() {
    let env = support::env().await;
    let mut conn = env.conn().await;
    // Timestamps are kept to the microsecond.
    let at = |offset: chrono::Duration| {
        let t = chrono::Utc::now() + offset;
        t - chrono::Duration::nanoseconds(i64::from(t.timestamp_subsec_nanos() % 1000))
    };
    let tomorrow = at(chrono::Duration::days(1));
    let id = later::enqueue_with(
        &mut conn,
        &note("t"),
        EnqueueOptions::new().run_at(tomorrow),
    )
    .await
    .unwrap();
    let info = env.job(id).await;
    assert_eq!((info.state, info.run_at), (JobState::Scheduled, tomorrow));

    let yesterday = at(-chrono::Duration::days(1));
    let id = later::enqueue_with(
        &mut conn,
        &note("y"),
        EnqueueOptions::new().run_at(yesterday),
    )
    .await
    .unwrap();
    let info = env.job(id).await;
    assert_eq!((info.state, info.run_at), (JobState::Pending, yesterday));

    // The last of delay and run_at wins.
    let options = EnqueueOptions::new().run_at(tomorrow).delay(Duration::ZERO);
    let id = later::enqueue_with(&mut conn, &note("d"), options)
        .await
        .unwrap();
    assert_eq!(env.job(id).await.state, JobState::Pending);
    let options = EnqueueOptions::new().delay(Duration::ZERO).run_at(tomorrow);
    let ids = jobq::enqueue_many_with::<later>(&mut conn, &[note("m1"), note("m2")], options)
        .await
        .unwrap();
    for id in ids {
        let info = env.job(id).await;
        assert_eq!((info.state, info.run_at), (JobState::Scheduled, tomorrow));
    }
}

static FLAKY_RUNS: Mutex<Vec<u32>> = Mutex::new(Vec::new());

#[jobq::task(retry = "1s", max_attempts = 2)]
async fn flaky(ctx: jobq::Context, job: Note) -> Result<(), TaskError> {
    let _ = job;
    FLAKY_RUNS.lock().unwrap().push(ctx.attempt());
    if ctx.attempt() == 1 {
        return Err(TaskError::msg("not yet"));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_is_scheduled_for_its_backoff_then_runs_again() {
    let env = support::env().await;
    let handle = env
        .worker()
        .poll_interval(NEVER)
        .build()
        .await
        .unwrap()
        .spawn();
    let mut conn = env.conn().await;
    let id = flaky::enqueue(&mut conn, &note("f")).await.unwrap();
    let waiting = env
        .wait_job(id, "scheduled for its retry", |j| {
            j.attempt == 1 && j.state != JobState::Running
        })
        .await;
    assert_eq!(waiting.state, JobState::Scheduled, "{waiting:#?}");
    let backoff = waiting.run_at - waiting.errors[0].at;
    assert!(
        backoff >= chrono::Duration::milliseconds(990),
        "retry due only {backoff} after the failure"
    );
    let done = env.wait_state(id, JobState::Completed).await;
    handle.shutdown().await.unwrap();
    assert_eq!(done.attempt, 2);
    assert!(done.started_at.unwrap() >= waiting.run_at, "{done:#?}");
    assert_eq!(*FLAKY_RUNS.lock().unwrap(), [1, 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_sql_inserts_are_filed_by_their_run_at_and_run_when_due() {
    let env = support::env().await;
    // One statement: a row due later relying on the default state, and a
    // row claiming to be scheduled though it is due now.
    let ids: Vec<i64> = {
        #[derive(diesel::QueryableByName)]
        struct Id {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            id: i64,
        }
        use diesel_async::RunQueryDsl;
        let mut conn = env.conn().await;
        diesel::sql_query(
            "INSERT INTO jobq.jobs (task, payload, run_at, state) VALUES \
             ('later', '{\"text\": \"raw later\"}', now() + interval '700 milliseconds', DEFAULT), \
             ('later', '{\"text\": \"raw now\"}', now() - interval '1 second', 'scheduled') \
             RETURNING id",
        )
        .load::<Id>(&mut conn)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect()
    };
    let (due_later, due_now) = (jobq::JobId::from(ids[0]), jobq::JobId::from(ids[1]));
    assert_eq!(env.job(due_later).await.state, JobState::Scheduled);
    assert_eq!(env.job(due_now).await.state, JobState::Pending);
    let handle = env
        .worker()
        .poll_interval(NEVER)
        .build()
        .await
        .unwrap()
        .spawn();
    env.wait_state(due_now, JobState::Completed).await;
    let info = env.wait_state(due_later, JobState::Completed).await;
    handle.shutdown().await.unwrap();
    assert!(info.started_at.unwrap() >= info.run_at, "{info:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raw_insert_while_the_worker_runs_starts_when_due_without_polling() {
    let env = support::env().await;
    let handle = env
        .worker()
        .poll_interval(NEVER)
        .build()
        .await
        .unwrap()
        .spawn();
    env.wait_listening().await;
    let id = jobq::JobId::from(
        env.count(
            "INSERT INTO jobq.jobs (task, payload, run_at) \
             VALUES ('later', '{\"text\": \"raw\"}', now() + interval '500 milliseconds') \
             RETURNING id AS n",
        )
        .await,
    );
    let info = env.wait_state(id, JobState::Completed).await;
    handle.shutdown().await.unwrap();
    assert!(info.started_at.unwrap() >= info.run_at, "{info:#?}");
}

#[tokio::test]
async fn a_scheduled_job_is_cancelled_at_once() {
    let env = support::env().await;
    let mut conn = env.conn().await;
    let id = later::enqueue_with(
        &mut conn,
        &note("c"),
        EnqueueOptions::new().delay(Duration::from_secs(3600)),
    )
    .await
    .unwrap();
    assert_eq!(env.job(id).await.state, JobState::Scheduled);
    assert!(jobq::cancel(&mut conn, id).await.unwrap());
    let info = env.job(id).await;
    assert_eq!(info.state, JobState::Cancelled);
    assert!(info.finished_at.is_some());
    // Cancelled is final.
    assert!(!jobq::cancel(&mut conn, id).await.unwrap());
}

#[tokio::test]
async fn a_scheduled_job_holds_its_dedupe_key() {
    let env = support::env().await;
    let mut conn = env.conn().await;
    let keyed = || EnqueueOptions::new().dedupe_key("k");
    let first = later::enqueue_with(
        &mut conn,
        &note("1"),
        keyed().delay(Duration::from_secs(3600)),
    )
    .await
    .unwrap();
    assert_eq!(env.job(first).await.state, JobState::Scheduled);
    let again = later::enqueue_with(&mut conn, &note("2"), keyed())
        .await
        .unwrap();
    assert_eq!(again, first);
    // Cancelling frees the key.
    assert!(jobq::cancel(&mut conn, first).await.unwrap());
    let next = later::enqueue_with(&mut conn, &note("3"), keyed())
        .await
        .unwrap();
    assert_ne!(next, first);
    assert_eq!(env.job(next).await.state, JobState::Pending);
}

static ORDER: Mutex<Vec<String>> = Mutex::new(Vec::new());

#[jobq::task(concurrency = 1)]
async fn in_order(job: Note) -> Result<(), TaskError> {
    ORDER.lock().unwrap().push(job.text);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promoted_and_pending_jobs_run_in_one_priority_order() {
    let env = support::env().await;
    let mut conn = env.conn().await;
    let soon = Duration::from_millis(300);
    for (text, priority, delay) in [
        ("pending-0", 0, None),
        ("scheduled-10", 10, Some(soon)),
        ("pending-5", 5, None),
        ("scheduled-1", 1, Some(soon)),
    ] {
        let mut options = EnqueueOptions::new().priority(priority);
        if let Some(delay) = delay {
            options = options.delay(delay);
        }
        in_order::enqueue_with(&mut conn, &note(text), options)
            .await
            .unwrap();
    }
    assert_eq!(
        env.count("SELECT count(*) AS n FROM jobq.jobs WHERE state = 'scheduled'")
            .await,
        2
    );
    // Both scheduled jobs fall due before the worker starts: it promotes
    // them, then claims one job at a time by priority.
    support::wait_until("the scheduled jobs to fall due", || async {
        env.count("SELECT count(*) AS n FROM jobq.jobs WHERE run_at > now()")
            .await
            == 0
    })
    .await;
    let handle = env.worker().build().await.unwrap().spawn();
    support::wait_until("all four jobs", || async {
        ORDER.lock().unwrap().len() == 4
    })
    .await;
    handle.shutdown().await.unwrap();
    assert_eq!(
        *ORDER.lock().unwrap(),
        ["scheduled-10", "pending-5", "scheduled-1", "pending-0"]
    );
}
