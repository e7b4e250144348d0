//! The connection that learns when jobs finish, for `jobq::Waiter`.
//!
//! A trigger on the jobs table (migrations `finished_notify` and
//! `awaited_jobs`) sends the ids of the jobs a statement took to a
//! terminal state on the channel `jobq_finished`, at commit, for those
//! ids someone registered in `jobq.awaited` (see `awaited.rs`).
//! This connection LISTENs on it and also registers the waited ids and
//! runs their look-ups, so that one connection serves any number of
//! waits.

use diesel::sql_types::{Array, BigInt, Bool, Nullable, Text};
use diesel::QueryableByName;
use diesel_async::{AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use futures_util::StreamExt;

use crate::listener::{dedicated, direct};
use crate::{Connector, ListenerError, Pool};

/// The channel of the `jobs_notify_finished` trigger.
pub const FINISHED_CHANNEL: &str = "jobq_finished";

/// A waited-on job as [`FinishedListener::look_up`] reads it.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct WaitedJob {
    /// Job id.
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    /// Task name.
    #[diesel(sql_type = Text)]
    pub task: String,
    /// scheduled, pending, running, completed, failed or cancelled.
    #[diesel(sql_type = Text)]
    pub state: String,
    /// The output as JSON text, read only for a completed job.
    #[diesel(sql_type = Nullable<Text>)]
    pub output: Option<String>,
    /// The message of the last error recorded, read only for a failed job.
    #[diesel(sql_type = Nullable<Text>)]
    pub last_error: Option<String>,
    /// Not finished, and the row version read is marked by another
    /// transaction (its xmax is set): possibly an outcome that has not
    /// committed yet, whose trigger may have run before this waiter's
    /// registration did. Look again shortly instead of relying on a
    /// notification.
    #[diesel(sql_type = Bool)]
    pub unsettled: bool,
}

impl WaitedJob {
    /// Whether the job has reached a terminal state.
    #[must_use]
    pub fn is_finished(&self) -> bool {
        matches!(self.state.as_str(), "completed" | "failed" | "cancelled")
    }
}

/// Ids per look-up statement: a poll over many thousand waits stays a few
/// statements of bounded size.
const LOOK_UP_CHUNK: usize = 5_000;

/// The look-up of waited jobs. Outputs and errors are read only for the
/// rows that carry them, so a poll over unfinished jobs moves little. The
/// comment names the statement in `pg_stat_activity`.
///
/// `unsettled`: a transaction that updated (or locked) a row sets the
/// xmax of the version it replaces the moment it does so, and this
/// statement, whose snapshot is taken after the waiter's registration
/// committed, sees that old version as long as the transaction has not
/// committed. So an outcome that ran its trigger before the registration
/// committed shows here either as finished or as unsettled. A set xmax
/// can also be left by a transaction that rolled back or only locked the
/// row; those cost a few extra look-ups, never a missed wake-up.
const LOOK_UP_SQL: &str = "/* jobq waiter */ \
    SELECT id, task, state::text AS state, \
        CASE WHEN state = 'completed' THEN output::text END AS output, \
        CASE WHEN state = 'failed' THEN errors -> -1 ->> 'message' END AS last_error, \
        (state NOT IN ('completed', 'failed', 'cancelled') AND xmax::text <> '0') AS unsettled \
    FROM jobq.jobs WHERE id = ANY($1)";

/// A dedicated connection LISTENing on [`FINISHED_CHANNEL`].
pub struct FinishedListener {
    conn: AsyncPgConnection,
}

impl std::fmt::Debug for FinishedListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FinishedListener").finish_non_exhaustive()
    }
}

impl FinishedListener {
    /// Opens a connection of the pool's (outside its accounting) and
    /// LISTENs.
    pub async fn connect(pool: &Pool) -> Result<FinishedListener, ListenerError> {
        Self::listen_on(dedicated(pool).await?).await
    }

    /// Opens a connection with `connector` and LISTENs.
    pub async fn connect_with(connector: &Connector) -> Result<FinishedListener, ListenerError> {
        Self::listen_on(direct(connector).await?).await
    }

    pub(crate) fn conn(&mut self) -> &mut AsyncPgConnection {
        &mut self.conn
    }

    async fn listen_on(mut conn: AsyncPgConnection) -> Result<FinishedListener, ListenerError> {
        conn.batch_execute("LISTEN jobq_finished")
            .await
            .map_err(ListenerError::Connection)?;
        Ok(FinishedListener { conn })
    }

    /// The ids of the next notification (a statement's finished jobs, in
    /// chunks). `Err` or `None` mean the connection is gone: reconnect, and
    /// assume notifications were missed meanwhile. Payloads that are not
    /// lists of ids are skipped. Cancel-safe.
    pub async fn next(&mut self) -> Option<Result<Vec<i64>, ListenerError>> {
        let mut stream = std::pin::pin!(self.conn.notifications_stream());
        loop {
            match stream.next().await? {
                Err(e) => return Some(Err(ListenerError::Connection(e))),
                Ok(n) if n.channel == FINISHED_CHANNEL => match parse_ids(&n.payload) {
                    Some(ids) => return Some(Ok(ids)),
                    None => {
                        tracing::debug!(payload = %n.payload, "ignoring a malformed finished-jobs notification");
                    }
                },
                Ok(n) => {
                    tracing::debug!(channel = %n.channel, "ignoring unexpected notification");
                }
            }
        }
    }

    /// The jobs among `ids` that exist, finished or not, in one statement
    /// per [`LOOK_UP_CHUNK`] ids. An id missing from the result has no job
    /// (never committed, or pruned).
    pub async fn look_up(&mut self, ids: &[i64]) -> diesel::QueryResult<Vec<WaitedJob>> {
        let mut found = Vec::new();
        for chunk in ids.chunks(LOOK_UP_CHUNK) {
            let rows: Vec<WaitedJob> = diesel::sql_query(LOOK_UP_SQL)
                .bind::<Array<BigInt>, _>(chunk)
                .load(&mut self.conn)
                .await?;
            found.extend(rows);
        }
        Ok(found)
    }
}

/// The ids of a payload: decimal ids separated by single spaces.
fn parse_ids(payload: &str) -> Option<Vec<i64>> {
    payload.split(' ').map(|id| id.parse().ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_id_lists_and_refuses_anything_else() {
        assert_eq!(parse_ids("1 22 333"), Some(vec![1, 22, 333]));
        assert_eq!(parse_ids("9223372036854775807"), Some(vec![i64::MAX]));
        assert_eq!(parse_ids(""), None);
        assert_eq!(parse_ids("1 x"), None);
        assert_eq!(parse_ids("1  2"), None);
    }
}
