//! Pruning and vacuuming against a real database.

mod support;

use std::time::{Duration, Instant};

use diesel::sql_types::{BigInt, Bool};
use diesel::QueryableByName;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use jobq_diesel::{Retention, StatementTimeout, Vacuum};
use jobq_testkit::TestDatabase;
use support::{number, setup};

/// Inserts `n` jobs of `task` in `state`, finished `age_s` seconds ago.
async fn finished(conn: &mut AsyncPgConnection, task: &str, state: &str, age_s: i64, n: i64) {
    conn.batch_execute(&format!(
        "INSERT INTO jobq.jobs (task, payload, state, attempt, started_at, finished_at) \
         SELECT '{task}', '{{}}', '{state}', 1, now() - interval '{age_s} seconds', \
                now() - interval '{age_s} seconds' \
         FROM generate_series(1, {n})"
    ))
    .await
    .unwrap();
}

/// `n` finished jobs inserted and deleted again: `n` dead rows in the
/// kept partition.
async fn churn(conn: &mut AsyncPgConnection, n: i64) {
    finished(conn, "churn", "completed", 0, n).await;
    conn.batch_execute("DELETE FROM jobq.jobs WHERE task = 'churn'")
        .await
        .unwrap();
}

#[tokio::test]
async fn prune_deletes_finished_jobs_past_their_retention_and_nothing_else() {
    let (_db, mut conn) = setup().await;
    let day = 24 * 60 * 60;
    finished(&mut conn, "old.completed", "completed", 120, 3).await;
    finished(&mut conn, "new.completed", "completed", 10, 2).await;
    finished(&mut conn, "old.failed", "failed", 8 * day, 2).await;
    finished(&mut conn, "old.cancelled", "cancelled", 8 * day, 1).await;
    finished(&mut conn, "new.failed", "failed", day, 2).await;
    // Pending and running jobs go nowhere, however old.
    conn.batch_execute(
        "INSERT INTO jobq.jobs (task, payload, created_at, run_at) \
         VALUES ('old.pending', '{}', now() - interval '30 days', now() - interval '30 days'); \
         INSERT INTO jobq.jobs (task, payload, state, attempt, started_at, worker_id) \
         VALUES ('old.running', '{}', 'running', 1, now() - interval '30 days', 1);",
    )
    .await
    .unwrap();
    let retention = Retention {
        completed: Duration::from_secs(60),
        failed: Duration::from_secs(7 * day as u64),
    };

    // A batch limit of 2 per kind: the caller loops while batches are full.
    let first = jobq_diesel::prune(&mut conn, retention, 2).await.unwrap();
    assert_eq!(
        first, 4,
        "2 completed + 2 failed/cancelled in the first batch"
    );
    let second = jobq_diesel::prune(&mut conn, retention, 2).await.unwrap();
    assert_eq!(second, 2, "the last old completed and old cancelled job");
    let third = jobq_diesel::prune(&mut conn, retention, 2).await.unwrap();
    assert_eq!(third, 0);

    let left = number(
        &mut conn,
        "SELECT count(*) AS n FROM jobq.jobs WHERE task LIKE 'old.%' AND state IN ('completed', 'failed', 'cancelled')",
    )
    .await;
    assert_eq!(left, 0, "every finished job past its retention is gone");
    let kept = number(
        &mut conn,
        "SELECT count(*) AS n FROM jobq.jobs WHERE task IN ('new.completed', 'new.failed', 'old.pending', 'old.running')",
    )
    .await;
    assert_eq!(kept, 6, "recent finished jobs and unfinished ones stay");
}

#[derive(QueryableByName)]
struct Stats {
    #[diesel(sql_type = BigInt)]
    dead: i64,
    /// Of the finished partition.
    #[diesel(sql_type = BigInt)]
    vacuums: i64,
    #[diesel(sql_type = BigInt)]
    active_vacuums: i64,
    /// Of the finished partition, by anyone.
    #[diesel(sql_type = BigInt)]
    analyzes: i64,
}

async fn stats(conn: &mut AsyncPgConnection) -> Stats {
    diesel::sql_query(
        "SELECT sum(n_dead_tup)::bigint AS dead, \
             sum(vacuum_count) FILTER (WHERE relname = 'jobs_finished_kept')::bigint AS vacuums, \
             sum(vacuum_count) FILTER (WHERE relname = 'jobs_active')::bigint AS active_vacuums, \
             sum(analyze_count + autoanalyze_count) \
               FILTER (WHERE relname = 'jobs_finished_kept')::bigint AS analyzes \
         FROM pg_stat_user_tables \
         WHERE relid IN ('jobq.jobs_active'::regclass, 'jobq.jobs_finished_kept'::regclass)",
    )
    .get_result(conn)
    .await
    .unwrap()
}

/// Statistics reach the shared counters when a backend goes idle, at most
/// about once a second (PostgreSQL 15 and later can be told to flush at
/// the next idle moment); poll for them with a deadline.
async fn wait_stats(conn: &mut AsyncPgConnection, what: &str, done: impl Fn(&Stats) -> bool) {
    conn.batch_execute(
        "DO $$ BEGIN \
           IF current_setting('server_version_num')::int >= 150000 THEN \
             EXECUTE 'SELECT pg_stat_force_next_flush()'; \
           END IF; END $$",
    )
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        conn.batch_execute("SELECT pg_stat_clear_snapshot()")
            .await
            .unwrap();
        if done(&stats(conn).await) {
            return;
        }
        assert!(Instant::now() < deadline, "statistics never showed {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[derive(QueryableByName)]
struct Setting {
    #[diesel(sql_type = Bool)]
    on: bool,
}

#[tokio::test]
async fn vacuum_runs_only_where_autovacuum_does_not_and_dead_rows_pile_up() {
    let (_db, mut conn) = setup().await;
    let mut pace = jobq_diesel::VacuumPace::new();
    conn.batch_execute(
        "ALTER TABLE jobq.jobs_active SET (autovacuum_enabled = off); \
         ALTER TABLE jobq.jobs_finished_kept SET (autovacuum_enabled = off)",
    )
    .await
    .unwrap();
    assert_eq!(
        jobq_diesel::vacuum(&mut conn, &mut pace, StatementTimeout::NotSet)
            .await
            .unwrap(),
        Vacuum::NotNeeded { dead_rows: 0 }
    );

    churn(&mut conn, 5_000).await;
    wait_stats(&mut conn, "5,000 dead rows", |s| s.dead >= 5_000).await;
    match jobq_diesel::vacuum(&mut conn, &mut pace, StatementTimeout::NotSet)
        .await
        .unwrap()
    {
        Vacuum::Vacuumed { dead_rows } => assert!(dead_rows >= 5_000, "{dead_rows}"),
        other => panic!("expected a vacuum, got {other:?}"),
    }
    wait_stats(&mut conn, "the vacuum", |s| s.vacuums >= 1 && s.dead == 0).await;
    assert_eq!(
        stats(&mut conn).await.active_vacuums,
        0,
        "only the partition with the dead rows is vacuumed"
    );
    assert!(
        matches!(
            jobq_diesel::vacuum(&mut conn, &mut pace, StatementTimeout::NotSet)
                .await
                .unwrap(),
            Vacuum::NotNeeded { .. }
        ),
        "nothing left to vacuum"
    );

    // With the table's own switch back to the default, the server's
    // setting decides.
    conn.batch_execute(
        "ALTER TABLE jobq.jobs_active RESET (autovacuum_enabled); \
         ALTER TABLE jobq.jobs_finished_kept RESET (autovacuum_enabled)",
    )
    .await
    .unwrap();
    let server = diesel::sql_query("SELECT current_setting('autovacuum')::bool AS on")
        .get_result::<Setting>(&mut conn)
        .await
        .unwrap();
    let outcome = jobq_diesel::vacuum(&mut conn, &mut pace, StatementTimeout::NotSet)
        .await
        .unwrap();
    assert_eq!(
        outcome == Vacuum::Autovacuum,
        server.on,
        "server autovacuum = {}, vacuum() said {outcome:?}",
        server.on
    );
}

/// An analyze reads a sample of 30,000 rows: a partition vacuumed again
/// and again (every second, on a busy queue without autovacuum) is
/// analyzed only when enough rows changed and at most once a minute.
#[tokio::test]
async fn a_partition_vacuumed_twice_within_a_minute_is_analyzed_once() {
    let (_db, mut conn) = setup().await;
    conn.batch_execute("ALTER TABLE jobq.jobs_finished_kept SET (autovacuum_enabled = off)")
        .await
        .unwrap();
    let mut pace = jobq_diesel::VacuumPace::new();
    for pass in 1..=2 {
        churn(&mut conn, 5_000).await;
        wait_stats(&mut conn, "5,000 dead rows", |s| s.dead >= 5_000).await;
        assert!(matches!(
            jobq_diesel::vacuum(&mut conn, &mut pace, StatementTimeout::NotSet)
                .await
                .unwrap(),
            Vacuum::Vacuumed { .. }
        ));
        wait_stats(&mut conn, "the vacuum", |s| {
            s.vacuums >= pass && s.dead == 0
        })
        .await;
    }
    let stats = stats(&mut conn).await;
    assert_eq!(stats.vacuums, 2);
    assert_eq!(
        stats.analyzes, 1,
        "the second vacuum came within the minute"
    );
}

/// Where autovacuum runs but falls far behind (as it does at tens of
/// thousands of jobs a second: it visits a table once a minute), jobq
/// vacuums the partition itself, once its dead rows pass ten times the
/// threshold autovacuum acts on, and not before. A private server, so that
/// autovacuum is on whatever the shared server says; the partition's own
/// thresholds keep autovacuum away meanwhile, as load would.
#[tokio::test]
async fn where_autovacuum_falls_far_behind_jobq_vacuums_the_partition_itself() {
    let server = jobq_testkit::PrivateServer::start().await.unwrap();
    let db = TestDatabase::create_on(server.url()).await.unwrap();
    let mut conn = AsyncPgConnection::establish(db.url()).await.unwrap();
    jobq_diesel::migrate(&mut conn).await.unwrap();
    conn.batch_execute(
        "ALTER TABLE jobq.jobs_finished_kept SET (autovacuum_vacuum_threshold = 2000000000, \
             autovacuum_vacuum_insert_threshold = -1, autovacuum_analyze_threshold = 2000000000)",
    )
    .await
    .unwrap();
    let mut pace = jobq_diesel::VacuumPace::new();

    // 8,000 dead rows: past autovacuum's threshold (1,000), not ten times.
    churn(&mut conn, 8_000).await;
    wait_stats(&mut conn, "8,000 dead rows", |s| s.dead >= 8_000).await;
    assert_eq!(
        jobq_diesel::vacuum(&mut conn, &mut pace, StatementTimeout::NotSet)
            .await
            .unwrap(),
        Vacuum::Autovacuum
    );
    assert_eq!(stats(&mut conn).await.vacuums, 0);

    churn(&mut conn, 4_000).await;
    wait_stats(&mut conn, "12,000 dead rows", |s| s.dead >= 12_000).await;
    match jobq_diesel::vacuum(&mut conn, &mut pace, StatementTimeout::NotSet)
        .await
        .unwrap()
    {
        Vacuum::Vacuumed { dead_rows } => assert!(dead_rows >= 12_000, "{dead_rows}"),
        other => panic!("expected a vacuum, got {other:?}"),
    }
    wait_stats(&mut conn, "the vacuum", |s| s.vacuums >= 1 && s.dead == 0).await;
    assert_eq!(
        jobq_diesel::vacuum(&mut conn, &mut pace, StatementTimeout::NotSet)
            .await
            .unwrap(),
        Vacuum::Autovacuum,
        "caught up"
    );
}

/// An application's pool may set a statement timeout at connection
/// start-up; a vacuum pass on one of its connections lifts it for itself
/// (a pass cancelled at the timeout was wasted: the autovacuum-off soak
/// showed it) and the connection has its own timeout again afterwards.
#[tokio::test]
async fn after_a_vacuum_the_connection_keeps_its_statement_timeout() {
    let (db, mut admin) = setup().await;
    admin
        .batch_execute("ALTER TABLE jobq.jobs_finished_kept SET (autovacuum_enabled = off)")
        .await
        .unwrap();
    churn(&mut admin, 5_000).await;
    wait_stats(&mut admin, "5,000 dead rows", |s| s.dead >= 5_000).await;
    let separator = if db.url().contains('?') { '&' } else { '?' };
    let url = format!(
        "{}{separator}options=-c%20statement_timeout%3D5000",
        db.url()
    );
    let mut conn = AsyncPgConnection::establish(&url).await.unwrap();
    let mut pace = jobq_diesel::VacuumPace::new();
    match jobq_diesel::vacuum(&mut conn, &mut pace, StatementTimeout::LiftForThePass)
        .await
        .unwrap()
    {
        Vacuum::Vacuumed { dead_rows } => assert!(dead_rows >= 5_000, "{dead_rows}"),
        other => panic!("expected a vacuum, got {other:?}"),
    }
    #[derive(QueryableByName)]
    struct Timeout {
        #[diesel(sql_type = diesel::sql_types::Text)]
        statement_timeout: String,
    }
    let after = diesel::sql_query("SHOW statement_timeout")
        .get_result::<Timeout>(&mut conn)
        .await
        .unwrap();
    assert_eq!(after.statement_timeout, "5s");
}
