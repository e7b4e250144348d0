//! The worker's maintenance pass: pruning finished jobs after their
//! retention, and vacuuming the jobs table where autovacuum is off.

mod support;

use std::time::Duration;

use diesel_async::SimpleAsyncConnection;
use jobq::TaskError;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Nothing {}

/// The worker needs a task to serve; these tests enqueue none.
#[jobq::task]
async fn idle(job: Nothing) -> Result<(), TaskError> {
    let _ = job;
    Ok(())
}

/// Inserts `n` completed jobs tagged `tag`, finished two minutes ago.
async fn old_completed(env: &support::Env, tag: &str, n: u32) {
    env.conn()
        .await
        .batch_execute(&format!(
            "INSERT INTO jobq.jobs (task, payload, state, attempt, started_at, finished_at) \
             SELECT '{tag}', '{{}}', 'completed', 1, now() - interval '2 minutes', \
                    now() - interval '2 minutes' \
             FROM generate_series(1, {n})"
        ))
        .await
        .unwrap();
}

async fn wait_pruned(env: &support::Env, tag: &str) {
    let sql = format!("SELECT count(*) AS n FROM jobq.jobs WHERE task = '{tag}'");
    support::wait_until(&format!("the {tag} jobs to be pruned"), || async {
        env.count(&sql).await == 0
    })
    .await;
}

const DEAD: &str = "SELECT coalesce(sum(n_dead_tup), 0)::bigint AS n FROM pg_stat_user_tables \
                    WHERE relid IN ('jobq.jobs_active'::regclass, 'jobq.jobs_finished_kept'::regclass)";
const VACUUMS: &str = "SELECT coalesce(max(vacuum_count), 0) AS n FROM pg_stat_user_tables \
                       WHERE relid IN ('jobq.jobs_active'::regclass, 'jobq.jobs_finished_kept'::regclass)";

async fn autovacuum_off_for_jobs(env: &support::Env) {
    env.conn()
        .await
        .batch_execute(
            "ALTER TABLE jobq.jobs_active SET (autovacuum_enabled = off); \
             ALTER TABLE jobq.jobs_finished_kept SET (autovacuum_enabled = off)",
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn the_worker_prunes_old_jobs_and_vacuums_when_autovacuum_is_off() {
    let env = support::env().await;
    autovacuum_off_for_jobs(&env).await;
    // Finished two minutes ago: past the default retention of completed
    // jobs (one minute), so the first maintenance pass deletes them.
    old_completed(&env, "old", 3_000).await;
    let worker = env.worker().build().await.unwrap().spawn();
    wait_pruned(&env, "old").await;
    support::wait_until("jobq's own vacuum of jobq.jobs", || async {
        env.count(VACUUMS).await >= 1
    })
    .await;
    worker.shutdown().await.unwrap();
    assert!(
        env.count(DEAD).await < 3_000,
        "the vacuum reclaimed the pruned rows"
    );
}

#[tokio::test]
async fn vacuum_off_leaves_the_table_alone() {
    let env = support::env().await;
    autovacuum_off_for_jobs(&env).await;
    old_completed(&env, "first", 3_000).await;
    let worker = env
        .worker()
        .vacuum(false)
        .retention(Duration::from_secs(60), Duration::from_secs(60))
        .build()
        .await
        .unwrap()
        .spawn();
    wait_pruned(&env, "first").await;
    support::wait_until("the pruned rows to show as dead", || async {
        env.count(DEAD).await >= 3_000
    })
    .await;
    // Two more passes, each seen by its prune, so that at least one whole
    // pass (prune, then the vacuum step) ran while the dead rows showed.
    for tag in ["second", "third"] {
        old_completed(&env, tag, 1).await;
        wait_pruned(&env, tag).await;
    }
    worker.shutdown().await.unwrap();
    assert_eq!(env.count(VACUUMS).await, 0, "no vacuum with vacuum(false)");
}

/// Completed jobs go to the ring's open segment and leave it whole: the
/// worker truncates a segment once its jobs are past their retention,
/// and deletes none of them.
#[tokio::test]
async fn the_worker_truncates_segments_of_completed_jobs_past_their_retention() {
    let env = support::env().await;
    let worker = env
        .worker()
        .retention_completed(Duration::from_secs(2))
        .maintenance_interval(Duration::from_millis(50))
        .build()
        .await
        .unwrap()
        .spawn();
    let mut conn = env.conn().await;
    for _ in 0..20 {
        idle::enqueue(&mut conn, &Nothing {}).await.unwrap();
    }
    // Kept two seconds, and a second more in their segment, at least.
    support::wait_until("the 20 jobs completed into segments", || async {
        env.count(
            "SELECT count(*) AS n FROM jobq.jobs \
             WHERE state = 'completed' AND tableoid::regclass::text LIKE 'jobq.jobs_completed_%'",
        )
        .await
            == 20
    })
    .await;
    support::wait_until("the segments holding them to be truncated", || async {
        env.count("SELECT count(*) AS n FROM jobq.jobs").await == 0
    })
    .await;
    worker.shutdown().await.unwrap();
    // Pruning deletes only from the kept partition; these were never
    // there, so truncation it was.
    assert_eq!(
        env.count("SELECT count(*) AS n FROM jobq.jobs_finished_kept")
            .await,
        0
    );
}
