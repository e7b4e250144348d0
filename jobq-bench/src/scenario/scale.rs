//! `scale`: `--jobs` no-op jobs drained by 1, 2, 4, 8, 16 and 32 worker
//! processes (`--processes`). (Issue 16: 32 processes keep ≥ 0.7 of the
//! best rate, and 1 and 2 do not regress.)
//!
//! Each count gets a fresh database and the same jobs; throughput is
//! timed by the rows' own timestamps, as in `drain`. The ratios are to the
//! best count of the same run. Each process opens its pool's connections
//! as it needs them, its claim connection and its listener: 32 processes
//! need a server that allows a few hundred connections (the private
//! server allows 300; PostgreSQL's default is 100).
//!
//! Beside each count, the minimal SQL loop ([`crate::limit`]) drains the
//! same number of jobs with as many connections: what the machine allows
//! that many claimers at all, so a ratio that falls with the count can be
//! told apart from the machine's own limit. Both report CPU per job (the
//! server's, and for jobq its worker processes'), which shows where the
//! cores went.

use crate::cli::Options;
use crate::cpu::Sample;
use crate::db;
use crate::limit;
use crate::report::BenchResult;
use std::time::{Duration, Instant};

use diesel_async::AsyncPgConnection;

use crate::scenario::drain::enqueue_noops_only;
use crate::worker::{total_cpu_s, Workers};

/// One count's drain by jobq, and by the minimal loop.
struct Measured {
    processes: usize,
    rate: f64,
    server_us: Option<f64>,
    worker_us: f64,
    busy: Option<f64>,
    loop_rate: f64,
    loop_server_us: Option<f64>,
    /// Claim statements that took jobs.
    claims: i64,
    /// Outcome statements.
    outcome_writes: i64,
}

/// Runs the scenario.
pub async fn run(options: &Options) -> anyhow::Result<Vec<BenchResult>> {
    println!("== scale");
    let mut measured = Vec::new();
    for &processes in &options.processes {
        let m = measure(options.jobs, processes).await?;
        println!(
            "   {processes} process(es): {:.0} jobs/s (server {} us/job, workers {:.0} us/job, \
             busy {}, {} claims, {} outcome writes); minimal loop on {processes} connection(s): {:.0} jobs/s (server {} us/job)",
            m.rate,
            shown(m.server_us),
            m.worker_us,
            shown(m.busy.map(|b| b * 100.0)),
            m.claims,
            m.outcome_writes,
            m.loop_rate,
            shown(m.loop_server_us),
        );
        measured.push(m);
    }
    let best = measured.iter().map(|m| m.rate).fold(0.0, f64::max);
    let loop_best = measured.iter().map(|m| m.loop_rate).fold(0.0, f64::max);
    Ok(measured
        .into_iter()
        .map(|m| {
            let mut result = BenchResult {
                jobs_per_sec: Some(m.rate),
                limit_jobs_per_sec: Some(m.loop_rate),
                ..BenchResult::new(
                    "scale",
                    format!(
                        "{} no-op jobs, {} worker process(es)",
                        options.jobs, m.processes
                    ),
                )
            }
            .extra("ratio_to_best", m.rate / best)
            .extra("minimal_loop_ratio_to_its_best", m.loop_rate / loop_best)
            .extra("ratio_to_minimal_loop", m.rate / m.loop_rate)
            .extra("worker_cpu_us_per_job", m.worker_us)
            .extra("claims", m.claims)
            .extra("outcome_writes", m.outcome_writes);
            if let Some(us) = m.server_us {
                result = result.extra("server_cpu_us_per_job", us);
            }
            if let Some(us) = m.loop_server_us {
                result = result.extra("minimal_loop_server_cpu_us_per_job", us);
            }
            if let Some(busy) = m.busy {
                result = result.extra("machine_busy", busy);
            }
            result.emit()
        })
        .collect())
}

fn shown(value: Option<f64>) -> String {
    value.map_or_else(|| "?".to_owned(), |v| format!("{v:.0}"))
}

/// Drains `jobs` no-op jobs with `processes` worker processes in a fresh
/// database, then as many with the minimal loop on as many connections in
/// another.
///
/// The workers are started first and the jobs appear only once every one
/// of them listens, in one transaction: otherwise the first processes to
/// come up drain most jobs while the others still start (a drain of
/// 100,000 takes about a second, starting 32 processes longer), and the
/// figure would measure start-ups. The CPU figures cover the same span,
/// from the commit to the last outcome (the workers' own include their
/// start-up, which is small next to a job's share).
async fn measure(jobs: usize, processes: usize) -> anyhow::Result<Measured> {
    let database = db::fresh().await?;
    let url = database.url().to_owned();
    let workers = Workers::start(&url, processes, false)?;
    let mut conn = db::connect(&url).await?;
    wait_listening(&mut conn, processes).await?;
    let before = Sample::now();
    db::exec(&mut conn, "BEGIN").await?;
    enqueue_noops_only(&mut conn, jobs).await?;
    db::exec(&mut conn, "COMMIT").await?;
    wait_drained(&mut conn, jobs).await?;
    let spent = before.until(&Sample::now());
    let reports = workers.stop().await?;
    let rate = db::drained_rate(&mut conn, "scale", jobs).await?;
    // A claim stamps its whole batch with one start time, an outcome
    // statement with one finish time (each transaction's now()).
    let claims = db::count(
        &mut conn,
        "SELECT count(DISTINCT started_at) AS n FROM jobq.jobs",
    )
    .await?;
    let outcome_writes = db::count(
        &mut conn,
        "SELECT count(DISTINCT finished_at) AS n FROM jobq.jobs",
    )
    .await?;
    drop(conn);
    drop(database);

    let database = db::fresh().await?;
    let baseline = limit::measure(database.url(), jobs as u64, processes).await?;
    anyhow::ensure!(
        baseline.jobs == jobs,
        "scale: the minimal loop did {} of {jobs} jobs",
        baseline.jobs
    );
    Ok(Measured {
        processes,
        rate,
        server_us: spent.server_us_per_job(jobs),
        worker_us: total_cpu_s(&reports) * 1e6 / jobs as f64,
        busy: spent.busy,
        loop_rate: baseline.jobs_per_sec,
        loop_server_us: baseline.cpu.server_us_per_job(jobs),
        claims,
        outcome_writes,
    })
}

/// How long the workers may take to come up, and the jobs to drain.
const DEADLINE: Duration = Duration::from_secs(300);

/// Waits until `processes` connections listen for new jobs: every worker
/// is up and will hear the enqueue.
async fn wait_listening(conn: &mut AsyncPgConnection, processes: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let listening = db::count(
            conn,
            "SELECT count(*) AS n FROM pg_stat_activity \
             WHERE datname = current_database() AND query ILIKE 'LISTEN%'",
        )
        .await?;
        if listening >= processes as i64 {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "scale: only {listening} of {processes} workers listen after {DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until all `jobs` completed.
async fn wait_drained(conn: &mut AsyncPgConnection, jobs: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + DEADLINE;
    loop {
        // The worker processes' own check.
        let busy = db::count(conn, db::BUSY_SQL).await?;
        if busy == 0 {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "scale: {jobs} jobs not drained after {DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
