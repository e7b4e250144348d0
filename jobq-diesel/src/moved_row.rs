//! Statements that met a job row another transaction moved between the
//! partitions of `jobq.jobs`.
//!
//! Finishing a job (and retrying a finished one) moves its row from
//! `jobq.jobs_active` to `jobq.jobs_finished` (or back). A statement that
//! waited for such a row's lock cannot follow it into the other partition
//! the way it follows an update within one table: PostgreSQL raises a
//! serialization failure instead of re-reading the row. Run again, the
//! statement sees the row where it is now. That is only possible outside a
//! transaction block; inside one, the failure aborts the caller's
//! transaction and is returned like any other.

use std::future::Future;
use std::pin::Pin;

use diesel::result::{DatabaseErrorKind, Error};
use diesel::QueryResult;
use diesel_async::{AnsiTransactionManager, AsyncPgConnection, TransactionManager};

/// Runs of a statement before its serialization failure is returned: each
/// run after the first sees the rows that made the one before it fail, so
/// only a row moved again in between needs another.
const RUNS: usize = 3;

/// A statement's future, borrowing the connection it runs on.
pub(crate) type Statement<'c, T> = Pin<Box<dyn Future<Output = QueryResult<T>> + Send + 'c>>;

/// Runs `statement` on `conn`, again (up to [`RUNS`] in all) while it fails
/// only because a row it waited for moved to the other partition and no
/// transaction block is open.
pub(crate) async fn run<T, F>(conn: &mut AsyncPgConnection, mut statement: F) -> QueryResult<T>
where
    F: for<'c> FnMut(&'c mut AsyncPgConnection) -> Statement<'c, T>,
{
    let mut runs = 1;
    loop {
        match statement(conn).await {
            Err(e) if runs < RUNS && run_again(conn, &e) => runs += 1,
            done => return done,
        }
    }
}

/// Whether `error` is PostgreSQL's refusal to follow a row into another
/// partition, and the statement could simply run again on `conn` (no
/// transaction block of the caller's is open).
fn run_again(conn: &mut AsyncPgConnection, error: &Error) -> bool {
    let moved = matches!(
        error,
        Error::DatabaseError(DatabaseErrorKind::SerializationFailure, info)
            if info.message().contains("moved to another partition")
    );
    moved
        && matches!(
            AnsiTransactionManager::transaction_manager_status_mut(conn).transaction_depth(),
            Ok(None)
        )
}
