//! `await`: `--waiters` concurrent waits (`square::wait`) on one
//! `jobq::Waiter`, `--rounds` times; how long from a job's outcome to its
//! wait returning.
//!
//! Two measurements, each with all waits registered before any job ends:
//!
//! * **worker**: an in-process worker runs the jobs (due one second after
//!   the round's enqueue, so every wait is in place first); the outcome is
//!   the completer's batch. The bench cannot see the completer's commit:
//!   a statement trigger of its own records when each UPDATE on the jobs
//!   table ended (`clock_timestamp()` as its last trigger fires, just
//!   before the commit), found by its `now()`, which the outcome statement
//!   also wrote as the job's `finished_at`. Measured from there to the
//!   wait returning, both read from the host's real-time clock (the
//!   server runs on the same host: `DATABASE_URL` on localhost or the
//!   private server); the figure includes the commit itself. Extras: the
//!   same from `finished_at` (the statement's start), and the outcome
//!   statements' own duration.
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

/// Records when each statement that finishes jobs started (`now()`, which
/// is also what the outcome statement writes as `finished_at`) and ended
/// (`clock_timestamp()`, just before its commit): jobq's outcomes insert
/// into the finished partition, the bench's own completions update the
/// jobs table. The triggers' names sort after jobq's own, so they fire
/// last.
const STATEMENT_ENDS_SQL: &str = "\
    CREATE TABLE public.bench_statement_ends (started timestamptz, ended timestamptz); \
    CREATE FUNCTION public.bench_statement_end() RETURNS trigger LANGUAGE plpgsql AS $$ \
    BEGIN INSERT INTO public.bench_statement_ends VALUES (now(), clock_timestamp()); \
    RETURN NULL; END $$; \
    CREATE TRIGGER zz_bench_statement_end AFTER UPDATE ON jobq.jobs \
        FOR EACH STATEMENT EXECUTE FUNCTION public.bench_statement_end(); \
    CREATE TRIGGER zz_bench_statement_end AFTER INSERT ON jobq.jobs_finished \
        FOR EACH STATEMENT EXECUTE FUNCTION public.bench_statement_end();";

/// The queue of the jobs the bench completes itself (no worker serves it).
const SQL_QUEUE: &str = "bench_await_sql";

/// Runs the scenario.
pub async fn run(options: &Options) -> anyhow::Result<Vec<BenchResult>> {
    println!("== await");
    let database = db::fresh().await?;
    let url = database.url().to_owned();
    let mut conn = db::connect(&url).await?;
    db::exec(&mut conn, STATEMENT_ENDS_SQL).await?;
    let waiter = Waiter::connect(&url).await?;
    let worker = jobq::Worker::builder()
        .tasks([SQUARE])
        .queues(["default"])
        .database_url(&url)
        .build()
        .await?
        .spawn();
    let mut next = 0u64;
    let mut by_worker = Vec::new();
    let mut from_start = Vec::new();
    let mut statements = Vec::new();
    let mut by_sql = Vec::new();
    let mut by_sql_burst = Vec::new();
    for _ in 0..options.rounds {
        let round = worker_round(&mut conn, &waiter, options.waiters, &mut next).await?;
        by_worker.extend(round.latencies);
        from_start.extend(round.from_start);
        statements.extend(round.statements.into_values());
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
            config("outcome by an in-process worker, from its statement's end"),
        )
        .with_latencies(&mut by_worker)
        .extra("outcome_statements", statements.len())
        .extra("outcome_statement_p50_ms", {
            statements.sort_unstable();
            ms(percentile(&statements, 50.0))
        })
        .extra("from_finished_at_p50_ms", {
            from_start.sort_unstable();
            ms(percentile(&from_start, 50.0))
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

/// Waits until the `n` waits of a round are registered with the waiter
/// and in the database (`jobq.awaited`, which the finished-jobs trigger
/// reads): a wait in a real service starts long before its job ends, and
/// the figure is about the wake-up, not the registration.
async fn all_registered(
    conn: &mut diesel_async::AsyncPgConnection,
    waiter: &Waiter,
    n: usize,
) -> anyhow::Result<()> {
    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let n_rows = i64::try_from(n)?;
    loop {
        let in_db = if waiter.waiting() < n {
            0
        } else {
            diesel::sql_query("SELECT count(*) AS n FROM jobq.awaited")
                .get_result::<Count>(conn)
                .await?
                .n
        };
        if in_db >= n_rows {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "await: waits did not register");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
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
    all_registered(conn, waiter, n).await?;
    let returned = join_all(waits).await?;
    let ids: Vec<i64> = jobs.iter().map(|(id, _)| id.get()).collect();
    let finished: HashMap<i64, (i64, i64)> = diesel::sql_query(
        "SELECT j.id, (extract(epoch FROM j.finished_at) * 1e6)::bigint AS us, \
             (extract(epoch FROM max(e.ended)) * 1e6)::bigint AS end_us \
         FROM jobq.jobs j JOIN public.bench_statement_ends e ON e.started = j.finished_at \
         WHERE j.id = ANY($1) GROUP BY j.id, j.finished_at",
    )
    .bind::<Array<BigInt>, _>(&ids)
    .load::<FinishedAt>(conn)
    .await?
    .into_iter()
    .map(|r| (r.id, (r.us, r.end_us)))
    .collect();
    let mut round = WorkerRound::default();
    for r in &returned {
        let (started, ended) = *finished
            .get(&r.id.get())
            .ok_or_else(|| anyhow::anyhow!("job {} has no outcome statement", r.id))?;
        let since = |us: i64| Duration::from_micros(u64::try_from(r.wall_us - us).unwrap_or(0));
        round.latencies.push(since(ended));
        round.from_start.push(since(started));
        round.statements.insert(
            started,
            Duration::from_micros(u64::try_from(ended - started).unwrap_or(0)),
        );
    }
    Ok(round)
}

/// A worker round's latencies from the end of each job's outcome
/// statement and from its start (`finished_at`), and how long each
/// outcome statement ran (keyed by its start).
#[derive(Default)]
struct WorkerRound {
    latencies: Vec<Duration>,
    from_start: Vec<Duration>,
    statements: HashMap<i64, Duration>,
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
    all_registered(conn, waiter, n).await?;
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
    #[diesel(sql_type = BigInt)]
    end_us: i64,
}

fn wall_us(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}
