//! Failed attempts: retries with backoff, permanent errors, panics and
//! timeouts, each recorded in the job's error history.

mod support;

use std::time::Duration;

use jobq::{JobState, TaskError};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Input {
    n: u32,
}

#[derive(Debug, thiserror::Error)]
#[error("upstream said no to {0}")]
struct Upstream(u32);

#[jobq::task(retry = "200ms", max_attempts = 3)]
async fn always_fails(ctx: jobq::Context, job: Input) -> Result<(), TaskError> {
    Err(Upstream(job.n * 100 + ctx.attempt()))?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_back_off_and_end_failed_with_every_error_recorded() {
    let env = support::env().await;
    let handle = env.worker().build().await.unwrap().spawn();
    let mut conn = env.conn().await;
    let id = always_fails::enqueue(&mut conn, &Input { n: 7 })
        .await
        .unwrap();
    let info = env.wait_state(id, JobState::Failed).await;
    handle.shutdown().await.unwrap();

    assert_eq!(info.attempt, 3);
    let messages: Vec<&str> = info.errors.iter().map(|e| e.message.as_str()).collect();
    assert_eq!(
        messages,
        [
            "upstream said no to 701",
            "upstream said no to 702",
            "upstream said no to 703"
        ]
    );
    assert_eq!(
        info.errors.iter().map(|e| e.attempt).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    // Backoff 200 ms then 400 ms (plus jitter); the gaps between failures
    // also hold the attempts themselves, so they are lower bounds.
    let gap = |a: usize, b: usize| (info.errors[b].at - info.errors[a].at).to_std().unwrap();
    assert!(
        gap(0, 1) >= Duration::from_millis(200),
        "first retry after {:?}",
        gap(0, 1)
    );
    assert!(
        gap(1, 2) >= Duration::from_millis(400),
        "second retry after {:?}",
        gap(1, 2)
    );
    assert!(info.finished_at.is_some());
}

#[jobq::task(retry = "10ms", max_attempts = 5)]
async fn gives_up(job: Input) -> Result<(), TaskError> {
    Err(TaskError::permanent(Upstream(job.n)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_errors_fail_at_once() {
    let env = support::env().await;
    let handle = env.worker().build().await.unwrap().spawn();
    let mut conn = env.conn().await;
    let id = gives_up::enqueue(&mut conn, &Input { n: 1 }).await.unwrap();
    let info = env.wait_state(id, JobState::Failed).await;
    handle.shutdown().await.unwrap();
    assert_eq!(info.attempt, 1);
    assert_eq!(info.errors.len(), 1);
    assert_eq!(info.errors[0].message, "upstream said no to 1");
}

#[jobq::task(retry = "10ms", max_attempts = 2)]
async fn panics(job: Input) -> Result<(), TaskError> {
    if job.n > 0 {
        panic!("boom {}", job.n);
    }
    Ok(())
}

#[jobq::task(retry = "10ms", max_attempts = 2, timeout = "100ms")]
async fn too_slow(job: Input) -> Result<(), TaskError> {
    tokio::time::sleep(Duration::from_secs(u64::from(job.n))).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panics_and_timeouts_are_recorded_failures_and_the_worker_goes_on() {
    let env = support::env().await;
    let handle = env.worker().build().await.unwrap().spawn();
    let mut conn = env.conn().await;
    let panicking = panics::enqueue(&mut conn, &Input { n: 3 }).await.unwrap();
    let slow = too_slow::enqueue(&mut conn, &Input { n: 60 })
        .await
        .unwrap();
    let panic_info = env.wait_state(panicking, JobState::Failed).await;
    let slow_info = env.wait_state(slow, JobState::Failed).await;
    assert_eq!(panic_info.attempt, 2);
    assert!(
        panic_info
            .errors
            .iter()
            .all(|e| e.message == "attempt panicked: boom 3"),
        "{:?}",
        panic_info.errors
    );
    assert_eq!(slow_info.attempt, 2);
    assert!(
        slow_info
            .errors
            .iter()
            .all(|e| e.message == "attempt timed out after 100ms"),
        "{:?}",
        slow_info.errors
    );
    // The same worker still runs other jobs.
    let fine = panics::enqueue(&mut conn, &Input { n: 0 }).await.unwrap();
    env.wait_state(fine, JobState::Completed).await;
    handle.shutdown().await.unwrap();
}

#[jobq::task(retry = "10ms", max_attempts = 3)]
async fn anyhow_errors(job: Input) -> Result<(), TaskError> {
    let parsed: Result<u32, anyhow::Error> = Err(anyhow::anyhow!("no luck with {}", job.n));
    parsed?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anyhow_errors_convert_with_question_mark_and_retry() {
    let env = support::env().await;
    let handle = env.worker().build().await.unwrap().spawn();
    let mut conn = env.conn().await;
    let id = anyhow_errors::enqueue(&mut conn, &Input { n: 9 })
        .await
        .unwrap();
    let info = env.wait_state(id, JobState::Failed).await;
    handle.shutdown().await.unwrap();
    assert_eq!(info.attempt, 3);
    assert!(info.errors.iter().all(|e| e.message == "no luck with 9"));
}
