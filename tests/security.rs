//! Security: least-privilege roles (docs/roles.sql, tested as written)
//! and no SQL built from user strings.

mod support;

use support::roles::{as_user, connect, Roles};

use std::time::Duration;

use diesel_async::{AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use jobq::{EnqueueOptions, JobState};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Doc {
    text: String,
}

#[jobq::task(queue = "roles")]
async fn role_job(job: Doc) -> Result<(), jobq::TaskError> {
    let _ = job;
    Ok(())
}

/// A key-limited task: its claims read and write `jobq.key_walks`.
#[jobq::task(queue = "roles", key_concurrency = 1)]
async fn keyed_role_job(job: Doc) -> Result<(), jobq::TaskError> {
    let _ = job;
    Ok(())
}

fn denied(result: Result<(), String>, what: &str) {
    let err = result.expect_err(what);
    assert!(
        err.contains("permission denied") || err.contains("must be owner"),
        "{what}: unexpected error {err}"
    );
}

async fn exec(conn: &mut AsyncPgConnection, sql: &str) -> Result<(), String> {
    conn.batch_execute(sql).await.map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_sql_gives_app_and_worker_only_what_they_need() {
    support::init_tracing();
    let db = jobq_testkit::TestDatabase::create()
        .await
        .expect("database");
    let Roles { owner, worker, app } = Roles::create(db.url()).await;
    let mut admin = connect(db.url()).await;

    // The application enqueues and reads status...
    let mut as_app = connect(&as_user(db.url(), &app)).await;
    let id = role_job::enqueue(&mut as_app, &Doc { text: "hi".into() })
        .await
        .expect("app enqueues");
    let again = jobq::enqueue_with::<role_job>(
        &mut as_app,
        &Doc {
            text: "keyed".into(),
        },
        EnqueueOptions::new().dedupe_key("k"),
    )
    .await
    .expect("app enqueues with a dedupe key");
    let same = jobq::enqueue_with::<role_job>(
        &mut as_app,
        &Doc {
            text: "keyed".into(),
        },
        EnqueueOptions::new().dedupe_key("k"),
    )
    .await
    .expect("app dedupes");
    assert_eq!(again, same);
    let info = jobq::job(&mut as_app, id)
        .await
        .expect("app reads status")
        .expect("job");
    assert_eq!(info.state, JobState::Pending);
    // Idempotent submission and the reads that go with it.
    let keyed = || {
        EnqueueOptions::new()
            .unique_key("client-7/req-1")
            .unique_forever()
    };
    let doc = Doc {
        text: "unique".into(),
    };
    let first = role_job::enqueue_unique(&mut as_app, &doc, keyed())
        .await
        .expect("app submits under a unique key");
    let second = role_job::enqueue_unique(&mut as_app, &doc, keyed())
        .await
        .expect("app submits again");
    assert!(first.created && !second.created);
    assert_eq!(first.id, second.id);
    let by_key = jobq::job_by_key(&mut as_app, "role_job", "client-7/req-1")
        .await
        .expect("app looks a job up by key")
        .expect("job");
    assert_eq!(by_key.id, first.id);
    assert_eq!(
        role_job::output(&mut as_app, first.id)
            .await
            .expect("app reads an output"),
        None
    );
    // ...and nothing else.
    denied(
        exec(&mut as_app, "UPDATE jobq.jobs SET state = 'completed'").await,
        "app updates jobs",
    );
    denied(
        exec(&mut as_app, "DELETE FROM jobq.jobs").await,
        "app deletes jobs",
    );
    denied(
        exec(&mut as_app, "SELECT * FROM jobq.workers").await,
        "app reads workers",
    );
    denied(
        exec(&mut as_app, "DROP TABLE jobq.jobs").await,
        "app drops the table",
    );
    let cancel = jobq::cancel(&mut as_app, id).await;
    assert!(cancel.is_err(), "app cancelled without the optional grant");

    // The application awaits the job (registering it in jobq.awaited);
    // the worker's outcome statement runs the announcing trigger, which
    // reads that table with its owner's rights.
    let waiter = jobq::Waiter::connect(&as_user(db.url(), &app))
        .await
        .expect("app connects a waiter");
    let wait = tokio::spawn({
        let waiter = waiter.clone();
        async move { role_job::wait(&waiter, id, support::SOON).await }
    });
    support::wait_until("the app's wait to register", || async {
        waiter.waiting() == 1
    })
    .await;

    let keyed_id = keyed_role_job::enqueue_with(
        &mut as_app,
        &Doc {
            text: "keyed".into(),
        },
        EnqueueOptions::new().key("acct-1"),
    )
    .await
    .expect("app enqueues a keyed job");

    // The worker role starts (no DDL needed on a current schema) and runs
    // jobs, but cannot change the schema.
    let handle = jobq::Worker::builder()
        .database_url(as_user(db.url(), &worker))
        .queues(&["roles"])
        .poll_interval(Duration::from_millis(200))
        .lease(Duration::from_secs(2))
        .heartbeat_interval(Duration::from_millis(200))
        .maintenance_interval(Duration::from_millis(200))
        .build()
        .await
        .expect("worker role builds a worker")
        .spawn();
    let deadline = std::time::Instant::now() + support::SOON;
    loop {
        let state = jobq::job(&mut as_app, id)
            .await
            .expect("status")
            .expect("job");
        if state.state == JobState::Completed {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{state:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(wait.await.expect("wait task"), Ok(()), "the app's wait");
    support::wait_until("the key-limited job to complete", || async {
        jobq::job(&mut connect(&as_user(db.url(), &app)).await, keyed_id)
            .await
            .expect("status")
            .is_some_and(|j| j.state == JobState::Completed)
    })
    .await;
    handle.shutdown().await.expect("clean shutdown");
    let mut as_worker = connect(&as_user(db.url(), &worker)).await;
    // The worker role prunes completed jobs a segment at a time: it may
    // truncate one whose jobs are all past their retention.
    exec(
        &mut admin,
        "UPDATE jobq.completed_segments SET opened_at = now() - interval '3 hours', \
             closed_at = CASE WHEN segment = 0 THEN now() - interval '2 hours' END \
         WHERE segment IN (0, 1)",
    )
    .await
    .expect("the ring aged");
    let turned = jobq_diesel::turn_completed_segments(
        &mut as_worker,
        Duration::from_secs(60),
        jobq_diesel::TruncationWait::SHORTEST,
    )
    .await
    .expect("the worker role turns the ring");
    assert_eq!(turned.truncated, [0], "{turned:?}");
    denied(
        exec(&mut as_worker, "DROP TABLE jobq.jobs").await,
        "worker drops the table",
    );
    denied(
        exec(&mut as_worker, "CREATE TABLE jobq.intruder (x int)").await,
        "worker creates in the schema",
    );
    denied(
        exec(&mut as_worker, "ALTER TABLE jobq.jobs ADD COLUMN x int").await,
        "worker alters the table",
    );
    // A worker role cannot install the schema either: migrations are the
    // owner's job.
    let fresh = jobq_testkit::TestDatabase::create()
        .await
        .expect("database");
    let mut on_fresh = connect(&as_user(fresh.url(), &worker)).await;
    let err = jobq::migrate(&mut on_fresh)
        .await
        .expect_err("worker installed the schema");
    assert!(format!("{err:?}").contains("permission denied"), "{err:?}");

    // Neither role owns anything in the schema.
    #[derive(diesel::QueryableByName)]
    struct Owner {
        #[diesel(sql_type = diesel::sql_types::Text)]
        owner: String,
    }
    let owners: Vec<Owner> = diesel::sql_query(
        "SELECT DISTINCT tableowner::text AS owner FROM pg_tables WHERE schemaname = 'jobq' \
         UNION SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = 'jobq'",
    )
    .load(&mut admin)
    .await
    .expect("owners");
    let owners: Vec<String> = owners.into_iter().map(|o| o.owner).collect();
    assert_eq!(owners, vec![owner.clone()]);

    drop((as_app, as_worker, on_fresh));
    Roles { owner, worker, app }.drop_all(&mut admin).await;
}

// ------------------------------------------------------- hostile strings

const HOSTILE_TASK: &str = "it's; DROP TABLE jobq.jobs; --$$ \"x\" $tag$";

#[jobq::task(
    name = "it's; DROP TABLE jobq.jobs; --$$ \"x\" $tag$",
    queue = "q'; SELECT pg_sleep(30); --$$ with spaces"
)]
async fn hostile(job: Doc) -> Result<(), jobq::TaskError> {
    let _ = job;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_task_queue_and_dedupe_strings_round_trip_exactly() {
    let env = support::env().await;
    let queue = "q'; SELECT pg_sleep(30); --$$ with spaces";
    let key = "k'); DELETE FROM jobq.jobs; -- $$ \\ \u{e9}";
    let text = "'; DROP SCHEMA jobq CASCADE; --$$ \\\" \u{1F600}";
    let mut conn = env.conn().await;
    let id = jobq::enqueue_with::<hostile>(
        &mut conn,
        &Doc { text: text.into() },
        EnqueueOptions::new().dedupe_key(key),
    )
    .await
    .expect("enqueue");
    let same = jobq::enqueue_with::<hostile>(
        &mut conn,
        &Doc { text: text.into() },
        EnqueueOptions::new().dedupe_key(key),
    )
    .await
    .expect("enqueue again");
    assert_eq!(id, same, "the dedupe key matched itself");
    let other_queue = format!("{queue} 2");
    let many = jobq::enqueue_many_with::<hostile>(
        &mut conn,
        &[Doc { text: text.into() }],
        EnqueueOptions::new().queue(other_queue.clone()),
    )
    .await
    .expect("enqueue many");

    let info = env.job(id).await;
    assert_eq!(info.task, HOSTILE_TASK);
    assert_eq!(info.queue, queue);
    assert_eq!(info.dedupe_key.as_deref(), Some(key));
    assert_eq!(info.payload["text"], text);
    assert_eq!(env.job(many[0]).await.queue, other_queue);

    // A worker serving those queues is woken for them (the notification
    // carries the queue) and runs both jobs.
    let handle = env
        .worker()
        .queues(&[queue, &other_queue])
        .build()
        .await
        .expect("worker")
        .spawn();
    env.wait_state(id, JobState::Completed).await;
    env.wait_state(many[0], JobState::Completed).await;
    handle.shutdown().await.expect("shutdown");
    assert_eq!(env.count("SELECT count(*) AS n FROM jobq.jobs").await, 2);
    assert_eq!(
        env.count("SELECT count(*) AS n FROM pg_namespace WHERE nspname = 'jobq'")
            .await,
        1
    );
}
