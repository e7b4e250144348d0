//! `examples/pipeline.rs` on three worker processes: 30 videos through four
//! steps while one worker is killed mid-step and then every worker is
//! killed and restarted. Each step of each video takes effect exactly once,
//! a permanent error fails its video with the cause, and high-priority
//! videos go first.

mod support;

#[path = "../examples/pipeline.rs"]
#[allow(dead_code)]
mod example;

use std::time::{Duration, Instant};

use diesel::sql_types::{BigInt, Double, Integer, Nullable, Text};
use diesel::QueryableByName;
use diesel_async::{RunQueryDsl, SimpleAsyncConnection};
use support::fleet::{self, Fleet};

const WORKER_ENV: &str = "JOBQ_PIPELINE_WORKER_URL";
const VIDEOS: i64 = 30;
const HIGH: i64 = 10;
const DEADLINE: Duration = Duration::from_secs(120);

async fn worker_main(url: String) -> Result<(), jobq::Error> {
    // The example's worker, with the kill tests' short intervals.
    example::worker(&url)
        .poll_interval(Duration::from_millis(250))
        .lease(Duration::from_secs(2))
        .heartbeat_interval(Duration::from_millis(250))
        .maintenance_interval(Duration::from_millis(250))
        .build()
        .await?
        .run()
        .await
}

fn main() -> std::process::ExitCode {
    if let Some(code) = fleet::worker_process(WORKER_ENV, worker_main) {
        return code;
    }
    fleet::run_tests(&[("videos_go_through_every_step_once_through_kills", || {
        Box::pin(videos_go_through_every_step_once_through_kills())
    })])
}

#[derive(QueryableByName, Debug)]
struct Pid {
    #[diesel(sql_type = Integer)]
    pid: i32,
}

/// Read through `Debug`, in the failure message.
#[derive(QueryableByName, Debug)]
#[allow(dead_code)]
struct Repeated {
    #[diesel(sql_type = BigInt)]
    video_id: i64,
    #[diesel(sql_type = Text)]
    step: String,
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[derive(QueryableByName, Debug)]
struct Failed {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Nullable<Text>)]
    cause: Option<String>,
}

#[derive(QueryableByName, Debug)]
struct Rank {
    #[diesel(sql_type = Double)]
    high: f64,
    #[diesel(sql_type = Double)]
    low: f64,
}

/// A worker process that holds a running job now, if any.
async fn busy_worker(env: &support::Env) -> Option<u32> {
    let mut conn = env.conn().await;
    diesel::sql_query(
        "SELECT w.pid FROM jobq.jobs j JOIN jobq.workers w ON w.id = j.worker_id \
         WHERE j.state = 'running' LIMIT 1",
    )
    .get_result::<Pid>(&mut conn)
    .await
    .ok()
    .and_then(|p| u32::try_from(p.pid).ok())
}

async fn wait_for(what: &str, fleet: &mut Fleet, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !check().await {
        fleet.live();
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; workers:\n{}",
            fleet.logs()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn videos_go_through_every_step_once_through_kills() {
    let env = support::env().await;
    let mut conn = env.conn().await;
    conn.batch_execute(example::SCHEMA).await.expect("schema");
    // Ids 1..=10 high priority, then 20 at the default, a few of them
    // flaky; one more video fails for good.
    for id in 1..=VIDEOS {
        let title = if id % 7 == 0 {
            format!("flaky {id}")
        } else {
            format!("video {id}")
        };
        let priority = if id <= HIGH { 10 } else { 0 };
        example::submit(&mut conn, id, &title, priority)
            .await
            .expect("submit");
    }
    example::submit(&mut conn, VIDEOS + 1, "corrupt master", 0)
        .await
        .expect("submit");
    drop(conn);

    let url = env.db.url().to_owned();
    let mut fleet = Fleet::new(WORKER_ENV);
    for _ in 0..3 {
        fleet.spawn(&url);
    }
    let steps = "SELECT count(*) AS n FROM video_steps";
    wait_for("a third of the steps", &mut fleet, async || {
        env.count(steps).await >= VIDEOS * 4 / 3
    })
    .await;
    // One worker, killed while it works on a step.
    let mut victim = None;
    wait_for("a worker in the middle of a step", &mut fleet, async || {
        victim = busy_worker(&env).await;
        victim.is_some()
    })
    .await;
    let victim = victim.expect("a busy worker");
    fleet.kill(victim);
    fleet.spawn(&url);
    wait_for("two thirds of the steps", &mut fleet, async || {
        env.count(steps).await >= VIDEOS * 8 / 3
    })
    .await;
    // Then every worker at once, and a fresh set.
    for pid in fleet.live() {
        fleet.kill(pid);
    }
    for _ in 0..3 {
        fleet.spawn(&url);
    }
    wait_for("every video to end", &mut fleet, async || {
        env.count("SELECT count(*) AS n FROM videos WHERE state = 'processing'")
            .await
            == 0
    })
    .await;
    drop(fleet);

    assert_eq!(
        env.count("SELECT count(*) AS n FROM videos WHERE state = 'done'")
            .await,
        VIDEOS
    );
    let mut conn = env.conn().await;
    let repeated: Vec<Repeated> = diesel::sql_query(
        "SELECT video_id, step, count(*) AS n FROM video_steps \
         GROUP BY video_id, step HAVING count(*) <> 1",
    )
    .load(&mut conn)
    .await
    .expect("steps");
    assert!(
        repeated.is_empty(),
        "steps that took effect twice: {repeated:?}"
    );
    assert_eq!(
        env.count(&format!(
            "SELECT count(*) AS n FROM video_steps WHERE video_id <= {VIDEOS}"
        ))
        .await,
        VIDEOS * 4,
        "every step of every video"
    );
    let failed: Vec<Failed> =
        diesel::sql_query("SELECT id, cause FROM videos WHERE state = 'failed'")
            .load(&mut conn)
            .await
            .expect("failed videos");
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].id, VIDEOS + 1);
    assert!(
        failed[0]
            .cause
            .as_deref()
            .is_some_and(|c| c.contains("cannot be decoded")),
        "{failed:?}"
    );
    assert_eq!(
        env.count(&format!(
            "SELECT count(*) AS n FROM video_steps WHERE video_id = {}",
            VIDEOS + 1
        ))
        .await,
        1,
        "the failed video stopped after its asset step"
    );
    // Nothing is left behind in the queue.
    assert_eq!(
        env.count(
            "SELECT count(*) AS n FROM jobq.jobs \
             WHERE state NOT IN ('completed', 'failed', 'cancelled')"
        )
        .await,
        0
    );
    // High priority first: the asset steps of the high-priority videos
    // came, on average, well before those of the others.
    let rank: Rank = diesel::sql_query(format!(
        "SELECT avg(r) FILTER (WHERE video_id <= {HIGH})::float8 AS high, \
                avg(r) FILTER (WHERE video_id > {HIGH} AND video_id <= {VIDEOS})::float8 AS low \
         FROM (SELECT video_id, rank() OVER (ORDER BY seq) AS r \
               FROM video_steps WHERE step = 'asset') ranked"
    ))
    .get_result(&mut conn)
    .await
    .expect("ranks");
    assert!(rank.high + 5.0 < rank.low, "{rank:?}");
}
