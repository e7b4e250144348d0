//! Claims start at the worker's floor for each task (the last job it
//! claimed), so that a snapshot held open elsewhere does not make every
//! claim step over the dead entries of the jobs claimed since. These
//! tests check that jobs made pending before a worker's floor still run
//! at once, without the poll interval's help.

mod support;

use std::time::Duration;

use diesel_async::{AsyncConnection, SimpleAsyncConnection};
use jobq::{EnqueueOptions, JobState, TaskError};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Step {
    n: u32,
}

#[jobq::task]
async fn floored(job: Step) -> Result<(), TaskError> {
    let _ = job;
    Ok(())
}

/// Work that takes a while, so that a backlog lasts long enough for a job
/// enqueued behind it to overtake it.
#[jobq::task]
async fn paced(job: Step) -> Result<(), TaskError> {
    let _ = job;
    tokio::time::sleep(Duration::from_millis(25)).await;
    Ok(())
}

/// A poll interval (and so an interval between walks from the head) that
/// no test waits for.
const NEVER: Duration = Duration::from_secs(3600);

/// Enqueues `n` jobs one by one and waits until all have completed: the
/// worker's floor is then at the last of them.
async fn run_some(env: &support::Env, n: u32) {
    let mut conn = env.conn().await;
    let mut ids = Vec::new();
    for i in 0..n {
        ids.push(floored::enqueue(&mut conn, &Step { n: i }).await.unwrap());
    }
    for id in ids {
        env.wait_state(id, JobState::Completed).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_a_long_transaction_commits_before_the_floor_runs_without_polling() {
    let env = support::env().await;
    let handle = env
        .worker()
        .poll_interval(NEVER)
        .build()
        .await
        .unwrap()
        .spawn();
    env.wait_listening().await;
    run_some(&env, 2).await;

    // A transaction that enqueues and commits only after later jobs ran:
    // its job's run_at (the transaction's start) and id sort before them.
    let mut long = diesel_async::AsyncPgConnection::establish(env.db.url())
        .await
        .unwrap();
    long.batch_execute(
        "BEGIN; INSERT INTO jobq.jobs (task, payload) VALUES ('floored', '{\"n\": 100}')",
    )
    .await
    .unwrap();
    run_some(&env, 3).await;
    long.batch_execute("COMMIT").await.unwrap();
    let early = jobq::JobId::from(
        env.count("SELECT max(id) AS n FROM jobq.jobs WHERE payload->>'n' = '100'")
            .await,
    );
    let later = env
        .count("SELECT max(id) AS n FROM jobq.jobs WHERE state = 'completed'")
        .await;
    assert!(
        i64::from(early) < later,
        "the long transaction's job sorts before the jobs run meanwhile"
    );
    let info = env.wait_state(early, JobState::Completed).await;
    handle.shutdown().await.unwrap();
    assert_eq!(info.attempt, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promoted_job_of_a_higher_priority_runs_though_the_floor_lies_past_it() {
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
    let urgent = floored::enqueue_with(
        &mut conn,
        &Step { n: 1 },
        EnqueueOptions::new()
            .priority(5)
            .delay(Duration::from_millis(600)),
    )
    .await
    .unwrap();
    run_some(&env, 3).await;
    assert_eq!(env.job(urgent).await.state, JobState::Scheduled);
    let info = env.wait_state(urgent, JobState::Completed).await;
    handle.shutdown().await.unwrap();
    assert!(info.started_at.unwrap() >= info.run_at, "{info:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_higher_priority_insert_runs_before_the_rest_of_the_queue() {
    let env = support::env().await;
    let mut conn = env.conn().await;
    // A backlog the worker takes one at a time, so that its floor moves
    // along it while the urgent job arrives.
    let mut backlog = Vec::new();
    for n in 0..40 {
        backlog.push(paced::enqueue(&mut conn, &Step { n }).await.unwrap());
    }
    let handle = env
        .worker()
        .poll_interval(NEVER)
        .task_concurrency("paced", 1)
        .build()
        .await
        .unwrap()
        .spawn();
    env.wait_listening().await;
    env.wait_state(backlog[2], JobState::Completed).await;
    let urgent = paced::enqueue_with(
        &mut conn,
        &Step { n: 99 },
        EnqueueOptions::new().priority(9),
    )
    .await
    .unwrap();
    let info = env.wait_state(urgent, JobState::Completed).await;
    let last = env
        .wait_state(*backlog.last().unwrap(), JobState::Completed)
        .await;
    handle.shutdown().await.unwrap();
    assert!(
        info.started_at < last.started_at,
        "the urgent job waited for the whole backlog: {info:#?}"
    );
}

/// A job that a claim passed over because another transaction held it
/// locked, released without a word, lies before the floor and nothing
/// announces it: the probe of the claim heads finds it within a poll
/// interval (claims themselves never walk from the head again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_a_claim_passed_over_while_locked_runs_by_the_probe() {
    let env = support::env().await;
    let handle = env
        .worker()
        .poll_interval(Duration::from_millis(200))
        .build()
        .await
        .unwrap()
        .spawn();
    env.wait_listening().await;
    let mut conn = env.conn().await;
    jobq::pause_queue(&mut conn, "default").await.unwrap();
    let held = floored::enqueue(&mut conn, &Step { n: 1 }).await.unwrap();
    let mut locker = diesel_async::AsyncPgConnection::establish(env.db.url())
        .await
        .unwrap();
    locker
        .batch_execute(&format!(
            "BEGIN; SELECT 1 FROM jobq.jobs WHERE id = {} FOR UPDATE",
            i64::from(held)
        ))
        .await
        .unwrap();
    let mut later = Vec::new();
    for n in 2..5 {
        later.push(floored::enqueue(&mut conn, &Step { n }).await.unwrap());
    }
    jobq::resume_queue(&mut conn, "default").await.unwrap();
    for id in later {
        env.wait_state(id, JobState::Completed).await;
    }
    // Claims that start at their floor now (whatever notification came
    // while the first claims were in flight).
    run_some(&env, 2).await;
    let info = jobq::job(&mut conn, held).await.unwrap().unwrap();
    assert_eq!(info.state, JobState::Pending, "passed over while locked");

    locker.batch_execute("ROLLBACK").await.unwrap();
    let info = env.wait_state(held, JobState::Completed).await;
    handle.shutdown().await.unwrap();
    assert_eq!(info.attempt, 1);
}
