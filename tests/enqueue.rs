//! Enqueueing: transactions, options, dedupe, batches, cancel and lookup.
//! No worker runs in this binary's tests unless they start one, so jobs stay
//! where enqueueing put them.

mod support;

use std::time::Duration;

use diesel_async::AsyncConnection;
use jobq::{EnqueueOptions, JobState};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Email {
    to: String,
}

#[jobq::task(queue = "mail", priority = 3, max_attempts = 4)]
async fn send_email(job: Email) -> Result<(), jobq::TaskError> {
    let _ = job;
    Ok(())
}

fn email(to: &str) -> Email {
    Email { to: to.into() }
}

#[tokio::test]
async fn rollback_of_the_enqueuing_transaction_leaves_no_job() {
    let env = support::env().await;
    let mut conn = env.conn().await;
    let result: Result<(), jobq::Error> = conn
        .transaction(async |c| {
            send_email::enqueue(c, &email("a@example.com")).await?;
            Err(diesel::result::Error::RollbackTransaction.into())
        })
        .await;
    assert!(result.is_err());
    assert_eq!(env.count("SELECT count(*) AS n FROM jobq.jobs").await, 0);
}

#[tokio::test]
async fn commit_keeps_the_job_with_the_task_defaults() {
    let env = support::env().await;
    let mut conn = env.conn().await;
    let id = conn
        .transaction(async |c| send_email::enqueue(c, &email("b@example.com")).await)
        .await
        .unwrap();
    let info = env.job(id).await;
    assert_eq!(info.state, JobState::Pending);
    assert_eq!(info.task, "send_email");
    assert_eq!(info.queue, "mail");
    assert_eq!(info.priority, 3);
    assert_eq!(info.max_attempts, 4);
    assert_eq!(info.attempt, 0);
    assert_eq!(info.payload, serde_json::json!({ "to": "b@example.com" }));
    assert!(info.errors.is_empty());
}

#[tokio::test]
async fn options_override_the_task_defaults() {
    let env = support::env().await;
    let mut conn = env.conn().await;
    let options = EnqueueOptions::new()
        .priority(9)
        .delay(Duration::from_secs(3600))
        .queue("other")
        .max_attempts(2);
    let id = send_email::enqueue_with(&mut conn, &email("c@example.com"), options)
        .await
        .unwrap();
    let info = env.job(id).await;
    assert_eq!(
        (info.priority, info.queue.as_str(), info.max_attempts),
        (9, "other", 2)
    );
    let ahead = info.run_at - info.created_at;
    assert!(
        ahead >= chrono::Duration::seconds(3599),
        "run_at only {ahead} ahead"
    );
}

#[tokio::test]
async fn invalid_options_are_refused_with_the_option_named() {
    let env = support::env().await;
    let mut conn = env.conn().await;
    let cases = [
        (EnqueueOptions::new().max_attempts(0), "max_attempts"),
        (EnqueueOptions::new().queue(""), "queue"),
        (EnqueueOptions::new().dedupe_key(""), "dedupe_key"),
    ];
    for (options, what) in cases {
        let err = send_email::enqueue_with(&mut conn, &email("d@example.com"), options)
            .await
            .unwrap_err();
        assert!(err.to_string().contains(what), "{err} should name {what}");
    }
    assert_eq!(env.count("SELECT count(*) AS n FROM jobq.jobs").await, 0);
}

#[tokio::test]
async fn dedupe_key_returns_the_live_job_instead_of_a_new_one() {
    let env = support::env().await;
    let mut conn = env.conn().await;
    let keyed = || EnqueueOptions::new().dedupe_key("user-42");
    let first = send_email::enqueue_with(&mut conn, &email("e@example.com"), keyed())
        .await
        .unwrap();
    let again = send_email::enqueue_with(&mut conn, &email("other@example.com"), keyed())
        .await
        .unwrap();
    assert_eq!(first, again);
    assert_eq!(env.count("SELECT count(*) AS n FROM jobq.jobs").await, 1);
    // Another key, or no key, makes a new job.
    let other = send_email::enqueue_with(
        &mut conn,
        &email("e@example.com"),
        EnqueueOptions::new().dedupe_key("user-43"),
    )
    .await
    .unwrap();
    assert_ne!(other, first);
    // Once the keyed job is finished, the key is free again.
    assert!(jobq::cancel(&mut conn, first).await.unwrap());
    let fresh = send_email::enqueue_with(&mut conn, &email("e@example.com"), keyed())
        .await
        .unwrap();
    assert_ne!(fresh, first);
}

#[tokio::test]
async fn enqueue_many_inserts_every_payload_in_order() {
    let env = support::env().await;
    let mut conn = env.conn().await;
    let payloads: Vec<Email> = (0..500)
        .map(|i| email(&format!("{i}@example.com")))
        .collect();
    let ids = send_email::enqueue_many(&mut conn, &payloads)
        .await
        .unwrap();
    assert_eq!(ids.len(), 500);
    for (i, id) in ids.iter().enumerate().step_by(97) {
        assert_eq!(env.job(*id).await.payload["to"], format!("{i}@example.com"));
    }
    assert!(send_email::enqueue_many(&mut conn, &[])
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn enqueue_many_rolls_back_with_the_transaction() {
    let env = support::env().await;
    let mut conn = env.conn().await;
    let _ = conn
        .transaction::<(), jobq::Error, _>(async |c| {
            send_email::enqueue_many(c, &[email("x@example.com"), email("y@example.com")]).await?;
            Err(diesel::result::Error::RollbackTransaction.into())
        })
        .await;
    assert_eq!(env.count("SELECT count(*) AS n FROM jobq.jobs").await, 0);
}

#[tokio::test]
async fn cancel_makes_a_pending_job_cancelled() {
    let env = support::env().await;
    let mut conn = env.conn().await;
    let id = send_email::enqueue(&mut conn, &email("f@example.com"))
        .await
        .unwrap();
    assert!(jobq::cancel(&mut conn, id).await.unwrap());
    let info = env.job(id).await;
    assert_eq!(info.state, JobState::Cancelled);
    assert!(info.finished_at.is_some());
    // Cancelling again, or an unknown id, changes nothing.
    assert!(!jobq::cancel(&mut conn, id).await.unwrap());
    assert!(!jobq::cancel(&mut conn, jobq::JobId::from(999_999))
        .await
        .unwrap());
}

#[tokio::test]
async fn job_lookup_of_an_unknown_id_is_none() {
    let env = support::env().await;
    let mut conn = env.conn().await;
    assert!(jobq::job(&mut conn, jobq::JobId::from(123))
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn migrate_is_idempotent_and_safe_concurrently() {
    let env = support::env().await;
    let runs = (0..4).map(|_| {
        let pool = env.pool.clone();
        tokio::spawn(async move {
            let mut conn = pool.get().await.unwrap();
            jobq::migrate(&mut conn).await
        })
    });
    for run in runs {
        run.await.unwrap().unwrap();
    }
    // Each migration applied once, the newest among them.
    assert_eq!(
        env.count("SELECT count(*) - count(DISTINCT version) AS n FROM jobq.schema_migrations")
            .await,
        0
    );
    assert_eq!(
        env.count("SELECT max(version) AS n FROM jobq.schema_migrations")
            .await,
        jobq_diesel::LATEST_VERSION
    );
}
