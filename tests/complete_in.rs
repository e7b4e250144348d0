//! `Context::complete_in`: a handler commits its own writes and its job's
//! completion in one transaction. A superseded attempt (its job rescued and
//! run again) is refused and rolls back; a cancelled job is refused too; a
//! transaction that rolls back after completing leaves the worker to record
//! the handler's result as usual; and the worker's own outcome for an
//! attempt that completed in its transaction changes nothing and says
//! nothing.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use diesel::sql_types::{BigInt, Integer};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use jobq::{Context, EnqueueOptions, JobId, JobState, Pool, State, TaskError};
use serde::{Deserialize, Serialize};
use support::{logs, wait_until};
use tokio::sync::Notify;

/// Every test of this binary captures the logs with the same filter (the
/// first subscriber wins).
const LOG_FILTER: &str = "warn,jobq=info";

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Booking {
    /// What the handler does; see [`book`].
    mode: String,
    /// Names the job in this process's maps: job ids repeat across the
    /// tests' databases.
    tag: String,
}

/// How each attempt's `complete_in` ended, by (job tag, attempt).
static RESULTS: LazyLock<Mutex<HashMap<(String, u32), String>>> = LazyLock::new(Default::default);

/// Gates that hold a job's first attempt before its transaction, by tag.
static GATES: LazyLock<Mutex<HashMap<String, Arc<Notify>>>> = LazyLock::new(Default::default);

fn gate(tag: &str) -> Arc<Notify> {
    GATES
        .lock()
        .unwrap()
        .entry(tag.to_owned())
        .or_insert_with(|| Arc::new(Notify::new()))
        .clone()
}

fn result_of(tag: &str, attempt: u32) -> Option<String> {
    RESULTS
        .lock()
        .unwrap()
        .get(&(tag.to_owned(), attempt))
        .cloned()
}

fn record(tag: &str, attempt: u32, result: String) {
    RESULTS
        .lock()
        .unwrap()
        .insert((tag.to_owned(), attempt), result);
}

fn booking(mode: &str, tag: &str) -> Booking {
    Booking {
        mode: mode.into(),
        tag: tag.into(),
    }
}

/// The application's write: one effect row, in the handler's transaction.
async fn effect(conn: &mut AsyncPgConnection, ctx: &Context) -> Result<(), diesel::result::Error> {
    diesel::sql_query("INSERT INTO effects (job_id, attempt) VALUES ($1, $2)")
        .bind::<BigInt, _>(ctx.job_id().get())
        .bind::<Integer, _>(i32::try_from(ctx.attempt()).unwrap_or(i32::MAX))
        .execute(conn)
        .await
        .map(drop)
}

/// Writes an effect row and completes the job in one transaction. Modes:
/// `ok`; `gate` (the first attempt waits at its gate first); `rollback`
/// (the first attempt's transaction fails after completing); `fail_after`
/// (the first attempt fails after its transaction committed).
#[jobq::task(name = "complete_in.book", retry = "10ms", max_attempts = 5)]
async fn book(ctx: Context, State(pool): State<Pool>, job: Booking) -> Result<(), TaskError> {
    let first = ctx.attempt() == 1;
    if job.mode == "gate" && first {
        let gate = gate(&job.tag);
        record(&job.tag, 1, "waiting".into());
        gate.notified().await;
    }
    let mut conn = pool.get().await?;
    let result = conn
        .transaction::<_, TaskError, _>(async |conn| {
            effect(conn, &ctx).await?;
            let completed = ctx.complete_in(conn).await;
            record(
                &job.tag,
                ctx.attempt(),
                match &completed {
                    Ok(()) => "completed".to_owned(),
                    Err(jobq::Error::Superseded { .. }) => "superseded".to_owned(),
                    Err(jobq::Error::CancelRequested { .. }) => "cancel requested".to_owned(),
                    Err(e) => format!("other error: {e}"),
                },
            );
            completed?;
            if job.mode == "rollback" && first {
                return Err(TaskError::msg("boom after complete_in"));
            }
            Ok(())
        })
        .await;
    result?;
    if job.mode == "fail_after" && first {
        return Err(TaskError::msg("failed after the commit"));
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Price {
    cents: i64,
    ratio: f64,
}

/// A task with an output. Modes: `ok` (completes with the output, then
/// returns another one), `unit` (completes with `complete_in`), `wrong`
/// (gives an output of another type), `nan` (an output JSON cannot hold).
#[jobq::task(name = "complete_in.quote", max_attempts = 3)]
async fn quote(ctx: Context, State(pool): State<Pool>, job: Booking) -> Result<Price, TaskError> {
    let price = Price {
        cents: 1250,
        ratio: if job.mode == "nan" { f64::NAN } else { 0.5 },
    };
    let mut conn = pool.get().await?;
    conn.transaction::<_, TaskError, _>(async |conn| {
        effect(conn, &ctx).await?;
        match job.mode.as_str() {
            "unit" => ctx.complete_in(conn).await?,
            "wrong" => ctx.complete_in_with(conn, &"1250 cents").await?,
            _ => ctx.complete_in_with(conn, &price).await?,
        }
        Ok(())
    })
    .await?;
    // Not stored: the completion that committed carried the output.
    Ok(Price {
        cents: -1,
        ratio: 0.0,
    })
}

async fn setup() -> support::Env {
    logs::capture(LOG_FILTER);
    let env = support::env().await;
    env.conn()
        .await
        .batch_execute(
            // No unique constraint: a duplicate effect must show as a
            // second row, not as an error that hides it.
            "CREATE TABLE effects (job_id bigint NOT NULL, attempt int NOT NULL)",
        )
        .await
        .expect("effects table");
    env
}

fn worker(env: &support::Env) -> jobq::WorkerBuilder {
    env.worker().state(env.pool.clone())
}

async fn enqueue(env: &support::Env, mode: &str, tag: &str) -> JobId {
    let mut conn = env.conn().await;
    book::enqueue(&mut conn, &booking(mode, tag)).await.unwrap()
}

/// The attempts (as handlers count them) that left an effect row for `job`.
async fn effects(env: &support::Env, job: JobId) -> Vec<i32> {
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = Integer)]
        attempt: i32,
    }
    let mut conn = env.conn().await;
    let rows: Vec<Row> =
        diesel::sql_query("SELECT attempt FROM effects WHERE job_id = $1 ORDER BY attempt")
            .bind::<BigInt, _>(job.get())
            .load(&mut conn)
            .await
            .unwrap();
    rows.into_iter().map(|r| r.attempt).collect()
}

/// Log lines about job `job` that contain `text`.
fn logged(job: JobId, text: &str) -> Vec<String> {
    logs::lines(&[text, &format!("job.id={job} ")])
}

#[tokio::test]
async fn effects_and_completion_commit_together_and_the_worker_adds_nothing() {
    let env = setup().await;
    let mut ids = Vec::new();
    for n in 0..20 {
        ids.push((
            enqueue(&env, "ok", &format!("ok-{n}")).await,
            format!("ok-{n}"),
        ));
    }
    let handle = worker(&env).build().await.unwrap().spawn();
    for (id, _) in &ids {
        let info = env.wait_state(*id, JobState::Completed).await;
        assert_eq!(info.attempt, 1);
        assert!(info.errors.is_empty(), "{:?}", info.errors);
        assert!(info.finished_at.is_some());
        assert_eq!(info.output, None);
    }
    // The claims' rows go once the worker's outcomes settle them.
    wait_until("the claims to be settled", async || {
        env.count("SELECT count(*) AS n FROM jobq.claims").await == 0
    })
    .await;
    handle.shutdown().await.unwrap();
    for (id, tag) in &ids {
        assert_eq!(effects(&env, *id).await, [1], "job {id}");
        assert_eq!(result_of(tag, 1).as_deref(), Some("completed"));
        // The worker's own outcome found nothing to write, and is not
        // taken for a rescued attempt's.
        assert!(
            logged(*id, "outcome discarded").is_empty(),
            "{}",
            logs::all()
        );
    }
    assert_eq!(
        env.count(
            "SELECT count(*) AS n FROM jobq.jobs \
             WHERE state = 'completed' AND worker_id IS NULL AND finished_at IS NOT NULL"
        )
        .await,
        20,
        "the same row as the completer's"
    );
}

#[tokio::test]
async fn a_superseded_attempt_is_refused_and_its_transaction_rolls_back() {
    let env = setup().await;
    let tag = "superseded";
    let id = enqueue(&env, "gate", tag).await;
    let handle = worker(&env).build().await.unwrap().spawn();
    wait_until("the first attempt to wait at its gate", async || {
        result_of(tag, 1).is_some()
    })
    .await;
    // What a rescue does to a job whose worker was presumed dead: back to
    // the queue, where this worker claims it again as attempt 2.
    env.conn()
        .await
        .batch_execute(&format!(
            "UPDATE jobq.jobs SET state = 'pending', worker_id = NULL, run_at = now() \
             WHERE id = {id}"
        ))
        .await
        .unwrap();
    let info = env.wait_state(id, JobState::Completed).await;
    assert_eq!(info.attempt, 2);
    assert_eq!(result_of(tag, 2).as_deref(), Some("completed"));
    // The first attempt goes on, late, and is refused.
    gate(tag).notify_one();
    wait_until("the first attempt's complete_in", async || {
        result_of(tag, 1).as_deref() != Some("waiting")
    })
    .await;
    assert_eq!(result_of(tag, 1).as_deref(), Some("superseded"));
    handle.shutdown().await.unwrap();
    assert_eq!(
        effects(&env, id).await,
        [2],
        "only the live attempt's effect"
    );
    let info = env.job(id).await;
    assert_eq!(info.state, JobState::Completed);
    assert_eq!(info.attempt, 2);
}

#[tokio::test]
async fn a_cancelled_job_refuses_completion_and_applies_no_effect() {
    let env = setup().await;
    let tag = "cancelled";
    let id = enqueue(&env, "gate", tag).await;
    let handle = worker(&env).build().await.unwrap().spawn();
    wait_until("the first attempt to wait at its gate", async || {
        result_of(tag, 1).is_some()
    })
    .await;
    jobq::cancel(&mut *env.conn().await, id).await.unwrap();
    gate(tag).notify_one();
    let info = env.wait_state(id, JobState::Cancelled).await;
    handle.shutdown().await.unwrap();
    assert_eq!(result_of(tag, 1).as_deref(), Some("cancel requested"));
    assert_eq!(info.attempt, 1);
    assert!(effects(&env, id).await.is_empty());
}

#[tokio::test]
async fn a_rolled_back_completion_leaves_the_handlers_error_to_be_retried() {
    let env = setup().await;
    let id = enqueue(&env, "rollback", "rollback").await;
    let handle = worker(&env).build().await.unwrap().spawn();
    let info = env.wait_state(id, JobState::Completed).await;
    handle.shutdown().await.unwrap();
    assert_eq!(result_of("rollback", 1).as_deref(), Some("completed"));
    assert_eq!(info.attempt, 2, "retried after the rollback");
    assert_eq!(info.errors.len(), 1, "{:?}", info.errors);
    assert_eq!(info.errors[0].attempt, 1);
    assert!(
        info.errors[0].message.contains("boom after complete_in"),
        "{:?}",
        info.errors
    );
    assert_eq!(
        effects(&env, id).await,
        [2],
        "the rolled-back effect is gone"
    );
}

#[tokio::test]
async fn a_failure_after_the_commit_leaves_the_job_completed() {
    let env = setup().await;
    let id = enqueue(&env, "fail_after", "fail_after").await;
    let handle = worker(&env).build().await.unwrap().spawn();
    env.wait_state(id, JobState::Completed).await;
    wait_until("the worker's note about the late failure", async || {
        !logged(id, "the handler failed after its job was completed").is_empty()
    })
    .await;
    handle.shutdown().await.unwrap();
    let info = env.job(id).await;
    assert_eq!(info.state, JobState::Completed);
    assert_eq!(info.attempt, 1, "not retried");
    assert!(info.errors.is_empty(), "{:?}", info.errors);
    assert_eq!(effects(&env, id).await, [1]);
    assert!(
        logged(id, "outcome discarded").is_empty(),
        "{}",
        logs::all()
    );
}

#[tokio::test]
async fn an_output_is_stored_by_the_completion_that_committed() {
    let env = setup().await;
    let mut conn = env.conn().await;
    let id = quote::enqueue(&mut conn, &booking("ok", "quote"))
        .await
        .unwrap();
    let handle = worker(&env).build().await.unwrap().spawn();
    env.wait_state(id, JobState::Completed).await;
    // Settled with the worker's outcome, which found nothing to write.
    wait_until("the claim to be settled", async || {
        env.count("SELECT count(*) AS n FROM jobq.claims").await == 0
    })
    .await;
    handle.shutdown().await.unwrap();
    assert!(
        logged(id, "outcome discarded").is_empty(),
        "{}",
        logs::all()
    );
    assert_eq!(
        quote::output(&mut conn, id).await.unwrap(),
        Some(Price {
            cents: 1250,
            ratio: 0.5
        })
    );
    assert_eq!(effects(&env, id).await, [1]);
}

#[tokio::test]
async fn an_output_of_the_wrong_type_or_unstorable_fails_the_job_without_effects() {
    let env = setup().await;
    let mut conn = env.conn().await;
    let mut jobs = Vec::new();
    for (mode, expected) in [
        (
            "unit",
            "the task returns complete_in::Price: give it to complete_in_with",
        ),
        (
            "wrong",
            "the task returns complete_in::Price, not the &str given to complete_in_with",
        ),
        ("nan", "$.ratio is NaN"),
    ] {
        let id = quote::enqueue(&mut conn, &booking(mode, mode))
            .await
            .unwrap();
        jobs.push((id, expected));
    }
    let handle = worker(&env).build().await.unwrap().spawn();
    for (id, expected) in jobs {
        let info = env.wait_state(id, JobState::Failed).await;
        assert_eq!(info.attempt, 1, "no retry can fix it");
        let message = &info.errors[0].message;
        assert!(message.contains("invalid output"), "{message}");
        assert!(message.contains(expected), "{message}");
        assert!(effects(&env, id).await.is_empty());
    }
    handle.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_unique_key_held_past_the_end_stays_held() {
    let env = setup().await;
    let mut conn = env.conn().await;
    let payload = booking("ok", "unique");
    let held = EnqueueOptions::new()
        .unique_key("held")
        .unique_for(Duration::from_secs(3600));
    let active = EnqueueOptions::new().unique_key("active");
    let first = book::enqueue_unique(&mut conn, &payload, held.clone())
        .await
        .unwrap();
    let second = book::enqueue_unique(&mut conn, &payload, active.clone())
        .await
        .unwrap();
    let handle = worker(&env).build().await.unwrap().spawn();
    env.wait_state(first.id, JobState::Completed).await;
    env.wait_state(second.id, JobState::Completed).await;
    handle.shutdown().await.unwrap();
    let again = book::enqueue_unique(&mut conn, &payload, held)
        .await
        .unwrap();
    assert_eq!((again.id, again.created), (first.id, false));
    let again = book::enqueue_unique(&mut conn, &payload, active)
        .await
        .unwrap();
    assert!(again.created, "an active-only key is free once completed");
    assert_ne!(again.id, second.id);
}

#[cfg(feature = "testing")]
#[tokio::test]
async fn run_inline_checks_the_output_and_writes_no_job_row() {
    let env = setup().await;
    let context = jobq::testing::TestContext::new()
        .job_id(JobId::from(77))
        .state(env.pool.clone());
    let price = jobq::testing::run_inline_with::<quote>(&booking("ok", "quote"), context)
        .await
        .unwrap();
    assert_eq!(price.cents, -1);
    assert_eq!(effects(&env, JobId::from(77)).await, [1]);
    let context = jobq::testing::TestContext::new().state(env.pool.clone());
    let error = jobq::testing::run_inline_with::<quote>(&booking("nan", "inline"), context)
        .await
        .unwrap_err();
    assert!(error.is_permanent());
    assert!(error.to_string().contains("is NaN"), "{error}");
}
