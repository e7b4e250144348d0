//! Rate limits and downstream blocks as operators see them: the live
//! blocks (`TaskError::rate_limited`), the rate buckets that are not full,
//! and lifting a block early.
//!
//! The limits themselves (`rate`, `key_rate`, `burst`) are known to the
//! worker binaries only (task attributes, builder overrides), not to the
//! database: what is listed here is what the database knows.

use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel_async::AsyncPgConnection;

use crate::Error;

/// Most rows a listing returns: a downstream can block many keys at once.
const LISTED: i64 = 1_000;

/// A live block: no job of the task (or of its key) starts before `until`,
/// on any worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// The task.
    pub task: String,
    /// The partition key held back, or `None` for the whole task.
    pub key: Option<String>,
    /// When the block ends.
    pub until: DateTime<Utc>,
    /// How long until it ends (by the database's clock).
    pub remaining: Duration,
}

/// A rate bucket (`rate` or `key_rate`) that is not full: its task or key
/// started jobs lately.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateBucket {
    /// The task.
    pub task: String,
    /// The partition key, or `None` for the task's own bucket.
    pub key: Option<String>,
    /// When the bucket is full again if nothing starts meanwhile (the
    /// whole burst is available then). While it lies further ahead than
    /// the burst's worth of intervals, the bucket is empty; the next
    /// single token falls due that much before `full_at`.
    pub full_at: DateTime<Utc>,
    /// How long until `full_at` (by the database's clock).
    pub full_in: Duration,
}

fn key_of(key: String) -> Option<String> {
    (!key.is_empty()).then_some(key)
}

fn millis(ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// The live blocks, by task and key (at most 1,000).
pub async fn blocks(conn: &mut AsyncPgConnection) -> Result<Vec<Block>, Error> {
    let rows = jobq_diesel::blocks(conn, LISTED)
        .await
        .map_err(Error::db("listing blocks"))?;
    Ok(rows
        .into_iter()
        .map(|r| Block {
            task: r.task,
            key: key_of(r.key),
            until: r.until,
            remaining: millis(r.left_ms),
        })
        .collect())
}

/// The rate buckets that are not full, by task and key (at most 1,000).
/// Full buckets are not listed: they read as missing rows, and
/// maintenance removes them.
pub async fn rate_buckets(conn: &mut AsyncPgConnection) -> Result<Vec<RateBucket>, Error> {
    let rows = jobq_diesel::rate_buckets(conn, LISTED)
        .await
        .map_err(Error::db("listing rate buckets"))?;
    Ok(rows
        .into_iter()
        .map(|r| RateBucket {
            task: r.task,
            key: key_of(r.key),
            full_at: r.full_at,
            full_in: millis(r.full_in_ms),
        })
        .collect())
}

/// Lifts the block of `task` (of its partition `key`, or of the whole task
/// with `None`) before its end: the jobs it held back become pending at
/// once, in their order, and the workers of their queues are woken at
/// commit. Returns `None` when there was no live block, else how many jobs
/// came back. A later `TaskError::rate_limited` blocks again.
///
/// ```no_run
/// # async fn f(conn: &mut diesel_async::AsyncPgConnection) -> Result<(), jobq::Error> {
/// if let Some(back) = jobq::unblock(conn, "send_email", Some("customer-42")).await? {
///     println!("lifted; {back} jobs run again");
/// }
/// # Ok(()) }
/// ```
pub async fn unblock(
    conn: &mut AsyncPgConnection,
    task: &str,
    key: Option<&str>,
) -> Result<Option<u64>, Error> {
    if task.is_empty() {
        return Err(Error::invalid("task", "the task name is empty"));
    }
    if key == Some("") {
        return Err(Error::invalid(
            "key",
            "the partition key is empty (pass None to lift the whole task's block)",
        ));
    }
    let what = match key {
        Some(key) => format!("lifting the block of task {task:?}, key {key:?}"),
        None => format!("lifting the block of task {task:?}"),
    };
    let back = jobq_diesel::unblock(conn, task, key.unwrap_or(""))
        .await
        .map_err(Error::db(what))?;
    Ok(back.map(|n| u64::try_from(n).unwrap_or(0)))
}
