//! Awaiting a job: `my_task::wait(&waiter, id, timeout)` resolves with the
//! typed output, the failure, the cancellation, a timeout or "no such job",
//! for any number of concurrent waits on one connection, and loses no
//! wake-up when its connection is killed while jobs finish.

mod support;

use std::time::Duration;

use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use jobq::{JobId, JobState, WaitError, Waiter};
use serde::{Deserialize, Serialize};
use support::SOON;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Shape {
    n: u32,
    /// "ok" or "fail".
    kind: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Area {
    n: u32,
    label: String,
}

/// What the error text of a failed job holds: quotes, backslashes,
/// non-ASCII, newlines; it must come back to the waiter intact.
const HOSTILE: &str = "no luck: \"quoted\" \\ back\\slash ünï ✓\nsecond line; DROP TABLE x;--";

#[jobq::task(queue = "wait", max_attempts = 1)]
async fn area(job: Shape) -> Result<Area, jobq::TaskError> {
    if job.kind == "fail" {
        return Err(jobq::TaskError::msg(HOSTILE));
    }
    Ok(Area {
        n: job.n,
        label: format!("área {} \"sq\"", job.n * job.n),
    })
}

#[jobq::task(queue = "wait")]
async fn unit(job: Shape) -> Result<(), jobq::TaskError> {
    let _ = job;
    Ok(())
}

fn shape(n: u32, kind: &str) -> Shape {
    Shape {
        n,
        kind: kind.into(),
    }
}

fn expected(n: u32) -> Area {
    Area {
        n,
        label: format!("área {} \"sq\"", n * n),
    }
}

fn worker(env: &support::Env) -> jobq::WorkerBuilder {
    env.worker().queues(["wait"])
}

/// The database URL with an application name, to find the waiter's
/// backend in `pg_stat_activity`.
fn named_url(env: &support::Env, name: &str) -> String {
    let url = env.db.url();
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}application_name={name}")
}

#[tokio::test]
async fn a_completed_job_resolves_with_its_typed_output_and_a_unit_task_with_unit() {
    let env = support::env().await;
    let waiter = Waiter::from_pool(&env.pool).await.unwrap();
    let mut conn = env.conn().await;
    let id = area::enqueue(&mut conn, &shape(7, "ok")).await.unwrap();
    let done = unit::enqueue(&mut conn, &shape(1, "ok")).await.unwrap();
    let handle = worker(&env).build().await.unwrap().spawn();
    let (out, unit_out) = tokio::join!(
        area::wait(&waiter, id, SOON),
        unit::wait(&waiter, done, SOON)
    );
    handle.shutdown().await.unwrap();
    assert_eq!(out, Ok(expected(7)));
    assert_eq!(unit_out, Ok(()));
    assert_eq!(waiter.waiting(), 0, "finished waits leave nothing behind");
}

#[tokio::test]
async fn a_failed_job_resolves_with_its_last_error_text_intact() {
    let env = support::env().await;
    let waiter = Waiter::connect(env.db.url()).await.unwrap();
    let mut conn = env.conn().await;
    let id = area::enqueue(&mut conn, &shape(1, "fail")).await.unwrap();
    let handle = worker(&env).build().await.unwrap().spawn();
    let result = area::wait(&waiter, id, SOON).await;
    handle.shutdown().await.unwrap();
    match result {
        Err(WaitError::Failed { id: got, error }) => {
            assert_eq!(got, id);
            let error = error.expect("an error message");
            assert!(error.contains(HOSTILE), "{error:?}");
        }
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[tokio::test]
async fn a_cancelled_job_resolves_as_cancelled() {
    let env = support::env().await;
    let waiter = Waiter::from_pool(&env.pool).await.unwrap();
    let mut conn = env.conn().await;
    // No worker: the job stays pending until cancelled.
    let id = area::enqueue(&mut conn, &shape(1, "ok")).await.unwrap();
    let wait = tokio::spawn({
        let waiter = waiter.clone();
        async move { area::wait(&waiter, id, SOON).await }
    });
    support::wait_until("the wait to register", || async { waiter.waiting() == 1 }).await;
    jobq::cancel(&mut conn, id).await.unwrap();
    assert_eq!(wait.await.unwrap(), Err(WaitError::Cancelled { id }));
}

#[tokio::test]
async fn a_wait_times_out_and_a_dropped_wait_deregisters() {
    let env = support::env().await;
    let waiter = Waiter::from_pool(&env.pool).await.unwrap();
    let mut conn = env.conn().await;
    let id = area::enqueue(&mut conn, &shape(1, "ok")).await.unwrap();
    let timeout = Duration::from_millis(300);
    let started = std::time::Instant::now();
    assert_eq!(
        area::wait(&waiter, id, timeout).await,
        Err(WaitError::Timeout { id, timeout })
    );
    assert!(started.elapsed() >= timeout);
    assert_eq!(waiter.waiting(), 0);
    // Its registration in the database goes too (the job is unfinished,
    // so no look-up removed it).
    support::wait_until("the timed-out wait's row to go", || async {
        awaited_rows(&mut *env.conn().await, None).await == 0
    })
    .await;

    // A wait abandoned half-way (a client gone, a select! that chose
    // another branch) leaves no entry behind.
    let abandoned = tokio::spawn({
        let waiter = waiter.clone();
        async move { area::wait(&waiter, id, SOON).await }
    });
    support::wait_until("the wait to register", || async { waiter.waiting() == 1 }).await;
    abandoned.abort();
    support::wait_until("the aborted wait to deregister", || async {
        waiter.waiting() == 0
    })
    .await;
    // The job is still pending: the timeout said nothing about it.
    assert_eq!(env.job(id).await.state, JobState::Pending);
}

#[tokio::test]
async fn a_job_finished_before_the_wait_resolves_at_once_and_missing_or_foreign_jobs_are_told() {
    let env = support::env().await;
    let waiter = Waiter::from_pool(&env.pool).await.unwrap();
    let mut conn = env.conn().await;
    let id = area::enqueue(&mut conn, &shape(3, "ok")).await.unwrap();
    let handle = worker(&env).build().await.unwrap().spawn();
    env.wait_state(id, JobState::Completed).await;
    handle.shutdown().await.unwrap();
    // Long poll interval: only the wait's own first look-up can find it.
    let slow_poll = Waiter::builder()
        .poll_interval(Duration::from_secs(3600))
        .pool(&env.pool)
        .await
        .unwrap();
    assert_eq!(area::wait(&slow_poll, id, SOON).await, Ok(expected(3)));
    assert_eq!(area::wait(&waiter, id, SOON).await, Ok(expected(3)));

    let missing = JobId::from(i64::MAX);
    assert_eq!(
        area::wait(&waiter, missing, SOON).await,
        Err(WaitError::NotFound { id: missing })
    );
    match unit::wait(&waiter, id, SOON).await {
        Err(WaitError::WrongTask { task, expected, .. }) => {
            assert_eq!(task, "area");
            assert_eq!(expected, "unit");
        }
        other => panic!("expected a wrong-task error, got {other:?}"),
    }
}

#[tokio::test]
async fn many_concurrent_waits_on_many_jobs_each_get_their_own_output() {
    let env = support::env().await;
    let waiter = Waiter::connect(env.db.url()).await.unwrap();
    let mut conn = env.conn().await;
    let payloads: Vec<Shape> = (0..300).map(|n| shape(n, "ok")).collect();
    let ids = area::enqueue_many(&mut conn, &payloads).await.unwrap();
    // Three waits per job, all started before any job runs.
    let mut waits = tokio::task::JoinSet::new();
    for (n, id) in ids.iter().copied().enumerate() {
        for _ in 0..3 {
            let waiter = waiter.clone();
            waits.spawn(async move { (n, area::wait(&waiter, id, SOON).await) });
        }
    }
    support::wait_until("every wait to register", || async {
        waiter.waiting() == ids.len()
    })
    .await;
    let handle = worker(&env).build().await.unwrap().spawn();
    let mut resolved = 0;
    while let Some(joined) = waits.join_next().await {
        let (n, out) = joined.unwrap();
        assert_eq!(out, Ok(expected(u32::try_from(n).unwrap())));
        resolved += 1;
    }
    handle.shutdown().await.unwrap();
    assert_eq!(resolved, 900);
    assert_eq!(waiter.waiting(), 0);
}

#[tokio::test]
async fn jobs_finished_while_the_waiter_is_disconnected_still_resolve() {
    let env = support::env().await;
    let name = "jobq_wait_test";
    // An hour-long poll: only notifications and the re-check after
    // reconnecting can resolve these waits.
    let waiter = Waiter::builder()
        .poll_interval(Duration::from_secs(3600))
        .connect(&named_url(&env, name))
        .await
        .unwrap();
    let mut conn = env.conn().await;
    let payloads: Vec<Shape> = (0..20).map(|n| shape(n, "ok")).collect();
    let ids = area::enqueue_many(&mut conn, &payloads).await.unwrap();
    let mut waits = tokio::task::JoinSet::new();
    for id in ids.iter().copied() {
        let waiter = waiter.clone();
        waits.spawn(async move { area::wait(&waiter, id, SOON).await });
    }
    support::wait_until("every wait to register", || async {
        waiter.waiting() == ids.len()
    })
    .await;

    // Keep the waiter out while the jobs finish: no new connections to
    // this database (set from the server's maintenance database, as
    // PostgreSQL requires), its backend terminated, the jobs completed by
    // raw SQL (whose notification nobody hears), then connections allowed
    // again. (The pool's connection made before stays.)
    let maintenance_url = env
        .db
        .url()
        .replacen(&format!("/{}", env.db.name()), "/postgres", 1);
    let mut admin = AsyncPgConnection::establish(&maintenance_url)
        .await
        .unwrap();
    let allow = |on: bool| {
        format!(
            "ALTER DATABASE \"{}\" ALLOW_CONNECTIONS {on}",
            env.db.name()
        )
    };
    admin.batch_execute(&allow(false)).await.unwrap();
    admin
        .batch_execute(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name = '{name}' AND datname = '{}'",
            env.db.name()
        ))
        .await
        .unwrap();
    support::wait_until("the waiter to notice", || async { !waiter.is_connected() }).await;
    let done = diesel::sql_query(
        "UPDATE jobq.jobs SET state = 'completed', finished_at = now(), \
             output = jsonb_build_object('n', (payload->>'n')::int, 'label', 'by sql') \
         WHERE task = 'area'",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    assert_eq!(done, ids.len());
    admin.batch_execute(&allow(true)).await.unwrap();

    let mut resolved = 0;
    while let Some(joined) = waits.join_next().await {
        let out = joined.unwrap().expect("resolved after reconnecting");
        assert_eq!(out.label, "by sql");
        resolved += 1;
    }
    assert_eq!(resolved, ids.len());
    assert!(waiter.is_connected());
}

#[tokio::test]
async fn a_bad_url_or_unreachable_server_is_an_error_that_hides_the_password() {
    let bad = Waiter::connect("postgres://u:secret@h:port/db")
        .await
        .unwrap_err();
    assert!(matches!(bad, jobq::Error::InvalidUrl { .. }), "{bad:?}");
    assert!(!format!("{bad} {bad:?}").contains("secret"));
    let unreachable = Waiter::connect("postgres://u:secret@127.0.0.1:1/db?connect_timeout=2")
        .await
        .unwrap_err();
    assert!(
        matches!(unreachable, jobq::Error::Connect { .. }),
        "{unreachable:?}"
    );
    assert!(!format!("{unreachable} {unreachable:?}").contains("secret"));
}

#[tokio::test]
async fn a_job_failed_by_a_rescue_out_of_attempts_resolves_as_failed() {
    let env = support::env().await;
    let waiter = Waiter::from_pool(&env.pool).await.unwrap();
    // A worker that died holding the job's only attempt: its row stopped
    // heartbeating an hour ago, for the maintenance to rescue.
    let id = JobId::from(
        env.count(
            "WITH w AS ( \
                 INSERT INTO jobq.workers (hostname, pid, queues, lease_ms, heartbeat_at) \
                 VALUES ('gone', 0, '{wait}', 2000, now() - interval '1 hour') RETURNING id), \
             job AS ( \
                 INSERT INTO jobq.jobs (task, queue, payload, state, attempt, max_attempts, \
                                        started_at, worker_id) \
                 SELECT 'area', 'wait', '{\"n\": 1, \"kind\": \"ok\"}', 'running', 1, 1, now(), id \
                 FROM w RETURNING id, worker_id), \
             claim AS ( \
                 INSERT INTO jobq.claims (worker_id, jobs) \
                 SELECT worker_id, int8multirange(int8range(id, id, '[]')) FROM job) \
             SELECT id AS n FROM job",
        )
        .await,
    );
    let wait = tokio::spawn({
        let waiter = waiter.clone();
        async move { area::wait(&waiter, id, SOON).await }
    });
    support::wait_until("the wait to register", || async { waiter.waiting() == 1 }).await;
    let handle = worker(&env).build().await.unwrap().spawn();
    let result = wait.await.unwrap();
    handle.shutdown().await.unwrap();
    assert!(
        matches!(&result, Err(WaitError::Failed { id: got, error: Some(e) }) if *got == id && e.contains("rescued")),
        "{result:?}"
    );
}

/// Rows in `jobq.awaited` (the ids waiters registered), optionally of one
/// job.
async fn awaited_rows(conn: &mut AsyncPgConnection, job: Option<JobId>) -> i64 {
    #[derive(diesel::QueryableByName)]
    struct N {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let filter = job.map_or(String::new(), |id| format!(" WHERE job_id = {}", id.get()));
    diesel::sql_query(format!("SELECT count(*) AS n FROM jobq.awaited{filter}"))
        .get_result::<N>(conn)
        .await
        .unwrap()
        .n
}

/// The payloads a raw LISTEN connection received on `jobq_finished` up to
/// (not including) the marker `marker`, which the test sends after the
/// statements it checks: notifications arrive in commit order, so
/// anything those statements sent comes before it.
async fn finished_payloads_until(
    listener: &mut AsyncPgConnection,
    notifier: &mut AsyncPgConnection,
    marker: &str,
) -> Vec<String> {
    use futures_util::StreamExt;
    notifier
        .batch_execute(&format!("NOTIFY jobq_finished, '{marker}'"))
        .await
        .unwrap();
    let mut stream = std::pin::pin!(listener.notifications_stream());
    let mut payloads = Vec::new();
    loop {
        let n = tokio::time::timeout(SOON, stream.next())
            .await
            .expect("the marker notification")
            .expect("the listener's connection")
            .unwrap();
        if n.payload == marker {
            return payloads;
        }
        payloads.push(n.payload);
    }
}

#[tokio::test]
async fn only_awaited_jobs_are_announced_and_nothing_at_all_when_nobody_waits() {
    let env = support::env().await;
    let mut conn = env.conn().await;
    let mut listener = AsyncPgConnection::establish(env.db.url()).await.unwrap();
    listener
        .batch_execute("LISTEN jobq_finished")
        .await
        .unwrap();
    let complete = |ids: &[JobId]| {
        format!(
            "UPDATE jobq.jobs SET state = 'completed', finished_at = now(), \
                 output = jsonb_build_object('n', 1, 'label', 'by sql') \
             WHERE id IN ({})",
            ids.iter()
                .map(|id| id.get().to_string())
                .collect::<Vec<_>>()
                .join(",")
        )
    };
    let payloads: Vec<Shape> = (0..6).map(|n| shape(n, "ok")).collect();
    let ids = area::enqueue_many(&mut conn, &payloads).await.unwrap();

    // Nobody waits: finishing jobs sends nothing.
    conn.batch_execute(&complete(&ids[0..2])).await.unwrap();
    assert_eq!(
        finished_payloads_until(&mut listener, &mut conn, "marker-1").await,
        Vec::<String>::new(),
        "no waiter, no notification"
    );

    // One job awaited: a statement finishing it with two others announces
    // it alone.
    let waiter = Waiter::builder()
        .poll_interval(Duration::from_secs(3600))
        .connect(env.db.url())
        .await
        .unwrap();
    let awaited = ids[3];
    let wait = tokio::spawn({
        let waiter = waiter.clone();
        async move { area::wait(&waiter, awaited, SOON).await }
    });
    support::wait_until("the wait to register in the database", || async {
        awaited_rows(&mut *env.conn().await, Some(awaited)).await == 1
    })
    .await;
    conn.batch_execute(&complete(&ids[2..5])).await.unwrap();
    assert_eq!(
        finished_payloads_until(&mut listener, &mut conn, "marker-2").await,
        vec![awaited.get().to_string()],
        "only the awaited id"
    );
    assert_eq!(wait.await.unwrap().unwrap().label, "by sql");

    // The ended wait removed its registration: nothing is announced again.
    support::wait_until("the ended wait to deregister", || async {
        awaited_rows(&mut *env.conn().await, None).await == 0
    })
    .await;
    conn.batch_execute(&complete(&ids[5..])).await.unwrap();
    assert_eq!(
        finished_payloads_until(&mut listener, &mut conn, "marker-3").await,
        Vec::<String>::new()
    );

    // An abandoned wait and a dropped Waiter leave no rows behind.
    let pending = area::enqueue(&mut conn, &shape(9, "ok")).await.unwrap();
    let abandoned = tokio::spawn({
        let waiter = waiter.clone();
        async move { area::wait(&waiter, pending, SOON).await }
    });
    support::wait_until("the wait to register in the database", || async {
        awaited_rows(&mut *env.conn().await, Some(pending)).await == 1
    })
    .await;
    abandoned.abort();
    drop(waiter);
    support::wait_until("the dropped waiter's rows to go", || async {
        awaited_rows(&mut *env.conn().await, None).await == 0
    })
    .await;
}

#[tokio::test]
async fn a_job_whose_outcome_commits_just_after_the_wait_registered_still_resolves() {
    let env = support::env().await;
    let name = "jobq_wait_race";
    let mut conn = env.conn().await;
    let id = area::enqueue(&mut conn, &shape(4, "ok")).await.unwrap();
    // The outcome's statement runs (and with it the trigger, which finds
    // no registration) but does not commit yet.
    let mut outcome = AsyncPgConnection::establish(env.db.url()).await.unwrap();
    outcome
        .batch_execute(&format!(
            "BEGIN; UPDATE jobq.jobs SET state = 'completed', finished_at = now(), \
                 output = '{{\"n\": 4, \"label\": \"late commit\"}}' WHERE id = {}",
            id.get()
        ))
        .await
        .unwrap();
    // An hour-long poll: neither a notification (none is sent) nor the
    // poll can resolve this wait; only the waiter's own look-ups.
    let waiter = Waiter::builder()
        .poll_interval(Duration::from_secs(3600))
        .connect(&named_url(&env, name))
        .await
        .unwrap();
    let wait = tokio::spawn({
        let waiter = waiter.clone();
        async move { area::wait(&waiter, id, SOON).await }
    });
    // The waiter registered, then looked the job up (its last statement,
    // seen in pg_stat_activity, is the look-up) and found it unfinished.
    support::wait_until("the waiter's look-up after registering", || async {
        awaited_rows(&mut *env.conn().await, Some(id)).await == 1 && {
            #[derive(diesel::QueryableByName)]
            struct N {
                #[diesel(sql_type = diesel::sql_types::BigInt)]
                n: i64,
            }
            let looked: N = diesel::sql_query(format!(
                "SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = '{name}' \
                 AND state = 'idle' AND query LIKE '/* jobq waiter */ SELECT%'"
            ))
            .get_result(&mut env.conn().await)
            .await
            .unwrap();
            looked.n == 1
        }
    })
    .await;
    assert!(!wait.is_finished());
    outcome.batch_execute("COMMIT").await.unwrap();
    let out = wait.await.unwrap().expect("resolved by a look-up again");
    assert_eq!(out.label, "late commit");
}

#[tokio::test]
async fn the_look_up_after_registering_marks_a_job_an_open_outcome_holds_as_unsettled() {
    let env = support::env().await;
    let mut conn = env.conn().await;
    let id = area::enqueue(&mut conn, &shape(5, "ok")).await.unwrap();
    let mut listener = jobq_diesel::FinishedListener::connect(&env.pool)
        .await
        .unwrap();
    let look = |rows: Vec<jobq_diesel::WaitedJob>| {
        let row = rows.into_iter().next().expect("the job");
        (row.state, row.unsettled)
    };
    listener.register(42, &[id.get()]).await.unwrap();
    assert_eq!(
        look(listener.look_up(&[id.get()]).await.unwrap()),
        ("pending".to_owned(), false),
        "nobody is changing it"
    );

    let mut outcome = AsyncPgConnection::establish(env.db.url()).await.unwrap();
    outcome
        .batch_execute(&format!(
            "BEGIN; UPDATE jobq.jobs SET state = 'cancelled', finished_at = now() WHERE id = {}",
            id.get()
        ))
        .await
        .unwrap();
    assert_eq!(
        look(listener.look_up(&[id.get()]).await.unwrap()),
        ("pending".to_owned(), true),
        "an uncommitted change to a terminal state may have missed the registration"
    );
    outcome.batch_execute("COMMIT").await.unwrap();
    assert_eq!(
        look(listener.look_up(&[id.get()]).await.unwrap()),
        ("cancelled".to_owned(), false)
    );

    listener.deregister(42, &[id.get()]).await.unwrap();
    assert_eq!(awaited_rows(&mut conn, None).await, 0);
    listener.register(42, &[id.get(), 1, 2]).await.unwrap();
    listener.register(7, &[id.get()]).await.unwrap();
    listener.deregister_all(42).await.unwrap();
    assert_eq!(
        awaited_rows(&mut conn, None).await,
        1,
        "waiter 7's row stays"
    );
}

#[tokio::test]
async fn maintenance_removes_the_registrations_of_waiters_whose_connection_is_gone() {
    let env = support::env().await;
    let mut conn = env.conn().await;
    // Rows of a backend that does not exist (pid 0) and of one that does
    // (this connection's), the latter also once a day old.
    conn.batch_execute(
        "INSERT INTO jobq.awaited (job_id, waiter, pid) VALUES (1, 1, 0); \
         INSERT INTO jobq.awaited (job_id, waiter) VALUES (2, 2), (3, 3); \
         UPDATE jobq.awaited SET since = now() - interval '25 hours' WHERE job_id = 3",
    )
    .await
    .unwrap();
    assert_eq!(jobq_diesel::clean_awaited(&mut conn).await.unwrap(), 2);
    assert_eq!(awaited_rows(&mut conn, None).await, 1);
    assert_eq!(
        awaited_rows(&mut conn, Some(JobId::from(2))).await,
        1,
        "a live waiter's row stays"
    );
}

#[tokio::test]
async fn a_worker_draining_jobs_nobody_waits_for_sends_no_finished_notification() {
    let env = support::env().await;
    let mut conn = env.conn().await;
    let mut listener = AsyncPgConnection::establish(env.db.url()).await.unwrap();
    listener
        .batch_execute("LISTEN jobq_finished")
        .await
        .unwrap();
    let payloads: Vec<Shape> = (0..50)
        .map(|n| shape(n, if n % 10 == 0 { "fail" } else { "ok" }))
        .collect();
    let ids = area::enqueue_many(&mut conn, &payloads).await.unwrap();
    let last = *ids.last().unwrap();
    jobq::cancel(&mut conn, ids[1]).await.unwrap();
    let handle = worker(&env).build().await.unwrap().spawn();
    support::wait_until("every job to end", || async {
        let mut conn = env.conn().await;
        let mut ended = 0;
        for &id in &ids {
            if let Ok(Some(job)) = jobq::job(&mut conn, id).await {
                ended += usize::from(job.state.is_terminal());
            }
        }
        ended == ids.len()
    })
    .await;
    handle.shutdown().await.unwrap();
    assert_eq!(env.job(last).await.state, JobState::Completed);
    assert_eq!(env.job(ids[0]).await.state, JobState::Failed);
    assert_eq!(
        finished_payloads_until(&mut listener, &mut conn, "marker").await,
        Vec::<String>::new(),
        "completions, failures and a cancellation nobody waited for announce nothing"
    );
}
