//! Shared set-up of the integration tests: a database of the test's own,
//! a pool on it, fast worker settings, and polling with deadlines.
#![allow(dead_code)]

use std::future::Future;
use std::time::{Duration, Instant};

use diesel_async::pooled_connection::AsyncDieselConnectionManager;
use diesel_async::AsyncPgConnection;
use jobq::{JobId, JobInfo, JobState};
use jobq_testkit::TestDatabase;

pub mod example;
pub mod fleet;
pub mod lanes;
pub mod logs;
pub mod proxy;
pub mod roles;

/// Generous deadline for anything that should happen "soon": CI machines
/// are slow, and a test that waits longer only costs time when it fails.
pub const SOON: Duration = Duration::from_secs(20);

pub struct Env {
    pub db: TestDatabase,
    pub pool: jobq::Pool,
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

/// A fresh database with jobq's schema, and a pool on it.
pub async fn env() -> Env {
    init_tracing();
    let db = TestDatabase::create().await.expect("test database");
    let pool = bb8::Pool::builder()
        .max_size(16)
        .build_unchecked(AsyncDieselConnectionManager::<AsyncPgConnection>::new(
            db.url(),
        ));
    let mut conn = pool.get().await.expect("connection");
    jobq::migrate(&mut conn).await.expect("migrate");
    drop(conn);
    Env { db, pool }
}

impl Env {
    pub async fn conn(
        &self,
    ) -> bb8::PooledConnection<'_, AsyncDieselConnectionManager<AsyncPgConnection>> {
        self.pool.get().await.expect("connection")
    }

    /// A worker builder on this database with settings that keep tests
    /// fast: short poll, lease and intervals.
    pub fn worker(&self) -> jobq::WorkerBuilder {
        fast_worker(self.pool.clone())
    }

    /// A worker running on a runtime and a pool of its own, so that
    /// dropping the returned runtime (`shutdown_background`) stops it the
    /// way a crash does: no outcome, no more heartbeats, and its
    /// connections gone with it. A pool shared with the test would outlive
    /// the "crash" with connections whose tasks died on the dropped runtime
    /// and could run dry for the workers that follow.
    pub fn crashable(
        &self,
        configure: impl FnOnce(jobq::WorkerBuilder) -> jobq::WorkerBuilder + Send + 'static,
    ) -> tokio::runtime::Runtime {
        let url = self.db.url().to_owned();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("runtime");
            let worker = rt
                .block_on(async {
                    let pool = bb8::Pool::builder().max_size(8).build_unchecked(
                        AsyncDieselConnectionManager::<AsyncPgConnection>::new(url),
                    );
                    configure(fast_worker(pool)).build().await
                })
                .expect("worker");
            rt.spawn(worker.run_until(std::future::pending()));
            rt
        })
        .join()
        .expect("crashable worker thread")
    }

    pub async fn job(&self, id: JobId) -> JobInfo {
        let mut conn = self.conn().await;
        jobq::job(&mut conn, id)
            .await
            .expect("job lookup")
            .expect("job exists")
    }

    /// Polls the job until `done` holds or the deadline passes.
    pub async fn wait_job(
        &self,
        id: JobId,
        what: &str,
        done: impl Fn(&JobInfo) -> bool,
    ) -> JobInfo {
        let deadline = Instant::now() + SOON;
        loop {
            let info = self.job(id).await;
            if done(&info) {
                return info;
            }
            assert!(
                Instant::now() < deadline,
                "job {id} never became {what}: {info:#?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn wait_state(&self, id: JobId, state: JobState) -> JobInfo {
        self.wait_job(id, &format!("{state:?}"), |j| j.state == state)
            .await
    }

    /// Runs a scalar SQL query (test-side inspection only).
    pub async fn count(&self, sql: &str) -> i64 {
        count_in(&mut *self.conn().await, sql).await
    }

    /// How many sessions of this database are LISTENing for new jobs
    /// (their last statement was the LISTEN).
    pub async fn listeners(&self) -> i64 {
        self.count(
            "SELECT count(*) AS n FROM pg_stat_activity \
             WHERE datname = current_database() AND query LIKE 'LISTEN jobq_jobs%'",
        )
        .await
    }

    /// Waits until a worker of this database listens: with polling slowed
    /// down, a job enqueued before that is announced to nobody, and what a
    /// test checks is the wake-up by notification, not start-up.
    pub async fn wait_listening(&self) {
        wait_until("a worker to LISTEN", || async {
            self.listeners().await > 0
        })
        .await;
    }
}

/// Runs `sql`, which returns one `bigint` column named `n`, on `conn`
/// (test-side inspection only).
pub async fn count_in(conn: &mut AsyncPgConnection, sql: &str) -> i64 {
    use diesel::sql_types::BigInt;
    use diesel_async::RunQueryDsl;
    #[derive(diesel::QueryableByName)]
    struct N {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let row: N = diesel::sql_query(sql).get_result(conn).await.expect(sql);
    row.n
}

/// Polls `check` until it returns true or the deadline passes.
pub async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + SOON;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The variable that turns a missing external program into a failure:
/// a comma-separated list of tools (`pgbouncer,chromium`), or `all`.
/// `.ci/run` sets it, so CI always runs the tests that need them.
pub const REQUIRE_TOOLS: &str = "JOBQ_REQUIRE_TOOLS";

/// `found` when a test's external program is installed. Otherwise prints
/// one line saying the test was skipped and returns `None` — unless
/// [`REQUIRE_TOOLS`] names the tool, in which case the test fails.
pub fn required_tool<T>(tool: &str, test: &str, install: &str, found: Option<T>) -> Option<T> {
    if found.is_some() {
        return found;
    }
    let required = std::env::var(REQUIRE_TOOLS).unwrap_or_default();
    let required = required
        .split(',')
        .map(str::trim)
        .any(|t| t.eq_ignore_ascii_case(tool) || t.eq_ignore_ascii_case("all"));
    assert!(
        !required,
        "{test}: {tool} is not installed and {REQUIRE_TOOLS} requires it ({install})"
    );
    // Straight to the process's stderr: the test harness captures what
    // `println!`/`eprintln!` print in a passing test, and this line must
    // be seen.
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "skipped: {test}: {tool} is not installed ({install}; {REQUIRE_TOOLS}={tool} makes this a failure)"
    );
    None
}

/// The installed PgBouncer, or `None` (with the skip line printed) when
/// it is missing and CI did not ask for it (see [`required_tool`]).
pub fn pgbouncer(test: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = ["/usr/sbin", "/usr/bin", "/usr/local/bin"]
        .iter()
        .map(std::path::PathBuf::from)
        .chain(std::env::split_paths(&path))
        .map(|dir| dir.join("pgbouncer"))
        .find(|p| p.exists());
    required_tool("pgbouncer", test, "apt-get install pgbouncer", found)
}

/// Worker settings that keep tests fast: short poll, lease and intervals.
fn fast_worker(pool: jobq::Pool) -> jobq::WorkerBuilder {
    jobq::Worker::builder()
        .pool(pool)
        .poll_interval(Duration::from_millis(200))
        .lease(Duration::from_secs(2))
        .heartbeat_interval(Duration::from_millis(200))
        .maintenance_interval(Duration::from_millis(200))
        .shutdown_timeout(Duration::from_secs(5))
}
