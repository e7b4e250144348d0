//! `Context::complete_in` under fire: 2,000 jobs whose handlers write an
//! effect row and complete their job in the same transaction, on three
//! worker processes that are killed with SIGKILL and replaced, whose
//! connections are terminated by the server again and again, and which are
//! frozen (SIGSTOP) for longer than the lease, so that their jobs are
//! rescued and run elsewhere while the frozen attempts are still alive
//! and go on to complete when thawed. Every job must complete, with exactly
//! one effect row, written by the attempt that completed it.
//!
//! The effect table has no unique constraint: a duplicate must show as a
//! second row, not hide behind an error.
//!
//! This target has no libtest harness: the same binary is the test and,
//! with `JOBQ_COMPLETE_IN_WORKER_URL` set, a worker process.

mod support;

use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use diesel::sql_types::{BigInt, Integer};
use diesel::QueryableByName;
use diesel_async::pooled_connection::AsyncDieselConnectionManager;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use jobq::{EnqueueOptions, TaskError};
use jobq_testkit::TestDatabase;
use serde::{Deserialize, Serialize};
use support::fleet::{self, Fleet};

const WORKER_ENV: &str = "JOBQ_COMPLETE_IN_WORKER_URL";
/// Names the workers' connections, so that only they are terminated.
const APP_NAME: &str = "jobq-complete-in-kill";
const JOBS: usize = 2_000;
const WORKERS: usize = 3;
const KILLS: usize = 4;
const FREEZES: usize = 2;
const LEASE: Duration = Duration::from_secs(1);
/// Long enough past the lease for the frozen worker's jobs to be rescued
/// and claimed again by the others.
const FREEZE: Duration = Duration::from_millis(3_000);
const DEADLINE: Duration = Duration::from_secs(100);
/// Jobs enqueued at one priority.
const BATCH: usize = 40;
/// What a handler logs when its completion is refused (read back from the
/// workers' logs).
const SUPERSEDED: &str = "complete_in refused: superseded";

type Pool = bb8::Pool<AsyncDieselConnectionManager<AsyncPgConnection>>;

// ---------------------------------------------------------------- worker side

/// The application's own pool, as a handler would have it.
static APP: OnceLock<Pool> = OnceLock::new();

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Transfer {
    n: usize,
}

/// Works a little, then writes the effect row and completes the job in one
/// transaction, working a little inside it too so that kills and cut
/// connections land there as well.
#[jobq::task(concurrency = 2, retry = "20ms", max_attempts = 1000)]
async fn transfer(ctx: jobq::Context, job: Transfer) -> Result<(), TaskError> {
    let _ = job;
    // Simulated work, not synchronisation.
    tokio::time::sleep(Duration::from_millis(fastrand::u64(10..=40))).await;
    let pool = APP
        .get()
        .ok_or_else(|| TaskError::msg("app pool missing"))?;
    let mut conn = pool.get().await?;
    let result = conn
        .transaction::<_, TaskError, _>(async |conn| {
            diesel::sql_query("INSERT INTO effects (job_id, attempt, pid) VALUES ($1, $2, $3)")
                .bind::<BigInt, _>(ctx.job_id().get())
                .bind::<Integer, _>(i32::try_from(ctx.attempt()).unwrap_or(i32::MAX))
                .bind::<Integer, _>(i32::try_from(std::process::id()).unwrap_or(0))
                .execute(conn)
                .await?;
            tokio::time::sleep(Duration::from_millis(fastrand::u64(0..=5))).await;
            ctx.complete_in(conn).await?;
            Ok(())
        })
        .await;
    if let Err(e) = &result {
        if let Some(jobq::Error::Superseded { .. }) = e.as_anyhow().downcast_ref::<jobq::Error>() {
            tracing::warn!(job.id = ctx.job_id().get(), "{SUPERSEDED}");
        }
    }
    result
}

async fn worker_main(url: String) -> Result<(), jobq::Error> {
    let _ = APP.set(fleet::side_pool(&url));
    fleet::process_worker(&url, LEASE)
        .connect_timeout(Duration::from_secs(30))
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
    fleet::run_tests(&[("complete_in_under_kills", || {
        Box::pin(complete_in_under_kills())
    })])
}

#[derive(QueryableByName)]
struct N {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[derive(QueryableByName)]
struct Miscount {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = BigInt)]
    effects: i64,
}

async fn count(pool: &Pool, sql: &str) -> i64 {
    let mut conn = pool.get().await.expect("connection");
    diesel::sql_query(sql)
        .get_result::<N>(&mut conn)
        .await
        .expect(sql)
        .n
}

fn spawn_worker(fleet: &mut Fleet, url: &str) -> u32 {
    let separator = if url.contains('?') { '&' } else { '?' };
    fleet.spawn(&format!(
        "{url}{separator}application_name={APP_NAME}-{{pid}}"
    ))
}

fn signal(signal: &str, pid: u32) {
    let status = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .expect("running kill");
    assert!(status.success(), "kill {signal} {pid}: {status}");
}

async fn registered(pool: &Pool, fleet: &mut Fleet, pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while count(
        pool,
        &format!("SELECT count(*) AS n FROM jobq.workers WHERE pid = {pid}"),
    )
    .await
        == 0
    {
        fleet.live();
        assert!(
            Instant::now() < deadline,
            "worker {pid} never registered\n{}",
            fleet.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn complete_in_under_kills() {
    let wall = Instant::now();
    let db = TestDatabase::create().await.expect("test database");
    let pool: Pool = fleet::side_pool(db.url());
    {
        let mut conn = pool.get().await.expect("connection");
        jobq::migrate(&mut conn).await.expect("migrate");
        conn.batch_execute(
            "CREATE TABLE effects (job_id bigint NOT NULL, attempt int NOT NULL, pid int NOT NULL)",
        )
        .await
        .expect("effects table");
    }

    let mut fleet = Fleet::new(WORKER_ENV);
    for _ in 0..WORKERS {
        let pid = spawn_worker(&mut fleet, db.url());
        registered(&pool, &mut fleet, pid).await;
    }
    // Each batch at a lower priority than the one before: a rescued job
    // (due again at its rescue) then runs before the newer jobs waiting,
    // while the attempt it was taken from is still frozen.
    let mut conn = pool.get().await.expect("connection");
    for (batch, n) in (0..JOBS).step_by(BATCH).enumerate() {
        let payloads: Vec<Transfer> = (n..(n + BATCH).min(JOBS)).map(|n| Transfer { n }).collect();
        let priority = i16::try_from(batch).expect("few batches");
        let ids = transfer::enqueue_many_with(
            &mut conn,
            &payloads,
            EnqueueOptions::new().priority(-priority),
        )
        .await
        .expect("enqueue_many_with");
        assert_eq!(ids.len(), payloads.len());
    }
    drop(conn);

    let started = Instant::now();
    let mut kills = 0;
    let mut freezes = 0;
    let mut terminated = 0;
    let mut frozen: Option<(u32, Instant)> = None;
    let mut next_event = Duration::from_millis(500);
    let mut round = 0usize;
    loop {
        let done = count(
            &pool,
            "SELECT count(*) AS n FROM jobq.jobs WHERE state = 'completed'",
        )
        .await;
        if done == JOBS as i64 && frozen.is_none() {
            break;
        }
        assert!(
            wall.elapsed() < DEADLINE,
            "only {done} of {JOBS} jobs completed within {DEADLINE:?}\n{}",
            fleet.logs()
        );
        if let Some((pid, since)) = frozen {
            if since.elapsed() >= FREEZE {
                signal("-CONT", pid);
                frozen = None;
            }
        }
        let t = started.elapsed();
        if t >= next_event && done < JOBS as i64 {
            next_event = t + Duration::from_millis(500);
            round += 1;
            match round % 3 {
                // Cut every connection of the workers, jobq's and the
                // handlers' alike; not during a freeze, whose attempts are
                // to come back to live connections and try to complete.
                0 if frozen.is_none() => {
                    terminated += count(
                        &pool,
                        &format!(
                            "SELECT count(pg_terminate_backend(pid)) AS n FROM pg_stat_activity \
                             WHERE datname = current_database() \
                               AND application_name LIKE '{APP_NAME}-%'"
                        ),
                    )
                    .await;
                }
                1 if freezes < FREEZES && frozen.is_none() => {
                    let live = fleet.live();
                    let pid = live[fastrand::usize(..live.len())];
                    signal("-STOP", pid);
                    frozen = Some((pid, Instant::now()));
                    freezes += 1;
                }
                _ if kills < KILLS => {
                    let live: Vec<u32> = fleet
                        .live()
                        .into_iter()
                        .filter(|&p| frozen.is_none_or(|(f, _)| f != p))
                        .collect();
                    let victim = live[fastrand::usize(..live.len())];
                    fleet.kill(victim);
                    kills += 1;
                    let pid = spawn_worker(&mut fleet, db.url());
                    registered(&pool, &mut fleet, pid).await;
                }
                _ => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let run_time = started.elapsed();
    fleet.live();

    // ------------------------------------------------------------ checks
    let mut conn = pool.get().await.expect("connection");
    let miscounted: Vec<Miscount> = diesel::sql_query(
        "SELECT j.id, count(e.job_id) AS effects \
           FROM jobq.jobs j LEFT JOIN effects e ON e.job_id = j.id \
          GROUP BY j.id HAVING count(e.job_id) <> 1 ORDER BY j.id",
    )
    .load(&mut conn)
    .await
    .expect("effects per job");
    drop(conn);
    let examples: Vec<String> = miscounted
        .iter()
        .take(10)
        .map(|m| format!("job {}: {} effect rows", m.id, m.effects))
        .collect();
    assert!(
        miscounted.is_empty(),
        "{} jobs without exactly one effect row, e.g. {examples:?}",
        miscounted.len()
    );
    assert_eq!(
        count(&pool, "SELECT count(*) AS n FROM effects").await,
        JOBS as i64
    );
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) AS n FROM jobq.jobs WHERE state = 'completed'"
        )
        .await,
        JOBS as i64
    );
    // Each effect is the completing attempt's (as handlers number them).
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) AS n FROM effects e JOIN jobq.jobs j ON j.id = e.job_id \
              WHERE e.attempt <> j.attempt - j.handbacks"
        )
        .await,
        0,
        "an effect row of an attempt that did not complete its job"
    );
    // The fire was real: attempts were lost to kills and cuts, and frozen
    // attempts were refused after their jobs had moved on.
    let retried = count(
        &pool,
        "SELECT count(*) AS n FROM jobq.jobs WHERE attempt - handbacks > 1",
    )
    .await;
    let superseded = fleet.count_in_logs(SUPERSEDED);
    assert!(retried > 0, "no job needed a second attempt");
    assert!(terminated > 0, "no connection was terminated");
    assert_eq!(
        (kills, freezes),
        (KILLS, FREEZES),
        "ran out of time for the fire"
    );
    assert!(
        superseded > 0,
        "no frozen attempt tried to complete after its job was rescued\n{}",
        fleet.logs()
    );
    println!(
        "complete_in under kills: {JOBS} jobs in {run_time:?}, {kills} kills, {freezes} freezes, \
         {terminated} connections terminated, {retried} jobs retried, {superseded} completions \
         refused as superseded; one effect row per job"
    );
}
