//! Hostile data from handlers: error and panic messages of any content and
//! size, payload types whose decoding panics, errors whose `Display`
//! panics, and outcomes the database refuses. Each fails (or records) one
//! job; the worker keeps writing every other outcome.

mod support;

use std::time::Duration;

use jobq::{JobState, TaskError};
use serde::{Deserialize, Deserializer, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Say {
    message: String,
}

/// Fails with exactly the message it was given (retried once).
#[jobq::task(name = "hostile.fail_with", max_attempts = 1)]
async fn fail_with(job: Say) -> Result<(), TaskError> {
    Err(TaskError::msg(job.message))
}

/// Panics with exactly the message it was given.
#[jobq::task(name = "hostile.panic_with", max_attempts = 1)]
async fn panic_with(job: Say) -> Result<(), TaskError> {
    std::panic::panic_any(job.message)
}

#[jobq::task(name = "hostile.fine", concurrency = 4)]
async fn fine(job: Say) -> Result<(), TaskError> {
    let _ = job;
    Ok(())
}

/// Enqueues `n` jobs of `fine` and waits for all of them to complete.
async fn fine_jobs_complete(env: &support::Env, n: usize) {
    let mut conn = env.conn().await;
    let payloads: Vec<Say> = (0..n)
        .map(|i| Say {
            message: format!("fine {i}"),
        })
        .collect();
    let ids = fine::enqueue_many(&mut conn, &payloads).await.unwrap();
    drop(conn);
    for id in ids {
        env.wait_state(id, JobState::Completed).await;
    }
}

/// Messages of every class a handler can produce.
fn hostile_messages() -> Vec<(&'static str, String)> {
    vec![
        ("nul alone", "\0".into()),
        ("nul at start", "\0file".into()),
        ("nul in a path", "cannot open /tmp/a\0b.txt".into()),
        ("nul at end", "body ends\0".into()),
        ("many nuls", "\0\0x\0\0".into()),
        (
            "control characters",
            (1u8..32).map(char::from).collect::<String>(),
        ),
        (
            "json-looking text",
            r#"{"k": "\u0000", "m": null} \" \\ '); DROP TABLE jobq.jobs; --"#.into(),
        ),
        ("unicode", "日本語 🚀 \u{202e}reversed \u{feff}bom".into()),
        ("empty", String::new()),
        ("huge", "h".repeat(600_000)),
        ("huge with nuls", "\0n".repeat(100_000)),
    ]
}

fn expected_prefix(message: &str) -> String {
    message
        .replace('\0', "\u{FFFD}")
        .chars()
        .take(1000)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_error_or_panic_message_fails_one_job_and_never_the_worker() {
    let env = support::env().await;
    let handle = env.worker().build().await.unwrap().spawn();
    let cases = hostile_messages();
    let mut jobs = Vec::new();
    {
        let mut conn = env.conn().await;
        for (class, message) in &cases {
            // A payload cannot carry U+0000 into `jsonb`; `nul_error` below
            // turns the marker back into the real character.
            let say = Say {
                message: message.replace('\0', "<NUL>"),
            };
            jobs.push((
                *class,
                message.clone(),
                fail_with::enqueue(&mut conn, &say).await.unwrap(),
                panic_with::enqueue(&mut conn, &say).await.unwrap(),
            ));
        }
    }
    fine_jobs_complete(&env, 20).await;
    for (class, message, failed_id, panicked_id) in &jobs {
        let message = message.replace('\0', "<NUL>");
        for (id, prefix) in [(failed_id, ""), (panicked_id, "attempt panicked: ")] {
            let info = env.wait_state(*id, JobState::Failed).await;
            assert_eq!(info.errors.len(), 1, "{class}: {info:#?}");
            let stored = &info.errors[0].message;
            assert!(
                stored.starts_with(&format!("{prefix}{}", expected_prefix(&message))),
                "{class}: stored {:?}",
                &stored[..stored.len().min(200)]
            );
            assert!(
                stored.len() <= 8 * 1024 + 200,
                "{class}: {} bytes",
                stored.len()
            );
            if message.len() + prefix.len() > 8 * 1024 {
                assert!(stored.contains("more bytes cut"), "{class}");
            } else {
                assert_eq!(stored, &format!("{prefix}{message}"), "{class}");
            }
        }
    }
    handle.shutdown().await.unwrap();
}

/// Fails with a message built in the handler, so that the real U+0000
/// reaches the outcome (a payload cannot carry one into `jsonb`).
#[jobq::task(name = "hostile.nul_error", max_attempts = 2, retry = "10ms")]
async fn nul_error(ctx: jobq::Context, job: Say) -> Result<(), TaskError> {
    let message = job.message.replace("<NUL>", "\0");
    if ctx.attempt() == 1 {
        Err(TaskError::msg(message))
    } else {
        std::panic::panic_any(message)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_nul_characters_in_errors_and_panics_are_replaced_and_the_worker_goes_on() {
    let env = support::env().await;
    let handle = env.worker().build().await.unwrap().spawn();
    let mut ids = Vec::new();
    {
        let mut conn = env.conn().await;
        for (_, message) in hostile_messages() {
            let say = Say {
                message: message.replace('\0', "<NUL>"),
            };
            ids.push((message, nul_error::enqueue(&mut conn, &say).await.unwrap()));
        }
    }
    // Outcomes of the same worker keep being written after the bad ones.
    fine_jobs_complete(&env, 20).await;
    for (message, id) in ids {
        let info = env.wait_state(id, JobState::Failed).await;
        assert_eq!(info.errors.len(), 2, "{info:#?}");
        let first = &info.errors[0].message;
        let second = &info.errors[1].message;
        assert!(!first.contains('\0') && !second.contains('\0'));
        assert!(first.starts_with(&expected_prefix(&message)), "{first:?}");
        assert!(
            second.starts_with(&format!("attempt panicked: {}", expected_prefix(&message))),
            "{second:?}"
        );
    }
    handle.shutdown().await.unwrap();
}

/// A payload type whose decoding panics (a custom `Deserialize`).
#[derive(Debug, Clone, Serialize)]
struct Exploding {
    boom: bool,
}

impl<'de> Deserialize<'de> for Exploding {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Raw {
            boom: bool,
        }
        let raw = Raw::deserialize(d)?;
        assert!(!raw.boom, "decoding exploded on purpose");
        Ok(Exploding { boom: raw.boom })
    }
}

#[jobq::task(name = "hostile.exploding")]
async fn exploding(job: Exploding) -> Result<(), TaskError> {
    let _ = job;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_whose_decoding_panics_fails_its_job_at_once() {
    let env = support::env().await;
    let handle = env.worker().build().await.unwrap().spawn();
    let (bad, good) = {
        let mut conn = env.conn().await;
        (
            exploding::enqueue(&mut conn, &Exploding { boom: true })
                .await
                .unwrap(),
            exploding::enqueue(&mut conn, &Exploding { boom: false })
                .await
                .unwrap(),
        )
    };
    let info = env.wait_state(bad, JobState::Failed).await;
    assert_eq!(info.attempt, 1, "a panicking decode is not retried");
    let message = &info.errors[0].message;
    assert!(
        message.contains("hostile.exploding")
            && message.contains("decoding the payload panicked")
            && message.contains("decoding exploded on purpose"),
        "{message}"
    );
    env.wait_state(good, JobState::Completed).await;
    fine_jobs_complete(&env, 10).await;
    handle.shutdown().await.unwrap();
}

/// An error whose `Display` panics.
#[derive(Debug)]
struct Unprintable;

impl std::fmt::Display for Unprintable {
    fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        panic!("display exploded")
    }
}

impl std::error::Error for Unprintable {}

#[jobq::task(name = "hostile.unprintable", max_attempts = 1)]
async fn unprintable(job: Say) -> Result<(), TaskError> {
    let _ = job;
    Err(Unprintable)?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_whose_display_panics_is_recorded_as_such() {
    let env = support::env().await;
    let handle = env.worker().build().await.unwrap().spawn();
    let id = {
        let mut conn = env.conn().await;
        unprintable::enqueue(
            &mut conn,
            &Say {
                message: "x".into(),
            },
        )
        .await
        .unwrap()
    };
    let info = env.wait_state(id, JobState::Failed).await;
    assert!(
        info.errors[0]
            .message
            .contains("formatting the error panicked: display exploded"),
        "{:?}",
        info.errors[0]
    );
    fine_jobs_complete(&env, 10).await;
    handle.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outcome_the_database_refuses_is_isolated_and_the_rest_of_its_batch_is_written() {
    let env = support::env().await;
    // A rule of the application's (here a trigger) refuses to record any
    // error history on one job: its outcomes cannot be written as they are.
    let refused = {
        let mut conn = env.conn().await;
        fail_with::enqueue(
            &mut conn,
            &Say {
                message: "refused".into(),
            },
        )
        .await
        .unwrap()
    };
    {
        use diesel_async::SimpleAsyncConnection;
        let mut conn = env.conn().await;
        conn.batch_execute(&format!(
            "CREATE FUNCTION public.refuse_history() RETURNS trigger LANGUAGE plpgsql AS $$ \
             BEGIN \
                 IF NEW.id = {refused} AND NEW.errors <> '[]' THEN \
                     RAISE EXCEPTION 'job {refused} may not record errors'; \
                 END IF; \
                 RETURN NEW; \
             END $$; \
             CREATE TRIGGER refuse_history BEFORE INSERT OR UPDATE ON jobq.jobs \
                 FOR EACH ROW EXECUTE FUNCTION public.refuse_history();"
        ))
        .await
        .unwrap();
    }
    let handle = env.worker().build().await.unwrap().spawn();
    fine_jobs_complete(&env, 50).await;
    // What could be recorded was: the job ended, without the history the
    // database refused.
    let info = env.wait_state(refused, JobState::Failed).await;
    assert!(info.errors.is_empty(), "{info:#?}");
    fine_jobs_complete(&env, 20).await;
    handle.shutdown().await.unwrap();
}

/// A row trigger's condition (SQL) for a job leaving `running`: updated
/// out of it (back to the queue), or ended (a worker finishes a job by
/// inserting its row into the finished partition).
const LEAVES_RUNNING: &str = "(OLD.state = 'running' AND NEW.state <> 'running') \
    OR (TG_OP = 'INSERT' AND NEW.state IN ('completed', 'failed', 'cancelled'))";

/// What `fine` needs in all: the fetcher stops claiming at the outcome
/// backlog's bound, which is at least the outcome batch (1,000).
const BACKLOG_BOUND: i64 = 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_outcomes_cannot_be_written_the_worker_stops_claiming() {
    use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
    let env = support::env().await;
    // Every outcome write waits for an advisory lock this test holds: the
    // database is up and claims work, but no outcome can be written.
    let mut holder = AsyncPgConnection::establish(env.db.url()).await.unwrap();
    holder
        .batch_execute(&format!(
            "CREATE FUNCTION public.hold_outcomes() RETURNS trigger LANGUAGE plpgsql AS $$ \
             BEGIN \
                 IF {LEAVES_RUNNING} THEN \
                     PERFORM pg_advisory_xact_lock(4242); \
                 END IF; \
                 RETURN NEW; \
             END $$; \
             CREATE TRIGGER hold_outcomes BEFORE INSERT OR UPDATE ON jobq.jobs \
                 FOR EACH ROW EXECUTE FUNCTION public.hold_outcomes(); \
             SELECT pg_advisory_lock(4242);"
        ))
        .await
        .unwrap();
    let n = 3 * BACKLOG_BOUND as usize;
    let ids = {
        let mut conn = env.conn().await;
        let payloads: Vec<Say> = (0..n)
            .map(|i| Say {
                message: format!("held {i}"),
            })
            .collect();
        fine::enqueue_many(&mut conn, &payloads).await.unwrap()
    };
    let handle = env.worker().build().await.unwrap().spawn();
    let running = "SELECT count(*) AS n FROM jobq.jobs WHERE state = 'running'";
    support::wait_until("the backlog to reach its bound", || async {
        env.count(running).await >= BACKLOG_BOUND
    })
    .await;
    // Several poll intervals and freed slots later, the worker still has
    // not claimed past the bound (plus what its slots held at that point).
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = env.count(running).await;
        assert!(
            now <= BACKLOG_BOUND + 100,
            "{now} jobs claimed while no outcome could be written"
        );
    }
    holder
        .batch_execute("SELECT pg_advisory_unlock(4242)")
        .await
        .unwrap();
    for id in ids {
        env.wait_state(id, JobState::Completed).await;
    }
    handle.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outcome_refused_in_every_form_waits_aside_and_is_written_once_accepted() {
    use diesel_async::SimpleAsyncConnection;
    let env = support::env().await;
    let gated = {
        let mut conn = env.conn().await;
        fine::enqueue(
            &mut conn,
            &Say {
                message: "gated".into(),
            },
        )
        .await
        .unwrap()
    };
    // While the gate stands, the database refuses to end that job at all.
    env.conn()
        .await
        .batch_execute(&format!(
            "CREATE TABLE public.gate (closed bool); INSERT INTO public.gate VALUES (true); \
             CREATE FUNCTION public.gatekeeper() RETURNS trigger LANGUAGE plpgsql AS $$ \
             BEGIN \
                 IF NEW.id = {gated} AND ({LEAVES_RUNNING}) AND EXISTS (SELECT 1 FROM public.gate) THEN \
                     RAISE EXCEPTION 'the gate is closed'; \
                 END IF; \
                 RETURN NEW; \
             END $$; \
             CREATE TRIGGER gatekeeper BEFORE INSERT OR UPDATE ON jobq.jobs \
                 FOR EACH ROW EXECUTE FUNCTION public.gatekeeper();"
        ))
        .await
        .unwrap();
    let handle = env.worker().build().await.unwrap().spawn();
    env.wait_job(gated, "running", |j| j.state == JobState::Running)
        .await;
    // Everything else goes on meanwhile.
    fine_jobs_complete(&env, 30).await;
    assert_eq!(env.job(gated).await.state, JobState::Running);
    env.conn()
        .await
        .batch_execute("DELETE FROM public.gate")
        .await
        .unwrap();
    let info = env.wait_state(gated, JobState::Completed).await;
    assert_eq!(info.attempt, 1, "written as it was, not run again");
    handle.shutdown().await.unwrap();
}

static ROW_GATE: tokio::sync::Notify = tokio::sync::Notify::const_new();
static ROW_GATE_OPEN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Waits for the test to open its gate, then succeeds.
#[jobq::task(name = "hostile.behind_gate")]
async fn behind_gate(job: Say) -> Result<(), TaskError> {
    let _ = job;
    loop {
        let opened = ROW_GATE.notified();
        if ROW_GATE_OPEN.load(std::sync::atomic::Ordering::SeqCst) {
            return Ok(());
        }
        opened.await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_row_the_application_keeps_locked_delays_only_its_own_outcome() {
    use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
    support::logs::capture("warn,jobq=info");
    let env = support::env().await;
    // jobq's own pool, with a short lock timeout.
    let handle = jobq::Worker::builder()
        .database_url(env.db.url())
        .lock_timeout(Duration::from_millis(300))
        .poll_interval(Duration::from_millis(200))
        .lease(Duration::from_secs(2))
        .heartbeat_interval(Duration::from_millis(200))
        .maintenance_interval(Duration::from_millis(200))
        .build()
        .await
        .unwrap()
        .spawn();
    let held = {
        let mut conn = env.conn().await;
        behind_gate::enqueue(
            &mut conn,
            &Say {
                message: "held".into(),
            },
        )
        .await
        .unwrap()
    };
    env.wait_job(held, "running", |j| j.state == JobState::Running)
        .await;
    // The application locks the running job's row in a transaction of its
    // own (as a `jobq::cancel` inside a long transaction would).
    let mut app = AsyncPgConnection::establish(env.db.url()).await.unwrap();
    app.batch_execute(&format!(
        "BEGIN; SELECT 1 FROM jobq.jobs WHERE id = {held} FOR UPDATE"
    ))
    .await
    .unwrap();
    ROW_GATE_OPEN.store(true, std::sync::atomic::Ordering::SeqCst);
    ROW_GATE.notify_waiters();
    // Its outcome waits; everyone else's goes through meanwhile.
    fine_jobs_complete(&env, 30).await;
    assert_eq!(env.job(held).await.state, JobState::Running);
    app.batch_execute("COMMIT").await.unwrap();
    let info = env.wait_state(held, JobState::Completed).await;
    assert_eq!(info.attempt, 1);
    assert!(info.errors.is_empty(), "{info:#?}");
    handle.shutdown().await.unwrap();
    // A lock is nobody's refusal, and one held for less than the long-lock
    // threshold is not worth a warning: the outcome was parked (its write
    // timed out while the other jobs went through) without a word above
    // debug.
    // (Only this test locks a row, so the words are its own.)
    let about_held = support::logs::lines(&[&format!("job.id={held} "), "row locked"]);
    assert!(about_held.is_empty(), "{about_held:#?}");
}
