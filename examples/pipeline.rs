//! A media pipeline over several worker processes.
//!
//! ```text
//! cargo run --example pipeline
//! ```
//!
//! Each video goes through four steps, asset → compose → render → upload,
//! each a task of its own. A step records its result and enqueues the next
//! step in one transaction, and completes its own job in that same
//! transaction (`Context::complete_in`): a step whose worker died after the
//! commit is not run again, and one whose worker died before it is rescued
//! and run again from a clean slate, so every step takes effect exactly
//! once. No connection is held while a step works: it reads what it needs,
//! returns the connection, works, and opens the short transaction only to
//! record the result.
//!
//! Videos carry a priority that every step keeps. A retriable error (a
//! video titled `flaky` fails its first render) retries after a backoff; a
//! permanent one (`corrupt` fails to compose) fails the video with its
//! cause.
//!
//! The example starts a throwaway database (or a fresh one on
//! `DATABASE_URL`'s server), submits a dozen videos, runs three worker
//! processes (this program again, with `PIPELINE_WORKER_URL` set), and
//! prints how each video ended.

use std::time::Duration;

use diesel::sql_types::{BigInt, Integer, Nullable, SmallInt, Text};
use diesel::QueryableByName;
use diesel_async::pooled_connection::AsyncDieselConnectionManager;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use jobq::{Context, EnqueueOptions, State, TaskError};
use serde::{Deserialize, Serialize};

/// The application's tables. `video_steps` has no unique constraint on
/// purpose: a step that took effect twice would show as two rows.
pub const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS videos (
        id bigint PRIMARY KEY,
        title text NOT NULL,
        priority smallint NOT NULL,
        state text NOT NULL DEFAULT 'processing',
        cause text);
    CREATE TABLE IF NOT EXISTS video_steps (
        seq bigint GENERATED ALWAYS AS IDENTITY,
        video_id bigint NOT NULL,
        step text NOT NULL,
        pid integer NOT NULL);
";

/// Every step's payload: which video, and its priority, which each step
/// passes on to the next.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Video {
    pub id: i64,
    pub priority: i16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Asset,
    Compose,
    Render,
    Upload,
}

impl Step {
    fn name(self) -> &'static str {
        match self {
            Step::Asset => "asset",
            Step::Compose => "compose",
            Step::Render => "render",
            Step::Upload => "upload",
        }
    }
}

#[derive(QueryableByName)]
struct Title {
    #[diesel(sql_type = Text)]
    title: String,
}

/// The step's work, on what it read; no connection is held meanwhile.
async fn work(ctx: &Context, step: Step, title: &str) -> Result<(), TaskError> {
    tokio::time::sleep(Duration::from_millis(fastrand::u64(100..300))).await;
    if step == Step::Render && title.contains("flaky") && ctx.attempt() == 1 {
        return Err(TaskError::msg("the render farm is busy"));
    }
    Ok(())
}

/// Reads the video's title, works, then records the step, enqueues the
/// next one and completes this job, all in one transaction.
async fn run_step(
    ctx: Context,
    pool: jobq::Pool,
    video: Video,
    step: Step,
) -> Result<(), TaskError> {
    let title = {
        let mut conn = pool.get().await?;
        diesel::sql_query("SELECT title FROM videos WHERE id = $1")
            .bind::<BigInt, _>(video.id)
            .get_result::<Title>(&mut conn)
            .await?
            .title
    };
    if step == Step::Compose && title.contains("corrupt") {
        let cause = format!("compose: the source of {title:?} cannot be decoded");
        let mut conn = pool.get().await?;
        diesel::sql_query("UPDATE videos SET state = 'failed', cause = $2 WHERE id = $1")
            .bind::<BigInt, _>(video.id)
            .bind::<Text, _>(&cause)
            .execute(&mut conn)
            .await?;
        return Err(TaskError::permanent(anyhow::anyhow!(cause)));
    }
    work(&ctx, step, &title).await?;

    let mut conn = pool.get().await?;
    conn.transaction::<_, TaskError, _>(async |conn| {
        diesel::sql_query("INSERT INTO video_steps (video_id, step, pid) VALUES ($1, $2, $3)")
            .bind::<BigInt, _>(video.id)
            .bind::<Text, _>(step.name())
            .bind::<Integer, _>(std::process::id() as i32)
            .execute(conn)
            .await?;
        let next = EnqueueOptions::new().priority(video.priority);
        match step {
            Step::Asset => drop(compose::enqueue_with(conn, &video, next).await?),
            Step::Compose => drop(render::enqueue_with(conn, &video, next).await?),
            Step::Render => drop(upload::enqueue_with(conn, &video, next).await?),
            Step::Upload => {
                diesel::sql_query("UPDATE videos SET state = 'done' WHERE id = $1")
                    .bind::<BigInt, _>(video.id)
                    .execute(conn)
                    .await?;
            }
        }
        // Last: from here to the commit this attempt holds the job's row.
        ctx.complete_in(conn).await?;
        Ok(())
    })
    .await
}

#[jobq::task(queue = "media", concurrency = 2, retry = "200ms")]
async fn asset(
    ctx: Context,
    State(pool): State<jobq::Pool>,
    video: Video,
) -> Result<(), TaskError> {
    run_step(ctx, pool, video, Step::Asset).await
}

#[jobq::task(queue = "media", concurrency = 2, retry = "200ms")]
async fn compose(
    ctx: Context,
    State(pool): State<jobq::Pool>,
    video: Video,
) -> Result<(), TaskError> {
    run_step(ctx, pool, video, Step::Compose).await
}

#[jobq::task(queue = "media", concurrency = 2, retry = "200ms")]
async fn render(
    ctx: Context,
    State(pool): State<jobq::Pool>,
    video: Video,
) -> Result<(), TaskError> {
    run_step(ctx, pool, video, Step::Render).await
}

#[jobq::task(queue = "media", concurrency = 2, retry = "200ms")]
async fn upload(
    ctx: Context,
    State(pool): State<jobq::Pool>,
    video: Video,
) -> Result<(), TaskError> {
    run_step(ctx, pool, video, Step::Upload).await
}

/// Adds a video and enqueues its first step, in one transaction.
pub async fn submit(
    conn: &mut AsyncPgConnection,
    id: i64,
    title: &str,
    priority: i16,
) -> Result<(), jobq::Error> {
    conn.transaction::<_, jobq::Error, _>(async |conn| {
        diesel::sql_query("INSERT INTO videos (id, title, priority) VALUES ($1, $2, $3)")
            .bind::<BigInt, _>(id)
            .bind::<Text, _>(title)
            .bind::<SmallInt, _>(priority)
            .execute(conn)
            .await?;
        let video = Video { id, priority };
        asset::enqueue_with(conn, &video, EnqueueOptions::new().priority(priority)).await?;
        Ok(())
    })
    .await
}

/// A pool for the steps' own statements.
pub fn pool(url: &str) -> jobq::Pool {
    bb8::Pool::builder()
        .max_size(4)
        .connection_timeout(Duration::from_secs(10))
        .build_unchecked(AsyncDieselConnectionManager::<AsyncPgConnection>::new(url))
}

/// One worker process of the pipeline.
pub fn worker(url: &str) -> jobq::WorkerBuilder {
    jobq::Worker::builder().database_url(url).state(pool(url))
}

#[derive(QueryableByName)]
struct Outcome {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Text)]
    title: String,
    #[diesel(sql_type = SmallInt)]
    priority: i16,
    #[diesel(sql_type = Text)]
    state: String,
    #[diesel(sql_type = Nullable<Text>)]
    cause: Option<String>,
    #[diesel(sql_type = Text)]
    steps: String,
}

const WORKER_ENV: &str = "PIPELINE_WORKER_URL";

// `pub`: tests/pipeline.rs uses this file as a module.
#[tokio::main]
pub async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("jobq=warn")),
        )
        .init();
    if let Ok(url) = std::env::var(WORKER_ENV) {
        worker(&url).build().await?.run().await?;
        return Ok(());
    }

    let db = jobq_testkit::TestDatabase::create().await?;
    let mut conn = AsyncPgConnection::establish(db.url()).await?;
    jobq::migrate(&mut conn).await?;
    conn.batch_execute(SCHEMA).await?;
    for id in 1..=12 {
        let title = match id {
            5 => "flaky trailer".to_owned(),
            9 => "corrupt upload".to_owned(),
            _ => format!("video {id}"),
        };
        let priority = if id % 3 == 0 { 10 } else { 0 };
        submit(&mut conn, id, &title, priority).await?;
    }
    println!("submitted 12 videos; starting three worker processes");
    let exe = std::env::current_exe()?;
    let mut workers = Vec::new();
    for _ in 0..3 {
        workers.push(
            std::process::Command::new(&exe)
                .env(WORKER_ENV, db.url())
                .spawn()?,
        );
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let outcomes = loop {
        let outcomes: Vec<Outcome> = diesel::sql_query(
            "SELECT v.id, v.title, v.priority, v.state, v.cause, \
                    coalesce(string_agg(s.step || ' (pid ' || s.pid || ')', ', ' ORDER BY s.seq), '') AS steps \
             FROM videos v LEFT JOIN video_steps s ON s.video_id = v.id \
             GROUP BY v.id ORDER BY v.id",
        )
        .load(&mut conn)
        .await?;
        if outcomes.iter().all(|o| o.state != "processing") {
            break outcomes;
        }
        if tokio::time::Instant::now() > deadline {
            return Err("the videos did not finish within two minutes".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for mut child in workers {
        let _ = child.kill();
        let _ = child.wait();
    }
    for o in outcomes {
        println!(
            "video {:>2} {:<16} priority {:>2}: {} {}",
            o.id,
            o.title,
            o.priority,
            o.state,
            o.cause.unwrap_or(o.steps)
        );
    }
    Ok(())
}
