//! `examples/external_insert.rs`, driven as its users would: jobs written
//! by `psql`, the example's worker picking them up on the notification,
//! its per-job timeout, and SIGTERM while a job runs.

mod support;

#[path = "../examples/external_insert.rs"]
#[allow(dead_code)]
mod example;

use std::time::{Duration, Instant};

use diesel::sql_types::BigInt;
use diesel::QueryableByName;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use support::example::{example_process, run_psql, Running};
use support::fleet::run_tests;

const EXAMPLE_ENV: &str = "JOBQ_TEST_RUN_EXAMPLE";

fn main() -> std::process::ExitCode {
    if let Some(code) = example_process(EXAMPLE_ENV, example::main) {
        return code;
    }
    run_tests(&[(
        "psql_inserts_wake_the_worker_and_sigterm_lets_the_job_finish",
        || Box::pin(psql_inserts_wake_the_worker_and_sigterm_lets_the_job_finish()),
    )])
}

#[derive(QueryableByName)]
struct N {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// Whether the example's worker has its LISTEN connection up: an insert
/// made before that would only be found by the (slow) poll.
async fn listening(url: &str) -> bool {
    let Ok(mut conn) = AsyncPgConnection::establish(url).await else {
        return false;
    };
    diesel::sql_query(
        "SELECT count(*) AS n FROM pg_stat_activity \
         WHERE datname = current_database() AND query LIKE 'LISTEN%'",
    )
    .get_result::<N>(&mut conn)
    .await
    .is_ok_and(|row| row.n > 0)
}

fn insert(url: &str, payload: &str) {
    run_psql(
        url,
        &format!("INSERT INTO jobq.jobs (task, payload) VALUES ('thumbnail', '{payload}')"),
    );
}

async fn psql_inserts_wake_the_worker_and_sigterm_lets_the_job_finish() {
    let mut example = Running::start(EXAMPLE_ENV, &[]);
    let url = example.line(Duration::from_secs(60), |l| l.starts_with("database: "));
    let url = url.trim_start_matches("database: ").to_owned();
    support::wait_until("the example's worker to LISTEN", || listening(&url)).await;

    // One insert: picked up on its notification. The example polls only
    // every 30 s, so a pickup within a second is the notification's doing
    // (it takes milliseconds; the rest is room for a loaded machine).
    let inserted = Instant::now();
    insert(&url, r#"{"path": "first.png"}"#);
    example.line(support::SOON, |l| l.ends_with("first.png done"));
    let picked_up = inserted.elapsed();
    assert!(
        picked_up < Duration::from_secs(1),
        "picked up after {picked_up:?}"
    );

    // A job that overruns the task's 5 s timeout, with one attempt only,
    // and a backlog of 50 written by one statement: one wake drains all.
    run_psql(
        &url,
        r#"INSERT INTO jobq.jobs (task, payload, max_attempts)
               VALUES ('thumbnail', '{"path": "huge.png", "work_ms": 600000}', 1);
           INSERT INTO jobq.jobs (task, payload)
               SELECT 'thumbnail', jsonb_build_object('path', 'batch-' || i || '.png')
               FROM generate_series(1, 50) AS i"#,
    );
    for _ in 0..50 {
        example.line(support::SOON, |l| {
            l.contains("batch-") && l.ends_with("done")
        });
    }

    // SIGTERM while a job runs: it still completes, then the process exits.
    insert(&url, r#"{"path": "slow.png", "work_ms": 1500}"#);
    example.line(support::SOON, |l| l.ends_with("slow.png started"));
    example.terminate();
    let status = example.wait(Duration::from_secs(60));
    assert!(
        status.success(),
        "exit status {status}: {:#?}",
        example.seen
    );
    assert!(
        example.seen.iter().any(|l| l.ends_with("slow.png done")),
        "{:#?}",
        example.seen
    );
    assert!(
        !example.seen.iter().any(|l| l.ends_with("huge.png done")),
        "{:#?}",
        example.seen
    );
    // 1 + 50 + 1 completed; the overrun one failed on its timeout.
    let last = example.seen.last().cloned().unwrap_or_default();
    assert_eq!(
        last, "stopped: 52 completed, 1 failed, 0 left waiting",
        "{:#?}",
        example.seen
    );
}
