//! `jobq::stats` and `jobq::workers`: exact counts after a known set of
//! jobs, and plans that never read the whole jobs table, checked on a
//! table of a million finished jobs.

mod support;

use std::time::Duration;

use diesel::sql_types::{BigInt, Text};
use diesel::QueryableByName;
use diesel_async::{RunQueryDsl, SimpleAsyncConnection};
use jobq::{EnqueueOptions, JobState, TaskError};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Input {
    n: u32,
}

/// Released by the test: a job of `stats.block` runs until then.
static RELEASE: Semaphore = Semaphore::const_new(0);

#[jobq::task(name = "stats.block", queue = "slow")]
async fn block(_job: Input) -> Result<(), TaskError> {
    RELEASE.acquire().await.expect("semaphore").forget();
    Ok(())
}

#[jobq::task(name = "stats.ok")]
async fn ok(_job: Input) -> Result<(), TaskError> {
    Ok(())
}

#[jobq::task(name = "stats.fail", max_attempts = 1)]
async fn fail(_job: Input) -> Result<(), TaskError> {
    Err(TaskError::msg("no"))
}

fn find<'a>(stats: &'a jobq::Stats, queue: &str, task: &str) -> &'a jobq::TaskStats {
    stats
        .tasks
        .iter()
        .find(|t| t.queue == queue && t.task == task)
        .unwrap_or_else(|| panic!("no entry for {queue}/{task}: {stats:#?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_count_a_known_set_of_jobs_by_queue_task_and_state() {
    let env = support::env().await;
    let mut conn = env.conn().await;

    // Nothing yet: no entries, no workers.
    let empty = jobq::stats(&mut conn).await.unwrap();
    assert!(empty.tasks.is_empty(), "{empty:#?}");
    assert_eq!(empty.live_workers, 0);

    // Jobs no worker here serves: they stay where they are put.
    let unserved = |q: &str| EnqueueOptions::new().queue(q);
    let payload = serde_json::json!({});
    for _ in 0..3 {
        jobq::enqueue_json(&mut conn, "stats.unserved", &payload, unserved("q1"))
            .await
            .unwrap();
    }
    for _ in 0..2 {
        jobq::enqueue_json(
            &mut conn,
            "stats.unserved",
            &payload,
            unserved("q1").delay(Duration::from_secs(3600)),
        )
        .await
        .unwrap();
    }
    let cancelled = jobq::enqueue_json(&mut conn, "stats.unserved", &payload, unserved("q2"))
        .await
        .unwrap();
    assert!(jobq::cancel(&mut conn, cancelled).await.unwrap());
    // One of the pending jobs has been due for a minute.
    conn.batch_execute(
        "UPDATE jobq.jobs SET run_at = now() - interval '60 seconds' \
         WHERE id = (SELECT min(id) FROM jobq.jobs WHERE state = 'pending')",
    )
    .await
    .unwrap();

    // A worker runs two successes (one of them holding its unique key
    // for good, which keeps it out of the pruning index), one failure and
    // one job it holds.
    let handle = env.worker().build().await.unwrap().spawn();
    let held = jobq::EnqueueOptions::new()
        .unique_key("stats/held")
        .unique_forever();
    let oks = [
        ok::enqueue(&mut conn, &Input { n: 1 }).await.unwrap(),
        ok::enqueue_unique(&mut conn, &Input { n: 2 }, held)
            .await
            .unwrap()
            .id,
    ];
    let failed = fail::enqueue(&mut conn, &Input { n: 3 }).await.unwrap();
    let blocked = block::enqueue(&mut conn, &Input { n: 4 }).await.unwrap();
    for id in oks {
        env.wait_state(id, JobState::Completed).await;
    }
    env.wait_state(failed, JobState::Failed).await;
    env.wait_state(blocked, JobState::Running).await;

    let stats = jobq::stats(&mut conn).await.unwrap();
    let q1 = find(&stats, "q1", "stats.unserved");
    assert_eq!((q1.scheduled, q1.pending, q1.running), (2, 3, 0));
    let age = q1.oldest_due_age.expect("an oldest due job");
    assert!(
        (Duration::from_secs(59)..Duration::from_secs(300)).contains(&age),
        "{age:?}"
    );
    let q2 = find(&stats, "q2", "stats.unserved");
    assert_eq!((q2.cancelled, q2.pending, q2.oldest_due_age), (1, 0, None));
    let okd = find(&stats, "default", "stats.ok");
    assert_eq!(
        (
            okd.completed_last_minute,
            okd.completed_last_hour,
            okd.failed_last_hour
        ),
        (2, 2, 0)
    );
    let failing = find(&stats, "default", "stats.fail");
    assert_eq!(
        (
            failing.failed,
            failing.failed_last_minute,
            failing.failed_last_hour
        ),
        (1, 1, 1)
    );
    let slow = find(&stats, "slow", "stats.block");
    assert_eq!((slow.running, slow.pending), (1, 0));
    assert_eq!(stats.tasks.len(), 5, "{stats:#?}");
    assert_eq!(stats.live_workers, 1);

    let running = jobq::jobs(&mut conn, &jobq::JobFilter::new().state(JobState::Running))
        .await
        .unwrap();
    assert_eq!(running.iter().map(|j| j.id).collect::<Vec<_>>(), [blocked]);

    let workers = jobq::workers(&mut conn).await.unwrap();
    assert_eq!(workers.len(), 1, "{workers:#?}");
    assert!(workers[0].alive);
    assert_eq!(workers[0].running, 1);
    assert_eq!(workers[0].pid, i32::try_from(std::process::id()).unwrap());

    // JSON for scripts: the names documented, durations in seconds.
    let json = serde_json::to_value(&stats).unwrap();
    let entry = json["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["task"] == "stats.unserved" && t["queue"] == "q1")
        .unwrap();
    assert_eq!(entry["pending"], 3);
    assert!(entry["oldest_due_age_secs"].as_f64().unwrap() >= 59.0);

    // A job finished more than an hour ago counts in no window.
    conn.batch_execute(
        "UPDATE jobq.jobs SET finished_at = now() - interval '2 hours' WHERE task = 'stats.ok'",
    )
    .await
    .unwrap();
    let later = jobq::stats(&mut conn).await.unwrap();
    assert!(
        !later.tasks.iter().any(|t| t.task == "stats.ok"),
        "{later:#?}"
    );

    RELEASE.add_permits(1);
    env.wait_state(blocked, JobState::Completed).await;
    handle.shutdown().await.unwrap();
    let after = jobq::workers(&mut conn).await.unwrap();
    assert!(after.iter().all(|w| w.running == 0), "{after:#?}");
}

#[tokio::test]
async fn the_completed_estimate_follows_analyze() {
    let env = support::env().await;
    let mut conn = env.conn().await;
    conn.batch_execute(
        "INSERT INTO jobq.jobs (task, payload, state, finished_at) \
         SELECT 'e', '{}', 'completed', now() FROM generate_series(1, 5000); \
         ANALYZE jobq.jobs;",
    )
    .await
    .unwrap();
    let estimate = jobq::stats(&mut conn)
        .await
        .unwrap()
        .completed_estimate
        .expect("an estimate after ANALYZE");
    assert!((4500..=5500).contains(&estimate), "{estimate}");
}

#[derive(QueryableByName)]
struct PlanLine {
    #[diesel(sql_type = Text, column_name = "QUERY PLAN")]
    line: String,
}

/// A million finished jobs over the past week (about six thousand in the
/// last hour; one in a hundred failed), a thousand pending, a thousand
/// scheduled, a hundred running under a claim. Analyzed.
async fn a_million_finished_jobs(conn: &mut diesel_async::AsyncPgConnection) {
    conn.batch_execute(
        "INSERT INTO jobq.jobs (task, queue, payload, state, finished_at) \
         SELECT 't' || (i % 10), 'q' || (i % 3), '{}', \
                CASE WHEN i % 100 = 0 THEN 'failed' ELSE 'completed' END::jobq.job_state, \
                now() - (i % 604800) * interval '1 second' \
         FROM generate_series(1, 1000000) i; \
         INSERT INTO jobq.jobs (task, payload) SELECT 't1', '{}' FROM generate_series(1, 1000); \
         INSERT INTO jobq.jobs (task, payload, state, run_at) \
         SELECT 't1', '{}', 'scheduled', now() + interval '1 hour' FROM generate_series(1, 1000); \
         INSERT INTO jobq.workers (hostname, pid, queues, lease_ms) \
         VALUES ('h', 1, '{default}', 30000); \
         WITH r AS (UPDATE jobq.jobs SET state = 'running', \
                        worker_id = (SELECT max(id) FROM jobq.workers) \
                    WHERE id IN (SELECT id FROM jobq.jobs WHERE state = 'pending' LIMIT 100) \
                    RETURNING id) \
         INSERT INTO jobq.claims (worker_id, jobs) \
         SELECT (SELECT max(id) FROM jobq.workers), range_agg(int8range(id, id, '[]')) FROM r; \
         ANALYZE jobq.jobs; ANALYZE jobq.claims; ANALYZE jobq.workers;",
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn no_stats_statement_reads_the_whole_jobs_table() {
    let env = support::env().await;
    let mut conn = env.conn().await;
    a_million_finished_jobs(&mut conn).await;

    let mut plans = Vec::new();
    for (what, sql) in [
        ("state counts", jobq_diesel::STATE_COUNTS_SQL),
        ("recent counts", jobq_diesel::RECENT_COUNTS_SQL),
        ("completed estimate", jobq_diesel::COMPLETED_ESTIMATE_SQL),
        ("throughput", jobq_diesel::THROUGHPUT_SQL),
    ] {
        let plan: Vec<PlanLine> = diesel::sql_query(format!("EXPLAIN {sql}"))
            .load(&mut conn)
            .await
            .unwrap();
        plans.push((what, plan.into_iter().map(|p| p.line).collect::<Vec<_>>()));
    }
    let plan: Vec<PlanLine> = diesel::sql_query(format!("EXPLAIN {}", jobq_diesel::WORKERS_SQL))
        .bind::<BigInt, _>(30_000i64)
        .load(&mut conn)
        .await
        .unwrap();
    plans.push(("workers", plan.into_iter().map(|p| p.line).collect()));

    for (what, plan) in &plans {
        let text = plan.join("\n");
        assert!(
            !plan.iter().any(|l| l.contains("Seq Scan on jobs_finished")),
            "{what} reads the whole jobs table:\n{text}"
        );
    }
    let by_name = |name: &str| plans.iter().find(|(w, _)| *w == name).unwrap().1.join("\n");
    let states = by_name("state counts");
    // Scheduled and pending jobs are counted from the active partition,
    // by index or by a scan of it (it holds only active jobs); running ones
    // through their claims, failed ones through their own index.
    for index in ["jobs_pkey", "jobs_failed_idx"] {
        assert!(
            states.contains(index),
            "state counts do not use {index}:\n{states}"
        );
    }
    for name in ["recent counts", "throughput"] {
        let plan = by_name(name);
        assert!(
            plan.contains("jobs_finished_idx"),
            "{name} does not use jobs_finished_idx:\n{plan}"
        );
    }

    // And the numbers are right on that table.
    let stats = jobq::stats(&mut conn).await.unwrap();
    let total = |f: fn(&jobq::TaskStats) -> i64| stats.tasks.iter().map(f).sum::<i64>();
    assert_eq!(total(|t| t.pending), 900);
    assert_eq!(total(|t| t.scheduled), 1000);
    assert_eq!(total(|t| t.running), 100);
    assert_eq!(total(|t| t.failed), 10_000);
    let hour = total(|t| t.completed_last_hour) + total(|t| t.failed_last_hour);
    // Rows i with i % 604800 < 3600: 3600 per full week, two weeks' worth.
    assert!((7000..=7300).contains(&hour), "{hour}");
    let estimate = stats.completed_estimate.unwrap();
    assert!((900_000..=1_080_000).contains(&estimate), "{estimate}");

    // The dashboard's chart: the same hour, minute by minute, oldest first.
    let minutes = jobq::throughput(&mut conn).await.unwrap();
    assert_eq!(minutes.len(), 60);
    let ago: Vec<u32> = minutes.iter().map(|m| m.minutes_ago).collect();
    assert_eq!(ago, (0..60).rev().collect::<Vec<u32>>());
    let per_minute: i64 = minutes.iter().map(|m| m.completed + m.failed).sum();
    assert!((7000..=7300).contains(&per_minute), "{per_minute}");
    // Two rows a second, one failed in a hundred: every minute has some.
    // The newest minute only holds the rows of its part before the insert
    // (the statement runs seconds after it on a busy machine).
    assert!(
        minutes
            .iter()
            .filter(|m| m.minutes_ago > 0)
            .all(|m| m.completed >= 100),
        "{minutes:?}"
    );
    assert!(minutes.iter().map(|m| m.failed).sum::<i64>() >= 60);
}
