//! `await`: `--waiters` concurrent waits (`square::wait`) on one
//! `jobq::Waiter`, `--rounds` times; how long from a job's outcome to its
//! wait returning.
//!
//! Two measurements, each with all waits registered before any job ends:
//!
//! * **worker**: an in-process worker runs the jobs (due one second after
//!   the round's enqueue, so every wait is in place first); the outcome is
//!   the completer's batch. Measured from the job's `finished_at` (the
//!   outcome statement's `now()`, taken when that statement starts, so the
//!   figure includes the statement and its commit) to the wait returning,
//!   both read from the host's real-time clock (the server runs on the
//!   same host: `DATABASE_URL` on localhost or the private server).
//! * **sql commit**: the bench completes the jobs itself, ten per
//!   statement, 2 ms apart (and, as a burst, all in one statement), and takes `Instant::now()` when each commit
//!   returns; measured from there to the wait returning, on one monotonic
//!   clock. This is the notification path alone: commit → NOTIFY → the
//!   waiter's look-up → the wait's task runs.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use diesel::sql_types::{Array, BigInt};
use diesel::QueryableByName;
use diesel_async::RunQueryDsl;
use jobq::{EnqueueOptions, JobId, Waiter};
use tokio::task::JoinSet;

use crate::cli::Options;
use crate::db;
use crate::report::{ms, percentile, BenchResult};
use crate::tasks::{noops, square, SQUARE};

/// The queue of the jobs the bench completes itself (no worker serves it).
const SQL_QUEUE: &str = "bench_await_sql";

/// Runs the scenario.
pub async fn run(options: &Options) -> anyhow::Result<Vec<BenchResult>> {
    println!("== await");
    let database = db::fresh().await?;
    let url = database.url().to_owned();
    let waiter = Waiter::connect(&url).await?;
    let worker = jobq::Worker::builder()
        .tasks([SQUARE])
        .queues(["default"])
        .database_url(&url)
        .build()
        .await?
        .spawn();
    let mut conn = db::connect(&url).await?;
    let mut next = 0u64;
    let mut by_worker = Vec::new();
    let mut first_of_batch = Vec::new();
    let mut by_sql = Vec::new();
    let mut by_sql_burst = Vec::new();
    for _ in 0..options.rounds {
        let round = worker_round(&mut conn, &waiter, options.waiters, &mut next).await?;
        by_worker.extend(round.latencies);
        first_of_batch.extend(round.first_of_batch.into_values());
        by_sql.extend(sql_round(&mut conn, &waiter, options.waiters, 10, &mut next).await?);
        let all = options.waiters;
        by_sql_burst.extend(sql_round(&mut conn, &waiter, all, all, &mut next).await?);
    }
    worker.shutdown().await?;
    anyhow::ensure!(waiter.waiting() == 0, "await: waits left registered");
    let config = |what: &str| {
        format!(
            "{} concurrent waits x {} rounds, {what}",
            options.waiters, options.rounds
        )
    };
    Ok(vec![
        BenchResult::new(
            "await",
            config("outcome by an in-process worker, from finished_at"),
        )
        .with_latencies(&mut by_worker)
        .extra("outcome_statements", first_of_batch.len())
        .extra("first_of_statement_p50_ms", {
            first_of_batch.sort_unstable();
            ms(percentile(&first_of_batch, 50.0))
        })
        .emit(),
        BenchResult::new("await", config("10 jobs per SQL commit, from the commit"))
            .with_latencies(&mut by_sql)
            .emit(),
        BenchResult::new(
            "await",
            config("all jobs in one SQL commit, from the commit"),
        )
        .with_latencies(&mut by_sql_burst)
        .emit(),
    ])
}

/// Waits for each of `ids`, checking the output; each wait's id and the
/// moments it returned.
fn spawn_waits(waiter: &Waiter, ids: &[(JobId, u64)]) -> JoinSet<anyhow::Result<Returned>> {
    let mut waits = JoinSet::new();
    for &(id, n) in ids {
        let waiter = waiter.clone();
        waits.spawn(async move {
            let out = square::wait(&waiter, id, Duration::from_secs(60)).await?;
            let returned = Returned {
                id,
                at: Instant::now(),
                wall_us: wall_us(SystemTime::now()),
            };
            anyhow::ensure!(out == n.wrapping_mul(n), "job {id}: wrong output {out}");
            Ok(returned)
        });
    }
    waits
}

struct Returned {
    id: JobId,
    at: Instant,
    wall_us: i64,
}

async fn all_registered(waiter: &Waiter, n: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while waiter.waiting() < n {
        anyhow::ensure!(Instant::now() < deadline, "await: waits did not register");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

async fn join_all(mut waits: JoinSet<anyhow::Result<Returned>>) -> anyhow::Result<Vec<Returned>> {
    let mut out = Vec::with_capacity(waits.len());
    while let Some(joined) = waits.join_next().await {
        out.push(joined??);
    }
    Ok(out)
}

async fn enqueue(
    conn: &mut diesel_async::AsyncPgConnection,
    n: usize,
    next: &mut u64,
    options: EnqueueOptions,
) -> anyhow::Result<Vec<(JobId, u64)>> {
    let payloads = noops(next, n);
    let ids = square::enqueue_many_with(conn, &payloads, options).await?;
    Ok(ids.into_iter().zip(payloads.iter().map(|p| p.n)).collect())
}

async fn worker_round(
    conn: &mut diesel_async::AsyncPgConnection,
    waiter: &Waiter,
    n: usize,
    next: &mut u64,
) -> anyhow::Result<WorkerRound> {
    let jobs = enqueue(
        conn,
        n,
        next,
        EnqueueOptions::new().delay(Duration::from_secs(1)),
    )
    .await?;
    let waits = spawn_waits(waiter, &jobs);
    all_registered(waiter, n).await?;
    let returned = join_all(waits).await?;
    let ids: Vec<i64> = jobs.iter().map(|(id, _)| id.get()).collect();
    let finished: HashMap<i64, i64> = diesel::sql_query(
        "SELECT id, (extract(epoch FROM finished_at) * 1e6)::bigint AS us \
         FROM jobq.jobs WHERE id = ANY($1)",
    )
    .bind::<Array<BigInt>, _>(&ids)
    .load::<FinishedAt>(conn)
    .await?
    .into_iter()
    .map(|r| (r.id, r.us))
    .collect();
    let mut round = WorkerRound::default();
    for r in &returned {
        let at = *finished
            .get(&r.id.get())
            .ok_or_else(|| anyhow::anyhow!("job {} has no finished_at", r.id))?;
        let latency = Duration::from_micros(u64::try_from(r.wall_us - at).unwrap_or(0));
        round.latencies.push(latency);
        let first = round.first_of_batch.entry(at).or_insert(latency);
        *first = (*first).min(latency);
    }
    Ok(round)
}

/// A worker round's latencies, and per outcome statement (jobs sharing a
/// `finished_at`) the first wait's: what the statement and the
/// notification cost, before the batch's waits queue behind each other.
#[derive(Default)]
struct WorkerRound {
    latencies: Vec<Duration>,
    first_of_batch: HashMap<i64, Duration>,
}

async fn sql_round(
    conn: &mut diesel_async::AsyncPgConnection,
    waiter: &Waiter,
    n: usize,
    per_statement: usize,
    next: &mut u64,
) -> anyhow::Result<Vec<Duration>> {
    let jobs = enqueue(conn, n, next, EnqueueOptions::new().queue(SQL_QUEUE)).await?;
    let waits = spawn_waits(waiter, &jobs);
    all_registered(waiter, n).await?;
    let mut committed = HashMap::new();
    for chunk in jobs.chunks(per_statement) {
        let ids: Vec<i64> = chunk.iter().map(|(id, _)| id.get()).collect();
        diesel::sql_query(
            "UPDATE jobq.jobs SET state = 'completed', finished_at = now(), \
                 output = to_jsonb((payload->>'n')::numeric * (payload->>'n')::numeric) \
             WHERE id = ANY($1)",
        )
        .bind::<Array<BigInt>, _>(&ids)
        .execute(conn)
        .await?;
        let at = Instant::now();
        committed.extend(ids.into_iter().map(|id| (id, at)));
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let returned = join_all(waits).await?;
    Ok(returned
        .iter()
        .map(|r| r.at.saturating_duration_since(committed[&r.id.get()]))
        .collect())
}

#[derive(QueryableByName)]
struct FinishedAt {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = BigInt)]
    us: i64,
}

fn wall_us(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}
