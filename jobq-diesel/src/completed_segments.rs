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
/// A truncation waits up to `lock_wait` for the statements reading its
/// segment to end (any statement that reads `jobq.jobs` without a state
/// reads every partition), and is otherwise reported
/// [`busy`](Turned::busy). New readers queue behind a waiting truncation,
/// so keep the wait short and lengthen it only while truncations keep
/// finding readers (see [`TruncationWait`]). Claims, outcomes, enqueues
/// and heartbeats never read a segment.
///
/// Truncating needs the `TRUNCATE` privilege on the segments; the
/// migration grants it to every role that could delete finished jobs.
pub async fn turn_completed_segments(
    conn: &mut AsyncPgConnection,
    retention: Duration,
    lock_wait: Duration,
) -> diesel::QueryResult<Turned> {
    let steps: Vec<Step> = diesel::sql_query(
        "SELECT segment, action FROM jobq.turn_completed_segments($1::interval, $2::interval, $3)",
    )
    .bind::<Text, _>(interval(retention))
    .bind::<Text, _>(interval(retention / SEGMENTS_PER_RETENTION))
    .bind::<Text, _>(format!("{}ms", lock_wait.as_millis().max(1)))
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

/// How long the next truncation waits for readers of its segment: short
/// at first, so that readers queued behind it hardly notice, and doubled
/// after every pass that found its segment busy, up to a second, so that a
/// reader that never lets go for long (a dashboard polling `jobq.jobs`
/// back to back) cannot hold pruning off for ever. Keep one per process
/// and tell it what each turn did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TruncationWait {
    busy_turns: u32,
}

impl TruncationWait {
    /// The first wait.
    pub const SHORTEST: Duration = Duration::from_millis(50);
    /// The longest wait.
    pub const LONGEST: Duration = Duration::from_secs(1);

    /// A wait that starts at [`TruncationWait::SHORTEST`].
    pub fn new() -> Self {
        TruncationWait { busy_turns: 0 }
    }

    /// The wait for the next turn.
    pub fn next(&self) -> Duration {
        Self::SHORTEST
            .saturating_mul(1 << self.busy_turns.min(16))
            .min(Self::LONGEST)
    }

    /// Records what a turn did: a busy segment doubles the wait, a turn
    /// that truncated without finding one busy starts over.
    pub fn after(&mut self, turned: &Turned) {
        if !turned.busy.is_empty() {
            self.busy_turns = self.busy_turns.saturating_add(1);
        } else if !turned.truncated.is_empty() {
            self.busy_turns = 0;
        }
    }
}

impl Default for TruncationWait {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn busy() -> Turned {
        Turned {
            busy: vec![3],
            ..Turned::default()
        }
    }

    #[test]
    fn the_wait_doubles_while_segments_are_busy_and_starts_over_after_a_truncation() {
        let mut wait = TruncationWait::new();
        assert_eq!(wait.next(), Duration::from_millis(50));
        wait.after(&busy());
        assert_eq!(wait.next(), Duration::from_millis(100));
        wait.after(&Turned::default());
        assert_eq!(
            wait.next(),
            Duration::from_millis(100),
            "nothing to truncate"
        );
        for _ in 0..40 {
            wait.after(&busy());
        }
        assert_eq!(wait.next(), TruncationWait::LONGEST);
        wait.after(&Turned {
            truncated: vec![3],
            ..Turned::default()
        });
        assert_eq!(wait.next(), TruncationWait::SHORTEST);
    }
}
