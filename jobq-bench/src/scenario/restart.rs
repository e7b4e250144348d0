//! `restart`: after a database outage, how soon does every worker claim
//! again? (Issue 16: within 2 s of the server accepting connections.)
//!
//! Always on a private server of its own (it has to stop it), whatever
//! `DATABASE_URL` says. Two worker processes serving the holding task sit
//! idle; the server is stopped (`pg_ctl stop -m fast`, which cuts every
//! connection) for `--outage-secs` and started again. The moment it
//! accepts connections again is the database's `now()` on the bench's
//! first connection after it; right then the bench enqueues 20 jobs that
//! each stay running for a second, ten for each worker's slots. Each
//! worker's recovery is the time from that moment to its first claim
//! (its first job's `started_at`, read while the job runs and its row
//! names the worker): a notification wakes a worker whose listener is
//! back, and the poll finds the jobs otherwise, so this covers the pool,
//! the listener and the fetcher's back-off together. The figure is the
//! slower worker's.

use std::time::{Duration, Instant};

use diesel::sql_types::{BigInt, Double};
use diesel::QueryableByName;
use diesel_async::RunQueryDsl;

use crate::cli::Options;
use crate::db;
use crate::report::BenchResult;
use crate::tasks::{hold, Hold, HOLD};
use crate::worker::Workers;

/// Worker processes.
const WORKERS: usize = 2;

/// Jobs enqueued after the outage: every slot of both workers.
const JOBS: usize = 20;

/// How long each of them runs.
const HOLD_MS: u64 = 1_000;

/// How long the workers may take to claim again before the run is
/// declared failed.
const GIVE_UP: Duration = Duration::from_secs(120);

#[derive(QueryableByName)]
struct FirstClaim {
    #[diesel(sql_type = BigInt)]
    worker_id: i64,
    #[diesel(sql_type = Double)]
    after_s: f64,
}

/// Runs the scenario.
pub async fn run(options: &Options) -> anyhow::Result<Vec<BenchResult>> {
    println!("== restart");
    let server = jobq_testkit::PrivateServer::start().await?;
    let database = jobq_testkit::TestDatabase::create_on(server.url()).await?;
    let url = database.url().to_owned();
    jobq::migrate(&mut db::connect(&url).await?).await?;
    let tasks = [HOLD.to_owned()];
    let workers = Workers::start_serving(&url, WORKERS, false, &tasks)?;
    wait_for_workers(&url).await?;

    server.stop().await?;
    tokio::time::sleep(Duration::from_secs(options.outage_secs)).await;
    server.start_again().await?;
    let mut conn = db::connect(&url).await?;
    let back_at = db::seconds(&mut conn, "SELECT extract(epoch FROM now())::float8 AS s").await?;
    let payloads: Vec<Hold> = (0..JOBS).map(|_| Hold { ms: HOLD_MS }).collect();
    hold::enqueue_many(&mut conn, &payloads).await?;

    let deadline = Instant::now() + GIVE_UP;
    let firsts = loop {
        let firsts: Vec<FirstClaim> = diesel::sql_query(
            "SELECT worker_id, \
                    extract(epoch FROM min(started_at))::float8 - $1 AS after_s \
             FROM jobq.jobs WHERE state = 'running' AND worker_id IS NOT NULL \
             GROUP BY worker_id",
        )
        .bind::<Double, _>(back_at)
        .load(&mut conn)
        .await?;
        if firsts.len() >= WORKERS {
            break firsts;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "restart: {} of {WORKERS} workers claimed within {GIVE_UP:?} of the database's return",
            firsts.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    workers.stop().await?;
    let slowest = firsts.iter().map(|f| f.after_s).fold(0.0, f64::max);
    let mut result = BenchResult::new(
        "restart",
        format!(
            "{WORKERS} idle workers, database down {} s",
            options.outage_secs
        ),
    )
    .extra("slowest_claim_after_s", slowest);
    for f in &firsts {
        result = result.extra(&format!("worker_{}_claim_after_s", f.worker_id), f.after_s);
    }
    Ok(vec![result.emit()])
}

/// Waits until both workers have registered (they claim nothing yet).
async fn wait_for_workers(url: &str) -> anyhow::Result<()> {
    let mut conn = db::connect(url).await?;
    let deadline = Instant::now() + GIVE_UP;
    while db::count(&mut conn, "SELECT count(*) AS n FROM jobq.workers").await? < WORKERS as i64 {
        anyhow::ensure!(
            Instant::now() < deadline,
            "restart: the workers did not start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}
