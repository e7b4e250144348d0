//! `enqueue`: how fast jobs go in.
//!
//! * `enqueue_many` of the whole `--jobs` in batches of 1,000, each batch
//!   its own (autocommit) transaction; the limit is the same batches as a
//!   bare `INSERT .. SELECT FROM unnest($1)` through the same driver.
//! * single `enqueue` calls, each its own transaction, from 1 and from 8
//!   connections; the limit is a bare one-row `INSERT` + COMMIT into the
//!   same table through the same driver and connections. Bare and jobq
//!   rounds alternate (bare, jobq, bare, jobq) so that neither profits
//!   from going second.

use std::time::{Duration, Instant};

use diesel::sql_types::{Array, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::cli::Options;
use crate::db;
use crate::report::{rate, BenchResult};
use crate::tasks::{noop, noops, Noop};

const BATCH: usize = 1000;

/// Runs the scenario.
pub async fn run(options: &Options) -> anyhow::Result<Vec<BenchResult>> {
    println!("== enqueue");
    let database = db::fresh().await?;
    let url = database.url().to_owned();
    let mut results = Vec::new();

    // enqueue_many, alternating with its bare equivalent, half the jobs each round.
    let mut conn = db::connect(&url).await?;
    let mut many = Measured::default();
    let mut bare = Measured::default();
    let half = options.jobs.div_ceil(2);
    for _ in 0..2 {
        bare.add(bare_many(&mut conn, half).await?);
        many.add(jobq_many(&mut conn, half).await?);
    }
    results.push(
        BenchResult {
            jobs_per_sec: Some(many.rate()),
            limit_jobs_per_sec: Some(bare.rate()),
            ..BenchResult::new("enqueue", format!("enqueue_many, batches of {BATCH}"))
        }
        .with_latencies(&mut many.latencies)
        .extra("latency_unit", "per batch")
        .extra("ratio_to_bare_insert", many.rate() / bare.rate())
        .emit(),
    );

    for connections in [1usize, 8] {
        let mut conns = Vec::new();
        for _ in 0..connections {
            conns.push(db::connect(&url).await?);
        }
        let per_round = options.singles.div_ceil(2);
        let mut single = Measured::default();
        let mut bare = Measured::default();
        for _ in 0..2 {
            let (c, m) = singles(conns, per_round, true).await?;
            conns = c;
            bare.add(m);
            let (c, m) = singles(conns, per_round, false).await?;
            conns = c;
            single.add(m);
        }
        results.push(
            BenchResult {
                jobs_per_sec: Some(single.rate()),
                limit_jobs_per_sec: Some(bare.rate()),
                ..BenchResult::new(
                    "enqueue",
                    format!("single enqueue, {connections} connection(s)"),
                )
            }
            .with_latencies(&mut single.latencies)
            .extra("ratio_to_bare_insert", single.rate() / bare.rate())
            .extra(
                "bare_p50_ms",
                crate::report::ms(crate::report::percentile(
                    &{
                        let mut l = bare.latencies.clone();
                        l.sort_unstable();
                        l
                    },
                    50.0,
                )),
            )
            .emit(),
        );
    }
    Ok(results)
}

/// Jobs done, time taken and per-call latencies, summed over rounds.
#[derive(Default)]
struct Measured {
    jobs: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Measured {
    fn add(&mut self, other: Measured) {
        self.jobs += other.jobs;
        self.elapsed += other.elapsed;
        self.latencies.extend(other.latencies);
    }

    fn rate(&self) -> f64 {
        rate(self.jobs, self.elapsed)
    }
}

async fn jobq_many(conn: &mut AsyncPgConnection, jobs: usize) -> anyhow::Result<Measured> {
    let mut m = Measured::default();
    let started = Instant::now();
    let mut n = 0u64;
    while m.jobs < jobs {
        let size = BATCH.min(jobs - m.jobs);
        // Building payloads is part of the caller's cost, as in an app.
        let call = Instant::now();
        let payloads = noops(&mut n, size);
        noop::enqueue_many(conn, &payloads).await?;
        m.latencies.push(call.elapsed());
        m.jobs += size;
    }
    m.elapsed = started.elapsed();
    Ok(m)
}

async fn bare_many(conn: &mut AsyncPgConnection, jobs: usize) -> anyhow::Result<Measured> {
    let mut m = Measured::default();
    let started = Instant::now();
    let mut n = 0u64;
    while m.jobs < jobs {
        let size = BATCH.min(jobs - m.jobs);
        let call = Instant::now();
        let payloads: Vec<String> = (0..size)
            .map(|_| {
                n += 1;
                format!("{{\"n\":{n}}}")
            })
            .collect();
        diesel::sql_query(
            "INSERT INTO jobq.jobs (task, payload) \
             SELECT 'bench.bare', p::jsonb FROM unnest($1::text[]) AS p",
        )
        .bind::<Array<Text>, _>(&payloads)
        .execute(conn)
        .await?;
        m.latencies.push(call.elapsed());
        m.jobs += size;
    }
    m.elapsed = started.elapsed();
    Ok(m)
}

/// `per_round` single-row inserts spread over the connections, each its own
/// transaction: bare SQL or `noop::enqueue`.
async fn singles(
    conns: Vec<AsyncPgConnection>,
    per_round: usize,
    bare: bool,
) -> anyhow::Result<(Vec<AsyncPgConnection>, Measured)> {
    let per_conn = per_round.div_ceil(conns.len());
    let started = Instant::now();
    let mut handles = Vec::new();
    for mut conn in conns {
        handles.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(per_conn);
            for i in 0..per_conn {
                let call = Instant::now();
                if bare {
                    diesel::sql_query(
                        "INSERT INTO jobq.jobs (task, payload) VALUES ('bench.bare', $1::jsonb)",
                    )
                    .bind::<Text, _>(format!("{{\"n\":{i}}}"))
                    .execute(&mut conn)
                    .await?;
                } else {
                    noop::enqueue(&mut conn, &Noop { n: i as u64 }).await?;
                }
                latencies.push(call.elapsed());
            }
            anyhow::Ok((conn, latencies))
        }));
    }
    let mut conns = Vec::new();
    let mut m = Measured::default();
    for h in handles {
        let (conn, latencies) = h.await??;
        conns.push(conn);
        m.jobs += latencies.len();
        m.latencies.extend(latencies);
    }
    m.elapsed = started.elapsed();
    Ok((conns, m))
}
