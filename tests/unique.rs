//! Idempotent submission: unique keys and their scopes, concurrent
//! submissions at READ COMMITTED and REPEATABLE READ, the lookup by key,
//! hostile keys, and pruning that keeps keys held.

mod support;

use std::time::{Duration, Instant};

use diesel::sql_types::{BigInt, Text};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use jobq::{EnqueueOptions, Enqueued, JobId, JobState};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Charge {
    cents: u64,
}

#[jobq::task(queue = "payments")]
async fn charge(job: Charge) -> Result<(), jobq::TaskError> {
    let _ = job;
    Ok(())
}

#[jobq::task(queue = "payments")]
async fn refund(job: Charge) -> Result<(), jobq::TaskError> {
    let _ = job;
    Ok(())
}

fn key(k: &str) -> EnqueueOptions {
    EnqueueOptions::new().unique_key(k)
}

async fn submit(conn: &mut AsyncPgConnection, options: EnqueueOptions) -> Enqueued {
    charge::enqueue_unique(conn, &Charge { cents: 500 }, options)
        .await
        .expect("enqueue_unique")
}

/// Ends a job as a worker would have (the test needs no worker for this).
async fn finish(env: &support::Env, id: JobId, state: &str) {
    let mut conn = env.conn().await;
    diesel::sql_query(format!(
        "UPDATE jobq.jobs SET state = '{state}', finished_at = now() WHERE id = $1"
    ))
    .bind::<BigInt, _>(id.get())
    .execute(&mut conn)
    .await
    .unwrap();
}

/// Moves a job's times into the past, as if `age` had passed.
async fn age(env: &support::Env, id: JobId, age: &str) {
    let mut conn = env.conn().await;
    diesel::sql_query(format!(
        "UPDATE jobq.jobs SET created_at = created_at - interval '{age}', \
             finished_at = finished_at - interval '{age}', \
             unique_until = unique_until - interval '{age}' WHERE id = $1"
    ))
    .bind::<BigInt, _>(id.get())
    .execute(&mut conn)
    .await
    .unwrap();
}

async fn jobs_with_key(env: &support::Env, k: &str) -> i64 {
    #[derive(diesel::QueryableByName)]
    struct N {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let mut conn = env.conn().await;
    let row: N = diesel::sql_query("SELECT count(*) AS n FROM jobq.jobs WHERE unique_key = $1")
        .bind::<Text, _>(k)
        .get_result(&mut conn)
        .await
        .unwrap();
    row.n
}

#[tokio::test]
async fn while_active_the_key_returns_the_same_job_and_after_it_a_new_one() {
    let env = support::env().await;
    let mut conn = env.conn().await;
    let first = submit(&mut conn, key("client-7/req-123")).await;
    assert!(first.created);
    let again = submit(&mut conn, key("client-7/req-123")).await;
    assert_eq!((again.id, again.created), (first.id, false));
    let info = env.job(first.id).await;
    assert_eq!(info.unique_key.as_deref(), Some("client-7/req-123"));
    assert_eq!(info.state, JobState::Pending);
    assert_eq!(info.queue, "payments");

    finish(&env, first.id, "completed").await;
    let next = submit(&mut conn, key("client-7/req-123")).await;
    assert!(next.created);
    assert_ne!(next.id, first.id);
    // The lookup finds the key's latest job.
    let found = jobq::job_by_key(&mut conn, "charge", "client-7/req-123")
        .await
        .unwrap()
        .expect("a job holds the key");
    assert_eq!(found.id, next.id);
    assert_eq!(jobs_with_key(&env, "client-7/req-123").await, 2);
}

#[tokio::test]
async fn unique_for_holds_the_key_past_the_end_of_the_job_for_its_window() {
    let env = support::env().await;
    let mut conn = env.conn().await;
    let day = || key("req-1").unique_for(Duration::from_secs(86_400));
    let first = submit(&mut conn, day()).await;
    assert!(first.created);
    finish(&env, first.id, "failed").await;
    // Within the window: the failed job still answers for the key.
    let retry = submit(&mut conn, day()).await;
    assert_eq!((retry.id, retry.created), (first.id, false));
    // A day and a bit later, the key is free again.
    age(&env, first.id, "86401 seconds").await;
    let later = submit(&mut conn, day()).await;
    assert!(later.created);
    assert_ne!(later.id, first.id);
}

#[tokio::test]
async fn a_window_does_not_end_while_the_job_is_still_active() {
    let env = support::env().await;
    let mut conn = env.conn().await;
    let options = || key("slow").unique_for(Duration::from_secs(1));
    let first = submit(&mut conn, options()).await;
    age(&env, first.id, "1 hour").await;
    let again = submit(&mut conn, options()).await;
    assert_eq!((again.id, again.created), (first.id, false));
}

#[tokio::test]
async fn unique_forever_never_lets_go_of_the_key() {
    let env = support::env().await;
    let mut conn = env.conn().await;
    let first = submit(&mut conn, key("once").unique_forever()).await;
    finish(&env, first.id, "completed").await;
    age(&env, first.id, "3650 days").await;
    // Even a submission asking for a shorter scope meets the holder's.
    let again = submit(&mut conn, key("once")).await;
    assert_eq!((again.id, again.created), (first.id, false));
}

#[tokio::test]
async fn keys_are_per_task_and_enqueue_with_honours_them() {
    let env = support::env().await;
    let mut conn = env.conn().await;
    let a = submit(&mut conn, key("shared")).await;
    let b = refund::enqueue_unique(&mut conn, &Charge { cents: 1 }, key("shared"))
        .await
        .unwrap();
    assert!(a.created && b.created);
    assert_ne!(a.id, b.id);
    let via_with = charge::enqueue_with(&mut conn, &Charge { cents: 9 }, key("shared"))
        .await
        .unwrap();
    assert_eq!(via_with, a.id);
    assert_eq!(
        env.count("SELECT count(*) AS n FROM jobq.jobs").await,
        2,
        "enqueue_with under a held key inserts nothing"
    );
    let missing = jobq::job_by_key(&mut conn, "charge", "never used")
        .await
        .unwrap();
    assert!(missing.is_none());
}

#[tokio::test]
async fn misuse_of_the_options_is_refused_with_a_clear_error() {
    let env = support::env().await;
    let mut conn = env.conn().await;
    let payload = Charge { cents: 1 };
    let cases: Vec<(&str, EnqueueOptions, &str)> = vec![
        (
            "no key",
            EnqueueOptions::new(),
            "enqueue_unique needs EnqueueOptions::unique_key",
        ),
        (
            "window without key",
            EnqueueOptions::new().unique_for(Duration::from_secs(1)),
            "without a unique_key",
        ),
        (
            "an endless window",
            key("k").unique_for(Duration::MAX),
            "longer than 1,000 years",
        ),
        (
            "a window of two thousand years",
            key("k").unique_for(Duration::from_secs(2000 * 366 * 86_400)),
            "use unique_forever",
        ),
        (
            "both keys",
            key("k").dedupe_key("k"),
            "a unique_key or a dedupe_key, not both",
        ),
    ];
    for (what, options, expected) in cases {
        let error = charge::enqueue_unique(&mut conn, &payload, options)
            .await
            .expect_err(what)
            .to_string();
        assert!(error.contains(expected), "{what}: {error}");
    }
    let error = charge::enqueue_many_with(&mut conn, std::slice::from_ref(&payload), key("k"))
        .await
        .expect_err("enqueue_many_with with a key")
        .to_string();
    assert!(error.contains("use enqueue_unique"), "{error}");
    assert_eq!(env.count("SELECT count(*) AS n FROM jobq.jobs").await, 0);
}

#[tokio::test]
async fn hostile_keys_are_data() {
    let env = support::env().await;
    let mut conn = env.conn().await;
    let max = EnqueueOptions::MAX_UNIQUE_KEY_BYTES;
    let stored: Vec<(&str, String)> = vec![
        ("ascii", "client-7/req-123".into()),
        ("one byte", "x".into()),
        ("quotes and sql", "'; DROP TABLE jobq.jobs; --\"".into()),
        ("backslashes", "\\\\x00\\n".into()),
        ("like the hash's separators", "1:x:0".into()),
        ("like the hash's separators, shifted", "1:x".into()),
        ("whitespace", " \t\r\n ".into()),
        ("unicode", "ключ-🔑-鍵-\u{200b}-\u{fffd}".into()),
        ("percent and braces", "%s {} $1 ${x}".into()),
        ("control characters", "\u{1}\u{7}\u{1b}[31m".into()),
        ("at the limit", "k".repeat(max)),
        ("four-byte chars at the limit", "🔑".repeat(max / 4)),
    ];
    let mut ids = Vec::new();
    for (what, k) in &stored {
        let first = submit(&mut conn, key(k)).await;
        assert!(first.created, "{what}");
        let again = submit(&mut conn, key(k)).await;
        assert_eq!((again.id, again.created), (first.id, false), "{what}");
        let info = jobq::job_by_key(&mut conn, "charge", k)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{what}: not found by key"));
        assert_eq!(info.id, first.id, "{what}");
        assert_eq!(info.unique_key.as_deref(), Some(k.as_str()), "{what}");
        ids.push(first.id);
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), stored.len(), "every key has a job of its own");

    let refused: Vec<(&str, String, &str)> = vec![
        ("empty", String::new(), "the key is empty"),
        ("nul alone", "\0".into(), "U+0000"),
        ("nul inside", "req\0/123".into(), "U+0000 (at byte 3)"),
        (
            "one byte too long",
            "k".repeat(max + 1),
            "over the limit of 1024 bytes",
        ),
        ("huge", "k".repeat(10 * 1024 * 1024), "over the limit"),
    ];
    for (what, k, expected) in refused {
        let error = charge::enqueue_unique(&mut conn, &Charge { cents: 1 }, key(&k))
            .await
            .expect_err(what)
            .to_string();
        assert!(error.contains(expected), "{what}: {error}");
        assert!(error.len() < 300, "{what}: the error does not echo the key");
        // Looking such a key up finds nothing and fails nothing.
        let found = jobq::job_by_key(&mut conn, "charge", &k).await;
        assert!(matches!(found, Ok(None)), "{what}: {found:?}");
    }
    assert_eq!(
        env.count("SELECT count(*) AS n FROM jobq.jobs").await,
        stored.len() as i64
    );
}

/// The backend pid of a connection.
async fn backend_pid(conn: &mut AsyncPgConnection) -> i32 {
    #[derive(diesel::QueryableByName)]
    struct Pid {
        #[diesel(sql_type = diesel::sql_types::Integer)]
        pid: i32,
    }
    let row: Pid = diesel::sql_query("SELECT pg_backend_pid() AS pid")
        .get_result(conn)
        .await
        .unwrap();
    row.pid
}

/// Waits until the backend `pid` waits for a lock (another transaction).
async fn wait_blocked(env: &support::Env, pid: i32) {
    let deadline = Instant::now() + support::SOON;
    loop {
        let n = env
            .count(&format!(
                "SELECT count(*) AS n FROM pg_stat_activity \
                 WHERE pid = {pid} AND wait_event_type = 'Lock'"
            ))
            .await;
        if n == 1 {
            return;
        }
        assert!(Instant::now() < deadline, "backend {pid} never blocked");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Two transactions submit one key; the second waits on the first's
/// uncommitted job, which then commits. Both get its id, no error.
async fn concurrent_submissions(isolation: &str, options: fn() -> EnqueueOptions) {
    let env = support::env().await;
    let url = env.db.url().to_owned();
    let mut first = AsyncPgConnection::establish(&url).await.unwrap();
    let mut second = AsyncPgConnection::establish(&url).await.unwrap();
    let second_pid = backend_pid(&mut second).await;
    for conn in [&mut first, &mut second] {
        conn.batch_execute(&format!("BEGIN ISOLATION LEVEL {isolation}; SELECT 1"))
            .await
            .unwrap();
    }
    let winner = submit(&mut first, options()).await;
    assert!(winner.created);
    let waiting = tokio::spawn(async move {
        let result = charge::enqueue_unique(&mut second, &Charge { cents: 500 }, options()).await;
        second.batch_execute("COMMIT").await.unwrap();
        result
    });
    wait_blocked(&env, second_pid).await;
    first.batch_execute("COMMIT").await.unwrap();
    let loser = waiting
        .await
        .unwrap()
        .expect("the second submission succeeds");
    assert_eq!((loser.id, loser.created), (winner.id, false), "{isolation}");
    assert_eq!(jobs_with_key(&env, "race").await, 1, "{isolation}");
}

fn race_while_active() -> EnqueueOptions {
    key("race")
}

fn race_for_a_day() -> EnqueueOptions {
    key("race").unique_for(Duration::from_secs(86_400))
}

fn race_forever() -> EnqueueOptions {
    key("race").unique_forever()
}

#[tokio::test]
async fn concurrent_submissions_at_read_committed_make_one_job() {
    concurrent_submissions("READ COMMITTED", race_while_active).await;
}

#[tokio::test]
async fn concurrent_submissions_at_repeatable_read_make_one_job() {
    concurrent_submissions("REPEATABLE READ", race_while_active).await;
}

#[tokio::test]
async fn concurrent_submissions_with_a_window_at_repeatable_read_make_one_job() {
    concurrent_submissions("REPEATABLE READ", race_for_a_day).await;
}

#[tokio::test]
async fn concurrent_submissions_forever_at_serializable_make_one_job() {
    concurrent_submissions("SERIALIZABLE", race_forever).await;
}

/// The job holding the key committed after the second transaction's
/// snapshot was taken, so that transaction cannot see it at all; it
/// still gets its id.
#[tokio::test]
async fn a_holder_committed_after_a_repeatable_read_snapshot_is_still_found() {
    let env = support::env().await;
    let url = env.db.url().to_owned();
    let mut late = AsyncPgConnection::establish(&url).await.unwrap();
    late.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT 1")
        .await
        .unwrap();
    let mut conn = env.conn().await;
    let holder = submit(&mut conn, race_while_active()).await;
    assert!(holder.created);
    let seen = submit(&mut late, race_while_active()).await;
    assert_eq!((seen.id, seen.created), (holder.id, false));
    #[derive(diesel::QueryableByName)]
    struct N {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let visible: N = diesel::sql_query("SELECT count(*) AS n FROM jobq.jobs")
        .get_result(&mut late)
        .await
        .unwrap();
    assert_eq!(
        visible.n, 0,
        "the holder's row is invisible to this transaction"
    );
    late.batch_execute("COMMIT").await.unwrap();
    assert_eq!(jobs_with_key(&env, "race").await, 1);
}

#[tokio::test]
async fn a_rolled_back_submission_leaves_the_key_free() {
    let env = support::env().await;
    let mut conn = env.conn().await;
    let result: Result<(), jobq::Error> = conn
        .transaction(async |c| {
            let job = submit(c, key("rolled back")).await;
            assert!(job.created);
            Err(diesel::result::Error::RollbackTransaction.into())
        })
        .await;
    assert!(result.is_err());
    let job = submit(&mut conn, key("rolled back")).await;
    assert!(job.created);
}

#[tokio::test]
async fn pruning_keeps_finished_jobs_whose_key_is_still_held() {
    let env = support::env().await;
    let mut conn = env.conn().await;
    let active = submit(&mut conn, key("active")).await.id;
    let windowed = submit(
        &mut conn,
        key("window").unique_for(Duration::from_secs(86_400)),
    )
    .await
    .id;
    let expired = submit(
        &mut conn,
        key("expired").unique_for(Duration::from_secs(60)),
    )
    .await
    .id;
    let forever = submit(&mut conn, key("forever").unique_forever()).await.id;
    let fresh = submit(&mut conn, key("fresh").unique_for(Duration::from_secs(60)))
        .await
        .id;
    for id in [active, windowed, expired, forever] {
        finish(&env, id, "completed").await;
        // Finished an hour ago: far past a retention of one minute.
        age(&env, id, "1 hour").await;
    }
    // Its hold has ended, but it finished only now: within its retention.
    finish(&env, fresh, "failed").await;
    conn.batch_execute(&format!(
        "UPDATE jobq.jobs SET unique_until = now() - interval '1 second' WHERE id = {fresh}"
    ))
    .await
    .unwrap();
    let retention = jobq_diesel::Retention {
        completed: Duration::from_secs(60),
        failed: Duration::from_secs(60),
    };
    let pruned = jobq_diesel::prune(&mut conn, retention, 1000)
        .await
        .unwrap();
    assert_eq!(pruned, 2, "the active-scope job and the expired window go");
    let mut left = Vec::new();
    for id in [active, expired, windowed, forever, fresh] {
        left.push(jobq::job(&mut conn, id).await.unwrap().is_some());
    }
    assert_eq!(
        left,
        [false, false, true, true, true],
        "active, expired, windowed, forever, fresh"
    );
    // The kept jobs still answer for their keys.
    assert_eq!(
        submit(
            &mut conn,
            key("window").unique_for(Duration::from_secs(86_400))
        )
        .await
        .id,
        windowed
    );
}

#[tokio::test]
async fn delayed_unique_jobs_are_scheduled_and_hold_their_key() {
    let env = support::env().await;
    let mut conn = env.conn().await;
    let options = || key("later").delay(Duration::from_secs(3600)).priority(7);
    let job = submit(&mut conn, options()).await;
    let info = env.job(job.id).await;
    assert_eq!(info.state, JobState::Scheduled);
    assert_eq!(info.priority, 7);
    let again = submit(&mut conn, options()).await;
    assert_eq!((again.id, again.created), (job.id, false));
}

/// A REPEATABLE READ transaction whose snapshot predates two generations
/// of a key (the first finished and pruned, the second active) cannot
/// know the holder: it gets a serialization failure to retry, never a
/// second active job.
#[tokio::test]
async fn a_snapshot_older_than_two_generations_is_told_to_retry_not_given_a_second_job() {
    let env = support::env().await;
    let url = env.db.url().to_owned();
    let mut old = AsyncPgConnection::establish(&url).await.unwrap();
    old.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT 1")
        .await
        .unwrap();
    let mut conn = env.conn().await;
    let first = submit(&mut conn, race_while_active()).await.id;
    finish(&env, first, "completed").await;
    let second = submit(&mut conn, race_while_active()).await;
    assert!(second.created);
    assert_ne!(second.id, first);
    // The first generation is pruned; the old snapshot sees neither.
    diesel::sql_query("DELETE FROM jobq.jobs WHERE id = $1")
        .bind::<BigInt, _>(first.get())
        .execute(&mut conn)
        .await
        .unwrap();

    let error = charge::enqueue_unique(&mut old, &Charge { cents: 1 }, race_while_active())
        .await
        .expect_err("the old snapshot cannot know the holder");
    let text = format!("{error}: {:?}", std::error::Error::source(&error));
    assert!(text.contains("retry the transaction"), "{text}");
    assert!(
        matches!(
            &error,
            jobq::Error::Database {
                source: diesel::result::Error::DatabaseError(
                    diesel::result::DatabaseErrorKind::SerializationFailure,
                    _
                ),
                ..
            }
        ),
        "{error:?}"
    );
    old.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(jobs_with_key(&env, "race").await, 1);
    // A fresh transaction finds the holder.
    let again = submit(&mut old, race_while_active()).await;
    assert_eq!((again.id, again.created), (second.id, false));
}

#[tokio::test]
async fn a_window_of_nine_hundred_years_is_stored() {
    let env = support::env().await;
    let mut conn = env.conn().await;
    let window = Duration::from_secs(900 * 365 * 86_400);
    let job = submit(&mut conn, key("long").unique_for(window)).await;
    assert!(job.created);
    finish(&env, job.id, "completed").await;
    age(&env, job.id, "800 years").await;
    let again = submit(&mut conn, key("long").unique_for(window)).await;
    assert_eq!((again.id, again.created), (job.id, false));
}

/// Many transactions at READ COMMITTED and REPEATABLE READ submit one key
/// at once: one job, one id for all, no error. (At SERIALIZABLE,
/// PostgreSQL may abort some of a crowd of reading and writing
/// transactions with a serialization failure, to be retried, whatever
/// they do; that is not jobq's to promise away.)
#[tokio::test]
async fn a_crowd_of_submitters_agrees_on_one_job() {
    let env = support::env().await;
    let url = env.db.url().to_owned();
    let levels = ["READ COMMITTED", "REPEATABLE READ"];
    let mut conns = Vec::new();
    for i in 0..24 {
        let mut conn = AsyncPgConnection::establish(&url).await.unwrap();
        conn.batch_execute(&format!(
            "BEGIN ISOLATION LEVEL {}; SELECT 1",
            levels[i % levels.len()]
        ))
        .await
        .unwrap();
        conns.push(conn);
    }
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(conns.len()));
    let submitters: Vec<_> = conns
        .into_iter()
        .map(|mut conn| {
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                let job = charge::enqueue_unique(&mut conn, &Charge { cents: 1 }, race_for_a_day())
                    .await
                    .expect("every submission succeeds");
                conn.batch_execute("COMMIT").await.expect("and commits");
                job
            })
        })
        .collect();
    let mut jobs = Vec::new();
    for s in submitters {
        jobs.push(s.await.unwrap());
    }
    assert_eq!(jobs.iter().filter(|j| j.created).count(), 1, "{jobs:?}");
    assert!(jobs.iter().all(|j| j.id == jobs[0].id), "{jobs:?}");
    assert_eq!(jobs_with_key(&env, "race").await, 1);
}
