//! [`PrivateServer`]: a PostgreSQL server owned by one test.

use std::path::Path;
use std::sync::Arc;

use crate::server::{ServerProcess, ServerTls};
use crate::{blocking, connect, url, TestkitError};

/// A private PostgreSQL server owned by one test, for tests that stop,
/// restart or otherwise abuse the database (chaos and outage tests).
///
/// It is always a fresh private server started from the installed
/// PostgreSQL binaries, even when `DATABASE_URL` is set. It listens on
/// 127.0.0.1 on a free port, user `postgres`, trust authentication.
///
/// Dropping it stops the server (immediate shutdown) and deletes its
/// directory; if the process is killed instead, a watchdog does the same.
pub struct PrivateServer {
    server: Arc<ServerProcess>,
}

impl PrivateServer {
    /// Creates and starts a new server; returns once it accepts connections.
    pub async fn start() -> Result<PrivateServer, TestkitError> {
        Self::start_with(None).await
    }

    /// Creates and starts a new server with `ssl = on`, presenting `tls`'s
    /// certificate (the test makes its own CA, e.g. with `rcgen`). It
    /// still accepts connections without TLS.
    ///
    /// ```no_run
    /// # async fn f(cert_pem: String, key_pem: String) -> Result<(), jobq_testkit::TestkitError> {
    /// let server = jobq_testkit::PrivateServer::start_with_tls(jobq_testkit::ServerTls {
    ///     cert_pem,
    ///     key_pem,
    /// })
    /// .await?;
    /// let url = format!("{}?sslmode=require", server.url());
    /// # Ok(()) }
    /// ```
    pub async fn start_with_tls(tls: ServerTls) -> Result<PrivateServer, TestkitError> {
        Self::start_with(Some(tls)).await
    }

    async fn start_with(tls: Option<ServerTls>) -> Result<PrivateServer, TestkitError> {
        let server = blocking::run("starting a private PostgreSQL", move || {
            ServerProcess::start(tls)
        })
        .await?;
        let server = PrivateServer {
            server: Arc::new(server),
        };
        server.wait_until_ready().await?;
        Ok(server)
    }

    /// The TCP port it listens on (on 127.0.0.1).
    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// URL of the `postgres` maintenance database on it, user `postgres`.
    pub fn url(&self) -> &str {
        self.server.url()
    }

    /// URL of another database on the same server.
    pub fn url_for(&self, database: &str) -> String {
        url::with_database(self.server.url(), database)
    }

    /// Stops the server (`pg_ctl stop -m fast`) and waits until it is down.
    /// Stopping a stopped server succeeds.
    pub async fn stop(&self) -> Result<(), TestkitError> {
        let server = Arc::clone(&self.server);
        blocking::run("stopping a private PostgreSQL", move || server.stop("fast")).await
    }

    /// Starts the stopped server again, with the same data directory and
    /// port, and waits until it accepts connections.
    pub async fn start_again(&self) -> Result<(), TestkitError> {
        let server = Arc::clone(&self.server);
        blocking::run("starting a private PostgreSQL again", move || {
            server.start_again()
        })
        .await?;
        self.wait_until_ready().await
    }

    /// Restarts the server (`pg_ctl restart -m fast`) and waits until it
    /// accepts connections.
    pub async fn restart(&self) -> Result<(), TestkitError> {
        let server = Arc::clone(&self.server);
        blocking::run("restarting a private PostgreSQL", move || server.restart()).await?;
        self.wait_until_ready().await
    }

    /// Its data directory (`PGDATA`).
    pub fn data_dir(&self) -> &Path {
        self.server.data_dir()
    }

    /// The directory `initdb`, `pg_ctl` and `postgres` were found in, so
    /// tests can find siblings such as `psql` or `pgbouncer`.
    pub fn bin_dir(&self) -> &Path {
        self.server.bin_dir()
    }

    async fn wait_until_ready(&self) -> Result<(), TestkitError> {
        connect::wait_until_ready(self.server.url(), self.server.log_file()).await
    }
}

impl std::fmt::Debug for PrivateServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrivateServer")
            .field("url", &self.url())
            .field("data_dir", &self.data_dir())
            .finish()
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        self.server.destroy();
    }
}
