//! Leases, rescue of crashed work, cancellation of running jobs and
//! graceful shutdown.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use diesel_async::pooled_connection::AsyncDieselConnectionManager;
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use jobq::{JobState, TaskError};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Step {
    millis: u64,
}

/// Hangs on its first attempt (until its worker dies), completes after.
#[jobq::task(retry = "10ms")]
async fn hangs_first_time(ctx: jobq::Context, job: Step) -> Result<(), TaskError> {
    let _ = job;
    if ctx.attempt() == 1 {
        std::future::pending::<()>().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_workers_job_is_rescued_and_finished_by_another() {
    let env = support::env().await;
    let doomed = env.crashable(|w| w);
    let mut conn = env.conn().await;
    let id = hangs_first_time::enqueue(&mut conn, &Step { millis: 0 })
        .await
        .unwrap();
    env.wait_job(id, "running", |j| j.state == JobState::Running)
        .await;
    doomed.shutdown_background();

    let crashed_at = Instant::now();
    let rescuer = env.worker().build().await.unwrap().spawn();
    let info = env.wait_state(id, JobState::Completed).await;
    rescuer.shutdown().await.unwrap();
    assert_eq!(info.attempt, 2);
    assert_eq!(info.errors.len(), 1);
    assert!(
        info.errors[0].message.contains("stopped heartbeating"),
        "{:?}",
        info.errors
    );
    // Lease (2 s) plus a maintenance interval, with slack for slow machines.
    assert!(
        crashed_at.elapsed() < Duration::from_secs(10),
        "rescue took {:?}",
        crashed_at.elapsed()
    );
}

#[jobq::task]
async fn sleeps(job: Step) -> Result<(), TaskError> {
    tokio::time::sleep(Duration::from_millis(job.millis)).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_longer_than_the_lease_is_not_rescued_while_its_worker_lives() {
    let env = support::env().await;
    let lease = Duration::from_secs(1);
    let handle = env.worker().lease(lease).build().await.unwrap().spawn();
    let mut conn = env.conn().await;
    let id = sleeps::enqueue(&mut conn, &Step { millis: 3 * 1000 })
        .await
        .unwrap();
    let info = env.wait_state(id, JobState::Completed).await;
    handle.shutdown().await.unwrap();
    assert_eq!(info.attempt, 1, "the job was rescued: {:?}", info.errors);
    assert!(info.errors.is_empty());
}

#[jobq::task]
async fn until_cancelled(ctx: jobq::Context, job: Step) -> Result<(), TaskError> {
    let _ = job;
    ctx.cancelled().await;
    Err(TaskError::msg("stopped on request"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_running_job_stops_it_and_it_ends_cancelled() {
    let env = support::env().await;
    let handle = env.worker().build().await.unwrap().spawn();
    let mut conn = env.conn().await;
    let id = until_cancelled::enqueue(&mut conn, &Step { millis: 0 })
        .await
        .unwrap();
    env.wait_job(id, "running", |j| j.state == JobState::Running)
        .await;
    assert!(jobq::cancel(&mut conn, id).await.unwrap());
    let info = env.wait_state(id, JobState::Cancelled).await;
    handle.shutdown().await.unwrap();
    assert_eq!(info.attempt, 1);
    assert!(info.finished_at.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_running_jobs_finish_within_the_grace_period() {
    let env = support::env().await;
    let handle = env
        .worker()
        .shutdown_timeout(Duration::from_secs(10))
        .build()
        .await
        .unwrap()
        .spawn();
    let mut conn = env.conn().await;
    let ids = sleeps::enqueue_many(&mut conn, &[Step { millis: 500 }, Step { millis: 700 }])
        .await
        .unwrap();
    for &id in &ids {
        env.wait_job(id, "running", |j| j.state == JobState::Running)
            .await;
    }
    handle.shutdown().await.unwrap();
    for id in ids {
        let info = env.job(id).await;
        assert_eq!(info.state, JobState::Completed, "{info:#?}");
    }
    assert_eq!(env.count("SELECT count(*) AS n FROM jobq.workers").await, 0);
}

#[jobq::task]
async fn ignores_cancellation(job: Step) -> Result<(), TaskError> {
    tokio::time::sleep(Duration::from_millis(job.millis)).await;
    Ok(())
}

#[jobq::task(timeout = "300ms", max_attempts = 1)]
async fn overruns(job: Step) -> Result<(), TaskError> {
    tokio::time::sleep(Duration::from_millis(job.millis)).await;
    Ok(())
}

/// Only a handler's own error is taken as its reaction to the shutdown; its
/// timeout firing within the grace period is an attempt that failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_within_the_grace_period_is_a_failed_attempt() {
    let env = support::env().await;
    let handle = env
        .worker()
        .shutdown_timeout(Duration::from_secs(30))
        .build()
        .await
        .unwrap()
        .spawn();
    let mut conn = env.conn().await;
    let id = overruns::enqueue(&mut conn, &Step { millis: 600_000 })
        .await
        .unwrap();
    env.wait_job(id, "running", |j| j.state == JobState::Running)
        .await;
    handle.shutdown().await.unwrap();
    let info = env.job(id).await;
    assert_eq!(
        (info.state, info.attempt),
        (JobState::Failed, 1),
        "{info:#?}"
    );
    assert_eq!(info.errors.len(), 1, "{:?}", info.errors);
    assert_eq!(info.errors[0].message, "attempt timed out after 300ms");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_hands_back_jobs_still_running_at_the_grace_period() {
    let env = support::env().await;
    let grace = Duration::from_millis(500);
    let handle = env
        .worker()
        .shutdown_timeout(grace)
        .build()
        .await
        .unwrap()
        .spawn();
    let mut conn = env.conn().await;
    let stubborn = ignores_cancellation::enqueue(&mut conn, &Step { millis: 600_000 })
        .await
        .unwrap();
    let polite = until_cancelled::enqueue(&mut conn, &Step { millis: 0 })
        .await
        .unwrap();
    for id in [stubborn, polite] {
        env.wait_job(id, "running", |j| j.state == JobState::Running)
            .await;
    }
    let started = Instant::now();
    handle.shutdown().await.unwrap();
    assert!(
        started.elapsed() < grace + Duration::from_secs(5),
        "shutdown took {:?}",
        started.elapsed()
    );

    // Both are pending again, not failed, with the reason on record; the
    // attempt that was cut short does not count as a failure.
    for id in [stubborn, polite] {
        let info = env.job(id).await;
        assert_eq!(info.state, JobState::Pending, "{info:#?}");
        assert!(
            info.errors[0].message.starts_with("worker shutting down"),
            "{:?}",
            info.errors
        );
    }
    assert_eq!(
        env.count("SELECT count(*) AS n FROM jobq.jobs WHERE state = 'running'")
            .await,
        0
    );
    assert_eq!(env.count("SELECT count(*) AS n FROM jobq.workers").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_row_names_this_machine_and_process() {
    let env = support::env().await;
    let handle = env.worker().build().await.unwrap().spawn();
    // The kernel's own record of the name, read independently of jobq.
    let machine = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .expect("the kernel's hostname")
        .trim()
        .replace('\'', "''");
    let pid = std::process::id();
    support::wait_until("the worker row", || async {
        env.count("SELECT count(*) AS n FROM jobq.workers").await == 1
    })
    .await;
    assert_eq!(
        env.count(&format!(
            "SELECT count(*) AS n FROM jobq.workers WHERE hostname = '{machine}' AND pid = {pid}"
        ))
        .await,
        1
    );
    handle.shutdown().await.unwrap();
}

/// The id of the only worker row.
async fn the_worker_id(env: &support::Env) -> i64 {
    support::wait_until("the worker row", || async {
        env.count("SELECT count(*) AS n FROM jobq.workers").await == 1
    })
    .await;
    env.count("SELECT id AS n FROM jobq.workers").await
}

/// A worker row that stopped heartbeating an hour ago, with a 2 s lease,
/// holding one running job of `sleeps` (as a crashed worker leaves them);
/// returns the job's id.
async fn a_dead_workers_job(env: &support::Env) -> jobq::JobId {
    let id = env
        .count(
            "WITH w AS ( \
                 INSERT INTO jobq.workers (hostname, pid, queues, lease_ms, heartbeat_at) \
                 VALUES ('gone', 0, '{default}', 2000, now() - interval '1 hour') RETURNING id), \
             job AS ( \
                 INSERT INTO jobq.jobs (task, payload, state, attempt, started_at, worker_id) \
                 SELECT 'sleeps', '{\"millis\": 0}', 'running', 1, now(), id FROM w \
                 RETURNING id, worker_id), \
             claim AS ( \
                 INSERT INTO jobq.claims (worker_id, jobs) \
                 SELECT worker_id, int8multirange(int8range(id, id, '[]')) FROM job) \
             SELECT id AS n FROM job",
        )
        .await;
    jobq::JobId::from(id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_lease_worker_never_rescues_a_live_long_lease_workers_job() {
    let env = support::env().await;
    // A long lease, heartbeats far apart, and no maintenance of its own
    // after the first pass at start-up.
    let long = env
        .worker()
        .lease(Duration::from_secs(60))
        .heartbeat_interval(Duration::from_secs(20))
        .maintenance_interval(Duration::from_secs(3600))
        .build()
        .await
        .unwrap()
        .spawn();
    let long_id = the_worker_id(&env).await;
    let mut conn = env.conn().await;
    let id = until_cancelled::enqueue(&mut conn, &Step { millis: 0 })
        .await
        .unwrap();
    env.wait_job(id, "running", |j| j.state == JobState::Running)
        .await;
    let short = env.worker().build().await.unwrap().spawn();
    // The long-lease worker's heartbeats held off: its last one ten
    // seconds ago, five times the other's lease, well within its own (the
    // next one is due twenty seconds after its start).
    conn.batch_execute(&format!(
        "UPDATE jobq.workers SET heartbeat_at = now() - interval '10 s' WHERE id = {long_id}"
    ))
    .await
    .unwrap();
    // Proof that a rescue pass ran since: a dead worker's job, rescued by
    // the short-lease worker (the only one doing maintenance) and run.
    let canary = a_dead_workers_job(&env).await;
    env.wait_state(canary, JobState::Completed).await;

    let info = env.job(id).await;
    assert_eq!(
        (info.state, info.attempt),
        (JobState::Running, 1),
        "{info:#?}"
    );
    assert_eq!(
        env.count(&format!(
            "SELECT count(*) AS n FROM jobq.workers WHERE id = {long_id}"
        ))
        .await,
        1
    );
    assert!(jobq::cancel(&mut conn, id).await.unwrap());
    let info = env.wait_state(id, JobState::Cancelled).await;
    assert_eq!(info.attempt, 1);
    assert!(
        info.errors.iter().all(|e| !e.message.contains("rescued")),
        "{:?}",
        info.errors
    );
    short.shutdown().await.unwrap();
    long.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_lease_worker_rescues_a_dead_short_lease_workers_job_after_the_short_lease() {
    let env = support::env().await;
    // A worker with a 2 s lease crashes (see
    // a_crashed_workers_job_is_rescued_and_finished_by_another).
    let doomed = env.crashable(|w| w);
    let mut conn = env.conn().await;
    let id = hangs_first_time::enqueue(&mut conn, &Step { millis: 0 })
        .await
        .unwrap();
    env.wait_job(id, "running", |j| j.state == JobState::Running)
        .await;
    doomed.shutdown_background();

    let crashed_at = Instant::now();
    let rescuer = env
        .worker()
        .lease(Duration::from_secs(60))
        .heartbeat_interval(Duration::from_secs(1))
        .build()
        .await
        .unwrap()
        .spawn();
    let info = env.wait_state(id, JobState::Completed).await;
    rescuer.shutdown().await.unwrap();
    assert_eq!(info.attempt, 2);
    assert!(
        info.errors[0].message.contains("its lease of 2000 ms"),
        "{:?}",
        info.errors
    );
    // The dead worker's 2 s lease plus maintenance, far below the
    // rescuer's own 60 s.
    assert!(
        crashed_at.elapsed() < Duration::from_secs(15),
        "rescue took {:?}",
        crashed_at.elapsed()
    );
}

/// Jobs whose first attempt saw `Context::cancelled()` resolve.
static STOPPED: Mutex<Vec<i64>> = Mutex::new(Vec::new());

/// Runs until told to stop; a single attempt.
#[jobq::task(max_attempts = 1)]
async fn runs_until_stopped(ctx: jobq::Context, job: Step) -> Result<(), TaskError> {
    let _ = job;
    ctx.cancelled().await;
    STOPPED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(ctx.job_id().get());
    Err(TaskError::msg("stopped"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_presumed_dead_stops_its_rescued_attempts_and_claims_again_only_once_registered() {
    let env = support::env().await;
    // No maintenance of its own after start-up: the test rescues.
    let handle = env
        .worker()
        .lease(Duration::from_secs(4))
        .heartbeat_interval(Duration::from_secs(1))
        .maintenance_interval(Duration::from_secs(3600))
        .build()
        .await
        .unwrap()
        .spawn();
    let worker = the_worker_id(&env).await;
    let mut conn = env.conn().await;
    let id = runs_until_stopped::enqueue(&mut conn, &Step { millis: 0 })
        .await
        .unwrap();
    env.wait_job(id, "running", |j| j.state == JobState::Running)
        .await;

    // What a rescue does to a worker presumed dead, at once: its row goes
    // and its job is taken back (failed: it was the job's only attempt).
    let rescued = conn
        .transaction::<_, diesel::result::Error, _>(async |c| {
            c.batch_execute(&format!("DELETE FROM jobq.workers WHERE id = {worker}"))
                .await?;
            jobq_diesel::rescue(c, -1, Duration::from_secs(4), Duration::MAX).await
        })
        .await
        .unwrap();
    assert_eq!(
        rescued
            .iter()
            .map(|r| (r.id, r.state.as_str()))
            .collect::<Vec<_>>(),
        [(id.get(), "failed")]
    );
    // New work for it while it has no row.
    let next = sleeps::enqueue(&mut conn, &Step { millis: 0 })
        .await
        .unwrap();

    // It learns from its heartbeat that the attempt is no longer its own,
    // and stops it.
    support::wait_until("the rescued attempt to be stopped", || async {
        STOPPED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&id.get())
    })
    .await;
    // The new job runs, but only once the heartbeat registered the worker
    // again.
    env.wait_state(next, JobState::Completed).await;
    assert_eq!(
        env.count(&format!(
            "SELECT count(*) AS n FROM jobq.jobs j, jobq.workers w \
             WHERE j.id = {} AND w.id = {worker} AND j.started_at >= w.started_at",
            next.get()
        ))
        .await,
        1,
        "a job was claimed while the worker had no row"
    );
    handle.shutdown().await.unwrap();
    // The stopped attempt's late outcome changed nothing.
    let info = env.job(id).await;
    assert_eq!((info.state, info.attempt), (JobState::Failed, 1));
    assert_eq!(info.errors.len(), 1, "{:?}", info.errors);
    assert!(info.errors[0].message.contains("rescued"));
}

/// `Context::attempt()` of every run of `handed_back`.
static HANDED_BACK_RUNS: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// Waits for the shutdown in its first three runs, fails in the fourth.
#[jobq::task(max_attempts = 1)]
async fn handed_back(ctx: jobq::Context, job: Step) -> Result<(), TaskError> {
    let _ = job;
    let run = {
        let mut runs = HANDED_BACK_RUNS.lock().unwrap_or_else(|e| e.into_inner());
        runs.push(ctx.attempt());
        runs.len()
    };
    if run <= 3 {
        ctx.cancelled().await;
        return Err(TaskError::msg("stopped by the shutdown"));
    }
    Err(TaskError::msg("failed for real"))
}

fn handed_back_runs() -> Vec<u32> {
    HANDED_BACK_RUNS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_backs_at_shutdown_do_not_use_up_attempts() {
    let env = support::env().await;
    let mut conn = env.conn().await;
    let id = handed_back::enqueue(&mut conn, &Step { millis: 0 })
        .await
        .unwrap();
    for run in 1..=3 {
        let handle = env.worker().build().await.unwrap().spawn();
        support::wait_until("the attempt to start", || async {
            handed_back_runs().len() == run
        })
        .await;
        handle.shutdown().await.unwrap();
        let info = env.job(id).await;
        assert_eq!((info.state, info.attempt), (JobState::Pending, 0));
        assert_eq!(info.errors.len(), run, "{:?}", info.errors);
    }
    let handle = env.worker().build().await.unwrap().spawn();
    let info = env.wait_state(id, JobState::Failed).await;
    handle.shutdown().await.unwrap();
    assert_eq!(handed_back_runs(), [1, 1, 1, 1]);
    assert_eq!((info.attempt, info.max_attempts), (1, 1));
    let recorded: Vec<(u32, bool)> = info
        .errors
        .iter()
        .map(|e| (e.attempt, e.message.starts_with("worker shutting down")))
        .collect();
    assert_eq!(
        recorded,
        [(1, true), (1, true), (1, true), (1, false)],
        "{:?}",
        info.errors
    );
    assert!(info.errors[3].message.contains("failed for real"));
}

// ------------------------------------------------- a claim's lost reply

/// A TCP proxy to the database server that, once, cuts a connection the
/// moment the server's replies have carried each of `markers`, in order:
/// the client sees its connection close mid-reply, while the server,
/// still read from and answered into the void, finishes what it was sent.
struct CutOnce {
    addr: SocketAddr,
    cuts: Arc<AtomicUsize>,
}

impl CutOnce {
    async fn start(upstream: String, markers: &'static [&'static [u8]]) -> CutOnce {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cuts = Arc::new(AtomicUsize::new(0));
        let armed = Arc::new(AtomicBool::new(true));
        let counted = Arc::clone(&cuts);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(&upstream).await else {
                    continue;
                };
                tokio::spawn(relay(
                    client,
                    server,
                    markers,
                    Arc::clone(&armed),
                    Arc::clone(&counted),
                ));
            }
        });
        CutOnce { addr, cuts }
    }

    fn cuts(&self) -> usize {
        self.cuts.load(Ordering::SeqCst)
    }
}

async fn relay(
    client: TcpStream,
    server: TcpStream,
    markers: &'static [&'static [u8]],
    armed: Arc<AtomicBool>,
    cuts: Arc<AtomicUsize>,
) {
    let (mut from_client, mut to_client) = client.into_split();
    let (mut from_server, mut to_server) = server.into_split();
    let upstream = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut from_client, &mut to_server).await;
        let _ = to_server.shutdown().await;
    });
    let mut buf = vec![0u8; 64 * 1024];
    // What the server sent since the last marker found (a marker may be
    // split across two reads), and the markers still to find.
    let mut seen: Vec<u8> = Vec::new();
    let mut to_find = markers;
    loop {
        let n = match from_server.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        seen.extend_from_slice(&buf[..n]);
        while let Some((marker, rest)) = to_find.split_first() {
            match seen.windows(marker.len()).position(|w| w == *marker) {
                Some(at) => {
                    seen.drain(..at + marker.len());
                    to_find = rest;
                }
                None => break,
            }
        }
        if to_find.is_empty() && armed.swap(false, Ordering::SeqCst) {
            cuts.fetch_add(1, Ordering::SeqCst);
            upstream.abort();
            drop(to_client);
            // Keep reading what the server sends, so it never waits on us.
            while matches!(from_server.read(&mut buf).await, Ok(n) if n > 0) {}
            return;
        }
        if to_client.write_all(&buf[..n]).await.is_err() {
            break;
        }
        if let Some(marker) = to_find.first() {
            let keep = seen.len().saturating_sub(marker.len());
            seen.drain(..keep);
        }
    }
    upstream.abort();
}

/// `host:port` of a `postgres://` URL, and the URL with another address.
fn through(url: &str, proxy: SocketAddr) -> (String, String) {
    let (scheme, rest) = url
        .split_once("://")
        .expect("this test needs a postgres:// URL");
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let (userinfo, host) = match authority.rsplit_once('@') {
        Some((user, host)) => (format!("{user}@"), host),
        None => (String::new(), authority),
    };
    assert!(!host.is_empty(), "this test needs a TCP host in the URL");
    let upstream = if host
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        host.to_owned()
    } else {
        format!("{host}:5432")
    };
    (upstream, format!("{scheme}://{userinfo}{proxy}{tail}"))
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Marked {
    marker: String,
}

const MARKER: &str = "lost-reply-marker-4e1f9a";
const MARKED_REPLY: &[u8] = MARKER.as_bytes();

#[jobq::task]
async fn marked(job: Marked) -> Result<(), TaskError> {
    let _ = job;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_whose_reply_was_lost_is_handed_back_by_its_key_and_run() {
    // A worker alone takes no lane: the claim commits by itself, and the
    // connection is cut at its reply.
    let lost = lost_reply(None, &[MARKED_REPLY]).await;
    lost.was_handed_back();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lane_claim_whose_reply_was_lost_after_its_commit_is_handed_back() {
    // In a lane the claim commits with the COMMIT that follows its reply:
    // cut once that commit is certain.
    let lost = lost_reply(Some(1), &[MARKED_REPLY, b"COMMIT\0"]).await;
    lost.was_handed_back();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lane_claim_cut_off_before_its_commit_rolls_back_and_its_job_runs_once() {
    let lost = lost_reply(Some(1), &[MARKED_REPLY]).await;
    assert_eq!(lost.info.attempt, 1);
    assert_eq!(lost.handbacks, 0, "nothing committed, nothing to hand back");
    assert!(lost.info.errors.is_empty(), "{:?}", lost.info.errors);
}

/// A marked job whose claim's reply was cut, once it completed.
struct LostReply {
    info: jobq::JobInfo,
    handbacks: i64,
}

impl LostReply {
    /// The claim had committed: the worker handed the job back by the
    /// claim's key, without an attempt spent, and ran it.
    fn was_handed_back(&self) {
        assert_eq!(self.info.attempt, 1, "the lost claim used up an attempt");
        assert_eq!(self.handbacks, 1);
        assert_eq!(self.info.errors.len(), 1, "{:?}", self.info.errors);
        assert!(
            self.info.errors[0].message.contains("reply was lost"),
            "{:?}",
            self.info.errors
        );
    }
}

/// Runs a marked job on a worker whose connections are cut, once, when
/// the server's replies carried `markers` in order. With `lanes`, another
/// worker is registered, so that the fleet outnumbers the lanes and the
/// worker's claims take one.
async fn lost_reply(lanes: Option<u16>, markers: &'static [&'static [u8]]) -> LostReply {
    let env = support::env().await;
    // The proxy's own address is only known once it listens; the upstream
    // comes from the test database's URL.
    let (upstream, _) = through(env.db.url(), "127.0.0.1:1".parse().unwrap());
    let proxy = CutOnce::start(upstream, markers).await;
    let (_, proxied_url) = through(env.db.url(), proxy.addr);
    let pool = bb8::Pool::builder()
        .max_size(8)
        .build_unchecked(AsyncDieselConnectionManager::<AsyncPgConnection>::new(
            proxied_url,
        ));
    if lanes.is_some() {
        support::lanes::another_worker(&mut *env.conn().await).await;
    }
    let handle = env
        .worker()
        .pool(pool)
        .claim_lanes(lanes.unwrap_or(0))
        .build()
        .await
        .unwrap()
        .spawn();
    if lanes.is_some() {
        support::lanes::until_the_fleet_is_counted(&mut *env.conn().await).await;
    }
    let mut conn = env.conn().await;
    let id = marked::enqueue(
        &mut conn,
        &Marked {
            marker: MARKER.to_owned(),
        },
    )
    .await
    .unwrap();
    let info = env.wait_state(id, JobState::Completed).await;
    handle.shutdown().await.unwrap();
    assert_eq!(proxy.cuts(), 1);
    let handbacks = env
        .count(&format!(
            "SELECT handbacks::bigint AS n FROM jobq.jobs WHERE id = {}",
            id.get()
        ))
        .await;
    LostReply { info, handbacks }
}
