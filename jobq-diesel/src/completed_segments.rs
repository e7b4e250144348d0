//! The ring of segments completed jobs are written to and pruned from.
//!
//! A job a worker completes, holding no unique key, goes to the open one of
//! eight partitions of `jobq.jobs_finished` (`jobq.jobs_completed_0` ..
//! `_7`, listed by the job's `completed_segment`). Maintenance turns the
//! ring ([`turn_completed_segments`]): it closes the open segment after a
//! quarter of the completed jobs' retention and opens the next one, and
//! truncates a closed segment once everything in it is past the retention.
//! Pruning a segment is then one `TRUNCATE`, whatever it holds, instead of
//! a delete, an index deletion and a dead row per job.
//!
//! When the next segment is still in its retention (the retention grew, or
//! truncations were held up), the open segment stays open longer: jobs are
//! kept longer than their retention, never pruned sooner.

use std::time::Duration;

use diesel::sql_types::{SmallInt, Text};
use diesel::QueryableByName;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

/// The open segment, for a finishing statement: a scalar subquery that
/// PostgreSQL evaluates once per statement. NULL (the partition pruned row
/// by row) if none is open, which the migration and
/// [`turn_completed_segments`] never leave so.
macro_rules! open_segment {
    () => {
        "(SELECT s.segment FROM jobq.completed_segments s \
          WHERE s.opened_at IS NOT NULL AND s.closed_at IS NULL \
          ORDER BY s.opened_at DESC LIMIT 1)"
    };
}
pub(crate) use open_segment;

/// How long a truncation waits for statements reading its segment (a
/// lookup of `jobq.jobs` reads every partition) before leaving it for the
/// next pass: while it waits, new readers queue behind it.
const LOCK_WAIT: &str = "100ms";

/// Segments per retention: a segment is closed after a quarter of it, so
/// that jobs outlive their retention by at most about a quarter of it.
const SEGMENTS_PER_RETENTION: u32 = 4;

/// What one turn of the ring did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Turned {
    /// Segments truncated: every job in them was past its retention.
    pub truncated: Vec<i16>,
    /// Segments due for truncation that were being read for longer than
    /// the truncation waits; tried again next time.
    pub busy: Vec<i16>,
    /// The segment opened, when the open one was closed.
    pub opened: Option<i16>,
}

#[derive(QueryableByName)]
struct Step {
    #[diesel(sql_type = SmallInt)]
    segment: i16,
    #[diesel(sql_type = Text)]
    action: String,
}

fn interval(d: Duration) -> String {
    format!("{} milliseconds", d.as_millis())
}

/// Turns the ring once, for completed jobs kept for `retention`: truncates
/// the closed segments whose jobs are all past it, then closes the open
/// segment if it has been open for a quarter of it and the next one is
/// empty. One worker at a time (an advisory lock); the others' calls
/// return an empty [`Turned`] at once. One transaction.
///
/// Truncating needs the `TRUNCATE` privilege on the segments; the
/// migration grants it to every role that could delete finished jobs.
pub async fn turn_completed_segments(
    conn: &mut AsyncPgConnection,
    retention: Duration,
) -> diesel::QueryResult<Turned> {
    let steps: Vec<Step> = diesel::sql_query(
        "SELECT segment, action FROM jobq.turn_completed_segments($1::interval, $2::interval, $3)",
    )
    .bind::<Text, _>(interval(retention))
    .bind::<Text, _>(interval(retention / SEGMENTS_PER_RETENTION))
    .bind::<Text, _>(LOCK_WAIT)
    .load(conn)
    .await?;
    let mut turned = Turned::default();
    for step in steps {
        match step.action.as_str() {
            "truncated" => turned.truncated.push(step.segment),
            "busy" => turned.busy.push(step.segment),
            _ => turned.opened = Some(step.segment),
        }
    }
    Ok(turned)
}
