//! What operators change without recompiling: per-task concurrency, time
//! limit and backoff from the builder or the environment, and workers that
//! leave migrating to a deploy step (`migrate(false)`, `JOBQ_MIGRATE=off`).
//!
//! The tests that set environment variables hold `ENV_LOCK`, and so does
//! every test of this binary that builds a worker: the environment is the
//! process's, and a worker reads it while it is built.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use jobq::{EnqueueOptions, JobState, State, TaskError};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

// An async mutex: the guard is held across the awaits of a whole test,
// and each test runs on a runtime of its own.
static ENV_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Sets an environment variable for the life of the guard.
struct EnvVar(&'static str);

impl EnvVar {
    fn set(name: &'static str, value: &str) -> Self {
        std::env::set_var(name, value);
        Self(name)
    }
}

impl Drop for EnvVar {
    fn drop(&mut self) {
        std::env::remove_var(self.0);
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Work {
    n: u32,
}

/// Counts the attempts of `overrides.gauge` running at once; each waits
/// for the test to open the gate.
#[derive(Clone)]
struct Gauge {
    running: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
    gate: Arc<Semaphore>,
}

impl Gauge {
    fn new() -> Self {
        Self {
            running: Arc::default(),
            peak: Arc::default(),
            gate: Arc::new(Semaphore::new(0)),
        }
    }

    fn open(&self) {
        self.gate.add_permits(Semaphore::MAX_PERMITS / 2);
    }
}

// The attribute allows 8 at once; the tests override it. The dot in the
// name is what the environment format must cope with.
#[jobq::task(name = "overrides.gauge", concurrency = 8)]
async fn gauge(State(gauge): State<Gauge>, job: Work) -> Result<(), TaskError> {
    let now = gauge.running.fetch_add(1, Ordering::SeqCst) + 1;
    gauge.peak.fetch_max(now, Ordering::SeqCst);
    let permit = gauge.gate.acquire().await;
    drop(permit);
    gauge.running.fetch_sub(1, Ordering::SeqCst);
    let _ = job.n;
    Ok(())
}

/// Never finishes by itself: only a time limit ends it.
#[jobq::task(name = "overrides.stuck")]
async fn stuck(_job: Work) -> Result<(), TaskError> {
    std::future::pending::<()>().await;
    Ok(())
}

#[jobq::task(name = "overrides.flaky")]
async fn flaky(_job: Work) -> Result<(), TaskError> {
    Err(TaskError::msg("try again later"))
}

fn works(n: u32) -> Vec<Work> {
    (0..n).map(|n| Work { n }).collect()
}

/// Enqueues five gauge jobs before the worker starts, so that its first
/// claim sees all of them: that claim takes as many as the task's limit
/// allows, and commits before any handler runs. Returns how many jobs
/// were running when the first handler started, and the peak of handlers
/// running at once after every job completed.
async fn first_claim_and_peak(env: &support::Env, builder: jobq::WorkerBuilder) -> (i64, usize) {
    let mut conn = env.conn().await;
    let ids = gauge::enqueue_many(&mut conn, &works(5)).await.unwrap();
    drop(conn);
    let state = Gauge::new();
    let handle = builder.state(state.clone()).build().await.unwrap().spawn();
    support::wait_until("the first handler", || {
        let running = Arc::clone(&state.running);
        async move { running.load(Ordering::SeqCst) >= 1 }
    })
    .await;
    let first_claim = env
        .count("SELECT count(*) AS n FROM jobq.jobs WHERE state = 'running'")
        .await;
    // Every claimed job's handler is in before the gate opens, so the peak
    // is at least the first claim, and more only if the limit was broken.
    support::wait_until("every claimed handler", || {
        let running = Arc::clone(&state.running);
        async move { running.load(Ordering::SeqCst) as i64 >= first_claim }
    })
    .await;
    state.open();
    for id in ids {
        env.wait_state(id, JobState::Completed).await;
    }
    handle.shutdown().await.unwrap();
    (first_claim, state.peak.load(Ordering::SeqCst))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_override_the_attributes_concurrency_applies() {
    let _env_lock = ENV_LOCK.lock().await;
    let env = support::env().await;
    // The control for the tests below: the same jobs run together.
    let (first_claim, peak) = first_claim_and_peak(&env, env.worker()).await;
    assert_eq!(first_claim, 5);
    assert_eq!(peak, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrency_override_on_the_builder_limits_the_worker() {
    let _env_lock = ENV_LOCK.lock().await;
    let env = support::env().await;
    let builder = env.worker().task_concurrency("overrides.gauge", 1);
    let (first_claim, peak) = first_claim_and_peak(&env, builder).await;
    assert_eq!(first_claim, 1);
    assert_eq!(peak, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrency_override_from_the_environment_limits_the_worker() {
    let _env_lock = ENV_LOCK.lock().await;
    let env = support::env().await;
    let _var = EnvVar::set(
        "JOBQ_TASK_CONCURRENCY",
        "overrides.stuck=3, overrides.gauge=2",
    );
    let (first_claim, peak) = first_claim_and_peak(&env, env.worker()).await;
    assert_eq!(first_claim, 2);
    assert_eq!(peak, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_builders_override_wins_over_the_environment() {
    let _env_lock = ENV_LOCK.lock().await;
    let env = support::env().await;
    let _var = EnvVar::set("JOBQ_TASK_CONCURRENCY", "overrides.gauge=2");
    let builder = env.worker().task_concurrency("overrides.gauge", 3);
    let (first_claim, peak) = first_claim_and_peak(&env, builder).await;
    assert_eq!(first_claim, 3);
    assert_eq!(peak, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_global_concurrency_override_limits_the_fleet_and_is_checked() {
    let _env_lock = ENV_LOCK.lock().await;
    let env = support::env().await;
    // The attribute has no fleet-wide limit; the builder sets one. (The
    // fleet here is one worker: its local limit of 8 would allow all 5.)
    let builder = env
        .worker()
        .task_global_concurrency("overrides.gauge", 2)
        .task_key_concurrency("overrides.gauge", 1);
    let (first_claim, peak) = first_claim_and_peak(&env, builder).await;
    assert_eq!(first_claim, 2);
    assert_eq!(peak, 2);
    let message = build_error(offline().task_global_concurrency("overrides.gauj", 2)).await;
    assert!(
        message.contains("task_global_concurrency") && message.contains("\"overrides.gauj\""),
        "{message}"
    );
    let message = build_error(offline().task_key_concurrency("overrides.gauge", 0)).await;
    assert!(
        message.contains("task_key_concurrency") && message.contains("not between 1 and"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_and_retry_overrides_reach_the_attempts() {
    let _env_lock = ENV_LOCK.lock().await;
    let env = support::env().await;
    let _var = EnvVar::set("JOBQ_TASK_TIMEOUT", "overrides.stuck=200ms");
    let handle = env
        .worker()
        .state(Gauge::new())
        .task_retry("overrides.flaky", Duration::from_secs(3600))
        .build()
        .await
        .unwrap()
        .spawn();
    let mut conn = env.conn().await;
    let once = || EnqueueOptions::new().max_attempts(1);
    let stuck_id = stuck::enqueue_with(&mut conn, &Work { n: 1 }, once())
        .await
        .unwrap();
    let flaky_id = flaky::enqueue_with(
        &mut conn,
        &Work { n: 2 },
        EnqueueOptions::new().max_attempts(2),
    )
    .await
    .unwrap();

    let stuck_job = env.wait_state(stuck_id, JobState::Failed).await;
    assert_eq!(stuck_job.errors.len(), 1, "{stuck_job:#?}");
    assert!(
        stuck_job.errors[0]
            .message
            .contains("timed out after 200ms"),
        "{stuck_job:#?}"
    );

    // The default base is 1 s; with the override the retry waits an hour.
    let flaky_job = env
        .wait_job(flaky_id, "waiting for its retry after one failure", |j| {
            j.state == JobState::Scheduled && j.attempt == 1
        })
        .await;
    let wait = flaky_job.run_at - flaky_job.errors[0].at;
    assert!(
        wait >= chrono::Duration::minutes(59),
        "retry scheduled after {wait}: {flaky_job:#?}"
    );
    handle.shutdown().await.unwrap();
}

/// Builds a worker that would connect nowhere: the errors below come before
/// any connection.
fn offline() -> jobq::WorkerBuilder {
    jobq::Worker::builder()
        .database_url("postgres://jobq@127.0.0.1:1/nothing")
        .connect_timeout(Duration::ZERO)
        .state(Gauge::new())
}

async fn build_error(builder: jobq::WorkerBuilder) -> String {
    match builder.build().await {
        Ok(_) => panic!("the worker was built"),
        Err(error) => error.to_string(),
    }
}

#[tokio::test]
async fn an_override_naming_an_unknown_task_is_refused_with_the_known_tasks() {
    let _env_lock = ENV_LOCK.lock().await;
    support::init_tracing();
    let message = build_error(offline().task_concurrency("overrides.gauj", 1)).await;
    assert!(
        message.contains("task_concurrency")
            && message.contains("\"overrides.gauj\"")
            && message.contains("\"overrides.flaky\", \"overrides.gauge\", \"overrides.stuck\""),
        "{message}"
    );
    let _var = EnvVar::set("JOBQ_TASK_RETRY", "overrides.gauge=1s,nightly=5s");
    let message = build_error(offline()).await;
    assert!(
        message.contains("JOBQ_TASK_RETRY") && message.contains("\"nightly\""),
        "{message}"
    );
}

#[tokio::test]
async fn malformed_or_out_of_range_overrides_are_refused_naming_the_setting() {
    let _env_lock = ENV_LOCK.lock().await;
    support::init_tracing();
    for (var, value, expected) in [
        ("JOBQ_TASK_TIMEOUT", "overrides.stuck", "is not task=value"),
        (
            "JOBQ_TASK_TIMEOUT",
            "overrides.stuck=soon",
            "\"soon\" is not a duration",
        ),
        (
            "JOBQ_TASK_CONCURRENCY",
            "overrides.gauge=0",
            "not between 1 and 2147483647",
        ),
        ("JOBQ_TASK_RETRY", "overrides.flaky=0s", "longer than zero"),
        ("JOBQ_MIGRATE", "later", "\"later\" is not on or off"),
        ("JOBQ_CLAIM_LANES", "-1", "\"-1\" is not a whole number"),
        (
            "JOBQ_CLAIM_LANES",
            "70000",
            "\"70000\" is not a whole number",
        ),
    ] {
        let _var = EnvVar::set(var, value);
        let message = build_error(offline()).await;
        assert!(
            message.contains(var) && message.contains(expected),
            "{var}={value}: {message}"
        );
    }
    let message = build_error(offline().task_timeout("overrides.stuck", Duration::ZERO)).await;
    assert!(
        message.contains("task_timeout") && message.contains("longer than zero"),
        "{message}"
    );
}

/// Whether the jobq schema is installed in the test's database.
async fn schema_installed(env: &support::Env) -> bool {
    env.count(
        "SELECT count(*) AS n FROM pg_namespace n \
         WHERE n.nspname = 'jobq' \
           AND EXISTS (SELECT FROM pg_class c WHERE c.relnamespace = n.oid)",
    )
    .await
        > 0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_migrating_a_missing_schema_is_refused_and_left_alone() {
    let _env_lock = ENV_LOCK.lock().await;
    support::init_tracing();
    let db = jobq_testkit::TestDatabase::create()
        .await
        .expect("test database");
    let pool = bb8::Pool::builder().max_size(4).build_unchecked(
        diesel_async::pooled_connection::AsyncDieselConnectionManager::<
            diesel_async::AsyncPgConnection,
        >::new(db.url()),
    );
    let env = support::Env { db, pool };
    let result = env
        .worker()
        .state(Gauge::new())
        .migrate(false)
        .build()
        .await;
    let error = match result {
        Ok(_) => panic!("a worker started without a schema"),
        Err(error) => error,
    };
    assert!(
        matches!(error, jobq::Error::SchemaNotReady { found: None, .. }),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains("not installed")
            && message.contains("jobq::migrate")
            && message.contains("JOBQ_MIGRATE=on"),
        "{message}"
    );
    assert!(!schema_installed(&env).await, "the worker migrated anyway");

    // The same from the environment; and `on` migrates.
    {
        let _var = EnvVar::set("JOBQ_MIGRATE", "off");
        let error = env.worker().state(Gauge::new()).build().await.err();
        assert!(
            matches!(error, Some(jobq::Error::SchemaNotReady { found: None, .. })),
            "{error:?}"
        );
    }
    let _var = EnvVar::set("JOBQ_MIGRATE", "on");
    let worker = env.worker().state(Gauge::new()).build().await.unwrap();
    drop(worker);
    assert!(schema_installed(&env).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_migrating_an_older_schema_is_refused_and_a_current_one_runs() {
    let _env_lock = ENV_LOCK.lock().await;
    let env = support::env().await;
    // A schema one migration behind: the latest one's record removed.
    {
        use diesel_async::RunQueryDsl;
        let mut conn = env.conn().await;
        diesel::sql_query(
            "DELETE FROM jobq.schema_migrations \
             WHERE version = (SELECT max(version) FROM jobq.schema_migrations)",
        )
        .execute(&mut conn)
        .await
        .unwrap();
    }
    let older = env
        .count("SELECT max(version) AS n FROM jobq.schema_migrations")
        .await;
    let _var = EnvVar::set("JOBQ_MIGRATE", "off");
    let error = env.worker().state(Gauge::new()).build().await.err();
    match &error {
        Some(jobq::Error::SchemaNotReady {
            found: Some(found),
            needed,
        }) => {
            assert_eq!(*found, older);
            assert_eq!(*needed, jobq_diesel::LATEST_VERSION);
            let message = error.as_ref().unwrap().to_string();
            assert!(
                message.contains(&format!("at version {older}, older than the {needed}"))
                    && message.contains("JOBQ_MIGRATE=on"),
                "{message}"
            );
        }
        other => panic!("expected SchemaNotReady, got {other:?}"),
    }

    // Brought up to date (as a deploy step would), the same worker
    // settings start and run jobs.
    let mut conn = env.conn().await;
    {
        use diesel_async::RunQueryDsl;
        diesel::sql_query(format!(
            "INSERT INTO jobq.schema_migrations (version, name) VALUES ({}, 'restored')",
            jobq_diesel::LATEST_VERSION
        ))
        .execute(&mut conn)
        .await
        .unwrap();
    }
    let handle = env
        .worker()
        .state(Gauge::new())
        .build()
        .await
        .unwrap()
        .spawn();
    let id = flaky::enqueue_with(
        &mut conn,
        &Work { n: 3 },
        EnqueueOptions::new().max_attempts(1),
    )
    .await
    .unwrap();
    env.wait_state(id, JobState::Failed).await;
    handle.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_told_to_serve_some_tasks_leaves_the_others_jobs_alone() {
    let _env_lock = ENV_LOCK.lock().await;
    let env = support::env().await;
    let mut conn = env.conn().await;
    let flaky_id = flaky::enqueue(&mut conn, &Work { n: 1 }).await.unwrap();
    let stuck_id = stuck::enqueue(&mut conn, &Work { n: 2 }).await.unwrap();
    drop(conn);
    // From the environment, the way a deployment splits its workers;
    // the concurrency override names a task this worker does not serve,
    // which another deployment of the binary does: no mistake.
    let _tasks = EnvVar::set("JOBQ_TASKS", "overrides.stuck");
    let handle = env
        .worker()
        .task_concurrency("overrides.flaky", 3)
        .build()
        .await
        .unwrap()
        .spawn();
    env.wait_state(stuck_id, JobState::Running).await;
    handle.shutdown().await.unwrap();
    let mut conn = env.conn().await;
    let flaky_job = jobq::job(&mut conn, flaky_id).await.unwrap().unwrap();
    assert_eq!(
        (flaky_job.state, flaky_job.attempt),
        (JobState::Pending, 0),
        "a task the worker does not serve was claimed"
    );
}

#[tokio::test]
async fn serving_a_task_the_binary_lacks_is_refused_naming_it() {
    let _env_lock = ENV_LOCK.lock().await;
    support::init_tracing();
    let message = build_error(offline().tasks(["overrides.gauge", "overrides.gaug"])).await;
    assert!(
        message.contains("\"overrides.gaug\"") && message.contains("overrides.stuck"),
        "{message}"
    );
    let message = build_error(offline().tasks(Vec::<String>::new())).await;
    assert!(message.contains("empty"), "{message}");
}
