//! The `testing` feature, used as an application's tests would: enqueue,
//! drain, assert; run a handler inline; the assertion's failure message.

use std::sync::Mutex;
use std::time::Duration;

use diesel_async::{AsyncConnection, AsyncPgConnection};
use futures_util::FutureExt;
use jobq::testing::{
    assert_enqueued, drain, enqueued, run_inline, run_inline_with, Drain, TestContext, TestDatabase,
};
use jobq::{EnqueueOptions, JobId, JobState, TaskError};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Signup {
    user_id: i64,
    email: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Welcome {
    user_id: i64,
}

/// Enqueues the follow-up job in its own step, as application code would.
#[jobq::task(queue = "kit")]
async fn register(ctx: jobq::Context, job: Signup) -> Result<String, TaskError> {
    if job.email.is_empty() {
        return Err(TaskError::permanent(anyhow::anyhow!("no email")));
    }
    let url = ctx
        .state::<Url>()
        .ok_or_else(|| TaskError::msg("no database url"))?
        .0
        .clone();
    let mut conn = AsyncPgConnection::establish(&url)
        .await
        .map_err(TaskError::msg)?;
    kit_welcome::enqueue(
        &mut conn,
        &Welcome {
            user_id: job.user_id,
        },
    )
    .await
    .map_err(TaskError::msg)?;
    Ok(format!("user {} at attempt {}", job.user_id, ctx.attempt()))
}

#[derive(Clone)]
struct Url(String);

/// Users welcomed by `kit_welcome`, by id: tests in this binary run
/// concurrently, so each asserts on its own users, not on a total.
static WELCOMED: Mutex<Vec<i64>> = Mutex::new(Vec::new());

fn times_welcomed(user_id: i64) -> usize {
    let welcomed = WELCOMED.lock().unwrap_or_else(|e| e.into_inner());
    welcomed.iter().filter(|&&u| u == user_id).count()
}

#[jobq::task(queue = "kit")]
async fn kit_welcome(job: Welcome) -> Result<(), TaskError> {
    WELCOMED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(job.user_id);
    Ok(())
}

#[jobq::task(queue = "kit", retry = "1h")]
async fn flaky(job: Welcome) -> Result<(), TaskError> {
    Err(TaskError::msg(format!("user {} is flaky", job.user_id)))
}

#[jobq::task(queue = "kit")]
async fn describe(ctx: jobq::Context, job: Welcome) -> Result<(i64, i64, u32, String), TaskError> {
    Ok((
        job.user_id,
        ctx.job_id().get(),
        ctx.attempt(),
        ctx.queue().to_owned(),
    ))
}

async fn database() -> (TestDatabase, AsyncPgConnection) {
    let db = TestDatabase::create().await.expect("test database");
    let mut conn = AsyncPgConnection::establish(db.url()).await.unwrap();
    jobq::migrate(&mut conn).await.unwrap();
    (db, conn)
}

#[tokio::test]
async fn enqueue_drain_and_assert() {
    let (db, mut conn) = database().await;
    let signup = Signup {
        user_id: 7,
        email: "a@example.com".into(),
    };
    let id = register::enqueue(&mut conn, &signup).await.unwrap();
    let bad = register::enqueue(
        &mut conn,
        &Signup {
            user_id: 8,
            email: String::new(),
        },
    )
    .await
    .unwrap();
    let retried = flaky::enqueue(&mut conn, &Welcome { user_id: 9 })
        .await
        .unwrap();
    // Not due: the drain leaves it alone.
    let later = kit_welcome::enqueue_with(
        &mut conn,
        &Welcome { user_id: 10 },
        EnqueueOptions::new().delay(Duration::from_secs(3600)),
    )
    .await
    .unwrap();
    assert_eq!(
        assert_enqueued::<register>(&mut conn, |s| s.user_id == 7).await,
        signup
    );

    let ran = Drain::new()
        .state(Url(db.url().to_owned()))
        .run(&mut conn)
        .await
        .unwrap();
    // The follow-up job the first handler enqueued ran too, after it.
    let summary: Vec<(JobId, &str, JobState)> = ran
        .iter()
        .map(|d| (d.id, d.task.as_str(), d.state))
        .collect();
    assert_eq!(summary.len(), 4, "{ran:#?}");
    assert!(
        summary.contains(&(id, "register", JobState::Completed)),
        "{ran:#?}"
    );
    assert!(
        summary.contains(&(bad, "register", JobState::Failed)),
        "{ran:#?}"
    );
    assert!(
        summary.contains(&(retried, "flaky", JobState::Scheduled)),
        "a failed attempt waits for its retry: {ran:#?}"
    );
    let welcome = ran.iter().position(|d| d.task == "kit_welcome").unwrap();
    let registered = ran.iter().position(|d| d.id == id).unwrap();
    assert!(welcome > registered, "{ran:#?}");
    assert!(ran.iter().all(|d| d.id != later));
    assert_eq!(times_welcomed(7), 1);
    assert_eq!(times_welcomed(10), 0, "not due yet");

    let errors: Vec<Option<&str>> = [id, bad, retried]
        .iter()
        .map(|i| ran.iter().find(|d| d.id == *i).unwrap().error.as_deref())
        .collect();
    assert_eq!(errors, [None, Some("no email"), Some("user 9 is flaky")]);
    assert_eq!(
        register::output(&mut conn, id).await.unwrap().as_deref(),
        Some("user 7 at attempt 1")
    );
    assert_eq!(
        enqueued::<kit_welcome>(&mut conn).await.unwrap(),
        [Welcome { user_id: 10 }, Welcome { user_id: 7 }]
    );

    // Nothing is due any more: a second drain runs nothing, and returns.
    assert!(drain(&mut conn).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_drain_without_state_fails_the_tasks_that_need_it() {
    let (_db, mut conn) = database().await;
    let id = register::enqueue(
        &mut conn,
        &Signup {
            user_id: 1,
            email: "b@example.com".into(),
        },
    )
    .await
    .unwrap();
    let ran = drain(&mut conn).await.unwrap();
    assert_eq!(ran.len(), 1);
    assert_eq!(ran[0].id, id);
    assert_eq!(ran[0].state, JobState::Scheduled);
    assert_eq!(ran[0].error.as_deref(), Some("no database url"));
}

#[tokio::test]
async fn run_inline_calls_the_handler_with_a_test_context() {
    let out = run_inline::<describe>(&Welcome { user_id: 3 })
        .await
        .unwrap();
    assert_eq!(out, (3, 1, 1, "kit".to_owned()));
    let context = TestContext::new()
        .job_id(JobId::from(42))
        .attempt(5)
        .queue("elsewhere");
    let out = run_inline_with::<describe>(&Welcome { user_id: 4 }, context)
        .await
        .unwrap();
    assert_eq!(out, (4, 42, 5, "elsewhere".to_owned()));

    let error = run_inline::<flaky>(&Welcome { user_id: 5 })
        .await
        .unwrap_err();
    assert_eq!(error.to_string(), "user 5 is flaky");
    assert!(!error.is_permanent());
    let error = run_inline::<register>(&Signup {
        user_id: 6,
        email: String::new(),
    })
    .await
    .unwrap_err();
    assert!(error.is_permanent());
    assert_eq!(
        run_inline::<kit_welcome>(&Welcome { user_id: 1 })
            .await
            .unwrap(),
        ()
    );
}

#[tokio::test]
async fn the_assertion_lists_what_was_enqueued_instead() {
    let (_db, mut conn) = database().await;
    let none = std::panic::AssertUnwindSafe(assert_enqueued::<kit_welcome>(&mut conn, |_| true))
        .catch_unwind()
        .await
        .expect_err("nothing was enqueued");
    let message = panic_text(&*none);
    assert_eq!(
        message,
        "assert_enqueued::<kit_welcome>: no job matches; no job of task kit_welcome was enqueued"
    );

    for user_id in [1, 2] {
        kit_welcome::enqueue(&mut conn, &Welcome { user_id })
            .await
            .unwrap();
    }
    let wrong = std::panic::AssertUnwindSafe(assert_enqueued::<kit_welcome>(&mut conn, |w| {
        w.user_id == 3
    }))
    .catch_unwind()
    .await
    .expect_err("no job for user 3");
    let message = panic_text(&*wrong);
    assert_eq!(
        message,
        "assert_enqueued::<kit_welcome>: no job matches; 2 job(s) of task kit_welcome were \
         enqueued instead:\n  {\"user_id\":1}\n  {\"user_id\":2}"
    );
    assert_eq!(
        assert_enqueued::<kit_welcome>(&mut conn, |w| w.user_id == 2).await,
        Welcome { user_id: 2 }
    );
}

#[tokio::test]
#[should_panic(expected = "no job of task flaky was enqueued")]
async fn the_assertion_panics_as_a_test_failure() {
    let (_db, mut conn) = database().await;
    assert_enqueued::<flaky>(&mut conn, |_| true).await;
}

fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_default()
}
