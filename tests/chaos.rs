//! Chaos: 5,000 jobs on three worker processes while workers are killed
//! with SIGKILL, every jobq connection is terminated once and PostgreSQL is
//! restarted once. Every job must complete exactly once (duplicates only
//! where a worker died or its connection was cut), none may stay running,
//! and the workers that were not killed must reconnect by themselves.
//!
//! This target has no libtest harness: the same binary is the test (no
//! environment marker) and a worker process (`JOBQ_CHAOS_WORKER_URL` set),
//! so `cargo test` needs nothing built besides this binary.

mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use diesel::sql_types::{BigInt, Integer, Text, Timestamptz};
use diesel::QueryableByName;
use diesel_async::pooled_connection::AsyncDieselConnectionManager;
use diesel_async::{AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use jobq::TaskError;
use jobq_testkit::PrivateServer;
use serde::{Deserialize, Serialize};
use support::fleet::{self, Fleet};

const WORKER_ENV: &str = "JOBQ_CHAOS_WORKER_URL";
const JOBS: usize = 5_000;
const WORKERS: usize = 3;
const DEADLINE: Duration = Duration::from_secs(150);
const LEASE: Duration = Duration::from_secs(2);
/// Executions this close to a connection cut or restart count as cut by it.
const CUT_SLACK_BEFORE: chrono::Duration = chrono::Duration::seconds(1);
const CUT_SLACK_AFTER: chrono::Duration = chrono::Duration::seconds(6);

type Pool = bb8::Pool<AsyncDieselConnectionManager<AsyncPgConnection>>;

// ---------------------------------------------------------------- worker side

static LEDGER: OnceLock<Pool> = OnceLock::new();

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ChaosJob {
    n: usize,
}

/// Records the execution in the ledger (its own transaction), then works
/// for 0–20 ms.
#[jobq::task(concurrency = 2, retry = "50ms", max_attempts = 30)]
async fn chaos_job(ctx: jobq::Context, job: ChaosJob) -> Result<(), TaskError> {
    let _ = job;
    let pool = LEDGER
        .get()
        .ok_or_else(|| TaskError::msg("ledger pool missing"))?;
    let mut conn = pool.get().await?;
    diesel::sql_query("INSERT INTO chaos_ledger (job_id, attempt, pid) VALUES ($1, $2, $3)")
        .bind::<BigInt, _>(ctx.job_id().get())
        .bind::<Integer, _>(i32::try_from(ctx.attempt()).unwrap_or(i32::MAX))
        .bind::<Integer, _>(i32::try_from(std::process::id()).unwrap_or(0))
        .execute(&mut conn)
        .await?;
    drop(conn);
    tokio::time::sleep(Duration::from_millis(fastrand::u64(0..=20))).await;
    Ok(())
}

async fn worker_main(url: String) -> Result<(), jobq::Error> {
    let _ = LEDGER.set(fleet::side_pool(&url));
    fleet::process_worker(&url, LEASE)
        .connect_timeout(Duration::from_secs(60))
        .pool_size(6)
        .build()
        .await?
        .run()
        .await
}

// ------------------------------------------------------------------ test side

fn main() -> std::process::ExitCode {
    if let Some(code) = fleet::worker_process(WORKER_ENV, worker_main) {
        return code;
    }
    fleet::run_tests(&[("chaos", || Box::pin(chaos()))])
}

#[derive(QueryableByName)]
struct N {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[derive(QueryableByName)]
struct Now {
    #[diesel(sql_type = Timestamptz)]
    now: DateTime<Utc>,
}

#[derive(QueryableByName, Debug)]
struct LedgerRow {
    #[diesel(sql_type = BigInt)]
    job_id: i64,
    #[diesel(sql_type = Integer)]
    attempt: i32,
    #[diesel(sql_type = Integer)]
    pid: i32,
    #[diesel(sql_type = Timestamptz)]
    at: DateTime<Utc>,
}

#[derive(QueryableByName, Debug)]
struct JobRow {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Text)]
    state: String,
    #[diesel(sql_type = Integer)]
    attempt: i32,
}

/// Runs a statement from the test's side, retrying through the moments
/// the server is down.
async fn count(pool: &Pool, sql: &str) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let result = async {
            let mut conn = pool.get().await.map_err(|e| e.to_string())?;
            diesel::sql_query(sql)
                .get_result::<N>(&mut conn)
                .await
                .map_err(|e| e.to_string())
        }
        .await;
        match result {
            Ok(row) => return row.n,
            Err(e) if Instant::now() < deadline => {
                tracing::debug!(error = %e, "retrying a test query");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("{sql}: {e}"),
        }
    }
}

async fn db_now(pool: &Pool) -> DateTime<Utc> {
    let mut conn = pool.get().await.expect("connection");
    diesel::sql_query("SELECT clock_timestamp() AS now")
        .get_result::<Now>(&mut conn)
        .await
        .expect("now")
        .now
}

async fn wait_for(what: &str, fleet: &Fleet, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check().await {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}\n{}",
            fleet.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn registered(pool: &Pool, pid: u32) -> bool {
    count(
        pool,
        &format!("SELECT count(*) AS n FROM jobq.workers WHERE pid = {pid}"),
    )
    .await
        > 0
}

async fn listening(pool: &Pool, pid: u32) -> bool {
    count(
        pool,
        &format!(
            "SELECT count(*) AS n FROM pg_stat_activity \
             WHERE application_name = 'chaos-worker-{pid}' AND query LIKE 'LISTEN jobq_jobs%'"
        ),
    )
    .await
        > 0
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Cut {
    Terminated,
    Restarted,
}

async fn chaos() {
    let wall = Instant::now();
    let server = PrivateServer::start().await.expect("private PostgreSQL");
    let base = server.url().to_owned();
    let controller_url = format!("{base}?application_name=chaos-controller");
    let pool: Pool = fleet::side_pool(&controller_url);
    {
        let mut conn = pool.get().await.expect("connection");
        jobq::migrate(&mut conn).await.expect("migrate");
        conn.batch_execute(
            "CREATE TABLE chaos_ledger ( \
                 id bigserial PRIMARY KEY, job_id bigint NOT NULL, attempt int NOT NULL, \
                 pid int NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp())",
        )
        .await
        .expect("ledger table");
    }

    let mut fleet = Fleet::new(WORKER_ENV);
    for _ in 0..WORKERS {
        spawn_worker(&mut fleet, &base);
    }
    for pid in fleet.live() {
        wait_for("a worker to register", &fleet, async || {
            registered(&pool, pid).await
        })
        .await;
    }

    let payloads: Vec<ChaosJob> = (0..JOBS).map(|n| ChaosJob { n }).collect();
    let ids = {
        let mut conn = pool.get().await.expect("connection");
        chaos_job::enqueue_many(&mut conn, &payloads)
            .await
            .expect("enqueue_many")
    };
    assert_eq!(ids.len(), JOBS);
    let enqueued = Instant::now();

    let mut killed: HashSet<i32> = HashSet::new();
    let mut cuts: Vec<(Cut, DateTime<Utc>, DateTime<Utc>)> = Vec::new();
    let mut terminated_connections = 0;
    let mut restart_done: Option<DateTime<Utc>> = None;
    let mut done_at_restart = 0;
    let mut survivor: Option<u32> = None;
    let mut alive_at_restart: Vec<u32> = Vec::new();
    let mut next_kill = Duration::from_millis(1500);
    let mut terminated = false;
    loop {
        let done = count(
            &pool,
            "SELECT count(*) AS n FROM jobq.jobs WHERE state IN ('completed', 'failed', 'cancelled')",
        )
        .await;
        if done == JOBS as i64 {
            break;
        }
        assert!(
            wall.elapsed() < DEADLINE,
            "only {done} of {JOBS} jobs finished within {DEADLINE:?}\n{}",
            fleet.logs()
        );
        let t = enqueued.elapsed();
        if !terminated && t >= Duration::from_millis(3000) {
            terminated = true;
            let start = db_now(&pool).await;
            terminated_connections = count(
                &pool,
                "SELECT count(pg_terminate_backend(pid)) AS n FROM pg_stat_activity \
                 WHERE application_name LIKE 'chaos-worker-%'",
            )
            .await;
            let end = db_now(&pool).await;
            cuts.push((Cut::Terminated, start, end));
            assert!(
                terminated_connections > 0,
                "no jobq connection to terminate"
            );
        } else if restart_done.is_none() && t >= Duration::from_millis(4500) {
            let live = fleet.live();
            survivor = Some(live[fastrand::usize(..live.len())]);
            alive_at_restart = live;
            let start = db_now(&pool).await;
            done_at_restart = done;
            server.restart().await.expect("restart");
            let end = db_now(&pool).await;
            cuts.push((Cut::Restarted, start, end));
            restart_done = Some(end);
            // Workers alive through the restart reconnect by themselves,
            // LISTEN included.
            for pid in fleet.live() {
                wait_for("a worker's LISTEN after the restart", &fleet, async || {
                    listening(&pool, pid).await
                })
                .await;
            }
        } else if t >= next_kill && killed.len() < 8 {
            next_kill = t + Duration::from_millis(2000);
            let candidates: Vec<u32> = fleet
                .live()
                .into_iter()
                .filter(|&p| Some(p) != survivor)
                .collect();
            let victim = candidates[fastrand::usize(..candidates.len())];
            fleet.kill(victim);
            killed.insert(victim as i32);
            let pid = spawn_worker(&mut fleet, &base);
            wait_for("a replacement worker to register", &fleet, async || {
                registered(&pool, pid).await
            })
            .await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let run_time = enqueued.elapsed();
    let live_at_end = fleet.live();

    // ------------------------------------------------------------ checks
    let mut conn = pool.get().await.expect("connection");
    // The attempts as handlers count them (`Context::attempt()`, which the
    // ledger records): hand-backs of lost claims do not count.
    let jobs: Vec<JobRow> = diesel::sql_query(
        "SELECT id, state::text AS state, attempt - handbacks AS attempt \
             FROM jobq.jobs ORDER BY id",
    )
    .load(&mut conn)
    .await
    .expect("jobs");
    let ledger: Vec<LedgerRow> =
        diesel::sql_query("SELECT job_id, attempt, pid, at FROM chaos_ledger ORDER BY id")
            .load(&mut conn)
            .await
            .expect("ledger");
    drop(conn);
    assert_eq!(jobs.len(), JOBS);
    let not_completed: Vec<&JobRow> = jobs.iter().filter(|j| j.state != "completed").collect();
    assert!(
        not_completed.is_empty(),
        "{} jobs did not complete, e.g. {:?}",
        not_completed.len(),
        &not_completed[..not_completed.len().min(5)]
    );
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) AS n FROM jobq.jobs WHERE state = 'running'"
        )
        .await,
        0,
        "jobs left running"
    );

    let mut by_job: BTreeMap<i64, Vec<&LedgerRow>> = BTreeMap::new();
    for row in &ledger {
        by_job.entry(row.job_id).or_default().push(row);
    }
    let mut reasons: HashMap<&'static str, usize> = HashMap::new();
    let mut unexplained = Vec::new();
    for job in &jobs {
        let runs = by_job.get(&job.id).map(Vec::as_slice).unwrap_or(&[]);
        // Completed once: the completing attempt ran exactly once, and
        // nothing ran after it.
        let finals = runs.iter().filter(|r| r.attempt == job.attempt).count();
        assert_eq!(
            finals, 1,
            "job {} completing attempt ran {finals} times: {runs:?}",
            job.id
        );
        assert!(
            runs.iter().all(|r| r.attempt <= job.attempt),
            "job {} ran after completing: {runs:?}",
            job.id
        );
        // At most one live attempt: no attempt number ran twice.
        let distinct: HashSet<i32> = runs.iter().map(|r| r.attempt).collect();
        assert_eq!(
            distinct.len(),
            runs.len(),
            "job {} ran an attempt twice: {runs:?}",
            job.id
        );
        for run in runs.iter().filter(|r| r.attempt != job.attempt) {
            let reason = if killed.contains(&run.pid) {
                Some("worker killed")
            } else {
                cuts.iter()
                    .find(|(_, start, end)| {
                        run.at >= *start - CUT_SLACK_BEFORE && run.at <= *end + CUT_SLACK_AFTER
                    })
                    .map(|(cut, _, _)| match cut {
                        Cut::Terminated => "connections terminated",
                        Cut::Restarted => "database restarted",
                    })
            };
            match reason {
                Some(r) => *reasons.entry(r).or_default() += 1,
                None => unexplained.push(format!("{run:?}")),
            }
        }
    }
    assert!(
        unexplained.is_empty(),
        "{} executions repeated without a kill or cut connection: {:?}\n{}",
        unexplained.len(),
        &unexplained[..unexplained.len().min(10)],
        fleet.logs()
    );

    // The restart happened with work in flight, and the workers that were
    // never killed kept serving after it by themselves.
    assert!(
        done_at_restart < JOBS as i64,
        "the restart came after all jobs were done; the test proves nothing"
    );
    let restart_done = restart_done.expect("the database was restarted");
    let survivors: Vec<u32> = live_at_end
        .iter()
        .copied()
        .filter(|pid| alive_at_restart.contains(pid))
        .collect();
    assert!(
        survivor.is_some_and(|s| survivors.contains(&s)),
        "the designated survivor was lost"
    );
    for &pid in &survivors {
        let after = ledger
            .iter()
            .filter(|r| r.pid == pid as i32 && r.at > restart_done)
            .count();
        assert!(
            after > 0,
            "worker {pid} survived the restart but completed nothing after it\n{}",
            fleet.logs()
        );
    }
    let reconnects = fleet.count_in_logs("LISTEN connection re-established");
    assert!(
        reconnects >= survivors.len(),
        "expected every surviving worker to re-establish LISTEN (saw {reconnects})"
    );
    let duplicates: usize = reasons.values().sum();
    println!(
        "chaos: jobs={JOBS} executions={} duplicates={duplicates} (worker killed={}, connections terminated={}, database restarted={}) \
         kills={} terminated_connections={terminated_connections} listener_reconnects={reconnects} \
         done_at_restart={done_at_restart} run={:.1}s wall={:.1}s",
        ledger.len(),
        reasons.get("worker killed").unwrap_or(&0),
        reasons.get("connections terminated").unwrap_or(&0),
        reasons.get("database restarted").unwrap_or(&0),
        killed.len(),
        run_time.as_secs_f64(),
        wall.elapsed().as_secs_f64(),
    );
    drop(fleet);
    drop(pool);
    drop(server);
}

/// Starts a worker whose connections carry `chaos-worker-<pid>` as their
/// application name. The pid is only known after spawning, so the worker
/// process fills it in itself from the placeholder.
fn spawn_worker(fleet: &mut Fleet, base: &str) -> u32 {
    fleet.spawn(&format!("{base}?application_name=chaos-worker-{{pid}}"))
}
