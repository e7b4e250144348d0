//! The one error type of the crate.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Everything that can go wrong while providing a test database.
///
/// Messages carry enough context to act on (which command, which
/// directory, the tail of the server log) and never contain a password:
/// URLs are shown with their password replaced by `***`.
#[derive(Debug, thiserror::Error)]
pub enum TestkitError {
    /// No PostgreSQL installation was found and `DATABASE_URL` is not set.
    #[error(
        "jobq-testkit needs PostgreSQL: DATABASE_URL is not set and no PostgreSQL server binaries \
         (initdb, pg_ctl, postgres) were found on PATH or under /usr/lib/postgresql/*/bin. \
         Install PostgreSQL (e.g. `apt-get install postgresql`, `brew install postgresql`) \
         or set DATABASE_URL to a server where the tests may create databases \
         (e.g. DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres)"
    )]
    PostgresNotInstalled,

    /// Running as root, but there is no unprivileged user to run PostgreSQL as.
    #[error(
        "running as root, and PostgreSQL refuses to run as root, but the `{user}` system user to \
         run it as could not be used: {reason}. Create it (e.g. `useradd --system {user}`), run \
         the tests as another user, or set DATABASE_URL"
    )]
    NoUnprivilegedUser {
        /// The user name that was looked up.
        user: String,
        /// Why it could not be used.
        reason: String,
    },

    /// A filesystem or process operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A PostgreSQL command-line tool exited unsuccessfully.
    #[error("`{command}` failed ({status}):\n{output}")]
    Command {
        /// The command line that was run.
        command: String,
        /// Its exit status.
        status: String,
        /// What it printed, and the tail of the server log when relevant.
        output: String,
    },

    /// The server did not accept connections before the deadline.
    #[error(
        "PostgreSQL at {url} did not accept connections within {timeout:?} \
         (last error: {last_error}); tail of {log_file}:\n{log_tail}"
    )]
    NotReady {
        /// The (password-free) URL that was polled.
        url: String,
        /// How long it was waited for.
        timeout: Duration,
        /// The last connection error.
        last_error: String,
        /// The server log file.
        log_file: PathBuf,
        /// Its last lines.
        log_tail: String,
    },

    /// Connecting to a server failed.
    #[error("could not connect to {url}: {message}")]
    Connect {
        /// The URL, password redacted.
        url: String,
        /// The driver's message.
        message: String,
    },

    /// An SQL statement failed.
    #[error("`{sql}` on {url} failed: {message}")]
    Sql {
        /// The statement.
        sql: String,
        /// The URL, password redacted.
        url: String,
        /// The server's message.
        message: String,
    },

    /// The process-wide shared server failed to start earlier; this is that failure.
    #[error(transparent)]
    SharedServer(Arc<TestkitError>),
}

impl TestkitError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        TestkitError::Io {
            context: context.into(),
            source,
        }
    }
}
