//! The worker runs jobs: wake-ups, polling, ordering, delays, concurrency,
//! and jobs it must not or cannot run.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use jobq::{EnqueueOptions, JobState};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Note {
    text: String,
}

/// `n` notes numbered from 0.
fn notes(n: usize) -> Vec<Note> {
    (0..n)
        .map(|i| Note {
            text: i.to_string(),
        })
        .collect()
}

#[jobq::task]
async fn record_note(job: Note) -> Result<(), jobq::TaskError> {
    let _ = job;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_job_runs_to_completion() {
    let env = support::env().await;
    let handle = env.worker().build().await.unwrap().spawn();
    let mut conn = env.conn().await;
    let id = record_note::enqueue(&mut conn, &Note { text: "hi".into() })
        .await
        .unwrap();
    let info = env.wait_state(id, JobState::Completed).await;
    assert_eq!(info.attempt, 1);
    assert!(info.started_at.is_some() && info.finished_at.is_some());
    assert!(info.errors.is_empty());
    handle.shutdown().await.unwrap();
    assert_eq!(
        env.count("SELECT count(*) AS n FROM jobq.workers").await,
        0,
        "worker row left behind"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notification_wakes_the_worker_long_before_the_poll() {
    let env = support::env().await;
    let poll = Duration::from_secs(60);
    let handle = env
        .worker()
        .poll_interval(poll)
        .build()
        .await
        .unwrap()
        .spawn();
    env.wait_listening().await;
    let mut conn = env.conn().await;
    let enqueued = Instant::now();
    let id = record_note::enqueue(
        &mut conn,
        &Note {
            text: "wake".into(),
        },
    )
    .await
    .unwrap();
    env.wait_state(id, JobState::Completed).await;
    let took = enqueued.elapsed();
    assert!(
        took < poll / 4,
        "took {took:?}: the notification did not wake the worker"
    );
    handle.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_poll_finds_jobs_whose_notification_was_missed() {
    let env = support::env().await;
    // Without LISTEN every notification is missed; only the poll is left.
    let handle = env
        .worker()
        .listen(false)
        .poll_interval(Duration::from_millis(300))
        .build()
        .await
        .unwrap()
        .spawn();
    let mut conn = env.conn().await;
    let id = record_note::enqueue(
        &mut conn,
        &Note {
            text: "poll".into(),
        },
    )
    .await
    .unwrap();
    env.wait_state(id, JobState::Completed).await;
    handle.shutdown().await.unwrap();
}

static ORDER: Mutex<Vec<String>> = Mutex::new(Vec::new());

#[jobq::task(concurrency = 1)]
async fn ordered(job: Note) -> Result<(), jobq::TaskError> {
    ORDER.lock().unwrap().push(job.text);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn higher_priority_runs_first_then_oldest() {
    let env = support::env().await;
    let mut conn = env.conn().await;
    for (text, priority) in [("low-1", 0), ("high", 10), ("low-2", 0), ("mid", 5)] {
        let options = EnqueueOptions::new().priority(priority);
        ordered::enqueue_with(&mut conn, &Note { text: text.into() }, options)
            .await
            .unwrap();
    }
    let handle = env.worker().build().await.unwrap().spawn();
    support::wait_until("all four jobs", || async {
        ORDER.lock().unwrap().len() == 4
    })
    .await;
    assert_eq!(*ORDER.lock().unwrap(), ["high", "mid", "low-1", "low-2"]);
    handle.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_jobs_do_not_run_early() {
    let env = support::env().await;
    let handle = env.worker().build().await.unwrap().spawn();
    let mut conn = env.conn().await;
    let delay = Duration::from_millis(1500);
    let id = record_note::enqueue_with(
        &mut conn,
        &Note {
            text: "later".into(),
        },
        EnqueueOptions::new().delay(delay),
    )
    .await
    .unwrap();
    let info = env.wait_state(id, JobState::Completed).await;
    let waited = info.started_at.unwrap() - info.created_at;
    assert!(
        waited >= chrono::Duration::from_std(delay).unwrap(),
        "started {waited} after enqueue, before its delay"
    );
    handle.shutdown().await.unwrap();
}

static RUNNING: AtomicU32 = AtomicU32::new(0);
static MAX_RUNNING: AtomicU32 = AtomicU32::new(0);

#[jobq::task(concurrency = 3)]
async fn limited(job: Note) -> Result<(), jobq::TaskError> {
    let _ = job;
    let now = RUNNING.fetch_add(1, Ordering::SeqCst) + 1;
    MAX_RUNNING.fetch_max(now, Ordering::SeqCst);
    // Simulated work, long enough for attempts to overlap if allowed to.
    tokio::time::sleep(Duration::from_millis(30)).await;
    RUNNING.fetch_sub(1, Ordering::SeqCst);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_limit_holds() {
    let env = support::env().await;
    let mut conn = env.conn().await;
    let payloads = notes(30);
    let ids = limited::enqueue_many(&mut conn, &payloads).await.unwrap();
    let handle = env.worker().build().await.unwrap().spawn();
    for id in ids {
        env.wait_state(id, JobState::Completed).await;
    }
    handle.shutdown().await.unwrap();
    assert_eq!(
        MAX_RUNNING.load(Ordering::SeqCst),
        3,
        "the limit was not reached or was exceeded"
    );
}

static SEEN: Mutex<Option<HashMap<i64, u32>>> = Mutex::new(None);

#[jobq::task(concurrency = 8)]
async fn counted(ctx: jobq::Context, job: Note) -> Result<(), jobq::TaskError> {
    let _ = job;
    *SEEN
        .lock()
        .unwrap()
        .get_or_insert_with(HashMap::new)
        .entry(ctx.job_id().get())
        .or_default() += 1;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_run_a_thousand_jobs_exactly_once() {
    let env = support::env().await;
    let mut conn = env.conn().await;
    let payloads = notes(1000);
    let ids = counted::enqueue_many(&mut conn, &payloads).await.unwrap();
    let mut handles = Vec::new();
    for _ in 0..3 {
        handles.push(env.worker().build().await.unwrap().spawn());
    }
    support::wait_until("every job completed", || async {
        env.count("SELECT count(*) AS n FROM jobq.jobs WHERE state = 'completed'")
            .await
            == 1000
    })
    .await;
    for handle in handles {
        handle.shutdown().await.unwrap();
    }
    let seen = SEEN.lock().unwrap().take().unwrap_or_default();
    assert_eq!(seen.len(), 1000);
    for id in ids {
        assert_eq!(
            seen.get(&id.get()),
            Some(&1),
            "job {id} ran {:?} times",
            seen.get(&id.get())
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_payload_fails_permanently_and_the_worker_goes_on() {
    let env = support::env().await;
    let handle = env.worker().build().await.unwrap().spawn();
    // A job inserted by hand whose payload does not fit the task's type.
    let bad = env
        .count(
            "INSERT INTO jobq.jobs (task, payload) VALUES ('record_note', '{\"txt\": 1}') RETURNING id AS n",
        )
        .await;
    let mut conn = env.conn().await;
    let good = record_note::enqueue(
        &mut conn,
        &Note {
            text: "fine".into(),
        },
    )
    .await
    .unwrap();
    let info = env
        .wait_state(jobq::JobId::from(bad), JobState::Failed)
        .await;
    assert_eq!(info.attempt, 1, "a bad payload must not be retried");
    let message = &info.errors[0].message;
    assert!(
        message.contains("record_note") && message.contains("missing field `text`"),
        "{message}"
    );
    env.wait_state(good, JobState::Completed).await;
    handle.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_of_unknown_tasks_are_never_claimed() {
    let env = support::env().await;
    let unknown = env
        .count(
            "INSERT INTO jobq.jobs (task, payload) VALUES ('no_such_task', '{}') RETURNING id AS n",
        )
        .await;
    let handle = env.worker().build().await.unwrap().spawn();
    let mut conn = env.conn().await;
    // A known job enqueued after it runs, so the worker has looked.
    let known = record_note::enqueue(
        &mut conn,
        &Note {
            text: "known".into(),
        },
    )
    .await
    .unwrap();
    env.wait_state(known, JobState::Completed).await;
    let info = env.job(jobq::JobId::from(unknown)).await;
    assert_eq!((info.state, info.attempt), (JobState::Pending, 0));
    handle.shutdown().await.unwrap();
}

#[jobq::task(concurrency = 4)]
async fn settles(job: Note) -> Result<(), jobq::TaskError> {
    let _ = job;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_claim_row_goes_with_the_outcome_of_its_last_job() {
    let env = support::env().await;
    // Heartbeats and maintenance also remove claim rows nobody settled;
    // here they run once, at start-up, so only the outcome writes can.
    let handle = env
        .worker()
        .heartbeat_interval(Duration::from_secs(3600))
        .lease(Duration::from_secs(7200))
        .maintenance_interval(Duration::from_secs(3600))
        .build()
        .await
        .unwrap()
        .spawn();
    let mut conn = env.conn().await;
    let payloads = notes(100);
    settles::enqueue_many(&mut conn, &payloads).await.unwrap();
    support::wait_until("every job completed", || async {
        env.count("SELECT count(*) AS n FROM jobq.jobs WHERE state = 'completed'")
            .await
            == 100
    })
    .await;
    // Four slots: at least 25 claims, each settled by its last outcome.
    support::wait_until("no claim row left", || async {
        env.count("SELECT count(*) AS n FROM jobq.claims").await == 0
    })
    .await;
    assert!(
        env.count("SELECT count(DISTINCT started_at) AS n FROM jobq.jobs")
            .await
            >= 25
    );
    handle.shutdown().await.unwrap();
}

#[jobq::task(concurrency = 10)]
async fn batched(job: Note) -> Result<(), jobq::TaskError> {
    let _ = job;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freed_slots_bring_the_next_batch_whole_without_waiting_for_the_poll() {
    let env = support::env().await;
    let mut conn = env.conn().await;
    let payloads = notes(200);
    batched::enqueue_many(&mut conn, &payloads).await.unwrap();
    // No poll and no notification during the test: after the first claim,
    // only freed slots can bring the next batches.
    let handle = env
        .worker()
        .poll_interval(Duration::from_secs(3600))
        .build()
        .await
        .unwrap()
        .spawn();
    support::wait_until("every job completed", || async {
        env.count("SELECT count(*) AS n FROM jobq.jobs WHERE state = 'completed'")
            .await
            == 200
    })
    .await;
    // Ten slots: twenty claims if every batch came back whole. Split
    // batches are fine on a loaded machine (a job slower than the gather
    // window); a claim per freed slot, some two hundred, is not.
    let claims = env
        .count("SELECT count(DISTINCT started_at) AS n FROM jobq.jobs")
        .await;
    assert!((20..=100).contains(&claims), "{claims} claims for 200 jobs");
    handle.shutdown().await.unwrap();
}
