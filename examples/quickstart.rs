//! jobq in one file: define tasks, enqueue typed jobs inside a transaction,
//! run a worker until they are done.
//!
//! ```text
//! cargo run --example quickstart
//! ```
//!
//! With `DATABASE_URL` set, it works in a fresh database on that server;
//! without it, on a throwaway PostgreSQL started from the binaries
//! installed on this machine. Either way it leaves nothing behind.

use std::time::Duration;

use diesel_async::{AsyncConnection, AsyncPgConnection};
use jobq::{EnqueueOptions, JobState, TaskError};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct Welcome {
    user_id: i64,
}

/// Sends the welcome e-mail. Up to four run at once in each worker.
#[jobq::task(concurrency = 4, retry = "30s")]
async fn send_welcome(job: Welcome) -> Result<(), TaskError> {
    println!("  -> welcome e-mail sent to user {}", job.user_id);
    Ok(())
}

#[derive(Debug, Serialize, Deserialize)]
struct Report {
    day: String,
}

/// Fails its first attempt to show a retry; the context says which attempt
/// this is.
#[jobq::task(
    name = "reports.nightly",
    queue = "reports",
    max_attempts = 3,
    retry = "200ms"
)]
async fn nightly(ctx: jobq::Context, job: Report) -> Result<(), TaskError> {
    if ctx.attempt() == 1 {
        println!("  -> report for {}: attempt 1 fails on purpose", job.day);
        return Err(TaskError::msg("the warehouse is not ready yet"));
    }
    println!(
        "  -> report for {} built on attempt {}",
        job.day,
        ctx.attempt()
    );
    Ok(())
}

// `pub`: tests/examples.rs runs this very program as its child.
#[tokio::main]
pub async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("jobq=info")),
        )
        .init();

    let db = jobq_testkit::TestDatabase::create().await?;
    println!("database: {}", db.name());
    let mut conn = AsyncPgConnection::establish(db.url()).await?;
    jobq::migrate(&mut conn).await?;

    // Enqueue inside the application's own transaction: the jobs exist only
    // if it commits.
    let ids = conn
        .transaction::<_, jobq::Error, _>(async |conn| {
            let mut ids =
                send_welcome::enqueue_many(conn, &[Welcome { user_id: 1 }, Welcome { user_id: 2 }])
                    .await?;
            ids.push(
                send_welcome::enqueue_with(
                    conn,
                    &Welcome { user_id: 3 },
                    EnqueueOptions::new().priority(5),
                )
                .await?,
            );
            ids.push(
                nightly::enqueue(
                    conn,
                    &Report {
                        day: "2026-11-25".into(),
                    },
                )
                .await?,
            );
            Ok(ids)
        })
        .await?;
    println!("committed {} jobs: {ids:?}", ids.len());

    // A rolled-back transaction leaves no job behind.
    let rolled_back = conn
        .transaction::<(), jobq::Error, _>(async |conn| {
            send_welcome::enqueue(conn, &Welcome { user_id: 99 }).await?;
            Err(diesel::result::Error::RollbackTransaction.into())
        })
        .await;
    assert!(rolled_back.is_err());
    println!("enqueued one more job in a transaction that rolled back: it does not exist");

    // A worker normally runs in its own binary with `jobq::run().await`;
    // here it runs in the background of this one.
    let worker = jobq::Worker::builder()
        .database_url(db.url())
        .build()
        .await?
        .spawn();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut states = Vec::new();
        for &id in &ids {
            let info = jobq::job(&mut conn, id).await?.ok_or("job vanished")?;
            states.push((id, info.state, info.attempt));
        }
        if states.iter().all(|(_, state, _)| state.is_terminal()) {
            for (id, state, attempts) in states {
                println!("job {id}: {state:?} after {attempts} attempt(s)");
            }
            break;
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("jobs not finished in time: {states:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    worker.shutdown().await?;

    let report = jobq::job(&mut conn, ids[3]).await?.ok_or("job vanished")?;
    assert_eq!(report.state, JobState::Completed);
    for error in &report.errors {
        println!(
            "report job error history: attempt {} at {}: {}",
            error.attempt, error.at, error.message
        );
    }
    println!("done");
    Ok(())
}
