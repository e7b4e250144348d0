//! Claim lanes: at most `n` claims at once, fleet-wide; a claim beyond
//! them waits for one to commit, and a lane waited for too long fails the
//! claim without leaving anything behind.

mod support;

use std::time::{Duration, Instant};

use diesel::sql_types::{BigInt, Integer};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use jobq_diesel::{
    ClaimLanes, ClaimRequest, ClaimedJob, WorkerInfo, CLAIM_LANE_SQL, LANE_LOCK_CLASS,
};
use support::{flag, number, setup};

async fn worker(conn: &mut AsyncPgConnection) -> i64 {
    let info = WorkerInfo {
        hostname: "test".into(),
        pid: 1,
        queues: vec!["default".into()],
        lease: Duration::from_secs(30),
    };
    jobq_diesel::register_worker(conn, &info).await.unwrap()
}

async fn enqueue(conn: &mut AsyncPgConnection, jobs: u32) {
    conn.batch_execute(&format!(
        "INSERT INTO jobq.jobs (task, payload) SELECT 't', '{{}}' FROM generate_series(1, {jobs})"
    ))
    .await
    .unwrap();
}

/// Up to `slots` jobs of task `t`, in a lane of `lanes`.
async fn claim(
    conn: &mut AsyncPgConnection,
    worker_id: i64,
    claim_key: i64,
    slots: i32,
    lanes: u16,
) -> diesel::QueryResult<Vec<ClaimedJob>> {
    let queues = ["default".to_owned()];
    let tasks = ["t".to_owned()];
    let request = ClaimRequest {
        worker_id,
        queues: &queues,
        tasks: &tasks,
        slots: &[slots],
        claim_key,
        due: false,
        floors: &[],
        lanes: ClaimLanes::new(lanes),
    };
    jobq_diesel::claim(conn, &request).await
}

/// Another session holding lane `lane` in an open transaction.
async fn hold_lane(url: &str, lane: i32) -> AsyncPgConnection {
    let mut holder = AsyncPgConnection::establish(url).await.unwrap();
    holder
        .batch_execute(&format!(
            "BEGIN; SELECT pg_advisory_xact_lock({LANE_LOCK_CLASS}, {lane})"
        ))
        .await
        .unwrap();
    holder
}

/// Polls until some session waits for a lane; fails after ten seconds.
async fn until_a_lane_is_waited_for(conn: &mut AsyncPgConnection) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let waiting = lane_locks("NOT granted");
    while number(conn, &waiting).await == 0 {
        assert!(Instant::now() < deadline, "no claim waits for a lane");
        tokio::task::yield_now().await;
    }
}

const RUNNING: &str = "SELECT count(*) AS n FROM jobq.jobs WHERE state = 'running'";

/// True when the session is in no transaction (none left open).
const NO_TRANSACTION: &str = "SELECT pg_current_xact_id_if_assigned() IS NULL AS yes";

/// Counts the lanes' advisory locks of this database (other tests run
/// beside this one on the same server) that meet `condition`.
fn lane_locks(condition: &str) -> String {
    format!(
        "SELECT count(*) AS n FROM pg_locks WHERE locktype = 'advisory' \
         AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
         AND classid = {LANE_LOCK_CLASS}::oid AND {condition}"
    )
}

#[tokio::test]
async fn a_claim_beyond_the_lanes_waits_for_one_to_commit() {
    let (db, mut conn) = setup().await;
    let worker_id = worker(&mut conn).await;
    enqueue(&mut conn, 10).await;
    let mut holder = hold_lane(db.url(), 0).await;
    let mut claimer = AsyncPgConnection::establish(db.url()).await.unwrap();
    let waiting =
        tokio::spawn(async move { claim(&mut claimer, worker_id, 1, 4, 1).await.unwrap() });
    until_a_lane_is_waited_for(&mut conn).await;
    assert!(!waiting.is_finished());
    assert_eq!(number(&mut conn, RUNNING).await, 0);
    holder.batch_execute("COMMIT").await.unwrap();
    assert_eq!(waiting.await.unwrap().len(), 4);
    assert_eq!(number(&mut conn, RUNNING).await, 4);
}

#[tokio::test]
async fn a_claim_takes_any_free_lane_without_waiting() {
    let (db, mut conn) = setup().await;
    let worker_id = worker(&mut conn).await;
    enqueue(&mut conn, 10).await;
    // The worker's own lane (its id modulo 2) is held: it takes the other.
    let _holder = hold_lane(db.url(), i32::try_from(worker_id % 2).unwrap()).await;
    let claimed = claim(&mut conn, worker_id, 1, 3, 2).await.unwrap();
    assert_eq!(claimed.len(), 3);
    // Committed: another session sees the jobs running while the lane is
    // still held.
    let mut other = AsyncPgConnection::establish(db.url()).await.unwrap();
    assert_eq!(number(&mut other, RUNNING).await, 3);
}

#[tokio::test]
async fn a_lane_waited_for_past_the_lock_timeout_fails_the_claim_and_leaves_nothing_open() {
    let (db, mut conn) = setup().await;
    let worker_id = worker(&mut conn).await;
    enqueue(&mut conn, 10).await;
    let mut holder = hold_lane(db.url(), 0).await;
    let mut claimer = AsyncPgConnection::establish(db.url()).await.unwrap();
    claimer
        .batch_execute("SET lock_timeout = '50ms'")
        .await
        .unwrap();
    let err = claim(&mut claimer, worker_id, 1, 4, 1).await.unwrap_err();
    assert!(err.to_string().contains("lock timeout"), "{err}");
    assert_eq!(number(&mut conn, RUNNING).await, 0);
    // No transaction was left open on the claimer: once the lane is free
    // its next claim commits and others see it.
    holder.batch_execute("COMMIT").await.unwrap();
    assert_eq!(
        claim(&mut claimer, worker_id, 2, 4, 1).await.unwrap().len(),
        4
    );
    assert_eq!(number(&mut conn, RUNNING).await, 4);
    assert!(flag(&mut claimer, NO_TRANSACTION).await);
}

#[tokio::test]
async fn a_claim_that_fails_in_its_lane_rolls_back_and_frees_the_lane() {
    let (db, mut conn) = setup().await;
    let worker_id = worker(&mut conn).await;
    enqueue(&mut conn, 10).await;
    let mut claimer = AsyncPgConnection::establish(db.url()).await.unwrap();
    // A claim key already used by this worker: the claim's row conflicts,
    // so the claim fails after it locked its jobs.
    assert_eq!(
        claim(&mut claimer, worker_id, 7, 2, 1).await.unwrap().len(),
        2
    );
    let err = claim(&mut claimer, worker_id, 7, 2, 1).await.unwrap_err();
    assert!(err.to_string().contains("duplicate key"), "{err}");
    assert_eq!(number(&mut conn, RUNNING).await, 2);
    // The lane went with the rollback: a claim from another session with
    // one lane does not wait.
    let mut other = AsyncPgConnection::establish(db.url()).await.unwrap();
    other
        .batch_execute("SET lock_timeout = '5s'")
        .await
        .unwrap();
    assert_eq!(
        claim(&mut other, worker_id, 8, 2, 1).await.unwrap().len(),
        2
    );
    assert_eq!(number(&mut conn, RUNNING).await, 4);
    assert_eq!(number(&mut conn, &lane_locks("true")).await, 0);
    // Nor was the failed transaction left open on the claimer.
    assert!(flag(&mut claimer, NO_TRANSACTION).await);
}

#[tokio::test]
async fn a_lane_whose_commit_never_comes_is_given_up_with_its_jobs() {
    let (db, mut conn) = setup().await;
    let worker_id = worker(&mut conn).await;
    enqueue(&mut conn, 10).await;
    // A client cut off between its claim and its COMMIT, with no reset to
    // tell the server: the lane's transaction by hand, left open.
    let mut cut_off = AsyncPgConnection::establish(db.url()).await.unwrap();
    cut_off.batch_execute("BEGIN").await.unwrap();
    diesel::sql_query(CLAIM_LANE_SQL)
        .bind::<Integer, _>(LANE_LOCK_CLASS)
        .bind::<Integer, _>(1)
        .bind::<BigInt, _>(worker_id)
        .bind::<Integer, _>(2_000)
        .execute(&mut cut_off)
        .await
        .unwrap();
    assert_eq!(
        claim(&mut cut_off, worker_id, 1, 4, 0).await.unwrap().len(),
        4
    );
    assert_eq!(number(&mut conn, RUNNING).await, 0, "not committed");
    // The server ends the session: the lane and the jobs are free again,
    // for a claim that waits for the lane as long as it takes.
    let mut claimer = AsyncPgConnection::establish(db.url()).await.unwrap();
    claimer.batch_execute("SET lock_timeout = 0").await.unwrap();
    let claimed = tokio::time::timeout(
        Duration::from_secs(30),
        claim(&mut claimer, worker_id, 2, 10, 1),
    )
    .await
    .expect("the lane was never given up")
    .unwrap();
    assert_eq!(claimed.len(), 10);
    assert!(diesel::sql_query("SELECT 1")
        .execute(&mut cut_off)
        .await
        .is_err());
}
