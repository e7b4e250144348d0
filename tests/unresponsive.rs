//! A database that stops answering (a hung server, a half-open
//! connection): shutdown still returns within its documented bound, and
//! nothing is lost once the database answers again.

mod support;

use std::time::{Duration, Instant};

use diesel_async::pooled_connection::AsyncDieselConnectionManager;
use diesel_async::AsyncPgConnection;
use jobq::{JobState, TaskError};
use jobq_testkit::PrivateServer;
use serde::{Deserialize, Serialize};
use support::proxy::Proxy;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Nap {
    n: u32,
}

/// Runs until asked to stop.
#[jobq::task(name = "unresponsive.until_stopped", concurrency = 4)]
async fn until_stopped(ctx: jobq::Context, job: Nap) -> Result<(), TaskError> {
    let _ = job;
    ctx.cancelled().await;
    Err(TaskError::msg("stopped"))
}

fn pool_on(url: &str) -> jobq::Pool {
    bb8::Pool::builder()
        .max_size(8)
        .build_unchecked(AsyncDieselConnectionManager::<AsyncPgConnection>::new(url))
}

/// What `ShutdownHandle::shutdown` may take beyond the shutdown timeout
/// when the database does not answer, and a little room for a slow
/// machine.
const SHUTDOWN_BOUND: Duration =
    jobq::ShutdownHandle::MAX_OVERRUN.saturating_add(Duration::from_secs(1));

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_returns_in_bounded_time_when_the_database_stops_answering() {
    support::init_tracing();
    let server = PrivateServer::start().await.expect("server");
    let direct = pool_on(server.url());
    {
        let mut conn = direct.get().await.unwrap();
        jobq::migrate(&mut conn).await.unwrap();
    }
    let proxy = Proxy::start(server.port()).await;
    let through = pool_on(&format!(
        "postgres://postgres@127.0.0.1:{}/postgres",
        proxy.port()
    ));
    let shutdown_timeout = Duration::from_secs(1);
    let handle = jobq::Worker::builder()
        .pool(through.clone())
        .listen(true)
        .poll_interval(Duration::from_millis(100))
        .heartbeat_interval(Duration::from_millis(200))
        .lease(Duration::from_secs(2))
        .maintenance_interval(Duration::from_millis(200))
        .shutdown_timeout(shutdown_timeout)
        .build()
        .await
        .unwrap()
        .spawn();
    let ids = {
        let mut conn = direct.get().await.unwrap();
        let mut ids = Vec::new();
        for n in 0..3 {
            ids.push(until_stopped::enqueue(&mut conn, &Nap { n }).await.unwrap());
        }
        ids
    };
    let running = || async {
        let mut conn = direct.get().await.unwrap();
        let mut n = 0;
        for id in &ids {
            let job = jobq::job(&mut conn, *id).await.unwrap().unwrap();
            n += usize::from(job.state == JobState::Running);
        }
        n
    };
    support::wait_until("the jobs to run", || async { running().await == 3 }).await;

    proxy.freeze();
    let started = Instant::now();
    let result = tokio::time::timeout(shutdown_timeout + SHUTDOWN_BOUND * 2, handle.shutdown())
        .await
        .expect("shutdown hung with the database not answering");
    let took = started.elapsed();
    assert!(
        took <= shutdown_timeout + SHUTDOWN_BOUND,
        "shutdown took {took:?}"
    );
    result.expect("shutdown reports success: the jobs are left to the rescue");

    // The worker could write nothing on its way out: its jobs are still
    // running under it, and go back to the queue when its lease runs out.
    proxy.thaw();
    drop(proxy);
    let rescuer = jobq::Worker::builder()
        .pool(direct.clone())
        .queues(&["nothing-here"])
        .lease(Duration::from_secs(2))
        .heartbeat_interval(Duration::from_millis(200))
        .maintenance_interval(Duration::from_millis(200))
        .build()
        .await
        .unwrap()
        .spawn();
    support::wait_until("the jobs to be rescued", || async {
        let mut conn = direct.get().await.unwrap();
        let mut pending = 0;
        for id in &ids {
            let job = jobq::job(&mut conn, *id).await.unwrap().unwrap();
            pending += usize::from(job.state == JobState::Pending);
        }
        pending == 3
    })
    .await;
    rescuer.shutdown().await.unwrap();
}
