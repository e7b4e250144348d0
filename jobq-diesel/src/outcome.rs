//! Writing the outcomes of attempts, many at once, fenced by attempt.

use diesel::sql_types::{Array, BigInt, Integer, Nullable, Text};
use diesel::QueryableByName;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

/// How an attempt ended, as far as the job row is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutcomeKind {
    /// The handler succeeded.
    Completed,
    /// The attempt failed; retry after `delay_ms` if attempts remain,
    /// otherwise fail.
    Retry {
        /// Backoff before the next attempt.
        delay_ms: i64,
    },
    /// The attempt failed and must not be retried.
    Failed,
    /// The worker gives the job back untried (shutdown): pending again,
    /// due now.
    Released,
    /// The job was cancelled while running.
    Cancelled,
}

impl OutcomeKind {
    fn as_sql(self) -> &'static str {
        match self {
            OutcomeKind::Completed => "completed",
            OutcomeKind::Retry { .. } => "retry",
            OutcomeKind::Failed => "failed",
            OutcomeKind::Released => "released",
            OutcomeKind::Cancelled => "cancelled",
        }
    }
}

/// The outcome of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Job id.
    pub id: i64,
    /// The attempt this outcome belongs to; a job claimed again since then
    /// is left alone.
    pub attempt: i32,
    /// What happened.
    pub kind: OutcomeKind,
    /// Appended to the job's error history when set.
    pub message: Option<String>,
}

/// An outcome that reached its job row, with the state it left it in.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct WrittenOutcome {
    /// Job id.
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    /// The attempt it belonged to.
    #[diesel(sql_type = Integer)]
    pub attempt: i32,
    /// The job's state afterwards: pending, completed, failed or cancelled.
    #[diesel(sql_type = Text)]
    pub state: String,
}

/// Writes a batch of outcomes in one statement. Only rows still `running`
/// with the same attempt change (the fence of invariant 2); outcomes that
/// lost their job to a rescue are absent from the result.
///
/// A job whose cancellation was requested ends `cancelled` whatever its
/// handler returned. Jobs that
/// become pending again wake the workers of their queue.
pub async fn write_outcomes(
    conn: &mut AsyncPgConnection,
    outcomes: &[Outcome],
) -> diesel::QueryResult<Vec<WrittenOutcome>> {
    if outcomes.is_empty() {
        return Ok(Vec::new());
    }
    let mut ids = Vec::with_capacity(outcomes.len());
    let mut attempts = Vec::with_capacity(outcomes.len());
    let mut kinds = Vec::with_capacity(outcomes.len());
    let mut messages = Vec::with_capacity(outcomes.len());
    let mut delays = Vec::with_capacity(outcomes.len());
    for o in outcomes {
        ids.push(o.id);
        attempts.push(o.attempt);
        kinds.push(o.kind.as_sql());
        messages.push(o.message.as_deref());
        delays.push(match o.kind {
            OutcomeKind::Retry { delay_ms } => delay_ms,
            _ => 0,
        });
    }
    diesel::sql_query(
        "WITH o AS ( \
             SELECT o.id, o.attempt, o.kind, o.message, o.delay_ms, \
                 CASE \
                     WHEN j.cancel_requested THEN 'cancelled' \
                     WHEN o.kind = 'released' THEN 'pending' \
                     WHEN o.kind = 'completed' THEN 'completed' \
                     WHEN o.kind = 'retry' AND j.attempt < j.max_attempts THEN 'pending' \
                     WHEN o.kind = 'cancelled' THEN 'cancelled' \
                     ELSE 'failed' \
                 END AS new_state \
             FROM unnest($1::bigint[], $2::int[], $3::text[], $4::text[], $5::bigint[]) \
                 AS o(id, attempt, kind, message, delay_ms) \
             JOIN jobq.jobs j ON j.id = o.id \
         ), done AS ( \
             UPDATE jobq.jobs j SET \
                 state = o.new_state::jobq.job_state, \
                 run_at = CASE \
                     WHEN o.kind = 'retry' AND o.new_state = 'pending' \
                         THEN now() + o.delay_ms * interval '1 millisecond' \
                     WHEN o.kind = 'released' THEN now() \
                     ELSE j.run_at END, \
                 finished_at = CASE WHEN o.new_state = 'pending' THEN NULL ELSE now() END, \
                 worker_id = NULL, \
                 errors = CASE WHEN o.message IS NULL THEN j.errors \
                     ELSE j.errors || jsonb_build_array(jsonb_build_object( \
                         'attempt', j.attempt, 'at', now(), 'message', o.message)) END \
             FROM o \
             WHERE j.id = o.id AND j.attempt = o.attempt AND j.state = 'running' \
             RETURNING j.id, j.attempt, j.state::text AS state, j.queue, j.run_at \
         ), woken AS ( \
             SELECT count(pg_notify('jobq_jobs', \
                 CASE WHEN q.due > now() \
                     THEN (extract(epoch FROM q.due) * 1000)::bigint ELSE 0 END \
                 || ' ' || q.queue)) AS n \
             FROM (SELECT queue, min(run_at) AS due FROM done WHERE state = 'pending' GROUP BY queue) q \
         ) \
         SELECT d.id, d.attempt, d.state FROM done d LEFT JOIN (SELECT sum(n) FROM woken) w ON true",
    )
    .bind::<Array<BigInt>, _>(&ids)
    .bind::<Array<Integer>, _>(&attempts)
    .bind::<Array<Text>, _>(&kinds)
    .bind::<Array<Nullable<Text>>, _>(&messages)
    .bind::<Array<BigInt>, _>(&delays)
    .load(conn)
    .await
}
