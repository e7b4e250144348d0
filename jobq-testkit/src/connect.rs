//! Talking to a server with diesel-async: connecting, running a statement,
//! waiting until it accepts connections.

use std::path::Path;
use std::time::{Duration, Instant};

use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};

use crate::url::redact;
use crate::TestkitError;

/// How long a freshly started server may take to accept connections.
pub(crate) const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Opens a connection to `url`.
pub(crate) async fn connect(url: &str) -> Result<AsyncPgConnection, TestkitError> {
    AsyncPgConnection::establish(url)
        .await
        .map_err(|e| TestkitError::Connect {
            url: redact(url),
            message: e.to_string(),
        })
}

/// Connects to `url` and runs `sql` (one or more statements, no results).
pub(crate) async fn execute(url: &str, sql: &str) -> Result<(), TestkitError> {
    let mut connection = connect(url).await?;
    connection
        .batch_execute(sql)
        .await
        .map_err(|e| TestkitError::Sql {
            sql: sql.to_owned(),
            url: redact(url),
            message: e.to_string(),
        })
}

/// Polls until the server at `url` accepts a connection, or fails after
/// [`READY_TIMEOUT`] with the tail of `log_file`.
pub(crate) async fn wait_until_ready(url: &str, log_file: &Path) -> Result<(), TestkitError> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        match connect(url).await {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() >= deadline => {
                return Err(TestkitError::NotReady {
                    url: redact(url),
                    timeout: READY_TIMEOUT,
                    last_error: e.to_string(),
                    log_file: log_file.to_path_buf(),
                    log_tail: crate::server::log_tail(log_file),
                })
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(25)).await,
        }
    }
}
