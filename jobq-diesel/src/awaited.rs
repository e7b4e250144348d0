//! Who waits for which job, as the database sees it: the rows of
//! `jobq.awaited` (migration `awaited_jobs`). The finished-jobs trigger
//! announces a job on `jobq_finished` only while a row names it, so a
//! queue nobody waits on sends no notification at all.
//!
//! A waiter registers ids before it looks at their jobs. A job whose
//! outcome statement ran its trigger before the registration committed
//! is not announced; the look-up that follows the registration reports
//! such a job as finished (the outcome committed meanwhile) or as
//! [`WaitedJob::unsettled`] (its row is still marked by a transaction
//! that may be that outcome), and the waiter looks again shortly.

use diesel::sql_types::{Array, BigInt};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::FinishedListener;

/// Ids per registration statement: a reconnection that registers many
/// thousand waits again stays a few statements of bounded size.
const CHUNK: usize = 5_000;

/// Registrations older than this are removed by [`clean_awaited`] even if
/// their backend still runs: a pid reused by another session must not keep
/// a dead waiter's rows forever. A wait that outlives it is resolved by
/// the waiter's poll instead of a notification.
pub const AWAITED_MAX_AGE_HOURS: i64 = 24;

impl FinishedListener {
    /// Records that `waiter` waits for `ids` (already registered ids are
    /// left as they are). Commits before it returns, so any outcome
    /// statement that runs its trigger afterwards announces these ids.
    pub async fn register(&mut self, waiter: i64, ids: &[i64]) -> diesel::QueryResult<()> {
        for chunk in ids.chunks(CHUNK) {
            diesel::sql_query(
                "/* jobq waiter */ INSERT INTO jobq.awaited (job_id, waiter) \
                 SELECT unnest($1::bigint[]), $2 ON CONFLICT DO NOTHING",
            )
            .bind::<Array<BigInt>, _>(chunk)
            .bind::<BigInt, _>(waiter)
            .execute(self.conn())
            .await?;
        }
        Ok(())
    }

    /// Removes `waiter`'s registrations of `ids` (its waits for them
    /// ended).
    pub async fn deregister(&mut self, waiter: i64, ids: &[i64]) -> diesel::QueryResult<()> {
        for chunk in ids.chunks(CHUNK) {
            diesel::sql_query(
                "/* jobq waiter */ DELETE FROM jobq.awaited \
                 WHERE waiter = $2 AND job_id = ANY($1)",
            )
            .bind::<Array<BigInt>, _>(chunk)
            .bind::<BigInt, _>(waiter)
            .execute(self.conn())
            .await?;
        }
        Ok(())
    }

    /// Removes every registration of `waiter` (it reconnected, and
    /// registers what it still waits for again, or it is going away).
    pub async fn deregister_all(&mut self, waiter: i64) -> diesel::QueryResult<()> {
        diesel::sql_query("/* jobq waiter */ DELETE FROM jobq.awaited WHERE waiter = $1")
            .bind::<BigInt, _>(waiter)
            .execute(self.conn())
            .await?;
        Ok(())
    }
}

/// Removes the registrations of waiters whose connection is gone (their
/// backend no longer runs) and those older than
/// [`AWAITED_MAX_AGE_HOURS`]; returns how many. Cheap when the table is
/// empty, which it is wherever nobody waits.
pub async fn clean_awaited(conn: &mut AsyncPgConnection) -> diesel::QueryResult<usize> {
    diesel::sql_query(
        "DELETE FROM jobq.awaited a \
         WHERE a.since < now() - $1 * interval '1 hour' \
            OR NOT EXISTS (SELECT 1 FROM pg_stat_activity s WHERE s.pid = a.pid)",
    )
    .bind::<BigInt, _>(AWAITED_MAX_AGE_HOURS)
    .execute(conn)
    .await
}
