//! [`TestDatabase`]: a database of its own for one test.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::url::{redact, with_database};
use crate::{connect, shared, TestkitError};

/// How long dropping a database may take before we give up on it.
const DROP_TIMEOUT: Duration = Duration::from_secs(10);

/// A database of its own for one test / example / benchmark run.
///
/// Tests using separate `TestDatabase`s can run in parallel and never see
/// each other's tables or jobs. Its name looks like
/// `jobq_test_<pid>_<counter>_<random>`.
///
/// On a `DATABASE_URL` server (or one given to [`TestDatabase::create_on`])
/// dropping it runs `DROP DATABASE .. WITH (FORCE)`, best effort; on the
/// shared private server nothing is dropped, as the whole server is thrown
/// away when the process exits.
pub struct TestDatabase {
    name: String,
    url: String,
    server_url: String,
    drop_on_drop: bool,
}

impl TestDatabase {
    /// Creates a database on `DATABASE_URL`'s server if that variable is
    /// set, else on the process-wide shared private server (started once,
    /// lazily, from the installed PostgreSQL binaries).
    pub async fn create() -> Result<TestDatabase, TestkitError> {
        match std::env::var("DATABASE_URL") {
            Ok(url) if !url.trim().is_empty() => Self::create_in(&url, true).await,
            _ => Self::create_in(shared::url().await?, false).await,
        }
    }

    /// Creates a database on the server `server_url` points at (any
    /// database on it that the user may connect to, e.g. a
    /// [`crate::PrivateServer::url`]).
    pub async fn create_on(server_url: &str) -> Result<TestDatabase, TestkitError> {
        Self::create_in(server_url, true).await
    }

    async fn create_in(server_url: &str, drop_on_drop: bool) -> Result<TestDatabase, TestkitError> {
        let name = unique_name();
        connect::execute(server_url, &format!("CREATE DATABASE \"{name}\"")).await?;
        tracing::debug!(database = %name, server = %redact(server_url), "created test database");
        Ok(TestDatabase {
            url: with_database(server_url, &name),
            name,
            server_url: server_url.to_owned(),
            drop_on_drop,
        })
    }

    /// `postgres://...` URL of this database.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl std::fmt::Debug for TestDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestDatabase")
            .field("name", &self.name)
            .field("url", &redact(&self.url))
            .finish()
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if !self.drop_on_drop {
            return;
        }
        let server_url = self.server_url.clone();
        let name = self.name.clone();
        // Drop may run inside or outside a runtime, even inside a
        // current_thread one that must not block on itself: use a
        // thread with a runtime of its own.
        let dropper = std::thread::Builder::new()
            .name("jobq-testkit-drop".to_owned())
            .spawn(move || drop_database(&server_url, &name));
        match dropper.map(|thread| thread.join()) {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => {
                tracing::warn!(database = %self.name, error = %e, "could not drop test database")
            }
            Ok(Err(_)) => {
                tracing::warn!(database = %self.name, "dropping the test database panicked")
            }
            Err(e) => {
                tracing::warn!(database = %self.name, error = %e, "could not start a thread to drop the test database")
            }
        }
    }
}

fn drop_database(server_url: &str, name: &str) -> Result<(), TestkitError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| TestkitError::io("building a runtime to drop a test database", e))?;
    runtime.block_on(async {
        let work = async {
            let forced = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
            match connect::execute(server_url, &forced).await {
                // WITH (FORCE) needs PostgreSQL 13.
                Err(TestkitError::Sql { .. }) => {
                    connect::execute(server_url, &format!("DROP DATABASE IF EXISTS \"{name}\""))
                        .await
                }
                other => other,
            }
        };
        tokio::time::timeout(DROP_TIMEOUT, work)
            .await
            .unwrap_or_else(|_| {
                Err(TestkitError::io(
                    format!("dropping database {name}"),
                    std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out"),
                ))
            })
    })
}

/// `jobq_test_<pid>_<counter>_<random>`: unique within the process through
/// the counter, and across processes (and pid reuse) through the pid and
/// the random part.
fn unique_name() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    format!(
        "jobq_test_{}_{}_{:08x}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        fastrand::u32(..)
    )
}
