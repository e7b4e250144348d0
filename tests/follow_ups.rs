//! Follow-up jobs (`#[jobq::task(then = ...)]`): every path that writes a
//! terminal state enqueues exactly one follow-up, in its own transaction,
//! with a `jobq::Finished` payload that says how the job ended.

mod support;

use std::time::Duration;

use diesel::sql_types::{BigInt, Text};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use jobq::{EnqueueOptions, Finished, JobId, JobState, TaskError};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Order {
    /// What the handler does: "ok", "permanent", "flaky", "until_cancelled",
    /// "hang".
    kind: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Receipt {
    number: String,
}

fn order(kind: &str) -> Order {
    Order { kind: kind.into() }
}

#[jobq::task(then = notify, max_attempts = 2, retry = "10ms")]
async fn charge(ctx: jobq::Context, job: Order) -> Result<Receipt, TaskError> {
    match job.kind.as_str() {
        "permanent" => Err(TaskError::permanent(anyhow::anyhow!("card declined"))),
        "flaky" => Err(TaskError::msg(format!(
            "gateway timeout on attempt {}",
            ctx.attempt()
        ))),
        "until_cancelled" => {
            ctx.cancelled().await;
            Err(TaskError::msg("stopped: the job was cancelled"))
        }
        "hang" => std::future::pending().await,
        _ => Ok(Receipt {
            number: format!("r-{}", ctx.job_id()),
        }),
    }
}

/// The follow-up: returns what it was given, so that its output shows the
/// payload decoded by the worker.
#[jobq::task(queue = "callbacks", priority = 3, max_attempts = 4)]
async fn notify(job: Finished) -> Result<Finished, TaskError> {
    Ok(job)
}

/// A task whose follow-up measures its output rather than echo it (an
/// echo of the largest output would be over the output limit itself).
#[jobq::task(then = measure)]
async fn big(job: Order) -> Result<Receipt, TaskError> {
    let _ = job;
    Ok(Receipt {
        // The largest output that can be stored, with the quotes and the
        // key around it.
        number: "é".repeat((jobq::MAX_OUTPUT_SIZE - 16) / 2),
    })
}

/// The length of the receipt number it was given.
#[jobq::task]
async fn measure(job: Finished) -> Result<usize, TaskError> {
    let receipt: Receipt = job
        .output_as()?
        .ok_or_else(|| TaskError::msg("no output"))?;
    Ok(receipt.number.len())
}

/// A task without a follow-up.
#[jobq::task]
async fn plain(job: Order) -> Result<(), TaskError> {
    let _ = job;
    Ok(())
}

/// A chain: `first` is followed by `second`, which is followed by `notify`.
#[jobq::task(then = second)]
async fn first(job: Order) -> Result<u32, TaskError> {
    let _ = job;
    Ok(7)
}

#[jobq::task(then = notify, queue = "callbacks")]
async fn second(job: Finished) -> Result<String, TaskError> {
    Ok(format!("saw {}", job.job_id))
}

fn worker(env: &support::Env) -> jobq::WorkerBuilder {
    env.worker().queues(["default", "callbacks"])
}

#[derive(diesel::QueryableByName)]
struct FollowUpRow {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Text)]
    task: String,
    #[diesel(sql_type = Text)]
    queue: String,
    #[diesel(sql_type = diesel::sql_types::SmallInt)]
    priority: i16,
    #[diesel(sql_type = diesel::sql_types::Integer)]
    max_attempts: i32,
    #[diesel(sql_type = Text)]
    payload: String,
}

/// Every follow-up job of job `of`, whatever its task.
async fn follow_ups(conn: &mut AsyncPgConnection, of: JobId) -> Vec<FollowUpRow> {
    diesel::sql_query(
        "SELECT id, task, queue, priority, max_attempts, payload::text AS payload \
         FROM jobq.jobs WHERE payload ->> 'job_id' = $1 ORDER BY id",
    )
    .bind::<Text, _>(of.to_string())
    .load(conn)
    .await
    .unwrap()
}

/// The one follow-up of job `of`, which must exist by now: it commits
/// with the terminal state that the caller has seen.
async fn the_follow_up(env: &support::Env, of: JobId) -> (JobId, Finished) {
    let mut conn = env.conn().await;
    let rows = follow_ups(&mut conn, of).await;
    assert_eq!(rows.len(), 1, "one follow-up of job {of}");
    let row = &rows[0];
    // The follow-up task's own options.
    assert_eq!(
        (row.task.as_str(), row.queue.as_str(), row.priority),
        ("notify", "callbacks", 3)
    );
    assert_eq!(row.max_attempts, 4);
    (
        JobId::from(row.id),
        serde_json::from_str(&row.payload).unwrap(),
    )
}

/// Runs the follow-up to completion and checks that its handler got the
/// payload as stored.
async fn delivered(env: &support::Env, follow_up: JobId, expected: &Finished) {
    let info = env.wait_state(follow_up, JobState::Completed).await;
    let seen: Finished = serde_json::from_value(info.output.unwrap()).unwrap();
    assert_eq!(&seen, expected);
}

async fn total_jobs(env: &support::Env) -> i64 {
    env.count("SELECT count(*) AS n FROM jobq.jobs").await
}

#[tokio::test]
async fn a_completed_job_is_followed_once_with_its_output() {
    let env = support::env().await;
    let mut conn = env.conn().await;
    let id = charge::enqueue(&mut conn, &order("ok")).await.unwrap();
    let plain_id = plain::enqueue(&mut conn, &order("ok")).await.unwrap();
    let handle = worker(&env).build().await.unwrap().spawn();
    let info = env.wait_state(id, JobState::Completed).await;
    let (follow_up, finished) = the_follow_up(&env, id).await;
    assert_eq!(finished.job_id, id);
    assert_eq!(finished.task, "charge");
    assert_eq!(finished.queue, "default");
    assert_eq!(finished.state, JobState::Completed);
    assert_eq!(finished.error, None);
    assert_eq!(finished.attempt, 1);
    assert_eq!(finished.created_at, info.created_at);
    assert_eq!(finished.started_at, info.started_at);
    assert_eq!(Some(finished.finished_at), info.finished_at);
    assert_eq!(
        finished.output_as::<Receipt>().unwrap(),
        Some(Receipt {
            number: format!("r-{id}")
        })
    );
    delivered(&env, follow_up, &finished).await;
    // The task without `then` got none, and the follow-up (whose task has
    // no `then` either) none of its own.
    env.wait_state(plain_id, JobState::Completed).await;
    handle.shutdown().await.unwrap();
    assert!(follow_ups(&mut conn, plain_id).await.is_empty());
    assert!(follow_ups(&mut conn, follow_up).await.is_empty());
    assert_eq!(total_jobs(&env).await, 3);
}

#[tokio::test]
async fn a_permanent_failure_is_followed_with_its_error() {
    let env = support::env().await;
    let mut conn = env.conn().await;
    let id = charge::enqueue(&mut conn, &order("permanent"))
        .await
        .unwrap();
    let handle = worker(&env).build().await.unwrap().spawn();
    env.wait_state(id, JobState::Failed).await;
    let (follow_up, finished) = the_follow_up(&env, id).await;
    assert_eq!(finished.state, JobState::Failed);
    assert_eq!(finished.attempt, 1);
    assert_eq!(finished.output, None);
    let error = finished.error.clone().unwrap();
    assert!(error.contains("card declined"), "{error}");
    delivered(&env, follow_up, &finished).await;
    handle.shutdown().await.unwrap();
}

#[tokio::test]
async fn exhausted_attempts_are_followed_once_not_per_attempt() {
    let env = support::env().await;
    let mut conn = env.conn().await;
    let id = charge::enqueue(&mut conn, &order("flaky")).await.unwrap();
    let handle = worker(&env).build().await.unwrap().spawn();
    let info = env.wait_state(id, JobState::Failed).await;
    assert_eq!(info.errors.len(), 2, "two attempts: {:?}", info.errors);
    let (follow_up, finished) = the_follow_up(&env, id).await;
    assert_eq!(finished.state, JobState::Failed);
    assert_eq!(finished.attempt, 2);
    // The last attempt's error.
    let error = finished.error.clone().unwrap();
    assert!(error.contains("gateway timeout on attempt 2"), "{error}");
    delivered(&env, follow_up, &finished).await;
    handle.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_payload_that_does_not_decode_is_followed() {
    let env = support::env().await;
    let mut conn = env.conn().await;
    // The typed API carries the follow-up; a raw row of the task gets it
    // only if it sets the column, as this one does (copied from a typed
    // enqueue of the same task).
    let typed = charge::enqueue_with(
        &mut conn,
        &order("ok"),
        EnqueueOptions::new().delay(Duration::from_secs(3600)),
    )
    .await
    .unwrap();
    let row: FollowUpRow = diesel::sql_query(
        "INSERT INTO jobq.jobs (task, payload, follow_up) \
         SELECT 'charge', '{\"kind\": 5}', follow_up FROM jobq.jobs WHERE id = $1 \
         RETURNING id, task, queue, priority, max_attempts, payload::text AS payload",
    )
    .bind::<BigInt, _>(typed.get())
    .get_result(&mut conn)
    .await
    .unwrap();
    let id = JobId::from(row.id);
    let handle = worker(&env).build().await.unwrap().spawn();
    env.wait_state(id, JobState::Failed).await;
    let (follow_up, finished) = the_follow_up(&env, id).await;
    assert_eq!(finished.state, JobState::Failed);
    let error = finished.error.clone().unwrap();
    assert!(
        error.contains("charge"),
        "the error names the task: {error}"
    );
    delivered(&env, follow_up, &finished).await;
    handle.shutdown().await.unwrap();
}

#[tokio::test]
async fn cancelling_a_pending_job_is_followed_and_a_finished_one_is_not_again() {
    let env = support::env().await;
    let mut conn = env.conn().await;
    let id = charge::enqueue_with(
        &mut conn,
        &order("ok"),
        EnqueueOptions::new().delay(Duration::from_secs(3600)),
    )
    .await
    .unwrap();
    // A cancel rolled back with its transaction leaves no follow-up.
    conn.transaction::<(), diesel::result::Error, _>(async |tx| {
        assert!(jobq::cancel(tx, id).await.unwrap());
        assert_eq!(follow_ups(tx, id).await.len(), 1, "seen inside");
        Err(diesel::result::Error::RollbackTransaction)
    })
    .await
    .unwrap_err();
    assert!(follow_ups(&mut conn, id).await.is_empty());
    assert_eq!(env.job(id).await.state, JobState::Scheduled);

    assert!(jobq::cancel(&mut conn, id).await.unwrap());
    let (follow_up, finished) = the_follow_up(&env, id).await;
    assert_eq!(finished.state, JobState::Cancelled);
    assert_eq!(finished.attempt, 0);
    assert_eq!(finished.started_at, None);
    assert_eq!(finished.error, None);
    // Cancelling again changes nothing and enqueues nothing.
    assert!(!jobq::cancel(&mut conn, id).await.unwrap());
    let handle = worker(&env).build().await.unwrap().spawn();
    delivered(&env, follow_up, &finished).await;
    handle.shutdown().await.unwrap();
    assert_eq!(follow_ups(&mut conn, id).await.len(), 1);
}

#[tokio::test]
async fn cancelling_a_running_job_is_followed() {
    let env = support::env().await;
    let mut conn = env.conn().await;
    let id = charge::enqueue(&mut conn, &order("until_cancelled"))
        .await
        .unwrap();
    let handle = worker(&env).build().await.unwrap().spawn();
    env.wait_state(id, JobState::Running).await;
    assert!(jobq::cancel(&mut conn, id).await.unwrap());
    // Running until its worker writes the outcome, and no follow-up while
    // it is (one statement, one snapshot: the worker may finish it at any
    // moment).
    let early = env
        .count(&format!(
            "SELECT count(*) AS n FROM jobq.jobs j, jobq.jobs f \
             WHERE j.id = {id} AND j.state = 'running' AND f.payload ->> 'job_id' = '{id}'"
        ))
        .await;
    assert_eq!(early, 0, "a follow-up of a job still running");
    env.wait_state(id, JobState::Cancelled).await;
    let (follow_up, finished) = the_follow_up(&env, id).await;
    assert_eq!(finished.state, JobState::Cancelled);
    assert_eq!(finished.attempt, 1);
    assert!(finished.started_at.is_some());
    let error = finished.error.clone().unwrap();
    assert!(error.contains("stopped"), "{error}");
    delivered(&env, follow_up, &finished).await;
    handle.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_workers_job_rescued_out_of_attempts_is_followed() {
    let env = support::env().await;
    let mut conn = env.conn().await;
    let id = charge::enqueue_with(
        &mut conn,
        &order("hang"),
        EnqueueOptions::new().max_attempts(1),
    )
    .await
    .unwrap();
    let doomed = env.crashable(|w| w.queues(["default", "callbacks"]));
    env.wait_state(id, JobState::Running).await;
    doomed.shutdown_background();
    let rescuer = worker(&env).build().await.unwrap().spawn();
    env.wait_state(id, JobState::Failed).await;
    let (follow_up, finished) = the_follow_up(&env, id).await;
    assert_eq!(finished.state, JobState::Failed);
    assert_eq!(finished.attempt, 1);
    let error = finished.error.clone().unwrap();
    assert!(error.contains("stopped heartbeating"), "{error}");
    delivered(&env, follow_up, &finished).await;
    rescuer.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_rolled_back_enqueue_leaves_no_job_and_no_follow_up() {
    let env = support::env().await;
    let mut conn = env.conn().await;
    let mut id = None;
    conn.transaction::<(), diesel::result::Error, _>(async |tx| {
        id = Some(charge::enqueue(tx, &order("ok")).await.unwrap());
        Err(diesel::result::Error::RollbackTransaction)
    })
    .await
    .unwrap_err();
    let handle = worker(&env).build().await.unwrap().spawn();
    // Proof that the worker ran meanwhile: a later job and its follow-up.
    let later = charge::enqueue(&mut conn, &order("ok")).await.unwrap();
    env.wait_state(later, JobState::Completed).await;
    let (follow_up, _) = the_follow_up(&env, later).await;
    env.wait_state(follow_up, JobState::Completed).await;
    handle.shutdown().await.unwrap();
    assert!(follow_ups(&mut conn, id.unwrap()).await.is_empty());
    assert_eq!(total_jobs(&env).await, 2);
}

#[tokio::test]
async fn an_operator_retry_that_finishes_again_is_followed_again() {
    let env = support::env().await;
    let mut conn = env.conn().await;
    let id = charge::enqueue(&mut conn, &order("permanent"))
        .await
        .unwrap();
    let handle = worker(&env).build().await.unwrap().spawn();
    env.wait_state(id, JobState::Failed).await;
    assert_eq!(follow_ups(&mut conn, id).await.len(), 1);
    // Pending again: no follow-up for that.
    jobq::retry(&mut conn, id).await.unwrap();
    assert_eq!(follow_ups(&mut conn, id).await.len(), 1);
    support::wait_until("the retried job to fail again", || async {
        follow_ups(&mut *env.conn().await, id).await.len() == 2
    })
    .await;
    handle.shutdown().await.unwrap();
    let rows = follow_ups(&mut conn, id).await;
    assert_eq!(rows.len(), 2);
    let second: Finished = serde_json::from_str(&rows[1].payload).unwrap();
    assert_eq!(second.state, JobState::Failed);
    // The retry starts the attempts over.
    assert_eq!(second.attempt, 1);
}

#[tokio::test]
async fn follow_ups_chain_and_every_enqueue_path_carries_them() {
    let env = support::env().await;
    let mut conn = env.conn().await;
    let chained = first::enqueue(&mut conn, &order("ok")).await.unwrap();
    let many = charge::enqueue_many(&mut conn, &[order("ok"), order("permanent")])
        .await
        .unwrap();
    let unique = charge::enqueue_unique(
        &mut conn,
        &order("ok"),
        EnqueueOptions::new().unique_key("client-7/req-1"),
    )
    .await
    .unwrap();
    assert!(unique.created);
    let deduped = charge::enqueue_with(
        &mut conn,
        &order("ok"),
        EnqueueOptions::new().dedupe_key("d"),
    )
    .await
    .unwrap();
    let handle = worker(&env).build().await.unwrap().spawn();
    for id in [many[0], unique.id, deduped] {
        env.wait_state(id, JobState::Completed).await;
        let (follow_up, _) = the_follow_up(&env, id).await;
        env.wait_state(follow_up, JobState::Completed).await;
    }
    env.wait_state(many[1], JobState::Failed).await;
    the_follow_up(&env, many[1]).await;

    // first → second (with first's output) → notify (with second's).
    env.wait_state(chained, JobState::Completed).await;
    let rows = follow_ups(&mut conn, chained).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (rows[0].task.as_str(), rows[0].queue.as_str()),
        ("second", "callbacks")
    );
    let of_first: Finished = serde_json::from_str(&rows[0].payload).unwrap();
    assert_eq!(of_first.output_as::<u32>().unwrap(), Some(7));
    let second_id = JobId::from(rows[0].id);
    env.wait_state(second_id, JobState::Completed).await;
    let (last, of_second) = the_follow_up(&env, second_id).await;
    assert_eq!(of_second.task, "second");
    assert_eq!(
        of_second.output_as::<String>().unwrap(),
        Some(format!("saw {chained}"))
    );
    env.wait_state(last, JobState::Completed).await;
    handle.shutdown().await.unwrap();
    // Five jobs enqueued, six follow-ups (two in the chain, one for each
    // of the four others); nothing follows `notify`.
    assert_eq!(total_jobs(&env).await, 5 + 6);
}

#[tokio::test]
async fn the_largest_output_reaches_the_follow_up_intact() {
    let env = support::env().await;
    let mut conn = env.conn().await;
    let id = big::enqueue(&mut conn, &order("ok")).await.unwrap();
    let handle = worker(&env).build().await.unwrap().spawn();
    let info = env.wait_state(id, JobState::Completed).await;
    let stored = serde_json::to_string(&info.output).unwrap();
    assert!(
        stored.len() > jobq::MAX_OUTPUT_SIZE - 64,
        "{}",
        stored.len()
    );
    assert!(stored.len() <= jobq::MAX_OUTPUT_SIZE);
    let rows = follow_ups(&mut conn, id).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].task, "measure");
    let finished: Finished = serde_json::from_str(&rows[0].payload).unwrap();
    assert_eq!(finished.output, info.output);
    // The payload is the output and a few hundred bytes of fields: within
    // the output limit plus 1 KiB, whatever the output. No check on the
    // claim path limits a payload's size, and the follow-up runs like any
    // job.
    assert!(
        rows[0].payload.len() < jobq::MAX_OUTPUT_SIZE + 1024,
        "{}",
        rows[0].payload.len()
    );
    let measured = env
        .wait_state(JobId::from(rows[0].id), JobState::Completed)
        .await;
    assert_eq!(
        measured.output,
        Some(serde_json::json!((jobq::MAX_OUTPUT_SIZE - 16) / 2 * 2))
    );
    handle.shutdown().await.unwrap();
}

#[tokio::test]
async fn raw_sql_terminal_states_are_followed_and_bad_follow_ups_are_refused() {
    let env = support::env().await;
    let mut conn = env.conn().await;
    let id = charge::enqueue_with(
        &mut conn,
        &order("ok"),
        EnqueueOptions::new().delay(Duration::from_secs(3600)),
    )
    .await
    .unwrap();
    conn.batch_execute(&format!(
        "UPDATE jobq.jobs SET state = 'completed', finished_at = now(), \
             output = '{{\"number\": \"by hand\"}}' WHERE id = {id}"
    ))
    .await
    .unwrap();
    let (_, finished) = the_follow_up(&env, id).await;
    assert_eq!(finished.state, JobState::Completed);
    assert_eq!(
        finished.output_as::<Receipt>().unwrap(),
        Some(Receipt {
            number: "by hand".into()
        })
    );
    // Any other update of the finished row enqueues nothing more.
    conn.batch_execute(&format!(
        "UPDATE jobq.jobs SET state = 'completed', priority = 5 WHERE id = {id}"
    ))
    .await
    .unwrap();
    assert_eq!(follow_ups(&mut conn, id).await.len(), 1);

    // A follow-up the trigger could not insert is refused when written,
    // so it can never fail the statement that finishes the job (an
    // outcome batch of other jobs).
    let long = "x".repeat(201);
    for bad in [
        "'[]'".to_owned(),
        "'{\"queue\": \"q\", \"priority\": 0, \"max_attempts\": 1}'".to_owned(),
        "'{\"task\": \"\", \"queue\": \"q\", \"priority\": 0, \"max_attempts\": 1}'".to_owned(),
        format!(
            "'{{\"task\": \"{long}\", \"queue\": \"q\", \"priority\": 0, \"max_attempts\": 1}}'"
        ),
        "'{\"task\": \"t\", \"queue\": \"q\", \"priority\": 40000, \"max_attempts\": 1}'"
            .to_owned(),
        "'{\"task\": \"t\", \"queue\": \"q\", \"priority\": 1.5, \"max_attempts\": 1}'".to_owned(),
        "'{\"task\": \"t\", \"queue\": \"q\", \"priority\": 0, \"max_attempts\": 0}'".to_owned(),
        "'{\"task\": \"t\", \"queue\": \"q\", \"priority\": 0, \"max_attempts\": \"1\"}'"
            .to_owned(),
        "'{\"task\": \"t\", \"queue\": \"q\", \"priority\": 0, \"max_attempts\": 1, \"then\": 5}'"
            .to_owned(),
        "'{\"task\": \"t\", \"queue\": \"q\", \"priority\": 0, \"max_attempts\": 1, \
            \"then\": {\"task\": \"u\"}}'"
            .to_owned(),
    ] {
        let error = conn
            .batch_execute(&format!(
                "INSERT INTO jobq.jobs (task, payload, follow_up) VALUES ('t', '{{}}', {bad})"
            ))
            .await
            .expect_err(&bad)
            .to_string();
        assert!(error.contains("jobs_follow_up_check"), "{bad}: {error}");
    }
    // Hostile but valid names are data: the follow-up job carries them.
    let odd = "ταυ'; DROP TABLE x; --\u{1F600}";
    let follow_up = serde_json::json!({
        "task": odd, "queue": odd, "priority": -32768, "max_attempts": 2147483647,
        "then": null
    });
    let row: FollowUpRow = diesel::sql_query(
        "INSERT INTO jobq.jobs (task, payload, follow_up) VALUES ('t', '{}', $1::jsonb) \
         RETURNING id, task, queue, priority, max_attempts, payload::text AS payload",
    )
    .bind::<Text, _>(follow_up.to_string())
    .get_result(&mut conn)
    .await
    .unwrap();
    assert!(jobq::cancel(&mut conn, JobId::from(row.id)).await.unwrap());
    let rows = follow_ups(&mut conn, JobId::from(row.id)).await;
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].task.as_str(), rows[0].queue.as_str()), (odd, odd));
    assert_eq!(
        (rows[0].priority, rows[0].max_attempts),
        (i16::MIN, i32::MAX)
    );
}
