//! The ring of completed jobs' segments: where finished jobs land, how
//! maintenance turns the ring and truncates what is past its retention,
//! and the upgrade that introduced it.

mod support;

use std::time::{Duration, Instant};

use diesel::sql_types::{Nullable, SmallInt, Text};
use diesel::QueryableByName;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use jobq_diesel::{Outcome, OutcomeKind, TruncationWait, Turned};
use jobq_testkit::TestDatabase;
use support::{flag, number, setup};

/// The last migration before the ring, and the ring.
const BEFORE_RING: i64 = 20261206000100;
const RING: i64 = 20261207000100;

const HOUR: Duration = Duration::from_secs(3600);

/// How long the tests' truncations wait for readers.
const WAIT: Duration = TruncationWait::SHORTEST;

/// A job of `task` running its first attempt; `held` gives it a unique key
/// held for an hour past its end.
async fn running(conn: &mut AsyncPgConnection, task: &str, held: bool) -> i64 {
    let until = if held {
        "now() + interval '1 hour'"
    } else {
        "NULL"
    };
    number(
        conn,
        &format!(
            "INSERT INTO jobq.jobs (task, payload, state, attempt, started_at, unique_key, \
                                    unique_gen, unique_until) \
             VALUES ('{task}', '{{}}', 'running', 1, now(), \
                     CASE WHEN {held} THEN 'k-' || '{task}' END, CASE WHEN {held} THEN 1 END, \
                     {until}) \
             RETURNING id AS n"
        ),
    )
    .await
}

fn outcome(id: i64, kind: OutcomeKind) -> Outcome {
    Outcome {
        id,
        attempt: 1,
        kind,
        message: None,
        output: None,
    }
}

/// Completes `n` jobs of `task` through the workers' cheap statement.
async fn complete(conn: &mut AsyncPgConnection, task: &str, n: usize) -> Vec<i64> {
    let mut ids = Vec::new();
    for _ in 0..n {
        ids.push(running(conn, task, false).await);
    }
    let outcomes: Vec<Outcome> = ids
        .iter()
        .map(|&id| outcome(id, OutcomeKind::Completed))
        .collect();
    let rejected = jobq_diesel::write_outcomes(conn, &outcomes, &[])
        .await
        .unwrap();
    assert!(rejected.is_empty(), "{rejected:?}");
    ids
}

#[derive(QueryableByName, Debug, PartialEq, Eq)]
struct Placed {
    #[diesel(sql_type = Text)]
    task: String,
    #[diesel(sql_type = Text)]
    partition: String,
}

async fn placed(conn: &mut AsyncPgConnection) -> Vec<(String, String)> {
    diesel::sql_query(
        "SELECT task, tableoid::regclass::text AS partition FROM jobq.jobs ORDER BY task, id",
    )
    .load::<Placed>(conn)
    .await
    .unwrap()
    .into_iter()
    .map(|p| (p.task, p.partition))
    .collect()
}

fn place(task: &str, partition: &str) -> (String, String) {
    (task.to_owned(), partition.to_owned())
}

#[derive(QueryableByName, Debug, PartialEq, Eq)]
struct Segment {
    #[diesel(sql_type = SmallInt)]
    segment: i16,
    #[diesel(sql_type = Nullable<Text>)]
    state: Option<String>,
}

/// Each segment: "open", "closed" or None (empty).
async fn segments(conn: &mut AsyncPgConnection) -> Vec<Option<&'static str>> {
    let rows: Vec<Segment> = diesel::sql_query(
        "SELECT segment, CASE WHEN closed_at IS NOT NULL THEN 'closed' \
                              WHEN opened_at IS NOT NULL THEN 'open' END AS state \
         FROM jobq.completed_segments ORDER BY segment",
    )
    .load(conn)
    .await
    .unwrap();
    assert_eq!(rows.len(), 8);
    rows.into_iter()
        .map(|r| match r.state.as_deref() {
            Some("open") => Some("open"),
            Some("closed") => Some("closed"),
            _ => None,
        })
        .collect()
}

/// Moves the ring's clock back: every timestamp of segment `s` by `by`.
async fn age_segment(conn: &mut AsyncPgConnection, s: i16, by: Duration) {
    conn.batch_execute(&format!(
        "UPDATE jobq.completed_segments \
         SET opened_at = opened_at - interval '{ms} milliseconds', \
             closed_at = closed_at - interval '{ms} milliseconds' \
         WHERE segment = {s}",
        ms = by.as_millis()
    ))
    .await
    .unwrap();
}

#[tokio::test]
async fn completed_jobs_go_to_the_open_segment_and_every_other_finished_job_is_kept() {
    let (_db, mut conn) = setup().await;
    complete(&mut conn, "done", 2).await;
    // The general statement: a batch mixing kinds of outcome.
    let held = running(&mut conn, "held", true).await;
    let failed = running(&mut conn, "failed", false).await;
    let with_output = running(&mut conn, "output", false).await;
    let cancelled = running(&mut conn, "cancelled", false).await;
    let outcomes = [
        outcome(held, OutcomeKind::Completed),
        outcome(failed, OutcomeKind::Failed),
        Outcome {
            output: Some("{\"answer\": 42}".to_owned()),
            ..outcome(with_output, OutcomeKind::Completed)
        },
        outcome(cancelled, OutcomeKind::Cancelled),
    ];
    let rejected = jobq_diesel::write_outcomes(&mut conn, &outcomes, &[])
        .await
        .unwrap();
    assert!(rejected.is_empty(), "{rejected:?}");
    // Finished by an UPDATE (a handler's complete_in, an operator).
    let updated = running(&mut conn, "updated", false).await;
    conn.batch_execute(&format!(
        "UPDATE jobq.jobs SET state = 'completed', finished_at = now() WHERE id = {updated}"
    ))
    .await
    .unwrap();

    assert_eq!(
        placed(&mut conn).await,
        [
            place("cancelled", "jobq.jobs_finished_kept"),
            place("done", "jobq.jobs_completed_0"),
            place("done", "jobq.jobs_completed_0"),
            place("failed", "jobq.jobs_finished_kept"),
            place("held", "jobq.jobs_finished_kept"),
            place("output", "jobq.jobs_completed_0"),
            place("updated", "jobq.jobs_finished_kept"),
        ]
    );
    // A segment's job reads like any other.
    let job = jobq_diesel::find_job(&mut conn, with_output)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(job.state, "completed");
    assert_eq!(
        jobq_diesel::find_output(&mut conn, with_output)
            .await
            .unwrap()
            .and_then(|o| o.output),
        Some("{\"answer\": 42}".to_owned())
    );
}

#[tokio::test]
async fn a_segment_never_takes_a_job_kept_longer_than_completed_ones() {
    let (_db, mut conn) = setup().await;
    let id = running(&mut conn, "t", false).await;
    let err = conn
        .batch_execute(&format!(
            "UPDATE jobq.jobs SET state = 'failed', finished_at = now(), completed_segment = 0 \
             WHERE id = {id}"
        ))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("jobs_completed_0_check"), "{err}");
}

#[tokio::test]
async fn the_ring_turns_after_a_quarter_of_the_retention_and_truncates_what_is_past_it() {
    let (_db, mut conn) = setup().await;
    let first = complete(&mut conn, "first", 3).await;
    assert_eq!(
        segments(&mut conn).await,
        [Some("open"), None, None, None, None, None, None, None]
    );

    // Open for less than a quarter of the retention: stays open.
    age_segment(&mut conn, 0, Duration::from_secs(14 * 60)).await;
    let turned = jobq_diesel::turn_completed_segments(&mut conn, HOUR, WAIT)
        .await
        .unwrap();
    assert_eq!(turned, Turned::default());

    // Past it: closed, and the next one takes the completions.
    age_segment(&mut conn, 0, Duration::from_secs(60)).await;
    let turned = jobq_diesel::turn_completed_segments(&mut conn, HOUR, WAIT)
        .await
        .unwrap();
    assert_eq!(
        (turned.opened, turned.truncated.len()),
        (Some(1), 0),
        "{turned:?}"
    );
    complete(&mut conn, "second", 2).await;
    assert_eq!(
        placed(&mut conn).await,
        [
            place("first", "jobq.jobs_completed_0"),
            place("first", "jobq.jobs_completed_0"),
            place("first", "jobq.jobs_completed_0"),
            place("second", "jobq.jobs_completed_1"),
            place("second", "jobq.jobs_completed_1"),
        ]
    );

    // Closed less than the retention ago: its jobs stay.
    age_segment(&mut conn, 0, Duration::from_secs(58 * 60)).await;
    let turned = jobq_diesel::turn_completed_segments(&mut conn, HOUR, WAIT)
        .await
        .unwrap();
    assert!(turned.truncated.is_empty(), "{turned:?}");
    assert!(jobq_diesel::find_job(&mut conn, first[0])
        .await
        .unwrap()
        .is_some());

    // Closed more than the retention ago: truncated, the rest untouched.
    age_segment(&mut conn, 0, Duration::from_secs(3 * 60)).await;
    let turned = jobq_diesel::turn_completed_segments(&mut conn, HOUR, WAIT)
        .await
        .unwrap();
    assert_eq!(turned.truncated, [0]);
    assert_eq!(
        placed(&mut conn).await,
        [
            place("second", "jobq.jobs_completed_1"),
            place("second", "jobq.jobs_completed_1"),
        ]
    );
    assert!(jobq_diesel::find_job(&mut conn, first[0])
        .await
        .unwrap()
        .is_none());
    assert_eq!(
        segments(&mut conn).await,
        [None, Some("open"), None, None, None, None, None, None]
    );
}

#[tokio::test]
async fn a_full_ring_keeps_its_open_segment_open_rather_than_prune_early() {
    let (_db, mut conn) = setup().await;
    // Every segment closed within the retention but the open one.
    conn.batch_execute(
        "UPDATE jobq.completed_segments SET opened_at = now() - interval '2 hours', \
             closed_at = now() - interval '30 minutes' WHERE segment <> 3; \
         UPDATE jobq.completed_segments SET opened_at = now() - interval '2 hours', \
             closed_at = NULL WHERE segment = 3",
    )
    .await
    .unwrap();
    complete(&mut conn, "t", 1).await;
    let turned = jobq_diesel::turn_completed_segments(&mut conn, HOUR, WAIT)
        .await
        .unwrap();
    assert_eq!(turned, Turned::default());
    assert_eq!(
        placed(&mut conn).await,
        [place("t", "jobq.jobs_completed_3")]
    );

    // Once the next one is past the retention, it is truncated and opened.
    age_segment(&mut conn, 4, HOUR).await;
    let turned = jobq_diesel::turn_completed_segments(&mut conn, HOUR, WAIT)
        .await
        .unwrap();
    assert_eq!((turned.truncated, turned.opened), (vec![4], Some(4)));
}

/// Jobs `t` completed into segment 0, closed since long past the hour's
/// retention, and a transaction that read the first of them (so holds
/// every partition's lock, its segment's among them) still open on the
/// returned connection. Returns the jobs' ids.
async fn a_segment_due_and_a_reader(
    db: &TestDatabase,
    conn: &mut AsyncPgConnection,
    jobs: usize,
) -> (Vec<i64>, AsyncPgConnection) {
    let ids = complete(conn, "t", jobs).await;
    age_segment(conn, 0, 2 * HOUR).await;
    jobq_diesel::turn_completed_segments(conn, HOUR, WAIT)
        .await
        .unwrap();
    age_segment(conn, 0, 2 * HOUR).await;
    let mut reader = AsyncPgConnection::establish(db.url()).await.unwrap();
    reader.batch_execute("BEGIN").await.unwrap();
    assert!(jobq_diesel::find_job(&mut reader, ids[0])
        .await
        .unwrap()
        .is_some());
    (ids, reader)
}

#[tokio::test]
async fn a_reader_of_a_segment_delays_its_truncation_without_being_blocked() {
    let (db, mut conn) = setup().await;
    let (ids, mut reader) = a_segment_due_and_a_reader(&db, &mut conn, 2).await;
    let started = Instant::now();
    let turned = jobq_diesel::turn_completed_segments(&mut conn, HOUR, WAIT)
        .await
        .unwrap();
    assert_eq!(turned.busy, [0], "{turned:?}");
    assert!(turned.truncated.is_empty());
    // The truncation gave up after its short wait, so the reader (and
    // whoever queued behind the truncation) went on.
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(jobq_diesel::find_job(&mut reader, ids[1])
        .await
        .unwrap()
        .is_some());
    reader.batch_execute("COMMIT").await.unwrap();

    let turned = jobq_diesel::turn_completed_segments(&mut conn, HOUR, WAIT)
        .await
        .unwrap();
    assert_eq!(turned.truncated, [0]);
    assert_eq!(
        number(&mut conn, "SELECT count(*) AS n FROM jobq.jobs").await,
        0
    );
}

#[tokio::test]
async fn a_longer_wait_outlasts_a_reader_the_first_wait_did_not() {
    let (db, mut conn) = setup().await;
    // The reader lets go after 300 ms.
    let (_, mut reader) = a_segment_due_and_a_reader(&db, &mut conn, 1).await;
    let reading = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        reader.batch_execute("COMMIT").await.unwrap();
    });
    let turned = jobq_diesel::turn_completed_segments(&mut conn, HOUR, WAIT)
        .await
        .unwrap();
    assert_eq!(turned.busy, [0]);
    let mut wait = TruncationWait::new();
    for _ in 0..5 {
        wait.after(&turned);
    }
    assert_eq!(wait.next(), TruncationWait::LONGEST);
    let turned = jobq_diesel::turn_completed_segments(&mut conn, HOUR, wait.next())
        .await
        .unwrap();
    assert_eq!(turned.truncated, [0], "{turned:?}");
    reading.await.unwrap();
}

#[tokio::test]
async fn one_worker_at_a_time_turns_the_ring() {
    let (db, mut conn) = setup().await;
    age_segment(&mut conn, 0, 2 * HOUR).await;
    let mut other = AsyncPgConnection::establish(db.url()).await.unwrap();
    other
        .batch_execute("BEGIN; SELECT pg_advisory_xact_lock(7669456929825582695)")
        .await
        .unwrap();
    let turned = jobq_diesel::turn_completed_segments(&mut conn, HOUR, WAIT)
        .await
        .unwrap();
    assert_eq!(turned, Turned::default(), "another holds the ring's lock");
    other.batch_execute("COMMIT").await.unwrap();
    let turned = jobq_diesel::turn_completed_segments(&mut conn, HOUR, WAIT)
        .await
        .unwrap();
    assert_eq!(turned.opened, Some(1));
}

#[tokio::test]
async fn upgrading_keeps_every_finished_job_grant_and_trigger() {
    let db = TestDatabase::create().await.unwrap();
    let mut conn = AsyncPgConnection::establish(db.url()).await.unwrap();
    jobq_diesel::migrate_to(&mut conn, BEFORE_RING)
        .await
        .unwrap();
    let worker = format!("ring_w_{}_{}", std::process::id(), db.name());
    let app = format!("ring_a_{}_{}", std::process::id(), db.name());
    conn.batch_execute(&format!(
        "CREATE ROLE \"{worker}\"; CREATE ROLE \"{app}\"; \
         GRANT USAGE ON SCHEMA jobq TO \"{worker}\", \"{app}\"; \
         GRANT SELECT, INSERT, UPDATE, DELETE ON jobq.jobs, jobq.jobs_active, \
             jobq.jobs_finished TO \"{worker}\"; \
         GRANT SELECT ON jobq.jobs_finished TO \"{app}\"; \
         INSERT INTO jobq.jobs (task, payload, state, finished_at, output) \
             SELECT 'done', '{{}}', 'completed', now(), '{{\"n\": 1}}' FROM generate_series(1, 3); \
         INSERT INTO jobq.jobs (task, payload, state, finished_at) \
             VALUES ('broke', '{{}}', 'failed', now()), ('dropped', '{{}}', 'cancelled', now()); \
         INSERT INTO jobq.jobs (task, payload) VALUES ('due', '{{}}'); \
         CREATE TABLE public.seen (op text, state text); \
         CREATE FUNCTION public.note() RETURNS trigger LANGUAGE plpgsql AS \
             $$BEGIN INSERT INTO public.seen VALUES (TG_OP, NEW.state); RETURN NULL; END$$; \
         CREATE TRIGGER app_note AFTER INSERT OR UPDATE ON jobq.jobs \
             FOR EACH ROW EXECUTE FUNCTION public.note();"
    ))
    .await
    .unwrap();
    let before = number(
        &mut conn,
        "SELECT count(*) AS n FROM jobq.jobs WHERE state IN ('completed', 'failed', 'cancelled')",
    )
    .await;

    let applied = jobq_diesel::migrate(&mut conn).await.unwrap();
    assert_eq!(applied[0], RING);
    assert_eq!(
        placed(&mut conn).await,
        [
            place("broke", "jobq.jobs_finished_kept"),
            place("done", "jobq.jobs_finished_kept"),
            place("done", "jobq.jobs_finished_kept"),
            place("done", "jobq.jobs_finished_kept"),
            place("dropped", "jobq.jobs_finished_kept"),
            place("due", "jobq.jobs_active"),
        ]
    );
    assert_eq!(
        number(
            &mut conn,
            "SELECT count(*) AS n FROM jobq.jobs \
             WHERE state IN ('completed', 'failed', 'cancelled')",
        )
        .await,
        before
    );
    assert!(
        flag(
            &mut conn,
            "SELECT bool_and(output = '{\"n\": 1}') AS yes FROM jobq.jobs WHERE task = 'done'"
        )
        .await
    );

    // The worker's role may write the new partitions, truncate segments
    // and turn the ring; the application's may read, and no more.
    for (role, privilege, table, expected) in [
        (&worker, "INSERT", "jobq.jobs_finished", true),
        (&worker, "DELETE", "jobq.jobs_completed_5", true),
        (&worker, "TRUNCATE", "jobq.jobs_completed_0", true),
        (&worker, "TRUNCATE", "jobq.jobs_completed_7", true),
        (&worker, "UPDATE", "jobq.completed_segments", true),
        (&worker, "SELECT", "jobq.completed_segments", true),
        (&app, "SELECT", "jobq.jobs_finished", true),
        (&app, "SELECT", "jobq.jobs_completed_2", true),
        (&app, "TRUNCATE", "jobq.jobs_completed_0", false),
        (&app, "UPDATE", "jobq.completed_segments", false),
    ] {
        assert_eq!(
            flag(
                &mut conn,
                &format!("SELECT has_table_privilege('{role}', '{table}', '{privilege}') AS yes"),
            )
            .await,
            expected,
            "{privilege} on {table} for {role}"
        );
    }

    // The application's row trigger on jobq.jobs sees a job finish once,
    // in a segment and in the kept partition alike.
    conn.batch_execute("DELETE FROM public.seen").await.unwrap();
    complete(&mut conn, "after", 1).await;
    let failed = running(&mut conn, "after.failed", false).await;
    jobq_diesel::write_outcomes(&mut conn, &[outcome(failed, OutcomeKind::Failed)], &[])
        .await
        .unwrap();
    assert_eq!(
        number(
            &mut conn,
            "SELECT count(*) AS n FROM public.seen WHERE op = 'INSERT' AND state = 'completed'"
        )
        .await,
        1
    );
    assert_eq!(
        number(
            &mut conn,
            "SELECT count(*) AS n FROM public.seen WHERE op = 'INSERT' AND state = 'failed'"
        )
        .await,
        1
    );
    // The worker's role turns the ring with what the upgrade granted.
    conn.batch_execute(&format!(
        "UPDATE jobq.completed_segments SET opened_at = opened_at - interval '2 hours'; \
         SET ROLE \"{worker}\""
    ))
    .await
    .unwrap();
    let turned = jobq_diesel::turn_completed_segments(&mut conn, HOUR, WAIT)
        .await
        .unwrap();
    assert_eq!(turned.opened, Some(1));
    conn.batch_execute(&format!(
        "RESET ROLE; UPDATE jobq.completed_segments \
             SET opened_at = opened_at - interval '2 hours', \
                 closed_at = closed_at - interval '2 hours' WHERE segment = 0; \
         SET ROLE \"{worker}\""
    ))
    .await
    .unwrap();
    let turned = jobq_diesel::turn_completed_segments(&mut conn, HOUR, WAIT)
        .await
        .unwrap();
    assert_eq!(turned.truncated, [0]);
    conn.batch_execute(&format!(
        "RESET ROLE; DROP OWNED BY \"{worker}\"; DROP ROLE \"{worker}\"; \
         DROP OWNED BY \"{app}\"; DROP ROLE \"{app}\""
    ))
    .await
    .unwrap();
}
