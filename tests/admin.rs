//! The operators' API: listing jobs with filters and keyset paging,
//! retrying failed and cancelled jobs, purging finished ones, enqueueing by
//! task name, and the schema's version and removal.

mod support;

use std::time::Duration;

use diesel_async::SimpleAsyncConnection;
use jobq::{EnqueueOptions, Error, JobFilter, JobId, JobState, RetryOutcome};
use serde_json::json;

/// A task's jobs are listed across every state, newest first, however
/// the listing reads them (one index per state, merged), and a state with
/// a task lists only that task's jobs in that state.
#[tokio::test]
async fn a_task_lists_its_jobs_in_every_state_newest_first() {
    let env = support::env().await;
    let mut conn = env.conn().await;
    let states = [
        JobState::Scheduled,
        JobState::Pending,
        JobState::Running,
        JobState::Completed,
        JobState::Failed,
        JobState::Cancelled,
    ];
    conn.batch_execute(
        "INSERT INTO jobq.workers (hostname, pid, queues) VALUES ('host', 1, '{default}')",
    )
    .await
    .unwrap();
    // Two jobs of "mine" and one of "other" in each state, interleaved.
    let mut mine = Vec::new();
    for round in 0..2 {
        for state in states {
            for task in ["mine", "other"] {
                if task == "other" && round == 1 {
                    continue;
                }
                let id = enqueue(&mut conn, task).await;
                put_in_state(&mut conn, id, state).await;
                if task == "mine" {
                    mine.push((id, state));
                }
            }
        }
    }
    mine.reverse();
    let newest_first: Vec<JobId> = mine.iter().map(|(id, _)| *id).collect();
    assert_eq!(
        listed(&env, JobFilter::new().task("mine")).await,
        newest_first
    );
    let mut paged = Vec::new();
    let mut filter = JobFilter::new().task("mine").limit(5);
    loop {
        let page = listed(&env, filter.clone()).await;
        let Some(&last) = page.last() else { break };
        filter = filter.before(last);
        paged.extend(page);
    }
    assert_eq!(paged, newest_first);
    for state in states {
        let expected: Vec<JobId> = mine
            .iter()
            .filter(|(_, s)| *s == state)
            .map(|(id, _)| *id)
            .collect();
        assert_eq!(
            listed(&env, JobFilter::new().state(state).task("mine")).await,
            expected,
            "{state:?}"
        );
    }
    assert_eq!(listed(&env, JobFilter::new().task("nobody")).await, []);
    // A queue's failed jobs (read through the failed jobs' own index): two
    // of "mine" and the one of "other", newest first.
    let failed = listed(
        &env,
        JobFilter::new().state(JobState::Failed).queue("default"),
    )
    .await;
    assert_eq!(failed.len(), 3, "{failed:?}");
    assert!(failed.windows(2).all(|w| w[0].get() > w[1].get()));
    assert_eq!(
        listed(
            &env,
            JobFilter::new().state(JobState::Failed).queue("nowhere")
        )
        .await,
        []
    );
    // Below jobq's typed filter, a state that is not one is refused; its
    // text never reaches the statement.
    let bogus = jobq_diesel::JobQuery {
        state: Some("pending' OR true --"),
        limit: 10,
        ..Default::default()
    };
    assert!(jobq_diesel::list_jobs(&mut conn, &bogus).await.is_err());
    assert!(!jobq_diesel::list_jobs_sql(&bogus).contains("OR true"));
}

/// Moves a pending job to `state` as jobq would have: a running job with
/// the claim row that records it, a finished one with its end time.
async fn put_in_state(conn: &mut diesel_async::AsyncPgConnection, id: JobId, state: JobState) {
    let sql = match state {
        JobState::Pending => return,
        JobState::Scheduled => format!(
            "UPDATE jobq.jobs SET state = 'scheduled', run_at = now() + interval '1 hour' \
             WHERE id = {id}"
        ),
        JobState::Running => format!(
            "UPDATE jobq.jobs SET state = 'running', attempt = 1, started_at = now(), \
                 worker_id = (SELECT min(id) FROM jobq.workers) WHERE id = {id}; \
             INSERT INTO jobq.claims (worker_id, jobs, claim_key) \
             SELECT min(id), int8multirange(int8range({id}, {id}, '[]')), {id} FROM jobq.workers"
        ),
        finished => format!(
            "UPDATE jobq.jobs SET state = '{}', finished_at = now() WHERE id = {id}",
            finished.as_str()
        ),
    };
    conn.batch_execute(&sql).await.unwrap();
}

#[jobq::task(name = "admin.runs")]
async fn runs(_job: serde_json::Value) -> Result<(), jobq::TaskError> {
    Ok(())
}

/// Marks the job failed as a worker would after its last attempt.
async fn fail_job(conn: &mut diesel_async::AsyncPgConnection, id: JobId) {
    conn.batch_execute(&format!(
        "UPDATE jobq.jobs SET state = 'failed', attempt = 3, max_attempts = 3, \
         finished_at = now(), errors = '[{{\"attempt\": 3, \"at\": \"2026-11-30T00:00:00Z\", \
         \"message\": \"boom\"}}]' WHERE id = {id}"
    ))
    .await
    .unwrap();
}

async fn listed(env: &support::Env, filter: JobFilter) -> Vec<JobId> {
    let mut conn = env.conn().await;
    let jobs = jobq::jobs(&mut conn, &filter).await.unwrap();
    jobs.into_iter().map(|j| j.id).collect()
}

async fn enqueue(conn: &mut diesel_async::AsyncPgConnection, task: &str) -> JobId {
    jobq::enqueue_json(conn, task, &json!({"n": 1}), EnqueueOptions::new())
        .await
        .unwrap()
}

#[tokio::test]
async fn retry_makes_a_failed_job_pending_with_its_attempts_reset_and_history_kept() {
    let env = support::env().await;
    let mut conn = env.conn().await;
    let id = enqueue(&mut conn, "admin.t").await;
    fail_job(&mut conn, id).await;

    assert_eq!(
        jobq::retry(&mut conn, id).await.unwrap(),
        RetryOutcome::Retried
    );
    let info = env.job(id).await;
    assert_eq!(info.state, JobState::Pending);
    assert_eq!(info.attempt, 0, "the attempts used start again");
    assert_eq!(info.max_attempts, 3);
    assert_eq!(info.finished_at, None);
    assert_eq!(info.errors.len(), 1, "the history stays");
    // The fencing counter never goes back.
    assert_eq!(
        env.count(&format!(
            "SELECT attempt::bigint AS n FROM jobq.jobs WHERE id = {id}"
        ))
        .await,
        3
    );

    // A pending, running or missing job is not retried.
    assert_eq!(
        jobq::retry(&mut conn, id).await.unwrap(),
        RetryOutcome::NotRetryable
    );
    assert_eq!(
        jobq::retry(&mut conn, JobId::from(i64::MAX)).await.unwrap(),
        RetryOutcome::NotRetryable
    );

    // A cancelled job is retried too.
    assert!(jobq::cancel(&mut conn, id).await.unwrap());
    assert_eq!(
        jobq::retry(&mut conn, id).await.unwrap(),
        RetryOutcome::Retried
    );
    assert_eq!(env.job(id).await.state, JobState::Pending);
}

#[tokio::test]
async fn retry_leaves_a_job_whose_dedupe_key_a_live_job_holds() {
    let env = support::env().await;
    let mut conn = env.conn().await;
    let keyed = || EnqueueOptions::new().dedupe_key("k");
    let old = jobq::enqueue_json(&mut conn, "admin.k", &json!({}), keyed())
        .await
        .unwrap();
    fail_job(&mut conn, old).await;
    let live = jobq::enqueue_json(&mut conn, "admin.k", &json!({}), keyed())
        .await
        .unwrap();
    assert_ne!(old, live);
    assert_eq!(
        jobq::retry(&mut conn, old).await.unwrap(),
        RetryOutcome::DedupeKeyHeld { by: live }
    );
    assert_eq!(env.job(old).await.state, JobState::Failed);
    // The bulk retry skips it as well, without failing the others.
    let other = enqueue(&mut conn, "admin.k").await;
    fail_job(&mut conn, other).await;
    assert_eq!(jobq::retry_failed(&mut conn, "admin.k").await.unwrap(), 1);
    assert_eq!(env.job(old).await.state, JobState::Failed);
    assert_eq!(env.job(other).await.state, JobState::Pending);

    // Of failed jobs sharing a free key, only the newest runs again.
    let free = || EnqueueOptions::new().dedupe_key("free");
    let first = jobq::enqueue_json(&mut conn, "admin.k", &json!({}), free())
        .await
        .unwrap();
    fail_job(&mut conn, first).await;
    let second = jobq::enqueue_json(&mut conn, "admin.k", &json!({}), free())
        .await
        .unwrap();
    fail_job(&mut conn, second).await;
    assert_eq!(jobq::retry_failed(&mut conn, "admin.k").await.unwrap(), 1);
    assert_eq!(env.job(first).await.state, JobState::Failed);
    assert_eq!(env.job(second).await.state, JobState::Pending);
}

#[tokio::test]
async fn retry_failed_takes_only_the_failed_jobs_of_its_task() {
    let env = support::env().await;
    let mut conn = env.conn().await;
    let mut failed = Vec::new();
    for _ in 0..3 {
        let id = enqueue(&mut conn, "admin.a").await;
        fail_job(&mut conn, id).await;
        failed.push(id);
    }
    let other_task = enqueue(&mut conn, "admin.b").await;
    fail_job(&mut conn, other_task).await;
    let cancelled = enqueue(&mut conn, "admin.a").await;
    jobq::cancel(&mut conn, cancelled).await.unwrap();

    assert_eq!(jobq::retry_failed(&mut conn, "admin.a").await.unwrap(), 3);
    for id in failed {
        assert_eq!(env.job(id).await.state, JobState::Pending);
    }
    assert_eq!(env.job(other_task).await.state, JobState::Failed);
    assert_eq!(env.job(cancelled).await.state, JobState::Cancelled);
    assert_eq!(jobq::retry_failed(&mut conn, "admin.a").await.unwrap(), 0);
    assert_eq!(jobq::retry_failed(&mut conn, "nul\0task").await.unwrap(), 0);
}

#[tokio::test]
async fn a_retried_job_runs_on_a_worker() {
    let env = support::env().await;
    let mut conn = env.conn().await;
    let id = enqueue(&mut conn, "admin.runs").await;
    fail_job(&mut conn, id).await;
    let handle = env.worker().build().await.unwrap().spawn();
    jobq::retry(&mut conn, id).await.unwrap();
    let info = env.wait_state(id, JobState::Completed).await;
    assert_eq!(info.attempt, 1, "one attempt since the retry");
    handle.shutdown().await.unwrap();
}

#[tokio::test]
async fn purge_deletes_finished_jobs_older_than_asked_in_batches() {
    let env = support::env().await;
    let mut conn = env.conn().await;
    // 12,000 completed a week ago (more than one batch), 10 completed now,
    // 5 failed a week ago, 5 pending.
    conn.batch_execute(
        "INSERT INTO jobq.jobs (task, payload, state, finished_at) \
         SELECT 'p', '{}', 'completed', now() - interval '8 days' FROM generate_series(1, 12000); \
         INSERT INTO jobq.jobs (task, payload, state, finished_at) \
         SELECT 'p', '{}', 'completed', now() FROM generate_series(1, 10); \
         INSERT INTO jobq.jobs (task, payload, state, finished_at) \
         SELECT 'p', '{}', 'failed', now() - interval '8 days' FROM generate_series(1, 5); \
         INSERT INTO jobq.jobs (task, payload) SELECT 'p', '{}' FROM generate_series(1, 5);",
    )
    .await
    .unwrap();
    let week = Duration::from_secs(7 * 24 * 3600);
    assert_eq!(
        jobq::purge(&mut conn, &[JobState::Completed], week)
            .await
            .unwrap(),
        12_000
    );
    assert_eq!(env.count("SELECT count(*) AS n FROM jobq.jobs").await, 20);
    assert_eq!(
        jobq::purge(
            &mut conn,
            &[JobState::Failed, JobState::Cancelled],
            Duration::ZERO
        )
        .await
        .unwrap(),
        5
    );
    assert_eq!(
        env.count("SELECT count(*) AS n FROM jobq.jobs WHERE state = 'pending'")
            .await,
        5
    );

    // Active states and no states are refused, and nothing is deleted.
    for states in [&[JobState::Pending][..], &[JobState::Running], &[]] {
        let err = jobq::purge(&mut conn, states, Duration::ZERO)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::InvalidOptions { .. }), "{err}");
    }
    assert_eq!(env.count("SELECT count(*) AS n FROM jobq.jobs").await, 15);
}

#[tokio::test]
async fn jobs_lists_with_every_filter_and_pages_by_id() {
    let env = support::env().await;
    let mut conn = env.conn().await;
    let mut all = Vec::new();
    for i in 0..10 {
        let options = EnqueueOptions::new().queue(if i % 2 == 0 { "even" } else { "odd" });
        let options = if i == 7 {
            options.dedupe_key("seven")
        } else {
            options
        };
        let task = if i < 5 { "list.a" } else { "list.b" };
        all.push(
            jobq::enqueue_json(&mut conn, task, &json!({ "i": i }), options)
                .await
                .unwrap(),
        );
    }
    fail_job(&mut conn, all[3]).await;

    let ids = |jobs: Vec<jobq::JobSummary>| jobs.into_iter().map(|j| j.id).collect::<Vec<_>>();
    let newest_first: Vec<JobId> = all.iter().rev().copied().collect();
    assert_eq!(
        ids(jobq::jobs(&mut conn, &JobFilter::new()).await.unwrap()),
        newest_first
    );
    // Keyset paging: pages of three, each after the last id of the one before.
    let mut paged = Vec::new();
    let mut filter = JobFilter::new().limit(3);
    loop {
        let page = jobq::jobs(&mut conn, &filter).await.unwrap();
        let Some(last) = page.last() else { break };
        filter = filter.before(last.id);
        assert!(page.len() <= 3);
        paged.extend(ids(page));
    }
    assert_eq!(paged, newest_first);

    assert_eq!(
        listed(&env, JobFilter::new().state(JobState::Failed)).await,
        [all[3]]
    );
    assert_eq!(
        listed(&env, JobFilter::new().task("list.a").queue("even")).await,
        [all[4], all[2], all[0]]
    );
    assert_eq!(
        listed(&env, JobFilter::new().dedupe_key("seven")).await,
        [all[7]]
    );
    assert_eq!(
        listed(
            &env,
            JobFilter::new().since(chrono::Utc::now() + chrono::Duration::hours(1))
        )
        .await,
        []
    );
    assert_eq!(
        listed(
            &env,
            JobFilter::new().since(chrono::Utc::now() - chrono::Duration::hours(1))
        )
        .await
        .len(),
        10
    );
    // Hostile filter values match nothing and break nothing.
    for hostile in [
        "nul\0",
        "'; DROP TABLE jobq.jobs; --",
        "\n\r\t",
        &"x".repeat(100_000),
    ] {
        assert_eq!(listed(&env, JobFilter::new().task(hostile)).await, []);
        assert_eq!(listed(&env, JobFilter::new().queue(hostile)).await, []);
        assert_eq!(listed(&env, JobFilter::new().dedupe_key(hostile)).await, []);
    }
    for limit in [0, 10_001] {
        let err = jobq::jobs(&mut conn, &JobFilter::new().limit(limit))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::InvalidOptions { .. }), "{err}");
    }
    let summary = &jobq::jobs(&mut conn, &JobFilter::new().limit(1))
        .await
        .unwrap()[0];
    assert_eq!(
        (summary.task.as_str(), summary.queue.as_str(), summary.state),
        ("list.b", "odd", JobState::Pending)
    );
}

#[tokio::test]
async fn enqueue_json_checks_the_job_like_any_enqueue() {
    let env = support::env().await;
    let mut conn = env.conn().await;
    let defaults = EnqueueOptions::new;
    let refused = [
        ("t", json!({"s": "a\u{0}b"}), defaults()),
        ("t", json!({"a\u{0}": 1}), defaults()),
        ("t", json!("x".repeat(100)), defaults().max_payload_size(50)),
        ("", json!({}), defaults()),
        ("nul\0task", json!({}), defaults()),
        (&*"t".repeat(201), json!({}), defaults()),
        ("t", json!({}), defaults().queue("nul\0queue")),
        ("t", json!({}), defaults().queue("")),
        ("t", json!({}), defaults().dedupe_key("nul\0key")),
        ("t", json!({}), defaults().max_attempts(0)),
    ];
    for (task, payload, options) in refused {
        let err = jobq::enqueue_json(&mut conn, task, &payload, options)
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::InvalidJsonPayload { .. } | Error::InvalidOptions { .. }
            ),
            "{task:?}: {err:?}"
        );
    }
    assert_eq!(env.count("SELECT count(*) AS n FROM jobq.jobs").await, 0);

    // Any other text is data: stored and read back as given.
    let odd = "line\nbreak\r\t'quote\" \u{202e}rtl \u{1F600} \\";
    let id = jobq::enqueue_json(
        &mut conn,
        odd,
        &json!({ "text": odd, "big": "y".repeat(500_000) }),
        EnqueueOptions::new()
            .queue(odd)
            .dedupe_key(odd)
            .priority(-5)
            .delay(Duration::from_secs(60)),
    )
    .await
    .unwrap();
    let info = env.job(id).await;
    assert_eq!((info.task.as_str(), info.queue.as_str()), (odd, odd));
    assert_eq!(info.payload["text"], odd);
    assert_eq!(info.state, JobState::Scheduled);
    assert_eq!(info.priority, -5);
    assert!(jobq::task_has_jobs(&mut conn, "nobody")
        .await
        .is_ok_and(|k| !k));
    assert!(!jobq::task_has_jobs(&mut conn, "nul\0").await.unwrap());
    enqueue(&mut conn, "somebody").await;
    assert!(jobq::task_has_jobs(&mut conn, "somebody").await.unwrap());
}

#[tokio::test]
async fn uninstall_drops_the_schema_and_migrate_brings_it_back() {
    let env = support::env().await;
    let mut conn = env.conn().await;
    assert_eq!(
        jobq::schema_version(&mut conn).await.unwrap(),
        Some(jobq::SCHEMA_VERSION)
    );
    enqueue(&mut conn, "u").await;
    jobq::uninstall(&mut conn).await.unwrap();
    assert_eq!(jobq::schema_version(&mut conn).await.unwrap(), None);
    jobq::uninstall(&mut conn).await.unwrap();
    jobq::migrate(&mut conn).await.unwrap();
    assert_eq!(env.count("SELECT count(*) AS n FROM jobq.jobs").await, 0);
}

#[test]
fn job_states_read_and_write_their_names() {
    for state in [
        JobState::Scheduled,
        JobState::Pending,
        JobState::Running,
        JobState::Completed,
        JobState::Failed,
        JobState::Cancelled,
    ] {
        assert_eq!(state.as_str().parse::<JobState>().unwrap(), state);
        assert_eq!(state.to_string(), state.as_str());
        assert_eq!(serde_json::to_value(state).unwrap(), json!(state.as_str()));
    }
    assert!("Failed ".parse::<JobState>().is_err());
}

#[derive(diesel::QueryableByName)]
struct PlanLine {
    #[diesel(sql_type = diesel::sql_types::Text, column_name = "QUERY PLAN")]
    line: String,
}

/// A million finished jobs over the past week (one in a hundred failed,
/// all of them of task t0; some with dedupe keys), a thousand pending and
/// a thousand scheduled. Each task is on one queue (q1: t1, t4, t7, so
/// no failed job). Task "old" has 5,000 jobs, all in the oldest 1 % and
/// completed, alone on queue "q-old".
/// Analyzed.
async fn a_million_finished_jobs(conn: &mut diesel_async::AsyncPgConnection) {
    conn.batch_execute(
        "INSERT INTO jobq.jobs (task, queue, payload, state, finished_at, created_at, dedupe_key) \
         SELECT CASE WHEN i <= 10000 AND i % 2 = 1 THEN 'old' ELSE 't' || (i % 10) END, \
                CASE WHEN i <= 10000 AND i % 2 = 1 THEN 'q-old' ELSE 'q' || (i % 10 % 3) END, \
                '{}', \
                CASE WHEN i % 100 = 0 THEN 'failed' ELSE 'completed' END::jobq.job_state, \
                now() - (1000000 - i) * interval '600 milliseconds', \
                now() - (1000000 - i) * interval '600 milliseconds' - interval '1 second', \
                CASE WHEN i % 1000 = 0 THEN 'key' || i END \
         FROM generate_series(1, 1000000) i; \
         INSERT INTO jobq.jobs (task, payload) SELECT 't1', '{}' FROM generate_series(1, 1000); \
         INSERT INTO jobq.jobs (task, payload, state, run_at) \
         SELECT 't1', '{}', 'scheduled', now() + interval '1 hour' FROM generate_series(1, 1000); \
         ANALYZE jobq.jobs;",
    )
    .await
    .unwrap();
}

async fn explain_list(
    conn: &mut diesel_async::AsyncPgConnection,
    query: &jobq_diesel::JobQuery<'_>,
) -> String {
    explain_list_as(conn, "EXPLAIN", query).await
}

/// `explain` (`EXPLAIN` and its options) of the listing of `query`, its
/// parameters bound as `jobq::jobs` binds them.
async fn explain_list_as(
    conn: &mut diesel_async::AsyncPgConnection,
    explain: &str,
    query: &jobq_diesel::JobQuery<'_>,
) -> String {
    use diesel::sql_types::{BigInt, Text, Timestamptz};
    use diesel_async::RunQueryDsl;
    let mut q = diesel::sql_query(format!("{explain} {}", jobq_diesel::list_jobs_sql(query)))
        .into_boxed::<diesel::pg::Pg>();
    // The state is written into the statement, not bound.
    for text in [query.task, query.queue, query.dedupe_key]
        .into_iter()
        .flatten()
    {
        q = q.bind::<Text, _>(text.to_owned());
    }
    if let Some(since) = query.since {
        q = q.bind::<Timestamptz, _>(since);
    }
    if let Some(before) = query.before_id {
        q = q.bind::<BigInt, _>(before);
    }
    let plan: Vec<PlanLine> = q.bind::<BigInt, _>(query.limit).load(conn).await.unwrap();
    plan.into_iter()
        .map(|p| p.line)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Shared buffers (hit and read) a statement touched, from its
/// `EXPLAIN (ANALYZE, BUFFERS)`: the first `Buffers:` line is the top
/// node's, which counts its children's.
fn buffers(plan: &str) -> u64 {
    let line = plan
        .lines()
        .find(|l| l.trim_start().starts_with("Buffers:"))
        .unwrap_or_else(|| panic!("no Buffers line:\n{plan}"));
    ["hit=", "read="]
        .iter()
        .filter_map(|key| {
            let at = line.find(key)? + key.len();
            line[at..]
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

/// Listing by state, by a common task or queue, since a time or before an
/// id, and the bulk statements, all read indexes on a big table. (A queue
/// or time that matches almost nothing, without a state, may still be
/// planned as a scan: no index holds finished jobs by those columns; see
/// `jobq::jobs`.)
#[tokio::test]
async fn listing_plans_on_a_million_finished_jobs() {
    let env = support::env().await;
    let mut conn = env.conn().await;
    a_million_finished_jobs(&mut conn).await;
    let base = jobq_diesel::JobQuery {
        limit: 50,
        ..Default::default()
    };
    let hour_ago = chrono::Utc::now() - chrono::Duration::hours(1);
    let cases = [
        ("all", base.clone()),
        (
            "pending",
            jobq_diesel::JobQuery {
                state: Some("pending"),
                ..base.clone()
            },
        ),
        (
            "scheduled",
            jobq_diesel::JobQuery {
                state: Some("scheduled"),
                ..base.clone()
            },
        ),
        (
            "running",
            jobq_diesel::JobQuery {
                state: Some("running"),
                ..base.clone()
            },
        ),
        (
            "failed",
            jobq_diesel::JobQuery {
                state: Some("failed"),
                ..base.clone()
            },
        ),
        (
            "failed t3",
            jobq_diesel::JobQuery {
                state: Some("failed"),
                task: Some("t3"),
                ..base.clone()
            },
        ),
        (
            "completed",
            jobq_diesel::JobQuery {
                state: Some("completed"),
                ..base.clone()
            },
        ),
        (
            "task",
            jobq_diesel::JobQuery {
                task: Some("t3"),
                ..base.clone()
            },
        ),
        (
            "queue",
            jobq_diesel::JobQuery {
                queue: Some("q1"),
                ..base.clone()
            },
        ),
        (
            "since",
            jobq_diesel::JobQuery {
                since: Some(hour_ago),
                ..base.clone()
            },
        ),
        (
            "before",
            jobq_diesel::JobQuery {
                before_id: Some(500_000),
                ..base.clone()
            },
        ),
    ];
    // The million jobs are finished; the active partition holds a few
    // hundred, where a scan is the planner's right choice.
    let reads_the_table = |plan: &str| plan.contains("Seq Scan on jobs_finished");
    for (what, query) in cases {
        let plan = explain_list(&mut conn, &query).await;
        assert!(
            !reads_the_table(&plan),
            "listing {what} reads the whole table:\n{plan}"
        );
        if what == "running" {
            assert!(
                plan.contains("claims"),
                "running jobs not found through claims:\n{plan}"
            );
        }
    }
    // Filters that match few or only old jobs: a plan that walks the
    // primary key hoping to meet matches soon reads the whole table (tens
    // of thousands of buffers). Each of these must read a few pages.
    conn.batch_execute("SET jit = off").await.unwrap();
    let listing = |state, task, queue, dedupe_key, before_id| jobq_diesel::JobQuery {
        state,
        task,
        queue,
        dedupe_key,
        before_id,
        ..base.clone()
    };
    let rare = [
        (
            "failed of a task that has none",
            listing(Some("failed"), Some("t3"), None, None, None),
        ),
        (
            "cancelled of a task that has none",
            listing(Some("cancelled"), Some("t3"), None, None, None),
        ),
        (
            "completed of a task with only old jobs",
            listing(Some("completed"), Some("old"), None, None, None),
        ),
        (
            "failed of a task with only old jobs",
            listing(Some("failed"), Some("old"), None, None, None),
        ),
        (
            "scheduled of a task that has none",
            listing(Some("scheduled"), Some("t3"), None, None, None),
        ),
        // The queues page links every queue's failed jobs.
        (
            "failed of a queue that has none",
            listing(Some("failed"), None, Some("q1"), None, None),
        ),
        (
            "a task with only old jobs",
            listing(None, Some("old"), None, None, None),
        ),
        (
            "a task with only old jobs, a page on",
            listing(None, Some("old"), None, None, Some(4_000)),
        ),
        (
            "an old dedupe key",
            listing(None, None, None, Some("key1000"), None),
        ),
    ];
    for (what, query) in rare {
        let state = query.state;
        let plan = explain_list_as(&mut conn, "EXPLAIN (ANALYZE, BUFFERS)", &query).await;
        assert!(
            buffers(&plan) < 1_000,
            "listing {what} reads {} buffers:\n{plan}",
            buffers(&plan)
        );
        // Failed and cancelled jobs by task are in jobs_failed_idx too;
        // completed ones only in jobs_finished_task_idx.
        if state == Some("completed") {
            assert!(
                plan.contains("jobs_finished_task_idx"),
                "listing {what} does not read jobs_finished_task_idx:\n{plan}"
            );
        }
    }

    use diesel::sql_types::{Array, BigInt, Text};
    use diesel_async::RunQueryDsl;
    let purge: Vec<PlanLine> = diesel::sql_query(format!("EXPLAIN {}", jobq_diesel::PURGE_SQL))
        .bind::<Array<Text>, _>(vec!["completed".to_owned()])
        .bind::<BigInt, _>(7 * 86_400_000i64)
        .bind::<BigInt, _>(5000i64)
        .load(&mut conn)
        .await
        .unwrap();
    let retry: Vec<PlanLine> =
        diesel::sql_query(format!("EXPLAIN {}", jobq_diesel::retry_failed_sql()))
            .bind::<Text, _>("t3")
            .load(&mut conn)
            .await
            .unwrap();
    let known: Vec<PlanLine> =
        diesel::sql_query(format!("EXPLAIN {}", jobq_diesel::TASK_HAS_JOBS_SQL))
            .bind::<Text, _>("nobody")
            .load(&mut conn)
            .await
            .unwrap();
    for (what, plan, index) in [
        ("purge", purge, &["jobs_finished_idx"][..]),
        // Both hold a task's failed jobs.
        (
            "retry_failed",
            retry,
            &["jobs_failed_idx", "jobs_finished_task_idx"][..],
        ),
        (
            "task_has_jobs",
            known,
            &["jobs_failed_idx", "jobs_finished_task_idx"][..],
        ),
    ] {
        let plan = plan
            .into_iter()
            .map(|p| p.line)
            .collect::<Vec<_>>()
            .join("\n");
        assert!(
            !reads_the_table(&plan),
            "{what} reads the whole table:\n{plan}"
        );
        assert!(
            index.iter().any(|i| plan.contains(i)),
            "{what} does not use {index:?}:\n{plan}"
        );
    }
}
