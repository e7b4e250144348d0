//! `dashboard`: does every page of the web dashboard answer in under
//! 200 ms with a million finished jobs? (Issue 14.)
//!
//! A fresh database gets `--finished-rows` finished jobs in one
//! `INSERT .. SELECT generate_series` ([`SEED_FINISHED`]): a week of them
//! (the newest a few seconds old), over 19 tasks and 4 queues, mostly
//! completed, about 2 % failed with three errors each and 0.5 % cancelled.
//! Two tasks are there to catch plans that walk the primary key hoping to
//! meet matches soon: `app.task00` never fails or is cancelled (and is
//! alone on queue `bulk`), and `legacy.import` has jobs only in the oldest
//! 2 % of the week. Some jobs
//! carry dedupe keys, some still hold a unique key. Beside them: pending,
//! scheduled and running jobs (with their claims), four workers and twenty
//! schedules; then `VACUUM ANALYZE`, as autovacuum would have done.
//!
//! `jobq_web::router` is served in-process on 127.0.0.1:0 and every page
//! is fetched over real HTTP: one warm-up request, then
//! `--page-requests` timed ones (request sent to body read). Reported per
//! page: p50 and max, and whether the max is under 200 ms.

use std::time::{Duration, Instant};

use diesel::sql_types::BigInt;
use diesel::QueryableByName;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::cli::Options;
use crate::db;
use crate::report::{ms, percentile, BenchResult};

/// What every page must stay under (issue 14).
const BUDGET: Duration = Duration::from_millis(200);

/// The finished jobs; `$1` how many. Ids follow `g`, so the newest jobs
/// have the highest ids, as in a real table.
const SEED_FINISHED: &str = "\
    INSERT INTO jobq.jobs (task, queue, payload, state, attempt, max_attempts, run_at, \
                           created_at, started_at, finished_at, dedupe_key, errors, \
                           unique_key, unique_gen, unique_until) \
    SELECT task, queue, \
           jsonb_build_object('order', g, 'email', 'customer' || g || '@example.com'), \
           state, \
           CASE state WHEN 'failed' THEN 3 WHEN 'cancelled' THEN 0 ELSE 1 END, 3, \
           created, created, \
           CASE WHEN state <> 'cancelled' THEN created + interval '20 ms' END, \
           created + (20 + g % 3000) * interval '1 ms', \
           CASE WHEN g % 997 = 5 THEN 'order-' || g END, \
           CASE WHEN state = 'failed' THEN ( \
               SELECT jsonb_agg(jsonb_build_object( \
                   'attempt', a, 'at', created + a * interval '30 seconds', \
                   'message', 'smtp.example.com:25: connection refused (attempt ' || a || ')')) \
               FROM generate_series(1, 3) AS a) \
           ELSE '[]' END, \
           CASE WHEN g % 500 = 11 THEN 'invoice-' || g END, \
           CASE WHEN g % 500 = 11 THEN 1 END, \
           CASE WHEN g % 500 = 11 THEN created + interval '30 days' END \
    FROM ( \
        SELECT g, task, created, \
               CASE WHEN n = 0 THEN 'bulk' \
                    ELSE (ARRAY['default', 'mail', 'reports', 'critical'])[1 + n % 4] END AS queue, \
               CASE WHEN n = 0 THEN 'completed' \
                    WHEN g % 47 = 1 THEN 'failed' \
                    WHEN g % 211 = 2 THEN 'cancelled' \
                    ELSE 'completed' END::jobq.job_state AS state \
        FROM ( \
            SELECT g, g % 19 AS n, \
                   CASE WHEN g <= $1 / 50 AND g % 2 = 0 THEN 'legacy.import' \
                        ELSE 'app.task' || lpad((g % 19)::text, 2, '0') END AS task, \
                   now() - interval '5 seconds' \
                       - (($1 - g)::float8 / $1) * interval '7 days' AS created \
            FROM generate_series(1, $1) AS g) AS s) AS t";

/// Jobs not finished, workers holding the running ones (with the claim
/// rows that record them), and schedules. (Vacuumed and analyzed after.)
const SEED_LIVE: &str = "\
    INSERT INTO jobq.workers (hostname, pid, queues, lease_ms) \
    SELECT 'bench-host-' || w, 1000 + w, ARRAY['default', 'mail', 'reports', 'critical'], 30000 \
    FROM generate_series(1, 4) AS w; \
    INSERT INTO jobq.jobs (task, queue, payload, state, run_at, created_at) \
    SELECT 'app.task' || lpad((g % 19)::text, 2, '0'), \
           (ARRAY['default', 'mail', 'reports', 'critical'])[1 + g % 19 % 4], \
           jsonb_build_object('order', g), 'pending', \
           now() - (g % 600) * interval '1 second', now() - (g % 600) * interval '1 second' \
    FROM generate_series(1, 5000) AS g; \
    INSERT INTO jobq.jobs (task, queue, payload, state, run_at) \
    SELECT 'app.task' || lpad((g % 19)::text, 2, '0'), \
           (ARRAY['default', 'mail', 'reports', 'critical'])[1 + g % 19 % 4], \
           jsonb_build_object('order', g), 'scheduled', now() + (1 + g % 3600) * interval '1 second' \
    FROM generate_series(1, 5000) AS g; \
    INSERT INTO jobq.jobs (task, queue, payload, state, attempt, started_at, worker_id) \
    SELECT 'app.task' || lpad((g % 19)::text, 2, '0'), \
           (ARRAY['default', 'mail', 'reports', 'critical'])[1 + g % 19 % 4], \
           jsonb_build_object('order', g), 'running', 1, now() - (g % 30) * interval '1 second', \
           (SELECT array_agg(id ORDER BY id) FROM jobq.workers)[1 + g % 4] \
    FROM generate_series(1, 2000) AS g; \
    INSERT INTO jobq.claims (worker_id, jobs, claim_key) \
    SELECT worker_id, range_agg(int8range(id, id, '[]')), 1 \
    FROM jobq.jobs WHERE state = 'running' GROUP BY worker_id; \
    INSERT INTO jobq.schedules (name, task, expression, timezone, last_tick) \
    SELECT 'schedule-' || lpad(s::text, 2, '0'), 'app.task' || lpad((s % 19)::text, 2, '0'), \
           '*/5 * * * *', 'UTC', now() - interval '1 minute' \
    FROM generate_series(1, 20) AS s";

#[derive(QueryableByName)]
struct Ids {
    #[diesel(sql_type = BigInt)]
    newest_failed: i64,
    #[diesel(sql_type = BigInt)]
    newest_completed: i64,
    #[diesel(sql_type = BigInt)]
    old_keyed: i64,
    #[diesel(sql_type = BigInt)]
    new_keyed: i64,
}

/// Runs the scenario.
pub async fn run(options: &Options) -> anyhow::Result<Vec<BenchResult>> {
    println!("== dashboard");
    let database = db::fresh().await?;
    let url = database.url().to_owned();
    let mut conn = db::connect(&url).await?;
    let seeded = Instant::now();
    seed(&mut conn, options.finished_rows).await?;
    println!(
        "  {} finished jobs, 12,000 live ones, workers and schedules ready in {:.1} s",
        options.finished_rows,
        seeded.elapsed().as_secs_f64()
    );
    let ids: Ids = diesel::sql_query(
        "SELECT (SELECT max(id) FROM jobq.jobs WHERE state = 'failed') AS newest_failed, \
                (SELECT max(id) FROM jobq.jobs WHERE state = 'completed') AS newest_completed, \
                (SELECT min(id) FROM jobq.jobs WHERE dedupe_key IS NOT NULL) AS old_keyed, \
                (SELECT max(id) FROM jobq.jobs WHERE dedupe_key IS NOT NULL) AS new_keyed",
    )
    .get_result(&mut conn)
    .await?;
    let pages = pages(&ids, options.finished_rows);

    let pool = jobq_diesel::build_pool(
        jobq_diesel::Connector::new(jobq::ConnectOptions::parse(&url)?),
        4,
        Duration::from_secs(10),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let server = tokio::spawn(async move { axum::serve(listener, jobq_web::router(pool)).await });
    let client = reqwest::Client::new();
    let mut results = Vec::new();
    for (label, path) in &pages {
        let mut samples = time_page(&client, &base, path, options.page_requests).await?;
        samples.sort_unstable();
        let p50 = percentile(&samples, 50.0);
        let max = *samples.last().unwrap_or(&Duration::ZERO);
        results.push(
            BenchResult {
                p50_ms: Some(ms(p50)),
                ..BenchResult::new("dashboard", label.clone())
            }
            .extra("path", path.clone())
            .extra("max_ms", ms(max))
            .extra("requests", samples.len())
            .extra("under_200ms", max < BUDGET)
            .emit(),
        );
    }
    server.abort();
    print_pages(&results);
    Ok(results)
}

async fn seed(conn: &mut AsyncPgConnection, finished: u64) -> anyhow::Result<()> {
    diesel::sql_query(SEED_FINISHED)
        .bind::<BigInt, _>(i64::try_from(finished)?)
        .execute(conn)
        .await?;
    db::exec(conn, SEED_LIVE).await?;
    // One statement each: VACUUM cannot run in the implicit transaction of
    // a multi-statement string.
    db::exec(conn, "VACUUM ANALYZE jobq.jobs").await?;
    db::exec(conn, "ANALYZE jobq.workers, jobq.claims, jobq.schedules").await
}

/// Every page and every filter the jobs page offers, as (label, path).
fn pages(ids: &Ids, finished: u64) -> Vec<(String, String)> {
    const STATES: [&str; 6] = [
        "scheduled",
        "pending",
        "running",
        "completed",
        "failed",
        "cancelled",
    ];
    let mut pages = vec![
        ("overview".to_owned(), "/".to_owned()),
        ("jobs".to_owned(), "/jobs".to_owned()),
    ];
    let mut add = |label: String, path: String| pages.push((label, path));
    for state in STATES {
        add(
            format!("jobs state={state}"),
            format!("/jobs?state={state}"),
        );
    }
    add("jobs task (common)".into(), "/jobs?task=app.task03".into());
    add(
        "jobs task (old only)".into(),
        "/jobs?task=legacy.import".into(),
    );
    add("jobs queue".into(), "/jobs?queue=mail".into());
    add(
        "jobs key (newest)".into(),
        format!("/jobs?key=order-{}", ids.new_keyed),
    );
    add(
        "jobs key (oldest)".into(),
        format!("/jobs?key=order-{}", ids.old_keyed),
    );
    for state in STATES {
        add(
            format!("jobs state={state} task"),
            format!("/jobs?state={state}&task=app.task03"),
        );
    }
    for state in ["failed", "cancelled"] {
        add(
            format!("jobs state={state} task (has none)"),
            format!("/jobs?state={state}&task=app.task00"),
        );
    }
    for state in ["completed", "failed"] {
        add(
            format!("jobs state={state} task (old only)"),
            format!("/jobs?state={state}&task=legacy.import"),
        );
    }
    add(
        "failed queue (has none)".into(),
        "/failed?queue=bulk".into(),
    );
    add(
        "jobs state=cancelled queue (has none)".into(),
        "/jobs?state=cancelled&queue=bulk".into(),
    );
    add("jobs since 1h".into(), "/jobs?since=1h".into());
    add(
        "jobs state=failed since 1h".into(),
        "/jobs?state=failed&since=1h".into(),
    );
    let middle = finished / 2;
    add(
        "jobs page (middle)".into(),
        format!("/jobs?before={middle}"),
    );
    add(
        "jobs page (near the end)".into(),
        "/jobs?before=1000".into(),
    );
    add(
        "jobs state=completed page (middle)".into(),
        format!("/jobs?state=completed&before={middle}"),
    );
    add(
        "jobs state=failed task page (middle)".into(),
        format!("/jobs?state=failed&task=app.task03&before={middle}"),
    );
    add(
        "job detail (failed)".into(),
        format!("/jobs/{}", ids.newest_failed),
    );
    add(
        "job detail (completed)".into(),
        format!("/jobs/{}", ids.newest_completed),
    );
    add("failed".into(), "/failed".into());
    add("failed task".into(), "/failed?task=app.task03".into());
    add("queues".into(), "/queues".into());
    add("schedules".into(), "/schedules".into());
    add("workers".into(), "/workers".into());
    pages
}

/// One warm-up request, then `requests` timed ones; each must answer 200.
async fn time_page(
    client: &reqwest::Client,
    base: &str,
    path: &str,
    requests: usize,
) -> anyhow::Result<Vec<Duration>> {
    let mut samples = Vec::with_capacity(requests);
    for i in 0..=requests {
        let started = Instant::now();
        let response = client.get(format!("{base}{path}")).send().await?;
        let status = response.status();
        let body = response.bytes().await?;
        let took = started.elapsed();
        anyhow::ensure!(
            status.is_success(),
            "GET {path}: {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(500)])
        );
        if i > 0 {
            samples.push(took);
        }
    }
    Ok(samples)
}

fn print_pages(results: &[BenchResult]) {
    println!();
    println!(
        "| {:<40} | {:>7} | {:>7} | {:<8} |",
        "page", "p50 ms", "max ms", "< 200 ms"
    );
    println!("|{:-<42}|{:->9}|{:->9}|{:-<10}|", "", "", "", "");
    for r in results {
        let max = r.extra.get("max_ms").and_then(|v| v.as_f64());
        let under = r.extra.get("under_200ms").and_then(|v| v.as_bool());
        println!(
            "| {:<40} | {:>7.1} | {:>7.1} | {:<8} |",
            r.config,
            r.p50_ms.unwrap_or(f64::NAN),
            max.unwrap_or(f64::NAN),
            match under {
                Some(true) => "yes",
                _ => "NO",
            }
        );
    }
    let slow = results
        .iter()
        .filter(|r| r.extra.get("under_200ms").and_then(|v| v.as_bool()) != Some(true))
        .count();
    println!(
        "{} of {} pages under 200 ms",
        results.len() - slow,
        results.len()
    );
}
