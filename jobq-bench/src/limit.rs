//! The "minimal SQL loop": the least work any PostgreSQL job queue must do
//! per job, through the same driver (diesel-async) as jobq. Claim a batch
//! of 1,000 with `FOR UPDATE SKIP LOCKED` (committed), then write the
//! outcomes by id array, fenced on the attempt; repeat until nothing is
//! left. No payload decoding, no runtime, no bookkeeping: the scenarios
//! report it as `limit_jobs_per_sec`, and jobq's throughput divided by it
//! is the share of the physical limit that jobq reaches.

use std::future::Future;
use std::time::Instant;

use diesel::sql_types::{Array, BigInt, Text};
use diesel::QueryableByName;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::cpu::{Sample, Spent};
use crate::db;

/// Task name of the limit loop's jobs; no worker serves it.
pub const LIMIT_TASK: &str = "bench.limit";

/// Claim batch of the loop.
pub const BATCH: i64 = 1000;

/// Inserts `n` pending jobs of `task` in one server-side statement, with
/// payloads like the no-op task's.
pub async fn insert_jobs(conn: &mut AsyncPgConnection, task: &str, n: u64) -> anyhow::Result<()> {
    diesel::sql_query(
        "INSERT INTO jobq.jobs (task, payload) \
         SELECT $1, jsonb_build_object('n', g) FROM generate_series(1, $2) AS g",
    )
    .bind::<Text, _>(task)
    .bind::<BigInt, _>(i64::try_from(n)?)
    .execute(conn)
    .await?;
    Ok(())
}

/// A job the minimal claim took.
#[derive(QueryableByName)]
pub struct Claimed {
    /// Its id.
    #[diesel(sql_type = BigInt)]
    pub id: i64,
}

/// What a set of parallel loops did: throughput, and the CPU it took.
#[derive(Debug, Clone, Copy)]
pub struct Rate {
    /// Jobs per second.
    pub jobs_per_sec: f64,
    /// Jobs done, summed over the loops.
    pub jobs: usize,
    /// CPU spent.
    pub cpu: Spent,
}

/// Claims and completes every pending job of `task` with `loops`
/// connections in parallel.
pub async fn run_loops(url: &str, task: &str, loops: usize) -> anyhow::Result<Rate> {
    let task = task.to_owned();
    in_parallel(url, loops, move |mut conn| {
        let task = task.clone();
        async move {
            let mut done = 0usize;
            loop {
                let claimed = claim_batch(&mut conn, &task).await?;
                if claimed.is_empty() {
                    return Ok(done);
                }
                done += complete(&mut conn, &claimed).await?;
            }
        }
    })
    .await
}

/// Runs `body` on `loops` fresh connections at once, timed from after the
/// connections are made until the last one finished; jobs are what the
/// bodies counted.
pub async fn in_parallel<F, Fut>(url: &str, loops: usize, body: F) -> anyhow::Result<Rate>
where
    F: Fn(AsyncPgConnection) -> Fut,
    Fut: Future<Output = anyhow::Result<usize>> + Send + 'static,
{
    let mut conns = Vec::with_capacity(loops);
    for _ in 0..loops {
        conns.push(db::connect(url).await?);
    }
    let cpu = Sample::now();
    let started = Instant::now();
    let handles: Vec<_> = conns.into_iter().map(|c| tokio::spawn(body(c))).collect();
    let mut done = 0;
    for h in handles {
        done += h.await??;
    }
    let jobs_per_sec = crate::report::rate(done, started.elapsed());
    Ok(Rate {
        jobs_per_sec,
        jobs: done,
        cpu: cpu.until(&Sample::after_disconnect().await),
    })
}

/// The minimal claim: up to [`BATCH`] due jobs of `task`, `SKIP LOCKED`,
/// committed. Run again when it met a row another loop claimed and
/// finished after its snapshot: that row moved to the finished partition,
/// and PostgreSQL fails the statement instead of skipping it.
pub async fn claim_batch(conn: &mut AsyncPgConnection, task: &str) -> anyhow::Result<Vec<Claimed>> {
    loop {
        match claim_once(conn, task).await {
            Err(e) if jobq_diesel::moved_between_partitions(&e) => continue,
            claimed => return Ok(claimed?),
        }
    }
}

async fn claim_once(conn: &mut AsyncPgConnection, task: &str) -> diesel::QueryResult<Vec<Claimed>> {
    diesel::sql_query(
        "WITH picked AS ( \
             SELECT id FROM jobq.jobs \
             WHERE state = 'pending' AND task = $1 AND run_at <= now() \
             ORDER BY priority DESC, run_at, id \
             LIMIT $2 FOR UPDATE SKIP LOCKED) \
         UPDATE jobq.jobs SET state = 'running', attempt = attempt + 1, started_at = now() \
         WHERE id = ANY(ARRAY(SELECT id FROM picked)) \
         RETURNING id",
    )
    .bind::<Text, _>(task)
    .bind::<BigInt, _>(BATCH)
    .load(conn)
    .await
}

async fn complete(conn: &mut AsyncPgConnection, claimed: &[Claimed]) -> anyhow::Result<usize> {
    let ids: Vec<i64> = claimed.iter().map(|c| c.id).collect();
    // Outcomes by id array, as the issue defines the minimal loop. (A join
    // with unnest() here would be at the planner's mercy: statistics say no
    // job is running, and it would loop over the batch once per row.)
    Ok(diesel::sql_query(
        "UPDATE jobq.jobs SET state = 'completed', finished_at = now() \
         WHERE id = ANY($1) AND state = 'running'",
    )
    .bind::<Array<BigInt>, _>(&ids)
    .execute(conn)
    .await?)
}

/// The whole measurement: `jobs` fresh jobs of [`LIMIT_TASK`], drained by
/// `loops` parallel loops on a settled table (see [`db::settle`]: the
/// scenario's dead tuples and checkpoints do not slow the limit down).
pub async fn measure(url: &str, jobs: u64, loops: usize) -> anyhow::Result<Rate> {
    let mut conn = db::connect(url).await?;
    insert_jobs(&mut conn, LIMIT_TASK, jobs).await?;
    db::settle(&mut conn).await?;
    run_loops(url, LIMIT_TASK, loops).await
}
