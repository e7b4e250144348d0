//! Faults around the worker: the database down at start-up, gone in the
//! middle of a run, and a transaction-pooling PgBouncer in between.
//! Each test owns a private PostgreSQL server it may stop.

mod support;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use diesel::connection::CacheSize;
use diesel_async::pooled_connection::{AsyncDieselConnectionManager, ManagerConfig};
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use jobq::{JobState, TaskError};
use jobq_testkit::PrivateServer;
use serde::{Deserialize, Serialize};

// ------------------------------------------------------------- log capture

/// Captures jobq's logs of every test in this binary (they share one
/// subscriber); tests look for lines naming their own server's port.
fn capture_logs() {
    support::logs::capture("warn,jobq=info");
}

fn log_lines(containing: &[&str]) -> Vec<String> {
    support::logs::lines(containing)
}

fn pool_on(url: &str) -> jobq::Pool {
    bb8::Pool::builder()
        .max_size(4)
        .connection_timeout(Duration::from_secs(5))
        .build_unchecked(AsyncDieselConnectionManager::<AsyncPgConnection>::new(url))
}

async fn wait_until<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn fast(builder: jobq::WorkerBuilder) -> jobq::WorkerBuilder {
    builder
        .poll_interval(Duration::from_millis(200))
        .lease(Duration::from_secs(2))
        .heartbeat_interval(Duration::from_millis(200))
        .maintenance_interval(Duration::from_millis(200))
        .shutdown_timeout(Duration::from_secs(5))
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Work {
    n: u32,
    sleep_ms: u64,
}

/// Successful handler runs per job id, across the tests of this binary.
static SUCCEEDED: Mutex<Option<HashMap<i64, u32>>> = Mutex::new(None);

#[jobq::task(concurrency = 4, retry = "100ms", max_attempts = 50)]
async fn outage_work(ctx: jobq::Context, job: Work) -> Result<(), TaskError> {
    tokio::time::sleep(Duration::from_millis(job.sleep_ms)).await;
    *SUCCEEDED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_or_insert_with(HashMap::new)
        .entry(ctx.job_id().get())
        .or_default() += 1;
    Ok(())
}

async fn job_state(pool: &jobq::Pool, id: jobq::JobId) -> Option<jobq::JobInfo> {
    let mut conn = pool.get().await.ok()?;
    jobq::job(&mut conn, id).await.ok().flatten()
}

// ------------------------------------------------- database down at start

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_started_while_the_database_is_down_waits_then_serves() {
    capture_logs();
    let server = PrivateServer::start().await.expect("server");
    let url = server.url().to_owned();
    let port = format!(":{}/", server.port());
    server.stop().await.expect("stop");

    let builder = fast(jobq::Worker::builder())
        .database_url(&url)
        .connect_timeout(Duration::from_secs(60));
    let building = tokio::spawn(async move { builder.build().await });
    // It says so while it waits...
    wait_until("a retry warning in the logs", support::SOON, || async {
        !log_lines(&["the database is unreachable; retrying", &port]).is_empty()
    })
    .await;
    assert!(!building.is_finished(), "build gave up at once");
    server.start_again().await.expect("start again");
    // ...and when it gets through.
    let worker = tokio::time::timeout(support::SOON, building)
        .await
        .expect("build finished once the database was up")
        .expect("build task")
        .expect("build succeeded");
    assert_eq!(
        log_lines(&["the database is reachable; starting", &port]).len(),
        1
    );
    let handle = worker.spawn();
    let pool = pool_on(&url);
    let id = {
        let mut conn = pool.get().await.expect("connection");
        outage_work::enqueue(&mut conn, &Work { n: 0, sleep_ms: 0 })
            .await
            .expect("enqueue")
    };
    wait_until("the job to complete", support::SOON, || async {
        job_state(&pool, id)
            .await
            .is_some_and(|j| j.state == JobState::Completed)
    })
    .await;
    handle.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn build_fails_fast_when_told_to_and_after_the_connect_timeout_otherwise() {
    capture_logs();
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let url = format!("postgres://jobq:hunter2-secret@127.0.0.1:{port}/nowhere");

    let started = Instant::now();
    let err = jobq::Worker::builder()
        .database_url(&url)
        .connect_timeout(Duration::ZERO)
        .build()
        .await
        .expect_err("nothing listens there");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let msg = err.to_string();
    assert!(
        matches!(err, jobq::Error::Connect { attempts: 1, .. }),
        "{err:?}"
    );
    assert!(msg.contains(&format!("127.0.0.1:{port}")), "{msg}");
    assert!(!format!("{msg} {err:?}").contains("hunter2"), "{err:?}");

    let started = Instant::now();
    let err = jobq::Worker::builder()
        .database_url(&url)
        .connect_timeout(Duration::from_millis(800))
        .build()
        .await
        .expect_err("nothing listens there");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(700) && took < Duration::from_secs(5),
        "{took:?}"
    );
    match err {
        jobq::Error::Connect { attempts, .. } => assert!(attempts >= 3, "{attempts}"),
        other => panic!("{other:?}"),
    }
}

// ------------------------------------------------ database gone mid-run

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ten_second_outage_mid_run_loses_nothing() {
    capture_logs();
    const JOBS: u32 = 400;
    let server = PrivateServer::start().await.expect("server");
    let url = server.url().to_owned();
    let pool = pool_on(&url);
    {
        let mut conn = pool.get().await.expect("connection");
        jobq::migrate(&mut conn).await.expect("migrate");
    }
    let handle = fast(jobq::Worker::builder())
        .database_url(&url)
        .build()
        .await
        .expect("worker")
        .spawn();
    let payloads: Vec<Work> = (0..JOBS)
        .map(|n| Work {
            n,
            sleep_ms: fastrand::u64(0..=30),
        })
        .collect();
    let ids = {
        let mut conn = pool.get().await.expect("connection");
        outage_work::enqueue_many(&mut conn, &payloads)
            .await
            .expect("enqueue")
    };
    wait_until("some jobs done", support::SOON, || async {
        finished_count(&pool, &ids).await >= 20
    })
    .await;

    server.stop().await.expect("stop");
    let down = Instant::now();
    while down.elapsed() < Duration::from_secs(10) {
        assert!(
            !handle.is_finished(),
            "the worker stopped during the outage"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.start_again().await.expect("start again");

    wait_until("every job finished", Duration::from_secs(60), || async {
        finished_count(&pool, &ids).await == ids.len()
    })
    .await;
    assert!(!handle.is_finished(), "the worker stopped");
    handle
        .shutdown()
        .await
        .expect("clean shutdown after the outage");

    let succeeded = SUCCEEDED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .unwrap_or_default();
    let mut conn = pool.get().await.expect("connection");
    for &id in &ids {
        let info = jobq::job(&mut conn, id)
            .await
            .expect("lookup")
            .expect("job");
        assert_eq!(info.state, JobState::Completed, "{info:#?}");
        // Nothing is reported completed that did not succeed.
        assert!(
            succeeded.get(&id.get()).copied().unwrap_or(0) >= 1,
            "job {id} is completed but its handler never succeeded"
        );
    }
}

/// Handler starts per job id of `held`, across the tests of this binary.
static STARTED: Mutex<Option<HashMap<i64, u32>>> = Mutex::new(None);

/// Opened by the outage test once the database is back.
static GATE: tokio::sync::Notify = tokio::sync::Notify::const_new();
static GATE_OPEN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Counts its start, then holds its job until the gate opens.
#[jobq::task(name = "faults.held", concurrency = 2)]
async fn held(ctx: jobq::Context, job: Work) -> Result<(), TaskError> {
    let _ = job;
    *STARTED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_or_insert_with(HashMap::new)
        .entry(ctx.job_id().get())
        .or_default() += 1;
    loop {
        let opened = GATE.notified();
        if GATE_OPEN.load(std::sync::atomic::Ordering::SeqCst) {
            return Ok(());
        }
        opened.await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_longer_than_the_lease_is_not_the_death_of_live_workers() {
    capture_logs();
    let server = PrivateServer::start().await.expect("server");
    let url = server.url().to_owned();
    let pool = pool_on(&url);
    {
        let mut conn = pool.get().await.expect("connection");
        jobq::migrate(&mut conn).await.expect("migrate");
    }
    // Two live workers, each holding jobs, with a 2 s lease.
    let workers: Vec<jobq::ShutdownHandle> = {
        let mut workers = Vec::new();
        for _ in 0..2 {
            workers.push(
                fast(jobq::Worker::builder())
                    .pool(pool_on(&url))
                    .queues(["default"])
                    .build()
                    .await
                    .expect("worker")
                    .spawn(),
            );
        }
        workers
    };
    let ids = {
        let mut conn = pool.get().await.expect("connection");
        let payloads: Vec<Work> = (0..4).map(|n| Work { n, sleep_ms: 0 }).collect();
        held::enqueue_many(&mut conn, &payloads)
            .await
            .expect("enqueue")
    };
    let started = || {
        STARTED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .unwrap_or_default()
    };
    wait_until("all four jobs running", support::SOON, || async {
        ids.iter().all(|id| started().contains_key(&id.get()))
    })
    .await;
    let holders: Vec<i64> = {
        let mut conn = pool.get().await.expect("connection");
        let mut holders = Vec::new();
        for &id in &ids {
            let info = jobq::job(&mut conn, id).await.unwrap().unwrap();
            assert_eq!(info.state, JobState::Running);
            holders.push(
                support_count(
                    &pool,
                    &format!(
                        "SELECT c.worker_id AS n FROM jobq.claims c WHERE c.jobs @> {}::bigint",
                        id.get()
                    ),
                )
                .await,
            );
        }
        holders
    };
    assert!(
        holders.iter().any(|&w| w != holders[0]),
        "both workers hold jobs: {holders:?}"
    );

    // Three leases without a database, then back.
    server.stop().await.expect("stop");
    tokio::time::sleep(Duration::from_secs(6)).await;
    server.start_again().await.expect("start again");
    // Long enough after the database is back for any (wrong) rescue to
    // happen: two leases of heartbeats and maintenance passes.
    wait_until("both workers heartbeating again", support::SOON, || async {
        support_count(
            &pool,
            "SELECT count(*) AS n FROM jobq.workers WHERE heartbeat_at > now() - interval '1 second'",
        )
        .await
            == 2
    })
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;

    GATE_OPEN.store(true, std::sync::atomic::Ordering::SeqCst);
    GATE.notify_waiters();
    wait_all_completed(&pool, &ids).await;
    for handle in workers {
        handle.shutdown().await.expect("shutdown");
    }
    assert_each_ran_once(&pool, &ids, &started(), "").await;
}

/// Handler starts per job id of `held_through_outage`.
static LONG_STARTED: Mutex<Option<HashMap<i64, u32>>> = Mutex::new(None);

/// Opened by the 45 s outage test once a rescue pass has run after it.
static LONG_GATE: tokio::sync::Notify = tokio::sync::Notify::const_new();
static LONG_GATE_OPEN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Like `held`, with a gate of its own (the tests run in parallel).
#[jobq::task(name = "faults.held_through_outage", concurrency = 3)]
async fn held_through_outage(ctx: jobq::Context, job: Work) -> Result<(), TaskError> {
    let _ = job;
    *LONG_STARTED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_or_insert_with(HashMap::new)
        .entry(ctx.job_id().get())
        .or_default() += 1;
    loop {
        let opened = LONG_GATE.notified();
        if LONG_GATE_OPEN.load(std::sync::atomic::Ordering::SeqCst) {
            return Ok(());
        }
        opened.await;
    }
}

/// The default lease is 30 s: an outage of 45 s leaves every worker's
/// last heartbeat older than its lease when the database comes back, so
/// a worker that judged others on their heartbeat alone would rescue live
/// jobs, and run them twice.
const LONG_OUTAGE: Duration = Duration::from_secs(45);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_45_second_outage_with_the_default_lease_runs_no_job_twice() {
    capture_logs();
    let server = PrivateServer::start().await.expect("server");
    let url = server.url().to_owned();
    let pool = pool_on(&url);
    {
        let mut conn = pool.get().await.expect("connection");
        jobq::migrate(&mut conn).await.expect("migrate");
    }
    // Two live workers with every default (the lease above all), each
    // holding jobs.
    let mut workers = Vec::new();
    for _ in 0..2 {
        workers.push(
            jobq::Worker::builder()
                .pool(pool_on(&url))
                .queues(["default"])
                .build()
                .await
                .expect("worker")
                .spawn(),
        );
    }
    let ids = {
        let mut conn = pool.get().await.expect("connection");
        let payloads: Vec<Work> = (0..6).map(|n| Work { n, sleep_ms: 0 }).collect();
        held_through_outage::enqueue_many(&mut conn, &payloads)
            .await
            .expect("enqueue")
    };
    let started = || {
        LONG_STARTED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .unwrap_or_default()
    };
    wait_until("all six jobs running", support::SOON, || async {
        ids.iter().all(|id| started().contains_key(&id.get()))
    })
    .await;
    let holders = support_count(
        &pool,
        &format!(
            "SELECT count(DISTINCT worker_id) AS n FROM jobq.jobs \
             WHERE state = 'running' AND id IN ({})",
            ids.iter()
                .map(|id| id.get().to_string())
                .collect::<Vec<_>>()
                .join(",")
        ),
    )
    .await;
    assert_eq!(holders, 2, "both workers hold jobs");
    // The lease the workers registered: the default, 30 s.
    let lease_ms = support_count(
        &pool,
        "SELECT CASE WHEN min(lease_ms) = max(lease_ms) THEN min(lease_ms) END AS n \
         FROM jobq.workers",
    )
    .await;
    let lease = Duration::from_millis(u64::try_from(lease_ms).unwrap());
    assert_eq!(lease, Duration::from_secs(30), "the default lease");
    assert!(LONG_OUTAGE > lease + Duration::from_secs(10));

    // A canary: a worker row that heartbeats now and never again. It is
    // alive until the outage, dead after it; its row disappears in the
    // first rescue pass that judges other workers after the outage, which
    // is when a wrong rescue of the live workers would happen too.
    let canary = support_count(
        &pool,
        "INSERT INTO jobq.workers (hostname, pid, queues) \
         VALUES ('canary', 0, ARRAY['none']) RETURNING id AS n",
    )
    .await;

    server.stop().await.expect("stop");
    // The outage itself (the one sleep: nothing to wait for but time).
    tokio::time::sleep(LONG_OUTAGE).await;
    let back = Instant::now();
    server.start_again().await.expect("start again");

    // A worker judges others only after it has seen the database for a
    // lease without a break: allow that, plus a few maintenance intervals.
    wait_until(
        "a rescue pass after the outage (the canary's row gone)",
        lease + Duration::from_secs(30),
        || async {
            support_count(
                &pool,
                &format!("SELECT count(*) AS n FROM jobq.workers WHERE id = {canary}"),
            )
            .await
                == 0
        },
    )
    .await;
    let judged_after = back.elapsed();
    assert_eq!(
        support_count(
            &pool,
            "SELECT count(*) AS n FROM jobq.workers WHERE hostname <> 'canary'"
        )
        .await,
        2,
        "both live workers still registered"
    );

    LONG_GATE_OPEN.store(true, std::sync::atomic::Ordering::SeqCst);
    LONG_GATE.notify_waiters();
    wait_all_completed(&pool, &ids).await;
    for handle in workers {
        handle.shutdown().await.expect("shutdown");
    }
    assert_each_ran_once(
        &pool,
        &ids,
        &started(),
        &format!(" (rescue pass {judged_after:?} after the outage)"),
    )
    .await;
    let rescues = log_lines(&["rescued a job", "held_through_outage"]);
    assert!(
        rescues.is_empty(),
        "no job rescued, yet the logs say: {rescues:?}"
    );
}

/// Waits until every job of `ids` is completed.
async fn wait_all_completed(pool: &jobq::Pool, ids: &[jobq::JobId]) {
    wait_until("every job completed", support::SOON, || async {
        let mut done = 0;
        for &id in ids {
            done += usize::from(
                job_state(pool, id)
                    .await
                    .is_some_and(|j| j.state == JobState::Completed),
            );
        }
        done == ids.len()
    })
    .await;
}

/// Each job of `ids` started once (`started`: starts by job id), used one
/// attempt and recorded no error; `context` ends the failure message.
async fn assert_each_ran_once(
    pool: &jobq::Pool,
    ids: &[jobq::JobId],
    started: &HashMap<i64, u32>,
    context: &str,
) {
    let mut conn = pool.get().await.expect("connection");
    for &id in ids {
        let info = jobq::job(&mut conn, id).await.unwrap().unwrap();
        assert_eq!(
            (
                started.get(&id.get()).copied(),
                info.attempt,
                info.errors.len()
            ),
            (Some(1), 1, 0),
            "job {id} ran more than once{context}: {info:#?}"
        );
    }
}

async fn finished_count(pool: &jobq::Pool, ids: &[jobq::JobId]) -> usize {
    let Ok(mut conn) = pool.get().await else {
        return 0;
    };
    let mut n = 0;
    for &id in ids {
        if let Ok(Some(j)) = jobq::job(&mut conn, id).await {
            if j.state.is_terminal() {
                n += 1;
            }
        }
    }
    n
}

// ------------------------------------------------------------- PgBouncer

/// `pgbouncer --version` as (major, minor).
fn pgbouncer_version(bin: &std::path::Path) -> (u32, u32) {
    let out = std::process::Command::new(bin)
        .arg("--version")
        .output()
        .expect("pgbouncer --version");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let version = text
        .split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("unexpected pgbouncer --version output: {text}"));
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

struct Bouncer {
    child: std::process::Child,
    dir: std::path::PathBuf,
    port: u16,
    /// Whether clients may keep named prepared statements (PgBouncer 1.21+
    /// tracks them across server connections).
    keeps_prepared_statements: bool,
}

impl Drop for Bouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start_pgbouncer(server: &PrivateServer, bin: &std::path::Path) -> Bouncer {
    use std::os::unix::fs::PermissionsExt;
    let (major, minor) = pgbouncer_version(bin);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let dir = std::env::temp_dir().join(format!(
        "jobq-pgbouncer-{}-{:08x}",
        std::process::id(),
        fastrand::u32(..)
    ));
    std::fs::create_dir_all(&dir).expect("pgbouncer dir");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    // diesel-async sends a statement's Parse and its Bind/Execute in two
    // round trips, and keeps cacheable statements (jobq's claim and
    // inserts among them) prepared under names of its own. PgBouncer 1.21+
    // tracks named statements across server connections with
    // max_prepared_statements. Older ones cannot: there one server
    // connection keeps a statement and its execution together, and the
    // clients' statement caches are turned off (see `pool_through`), so
    // that their statements are unnamed and cannot collide on it.
    let keeps_prepared_statements = (major, minor) >= (1, 21);
    let prepared = if keeps_prepared_statements {
        "max_prepared_statements = 200\ndefault_pool_size = 4\n"
    } else {
        "default_pool_size = 1\n"
    };
    let config = format!(
        "[databases]\n* = host=127.0.0.1 port={} user=postgres\n\n[pgbouncer]\n\
         listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
         auth_type = any\npool_mode = transaction\nmax_client_conn = 200\n\
         ignore_startup_parameters = extra_float_digits,options\n{prepared}\
         logfile = {}\n",
        server.port(),
        dir.join("pgbouncer.log").display()
    );
    let ini = dir.join("pgbouncer.ini");
    std::fs::write(&ini, config).expect("pgbouncer.ini");
    let mut command = std::process::Command::new(bin);
    // PgBouncer refuses to run as root.
    if nix_is_root() {
        command.args(["-u", "postgres"]);
    }
    let child = command
        .arg(&ini)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("starting pgbouncer");
    Bouncer {
        child,
        dir,
        port,
        keeps_prepared_statements,
    }
}

fn nix_is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A pool through `bouncer` at `url`: without diesel's prepared statement
/// cache when the bouncer cannot keep named statements.
fn pool_through(bouncer: &Bouncer, url: &str) -> jobq::Pool {
    let mut config = ManagerConfig::default();
    if !bouncer.keeps_prepared_statements {
        config.custom_setup = Box::new(|url| {
            Box::pin(async move {
                let mut conn = AsyncPgConnection::establish(url).await?;
                conn.set_prepared_statement_cache_size(CacheSize::Disabled);
                Ok(conn)
            })
        });
    }
    bb8::Pool::builder()
        .max_size(4)
        .connection_timeout(Duration::from_secs(5))
        .build_unchecked(
            AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(url, config),
        )
}

/// A transaction-pooling PgBouncer in front of `server`, and a pool through
/// it on which jobq's schema is installed (the worker works on that pool:
/// see `pool_through`).
async fn behind_pgbouncer(server: &PrivateServer, bin: &std::path::Path) -> (Bouncer, jobq::Pool) {
    let bouncer = start_pgbouncer(server, bin);
    let url = format!("postgres://postgres@127.0.0.1:{}/postgres", bouncer.port);
    let pool = pool_through(&bouncer, &url);
    wait_until("pgbouncer to accept connections", support::SOON, || async {
        pool.get().await.is_ok()
    })
    .await;
    {
        let mut conn = pool.get().await.expect("connection");
        jobq::migrate(&mut conn)
            .await
            .expect("migrate through pgbouncer");
    }
    (bouncer, pool)
}

#[jobq::task(queue = "bouncer")]
async fn through_bouncer(job: Work) -> Result<(), TaskError> {
    let _ = job;
    Ok(())
}

/// Enqueues fifty no-op jobs of `through_bouncer` through `pool`.
async fn fifty_through_bouncer(pool: &jobq::Pool) -> Vec<jobq::JobId> {
    let payloads: Vec<Work> = (0..50).map(|n| Work { n, sleep_ms: 0 }).collect();
    let mut conn = pool.get().await.expect("connection");
    through_bouncer::enqueue_many(&mut conn, &payloads)
        .await
        .expect("enqueue through pgbouncer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_transaction_pooling_pgbouncer_jobs_run_on_polling_with_one_warning() {
    let Some(bin) = support::pgbouncer(
        "behind_a_transaction_pooling_pgbouncer_jobs_run_on_polling_with_one_warning",
    ) else {
        return;
    };
    capture_logs();
    let server = PrivateServer::start().await.expect("server");
    // Kept alive until the end of the test: dropping it stops PgBouncer.
    let (_bouncer, pool) = behind_pgbouncer(&server, &bin).await;
    let handle = fast(jobq::Worker::builder())
        .pool(pool.clone())
        .queues(&["bouncer"])
        .poll_interval(Duration::from_millis(300))
        .build()
        .await
        .expect("worker through pgbouncer")
        .spawn();
    let ids = fifty_through_bouncer(&pool).await;
    let one = {
        let mut conn = pool.get().await.expect("connection");
        through_bouncer::enqueue(&mut conn, &Work { n: 99, sleep_ms: 0 })
            .await
            .expect("enqueue through pgbouncer")
    };
    wait_until(
        "every job completed through pgbouncer",
        support::SOON,
        || async {
            let mut conn = match pool.get().await {
                Ok(c) => c,
                Err(_) => return false,
            };
            for &id in ids.iter().chain([&one]) {
                match jobq::job(&mut conn, id).await {
                    Ok(Some(j)) if j.state == JobState::Completed => {}
                    _ => return false,
                }
            }
            true
        },
    )
    .await;
    // The warning comes once the probe's wait is over.
    wait_until("the LISTEN warning", Duration::from_secs(15), || async {
        !log_lines(&["LISTEN does not work on this connection"]).is_empty()
    })
    .await;
    handle.shutdown().await.expect("clean shutdown");
    let warnings = log_lines(&["LISTEN does not work on this connection"]);
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    assert!(warnings[0].contains("listen_url"), "{}", warnings[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_pgbouncer_a_direct_listen_url_keeps_notifications() {
    let Some(bin) = support::pgbouncer("behind_pgbouncer_a_direct_listen_url_keeps_notifications")
    else {
        return;
    };
    capture_logs();
    let server = PrivateServer::start().await.expect("server");
    // Kept alive until the end of the test: dropping it stops PgBouncer.
    let (_bouncer, pool) = behind_pgbouncer(&server, &bin).await;
    let direct = pool_on(server.url());
    let handle = fast(jobq::Worker::builder())
        .pool(pool.clone())
        .listen_url(server.url())
        .queues(&["bouncer"])
        // Only a notification can make the job run quickly.
        .poll_interval(Duration::from_secs(60))
        .build()
        .await
        .expect("worker")
        .spawn();
    wait_until("the direct LISTEN", support::SOON, || async {
        support_count(
            &direct,
            "SELECT count(*) AS n FROM pg_stat_activity WHERE query LIKE 'LISTEN jobq_jobs%'",
        )
        .await
            > 0
    })
    .await;
    let enqueued = Instant::now();
    let id = {
        let mut conn = pool.get().await.expect("connection");
        through_bouncer::enqueue(&mut conn, &Work { n: 1, sleep_ms: 0 })
            .await
            .expect("enqueue")
    };
    wait_until("the job to complete", support::SOON, || async {
        job_state(&pool, id)
            .await
            .is_some_and(|j| j.state == JobState::Completed)
    })
    .await;
    assert!(
        enqueued.elapsed() < Duration::from_secs(10),
        "the job waited for the poll: {:?}",
        enqueued.elapsed()
    );
    handle.shutdown().await.expect("clean shutdown");
}

async fn support_count(pool: &jobq::Pool, sql: &str) -> i64 {
    use diesel::sql_types::BigInt;
    use diesel_async::RunQueryDsl;
    #[derive(diesel::QueryableByName)]
    struct N {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let mut conn = pool.get().await.expect("connection");
    diesel::sql_query(sql)
        .get_result::<N>(&mut conn)
        .await
        .expect(sql)
        .n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_pgbouncer_claims_take_their_lane_and_leave_nothing_held() {
    let Some(bin) =
        support::pgbouncer("behind_pgbouncer_claims_take_their_lane_and_leave_nothing_held")
    else {
        return;
    };
    let server = PrivateServer::start().await.expect("server");
    // Kept alive until the end of the test: dropping it stops PgBouncer.
    let (_bouncer, pool) = behind_pgbouncer(&server, &bin).await;
    let direct = pool_on(server.url());
    // A fleet of two with one lane: every claim takes the lane.
    support::lanes::another_worker(&mut direct.get().await.expect("connection")).await;
    let handle = fast(jobq::Worker::builder())
        .pool(pool.clone())
        .queues(&["bouncer"])
        .claim_lanes(1)
        .build()
        .await
        .expect("worker through pgbouncer")
        .spawn();
    support::lanes::until_the_fleet_is_counted(&mut direct.get().await.expect("connection")).await;
    // The lane is held elsewhere: the worker's claim waits for it, in a
    // transaction PgBouncer keeps on one server connection.
    let mut holder = AsyncPgConnection::establish(server.url())
        .await
        .expect("direct connection");
    holder
        .batch_execute(&format!(
            "BEGIN; SELECT pg_advisory_xact_lock({}, 0)",
            jobq_diesel::LANE_LOCK_CLASS
        ))
        .await
        .expect("the lane");
    // Enqueued and read directly while the lane is held: PgBouncer's one
    // server connection belongs to the worker's claim as soon as it waits
    // for the lane (it polls every 200 ms).
    let ids = fifty_through_bouncer(&direct).await;
    let waiting = support::lanes::lane_locks("NOT granted");
    wait_until("a claim waiting for the lane", support::SOON, || async {
        support_count(&direct, &waiting).await > 0
    })
    .await;
    assert_eq!(finished_count(&direct, &ids).await, 0);
    holder.batch_execute("COMMIT").await.expect("lane given up");
    wait_all_completed(&pool, &ids).await;
    handle.shutdown().await.expect("clean shutdown");
    let held = support::lanes::lane_locks("true");
    assert_eq!(support_count(&direct, &held).await, 0);
    assert_eq!(
        support_count(
            &direct,
            "SELECT count(*) AS n FROM pg_stat_activity \
             WHERE datname = current_database() AND state LIKE 'idle in transaction%'"
        )
        .await,
        0
    );
}
