//! Promoting scheduled jobs to pending when they fall due.
//!
//! A job whose `run_at` lies in the future (a delayed enqueue, a retry
//! waiting on its backoff) is `scheduled`, outside the claim's index, so
//! that however many wait, a claim walks only due rows (invariant 8).
//! Workers promote the due ones of their queues in bulk before claiming,
//! when a due time they know of passes and at every poll.

use diesel::deserialize::QueryableByName;
use diesel::sql_types::{Array, BigInt, Bool, Nullable, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::prepared::prepared;

/// What [`promote`] did, and when to call it next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, QueryableByName)]
pub struct Promotion {
    /// Jobs made pending by this call.
    #[diesel(sql_type = BigInt)]
    pub promoted: i64,
    /// Whether some queue filled its batch: more may be due, call again.
    #[diesel(sql_type = Bool)]
    pub more: bool,
    /// Microseconds, by the database's clock, until the next scheduled job
    /// of the queues is due; `None` when none is scheduled. (A duration
    /// rather than a timestamp, so the worker's clock never matters.)
    #[diesel(sql_type = Nullable<BigInt>)]
    pub next_due_in_us: Option<i64>,
}

/// The promotion statement; `$1` queues, `$2` the batch per queue. Public
/// so that tests can `EXPLAIN` the real thing.
///
/// Per queue, the due rows are taken from `jobs_scheduled_idx (queue,
/// run_at) WHERE state = 'scheduled'` in run_at order, skipping rows
/// another worker is promoting, and become pending with their run_at
/// kept, so the claim orders them among the pending ones exactly as if
/// they had always been there. Workers of the queues are woken at commit
/// (selecting from `woken` is what runs its notifications).
#[doc(hidden)]
pub const PROMOTE_SQL: &str = "WITH due AS ( \
             SELECT s.id, s.queue \
             FROM unnest($1::text[]) AS q(name) \
             CROSS JOIN LATERAL ( \
                 SELECT id, queue FROM jobq.jobs \
                 WHERE state = 'scheduled' AND queue = q.name AND run_at <= now() \
                 ORDER BY run_at \
                 LIMIT $2 \
                 FOR UPDATE SKIP LOCKED \
             ) s \
         ), promoted AS ( \
             UPDATE jobq.jobs SET state = 'pending' \
             WHERE id = ANY(ARRAY(SELECT id FROM due)) AND state = 'scheduled' \
             RETURNING queue \
         ), woken AS ( \
             SELECT count(pg_notify('jobq_jobs', '0 ' || queue)) AS n \
             FROM (SELECT DISTINCT queue FROM promoted) p \
         ) \
         SELECT (SELECT count(*) FROM promoted) AS promoted, \
             EXISTS (SELECT 1 FROM due GROUP BY queue HAVING count(*) >= $2) AS more, \
             (SELECT (extract(epoch FROM min(n.run_at) - now()) * 1000000)::bigint \
              FROM unnest($1::text[]) AS q(name) \
              CROSS JOIN LATERAL ( \
                  SELECT run_at FROM jobq.jobs \
                  WHERE state = 'scheduled' AND queue = q.name AND run_at > now() \
                  ORDER BY run_at LIMIT 1 \
              ) n) AS next_due_in_us \
         FROM woken";

/// Makes up to `batch` due scheduled jobs of each of `queues` pending, in
/// one short statement, and tells when the next one of them is due.
pub async fn promote(
    conn: &mut AsyncPgConnection,
    queues: &[String],
    batch: i64,
) -> diesel::QueryResult<Promotion> {
    let query = diesel::sql_query(PROMOTE_SQL)
        .bind::<Array<Text>, _>(queues)
        .bind::<BigInt, _>(batch);
    // Kept prepared: it runs at each due time and each poll of every
    // worker, and is cheap to execute next to its planning.
    prepared(query).get_result(conn).await
}
