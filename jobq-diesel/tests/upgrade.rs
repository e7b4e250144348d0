//! Upgrading a database that holds jobs to the current schema.

use diesel::sql_types::{BigInt, Text};
use diesel::QueryableByName;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use jobq_testkit::TestDatabase;

#[derive(QueryableByName, Debug, PartialEq, Eq)]
struct StateCount {
    #[diesel(sql_type = Text)]
    task: String,
    #[diesel(sql_type = Text)]
    state: String,
    #[diesel(sql_type = BigInt)]
    n: i64,
}

async fn states(conn: &mut AsyncPgConnection) -> Vec<StateCount> {
    diesel::sql_query(
        "SELECT task, state::text AS state, count(*) AS n FROM jobq.jobs \
         GROUP BY task, state ORDER BY task, state",
    )
    .load(conn)
    .await
    .unwrap()
}

fn count(task: &str, state: &str, n: i64) -> StateCount {
    StateCount {
        task: task.into(),
        state: state.into(),
        n,
    }
}

#[tokio::test]
async fn upgrading_to_the_scheduled_state_keeps_every_job_and_files_waiting_ones() {
    let db = TestDatabase::create().await.unwrap();
    let mut conn = AsyncPgConnection::establish(db.url()).await.unwrap();
    // The schema as the previous release left it, with jobs in it.
    conn.batch_execute(include_str!(
        "../../migrations/2026-11-25-000001_create_jobq/up.sql"
    ))
    .await
    .unwrap();
    conn.batch_execute(include_str!(
        "../../migrations/2026-11-26-000001_claims/up.sql"
    ))
    .await
    .unwrap();
    conn.batch_execute(
        "CREATE TABLE jobq.schema_migrations ( \
             version bigint PRIMARY KEY, name text NOT NULL, \
             applied_at timestamptz NOT NULL DEFAULT now()); \
         INSERT INTO jobq.schema_migrations (version, name) \
             VALUES (20261125000001, 'create_jobq'), (20261126000001, 'claims'); \
         INSERT INTO jobq.jobs (task, payload, run_at) \
             SELECT 'due', '{}', now() - interval '1 minute' FROM generate_series(1, 3); \
         INSERT INTO jobq.jobs (task, payload, run_at, dedupe_key) \
             SELECT 'later', '{}', now() + interval '1 hour', 'k' || n \
             FROM generate_series(1, 4) AS n; \
         INSERT INTO jobq.jobs (task, payload, state, attempt, worker_id) \
             VALUES ('busy', '{}', 'running', 1, 1); \
         INSERT INTO jobq.jobs (task, payload, state, finished_at) \
             VALUES ('done', '{}', 'completed', now());",
    )
    .await
    .unwrap();

    let applied = jobq_diesel::migrate(&mut conn).await.unwrap();
    // Later migrations follow; these three must be among what was applied.
    assert_eq!(
        applied[..3],
        [20261130000001, 20261130000002, 20261130000003]
    );
    assert_eq!(applied.last().copied(), Some(jobq_diesel::LATEST_VERSION));
    assert_eq!(
        states(&mut conn).await,
        [
            count("busy", "running", 1),
            count("done", "completed", 1),
            count("due", "pending", 3),
            count("later", "scheduled", 4),
        ]
    );
    // The waiting jobs keep their dedupe keys.
    let dup = conn
        .batch_execute(
            "INSERT INTO jobq.jobs (task, payload, dedupe_key) VALUES ('later', '{}', 'k1')",
        )
        .await;
    assert!(dup.is_err(), "a scheduled job's dedupe key was not held");
    // Idempotent.
    assert!(jobq_diesel::migrate(&mut conn).await.unwrap().is_empty());
}

#[tokio::test]
async fn upgrading_to_unique_keys_and_outputs_keeps_every_job() {
    let db = TestDatabase::create().await.unwrap();
    let mut conn = AsyncPgConnection::establish(db.url()).await.unwrap();
    // The schema as of the liveness migration, with jobs in every state.
    for up in [
        include_str!("../../migrations/2026-11-25-000001_create_jobq/up.sql"),
        include_str!("../../migrations/2026-11-26-000001_claims/up.sql"),
        include_str!("../../migrations/2026-11-30-000001_scheduled_state/up.sql"),
        include_str!("../../migrations/2026-11-30-000002_scheduled_jobs/up.sql"),
        include_str!("../../migrations/2026-11-30-000003_liveness/up.sql"),
    ] {
        conn.batch_execute(up).await.unwrap();
    }
    conn.batch_execute(
        "CREATE TABLE jobq.schema_migrations ( \
             version bigint PRIMARY KEY, name text NOT NULL, \
             applied_at timestamptz NOT NULL DEFAULT now()); \
         INSERT INTO jobq.schema_migrations (version, name) VALUES \
             (20261125000001, 'create_jobq'), (20261126000001, 'claims'), \
             (20261130000001, 'scheduled_state'), (20261130000002, 'scheduled_jobs'), \
             (20261130000003, 'liveness'); \
         INSERT INTO jobq.jobs (task, payload) SELECT 'due', '{}' FROM generate_series(1, 3); \
         INSERT INTO jobq.jobs (task, payload, run_at, dedupe_key) \
             VALUES ('later', '{}', now() + interval '1 hour', 'k1'); \
         INSERT INTO jobq.jobs (task, payload, state, attempt) VALUES ('busy', '{}', 'running', 1); \
         INSERT INTO jobq.jobs (task, payload, state, finished_at) \
             VALUES ('done', '{}', 'completed', now());",
    )
    .await
    .unwrap();

    let applied = jobq_diesel::migrate(&mut conn).await.unwrap();
    assert!(applied.contains(&20261201000030), "{applied:?}");
    assert_eq!(
        states(&mut conn).await,
        [
            count("busy", "running", 1),
            count("done", "completed", 1),
            count("due", "pending", 3),
            count("later", "scheduled", 1),
        ]
    );
    #[derive(QueryableByName)]
    struct N {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let set: N = diesel::sql_query(
        "SELECT count(*) AS n FROM jobq.jobs \
         WHERE output IS NOT NULL OR unique_key IS NOT NULL OR unique_until IS NOT NULL",
    )
    .get_result(&mut conn)
    .await
    .unwrap();
    assert_eq!(set.n, 0, "existing jobs have no output and no unique key");
    // The old jobs are readable, and a keyed job goes in beside them.
    assert!(jobq_diesel::find_job(&mut conn, 1).await.unwrap().is_some());
    let job = jobq_diesel::NewJob {
        task: "due",
        queue: "default",
        payload: "{}",
        priority: 0,
        max_attempts: 3,
        delay_ms: 0,
        run_at: None,
        dedupe_key: None,
        key: None,
        headers: None,
        follow_up: None,
    };
    let first =
        jobq_diesel::insert_unique_job(&mut conn, &job, "k", jobq_diesel::KeyHold::WhileActive)
            .await
            .unwrap();
    let again =
        jobq_diesel::insert_unique_job(&mut conn, &job, "k", jobq_diesel::KeyHold::WhileActive)
            .await
            .unwrap();
    assert!(first.created && !again.created);
    assert_eq!(first.job_id, again.job_id);
}

#[tokio::test]
async fn workers_starting_together_migrate_once() {
    let db = TestDatabase::create().await.unwrap();
    let mut a = AsyncPgConnection::establish(db.url()).await.unwrap();
    let mut b = AsyncPgConnection::establish(db.url()).await.unwrap();
    let (ra, rb) = tokio::join!(jobq_diesel::migrate(&mut a), jobq_diesel::migrate(&mut b));
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    // One of them applied everything, the other found nothing to do.
    let mut applied = [ra.len(), rb.len()];
    applied.sort_unstable();
    assert_eq!(applied[0], 0, "{ra:?} {rb:?}");
    assert_eq!(
        ra.last().or(rb.last()).copied(),
        Some(jobq_diesel::LATEST_VERSION)
    );
    // Neither keeps the migration lock: a third migrate returns at once,
    // and the lock is free.
    #[derive(QueryableByName)]
    struct Held {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let Held { n } = diesel::sql_query(
        "SELECT count(*) AS n FROM pg_locks WHERE locktype = 'advisory' AND granted \
         AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .get_result(&mut a)
    .await
    .unwrap();
    assert_eq!(n, 0);
}
