//! Leases, rescue of crashed work, cancellation of running jobs and
//! graceful shutdown.

mod support;

use std::time::{Duration, Instant};

use jobq::{JobState, TaskError};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Step {
    millis: u64,
}

/// Hangs on its first attempt (until its worker dies), completes after.
#[jobq::task(retry = "10ms")]
async fn hangs_first_time(ctx: jobq::Context, job: Step) -> Result<(), TaskError> {
    let _ = job;
    if ctx.attempt() == 1 {
        std::future::pending::<()>().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_workers_job_is_rescued_and_finished_by_another() {
    let env = support::env().await;
    // The doomed worker runs on a runtime of its own, so that dropping the
    // runtime stops it the way a crash does: no shutdown, no more heartbeats.
    let doomed_builder = env.worker();
    let doomed = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let worker = rt.block_on(doomed_builder.build()).unwrap();
        rt.spawn(worker.run_until(std::future::pending()));
        rt
    })
    .join()
    .unwrap();
    let mut conn = env.conn().await;
    let id = hangs_first_time::enqueue(&mut conn, &Step { millis: 0 })
        .await
        .unwrap();
    env.wait_job(id, "running", |j| j.state == JobState::Running)
        .await;
    doomed.shutdown_background();

    let crashed_at = Instant::now();
    let rescuer = env.worker().build().await.unwrap().spawn();
    let info = env.wait_state(id, JobState::Completed).await;
    rescuer.shutdown().await.unwrap();
    assert_eq!(info.attempt, 2);
    assert_eq!(info.errors.len(), 1);
    assert!(
        info.errors[0].message.contains("stopped heartbeating"),
        "{:?}",
        info.errors
    );
    // Lease (2 s) plus a maintenance interval, with slack for slow machines.
    assert!(
        crashed_at.elapsed() < Duration::from_secs(10),
        "rescue took {:?}",
        crashed_at.elapsed()
    );
}

#[jobq::task]
async fn sleeps(job: Step) -> Result<(), TaskError> {
    tokio::time::sleep(Duration::from_millis(job.millis)).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_longer_than_the_lease_is_not_rescued_while_its_worker_lives() {
    let env = support::env().await;
    let lease = Duration::from_secs(1);
    let handle = env.worker().lease(lease).build().await.unwrap().spawn();
    let mut conn = env.conn().await;
    let id = sleeps::enqueue(&mut conn, &Step { millis: 3 * 1000 })
        .await
        .unwrap();
    let info = env.wait_state(id, JobState::Completed).await;
    handle.shutdown().await.unwrap();
    assert_eq!(info.attempt, 1, "the job was rescued: {:?}", info.errors);
    assert!(info.errors.is_empty());
}

#[jobq::task]
async fn until_cancelled(ctx: jobq::Context, job: Step) -> Result<(), TaskError> {
    let _ = job;
    ctx.cancelled().await;
    Err(TaskError::msg("stopped on request"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_running_job_stops_it_and_it_ends_cancelled() {
    let env = support::env().await;
    let handle = env.worker().build().await.unwrap().spawn();
    let mut conn = env.conn().await;
    let id = until_cancelled::enqueue(&mut conn, &Step { millis: 0 })
        .await
        .unwrap();
    env.wait_job(id, "running", |j| j.state == JobState::Running)
        .await;
    assert!(jobq::cancel(&mut conn, id).await.unwrap());
    let info = env.wait_state(id, JobState::Cancelled).await;
    handle.shutdown().await.unwrap();
    assert_eq!(info.attempt, 1);
    assert!(info.finished_at.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_running_jobs_finish_within_the_grace_period() {
    let env = support::env().await;
    let handle = env
        .worker()
        .shutdown_timeout(Duration::from_secs(10))
        .build()
        .await
        .unwrap()
        .spawn();
    let mut conn = env.conn().await;
    let ids = sleeps::enqueue_many(&mut conn, &[Step { millis: 500 }, Step { millis: 700 }])
        .await
        .unwrap();
    for &id in &ids {
        env.wait_job(id, "running", |j| j.state == JobState::Running)
            .await;
    }
    handle.shutdown().await.unwrap();
    for id in ids {
        let info = env.job(id).await;
        assert_eq!(info.state, JobState::Completed, "{info:#?}");
    }
    assert_eq!(env.count("SELECT count(*) AS n FROM jobq.workers").await, 0);
}

#[jobq::task]
async fn ignores_cancellation(job: Step) -> Result<(), TaskError> {
    tokio::time::sleep(Duration::from_millis(job.millis)).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_hands_back_jobs_still_running_at_the_grace_period() {
    let env = support::env().await;
    let grace = Duration::from_millis(500);
    let handle = env
        .worker()
        .shutdown_timeout(grace)
        .build()
        .await
        .unwrap()
        .spawn();
    let mut conn = env.conn().await;
    let stubborn = ignores_cancellation::enqueue(&mut conn, &Step { millis: 600_000 })
        .await
        .unwrap();
    let polite = until_cancelled::enqueue(&mut conn, &Step { millis: 0 })
        .await
        .unwrap();
    for id in [stubborn, polite] {
        env.wait_job(id, "running", |j| j.state == JobState::Running)
            .await;
    }
    let started = Instant::now();
    handle.shutdown().await.unwrap();
    assert!(
        started.elapsed() < grace + Duration::from_secs(5),
        "shutdown took {:?}",
        started.elapsed()
    );

    // Both are pending again, not failed, with the reason on record; the
    // attempt that was cut short does not count as a failure.
    for id in [stubborn, polite] {
        let info = env.job(id).await;
        assert_eq!(info.state, JobState::Pending, "{info:#?}");
        assert!(
            info.errors[0].message.starts_with("worker shutting down"),
            "{:?}",
            info.errors
        );
    }
    assert_eq!(
        env.count("SELECT count(*) AS n FROM jobq.jobs WHERE state = 'running'")
            .await,
        0
    );
    assert_eq!(env.count("SELECT count(*) AS n FROM jobq.workers").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_claimed_but_never_received_is_handed_back_and_run() {
    let env = support::env().await;
    let handle = env.worker().build().await.unwrap().spawn();
    support::wait_until("the worker row", || async {
        env.count("SELECT count(*) AS n FROM jobq.workers").await == 1
    })
    .await;
    // What a claim whose reply was lost leaves behind: the row says the job
    // runs under this worker, the claim's row says the worker holds it, and
    // the worker knows nothing of either.
    let id = env
        .count(
            "WITH job AS ( \
                 INSERT INTO jobq.jobs (task, payload, state, attempt, started_at, worker_id) \
                 SELECT 'sleeps', '{\"millis\": 0}', 'running', 1, now(), id FROM jobq.workers \
                 RETURNING id, worker_id), \
             claim AS ( \
                 INSERT INTO jobq.claims (worker_id, jobs) \
                 SELECT worker_id, int8multirange(int8range(id, id, '[]')) FROM job) \
             SELECT id AS n FROM job",
        )
        .await;
    let info = env
        .wait_state(jobq::JobId::from(id), JobState::Completed)
        .await;
    handle.shutdown().await.unwrap();
    assert_eq!(info.attempt, 2);
    assert!(
        info.errors[0].message.contains("reply was lost"),
        "{:?}",
        info.errors
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_row_names_this_machine_and_process() {
    let env = support::env().await;
    let handle = env.worker().build().await.unwrap().spawn();
    // The kernel's own record of the name, read independently of jobq.
    let machine = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .expect("the kernel's hostname")
        .trim()
        .replace('\'', "''");
    let pid = std::process::id();
    support::wait_until("the worker row", || async {
        env.count("SELECT count(*) AS n FROM jobq.workers").await == 1
    })
    .await;
    assert_eq!(
        env.count(&format!(
            "SELECT count(*) AS n FROM jobq.workers WHERE hostname = '{machine}' AND pid = {pid}"
        ))
        .await,
        1
    );
    handle.shutdown().await.unwrap();
}
