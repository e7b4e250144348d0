//! The statements against a real database: the attempt fence, the claim's
//! plan on a table full of finished jobs, and rescue.

mod support;

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use diesel::sql_types::{Array, BigInt, Integer, Nullable, Text, Timestamptz};
use diesel::QueryableByName;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use jobq_diesel::{ClaimRequest, NewJob, Outcome, OutcomeKind, WorkerInfo};
use support::setup;

/// A rescuer id no worker has: these tests rescue as an outsider.
const NO_RESCUER: i64 = -1;

/// A rescuer that has seen the database for ever, so that only the
/// workers' leases decide.
const ALWAYS: Duration = Duration::MAX;

fn info() -> WorkerInfo {
    WorkerInfo {
        hostname: "test".into(),
        pid: 1,
        queues: vec!["default".into()],
        lease: Duration::from_secs(30),
    }
}

/// A fresh claim key: keys are unique per worker, so the tests never
/// reuse one.
fn claim_key() -> i64 {
    static LAST: AtomicI64 = AtomicI64::new(0);
    LAST.fetch_add(1, Ordering::Relaxed) + 1
}

fn job(task: &str) -> NewJob<'_> {
    NewJob {
        task,
        queue: "default",
        payload: "{}",
        priority: 0,
        max_attempts: 5,
        delay_ms: 0,
        run_at: None,
        dedupe_key: None,
        key: None,
        headers: None,
        follow_up: None,
    }
}

/// Claims up to `slots` jobs of `task` from the default queue.
async fn claim_up_to(
    conn: &mut AsyncPgConnection,
    worker_id: i64,
    task: &str,
    slots: i32,
) -> Vec<jobq_diesel::ClaimedJob> {
    let queues = ["default".to_owned()];
    let tasks = [task.to_owned()];
    let request = ClaimRequest {
        worker_id,
        queues: &queues,
        tasks: &tasks,
        slots: &[slots],
        claim_key: claim_key(),
        due: false,
        floors: &[],
        lanes: None,
    };
    jobq_diesel::claim(conn, &request).await.unwrap()
}

async fn claim_one(
    conn: &mut AsyncPgConnection,
    worker_id: i64,
    task: &str,
) -> Vec<jobq_diesel::ClaimedJob> {
    claim_up_to(conn, worker_id, task, 1).await
}

/// Makes `worker`'s last heartbeat an hour old and runs a rescue pass.
async fn stop_heartbeating_and_rescue(
    conn: &mut AsyncPgConnection,
    worker: i64,
) -> Vec<jobq_diesel::RescuedJob> {
    conn.batch_execute(&format!(
        "UPDATE jobq.workers SET heartbeat_at = now() - interval '1 hour' WHERE id = {worker}"
    ))
    .await
    .unwrap();
    jobq_diesel::rescue(conn, NO_RESCUER, Duration::from_secs(30), ALWAYS)
        .await
        .unwrap()
}

/// A job whose first attempt was rescued from a dead worker and which now
/// runs its second attempt under another; returns its id.
async fn rescued_and_claimed_again(conn: &mut AsyncPgConnection) -> i64 {
    let id = jobq_diesel::insert_job(conn, &job("t")).await.unwrap();
    let first = jobq_diesel::register_worker(conn, &info()).await.unwrap();
    assert_eq!(claim_one(conn, first, "t").await[0].attempt, 1);

    // The first worker dies: its row goes, and rescue takes the job back.
    jobq_diesel::deregister_worker(conn, first).await.unwrap();
    let rescued = jobq_diesel::rescue(conn, NO_RESCUER, Duration::from_secs(30), ALWAYS)
        .await
        .unwrap();
    assert_eq!(
        rescued
            .iter()
            .map(|r| (r.id, r.state.as_str()))
            .collect::<Vec<_>>(),
        [(id, "pending")]
    );

    let second = jobq_diesel::register_worker(conn, &info()).await.unwrap();
    assert_eq!(claim_one(conn, second, "t").await[0].attempt, 2);
    id
}

#[tokio::test]
async fn a_late_outcome_of_a_rescued_attempt_does_not_steer_the_live_one() {
    let (_db, mut conn) = setup().await;
    let id = rescued_and_claimed_again(&mut conn).await;
    // Both attempts' outcomes in one batch, the live one first: the late
    // retry must neither land nor lend its kind to the live failure.
    let live = Outcome {
        id,
        attempt: 2,
        kind: OutcomeKind::Failed,
        message: Some("boom".into()),
        output: None,
    };
    let late = Outcome {
        id,
        attempt: 1,
        kind: OutcomeKind::Retry { delay_ms: 0 },
        message: Some("late".into()),
        output: None,
    };
    let rejected = jobq_diesel::write_outcomes(&mut conn, &[live, late], &[])
        .await
        .unwrap();
    assert_eq!(rejected, [jobq_diesel::RejectedOutcome { id, attempt: 1 }]);
    let row = jobq_diesel::find_job(&mut conn, id).await.unwrap().unwrap();
    assert_eq!((row.state.as_str(), row.attempt), ("failed", 2));
    assert!(
        row.errors.contains("boom") && !row.errors.contains("late"),
        "{}",
        row.errors
    );
}

#[tokio::test]
async fn a_late_outcome_of_a_rescued_attempt_changes_nothing() {
    let (_db, mut conn) = setup().await;
    let id = rescued_and_claimed_again(&mut conn).await;

    // The first attempt's outcome arrives late: fenced out.
    let late = Outcome {
        id,
        attempt: 1,
        kind: OutcomeKind::Completed,
        message: None,
        output: None,
    };
    let rejected = jobq_diesel::write_outcomes(&mut conn, std::slice::from_ref(&late), &[])
        .await
        .unwrap();
    assert_eq!(rejected, [jobq_diesel::RejectedOutcome { id, attempt: 1 }]);
    let row = jobq_diesel::find_job(&mut conn, id).await.unwrap().unwrap();
    assert_eq!((row.state.as_str(), row.attempt), ("running", 2));

    // The live attempt's outcome lands.
    let live = Outcome {
        id,
        attempt: 2,
        kind: OutcomeKind::Completed,
        message: None,
        output: None,
    };
    // In one batch with the late one, as a completer may send them.
    let rejected = jobq_diesel::write_outcomes(&mut conn, &[late, live], &[])
        .await
        .unwrap();
    assert_eq!(rejected, [jobq_diesel::RejectedOutcome { id, attempt: 1 }]);
    let row = jobq_diesel::find_job(&mut conn, id).await.unwrap().unwrap();
    assert_eq!((row.state.as_str(), row.attempt), ("completed", 2));
}

#[tokio::test]
async fn a_completion_in_the_handlers_transaction_is_fenced_and_leaves_the_outcome_nothing() {
    use jobq_diesel::{complete_in_transaction, CompletedIn};
    let (_db, mut conn) = setup().await;
    let id = rescued_and_claimed_again(&mut conn).await;
    let worker_of = async |conn: &mut AsyncPgConnection| {
        #[derive(QueryableByName)]
        struct W {
            #[diesel(sql_type = diesel::sql_types::Nullable<BigInt>)]
            worker_id: Option<i64>,
        }
        diesel::sql_query(format!("SELECT worker_id FROM jobq.jobs WHERE id = {id}"))
            .get_result::<W>(conn)
            .await
            .unwrap()
            .worker_id
    };

    // The rescued attempt changes nothing.
    let late = complete_in_transaction(&mut conn, id, 1, None)
        .await
        .unwrap();
    assert_eq!(late, CompletedIn::NotLive);
    // The live one, in a transaction that rolls back: still running.
    let rolled_back = conn
        .transaction::<(), diesel::result::Error, _>(async |c| {
            let done = complete_in_transaction(c, id, 2, Some(r#"{"n":1}"#)).await?;
            assert_eq!(done, CompletedIn::Completed);
            Err(diesel::result::Error::RollbackTransaction)
        })
        .await;
    assert!(rolled_back.is_err());
    let row = jobq_diesel::find_job(&mut conn, id).await.unwrap().unwrap();
    assert_eq!((row.state.as_str(), row.attempt), ("running", 2));
    assert!(worker_of(&mut conn).await.is_some());
    // Committed: the completer's row, with the output.
    conn.transaction::<(), diesel::result::Error, _>(async |c| {
        let done = complete_in_transaction(c, id, 2, Some(r#"{"n":1}"#)).await?;
        assert_eq!(done, CompletedIn::Completed);
        Ok(())
    })
    .await
    .unwrap();
    let completed = jobq_diesel::find_job(&mut conn, id).await.unwrap().unwrap();
    assert_eq!(
        (completed.state.as_str(), completed.attempt),
        ("completed", 2)
    );
    assert!(completed.finished_at.is_some());
    assert_eq!(completed.output.as_deref(), Some(r#"{"n": 1}"#));
    assert_eq!(worker_of(&mut conn).await, None);
    assert!(jobq_diesel::attempt_completed(&mut conn, id, 2)
        .await
        .unwrap());
    assert!(!jobq_diesel::attempt_completed(&mut conn, id, 1)
        .await
        .unwrap());

    // Whatever the worker then sends for that attempt, on every path, is
    // neither written nor taken for a rescued attempt's.
    let outcome = |kind, message: Option<&str>, output: Option<&str>| Outcome {
        id,
        attempt: 2,
        kind,
        message: message.map(str::to_owned),
        output: output.map(str::to_owned),
    };
    let outcomes = [
        outcome(OutcomeKind::Completed, None, None),
        outcome(OutcomeKind::Completed, None, Some(r#"{"n":2}"#)),
        outcome(OutcomeKind::Retry { delay_ms: 0 }, Some("late error"), None),
        outcome(OutcomeKind::Released, Some("shutting down"), None),
    ];
    for o in &outcomes {
        let rejected = jobq_diesel::write_outcomes(&mut conn, std::slice::from_ref(o), &[])
            .await
            .unwrap();
        assert!(rejected.is_empty(), "{o:?}: {rejected:?}");
        let not_written =
            jobq_diesel::write_outcomes_around_locks(&mut conn, std::slice::from_ref(o))
                .await
                .unwrap();
        assert_eq!(not_written, jobq_diesel::NotWritten::default(), "{o:?}");
    }
    let row = jobq_diesel::find_job(&mut conn, id).await.unwrap().unwrap();
    assert_eq!(
        (row.state.as_str(), row.attempt, row.output, row.errors),
        ("completed", 2, completed.output, completed.errors)
    );
    assert_eq!(row.finished_at, completed.finished_at);
    // The rescued attempt's outcome is still turned away as such, and a
    // second completion finds the attempt ended.
    let rejected = jobq_diesel::write_outcomes(
        &mut conn,
        &[Outcome {
            attempt: 1,
            ..outcomes[2].clone()
        }],
        &[],
    )
    .await
    .unwrap();
    assert_eq!(rejected, [jobq_diesel::RejectedOutcome { id, attempt: 1 }]);
    let again = complete_in_transaction(&mut conn, id, 2, None)
        .await
        .unwrap();
    assert_eq!(again, CompletedIn::NotLive);
}

#[tokio::test]
async fn a_completion_in_the_handlers_transaction_of_a_cancelled_job_cancels_it() {
    use jobq_diesel::{complete_in_transaction, CompletedIn};
    let (_db, mut conn) = setup().await;
    let id = jobq_diesel::insert_job(&mut conn, &job("t")).await.unwrap();
    let worker = jobq_diesel::register_worker(&mut conn, &info())
        .await
        .unwrap();
    assert_eq!(claim_one(&mut conn, worker, "t").await[0].id, id);
    conn.batch_execute(&format!(
        "UPDATE jobq.jobs SET cancel_requested = true WHERE id = {id}"
    ))
    .await
    .unwrap();
    let done = complete_in_transaction(&mut conn, id, 1, Some("7"))
        .await
        .unwrap();
    assert_eq!(done, CompletedIn::Cancelled);
    let row = jobq_diesel::find_job(&mut conn, id).await.unwrap().unwrap();
    assert_eq!((row.state.as_str(), row.output), ("cancelled", None));
}

#[derive(QueryableByName)]
struct PlanLine {
    #[diesel(sql_type = Text, column_name = "QUERY PLAN")]
    line: String,
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// 200,000 finished jobs and 100 pending ones of task "t", analyzed:
/// statistics that see no running job, as they nearly always do.
/// 200,000 finished jobs, 100,000 pending jobs of another task (so that the
/// active partition is big too, where a scan of it would cost) and 100
/// pending jobs of task `t`.
async fn big_partitions_and_a_hundred_pending(conn: &mut AsyncPgConnection) {
    conn.batch_execute(
        "INSERT INTO jobq.jobs (task, payload, state, finished_at) \
         SELECT 't', '{}', 'completed', now() FROM generate_series(1, 200000); \
         INSERT INTO jobq.jobs (task, payload) \
         SELECT 'elsewhere', '{}' FROM generate_series(1, 100000); \
         INSERT INTO jobq.jobs (task, payload) SELECT 't', '{}' FROM generate_series(1, 100); \
         ANALYZE jobq.jobs;",
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn the_claim_is_an_index_scan_on_a_table_of_finished_jobs() {
    let (_db, mut conn) = setup().await;
    big_partitions_and_a_hundred_pending(&mut conn).await;
    // The claim statement itself (EXPLAIN without ANALYZE runs nothing).
    let queues = ["default".to_owned()];
    let tasks = ["t".to_owned()];
    let plan: Vec<PlanLine> = diesel::sql_query(format!("EXPLAIN {}", jobq_diesel::CLAIM_SQL))
        .bind::<Array<Text>, _>(&queues[..])
        .bind::<Array<Text>, _>(&tasks[..])
        .bind::<Array<Integer>, _>(&[10][..])
        .bind::<BigInt, _>(1i64)
        .bind::<BigInt, _>(1i64)
        .bind::<Array<Nullable<Integer>>, _>(&[None::<i32>][..])
        .bind::<Array<Nullable<Timestamptz>>, _>(&[None::<chrono::DateTime<chrono::Utc>>][..])
        .bind::<Array<Nullable<BigInt>>, _>(&[None::<i64>][..])
        .load(&mut conn)
        .await
        .unwrap();
    let plan: Vec<String> = plan.into_iter().map(|p| p.line).collect();
    assert!(
        plan.iter()
            .any(|l| l.contains("Index Scan using jobs_claim_idx")),
        "not an index scan on jobs_claim_idx:\n{}",
        plan.join("\n")
    );
    assert!(
        !plan.iter().any(|l| l.contains("Seq Scan")),
        "{}",
        plan.join("\n")
    );
    // The worker's liveness is checked once, before anything is locked.
    assert!(
        plan.iter().any(|l| l.contains("One-Time Filter")),
        "the worker check is not a one-time filter:\n{}",
        plan.join("\n")
    );

    // And the real statement claims only pending jobs.
    let worker = jobq_diesel::register_worker(&mut conn, &info())
        .await
        .unwrap();
    let claimed = claim_up_to(&mut conn, worker, "t", 1000).await;
    assert_eq!(claimed.len(), 100);
    let Count { n } =
        diesel::sql_query("SELECT count(*) AS n FROM jobq.jobs WHERE state = 'running'")
            .get_result(&mut conn)
            .await
            .unwrap();
    assert_eq!(n, 100);
}

/// Adds 200,000 jobs of task "t" due in an hour to the table of
/// [`big_partitions_and_a_hundred_pending`]: half at the pending jobs'
/// priority, half at a higher one (which the claim's order puts first).
/// Half of them are inserted the way raw SQL would, leaving the state to
/// its default for the insert trigger to file. Analyzed.
async fn and_two_hundred_thousand_due_in_an_hour(conn: &mut AsyncPgConnection) {
    conn.batch_execute(
        "INSERT INTO jobq.jobs (task, payload, priority, run_at) \
         SELECT 't', '{}', 0, now() + interval '1 hour' FROM generate_series(1, 100000); \
         INSERT INTO jobq.jobs (task, payload, priority, run_at, state) \
         SELECT 't', '{}', 10, now() + interval '1 hour', 'scheduled' \
         FROM generate_series(1, 100000); \
         ANALYZE jobq.jobs;",
    )
    .await
    .unwrap();
}

/// `EXPLAIN (ANALYZE, BUFFERS)` of `sql` with its binds applied by `bind`,
/// run in a transaction that is rolled back: the plan's lines.
async fn explain_analyze<F>(conn: &mut AsyncPgConnection, run: F) -> Vec<String>
where
    F: for<'c> FnOnce(
        &'c mut AsyncPgConnection,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = diesel::QueryResult<Vec<PlanLine>>> + Send + 'c>,
    >,
{
    conn.batch_execute("BEGIN").await.unwrap();
    let plan = run(conn).await.unwrap();
    conn.batch_execute("ROLLBACK").await.unwrap();
    plan.into_iter().map(|p| p.line).collect()
}

/// Shared buffers (hit and read) the whole statement touched: the first
/// `Buffers:` line of a plan is its top node's, which counts its children.
/// Buffers the `picked` CTE of a claim's `EXPLAIN (ANALYZE, BUFFERS)`
/// touched (`u64::MAX` when the plan has none).
fn picking_buffers(plan: &[String]) -> u64 {
    plan.iter()
        .position(|l| l.contains("CTE picked"))
        .map(|at| buffers(&plan[at..]))
        .unwrap_or(u64::MAX)
}

fn buffers(plan: &[String]) -> u64 {
    let line = plan
        .iter()
        .find(|l| l.trim_start().starts_with("Buffers:"))
        .unwrap_or_else(|| panic!("no Buffers line:\n{}", plan.join("\n")));
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

#[tokio::test]
async fn the_claim_never_visits_jobs_due_later() {
    let (_db, mut conn) = setup().await;
    big_partitions_and_a_hundred_pending(&mut conn).await;
    and_two_hundred_thousand_due_in_an_hour(&mut conn).await;
    let Count { n } =
        diesel::sql_query("SELECT count(*) AS n FROM jobq.jobs WHERE state = 'scheduled'")
            .get_result(&mut conn)
            .await
            .unwrap();
    assert_eq!(
        n, 200_000,
        "the insert trigger filed raw inserts as scheduled"
    );

    // The real claim, asking for more jobs than are due: it must find the
    // 100 due ones without walking the 200,000 due later, the higher
    // priority ones included (walking them touches a buffer per row or
    // more; finding the 100 due ones, about one each).
    let worker = jobq_diesel::register_worker(&mut conn, &info())
        .await
        .unwrap();
    let plan = explain_analyze(&mut conn, |c| {
        Box::pin(async move {
            let queues = ["default".to_owned()];
            let tasks = ["t".to_owned()];
            diesel::sql_query(format!(
                "EXPLAIN (ANALYZE, BUFFERS) {}",
                jobq_diesel::CLAIM_SQL
            ))
            .bind::<Array<Text>, _>(&queues[..])
            .bind::<Array<Text>, _>(&tasks[..])
            .bind::<Array<Integer>, _>(&[1000][..])
            .bind::<BigInt, _>(worker)
            .bind::<BigInt, _>(claim_key())
            .bind::<Array<Nullable<Integer>>, _>(&[None::<i32>][..])
            .bind::<Array<Nullable<Timestamptz>>, _>(&[None::<chrono::DateTime<chrono::Utc>>][..])
            .bind::<Array<Nullable<BigInt>>, _>(&[None::<i64>][..])
            .load(c)
            .await
        })
    })
    .await;
    let text = plan.join("\n");
    assert!(
        plan.iter()
            .any(|l| l.contains("Index Scan using jobs_claim_idx")),
        "not an index scan on jobs_claim_idx:\n{text}"
    );
    assert!(!text.contains("Seq Scan"), "{text}");
    assert!(
        !text.contains("Rows Removed by Filter"),
        "the claim filtered rows out instead of never meeting them:\n{text}"
    );
    let walk = plan
        .iter()
        // Without a floor the walk is the second half's scan (the first
        // finds no floor and touches nothing).
        .rposition(|l| l.contains("Index Scan using jobs_claim_idx"))
        .map(|at| buffers(&plan[at..]))
        .unwrap_or(u64::MAX);
    // 499 buffers when the claim was one scan, 502 as the second half of
    // the walk from a floor: the same pages, the bound close above.
    assert!(
        walk < 520,
        "the claim's index scan touched {walk} buffers:\n{text}"
    );
    assert_eq!(claim_up_to(&mut conn, worker, "t", 1000).await.len(), 100);

    // Promotion finds there is nothing due, and when the next job is, by
    // its index and without walking the rows either.
    let plan = explain_analyze(&mut conn, |c| {
        Box::pin(async move {
            let queues = ["default".to_owned()];
            diesel::sql_query(format!(
                "EXPLAIN (ANALYZE, BUFFERS) {}",
                jobq_diesel::PROMOTE_SQL
            ))
            .bind::<Array<Text>, _>(&queues[..])
            .bind::<BigInt, _>(5_000i64)
            .load(c)
            .await
        })
    })
    .await;
    let text = plan.join("\n");
    let scans = jobs_scans(plan.iter().cloned());
    assert!(
        scans.iter().any(|l| l.contains("jobs_scheduled_idx"))
            && scans
                .iter()
                .all(|l| l.contains("jobs_scheduled_idx") || l.contains("jobs_pkey")),
        "promotion reads jobq.jobs otherwise than by jobs_scheduled_idx (and the \
         primary key for the rows it promotes):\n{text}"
    );
    assert!(buffers(&plan) < 100, "{} buffers:\n{text}", buffers(&plan));
    let promotion = jobq_diesel::promote(&mut conn, &["default".to_owned()], 5_000)
        .await
        .unwrap();
    assert_eq!((promotion.promoted, promotion.more), (0, false));
    let ahead = Duration::from_micros(promotion.next_due_in_us.unwrap().try_into().unwrap());
    assert!(
        ahead > Duration::from_secs(3500) && ahead <= Duration::from_secs(3600),
        "{ahead:?}"
    );
}

#[tokio::test]
async fn promotion_makes_due_jobs_pending_in_batches_and_only_of_its_queues() {
    let (_db, mut conn) = setup().await;
    conn.batch_execute(
        "INSERT INTO jobq.jobs (task, queue, payload, run_at) \
         SELECT 't', q, '{}', now() + n * interval '1 hour' \
         FROM generate_series(1, 5) AS n, unnest(ARRAY['a', 'b']) AS q; \
         UPDATE jobq.jobs SET run_at = run_at - interval '1 day'; \
         INSERT INTO jobq.jobs (task, queue, payload, run_at) \
         VALUES ('t', 'a', '{}', now() + interval '10 seconds');",
    )
    .await
    .unwrap();
    let a = ["a".to_owned()];
    let first = jobq_diesel::promote(&mut conn, &a, 3).await.unwrap();
    assert_eq!((first.promoted, first.more), (3, true));
    // The earliest due go first.
    let Count { n } = diesel::sql_query(
        "SELECT count(*) AS n FROM jobq.jobs p WHERE p.queue = 'a' AND p.state = 'pending' \
         AND p.run_at < (SELECT min(run_at) FROM jobq.jobs s \
                         WHERE s.queue = 'a' AND s.state = 'scheduled')",
    )
    .get_result(&mut conn)
    .await
    .unwrap();
    assert_eq!(n, 3);
    let second = jobq_diesel::promote(&mut conn, &a, 3).await.unwrap();
    assert_eq!((second.promoted, second.more), (2, false));
    let next = Duration::from_micros(second.next_due_in_us.unwrap().try_into().unwrap());
    assert!(
        next <= Duration::from_secs(10) && next > Duration::from_secs(5),
        "{next:?}"
    );
    let Count { n } = diesel::sql_query(
        "SELECT count(*) AS n FROM jobq.jobs \
         WHERE (queue = 'a' AND state = 'pending') OR (queue = 'b' AND state = 'scheduled')",
    )
    .get_result(&mut conn)
    .await
    .unwrap();
    assert_eq!(n, 10, "queue a promoted, queue b left alone");
}

#[tokio::test]
async fn rescue_fails_jobs_out_of_attempts_and_leaves_live_workers_alone() {
    let (_db, mut conn) = setup().await;
    let mut last_try = job("t");
    last_try.max_attempts = 1;
    let doomed = jobq_diesel::insert_job(&mut conn, &last_try).await.unwrap();
    let kept = jobq_diesel::insert_job(&mut conn, &job("u")).await.unwrap();
    let dead = jobq_diesel::register_worker(&mut conn, &info())
        .await
        .unwrap();
    let alive = jobq_diesel::register_worker(&mut conn, &info())
        .await
        .unwrap();
    claim_one(&mut conn, dead, "t").await;
    claim_one(&mut conn, alive, "u").await;
    let rescued = stop_heartbeating_and_rescue(&mut conn, dead).await;
    assert_eq!(rescued.len(), 1);
    assert_eq!(
        (rescued[0].id, rescued[0].state.as_str()),
        (doomed, "failed")
    );
    let row = jobq_diesel::find_job(&mut conn, kept)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.state, "running");
    let errors: String = jobq_diesel::find_job(&mut conn, doomed)
        .await
        .unwrap()
        .unwrap()
        .errors;
    assert!(errors.contains("stopped heartbeating"), "{errors}");
}

#[tokio::test]
async fn successes_of_jobs_with_huge_ids_are_fenced_too() {
    // Ids this large take the string-keyed statement (see packed_keys).
    let (_db, mut conn) = setup().await;
    conn.batch_execute(
        "INSERT INTO jobq.jobs (id, task, payload) VALUES (8796093022213, 't', '{}')",
    )
    .await
    .unwrap();
    let worker = jobq_diesel::register_worker(&mut conn, &info())
        .await
        .unwrap();
    let claimed = claim_one(&mut conn, worker, "t").await;
    assert_eq!((claimed[0].id, claimed[0].attempt), (8_796_093_022_213, 1));
    let outcome = |attempt| Outcome {
        id: 8_796_093_022_213,
        attempt,
        kind: OutcomeKind::Completed,
        message: None,
        output: None,
    };
    let rejected = jobq_diesel::write_outcomes(&mut conn, &[outcome(2), outcome(1)], &[])
        .await
        .unwrap();
    assert_eq!(
        rejected,
        [jobq_diesel::RejectedOutcome {
            id: 8_796_093_022_213,
            attempt: 2
        }]
    );
    let row = jobq_diesel::find_job(&mut conn, 8_796_093_022_213)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.state, "completed");
}

#[tokio::test]
async fn the_claim_names_the_task_and_queue_only_when_asked_for_several() {
    let (_db, mut conn) = setup().await;
    let worker = jobq_diesel::register_worker(&mut conn, &info())
        .await
        .unwrap();
    for (task, queue) in [("a", "q1"), ("b", "q2"), ("a", "q1")] {
        jobq_diesel::insert_job(&mut conn, &NewJob { queue, ..job(task) })
            .await
            .unwrap();
    }
    let claim = |queues: &'static [&'static str], tasks: &'static [&'static str], slots| {
        let queues: Vec<String> = queues.iter().map(|q| q.to_string()).collect();
        let tasks: Vec<String> = tasks.iter().map(|t| t.to_string()).collect();
        (queues, tasks, vec![slots; 2])
    };

    // One task, one queue: the worker knows both, no names come back.
    let (queues, tasks, slots) = claim(&["q1"], &["a"], 1);
    let one = jobq_diesel::claim(
        &mut conn,
        &ClaimRequest {
            worker_id: worker,
            queues: &queues,
            tasks: &tasks,
            slots: &slots[..1],
            claim_key: claim_key(),
            due: false,
            floors: &[],
            lanes: None,
        },
    )
    .await
    .unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(
        (one[0].task.as_deref(), one[0].queue.as_deref()),
        (None, None)
    );

    // Several: each job says which.
    let (queues, tasks, slots) = claim(&["q1", "q2"], &["a", "b"], 5);
    let mut both = jobq_diesel::claim(
        &mut conn,
        &ClaimRequest {
            worker_id: worker,
            queues: &queues,
            tasks: &tasks,
            slots: &slots,
            claim_key: claim_key(),
            due: false,
            floors: &[],
            lanes: None,
        },
    )
    .await
    .unwrap();
    both.sort_by_key(|j| j.id);
    let named: Vec<(Option<&str>, Option<&str>)> = both
        .iter()
        .map(|j| (j.task.as_deref(), j.queue.as_deref()))
        .collect();
    assert_eq!(named, [(Some("b"), Some("q2")), (Some("a"), Some("q1"))]);
}

async fn claim_rows(conn: &mut AsyncPgConnection) -> i64 {
    let Count { n } = diesel::sql_query("SELECT count(*) AS n FROM jobq.claims")
        .get_result(conn)
        .await
        .unwrap();
    n
}

fn done(job: &jobq_diesel::ClaimedJob) -> Outcome {
    Outcome {
        id: job.id,
        attempt: job.attempt,
        kind: OutcomeKind::Completed,
        message: None,
        output: None,
    }
}

#[tokio::test]
async fn a_claim_row_lasts_exactly_while_its_jobs_may_run_under_its_worker() {
    let (_db, mut conn) = setup().await;
    for _ in 0..3 {
        jobq_diesel::insert_job(&mut conn, &job("t")).await.unwrap();
    }
    let worker = jobq_diesel::register_worker(&mut conn, &info())
        .await
        .unwrap();
    let claimed = claim_up_to(&mut conn, worker, "t", 3).await;
    assert_eq!(claimed.len(), 3);
    let claim = claimed[0].claim;
    assert!(
        claimed.iter().all(|j| j.claim == claim),
        "one row per claim"
    );
    assert_eq!(claim_rows(&mut conn).await, 1);

    // The heartbeat finds the worker's jobs through the claim.
    let beat = jobq_diesel::heartbeat(&mut conn, worker, &info())
        .await
        .unwrap();
    assert_eq!(beat.held.len(), 3);
    assert!(beat.dropped_claims.is_empty());

    // Two outcomes: the claim stays for the third job.
    let rejected =
        jobq_diesel::write_outcomes(&mut conn, &[done(&claimed[0]), done(&claimed[1])], &[])
            .await
            .unwrap();
    assert!(rejected.is_empty());
    let beat = jobq_diesel::heartbeat(&mut conn, worker, &info())
        .await
        .unwrap();
    assert_eq!(beat.held, [(claimed[2].id, claimed[2].attempt)]);
    assert_eq!(claim_rows(&mut conn).await, 1);

    // The last one settles the claim: its row goes in the same statement.
    jobq_diesel::write_outcomes(&mut conn, &[done(&claimed[2])], &[claim])
        .await
        .unwrap();
    assert_eq!(claim_rows(&mut conn).await, 0);
}

#[tokio::test]
async fn claim_rows_nobody_settles_go_with_the_heartbeat_or_after_a_rescue() {
    let (_db, mut conn) = setup().await;
    for task in ["a", "b"] {
        jobq_diesel::insert_job(&mut conn, &job(task))
            .await
            .unwrap();
    }
    // A job that ended without its claim being settled (as when a worker
    // hands back a job it never heard of): the worker's heartbeat removes
    // the claim once nothing of it runs under the worker.
    let worker = jobq_diesel::register_worker(&mut conn, &info())
        .await
        .unwrap();
    let first = claim_one(&mut conn, worker, "a").await;
    jobq_diesel::write_outcomes(&mut conn, &[done(&first[0])], &[])
        .await
        .unwrap();
    let beat = jobq_diesel::heartbeat(&mut conn, worker, &info())
        .await
        .unwrap();
    assert!(beat.held.is_empty());
    assert_eq!(beat.dropped_claims, [first[0].claim]);
    assert_eq!(claim_rows(&mut conn).await, 0);

    // A dead worker's claim: the rescue takes its job back, and the pass
    // after that, with nothing of it running any more, removes the row.
    let dead = jobq_diesel::register_worker(&mut conn, &info())
        .await
        .unwrap();
    let lost = claim_one(&mut conn, dead, "b").await;
    let rescued = stop_heartbeating_and_rescue(&mut conn, dead).await;
    assert_eq!(rescued.len(), 1);
    assert_eq!(
        (rescued[0].id, rescued[0].state.as_str()),
        (lost[0].id, "pending")
    );
    assert_eq!(claim_rows(&mut conn).await, 1);
    let again = jobq_diesel::rescue(&mut conn, NO_RESCUER, Duration::from_secs(30), ALWAYS)
        .await
        .unwrap();
    assert!(again.is_empty());
    assert_eq!(claim_rows(&mut conn).await, 0);
}

/// The lines of `EXPLAIN` of a statement that read the jobs table.
fn jobs_scans(plan: impl IntoIterator<Item = String>) -> Vec<String> {
    plan.into_iter()
        .filter(|l| {
            l.contains("Scan")
                && [
                    " on jobs ",
                    " on jobs_active ",
                    " on jobs_finished",
                    " on jobs_completed_",
                ]
                .iter()
                .any(|t| l.contains(t))
        })
        .collect()
}

#[tokio::test]
async fn heartbeat_and_rescue_find_running_jobs_by_primary_key_in_a_big_table() {
    let (_db, mut conn) = setup().await;
    // A join planned on statistics that see no running job would scan the
    // whole table.
    big_partitions_and_a_hundred_pending(&mut conn).await;
    let worker = jobq_diesel::register_worker(&mut conn, &info())
        .await
        .unwrap();
    assert_eq!(claim_up_to(&mut conn, worker, "t", 100).await.len(), 100);

    let queues = ["default".to_owned()];
    let heartbeat: Vec<PlanLine> =
        diesel::sql_query(format!("EXPLAIN {}", jobq_diesel::HEARTBEAT_SQL))
            .bind::<BigInt, _>(worker)
            .bind::<Text, _>("test")
            .bind::<Integer, _>(1)
            .bind::<Array<Text>, _>(&queues[..])
            .bind::<BigInt, _>(30_000i64)
            .load(&mut conn)
            .await
            .unwrap();
    let rescue: Vec<PlanLine> = diesel::sql_query(format!("EXPLAIN {}", jobq_diesel::RESCUE_SQL))
        .bind::<BigInt, _>(1i64)
        .bind::<BigInt, _>(30_000i64)
        .bind::<BigInt, _>(NO_RESCUER)
        .bind::<BigInt, _>(i64::MAX)
        .load(&mut conn)
        .await
        .unwrap();
    for (what, scans) in [
        (
            "heartbeat",
            jobs_scans(heartbeat.into_iter().map(|p| p.line)),
        ),
        ("rescue", jobs_scans(rescue.into_iter().map(|p| p.line))),
    ] {
        assert!(!scans.is_empty(), "{what} does not read jobq.jobs?");
        assert!(
            scans.iter().all(|l| l.contains("using jobs_pkey")),
            "{what} reads jobq.jobs otherwise than by primary key:\n{}",
            scans.join("\n")
        );
    }
}

#[derive(QueryableByName)]
struct Prepared {
    #[diesel(sql_type = Text)]
    statement: String,
}

/// The statements this connection keeps prepared (named ones: what
/// diesel's statement cache holds).
async fn prepared_statements(conn: &mut AsyncPgConnection) -> Vec<String> {
    diesel::sql_query("SELECT statement FROM pg_prepared_statements")
        .load::<Prepared>(conn)
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.statement)
        .collect()
}

#[tokio::test]
async fn claims_and_inserts_stay_prepared_and_outcomes_do_not() {
    let (_db, mut conn) = setup().await;
    let worker = jobq_diesel::register_worker(&mut conn, &info())
        .await
        .unwrap();
    for _ in 0..3 {
        jobq_diesel::insert_job(&mut conn, &job("t")).await.unwrap();
    }
    let mut claimed = Vec::new();
    for _ in 0..3 {
        claimed.extend(claim_one(&mut conn, worker, "t").await);
    }
    assert_eq!(claimed.len(), 3);
    let outcomes: Vec<Outcome> = claimed.iter().map(done).collect();
    let claims: Vec<i64> = claimed.iter().map(|c| c.claim).collect();
    jobq_diesel::write_outcomes(&mut conn, &outcomes, &claims)
        .await
        .unwrap();
    let prepared = prepared_statements(&mut conn).await;
    let count = |prefix: &str| prepared.iter().filter(|s| s.starts_with(prefix)).count();
    // Parsed once each, however often they ran.
    assert_eq!(count("WITH picked AS"), 1, "{prepared:#?}");
    assert_eq!(count("INSERT INTO jobq.jobs"), 1, "{prepared:#?}");
    // A cached generic plan would turn the attempt fence's hashed `= ANY`
    // into a linear search (outcome.rs): outcome statements stay unnamed.
    assert_eq!(count("WITH settled AS"), 0, "{prepared:#?}");
}

/// A job's attempt counter and hand-backs as stored (`find_job` shows the
/// attempts used, their difference).
async fn attempt_and_handbacks(conn: &mut AsyncPgConnection, id: i64) -> (i32, i32) {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = Integer)]
        attempt: i32,
        #[diesel(sql_type = Integer)]
        handbacks: i32,
    }
    let row: Row = diesel::sql_query("SELECT attempt, handbacks FROM jobq.jobs WHERE id = $1")
        .bind::<BigInt, _>(id)
        .get_result(conn)
        .await
        .unwrap();
    (row.attempt, row.handbacks)
}

async fn claim_with_key(
    conn: &mut AsyncPgConnection,
    worker_id: i64,
    claim_key: i64,
) -> diesel::QueryResult<Vec<jobq_diesel::ClaimedJob>> {
    let queues = ["default".to_owned()];
    let tasks = ["t".to_owned()];
    jobq_diesel::claim(
        conn,
        &ClaimRequest {
            worker_id,
            queues: &queues,
            tasks: &tasks,
            slots: &[10],
            claim_key,
            due: false,
            floors: &[],
            lanes: None,
        },
    )
    .await
}

async fn state_of(conn: &mut AsyncPgConnection, id: i64) -> (String, i32) {
    let row = jobq_diesel::find_job(conn, id).await.unwrap().unwrap();
    (row.state, row.attempt)
}

#[tokio::test]
async fn a_claim_whose_reply_was_lost_is_handed_back_by_its_key_without_using_an_attempt() {
    let (_db, mut conn) = setup().await;
    let a = jobq_diesel::insert_job(&mut conn, &job("t")).await.unwrap();
    let b = jobq_diesel::insert_job(&mut conn, &job("t")).await.unwrap();
    let worker = jobq_diesel::register_worker(&mut conn, &info())
        .await
        .unwrap();
    // The claim commits; say its reply never reached the worker.
    let lost = claim_with_key(&mut conn, worker, 7).await.unwrap();
    assert_eq!(lost.len(), 2);

    let mut released = jobq_diesel::release_claim(&mut conn, worker, 7)
        .await
        .unwrap();
    released.sort_unstable();
    assert_eq!(released, [a, b]);
    for id in [a, b] {
        // Pending, no attempt used (the counter still moved, for the fence).
        assert_eq!(state_of(&mut conn, id).await, ("pending".to_owned(), 0));
        assert_eq!(attempt_and_handbacks(&mut conn, id).await, (1, 1));
        let errors = jobq_diesel::find_job(&mut conn, id)
            .await
            .unwrap()
            .unwrap()
            .errors;
        assert!(errors.contains("reply was lost"), "{errors}");
    }
    // The claim's row holds nothing any more (it stays as the key's
    // tombstone), and releasing again is a no-op.
    let Count { n } =
        diesel::sql_query("SELECT count(*) AS n FROM jobq.claims WHERE NOT isempty(jobs)")
            .get_result(&mut conn)
            .await
            .unwrap();
    assert_eq!(n, 0);
    assert!(jobq_diesel::release_claim(&mut conn, worker, 7)
        .await
        .unwrap()
        .is_empty());

    // The next claim is attempt 1 as users count, 2 for the fence.
    let again = claim_with_key(&mut conn, worker, 8).await.unwrap();
    assert_eq!(again.len(), 2);
    assert!(
        again.iter().all(|j| (j.attempt, j.number()) == (2, 1)),
        "{again:?}"
    );

    // A key that never committed releases nothing and touches no job...
    assert!(jobq_diesel::release_claim(&mut conn, worker, 9)
        .await
        .unwrap()
        .is_empty());
    for id in [a, b] {
        assert_eq!(state_of(&mut conn, id).await, ("running".to_owned(), 1));
    }
    // ... and a claim under it that arrives after its release claims
    // nothing: exact even when the claim reaches the server late.
    jobq_diesel::insert_job(&mut conn, &job("t")).await.unwrap();
    assert!(claim_with_key(&mut conn, worker, 9).await.is_err());
    let Count { n } =
        diesel::sql_query("SELECT count(*) AS n FROM jobq.jobs WHERE state = 'pending'")
            .get_result(&mut conn)
            .await
            .unwrap();
    assert_eq!(n, 1);
}

#[tokio::test]
async fn releasing_a_lost_claim_leaves_its_jobs_alone_once_they_run_another_attempt() {
    let (_db, mut conn) = setup().await;
    let id = jobq_diesel::insert_job(&mut conn, &job("t")).await.unwrap();
    let worker = jobq_diesel::register_worker(&mut conn, &info())
        .await
        .unwrap();
    assert_eq!(claim_with_key(&mut conn, worker, 1).await.unwrap().len(), 1);
    // Presumed dead before it could release claim 1: the job is rescued.
    // Its heartbeat registers it again, and it claims the job anew.
    let rescued = stop_heartbeating_and_rescue(&mut conn, worker).await;
    assert_eq!(rescued.len(), 1);
    let beat = jobq_diesel::heartbeat(&mut conn, worker, &info())
        .await
        .unwrap();
    assert!(!beat.was_alive);
    let live = claim_with_key(&mut conn, worker, 2).await.unwrap();
    assert_eq!((live[0].id, live[0].attempt), (id, 2));

    assert!(jobq_diesel::release_claim(&mut conn, worker, 1)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(attempt_and_handbacks(&mut conn, id).await, (2, 0));
    assert_eq!(state_of(&mut conn, id).await, ("running".to_owned(), 2));
}

#[tokio::test]
async fn hand_backs_do_not_use_up_attempts_and_rescues_do() {
    let (_db, mut conn) = setup().await;
    let mut two_tries = job("t");
    two_tries.max_attempts = 2;
    let id = jobq_diesel::insert_job(&mut conn, &two_tries)
        .await
        .unwrap();
    let worker = jobq_diesel::register_worker(&mut conn, &info())
        .await
        .unwrap();
    // Handed back at shutdown, twice: no attempt used.
    for round in 1..=2 {
        let claimed = claim_one(&mut conn, worker, "t").await;
        assert_eq!((claimed[0].attempt, claimed[0].number()), (round, 1));
        let released = Outcome {
            id,
            attempt: claimed[0].attempt,
            kind: OutcomeKind::Released,
            message: Some("worker shutting down".into()),
            output: None,
        };
        let rejected = jobq_diesel::write_outcomes(&mut conn, &[released], &[])
            .await
            .unwrap();
        assert!(rejected.is_empty());
        assert_eq!(state_of(&mut conn, id).await, ("pending".to_owned(), 0));
    }
    // Its worker dies in attempt 1: the rescue uses it up, one is left.
    let claimed = claim_one(&mut conn, worker, "t").await;
    assert_eq!((claimed[0].attempt, claimed[0].number()), (3, 1));
    let rescued = stop_heartbeating_and_rescue(&mut conn, worker).await;
    assert_eq!(
        rescued
            .iter()
            .map(|r| (r.id, r.attempt, r.state.as_str()))
            .collect::<Vec<_>>(),
        [(id, 1, "pending")]
    );
    // Attempt 2 is its last: a worker dying in it fails the job.
    let worker = jobq_diesel::register_worker(&mut conn, &info())
        .await
        .unwrap();
    let claimed = claim_one(&mut conn, worker, "t").await;
    assert_eq!((claimed[0].attempt, claimed[0].number()), (4, 2));
    let rescued = stop_heartbeating_and_rescue(&mut conn, worker).await;
    assert_eq!(
        rescued
            .iter()
            .map(|r| (r.id, r.attempt, r.state.as_str()))
            .collect::<Vec<_>>(),
        [(id, 2, "failed")]
    );
    let row = jobq_diesel::find_job(&mut conn, id).await.unwrap().unwrap();
    assert_eq!((row.state.as_str(), row.attempt), ("failed", 2));
    // The history numbers attempts as users count them.
    let errors: serde_json::Value = serde_json::from_str(&row.errors).unwrap();
    let numbers: Vec<i64> = errors
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["attempt"].as_i64().unwrap())
        .collect();
    assert_eq!(numbers, [1, 1, 1, 2]);
}

#[tokio::test]
async fn rescue_judges_each_worker_by_its_own_lease() {
    let (_db, mut conn) = setup().await;
    let short_job = jobq_diesel::insert_job(&mut conn, &job("s")).await.unwrap();
    jobq_diesel::insert_job(&mut conn, &job("l")).await.unwrap();
    jobq_diesel::insert_job(&mut conn, &job("o")).await.unwrap();
    let with_lease = |secs| WorkerInfo {
        lease: Duration::from_secs(secs),
        ..info()
    };
    let short = jobq_diesel::register_worker(&mut conn, &with_lease(2))
        .await
        .unwrap();
    let long = jobq_diesel::register_worker(&mut conn, &with_lease(3600))
        .await
        .unwrap();
    let old = jobq_diesel::register_worker(&mut conn, &with_lease(2))
        .await
        .unwrap();
    claim_one(&mut conn, short, "s").await;
    claim_one(&mut conn, long, "l").await;
    claim_one(&mut conn, old, "o").await;
    // Like a row of an older jobq, without a lease: judged by the
    // rescuer's.
    conn.batch_execute(&format!(
        "UPDATE jobq.workers SET lease_ms = NULL WHERE id = {old}"
    ))
    .await
    .unwrap();
    // All three stopped heartbeating ten seconds ago; the rescuer's own
    // lease is 30 s.
    conn.batch_execute("UPDATE jobq.workers SET heartbeat_at = now() - interval '10 s'")
        .await
        .unwrap();
    let rescued = jobq_diesel::rescue(&mut conn, NO_RESCUER, Duration::from_secs(30), ALWAYS)
        .await
        .unwrap();
    assert_eq!(
        rescued.iter().map(|r| r.id).collect::<Vec<_>>(),
        [short_job]
    );
    let errors = jobq_diesel::find_job(&mut conn, short_job)
        .await
        .unwrap()
        .unwrap()
        .errors;
    assert!(errors.contains("its lease of 2000 ms"), "{errors}");
    let Count { n } = diesel::sql_query("SELECT count(*) AS n FROM jobq.workers")
        .get_result(&mut conn)
        .await
        .unwrap();
    assert_eq!(n, 2, "the long-lease worker and the old one stay");
    // With a shorter lease of the rescuer's, the old row goes too.
    let rescued = jobq_diesel::rescue(&mut conn, NO_RESCUER, Duration::from_secs(5), ALWAYS)
        .await
        .unwrap();
    assert_eq!(rescued.len(), 1);
}

#[tokio::test]
async fn a_worker_claims_only_while_its_row_is_alive() {
    let (_db, mut conn) = setup().await;
    let id = jobq_diesel::insert_job(&mut conn, &job("t")).await.unwrap();
    let worker = jobq_diesel::register_worker(&mut conn, &info())
        .await
        .unwrap();
    // Heartbeat older than its lease (30 s): presumed dead, not yet rescued.
    conn.batch_execute(&format!(
        "UPDATE jobq.workers SET heartbeat_at = now() - interval '31 s' WHERE id = {worker}"
    ))
    .await
    .unwrap();
    assert!(claim_one(&mut conn, worker, "t").await.is_empty());
    // Row gone (a rescue removed it).
    jobq_diesel::deregister_worker(&mut conn, worker)
        .await
        .unwrap();
    assert!(claim_one(&mut conn, worker, "t").await.is_empty());
    assert_eq!(state_of(&mut conn, id).await, ("pending".to_owned(), 0));
    assert_eq!(claim_rows(&mut conn).await, 0);
    // Its heartbeat registers it again; then it claims.
    let beat = jobq_diesel::heartbeat(&mut conn, worker, &info())
        .await
        .unwrap();
    assert!(!beat.was_alive);
    assert_eq!(claim_one(&mut conn, worker, "t").await.len(), 1);
}

#[tokio::test]
async fn a_worker_never_rescues_its_own_jobs_however_late_its_heartbeat() {
    let (_db, mut conn) = setup().await;
    let id = jobq_diesel::insert_job(&mut conn, &job("t")).await.unwrap();
    let me = jobq_diesel::register_worker(&mut conn, &info())
        .await
        .unwrap();
    assert_eq!(claim_one(&mut conn, me, "t").await[0].id, id);
    // The database was away for longer than the lease: the heartbeat is
    // old, but the worker running the rescue is alive.
    conn.batch_execute(&format!(
        "UPDATE jobq.workers SET heartbeat_at = now() - interval '1 hour' WHERE id = {me}"
    ))
    .await
    .unwrap();
    let rescued = jobq_diesel::rescue(&mut conn, me, Duration::from_secs(30), ALWAYS)
        .await
        .unwrap();
    assert!(rescued.is_empty(), "{rescued:?}");
    // Anyone else does rescue it.
    let rescued = jobq_diesel::rescue(&mut conn, NO_RESCUER, Duration::from_secs(30), ALWAYS)
        .await
        .unwrap();
    assert_eq!(rescued.iter().map(|r| r.id).collect::<Vec<_>>(), [id]);
}

#[tokio::test]
async fn after_an_outage_a_rescuer_waits_out_the_others_lease_before_judging_them() {
    let (_db, mut conn) = setup().await;
    let id = jobq_diesel::insert_job(&mut conn, &job("t")).await.unwrap();
    let other = jobq_diesel::register_worker(&mut conn, &info())
        .await
        .unwrap();
    assert_eq!(claim_one(&mut conn, other, "t").await[0].id, id);
    conn.batch_execute(&format!(
        "UPDATE jobq.workers SET heartbeat_at = now() - interval '1 hour' WHERE id = {other}"
    ))
    .await
    .unwrap();
    // The rescuer itself is back for less than the other's lease (30 s in
    // `info()`): the other may simply not have heartbeated again yet.
    let lease = Duration::from_secs(30);
    for seen_for in [Duration::ZERO, Duration::from_secs(29)] {
        let rescued = jobq_diesel::rescue(&mut conn, NO_RESCUER, lease, seen_for)
            .await
            .unwrap();
        assert!(rescued.is_empty(), "seen for {seen_for:?}: {rescued:?}");
    }
    let rescued = jobq_diesel::rescue(&mut conn, NO_RESCUER, lease, lease)
        .await
        .unwrap();
    assert_eq!(rescued.iter().map(|r| r.id).collect::<Vec<_>>(), [id]);
}

/// How often this connection planned its prepared claim: (generic,
/// custom) plans.
async fn claim_plans(conn: &mut AsyncPgConnection) -> (i64, i64) {
    #[derive(QueryableByName)]
    struct Plans {
        #[diesel(sql_type = BigInt)]
        generic_plans: i64,
        #[diesel(sql_type = BigInt)]
        custom_plans: i64,
    }
    let plans: Plans = diesel::sql_query(
        "SELECT generic_plans, custom_plans FROM pg_prepared_statements \
         WHERE statement LIKE 'WITH picked AS%'",
    )
    .get_result(conn)
    .await
    .unwrap();
    (plans.generic_plans, plans.custom_plans)
}

#[tokio::test]
async fn a_claim_connection_plans_the_claim_once_beside_many_scheduled_rows() {
    let (db, mut conn) = setup().await;
    big_partitions_and_a_hundred_pending(&mut conn).await;
    and_two_hundred_thousand_due_in_an_hour(&mut conn).await;
    let worker = jobq_diesel::register_worker(&mut conn, &info())
        .await
        .unwrap();
    const CLAIMS: i64 = 12;
    // The control: left to itself, PostgreSQL plans the claim anew on
    // every call beside these rows (its cost estimate for a generic plan
    // assumes ten tasks per claim), 0.3 ms each on the worker's hot path.
    for _ in 0..CLAIMS {
        assert_eq!(claim_one(&mut conn, worker, "t").await.len(), 1);
    }
    let (_, custom) = claim_plans(&mut conn).await;
    assert!(custom > CLAIMS / 2, "custom plans: {custom}");
    // The fetcher's connections plan it once.
    let options = jobq_diesel::ConnectOptions::parse(db.url()).unwrap();
    let mut claims = jobq_diesel::Connector::new(options)
        .with_generic_plans()
        .connect()
        .await
        .unwrap();
    for _ in 0..CLAIMS {
        assert_eq!(claim_one(&mut claims, worker, "t").await.len(), 1);
    }
    assert_eq!(claim_plans(&mut claims).await, (CLAIMS, 0));
}

/// The plan of the claim this connection prepared, for a claim of one job
/// of task `t` by `worker`: the generic plan it keeps using.
async fn prepared_claim_plan(conn: &mut AsyncPgConnection, worker: i64) -> String {
    #[derive(QueryableByName)]
    struct Name {
        #[diesel(sql_type = Text)]
        name: String,
    }
    #[derive(QueryableByName)]
    struct Line {
        #[diesel(sql_type = Text)]
        #[diesel(column_name = "QUERY PLAN")]
        line: String,
    }
    let prepared: Name = diesel::sql_query(
        "SELECT name FROM pg_prepared_statements WHERE statement LIKE 'WITH picked AS%'",
    )
    .get_result(conn)
    .await
    .unwrap();
    let lines: Vec<Line> = diesel::sql_query(format!(
        "EXPLAIN EXECUTE {}('{{default}}', '{{t}}', '{{1}}', {worker}, 0, '{{NULL}}', '{{NULL}}', '{{NULL}}')",
        prepared.name
    ))
    .load(conn)
    .await
    .unwrap();
    lines
        .into_iter()
        .map(|l| l.line)
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn a_claim_planned_beside_an_empty_table_does_not_scan_it_once_jobs_arrive_nor_jit_compile() {
    let (db, mut conn) = setup().await;
    // No ANALYZE may rescue the plan during the test.
    conn.batch_execute("ALTER TABLE jobq.jobs_active SET (autovacuum_enabled = false)")
        .await
        .unwrap();
    let worker = jobq_diesel::register_worker(&mut conn, &info())
        .await
        .unwrap();
    let options = jobq_diesel::ConnectOptions::parse(db.url()).unwrap();
    let mut claims = jobq_diesel::Connector::new(options)
        .with_generic_plans()
        .connect()
        .await
        .unwrap();
    // The control: the same generic plan without the claim connection's
    // settings, planned beside the empty table, scans it. The control is
    // read while the table is still empty: a plan cached then may be
    // planned again at any time (a cache reset by other sessions' catalog
    // changes), and a plan made once jobs have arrived would not scan.
    let mut plain = AsyncPgConnection::establish(db.url()).await.unwrap();
    plain
        .batch_execute("SET plan_cache_mode = force_generic_plan")
        .await
        .unwrap();
    assert!(claim_one(&mut claims, worker, "t").await.is_empty());
    assert!(claim_one(&mut plain, worker, "t").await.is_empty());
    let control = prepared_claim_plan(&mut plain, worker).await;
    assert!(control.contains("Seq Scan on jobs"), "{control}");
    let empty = prepared_claim_plan(&mut claims, worker).await;
    assert!(!empty.contains("Seq Scan"), "{empty}");
    conn.batch_execute(
        "INSERT INTO jobq.jobs (task, payload) \
         SELECT 't', jsonb_build_object('n', g) FROM generate_series(1, 20000) AS g",
    )
    .await
    .unwrap();
    assert_eq!(claim_one(&mut claims, worker, "t").await.len(), 1);
    let plan = prepared_claim_plan(&mut claims, worker).await;
    assert!(!plan.contains("Seq Scan"), "{plan}");
    // A cached plan is compiled again by every execution it is JIT'ed in:
    // never on this connection, whatever the estimates.
    #[derive(QueryableByName)]
    struct Jit {
        #[diesel(sql_type = Text)]
        jit: String,
    }
    let jit: Jit = diesel::sql_query("SHOW jit")
        .get_result(&mut claims)
        .await
        .unwrap();
    assert_eq!(jit.jit, "off");
}

async fn claim_limited(
    conn: &mut AsyncPgConnection,
    worker_id: i64,
    slots: i32,
    global: Option<i32>,
    per_key: Option<i32>,
) -> Vec<jobq_diesel::ClaimedJob> {
    let queues = ["default".to_owned()];
    let request = jobq_diesel::LimitedClaimRequest {
        worker_id,
        queues: &queues,
        task: "limited",
        slots,
        global_concurrency: global,
        key_concurrency: per_key,
        claim_key: claim_key(),
        due: false,
        rate: None,
        key_rate: None,
    };
    jobq_diesel::claim_limited(conn, &request).await.unwrap()
}

/// A limited claim of task "limited" under rate limits only.
async fn claim_rated(
    conn: &mut AsyncPgConnection,
    worker_id: i64,
    slots: i32,
    rate: Option<jobq_diesel::RateLimit>,
    key_rate: Option<jobq_diesel::RateLimit>,
) -> Vec<jobq_diesel::ClaimedJob> {
    let queues = ["default".to_owned()];
    let request = jobq_diesel::LimitedClaimRequest {
        worker_id,
        queues: &queues,
        task: "limited",
        slots,
        global_concurrency: None,
        key_concurrency: None,
        claim_key: claim_key(),
        due: false,
        rate,
        key_rate,
    };
    jobq_diesel::claim_limited(conn, &request).await.unwrap()
}

/// One start a minute: no token falls due while a test runs.
const SLOW: jobq_diesel::RateLimit = jobq_diesel::RateLimit {
    interval_us: 60_000_000.0,
    burst: 2,
};

#[tokio::test]
async fn a_rated_claim_takes_at_most_its_tokens_and_says_when_the_next_is_due() {
    let (_db, mut conn) = setup().await;
    for _ in 0..10 {
        keyed(&mut conn, None, 0).await;
    }
    let w = jobq_diesel::register_worker(&mut conn, &info())
        .await
        .unwrap();
    // A full bucket holds the burst and one more; then it is empty.
    assert_eq!(
        claim_rated(&mut conn, w, 10, Some(SLOW), None).await.len(),
        3
    );
    assert!(claim_rated(&mut conn, w, 10, Some(SLOW), None)
        .await
        .is_empty());
    // The next token is one interval after the first of the three was
    // spent, less the burst's two: about 60 s from now.
    let wait = jobq_diesel::next_token(&mut conn, "limited", Some(SLOW), None)
        .await
        .unwrap()
        .expect("the bucket is empty while jobs wait");
    assert!(
        wait > Duration::from_secs(55) && wait <= Duration::from_secs(60),
        "{wait:?}"
    );
    // A bucket full again (its time passed) gives the burst again.
    diesel::sql_query("UPDATE jobq.rate_tokens SET tat = now() - interval '1 second'")
        .execute(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        claim_rated(&mut conn, w, 2, Some(SLOW), None).await.len(),
        2
    );
    assert_eq!(
        claim_rated(&mut conn, w, 5, Some(SLOW), None).await.len(),
        1
    );
    // Without a rate there is nothing to wait for.
    assert_eq!(
        jobq_diesel::next_token(&mut conn, "limited", None, None)
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn a_key_rate_spends_each_keys_bucket_and_blocks_hold_back_a_key_or_the_task() {
    let (_db, mut conn) = setup().await;
    let mut of_key = std::collections::HashMap::<&str, Vec<i64>>::new();
    for key in ["a", "b"] {
        for _ in 0..5 {
            of_key
                .entry(key)
                .or_default()
                .push(keyed(&mut conn, Some(key), 0).await);
        }
    }
    let w = jobq_diesel::register_worker(&mut conn, &info())
        .await
        .unwrap();
    // Three per key (burst 2), whatever the slots.
    let first = claim_rated(&mut conn, w, 20, None, Some(SLOW)).await;
    for key in ["a", "b"] {
        assert_eq!(
            first
                .iter()
                .filter(|j| j.key.as_deref() == Some(key))
                .count(),
            3,
            "{first:?}"
        );
    }
    assert!(claim_rated(&mut conn, w, 20, None, Some(SLOW))
        .await
        .is_empty());
    assert!(
        jobq_diesel::next_token(&mut conn, "limited", None, Some(SLOW))
            .await
            .unwrap()
            .is_some()
    );

    // Blocks: key "a" is held back, then the whole task.
    diesel::sql_query("DELETE FROM jobq.rate_tokens")
        .execute(&mut conn)
        .await
        .unwrap();
    diesel::sql_query(
        "INSERT INTO jobq.blocks (task, key, until) VALUES ('limited', 'a', now() + interval '1 hour')",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let unblocked = claim_rated(&mut conn, w, 20, None, Some(SLOW)).await;
    assert!(!unblocked.is_empty());
    assert!(
        unblocked.iter().all(|j| j.key.as_deref() == Some("b")),
        "{unblocked:?}"
    );
    // The unlimited claim honours blocks too.
    keyed(&mut conn, None, 0).await;
    keyed(&mut conn, Some("a"), 0).await;
    let plain = claim_one(&mut conn, w, "limited").await;
    assert_eq!(plain.len(), 1);
    assert_eq!(plain[0].key, None);
    diesel::sql_query(
        "INSERT INTO jobq.blocks (task, key, until) VALUES ('limited', '', now() + interval '1 hour')",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    keyed(&mut conn, None, 0).await;
    assert!(claim_one(&mut conn, w, "limited").await.is_empty());
    assert!(claim_rated(&mut conn, w, 20, None, None).await.is_empty());
    // A block that has passed holds nothing back.
    diesel::sql_query("UPDATE jobq.blocks SET until = now() - interval '1 second'")
        .execute(&mut conn)
        .await
        .unwrap();
    assert!(!claim_one(&mut conn, w, "limited").await.is_empty());
}

/// Inserts a job of task "limited" with a key and priority; returns its id.
async fn keyed(conn: &mut AsyncPgConnection, key: Option<&str>, priority: i16) -> i64 {
    jobq_diesel::insert_job(
        conn,
        &NewJob {
            key,
            priority,
            ..job("limited")
        },
    )
    .await
    .unwrap()
}

fn ids(jobs: &[jobq_diesel::ClaimedJob]) -> Vec<i64> {
    let mut ids: Vec<i64> = jobs.iter().map(|j| j.id).collect();
    ids.sort_unstable();
    ids
}

#[tokio::test]
async fn a_limited_claim_counts_running_rows_so_outcomes_and_rescues_free_slots() {
    let (_db, mut conn) = setup().await;
    for _ in 0..5 {
        keyed(&mut conn, None, 0).await;
    }
    let a = jobq_diesel::register_worker(&mut conn, &info())
        .await
        .unwrap();
    let b = jobq_diesel::register_worker(&mut conn, &info())
        .await
        .unwrap();
    // Two slots fleet-wide, whoever asks and however many slots they have.
    let first = claim_limited(&mut conn, a, 10, Some(2), None).await;
    assert_eq!(first.len(), 2);
    assert!(first.iter().all(|j| j.task.is_none()));
    assert!(claim_limited(&mut conn, b, 10, Some(2), None)
        .await
        .is_empty());
    // An outcome frees one.
    jobq_diesel::write_outcomes(&mut conn, &[done(&first[0])], &[])
        .await
        .unwrap();
    let second = claim_limited(&mut conn, b, 10, Some(2), None).await;
    assert_eq!(second.len(), 1);
    // A's death frees the slot its remaining job held once it is rescued.
    let rescued = stop_heartbeating_and_rescue(&mut conn, a).await;
    assert_eq!(rescued.len(), 1);
    let third = claim_limited(&mut conn, b, 10, Some(2), None).await;
    assert_eq!(third.len(), 1);
    assert!(claim_limited(&mut conn, b, 10, Some(2), None)
        .await
        .is_empty());
    // Unlimited claims of other tasks neither count nor get counted.
    jobq_diesel::insert_job(&mut conn, &job("t")).await.unwrap();
    assert_eq!(claim_one(&mut conn, b, "t").await.len(), 1);
    let Count { n } = diesel::sql_query(
        "SELECT count(*) AS n FROM jobq.jobs WHERE state = 'running' AND limited",
    )
    .get_result(&mut conn)
    .await
    .unwrap();
    assert_eq!(n, 2);
}

#[tokio::test]
async fn key_concurrency_takes_each_keys_first_jobs_in_priority_then_enqueue_order() {
    let (_db, mut conn) = setup().await;
    let a1 = keyed(&mut conn, Some("a"), 0).await;
    let a2 = keyed(&mut conn, Some("a"), 0).await;
    let a3 = keyed(&mut conn, Some("a"), 5).await;
    let b1 = keyed(&mut conn, Some("b"), 0).await;
    let b2 = keyed(&mut conn, Some("b"), 0).await;
    let none1 = keyed(&mut conn, None, 0).await;
    let none2 = keyed(&mut conn, None, 0).await;
    let w = jobq_diesel::register_worker(&mut conn, &info())
        .await
        .unwrap();

    // One per key: the later a3 goes first for its higher priority; jobs
    // without a key are not held back.
    let first = claim_limited(&mut conn, w, 10, None, Some(1)).await;
    assert_eq!(ids(&first), {
        let mut v = vec![a3, b1, none1, none2];
        v.sort_unstable();
        v
    });
    // Nothing more of a key while one of it runs.
    assert!(claim_limited(&mut conn, w, 10, None, Some(1))
        .await
        .is_empty());
    let a3_job = first.iter().find(|j| j.id == a3).unwrap();
    jobq_diesel::write_outcomes(&mut conn, &[done(a3_job)], &[])
        .await
        .unwrap();
    assert_eq!(
        ids(&claim_limited(&mut conn, w, 10, None, Some(1)).await),
        [a1]
    );

    // With two per key, a key with one running gets one more, and a batch
    // never takes more of a key than its free slots.
    let (_db2, mut conn) = setup().await;
    let w = jobq_diesel::register_worker(&mut conn, &info())
        .await
        .unwrap();
    let k: Vec<i64> = {
        let mut v = Vec::new();
        for _ in 0..4 {
            v.push(keyed(&mut conn, Some("k"), 0).await);
        }
        v
    };
    assert_eq!(
        ids(&claim_limited(&mut conn, w, 10, None, Some(2)).await),
        k[..2]
    );
    assert!(claim_limited(&mut conn, w, 10, None, Some(2))
        .await
        .is_empty());
    // And both limits at once: the global one cuts the batch.
    let _ = (a2, b2);
    for _ in 0..3 {
        keyed(&mut conn, Some("other"), 0).await;
    }
    assert_eq!(
        claim_limited(&mut conn, w, 10, Some(3), Some(2))
            .await
            .len(),
        1
    );
}

#[tokio::test]
async fn keyed_claims_take_free_keys_at_the_head_and_walk_past_busy_ones_in_turn() {
    let (_db, mut conn) = setup().await;
    // Key "a" crowds the head of the queue; "b" and "c" wait behind it.
    let mut a = Vec::new();
    for _ in 0..3 {
        a.push(keyed(&mut conn, Some("a"), 0).await);
    }
    let b = keyed(&mut conn, Some("b"), 0).await;
    let c = keyed(&mut conn, Some("c"), 0).await;
    let w = jobq_diesel::register_worker(&mut conn, &info())
        .await
        .unwrap();
    let queues = ["default".to_owned()];
    let one = async |conn: &mut AsyncPgConnection| {
        let request = jobq_diesel::LimitedClaimRequest {
            worker_id: w,
            queues: &queues,
            task: "limited",
            slots: 1,
            global_concurrency: None,
            key_concurrency: Some(1),
            claim_key: claim_key(),
            due: false,
            rate: None,
            key_rate: None,
        };
        ids(&jobq_diesel::claim_limited(conn, &request).await.unwrap())
    };
    // The head (two jobs per slot, in key order) holds a free key: no walk.
    assert_eq!(one(&mut conn).await, [a[0]]);
    assert_eq!(walk_position(&mut conn).await, None);
    // Now the head holds only the busy key "a": the walk goes past it to
    // "b" and "c", the older of which is taken, and remembers where it
    // stopped.
    assert_eq!(one(&mut conn).await, [b]);
    assert_eq!(walk_position(&mut conn).await.as_deref(), Some("c"));
    // Walks are spaced out per task: right after one, only the head is
    // looked at.
    assert_eq!(one(&mut conn).await, Vec::<i64>::new());
    // Once the interval has passed, the next walk starts after "c",
    // wraps around, passes the busy "a" and "b" and finds "c".
    diesel::sql_query("UPDATE jobq.key_walks SET walked_at = walked_at - interval '1 second'")
        .execute(&mut conn)
        .await
        .unwrap();
    assert_eq!(one(&mut conn).await, [c]);
}

/// Where the next key walk of the test's keyed task starts, if one ran.
async fn walk_position(conn: &mut AsyncPgConnection) -> Option<String> {
    #[derive(diesel::QueryableByName)]
    struct Position {
        #[diesel(sql_type = diesel::sql_types::Text)]
        after_key: String,
    }
    diesel::sql_query("SELECT after_key FROM jobq.key_walks WHERE task = 'limited'")
        .load::<Position>(conn)
        .await
        .unwrap()
        .pop()
        .map(|p| p.after_key)
}

#[derive(diesel::QueryableByName)]
struct N {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[derive(diesel::QueryableByName, Debug, PartialEq)]
struct Snoozed {
    #[diesel(sql_type = diesel::sql_types::Text)]
    state: String,
    #[diesel(sql_type = diesel::sql_types::Integer)]
    attempt: i32,
    #[diesel(sql_type = diesel::sql_types::Integer)]
    handbacks: i32,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    due_later: bool,
}

async fn snoozed_row(conn: &mut AsyncPgConnection, id: i64) -> Snoozed {
    diesel::sql_query(
        "SELECT state::text AS state, attempt, handbacks, run_at > now() + interval '59 minutes' \
         AS due_later FROM jobq.jobs WHERE id = $1",
    )
    .bind::<BigInt, _>(id)
    .get_result(conn)
    .await
    .unwrap()
}

async fn blocks_of_acme_past_the_hour(conn: &mut AsyncPgConnection) -> i64 {
    diesel::sql_query(
        "SELECT count(*) AS n FROM jobq.blocks WHERE task = 'limited' AND key = 'acme' \
         AND until > now() + interval '59 minutes'",
    )
    .get_result::<N>(conn)
    .await
    .unwrap()
    .n
}

#[tokio::test]
async fn a_snooze_uses_no_attempt_stays_fenced_and_a_rate_limit_writes_the_longest_block() {
    let (_db, mut conn) = setup().await;
    let id = keyed(&mut conn, Some("acme"), 0).await;
    let w = jobq_diesel::register_worker(&mut conn, &info())
        .await
        .unwrap();
    let claimed = claim_one(&mut conn, w, "limited").await;
    assert_eq!(claimed.len(), 1);
    let outcome = |attempt: i32, kind: OutcomeKind| Outcome {
        id,
        attempt,
        kind,
        message: Some("snoozed for 1h".into()),
        output: None,
    };
    let hour = OutcomeKind::RateLimited {
        delay_ms: 3_600_000,
    };
    let rejected = jobq_diesel::write_outcomes(&mut conn, &[outcome(1, hour)], &[])
        .await
        .unwrap();
    assert!(rejected.is_empty());
    // Waiting an hour, its attempt not used (attempt - handbacks = 0).
    assert_eq!(
        snoozed_row(&mut conn, id).await,
        Snoozed {
            state: "scheduled".into(),
            attempt: 1,
            handbacks: 1,
            due_later: true
        }
    );
    // A late copy of the same outcome finds the attempt ended: fenced.
    let again = jobq_diesel::write_outcomes(&mut conn, &[outcome(1, hour)], &[])
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(blocks_of_acme_past_the_hour(&mut conn).await, 1);

    // The next claim is attempt 2 by the fence, still the first by count;
    // a shorter block from it leaves the longer one in place, and a plain
    // snooze writes none.
    diesel::sql_query("UPDATE jobq.jobs SET state = 'pending', run_at = now() WHERE id = $1")
        .bind::<diesel::sql_types::BigInt, _>(id)
        .execute(&mut conn)
        .await
        .unwrap();
    // (The block would hold it back: let it pass.)
    diesel::sql_query("UPDATE jobq.blocks SET until = now() - interval '1 second'")
        .execute(&mut conn)
        .await
        .unwrap();
    let claimed = claim_one(&mut conn, w, "limited").await;
    assert_eq!(claimed.len(), 1);
    assert_eq!((claimed[0].attempt, claimed[0].number()), (2, 1));
    diesel::sql_query("UPDATE jobq.blocks SET until = now() + interval '2 hours'")
        .execute(&mut conn)
        .await
        .unwrap();
    let second = OutcomeKind::RateLimited { delay_ms: 1_000 };
    assert!(
        jobq_diesel::write_outcomes(&mut conn, &[outcome(2, second)], &[])
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        blocks_of_acme_past_the_hour(&mut conn).await,
        1,
        "a shorter block shortened a longer one"
    );
    let after = snoozed_row(&mut conn, id).await;
    assert_eq!((after.attempt, after.handbacks), (2, 2));
}

/// Ids of the jobs of key "acme" in `state`, in claim order within the key
/// (priority, then enqueue order).
async fn acme_ids(conn: &mut AsyncPgConnection, state: &str) -> Vec<i64> {
    #[derive(QueryableByName)]
    struct Id {
        #[diesel(sql_type = BigInt)]
        id: i64,
    }
    let rows: Vec<Id> = diesel::sql_query(
        "SELECT id FROM jobq.jobs WHERE key = 'acme' AND state::text = $1 \
         ORDER BY priority DESC, id",
    )
    .bind::<Text, _>(state)
    .load(conn)
    .await
    .unwrap();
    rows.into_iter().map(|r| r.id).collect()
}

/// `EXPLAIN (ANALYZE, BUFFERS)` of the unlimited claim of up to 1,000 jobs
/// of task "limited", rolled back: the buffers its walk of the claim's
/// index touched, and its plan.
async fn unlimited_claim_buffers(conn: &mut AsyncPgConnection, worker: i64) -> (u64, String) {
    let plan = explain_analyze(conn, |c| {
        Box::pin(async move {
            let queues = ["default".to_owned()];
            let tasks = ["limited".to_owned()];
            diesel::sql_query(format!(
                "EXPLAIN (ANALYZE, BUFFERS) {}",
                jobq_diesel::CLAIM_SQL
            ))
            .bind::<Array<Text>, _>(&queues[..])
            .bind::<Array<Text>, _>(&tasks[..])
            .bind::<Array<Integer>, _>(&[1000][..])
            .bind::<BigInt, _>(worker)
            .bind::<BigInt, _>(claim_key())
            .bind::<Array<Nullable<Integer>>, _>(&[None::<i32>][..])
            .bind::<Array<Nullable<Timestamptz>>, _>(&[None::<chrono::DateTime<chrono::Utc>>][..])
            .bind::<Array<Nullable<BigInt>>, _>(&[None::<i64>][..])
            .load(c)
            .await
        })
    })
    .await;
    let walk = plan
        .iter()
        // Without a floor the walk is the second half's scan (the first
        // finds no floor and touches nothing).
        .rposition(|l| l.contains("Index Scan using jobs_claim_idx"))
        .map(|at| buffers(&plan[at..]))
        .unwrap_or(u64::MAX);
    (walk, plan.join("\n"))
}

/// The whole keyed claim's buffers and plan (`key_concurrency = 1`), after its lock.
async fn keyed_claim_buffers(conn: &mut AsyncPgConnection, worker: i64) -> (u64, String) {
    use diesel::sql_types::{Double, Nullable};
    let plan = explain_analyze(conn, |c| {
        Box::pin(async move {
            let queues = ["default".to_owned()];
            diesel::sql_query(format!(
                "EXPLAIN (ANALYZE, BUFFERS) {}",
                jobq_diesel::KEYED_CLAIM_SQL
            ))
            .bind::<Array<Text>, _>(&queues[..])
            .bind::<Text, _>("limited")
            .bind::<Integer, _>(1000)
            .bind::<Nullable<Integer>, _>(None::<i32>)
            .bind::<Nullable<Integer>, _>(Some(1))
            .bind::<BigInt, _>(worker)
            .bind::<BigInt, _>(claim_key())
            .bind::<Nullable<Double>, _>(None::<f64>)
            .bind::<Nullable<Double>, _>(None::<f64>)
            .bind::<Nullable<Double>, _>(None::<f64>)
            .bind::<Nullable<Double>, _>(None::<f64>)
            .load(c)
            .await
        })
    })
    .await;
    (picking_buffers(&plan), plan.join("\n"))
}

#[tokio::test]
async fn a_rate_limit_moves_its_keys_backlog_out_of_the_claim_path_until_the_block_ends() {
    let (_db, mut conn) = setup().await;
    // The job that will be told to back off, first in claim order; then
    // 100,000 pending jobs of its key in mixed priorities, and 20 others
    // of the task (ten of another key, ten without one).
    let throttled = keyed(&mut conn, Some("acme"), 9).await;
    conn.batch_execute(
        "INSERT INTO jobq.jobs (task, payload, key, priority) \
         SELECT 'limited', '{}', 'acme', (i % 3)::int2 FROM generate_series(1, 100000) i; \
         INSERT INTO jobq.jobs (task, payload, key) \
         SELECT 'limited', '{}', CASE WHEN i % 2 = 0 THEN 'globex' END \
         FROM generate_series(1, 20) i;",
    )
    .await
    .unwrap();
    let in_order = acme_ids(&mut conn, "pending").await;
    assert_eq!(in_order.len(), 100_001);
    let w = jobq_diesel::register_worker(&mut conn, &info())
        .await
        .unwrap();
    // What a block that leaves the backlog pending costs each claim of the
    // task (a block written by hand, as blocks were before the move).
    conn.batch_execute(
        "INSERT INTO jobq.blocks (task, key, until) VALUES ('limited', 'acme', now() + interval '1 hour')",
    )
    .await
    .unwrap();
    conn.batch_execute("VACUUM ANALYZE jobq.jobs")
        .await
        .unwrap();
    let (stepping_over, _) = unlimited_claim_buffers(&mut conn, w).await;
    conn.batch_execute("DELETE FROM jobq.blocks").await.unwrap();
    let claimed = claim_one(&mut conn, w, "limited").await;
    assert_eq!(claimed[0].id, throttled);
    let hour = Outcome {
        id: throttled,
        attempt: 1,
        kind: OutcomeKind::RateLimited {
            delay_ms: 3_600_000,
        },
        message: None,
        output: None,
    };
    let started = std::time::Instant::now();
    assert!(jobq_diesel::write_outcomes(&mut conn, &[hour], &[])
        .await
        .unwrap()
        .is_empty());
    eprintln!(
        "the outcome that blocked the key moved its backlog in {:?}",
        started.elapsed()
    );

    // The outcome that wrote the block moved the key's backlog out of the
    // claim path, to the block's end.
    assert!(acme_ids(&mut conn, "pending").await.is_empty());
    let Count { n: parked } = diesel::sql_query(
        "SELECT count(*) AS n FROM jobq.jobs j JOIN jobq.blocks b ON b.task = j.task \
         AND b.key = j.key WHERE j.key = 'acme' AND j.state = 'scheduled' AND j.run_at = b.until",
    )
    .get_result(&mut conn)
    .await
    .unwrap();
    assert_eq!(parked, 100_001);
    // Claims of the task, unlimited and keyed, no longer step over it.
    // (Until vacuum, which the move's 100,000 dead index entries set off,
    // a claim still reads the index pages that hold them, though no row:
    // 1,173 buffers here. The same goes for the entries every claim and
    // outcome leave behind.)
    conn.batch_execute("VACUUM ANALYZE jobq.jobs")
        .await
        .unwrap();
    let (walk, plan) = unlimited_claim_buffers(&mut conn, w).await;
    assert!(
        walk < 50 && walk * 100 < stepping_over,
        "the claim touched {walk} buffers ({stepping_over} beside the pending backlog):\n{plan}"
    );
    eprintln!(
        "claim beside a blocked backlog of 100,001: {stepping_over} buffers pending, {walk} parked"
    );
    let (walk, plan) = keyed_claim_buffers(&mut conn, w).await;
    assert!(
        walk < 300,
        "the keyed claim touched {walk} buffers:\n{plan}"
    );
    let others = claim_up_to(&mut conn, w, "limited", 1000).await;
    assert_eq!(others.len(), 20);
    assert!(others.iter().all(|j| j.key.as_deref() != Some("acme")));

    // Promotion while the block lasts (it was extended after the jobs were
    // parked, so they fall due before it ends) does not make them pending:
    // they move on to the block's new end.
    conn.batch_execute(
        "UPDATE jobq.blocks SET until = until + interval '1 hour'; \
         UPDATE jobq.jobs SET run_at = now() - interval '1 second' \
         WHERE key = 'acme' AND state = 'scheduled';",
    )
    .await
    .unwrap();
    let promotion = jobq_diesel::promote(&mut conn, &["default".to_owned()], 200_000)
        .await
        .unwrap();
    assert_eq!(promotion.promoted, 0);
    let ahead = Duration::from_micros(promotion.next_due_in_us.unwrap().try_into().unwrap());
    assert!(ahead > Duration::from_secs(7000), "{ahead:?}");
    assert!(acme_ids(&mut conn, "pending").await.is_empty());

    // The block ends: the backlog comes back in batches, each the next
    // jobs of the key in claim order, so a claim between two batches
    // never sees a later job of the key pending before an earlier one.
    conn.batch_execute(
        "UPDATE jobq.blocks SET until = now() - interval '1 second'; \
         UPDATE jobq.jobs SET run_at = now() - interval '1 second' \
         WHERE key = 'acme' AND state = 'scheduled';",
    )
    .await
    .unwrap();
    let first = jobq_diesel::promote(&mut conn, &["default".to_owned()], 5_000)
        .await
        .unwrap();
    assert_eq!((first.promoted, first.more), (5_000, true));
    assert_eq!(acme_ids(&mut conn, "pending").await, in_order[..5_000]);
    let again = jobq_diesel::promote(&mut conn, &["default".to_owned()], 5_000)
        .await
        .unwrap();
    assert_eq!(again.promoted, 5_000);
    assert_eq!(acme_ids(&mut conn, "pending").await, in_order[..10_000]);
}

/// `EXPLAIN (ANALYZE, BUFFERS)` of the unlimited claim of up to 1,000 jobs
/// of task "pin" from `floor`, rolled back: the buffers its choice of jobs
/// touched (the walk, without the update of the jobs it took), and its
/// plan.
async fn claim_from_buffers(
    conn: &mut AsyncPgConnection,
    worker: i64,
    floor: Option<jobq_diesel::ClaimPosition>,
) -> (u64, String) {
    let plan = explain_analyze(conn, |c| {
        Box::pin(async move {
            let queues = ["default".to_owned()];
            let tasks = ["pin".to_owned()];
            diesel::sql_query(format!(
                "EXPLAIN (ANALYZE, BUFFERS) {}",
                jobq_diesel::CLAIM_SQL
            ))
            .bind::<Array<Text>, _>(&queues[..])
            .bind::<Array<Text>, _>(&tasks[..])
            .bind::<Array<Integer>, _>(&[1000][..])
            .bind::<BigInt, _>(worker)
            .bind::<BigInt, _>(claim_key())
            .bind::<Array<Nullable<Integer>>, _>(&[floor.map(|f| i32::from(f.priority))][..])
            .bind::<Array<Nullable<Timestamptz>>, _>(&[floor.map(|f| f.run_at)][..])
            .bind::<Array<Nullable<BigInt>>, _>(&[floor.map(|f| f.id)][..])
            .load(c)
            .await
        })
    })
    .await;
    (picking_buffers(&plan), plan.join("\n"))
}

#[tokio::test]
async fn under_a_held_snapshot_a_claim_from_its_floor_steps_over_no_dead_head() {
    let (db, mut conn) = setup().await;
    let worker = jobq_diesel::register_worker(&mut conn, &info())
        .await
        .unwrap();
    // A snapshot held open: no entry of a job claimed from now on can be
    // removed from the claim's index, nor pruned by the scans that meet it.
    let mut holder = AsyncPgConnection::establish(db.url()).await.unwrap();
    holder
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT txid_current();")
        .await
        .unwrap();
    let queues = ["default".to_owned()];
    let tasks = ["pin".to_owned()];
    let mut floor = None;
    for _ in 0..100 {
        conn.batch_execute(
            "INSERT INTO jobq.jobs (task, payload) SELECT 'pin', '{}' FROM generate_series(1, 100)",
        )
        .await
        .unwrap();
        let floors = [floor];
        let request = ClaimRequest {
            worker_id: worker,
            queues: &queues,
            tasks: &tasks,
            slots: &[100],
            claim_key: claim_key(),
            due: false,
            floors: &floors,
            lanes: None,
        };
        let claimed = jobq_diesel::claim(&mut conn, &request).await.unwrap();
        assert_eq!(claimed.len(), 100, "the floor skipped pending jobs");
        floor = claimed.iter().map(|j| j.position).max();
    }
    conn.batch_execute(
        "INSERT INTO jobq.jobs (task, payload) SELECT 'pin', '{}' FROM generate_series(1, 10)",
    )
    .await
    .unwrap();

    let (from_head, head_plan) = claim_from_buffers(&mut conn, worker, None).await;
    let (from_floor, floor_plan) = claim_from_buffers(&mut conn, worker, floor).await;
    assert!(
        from_head > 200,
        "the 10,000 dead entries cost a walk from the head only {from_head} buffers: \
         the test no longer sets up what it means to\n{head_plan}"
    );
    assert!(
        from_floor < 50 && from_floor * 5 < from_head,
        "from its floor the claim touched {from_floor} buffers (from the head \
         {from_head}):\n{floor_plan}"
    );
    let floors = [floor];
    let claimed = jobq_diesel::claim(
        &mut conn,
        &ClaimRequest {
            worker_id: worker,
            queues: &queues,
            tasks: &tasks,
            slots: &[1000],
            claim_key: claim_key(),
            due: false,
            floors: &floors,
            lanes: None,
        },
    )
    .await
    .unwrap();
    assert_eq!(claimed.len(), 10, "from the floor, every pending job");
    holder.batch_execute("COMMIT").await.unwrap();
}

/// The probe of the claim heads finds each task's first job in claim
/// order, leaves out what a claim would (paused queues, blocked keys, jobs
/// not yet due, other tasks), counts a job another claim holds locked,
/// and locks nothing itself.
#[tokio::test]
async fn claim_heads_find_each_tasks_first_claimable_job_without_locking() {
    let (db, mut conn) = setup().await;
    let queues = ["default".to_owned(), "paused".to_owned()];
    let tasks = ["a".to_owned(), "b".to_owned(), "c".to_owned()];
    let low = jobq_diesel::insert_job(&mut conn, &job("a")).await.unwrap();
    let high = jobq_diesel::insert_job(
        &mut conn,
        &NewJob {
            priority: 5,
            ..job("a")
        },
    )
    .await
    .unwrap();
    let _blocked = jobq_diesel::insert_job(
        &mut conn,
        &NewJob {
            key: Some("k"),
            priority: 9,
            ..job("b")
        },
    )
    .await
    .unwrap();
    let free = jobq_diesel::insert_job(&mut conn, &job("b")).await.unwrap();
    jobq_diesel::insert_job(
        &mut conn,
        &NewJob {
            queue: "paused",
            ..job("c")
        },
    )
    .await
    .unwrap();
    jobq_diesel::insert_job(
        &mut conn,
        &NewJob {
            delay_ms: 3_600_000,
            ..job("c")
        },
    )
    .await
    .unwrap();
    conn.batch_execute(
        "INSERT INTO jobq.paused_queues (queue) VALUES ('paused'); \
         INSERT INTO jobq.blocks (task, key, until) VALUES ('b', 'k', now() + interval '1 hour')",
    )
    .await
    .unwrap();
    // Another transaction holds the first job of "a".
    let mut holder = AsyncPgConnection::establish(db.url()).await.unwrap();
    holder
        .batch_execute(&format!(
            "BEGIN; SELECT 1 FROM jobq.jobs WHERE id = {high} FOR UPDATE"
        ))
        .await
        .unwrap();

    let mut heads = jobq_diesel::claim_heads(&mut conn, &queues, &tasks)
        .await
        .unwrap();
    heads.sort_by(|x, y| x.0.cmp(&y.0));
    let found: Vec<(&str, i64, i16)> = heads
        .iter()
        .map(|(t, at)| (t.as_str(), at.id, at.priority))
        .collect();
    assert_eq!(found, [("a", high, 5), ("b", free, 0)]);
    assert!(low < high);
    holder.batch_execute("COMMIT").await.unwrap();
    // Nothing was locked: the holder's lock was the only one, and a claim
    // takes the head at once.
    let worker = jobq_diesel::register_worker(&mut conn, &info())
        .await
        .unwrap();
    let claimed = claim_one(&mut conn, worker, "a").await;
    assert_eq!(claimed[0].id, high);
    assert_eq!(claimed[0].position, heads[0].1);
}
