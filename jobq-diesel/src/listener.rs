//! The LISTEN connection that wakes workers.
//!
//! It is a dedicated connection, never a pooled one: a connection collects
//! notifications from the moment it LISTENs, and a pooled connection handed
//! to someone else would swallow them.

use diesel_async::{AsyncPgConnection, SimpleAsyncConnection};
use futures_util::StreamExt;

use diesel_async::pooled_connection::PoolError;

use crate::{ClaimPosition, ConnectOptions, Connector, Pool};

/// A wake-up delivered by PostgreSQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notification {
    /// Jobs became pending on `queue` (retries, rescues, releases,
    /// promotions, unpauses), or will be at `due_at_ms`: at any place in
    /// their tasks' claim order.
    Jobs {
        /// The queue.
        queue: String,
        /// Epoch milliseconds of the earliest of them when it lies in the
        /// future; `None` when some are due now.
        due_at_ms: Option<i64>,
    },
    /// Jobs due now became pending on `queue` by an insert: the first of
    /// them in `task`'s claim order is at `first`. A worker whose claim
    /// floor for the task lies past it must lower the floor (see
    /// [`crate::ClaimRequest::floors`]): the inserting transaction may
    /// have started before jobs already claimed were enqueued.
    Pending {
        /// The queue.
        queue: String,
        /// The task.
        task: String,
        /// The first of the jobs in the task's claim order.
        first: ClaimPosition,
    },
    /// Someone asked to cancel this running job.
    Cancel {
        /// The job.
        job_id: i64,
    },
    /// A probe sent by [`send_probe`], to check that notifications reach
    /// this connection at all.
    Probe {
        /// The probe's token.
        token: String,
    },
}

/// The channel of [`send_probe`].
const PROBE_CHANNEL: &str = "jobq_probe";

/// Sends a probe notification carrying `token` (on a connection other than
/// the listener's, so that it proves delivery between sessions).
pub async fn send_probe(conn: &mut AsyncPgConnection, token: &str) -> diesel::QueryResult<()> {
    use diesel_async::RunQueryDsl;
    diesel::sql_query("SELECT pg_notify($1, $2)")
        .bind::<diesel::sql_types::Text, _>(PROBE_CHANNEL)
        .bind::<diesel::sql_types::Text, _>(token)
        .execute(conn)
        .await
        .map(drop)
}

/// A connection LISTENing on jobq's channels.
pub struct Listener {
    conn: AsyncPgConnection,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener").finish_non_exhaustive()
    }
}

/// Why the listener could not connect or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ListenerError {
    /// Connecting failed.
    #[error("opening the LISTEN connection to {url} failed")]
    Connect {
        /// Where to (the password masked), or "the pool's database".
        url: String,
        /// The driver's error.
        #[source]
        source: PoolError,
    },
    /// A statement or the connection failed.
    #[error("the LISTEN connection failed")]
    Connection(#[source] diesel::result::Error),
}

impl Listener {
    /// Opens a connection outside the pool's accounting and LISTENs.
    pub async fn connect(pool: &Pool) -> Result<Listener, ListenerError> {
        Self::listen_on(dedicated(pool).await?).await
    }

    /// Opens a connection to `url` (e.g. straight to PostgreSQL while the
    /// pool goes through PgBouncer) and LISTENs. The URL is read as
    /// [`ConnectOptions`] do (TLS, keepalives).
    pub async fn connect_url(url: &str) -> Result<Listener, ListenerError> {
        let options = ConnectOptions::parse(url).map_err(|e| ListenerError::Connect {
            url: e.shown.clone(),
            source: PoolError::ConnectionError(diesel::ConnectionError::InvalidConnectionUrl(
                e.reason,
            )),
        })?;
        Self::connect_with(&Connector::new(options)).await
    }

    /// Opens a connection with `connector` (its options and hook) and
    /// LISTENs.
    pub async fn connect_with(connector: &Connector) -> Result<Listener, ListenerError> {
        Self::listen_on(direct(connector).await?).await
    }

    async fn listen_on(mut conn: AsyncPgConnection) -> Result<Listener, ListenerError> {
        conn.batch_execute("LISTEN jobq_jobs; LISTEN jobq_cancel; LISTEN jobq_probe;")
            .await
            .map_err(ListenerError::Connection)?;
        Ok(Listener { conn })
    }

    /// Stops listening (best effort before dropping a connection whose
    /// LISTEN may have landed on a shared server connection).
    pub async fn unlisten(mut self) -> Result<(), ListenerError> {
        self.conn
            .batch_execute("UNLISTEN *")
            .await
            .map_err(ListenerError::Connection)
    }

    /// The next notification. `Err` or `None` mean the connection is gone:
    /// reconnect, and assume notifications were missed meanwhile. Unknown
    /// payloads are skipped. Cancel-safe.
    pub async fn next(&mut self) -> Option<Result<Notification, ListenerError>> {
        let mut stream = std::pin::pin!(self.conn.notifications_stream());
        loop {
            match stream.next().await? {
                Err(e) => return Some(Err(ListenerError::Connection(e))),
                Ok(n) => {
                    if let Some(parsed) = parse(&n.channel, &n.payload) {
                        return Some(Ok(parsed));
                    }
                    tracing::debug!(channel = %n.channel, payload = %n.payload, "ignoring unexpected notification");
                }
            }
        }
    }
}

/// A connection of the pool's, outside its accounting: a connection that
/// LISTENs must never go back to the pool.
pub(crate) async fn dedicated(pool: &Pool) -> Result<AsyncPgConnection, ListenerError> {
    pool.dedicated_connection()
        .await
        .map_err(|source| ListenerError::Connect {
            url: "the pool's database".to_owned(),
            source,
        })
}

/// A connection made by `connector`.
pub(crate) async fn direct(connector: &Connector) -> Result<AsyncPgConnection, ListenerError> {
    connector
        .connect()
        .await
        .map_err(|e| ListenerError::Connect {
            url: connector.options().to_string(),
            source: PoolError::ConnectionError(e),
        })
}

fn parse(channel: &str, payload: &str) -> Option<Notification> {
    match channel {
        "jobq_jobs" if payload.starts_with('=') => parse_pending(&payload[1..]),
        "jobq_jobs" => {
            let (due, queue) = payload.split_once(' ')?;
            let due: i64 = due.parse().ok()?;
            Some(Notification::Jobs {
                queue: queue.to_owned(),
                due_at_ms: (due != 0).then_some(due),
            })
        }
        "jobq_cancel" => Some(Notification::Cancel {
            job_id: payload.parse().ok()?,
        }),
        PROBE_CHANNEL => Some(Notification::Probe {
            token: payload.to_owned(),
        }),
        _ => None,
    }
}

/// `<priority> <run_at epoch µs> <id> <task's length in characters>
/// <task><queue>` (the insert trigger's, after its `=`): both names may
/// hold spaces, so the task's length says where the queue begins.
fn parse_pending(payload: &str) -> Option<Notification> {
    let mut fields = payload.splitn(5, ' ');
    let priority: i16 = fields.next()?.parse().ok()?;
    let run_at_us: i64 = fields.next()?.parse().ok()?;
    let id: i64 = fields.next()?.parse().ok()?;
    let task_chars: usize = fields.next()?.parse().ok()?;
    let names = fields.next()?;
    let split = names
        .char_indices()
        .nth(task_chars)
        .map_or(names.len(), |(at, _)| at);
    let (task, queue) = names.split_at(split);
    if task.chars().count() != task_chars || queue.is_empty() {
        return None;
    }
    Some(Notification::Pending {
        queue: queue.to_owned(),
        task: task.to_owned(),
        first: ClaimPosition {
            priority,
            run_at: chrono::DateTime::from_timestamp_micros(run_at_us)?,
            id,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_first_position_of_inserted_jobs() {
        assert_eq!(
            parse("jobq_jobs", "=-2 1700000000123456 42 7 tâche 1my queue"),
            Some(Notification::Pending {
                queue: "my queue".into(),
                task: "tâche 1".into(),
                first: ClaimPosition {
                    priority: -2,
                    run_at: chrono::DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap(),
                    id: 42,
                },
            })
        );
        assert_eq!(
            parse("jobq_jobs", "=0 1 2 9 short"),
            None,
            "task longer than the rest"
        );
        assert_eq!(parse("jobq_jobs", "=0 1 2 5 tasks"), None, "no queue");
        assert_eq!(parse("jobq_jobs", "=x 1 2 1 tq"), None);
    }

    #[test]
    fn parses_payloads() {
        assert_eq!(
            parse("jobq_jobs", "0 default"),
            Some(Notification::Jobs {
                queue: "default".into(),
                due_at_ms: None
            })
        );
        assert_eq!(
            parse("jobq_jobs", "1700000000000 with space"),
            Some(Notification::Jobs {
                queue: "with space".into(),
                due_at_ms: Some(1_700_000_000_000)
            })
        );
        assert_eq!(
            parse("jobq_cancel", "42"),
            Some(Notification::Cancel { job_id: 42 })
        );
        assert_eq!(parse("jobq_jobs", "garbage"), None);
        assert_eq!(parse("other", "0 x"), None);
    }
}
