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
/// run_at, priority DESC, id) WHERE state = 'scheduled'` in that order,
/// skipping rows another worker is promoting, and become pending with
/// their run_at kept, so the claim orders them among the pending ones
/// exactly as if they had always been there. Jobs due at the same instant
/// come in claim order (priority, then enqueue order), batch after batch:
/// the backlog of a block comes back due all at once (see below), and a
/// claim between two batches must not see a later job of a key pending
/// while an earlier one still waits. Workers of the queues are woken at
/// commit (selecting from `woken` is what runs its notifications).
///
/// Blocks (`jobq.blocks`): a due job of a task or key that is blocked now
/// does not become pending; its run_at moves to the block's end and it
/// stays scheduled (a block extended after its jobs were parked, a retry
/// or snooze of a blocked key falling due). So no pending job of a
/// blocked key is left for claims to walk past, and the key's jobs come
/// back together, in order, when the block ends. The probe is one
/// primary-key lookup per due job, and only while some block exists (an
/// uncorrelated check, run once per statement).
#[doc(hidden)]
pub const PROMOTE_SQL: &str = "WITH due AS ( \
             SELECT s.id, s.queue \
             FROM unnest($1::text[]) AS q(name) \
             CROSS JOIN LATERAL ( \
                 SELECT id, queue FROM jobq.jobs \
                 WHERE state = 'scheduled' AND queue = q.name AND run_at <= now() \
                 ORDER BY run_at, priority DESC, id \
                 LIMIT $2 \
                 FOR UPDATE SKIP LOCKED \
             ) s \
         ), moved AS ( \
             UPDATE jobq.jobs j SET \
                 state = CASE WHEN (SELECT EXISTS (SELECT 1 FROM jobq.blocks WHERE until > now())) \
                     AND EXISTS (SELECT 1 FROM jobq.blocks b WHERE b.task = j.task \
                         AND b.key IN ('', coalesce(j.key, '')) AND b.until > now()) \
                     THEN 'scheduled' ELSE 'pending' END::jobq.job_state, \
                 run_at = CASE WHEN (SELECT EXISTS (SELECT 1 FROM jobq.blocks WHERE until > now())) \
                     THEN coalesce((SELECT max(b.until) FROM jobq.blocks b WHERE b.task = j.task \
                         AND b.key IN ('', coalesce(j.key, '')) AND b.until > now()), j.run_at) \
                     ELSE j.run_at END \
             WHERE id = ANY(ARRAY(SELECT id FROM due)) AND state = 'scheduled' \
             RETURNING queue, state, run_at \
         ), promoted AS ( \
             SELECT queue FROM moved WHERE state = 'pending' \
         ), woken AS ( \
             SELECT count(pg_notify('jobq_jobs', '0 ' || queue)) AS n \
             FROM (SELECT DISTINCT queue FROM promoted) p \
         ) \
         SELECT (SELECT count(*) FROM promoted) AS promoted, \
             EXISTS (SELECT 1 FROM due GROUP BY queue HAVING count(*) >= $2) AS more, \
             (SELECT (extract(epoch FROM least( \
                  min(n.run_at), (SELECT min(run_at) FROM moved WHERE state = 'scheduled')) \
                  - now()) * 1000000)::bigint \
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
