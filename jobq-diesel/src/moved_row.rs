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

use diesel::result::{DatabaseErrorKind, Error};
use diesel_async::{AnsiTransactionManager, AsyncPgConnection, TransactionManager};

/// Runs of a statement before its serialization failure is returned: each
/// run after the first sees the rows that made the one before it fail, so
/// only a row moved again in between needs another.
pub(crate) const RUNS: usize = 3;

/// Evaluates `$statement` (an expression ending in `.await` that uses
/// `$conn`) again, up to [`RUNS`] times in all, while it fails only because
/// a row it waited for moved to the other partition and no transaction
/// block is open on `$conn`.
macro_rules! rerun_if_moved {
    ($conn:expr, $statement:expr) => {{
        let mut runs = 1;
        loop {
            match $statement {
                Err(e) if runs < $crate::moved_row::RUNS
                    && $crate::moved_row::run_again($conn, &e) =>
                {
                    tracing::debug!(error = %e, "a row moved between partitions; running again");
                    runs += 1
                }
                done => break done,
            }
        }
    }};
}
pub(crate) use rerun_if_moved;

/// Whether `error` is PostgreSQL's refusal to follow a row into another
/// partition, and the statement could simply run again on `conn` (no
/// transaction block of the caller's is open).
pub(crate) fn run_again(conn: &mut AsyncPgConnection, error: &Error) -> bool {
    moved_between_partitions(error)
        && matches!(
            AnsiTransactionManager::transaction_manager_status_mut(conn).transaction_depth(),
            Ok(None)
        )
}

/// Whether `error` is PostgreSQL's refusal to follow a job row into the
/// other partition of `jobq.jobs` ("tuple to be locked/updated was already
/// moved to another partition due to concurrent update"): the statement
/// met a job that finished (or was retried) meanwhile, and run again it
/// sees the job where it is now. For applications that update or lock
/// jobs rows themselves.
///
/// ```
/// use diesel::result::{DatabaseErrorKind, Error};
///
/// let e = Error::DatabaseError(
///     DatabaseErrorKind::SerializationFailure,
///     Box::new("tuple to be locked was already moved to another partition \
///               due to concurrent update".to_owned()),
/// );
/// assert!(jobq_diesel::moved_between_partitions(&e));
/// assert!(!jobq_diesel::moved_between_partitions(&Error::NotFound));
/// ```
pub fn moved_between_partitions(error: &Error) -> bool {
    matches!(
        error,
        Error::DatabaseError(DatabaseErrorKind::SerializationFailure, info)
            if info.message().contains("moved to another partition")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serialization_failure(message: &str) -> Error {
        Error::DatabaseError(
            DatabaseErrorKind::SerializationFailure,
            Box::new(message.to_owned()),
        )
    }

    #[test]
    fn only_a_row_moved_between_partitions_is_run_again() {
        for message in [
            "tuple to be locked was already moved to another partition due to concurrent update",
            "tuple to be updated was already moved to another partition due to concurrent update",
        ] {
            assert!(
                moved_between_partitions(&serialization_failure(message)),
                "{message}"
            );
        }
        assert!(!moved_between_partitions(&serialization_failure(
            "could not serialize access due to concurrent update"
        )));
        assert!(!moved_between_partitions(&Error::DatabaseError(
            DatabaseErrorKind::UniqueViolation,
            Box::new("moved to another partition".to_owned()),
        )));
        assert!(!moved_between_partitions(&Error::NotFound));
    }
}
