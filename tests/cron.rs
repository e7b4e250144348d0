//! Periodic tasks: exactly one job per tick across three worker processes
//! while one is killed with SIGKILL and restarted; catch-up after
//! downtime; pause and resume; schedules given at run time.
//!
//! This target has no libtest harness: the same binary is the test and a
//! worker process (`JOBQ_CRON_WORKER_URL` set), as in `chaos.rs`.

mod support;

use std::time::{Duration, Instant};

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use diesel::sql_types::{Text, Timestamptz};
use diesel::QueryableByName;
use diesel_async::RunQueryDsl;
use jobq::{Schedule, TaskError, Tick};
use support::fleet::{self, Fleet, TestFn};
use support::Env;

const WORKER_ENV: &str = "JOBQ_CRON_WORKER_URL";

// ---------------------------------------------------------------- the tasks

/// The fleet test's schedule: every second.
#[jobq::task(cron = "* * * * * *")]
async fn every_second(job: Tick) -> Result<(), TaskError> {
    let _ = job;
    Ok(())
}

/// Hourly, default missed-ticks policy.
#[jobq::task(cron = "0 0 * * * *")]
async fn hourly_latest(job: Tick) -> Result<(), TaskError> {
    let _ = job;
    Ok(())
}

/// Hourly, missed ticks up to three hours old.
#[jobq::task(cron = "0 0 * * * *", catch_up = "3h")]
async fn hourly_catch_up(job: Tick) -> Result<(), TaskError> {
    let _ = job;
    Ok(())
}

/// Every second, paused and resumed by the test.
#[jobq::task(cron = "* * * * * *", timezone = "Europe/Berlin")]
async fn pausable(job: Tick) -> Result<(), TaskError> {
    let _ = job;
    Ok(())
}

/// No schedule of its own: given one at run time.
#[jobq::task]
async fn configured(job: Tick) -> Result<(), TaskError> {
    let _ = job;
    Ok(())
}

/// The ticks `pruned` ran for, in the order it ran them.
static RAN: std::sync::Mutex<Vec<DateTime<Utc>>> = std::sync::Mutex::new(Vec::new());

/// Every second; its finished jobs are pruned at once.
#[jobq::task(cron = "* * * * * *")]
async fn pruned(job: Tick) -> Result<(), TaskError> {
    RAN.lock()
        .map_err(|_| TaskError::msg("ledger poisoned"))?
        .push(job.at());
    Ok(())
}

/// Every second; each tick's job is followed by `after_tick`.
#[jobq::task(cron = "* * * * * *", then = after_tick)]
async fn followed(job: Tick) -> Result<String, TaskError> {
    Ok(job.at().to_rfc3339())
}

/// What `followed`'s ticks are followed by.
#[jobq::task]
async fn after_tick(job: jobq::Finished) -> Result<(), TaskError> {
    let _ = job;
    Ok(())
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct NotATick {
    n: i32,
}

#[jobq::task]
async fn plain(job: NotATick) -> Result<(), TaskError> {
    let _ = job;
    Ok(())
}

// ---------------------------------------------------------------- worker side

async fn worker_main(url: String) -> Result<(), jobq::Error> {
    fleet::process_worker(&url, Duration::from_secs(2))
        .tasks(["every_second"])
        .retention_completed(Duration::from_secs(3600))
        .pool_size(4)
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
    let tests: [(&str, TestFn); 8] = [
        ("a_tick_batch_is_a_compare_and_set", || {
            Box::pin(a_tick_batch_is_a_compare_and_set())
        }),
        ("three_processes_one_job_per_tick_through_a_kill", || {
            Box::pin(three_processes_one_job_per_tick_through_a_kill())
        }),
        ("missed_ticks_follow_the_catch_up_policy", || {
            Box::pin(missed_ticks_follow_the_catch_up_policy())
        }),
        ("pause_stops_ticks_fleet_wide_and_resume_skips_them", || {
            Box::pin(pause_stops_ticks_fleet_wide_and_resume_skips_them())
        }),
        ("pruning_finished_jobs_never_brings_a_tick_back", || {
            Box::pin(pruning_finished_jobs_never_brings_a_tick_back())
        }),
        ("run_time_schedules_enqueue_ticks", || {
            Box::pin(run_time_schedules_enqueue_ticks())
        }),
        ("run_time_schedules_are_checked_at_build", || {
            Box::pin(run_time_schedules_are_checked_at_build())
        }),
        ("each_tick_of_a_task_with_then_is_followed_once", || {
            Box::pin(each_tick_of_a_task_with_then_is_followed_once())
        }),
    ];
    fleet::run_tests(&tests)
}

#[derive(QueryableByName)]
struct At {
    #[diesel(sql_type = Timestamptz)]
    at: DateTime<Utc>,
}

/// The ticks of `task`'s jobs, in order (one entry per job).
async fn ticks(env: &Env, task: &str) -> Vec<DateTime<Utc>> {
    let mut conn = env.conn().await;
    let rows: Vec<At> = diesel::sql_query(
        "SELECT (payload->>'at')::timestamptz AS at FROM jobq.jobs WHERE task = $1 ORDER BY 1",
    )
    .bind::<Text, _>(task)
    .load(&mut conn)
    .await
    .expect("ticks");
    rows.into_iter().map(|r| r.at).collect()
}

async fn db_now(env: &Env) -> DateTime<Utc> {
    let mut conn = env.conn().await;
    let row: At = diesel::sql_query("SELECT now() AS at")
        .get_result(&mut conn)
        .await
        .expect("now");
    row.at
}

/// Polls until `task` has at least `n` jobs.
async fn wait_for_ticks(env: &Env, task: &str, n: usize, within: Duration) -> Vec<DateTime<Utc>> {
    let deadline = Instant::now() + within;
    loop {
        let found = ticks(env, task).await;
        if found.len() >= n {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "{task}: {} of {n} ticks after {within:?}: {found:?}",
            found.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every tick once, a second apart, no gap and no duplicate.
fn assert_contiguous(ticks: &[DateTime<Utc>], step: TimeDelta) {
    for pair in ticks.windows(2) {
        assert_eq!(
            pair[1] - pair[0],
            step,
            "ticks {} and {} are not one step apart: {ticks:?}",
            pair[0],
            pair[1]
        );
    }
}

async fn live_workers(env: &Env) -> i64 {
    env.count("SELECT count(*) AS n FROM jobq.workers").await
}

async fn three_processes_one_job_per_tick_through_a_kill() {
    let env = support::env().await;
    let mut fleet = Fleet::new(WORKER_ENV);
    let mut pids: Vec<u32> = (0..3).map(|_| fleet.spawn(env.db.url())).collect();
    let minute = Duration::from_secs(60);
    wait_for_ticks(&env, "every_second", 5, minute).await;
    assert_eq!(
        live_workers(&env).await,
        3,
        "three workers race for each tick"
    );
    fleet.kill(pids.remove(0));
    let before_restart = wait_for_ticks(&env, "every_second", 10, minute).await;
    let pid = fleet.spawn(env.db.url());
    // The restarted worker is one of the racers again.
    let deadline = Instant::now() + minute;
    while env
        .count(&format!(
            "SELECT count(*) AS n FROM jobq.workers WHERE pid = {pid}"
        ))
        .await
        < 1
    {
        assert!(
            Instant::now() < deadline,
            "the restarted worker never registered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let after = wait_for_ticks(&env, "every_second", before_restart.len() + 10, minute).await;
    // Kill everything before reading, so the list is final.
    drop(fleet);
    let all = ticks(&env, "every_second").await;
    assert!(all.len() >= 20 && all.len() >= after.len(), "{all:?}");
    for tick in &all {
        assert_eq!(tick.timestamp_subsec_nanos(), 0, "a tick is a whole second");
    }
    assert_contiguous(&all, TimeDelta::seconds(1));
    // Each tick's job runs.
    let completed = env
        .count(
            "SELECT count(*) AS n FROM jobq.jobs WHERE task = 'every_second' \
             AND state = 'completed'",
        )
        .await;
    assert!(
        completed >= 15,
        "only {completed} of {} ticks ran",
        all.len()
    );
    // The schedule remembers the last one.
    let mut conn = env.conn().await;
    let listed = jobq::schedules(&mut conn).await.unwrap();
    let schedule = listed.iter().find(|s| s.name == "every_second").unwrap();
    assert_eq!(schedule.last_tick, all.last().copied());
    assert_eq!(schedule.expression, "* * * * * *");
    assert_eq!(schedule.timezone, "UTC");
    assert!(!schedule.paused);
}

async fn missed_ticks_follow_the_catch_up_policy() {
    let env = support::env().await;
    // Clear of an hour boundary, so that "now" names one hour throughout.
    loop {
        let now = db_now(&env).await;
        let into_hour = now - now.duration_trunc(TimeDelta::hours(1)).unwrap();
        if into_hour > TimeDelta::seconds(5) && into_hour < TimeDelta::minutes(59) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut conn = env.conn().await;
    // Both schedules last ran ten hours ago, as if every worker had been
    // down since.
    for task in ["hourly_latest", "hourly_catch_up"] {
        diesel::sql_query(
            "INSERT INTO jobq.schedules (name, task, expression, timezone, last_tick, since) \
             VALUES ($1, $1, '0 0 * * * *', 'UTC', \
                     date_trunc('hour', now()) - interval '10 hours', now() - interval '1 day')",
        )
        .bind::<Text, _>(task)
        .execute(&mut conn)
        .await
        .unwrap();
    }
    let t0 = db_now(&env).await;
    let hour = t0.duration_trunc(TimeDelta::hours(1)).unwrap();
    let handle = env
        .worker()
        .tasks(["hourly_latest", "hourly_catch_up"])
        .build()
        .await
        .unwrap()
        .spawn();
    let soon = Duration::from_secs(20);
    // Default: the most recent missed tick only.
    let latest = wait_for_ticks(&env, "hourly_latest", 1, soon).await;
    // Up to 3 hours: the ticks of the last three hours, the current one
    // included (the one three hours ago is just older than the window).
    let caught_up = wait_for_ticks(&env, "hourly_catch_up", 3, soon).await;
    // The schedules are settled: both last ticks are this hour's.
    support::wait_until("both schedules settled", || async {
        let mut conn = env.conn().await;
        let listed = jobq::schedules(&mut conn).await.unwrap();
        listed.len() == 2 && listed.iter().all(|s| s.last_tick == Some(hour))
    })
    .await;
    handle.shutdown().await.unwrap();
    assert_eq!(latest, [hour]);
    assert_eq!(
        caught_up,
        [hour - TimeDelta::hours(2), hour - TimeDelta::hours(1), hour]
    );
    assert_eq!(ticks(&env, "hourly_latest").await, [hour]);
    assert_eq!(ticks(&env, "hourly_catch_up").await.len(), 3);
    // A restart neither repeats nor skips: nothing new is due this hour.
    let handle = env
        .worker()
        .tasks(["hourly_latest", "hourly_catch_up"])
        .build()
        .await
        .unwrap()
        .spawn();
    // The new worker has declared its schedules and looked at them once
    // its row exists and a round trip later.
    support::wait_until("the second worker registered", || async {
        env.count("SELECT count(*) AS n FROM jobq.workers").await == 1
    })
    .await;
    let revision_before = env
        .count("SELECT sum(revision)::bigint AS n FROM jobq.schedules")
        .await;
    handle.shutdown().await.unwrap();
    assert_eq!(ticks(&env, "hourly_latest").await, [hour]);
    assert_eq!(ticks(&env, "hourly_catch_up").await.len(), 3);
    assert_eq!(
        env.count("SELECT sum(revision)::bigint AS n FROM jobq.schedules")
            .await,
        revision_before,
        "nothing was enqueued after the restart"
    );
}

async fn pause_stops_ticks_fleet_wide_and_resume_skips_them() {
    let env = support::env().await;
    // Two workers: the pause is the database's, not one process's.
    let a = env
        .worker()
        .tasks(["pausable"])
        .build()
        .await
        .unwrap()
        .spawn();
    let b = env
        .worker()
        .tasks(["pausable"])
        .build()
        .await
        .unwrap()
        .spawn();
    let soon = Duration::from_secs(20);
    wait_for_ticks(&env, "pausable", 2, soon).await;
    let mut conn = env.conn().await;
    assert!(jobq::pause_schedule(&mut conn, "pausable").await.unwrap());
    assert!(!jobq::pause_schedule(&mut conn, "no such schedule")
        .await
        .unwrap());
    assert!(!jobq::resume_schedule(&mut conn, "no such schedule")
        .await
        .unwrap());
    let paused_at = db_now(&env).await;
    let at_pause = ticks(&env, "pausable").await;
    let listed = jobq::schedules(&mut conn).await.unwrap();
    assert!(listed[0].paused, "{listed:?}");
    assert_eq!(listed[0].timezone, "Europe/Berlin");
    assert!(listed[0].next_tick.unwrap() > paused_at - TimeDelta::seconds(1));
    // Three ticks pass while paused (the database's clock says so).
    while db_now(&env).await < paused_at + TimeDelta::milliseconds(3200) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        ticks(&env, "pausable").await,
        at_pause,
        "a paused schedule enqueued ticks"
    );
    assert!(jobq::resume_schedule(&mut conn, "pausable").await.unwrap());
    let resumed_at = db_now(&env).await;
    let after = wait_for_ticks(&env, "pausable", at_pause.len() + 3, soon).await;
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
    let new: Vec<_> = after[at_pause.len()..].to_vec();
    // The paused ticks were skipped: the first new one is after the resume.
    assert!(
        new[0] > resumed_at - TimeDelta::seconds(1),
        "resumed at {resumed_at}, ran {new:?}"
    );
    assert!(new[0] - *at_pause.last().unwrap() >= TimeDelta::seconds(3));
    assert_contiguous(&at_pause, TimeDelta::seconds(1));
    assert_contiguous(&new, TimeDelta::seconds(1));
}

/// The statement under the scheduler, driven by hand: of two batches read
/// at one revision only the first inserts; a paused schedule inserts
/// nothing; names of any content round-trip.
async fn a_tick_batch_is_a_compare_and_set() {
    let env = support::env().await;
    let mut conn = env.conn().await;
    let name = "ré'\"; DROP TABLE jobq.jobs; --💥\\";
    let rows = jobq_diesel::declare_schedules(
        &mut conn,
        &[jobq_diesel::ScheduleDef {
            name: name.to_owned(),
            task: "configured".to_owned(),
            expression: "* * * * * *".to_owned(),
            timezone: "UTC".to_owned(),
        }],
    )
    .await
    .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].name, name);
    assert_eq!(rows[0].last_tick, None);
    let revision = rows[0].revision;
    let tick = rows[0].since.duration_trunc(TimeDelta::seconds(1)).unwrap() - TimeDelta::hours(1);
    let ticks = [tick, tick + TimeDelta::seconds(1)];
    let payloads: Vec<String> = ticks
        .iter()
        .map(|&at| serde_json::to_string(&Tick::new(at, name)).unwrap())
        .collect();
    let batch = jobq_diesel::TickBatch {
        schedule: name,
        revision,
        task: "configured",
        queue: "default",
        priority: 0,
        max_attempts: 3,
        ticks: &ticks,
        payloads: &payloads,
        follow_up: None,
    };
    let first = jobq_diesel::enqueue_ticks(&mut conn, &batch).await.unwrap();
    assert!(first.advanced);
    assert_eq!(first.inserted, 2);
    // A second worker that read the same revision inserts nothing.
    let second = jobq_diesel::enqueue_ticks(&mut conn, &batch).await.unwrap();
    assert!(!second.advanced);
    assert_eq!(second.inserted, 0);
    let row = jobq_diesel::find_schedule(&mut conn, name)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.last_tick, Some(ticks[1]));
    assert_eq!(row.revision, revision + 1);
    // Paused: even at the current revision, nothing.
    assert!(jobq::pause_schedule(&mut conn, name).await.unwrap());
    let paused = jobq_diesel::find_schedule(&mut conn, name)
        .await
        .unwrap()
        .unwrap();
    let later = [ticks[1] + TimeDelta::seconds(1)];
    let later_payloads = [serde_json::to_string(&Tick::new(later[0], name)).unwrap()];
    let blocked = jobq_diesel::enqueue_ticks(
        &mut conn,
        &jobq_diesel::TickBatch {
            revision: paused.revision,
            ticks: &later,
            payloads: &later_payloads,
            ..batch.clone()
        },
    )
    .await
    .unwrap();
    assert!(!blocked.advanced);
    // Resuming moves `since` past the paused time and bumps the revision,
    // so a batch computed before the resume is refused too.
    assert!(jobq::resume_schedule(&mut conn, name).await.unwrap());
    let resumed = jobq_diesel::find_schedule(&mut conn, name)
        .await
        .unwrap()
        .unwrap();
    assert!(!resumed.paused);
    assert!(resumed.since >= paused.since);
    assert!(resumed.revision > paused.revision);
    // The jobs carry the name exactly, and are due (pending) ticks.
    let mut jobs: Vec<Tick> = Vec::new();
    #[derive(QueryableByName)]
    struct Payload {
        #[diesel(sql_type = Text)]
        payload: String,
    }
    let rows: Vec<Payload> = diesel::sql_query(
        "SELECT payload::text AS payload FROM jobq.jobs WHERE state = 'pending' ORDER BY id",
    )
    .load(&mut conn)
    .await
    .unwrap();
    for row in rows {
        jobs.push(serde_json::from_str(&row.payload).unwrap());
    }
    assert_eq!(jobs, [Tick::new(ticks[0], name), Tick::new(ticks[1], name)]);
}

async fn pruning_finished_jobs_never_brings_a_tick_back() {
    let env = support::env().await;
    let handle = env
        .worker()
        .tasks(["pruned"])
        .retention_completed(Duration::ZERO)
        .build()
        .await
        .unwrap()
        .spawn();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ran = RAN.lock().unwrap().len();
        let pruned = env.count("SELECT count(*) AS n FROM jobq.jobs").await < ran as i64;
        if ran >= 5 && pruned {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{ran} ticks ran; pruned: {pruned}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    handle.shutdown().await.unwrap();
    let ran = RAN.lock().unwrap().clone();
    let mut sorted = ran.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), ran.len(), "a tick ran twice: {ran:?}");
    assert_contiguous(&sorted, TimeDelta::seconds(1));
}

async fn run_time_schedules_enqueue_ticks() {
    let env = support::env().await;
    let handle = env
        .worker()
        .tasks(["configured"])
        .schedule_with(
            Schedule::new("configured", "*/1 * * * * *")
                .name("configured.fast")
                .timezone("America/New_York"),
        )
        .build()
        .await
        .unwrap()
        .spawn();
    let found = wait_for_ticks(&env, "configured", 3, Duration::from_secs(20)).await;
    support::wait_until("a tick ran", || async {
        env.count(
            "SELECT count(*) AS n FROM jobq.jobs WHERE task = 'configured' AND state = 'completed'",
        )
        .await
            >= 1
    })
    .await;
    handle.shutdown().await.unwrap();
    assert_contiguous(&found, TimeDelta::seconds(1));
    assert_eq!(
        env.count(
            "SELECT count(*) AS n FROM jobq.jobs WHERE task = 'configured' \
             AND payload->>'schedule' <> 'configured.fast'"
        )
        .await,
        0,
        "each tick names its schedule"
    );
    let mut conn = env.conn().await;
    let listed = jobq::schedules(&mut conn).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].name, "configured.fast");
    assert_eq!(listed[0].task, "configured");
    assert_eq!(listed[0].timezone, "America/New_York");
}

async fn each_tick_of_a_task_with_then_is_followed_once() {
    let env = support::env().await;
    let handle = env
        .worker()
        .tasks(["followed", "after_tick"])
        .build()
        .await
        .unwrap()
        .spawn();
    support::wait_until("two ticks followed to the end", || async {
        env.count(
            "SELECT count(*) AS n FROM jobq.jobs WHERE task = 'after_tick' AND state = 'completed'",
        )
        .await
            >= 2
    })
    .await;
    handle.shutdown().await.unwrap();
    // Every tick job that ended has exactly one follow-up, and every
    // follow-up carries its tick job's output (the tick it ran for).
    assert_eq!(
        env.count(
            "SELECT count(*) AS n FROM jobq.jobs t \
             WHERE t.task = 'followed' AND t.state = 'completed' \
               AND (SELECT count(*) FROM jobq.jobs f \
                    WHERE f.task = 'after_tick' AND f.payload ->> 'job_id' = t.id::text) <> 1"
        )
        .await,
        0,
        "a tick job without exactly one follow-up"
    );
    assert_eq!(
        env.count(
            "SELECT count(*) AS n FROM jobq.jobs f \
             LEFT JOIN jobq.jobs t ON t.id::text = f.payload ->> 'job_id' \
             WHERE f.task = 'after_tick' \
               AND (t.task IS DISTINCT FROM 'followed' \
                    OR f.payload -> 'output' IS DISTINCT FROM t.output)"
        )
        .await,
        0,
        "a follow-up that does not match its tick job"
    );
    assert!(
        env.count(
            "SELECT count(*) AS n FROM jobq.jobs \
             WHERE task = 'followed' AND jsonb_typeof(output) = 'string'"
        )
        .await
            >= 2,
        "the tick jobs returned their ticks"
    );
}

async fn run_time_schedules_are_checked_at_build() {
    let env = support::env().await;
    let refused = |schedule: Schedule| {
        let builder = env.worker().tasks(["configured"]).schedule_with(schedule);
        async move {
            builder
                .build()
                .await
                .expect_err("the build must be refused")
                .to_string()
        }
    };
    let e = refused(Schedule::new("configured", "61 * * * *")).await;
    assert!(e.contains("invalid cron expression \"61 * * * *\""), "{e}");
    let e = refused(Schedule::new("configured", "* * * * *").timezone("Mars/Olympus")).await;
    assert!(e.contains("unknown time zone \"Mars/Olympus\""), "{e}");
    let e = refused(Schedule::new("nope", "* * * * *")).await;
    assert!(e.contains("no task named \"nope\""), "{e}");
    let e = refused(Schedule::new("plain", "* * * * *")).await;
    assert!(e.contains("does not take a jobq::Tick"), "{e}");
    // A run-time schedule of a periodic task needs a name of its own.
    let e = env
        .worker()
        .tasks(["pausable"])
        .schedule("pausable", "*/5 * * * *")
        .build()
        .await
        .expect_err("two schedules of one name")
        .to_string();
    assert!(e.contains("two schedules are named \"pausable\""), "{e}");
    // Hostile text never reaches the database.
    for hostile in ["\0", "a\0b", &"x".repeat(201)] {
        let e = refused(Schedule::new("configured", "* * * * *").name(hostile)).await;
        assert!(e.contains("must be 1 to 200 characters"), "{e}");
    }
    for hostile in ["\0", "* * * * *\0", "' OR 1=1 --", &"1,".repeat(600)] {
        let e = refused(Schedule::new("configured", hostile)).await;
        assert!(e.contains("schedule \"configured\""), "{e}");
    }
    let e = refused(Schedule::new("configured", "* * * * *").timezone("UTC\0")).await;
    assert!(e.contains("unknown time zone"), "{e}");
    // Nothing was declared.
    assert_eq!(
        env.count("SELECT count(*) AS n FROM jobq.schedules").await,
        0
    );
}
