//! Writing the outcomes of attempts, many at once, fenced by attempt.

use diesel::sql_types::{Array, BigInt, Integer, Text};
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
/// handler returned. Jobs that become pending again wake the workers of
/// their queue.
pub async fn write_outcomes(
    conn: &mut AsyncPgConnection,
    outcomes: &[Outcome],
) -> diesel::QueryResult<Vec<WrittenOutcome>> {
    if outcomes.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<i64> = outcomes.iter().map(|o| o.id).collect();
    let keys: Vec<String> = outcomes
        .iter()
        .map(|o| format!("{}:{}", o.id, o.attempt))
        .collect();
    let plain = outcomes
        .iter()
        .all(|o| o.kind == OutcomeKind::Completed && o.message.is_none());
    if plain {
        // The hot path of a busy worker: nothing to record, nothing to wake.
        return diesel::sql_query(COMPLETE_SQL)
            .bind::<Array<BigInt>, _>(&ids)
            .bind::<Array<Text>, _>(&keys)
            .load(conn)
            .await;
    }
    let details: serde_json::Map<String, serde_json::Value> = outcomes
        .iter()
        .map(|o| {
            let delay_ms = match o.kind {
                OutcomeKind::Retry { delay_ms } => delay_ms,
                _ => 0,
            };
            let detail = serde_json::json!({ "k": o.kind.as_sql(), "m": o.message, "d": delay_ms });
            (o.id.to_string(), detail)
        })
        .collect();
    let details = serde_json::Value::Object(details).to_string();
    diesel::sql_query(OUTCOME_SQL)
        .bind::<Array<BigInt>, _>(&ids)
        .bind::<Array<Text>, _>(&keys)
        .bind::<Text, _>(&details)
        .load(conn)
        .await
}

// Neither statement joins the outcomes as a table: statistics nearly always
// say no job is running, and a planner that believes it will loop over the
// whole batch once per row. Rows are found by primary key (`id = ANY($1)`);
// the attempt fence is a hashed `= ANY` over "id:attempt" keys; per-job
// details are looked up in a JSON object keyed by id.

/// Successful attempts only: `$1` ids, `$2` "id:attempt" keys.
const COMPLETE_SQL: &str = "\
    UPDATE jobq.jobs j SET \
        state = (CASE WHEN j.cancel_requested THEN 'cancelled' ELSE 'completed' END)::jobq.job_state, \
        finished_at = now(), \
        worker_id = NULL \
    WHERE j.id = ANY($1) AND j.state = 'running' \
      AND (j.id::text || ':' || j.attempt::text) = ANY($2::text[]) \
    RETURNING j.id, j.attempt, j.state::text AS state";

/// Any outcomes: `$1` ids, `$2` "id:attempt" keys, `$3` a JSON object of
/// `{"<id>": {"k": kind, "m": message or null, "d": retry delay in ms}}`.
/// A job goes back to pending when it is released, or when it failed with
/// attempts left; the three CASEs spell out that one rule for state, run_at
/// and finished_at (SET sees the old row, so the new state cannot be
/// reused).
const OUTCOME_SQL: &str = "\
    WITH done AS ( \
        UPDATE jobq.jobs j SET \
            state = (CASE \
                WHEN j.cancel_requested THEN 'cancelled' \
                WHEN $3::jsonb -> j.id::text ->> 'k' = 'released' THEN 'pending' \
                WHEN $3::jsonb -> j.id::text ->> 'k' = 'completed' THEN 'completed' \
                WHEN $3::jsonb -> j.id::text ->> 'k' = 'retry' AND j.attempt < j.max_attempts \
                    THEN 'pending' \
                WHEN $3::jsonb -> j.id::text ->> 'k' = 'cancelled' THEN 'cancelled' \
                ELSE 'failed' END)::jobq.job_state, \
            run_at = CASE \
                WHEN j.cancel_requested THEN j.run_at \
                WHEN $3::jsonb -> j.id::text ->> 'k' = 'released' THEN now() \
                WHEN $3::jsonb -> j.id::text ->> 'k' = 'retry' AND j.attempt < j.max_attempts \
                    THEN now() + ($3::jsonb -> j.id::text ->> 'd')::bigint * interval '1 millisecond' \
                ELSE j.run_at END, \
            finished_at = CASE \
                WHEN NOT j.cancel_requested \
                    AND ($3::jsonb -> j.id::text ->> 'k' = 'released' \
                         OR ($3::jsonb -> j.id::text ->> 'k' = 'retry' AND j.attempt < j.max_attempts)) \
                    THEN NULL \
                ELSE now() END, \
            worker_id = NULL, \
            errors = CASE WHEN $3::jsonb -> j.id::text ->> 'm' IS NULL THEN j.errors \
                ELSE j.errors || jsonb_build_array(jsonb_build_object( \
                    'attempt', j.attempt, 'at', now(), \
                    'message', $3::jsonb -> j.id::text ->> 'm')) END \
        WHERE j.id = ANY($1) AND j.state = 'running' \
          AND (j.id::text || ':' || j.attempt::text) = ANY($2::text[]) \
        RETURNING j.id, j.attempt, j.state::text AS state, j.queue, j.run_at \
    ), woken AS ( \
        SELECT count(pg_notify('jobq_jobs', \
            CASE WHEN q.due > now() \
                THEN (extract(epoch FROM q.due) * 1000)::bigint ELSE 0 END \
            || ' ' || q.queue)) AS n \
        FROM (SELECT queue, min(run_at) AS due FROM done WHERE state = 'pending' GROUP BY queue) q \
    ) \
    SELECT d.id, d.attempt, d.state FROM done d CROSS JOIN woken";
