//! A worker role that may not truncate the segments of completed jobs
//! (a deployment that kept an older roles.sql): the maintenance pass says
//! so once, and goes on with the rest of its work every pass.

mod support;

use std::time::Duration;

use diesel_async::SimpleAsyncConnection;
use support::logs;
use support::roles::{as_user, connect, Roles};

#[jobq::task(queue = "segments_denied")]
async fn unused(job: u32) -> Result<(), jobq::TaskError> {
    let _ = job;
    Ok(())
}

const WARNING: &str = "completed jobs are not pruned a segment at a time";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_truncate_the_pass_warns_once_and_does_the_rest() {
    logs::capture("warn,jobq=info");
    let db = jobq_testkit::TestDatabase::create()
        .await
        .expect("database");
    let roles = Roles::create(db.url()).await;
    let mut admin = connect(db.url()).await;
    let segments: Vec<String> = (0..8).map(|n| format!("jobq.jobs_completed_{n}")).collect();
    admin
        .batch_execute(&format!(
            "REVOKE TRUNCATE ON {} FROM \"{}\"",
            segments.join(", "),
            roles.worker
        ))
        .await
        .expect("revoke");
    // A segment due for truncation: every pass tries, and is refused.
    admin
        .batch_execute(
            "UPDATE jobq.completed_segments SET opened_at = now() - interval '3 hours', \
                 closed_at = CASE WHEN segment = 0 THEN now() - interval '2 hours' END \
             WHERE segment IN (0, 1)",
        )
        .await
        .expect("the ring aged");
    let handle = jobq::Worker::builder()
        .database_url(as_user(db.url(), &roles.worker))
        .queues(&["segments_denied"])
        .maintenance_interval(Duration::from_millis(100))
        .build()
        .await
        .expect("worker")
        .spawn();
    // The pass goes on past the refusal: the registration of a long-gone
    // waiter, cleaned up after the segments' turn, goes; twice, so that
    // several refused passes have gone by.
    for waiter in [1, 2] {
        admin
            .batch_execute(&format!(
                "INSERT INTO jobq.awaited (job_id, waiter, since) \
                 VALUES (1, {waiter}, now() - interval '2 days')"
            ))
            .await
            .expect("a stale registration");
        let url = db.url();
        support::wait_until("the stale registration to go", || async move {
            let mut conn = connect(url).await;
            support::count_in(&mut conn, "SELECT count(*) AS n FROM jobq.awaited").await == 0
        })
        .await;
    }
    handle.shutdown().await.expect("clean shutdown");
    let warnings = logs::lines(&[WARNING]);
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    assert!(warnings[0].contains("permission denied"), "{}", warnings[0]);
    // Everything else roles.sql lets the worker do: nothing else failed.
    let failed = logs::lines(&["maintenance failed"]);
    assert!(failed.is_empty(), "{failed:#?}");
    drop(admin);
    roles.drop_all(&mut connect(db.url()).await).await;
}
