//! `jobq.jobs` split by state into an active and a finished partition: the
//! upgrade from the single table, and statements that meet a row another
//! transaction moved between the partitions.

mod support;

use std::time::{Duration, Instant};

use diesel::result::{DatabaseErrorKind, Error};
use diesel::sql_types::Text;
use diesel::QueryableByName;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use jobq_diesel::CancelResult;
use jobq_testkit::TestDatabase;
use support::{flag, number, N};

/// The last migration before the split, and the split.
const BEFORE_SPLIT: i64 = 20261204000200;
const SPLIT: i64 = 20261205000100;

#[derive(QueryableByName, Debug, PartialEq, Eq)]
struct Placed {
    #[diesel(sql_type = Text)]
    task: String,
    #[diesel(sql_type = Text)]
    state: String,
    #[diesel(sql_type = Text)]
    partition: String,
}

#[tokio::test]
async fn upgrading_splits_the_jobs_by_state_and_keeps_every_job_id_and_grant() {
    let db = TestDatabase::create().await.unwrap();
    let mut conn = AsyncPgConnection::establish(db.url()).await.unwrap();
    jobq_diesel::migrate_to(&mut conn, BEFORE_SPLIT)
        .await
        .unwrap();
    // Roles are cluster-wide: a unique name per run.
    let role = format!("split_{}_{}", std::process::id(), db.name());
    conn.batch_execute(&format!(
        "CREATE ROLE \"{role}\"; \
         GRANT SELECT, INSERT ON jobq.jobs TO \"{role}\"; \
         GRANT UPDATE (cancel_requested) ON jobq.jobs TO \"{role}\"; \
         INSERT INTO jobq.jobs (task, payload) SELECT 'due', '{{}}' FROM generate_series(1, 3); \
         INSERT INTO jobq.jobs (task, payload, state, run_at, dedupe_key) \
             VALUES ('later', '{{}}', 'scheduled', now() + interval '1 hour', 'k1'); \
         INSERT INTO jobq.jobs (task, payload, state, attempt) \
             VALUES ('busy', '{{}}', 'running', 1); \
         INSERT INTO jobq.jobs (task, payload, state, finished_at, output) \
             VALUES ('done', '{{}}', 'completed', now(), '{{\"answer\": 42}}'); \
         INSERT INTO jobq.jobs (task, payload, state, finished_at, errors) \
             VALUES ('broke', '{{}}', 'failed', now(), '[{{\"attempt\": 1, \"message\": \"no\"}}]'), \
                    ('dropped', '{{}}', 'cancelled', now(), '[]');"
    ))
    .await
    .unwrap();
    let job = jobq_diesel::NewJob {
        task: "unique",
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
    let held =
        jobq_diesel::insert_unique_job(&mut conn, &job, "k", jobq_diesel::KeyHold::WhileActive)
            .await
            .unwrap();
    let last_id = number(
        &mut conn,
        "SELECT max(id) AS n FROM jobq.jobs WHERE task <> 'unique'",
    )
    .await;

    let applied = jobq_diesel::migrate(&mut conn).await.unwrap();
    assert_eq!(applied[0], SPLIT);

    let placed: Vec<Placed> = diesel::sql_query(
        "SELECT task, state::text AS state, tableoid::regclass::text AS partition \
         FROM jobq.jobs ORDER BY task, id",
    )
    .load(&mut conn)
    .await
    .unwrap();
    let place = |task: &str, state: &str, partition: &str| Placed {
        task: task.into(),
        state: state.into(),
        partition: partition.into(),
    };
    assert_eq!(
        placed,
        [
            place("broke", "failed", "jobq.jobs_finished_kept"),
            place("busy", "running", "jobq.jobs_active"),
            place("done", "completed", "jobq.jobs_finished_kept"),
            place("dropped", "cancelled", "jobq.jobs_finished_kept"),
            place("due", "pending", "jobq.jobs_active"),
            place("due", "pending", "jobq.jobs_active"),
            place("due", "pending", "jobq.jobs_active"),
            place("later", "scheduled", "jobq.jobs_active"),
            place("unique", "pending", "jobq.jobs_active"),
        ]
    );
    // Columns came along: the output, the errors, the keys.
    let done_id = placed_id(&mut conn, "done").await;
    let done = jobq_diesel::find_job(&mut conn, done_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (done.task.as_str(), done.state.as_str()),
        ("done", "completed")
    );
    assert!(
        flag(
            &mut conn,
            "SELECT (SELECT output FROM jobq.jobs WHERE task = 'done') = '{\"answer\": 42}' \
                AND (SELECT errors -> 0 ->> 'message' FROM jobq.jobs WHERE task = 'broke') = 'no' \
                AND (SELECT dedupe_key FROM jobq.jobs WHERE task = 'later') = 'k1' AS yes",
        )
        .await
    );

    // New ids carry on after the old ones; the key still holds its job.
    let next = jobq_diesel::insert_job(&mut conn, &job).await.unwrap();
    assert!(next > last_id, "{next} after {last_id}");
    let again =
        jobq_diesel::insert_unique_job(&mut conn, &job, "k", jobq_diesel::KeyHold::WhileActive)
            .await
            .unwrap();
    assert_eq!((again.job_id, again.created), (held.job_id, false));
    let dedupe = jobq_diesel::NewJob {
        task: "later",
        dedupe_key: Some("k1"),
        ..job
    };
    let holder = jobq_diesel::insert_job(&mut conn, &dedupe).await.unwrap();
    assert_eq!(holder, placed_id(&mut conn, "later").await);

    // The role may do what it could, on the parent and where a
    // deduplicating enqueue writes, and no more.
    for (privilege, table, expected) in [
        ("INSERT", "jobq.jobs", true),
        ("SELECT", "jobq.jobs", true),
        ("INSERT", "jobq.jobs_active", true),
        ("DELETE", "jobq.jobs", false),
        ("UPDATE", "jobq.jobs_finished", false),
    ] {
        assert_eq!(
            flag(
                &mut conn,
                &format!("SELECT has_table_privilege('{role}', '{table}', '{privilege}') AS yes"),
            )
            .await,
            expected,
            "{privilege} on {table}"
        );
    }
    assert!(
        flag(
            &mut conn,
            &format!(
                "SELECT has_column_privilege('{role}', 'jobq.jobs', 'cancel_requested', 'UPDATE') \
                    AND NOT has_column_privilege('{role}', 'jobq.jobs', 'state', 'UPDATE') \
                    AND has_sequence_privilege('{role}', 'jobq.job_ids', 'USAGE') AS yes"
            ),
        )
        .await
    );
    conn.batch_execute(&format!("DROP OWNED BY \"{role}\"; DROP ROLE \"{role}\""))
        .await
        .unwrap();
}

async fn placed_id(conn: &mut AsyncPgConnection, task: &str) -> i64 {
    number(
        conn,
        &format!("SELECT id AS n FROM jobq.jobs WHERE task = '{task}'"),
    )
    .await
}

/// jobq's schema on `db` and a job running its first attempt there; the
/// job's id and the connection that made it.
async fn running_job(db: &TestDatabase) -> (i64, AsyncPgConnection) {
    let mut conn = AsyncPgConnection::establish(db.url()).await.unwrap();
    jobq_diesel::migrate(&mut conn).await.unwrap();
    let id = number(
        &mut conn,
        "INSERT INTO jobq.jobs (task, payload, state, attempt, started_at) \
         VALUES ('t', '{}', 'running', 1, now()) RETURNING id AS n",
    )
    .await;
    (id, conn)
}

/// A running job, and a second connection holding its row moved to the
/// finished partition in an open transaction.
async fn running_job_being_finished(db: &TestDatabase) -> (i64, AsyncPgConnection) {
    let (id, mut conn) = running_job(db).await;
    conn.batch_execute(&format!(
        "BEGIN; UPDATE jobq.jobs SET state = 'completed', finished_at = now() WHERE id = {id}"
    ))
    .await
    .unwrap();
    (id, conn)
}

/// Waits until the backend `pid` waits for a lock.
async fn wait_for_lock_wait(conn: &mut AsyncPgConnection, pid: i64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let sql = format!(
        "SELECT EXISTS (SELECT 1 FROM pg_stat_activity \
                        WHERE pid = {pid} AND wait_event_type = 'Lock') AS yes"
    );
    while !flag(conn, &sql).await {
        assert!(
            Instant::now() < deadline,
            "backend {pid} never waited for the row"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_cancel_that_waited_for_a_job_finishing_meanwhile_finds_it_not_cancellable() {
    let db = TestDatabase::create().await.unwrap();
    let (id, mut finisher) = running_job_being_finished(&db).await;
    let mut canceller = AsyncPgConnection::establish(db.url()).await.unwrap();
    let pid = number(&mut canceller, "SELECT pg_backend_pid()::bigint AS n").await;
    let cancel = tokio::spawn(async move { jobq_diesel::cancel(&mut canceller, id).await });
    let mut observer = AsyncPgConnection::establish(db.url()).await.unwrap();
    wait_for_lock_wait(&mut observer, pid).await;
    finisher.batch_execute("COMMIT").await.unwrap();

    let cancel = cancel
        .await
        .unwrap()
        .expect("the cancel runs again, no error");
    assert_eq!(cancel.result, CancelResult::NotCancellable);
    let job = jobq_diesel::find_job(&mut observer, id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(job.state, "completed");
}

#[tokio::test]
async fn inside_a_transaction_the_cancel_returns_the_serialization_failure() {
    let db = TestDatabase::create().await.unwrap();
    let (id, mut finisher) = running_job_being_finished(&db).await;
    let mut canceller = AsyncPgConnection::establish(db.url()).await.unwrap();
    let pid = number(&mut canceller, "SELECT pg_backend_pid()::bigint AS n").await;
    let cancel = tokio::spawn(async move {
        canceller
            .transaction::<_, Error, _>(async |c| jobq_diesel::cancel(c, id).await)
            .await
    });
    let mut observer = AsyncPgConnection::establish(db.url()).await.unwrap();
    wait_for_lock_wait(&mut observer, pid).await;
    finisher.batch_execute("COMMIT").await.unwrap();

    match cancel.await.unwrap() {
        Err(Error::DatabaseError(DatabaseErrorKind::SerializationFailure, _)) => {}
        other => panic!("expected a serialization failure, got {other:?}"),
    }
}

#[tokio::test]
async fn the_finishing_statements_copy_every_column_of_the_table() {
    let db = TestDatabase::create().await.unwrap();
    let mut conn = AsyncPgConnection::establish(db.url()).await.unwrap();
    jobq_diesel::migrate(&mut conn).await.unwrap();
    #[derive(QueryableByName)]
    struct Columns {
        #[diesel(sql_type = Text)]
        names: String,
    }
    let table: Columns = diesel::sql_query(
        "SELECT string_agg(attname, ', ' ORDER BY attnum) AS names FROM pg_attribute \
         WHERE attrelid = 'jobq.jobs'::regclass AND attnum > 0 AND NOT attisdropped",
    )
    .get_result(&mut conn)
    .await
    .unwrap();
    let copied: Vec<&str> = jobq_diesel::JOB_COLUMNS.split(',').map(str::trim).collect();
    assert_eq!(copied.join(", "), table.names);
}

/// An advisory lock the statement of [`a_locker_mid_statement`] waits for
/// after it read its row.
const GATE: i64 = 4242;

/// Starts, on a connection of its own, a statement that reads job `id` as
/// pending, waits at the gate, and then locks the row the way a claim
/// does, inside a transaction block (where no rerun could hide an error).
/// Returns its backend pid and the statement's rows or error.
async fn a_locker_mid_statement(
    db: &TestDatabase,
    id: i64,
) -> (i64, tokio::task::JoinHandle<Result<Vec<N>, Error>>) {
    let mut locker = AsyncPgConnection::establish(db.url()).await.unwrap();
    let pid = number(&mut locker, "SELECT pg_backend_pid()::bigint AS n").await;
    let task = tokio::spawn(async move {
        locker
            .transaction::<_, Error, _>(async |c| {
                diesel::sql_query(format!(
                    "SELECT id AS n FROM jobq.jobs_active \
                     WHERE id = {id} AND state = 'pending' \
                       AND (SELECT true FROM (SELECT pg_advisory_lock({GATE})) g) \
                     FOR UPDATE SKIP LOCKED"
                ))
                .load::<N>(c)
                .await
            })
            .await
    });
    (pid, task)
}

/// A claim that read a job as pending, and reaches its row only after
/// another worker claimed it and wrote its outcome, skips it: the outcome
/// deleted the row from the active partition instead of moving it, which
/// would fail the claim with "tuple to be locked was already moved to
/// another partition". Both outcome statements: the plain completion and
/// the general one (a failure with its message).
#[tokio::test]
async fn a_claim_that_meets_a_job_finished_after_its_snapshot_skips_it() {
    use jobq_diesel::{Outcome, OutcomeKind};
    let db = TestDatabase::create().await.unwrap();
    let mut conn = AsyncPgConnection::establish(db.url()).await.unwrap();
    jobq_diesel::migrate(&mut conn).await.unwrap();
    let mut gate = AsyncPgConnection::establish(db.url()).await.unwrap();
    for (kind, message) in [
        (OutcomeKind::Completed, None),
        (OutcomeKind::Failed, Some("no \u{1F4A5} here".to_owned())),
    ] {
        let id = number(
            &mut conn,
            "INSERT INTO jobq.jobs (task, payload) VALUES ('t', '{}') RETURNING id AS n",
        )
        .await;
        gate.batch_execute(&format!("SELECT pg_advisory_lock({GATE})"))
            .await
            .unwrap();
        let (pid, locker) = a_locker_mid_statement(&db, id).await;
        wait_for_lock_wait(&mut conn, pid).await;
        // Another worker claims the job and finishes it meanwhile.
        conn.batch_execute(&format!(
            "UPDATE jobq.jobs_active SET state = 'running', attempt = 1, started_at = now() \
             WHERE id = {id}"
        ))
        .await
        .unwrap();
        let outcome = Outcome {
            id,
            attempt: 1,
            kind,
            message,
            output: None,
        };
        let rejected = jobq_diesel::write_outcomes(&mut conn, &[outcome], &[])
            .await
            .unwrap();
        assert!(rejected.is_empty(), "{kind:?}: {rejected:?}");
        gate.batch_execute(&format!("SELECT pg_advisory_unlock({GATE})"))
            .await
            .unwrap();

        let rows = locker
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("{kind:?}: the claim failed: {e}"));
        assert!(rows.is_empty(), "{kind:?}: a finished job was claimed");
        let job = jobq_diesel::find_job(&mut conn, id).await.unwrap().unwrap();
        let ended = if kind == OutcomeKind::Completed {
            "completed"
        } else {
            "failed"
        };
        assert_eq!(job.state, ended);
    }
}

/// An outcome that would put its job back in the queue, written while a
/// cancellation of the job commits: the outcome waits for the row, sees the
/// cancellation and ends the job cancelled in the finished partition,
/// neither lost nor left running.
#[tokio::test]
async fn a_retry_outcome_that_waited_for_a_cancellation_ends_the_job_cancelled() {
    use jobq_diesel::{Outcome, OutcomeKind};
    let db = TestDatabase::create().await.unwrap();
    let (id, mut conn) = running_job(&db).await;
    let mut canceller = AsyncPgConnection::establish(db.url()).await.unwrap();
    canceller
        .batch_execute(&format!(
            "BEGIN; UPDATE jobq.jobs SET cancel_requested = true WHERE id = {id}"
        ))
        .await
        .unwrap();
    let mut writer = AsyncPgConnection::establish(db.url()).await.unwrap();
    let pid = number(&mut writer, "SELECT pg_backend_pid()::bigint AS n").await;
    let write = tokio::spawn(async move {
        let outcome = Outcome {
            id,
            attempt: 1,
            kind: OutcomeKind::Retry { delay_ms: 0 },
            message: Some("try again".to_owned()),
            output: None,
        };
        jobq_diesel::write_outcomes(&mut writer, &[outcome], &[]).await
    });
    wait_for_lock_wait(&mut conn, pid).await;
    canceller.batch_execute("COMMIT").await.unwrap();

    let rejected = write.await.unwrap().unwrap();
    assert!(rejected.is_empty(), "{rejected:?}");
    let placed: Placed = diesel::sql_query(format!(
        "SELECT task, state::text AS state, tableoid::regclass::text AS partition \
         FROM jobq.jobs WHERE id = {id}"
    ))
    .get_result(&mut conn)
    .await
    .unwrap();
    assert_eq!(placed.state, "cancelled");
    assert_eq!(placed.partition, "jobq.jobs_finished_kept");
    let job = jobq_diesel::find_job(&mut conn, id).await.unwrap().unwrap();
    assert!(
        job.errors.to_string().contains("try again"),
        "{:?}",
        job.errors
    );
}
