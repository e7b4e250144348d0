//! Pausing and resuming queues: claims skip a paused queue at once, its
//! running jobs finish, the pause outlives the worker, and a resume wakes
//! workers through a notification rather than their poll.

mod support;

use std::time::{Duration, Instant};

use jobq::{EnqueueOptions, JobState};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Unit {
    n: u32,
}

/// Permits let `gated` jobs finish, one each.
static GATE: Semaphore = Semaphore::const_new(0);

#[jobq::task(queue = "reports")]
async fn gated(job: Unit) -> Result<(), jobq::TaskError> {
    let _ = job;
    GATE.acquire()
        .await
        .map_err(|e| jobq::TaskError::msg(e.to_string()))?
        .forget();
    Ok(())
}

#[jobq::task(queue = "reports")]
async fn quick(job: Unit) -> Result<(), jobq::TaskError> {
    let _ = job;
    Ok(())
}

/// Long enough that anything the test waits for must come from a
/// notification, not from a poll.
const POLL: Duration = Duration::from_secs(60);

fn other() -> EnqueueOptions {
    EnqueueOptions::new().queue("other")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_stops_claims_at_once_lets_running_jobs_finish_survives_workers_and_resume_wakes() {
    let env = support::env().await;
    let worker = || {
        env.worker()
            .queues(["reports", "other"])
            .poll_interval(POLL)
            .build()
    };
    let first = worker().await.unwrap().spawn();
    support::wait_until("the listener", || async { env.listeners().await >= 1 }).await;
    let mut conn = env.conn().await;

    // A job of the queue is running when the pause comes.
    let running = gated::enqueue(&mut conn, &Unit { n: 0 }).await.unwrap();
    env.wait_state(running, JobState::Running).await;
    assert!(jobq::pause_queue(&mut conn, "reports").await.unwrap());
    assert!(
        !jobq::pause_queue(&mut conn, "reports").await.unwrap(),
        "already paused"
    );
    assert_eq!(jobq::paused_queues(&mut conn).await.unwrap(), ["reports"]);

    // Enqueued after the pause: the paused one waits, while a job of the
    // other queue, enqueued after it and woken the same way, runs.
    let held = quick::enqueue(&mut conn, &Unit { n: 1 }).await.unwrap();
    let passes = quick::enqueue_with(&mut conn, &Unit { n: 2 }, other())
        .await
        .unwrap();
    env.wait_state(passes, JobState::Completed).await;
    assert_eq!(env.job(held).await.state, JobState::Pending);

    // The running job finishes; its freed slot claims nothing of the
    // paused queue either.
    GATE.add_permits(1);
    env.wait_state(running, JobState::Completed).await;
    let passes = quick::enqueue_with(&mut conn, &Unit { n: 3 }, other())
        .await
        .unwrap();
    env.wait_state(passes, JobState::Completed).await;
    assert_eq!(env.job(held).await.state, JobState::Pending);

    // The pause is a fact in the database: a worker started afresh (which
    // claims at start-up) honours it too.
    first.shutdown().await.unwrap();
    let second = worker().await.unwrap().spawn();
    support::wait_until("the new listener", || async { env.listeners().await >= 1 }).await;
    let passes = quick::enqueue_with(&mut conn, &Unit { n: 4 }, other())
        .await
        .unwrap();
    env.wait_state(passes, JobState::Completed).await;
    assert_eq!(env.job(held).await.state, JobState::Pending);
    assert_eq!(jobq::paused_queues(&mut conn).await.unwrap(), ["reports"]);

    // Resume: the notification wakes the worker, far before its poll.
    let resumed_at = Instant::now();
    assert!(jobq::resume_queue(&mut conn, "reports").await.unwrap());
    env.wait_state(held, JobState::Completed).await;
    let took = resumed_at.elapsed();
    assert!(
        took < POLL / 4,
        "the resumed queue's job started only after {took:?}"
    );
    assert!(!jobq::resume_queue(&mut conn, "reports").await.unwrap());
    assert!(jobq::paused_queues(&mut conn).await.unwrap().is_empty());
    drop(conn);
    second.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pausing_is_transactional_and_checks_queue_names() {
    use diesel_async::AsyncConnection;
    let env = support::env().await;
    let mut conn = env.conn().await;
    // Rolled back with the caller's transaction.
    let rolled_back: Result<(), jobq::Error> = conn
        .transaction(async |c| {
            jobq::pause_queue(c, "billing").await?;
            assert_eq!(jobq::paused_queues(c).await?, ["billing"]);
            Err(jobq::Error::from(
                diesel::result::Error::RollbackTransaction,
            ))
        })
        .await;
    assert!(rolled_back.is_err());
    assert!(jobq::paused_queues(&mut conn).await.unwrap().is_empty());

    for bad in ["", "a\0b", &"q".repeat(201)] {
        for result in [
            jobq::pause_queue(&mut conn, bad).await,
            jobq::resume_queue(&mut conn, bad).await,
        ] {
            assert!(
                matches!(
                    result,
                    Err(jobq::Error::InvalidOptions { what: "queue", .. })
                ),
                "{bad:?}: {result:?}"
            );
        }
    }
    // Any other name is data.
    let odd = "reports'; DELETE FROM jobq.paused_queues; -- 🦀";
    assert!(jobq::pause_queue(&mut conn, odd).await.unwrap());
    assert!(jobq::pause_queue(&mut conn, "é".repeat(200).as_str())
        .await
        .unwrap());
    assert_eq!(jobq::paused_queues(&mut conn).await.unwrap().len(), 2);
    assert!(jobq::resume_queue(&mut conn, odd).await.unwrap());
    assert_eq!(jobq::paused_queues(&mut conn).await.unwrap().len(), 1);
}
