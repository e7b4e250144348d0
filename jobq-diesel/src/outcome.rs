//! Writing the outcomes of attempts, many at once, fenced by attempt.

use std::collections::{HashMap, HashSet};

use diesel::sql_types::{Array, BigInt, Integer, Text};
use diesel::{OptionalExtension, QueryableByName};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

/// How an attempt ended, as far as the job row is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutcomeKind {
    /// The handler succeeded.
    Completed,
    /// The attempt failed; retry after `delay_ms` if attempts remain
    /// (the job waits as `scheduled` meanwhile, or is `pending` at once
    /// for no delay), otherwise fail.
    Retry {
        /// Backoff before the next attempt.
        delay_ms: i64,
    },
    /// The attempt failed and must not be retried.
    Failed,
    /// The worker gives the job back untried (shutdown): pending again,
    /// due now, without using up an attempt (a hand-back is counted
    /// instead; see `handbacks` in the schema).
    Released,
    /// The job was cancelled while running.
    Cancelled,
    /// The handler asked to run the job again after `delay_ms`
    /// (`TaskError::retry_after`, `Context::snooze`): it waits until then
    /// without using up an attempt (counted with the hand-backs, see
    /// `handbacks` in the schema).
    Snoozed {
        /// How long the job waits.
        delay_ms: i64,
    },
    /// Like [`OutcomeKind::Snoozed`], and no job of the same task (or of
    /// the job's partition key, when it has one) starts anywhere until
    /// then: the outcome writes a block that every claim honours
    /// (`TaskError::rate_limited`).
    RateLimited {
        /// How long the job, and its task or key, wait.
        delay_ms: i64,
    },
}

impl OutcomeKind {
    fn as_sql(self) -> &'static str {
        match self {
            OutcomeKind::Completed => "completed",
            OutcomeKind::Retry { .. } => "retry",
            OutcomeKind::Failed => "failed",
            OutcomeKind::Released => "released",
            OutcomeKind::Cancelled => "cancelled",
            OutcomeKind::Snoozed { .. } => "snoozed",
            OutcomeKind::RateLimited { .. } => "rate_limited",
        }
    }

    /// How long the job waits before it is due again, for the kinds that
    /// put it back with a delay.
    pub fn delay_ms(self) -> Option<i64> {
        match self {
            OutcomeKind::Retry { delay_ms }
            | OutcomeKind::Snoozed { delay_ms }
            | OutcomeKind::RateLimited { delay_ms } => Some(delay_ms),
            _ => None,
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
    /// What the task fn returned, as JSON text, stored with a completed
    /// job. Valid JSON without U+0000 (checked by the caller); `None` for
    /// tasks that return `()`, which keeps their batches on the cheap path.
    pub output: Option<String>,
}

/// An outcome the attempt fence turned away: its job was rescued (and
/// maybe claimed again) while the attempt ran, so the outcome changed
/// nothing (invariant 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, QueryableByName)]
pub struct RejectedOutcome {
    /// Job id.
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    /// The attempt the outcome belonged to.
    #[diesel(sql_type = Integer)]
    pub attempt: i32,
}

/// Writes a batch of outcomes in one statement. Only rows still `running`
/// with the same attempt change (the fence of invariant 2); the outcomes
/// that lost their job to a rescue are returned, so a successful write of
/// a healthy batch returns nothing (no row per job crosses the wire). An
/// outcome whose attempt already ended its job, completed in the handler's
/// own transaction ([`complete_in_transaction`]), is neither written nor
/// returned. Finding the outcomes turned away takes a second, read-only
/// statement, run only when fewer rows changed than outcomes were sent.
///
/// A job whose cancellation was requested ends `cancelled` whatever its
/// handler returned. Jobs that become pending again wake the workers of
/// their queue.
///
/// `settled_claims` are the claims (see [`crate::ClaimedJob::claim`]) whose
/// last outcome is in this batch: their rows go in the same statement, so
/// that a claim's row lasts exactly as long as one of its jobs may still be
/// running under the worker.
pub async fn write_outcomes(
    conn: &mut AsyncPgConnection,
    outcomes: &[Outcome],
    settled_claims: &[i64],
) -> diesel::QueryResult<Vec<RejectedOutcome>> {
    if outcomes.is_empty() {
        if !settled_claims.is_empty() {
            diesel::sql_query("DELETE FROM jobq.claims WHERE id = ANY($1)")
                .bind::<Array<BigInt>, _>(settled_claims)
                .execute(conn)
                .await?;
        }
        return Ok(Vec::new());
    }
    let ids: Vec<i64> = outcomes.iter().map(|o| o.id).collect();
    let plain = outcomes
        .iter()
        .all(|o| o.kind == OutcomeKind::Completed && o.message.is_none() && o.output.is_none());
    if plain {
        // The hot path of a busy worker: nothing to record, nothing to wake,
        // and as a rule nothing rejected, which the row count tells.
        let written = match packed_keys(outcomes) {
            Some(packed) => {
                diesel::sql_query(COMPLETE_PACKED_SQL)
                    .bind::<Array<BigInt>, _>(&ids)
                    .bind::<Array<BigInt>, _>(&packed)
                    .bind::<Array<BigInt>, _>(settled_claims)
                    .execute(conn)
                    .await?
            }
            None => {
                let keys: Vec<String> = outcomes.iter().map(fence_key).collect();
                diesel::sql_query(COMPLETE_SQL)
                    .bind::<Array<BigInt>, _>(&ids)
                    .bind::<Array<Text>, _>(&keys)
                    .bind::<Array<BigInt>, _>(settled_claims)
                    .execute(conn)
                    .await?
            }
        };
        if written == outcomes.len() {
            return Ok(Vec::new());
        }
        // Some attempt lost its job to a rescue. Which one shows in the
        // rows now: a written outcome left its attempt ended as completed
        // or cancelled; a rejected one finds another attempt, or its own
        // back in the queue or failed by the rescue.
        let attempts: Vec<i32> = outcomes.iter().map(|o| o.attempt).collect();
        return not_ended(conn, &ids, &attempts).await;
    }
    let keys: Vec<String> = outcomes.iter().map(fence_key).collect();
    let details = details(outcomes, &keys);
    let written: Vec<Written> = diesel::sql_query(OUTCOME_SQL)
        .bind::<Array<BigInt>, _>(&ids)
        .bind::<Array<Text>, _>(&keys)
        .bind::<Text, _>(&details)
        .bind::<Array<BigInt>, _>(settled_claims)
        .load(conn)
        .await?;
    if written.len() == outcomes.len() {
        return Ok(Vec::new());
    }
    let written: HashSet<(i64, i32)> = written.iter().map(|w| (w.id, w.attempt)).collect();
    let (ids, attempts): (Vec<i64>, Vec<i32>) = outcomes
        .iter()
        .filter(|o| !written.contains(&(o.id, o.attempt)))
        .map(|o| (o.id, o.attempt))
        .unzip();
    // An outcome whose attempt already ended its job (the handler completed
    // it in its own transaction) was not turned away: there was nothing
    // left to write.
    not_ended(conn, &ids, &attempts).await
}

/// Of the attempts `ids`/`attempts`, the ones whose job does not show them
/// ended as completed or cancelled.
async fn not_ended(
    conn: &mut AsyncPgConnection,
    ids: &[i64],
    attempts: &[i32],
) -> diesel::QueryResult<Vec<RejectedOutcome>> {
    diesel::sql_query(NOT_ENDED_SQL)
        .bind::<Array<BigInt>, _>(ids)
        .bind::<Array<Integer>, _>(attempts)
        .load(conn)
        .await
}

/// The per-attempt details of [`OUTCOME_SQL`]'s `$3`, keyed by attempt,
/// not by job: a batch may hold a rescued attempt's late outcome next to
/// the live attempt's of the same job.
fn details(outcomes: &[Outcome], keys: &[String]) -> String {
    let details: serde_json::Map<String, serde_json::Value> = outcomes
        .iter()
        .zip(keys)
        .map(|(o, key)| {
            let delay_ms = o.kind.delay_ms().unwrap_or(0);
            let mut detail =
                serde_json::json!({ "k": o.kind.as_sql(), "m": o.message, "d": delay_ms });
            // Left out when absent, so that the row's output stays SQL NULL
            // (an output may itself be JSON null). Text that is not JSON
            // would be a bug of the caller's; it is stored as a string
            // rather than fail the whole batch.
            if let Some(output) = &o.output {
                let value = serde_json::from_str(output)
                    .unwrap_or_else(|_| serde_json::Value::String(output.clone()));
                detail["o"] = value;
            }
            (key.clone(), detail)
        })
        .collect();
    serde_json::Value::Object(details).to_string()
}

/// What [`write_outcomes_around_locks`] did not write.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NotWritten {
    /// Outcomes the attempt fence turned away (their job was rescued).
    pub rejected: Vec<RejectedOutcome>,
    /// Outcomes whose job row another transaction holds locked: still
    /// running in their attempt, to be written later.
    pub locked: Vec<RejectedOutcome>,
}

/// The row lock of [`OUTCOME_SQL`], and the same lock skipping rows other
/// transactions hold locked.
const ROW_LOCK: &str = "FOR UPDATE OF j";
const ROW_LOCK_SKIPPING_LOCKED: &str = "FOR UPDATE OF j SKIP LOCKED";

/// Writes outcomes like [`write_outcomes`], but never waits for a row lock
/// (an application transaction that locked a job row, a long `jobq::cancel`
/// in a transaction): the outcomes of locked rows are returned as
/// [`NotWritten::locked`] instead, so that one held row delays only its own
/// outcome. Slower than `write_outcomes` (every row is looked up twice),
/// so it is the path of batches that already failed, not the hot one.
/// Settles no claim.
pub async fn write_outcomes_around_locks(
    conn: &mut AsyncPgConnection,
    outcomes: &[Outcome],
) -> diesel::QueryResult<NotWritten> {
    if outcomes.is_empty() {
        return Ok(NotWritten::default());
    }
    let ids: Vec<i64> = outcomes.iter().map(|o| o.id).collect();
    let keys: Vec<String> = outcomes.iter().map(fence_key).collect();
    let details = details(outcomes, &keys);
    let sql = OUTCOME_SQL.replace(ROW_LOCK, ROW_LOCK_SKIPPING_LOCKED);
    let written: Vec<Written> = diesel::sql_query(sql)
        .bind::<Array<BigInt>, _>(&ids)
        .bind::<Array<Text>, _>(&keys)
        .bind::<Text, _>(&details)
        .bind::<Array<BigInt>, _>(&[] as &[i64])
        .load(conn)
        .await?;
    if written.len() == outcomes.len() {
        return Ok(NotWritten::default());
    }
    let written: HashSet<(i64, i32)> = written.iter().map(|w| (w.id, w.attempt)).collect();
    let left: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| !written.contains(&(o.id, o.attempt)))
        .collect();
    // Still running in their attempt: skipped for a lock. Ended by their
    // own attempt (the handler completed its job in its own transaction):
    // nothing left to write. Anything else lost its job to a rescue. (A
    // plain read never waits for row locks.)
    let left_ids: Vec<i64> = left.iter().map(|o| o.id).collect();
    let seen: Vec<AttemptState> = diesel::sql_query(
        "SELECT id, attempt, state::text AS state FROM jobq.jobs \
         WHERE id = ANY($1) AND state IN ('running', 'completed', 'cancelled')",
    )
    .bind::<Array<BigInt>, _>(&left_ids)
    .load(conn)
    .await?;
    let seen: HashMap<(i64, i32), String> = seen
        .into_iter()
        .map(|s| ((s.id, s.attempt), s.state))
        .collect();
    let mut not_written = NotWritten::default();
    for o in left {
        let r = RejectedOutcome {
            id: o.id,
            attempt: o.attempt,
        };
        match seen.get(&(o.id, o.attempt)).map(String::as_str) {
            Some("running") => not_written.locked.push(r),
            Some(_) => {}
            None => not_written.rejected.push(r),
        }
    }
    Ok(not_written)
}

/// What [`complete_in_transaction`] did to its job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompletedIn {
    /// The job is completed, as far as the caller's transaction goes.
    Completed,
    /// The job's cancellation had been requested: it is marked cancelled
    /// instead, as a successful attempt's would be.
    Cancelled,
    /// The attempt is no longer the job's live one (it was rescued, or
    /// has ended already): nothing changed.
    NotLive,
}

#[derive(QueryableByName)]
struct Ended {
    #[diesel(sql_type = diesel::sql_types::Bool)]
    completed: bool,
}

/// Marks attempt `attempt` of job `id` successful on `conn`, normally inside
/// the caller's own transaction, which then commits or rolls back the job's
/// completion together with its own writes. Fenced like the completer's
/// statements: only a row still `running` with that attempt changes.
/// `output` is JSON text without U+0000 (checked by the caller), `None`
/// for none. The claim's row is left to the worker, which settles it when
/// the handler returns.
pub async fn complete_in_transaction(
    conn: &mut AsyncPgConnection,
    id: i64,
    attempt: i32,
    output: Option<&str>,
) -> diesel::QueryResult<CompletedIn> {
    let row: Option<Ended> = diesel::sql_query(COMPLETE_IN_SQL)
        .bind::<BigInt, _>(id)
        .bind::<Integer, _>(attempt)
        .bind::<diesel::sql_types::Nullable<Text>, _>(output)
        .get_result(conn)
        .await
        .optional()?;
    Ok(match row {
        None => CompletedIn::NotLive,
        Some(Ended { completed: true }) => CompletedIn::Completed,
        Some(Ended { completed: false }) => CompletedIn::Cancelled,
    })
}

/// Whether attempt `attempt` of job `id` ended its job as completed (read
/// without waiting for row locks).
pub async fn attempt_completed(
    conn: &mut AsyncPgConnection,
    id: i64,
    attempt: i32,
) -> diesel::QueryResult<bool> {
    let row: Option<Ended> = diesel::sql_query(
        "SELECT true AS completed FROM jobq.jobs \
         WHERE id = $1 AND attempt = $2 AND state = 'completed'",
    )
    .bind::<BigInt, _>(id)
    .bind::<Integer, _>(attempt)
    .get_result(conn)
    .await
    .optional()?;
    Ok(row.is_some())
}

/// A row [`OUTCOME_SQL`] changed.
#[derive(QueryableByName)]
struct Written {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Integer)]
    attempt: i32,
}

/// A job's attempt and state, as [`write_outcomes_around_locks`] reads it
/// back.
#[derive(QueryableByName)]
struct AttemptState {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Integer)]
    attempt: i32,
    #[diesel(sql_type = Text)]
    state: String,
}

/// Bits of a packed fence key that hold the attempt.
const ATTEMPT_BITS: u32 = 20;

/// The attempt fence's keys as `id * 2^20 + attempt`, when every outcome
/// fits (ids below 2^43, attempts below 2^20: any real table): one integer
/// per outcome, hashed and compared as such, instead of a string built on
/// both sides. `None` sends the batch down the string-keyed statement.
fn packed_keys(outcomes: &[Outcome]) -> Option<Vec<i64>> {
    outcomes
        .iter()
        .map(|o| {
            let fits = (0..1i64 << (63 - ATTEMPT_BITS)).contains(&o.id)
                && (0..1i32 << ATTEMPT_BITS).contains(&o.attempt);
            fits.then(|| (o.id << ATTEMPT_BITS) | i64::from(o.attempt))
        })
        .collect()
}

/// The attempt fence's key of an outcome, "id:attempt", as the statements
/// below build it from a row.
fn fence_key(o: &Outcome) -> String {
    format!("{}:{}", o.id, o.attempt)
}

// No statement that writes joins the outcomes as a table: statistics nearly
// always say no job is running, and a planner that believes it will loop
// over the whole batch once per row. Rows are found by primary key
// (`id = ANY($1)`); the attempt fence is a hashed `= ANY` over packed or
// "id:attempt" keys; per-attempt details are looked up in a JSON object
// keyed "id:attempt". (The read after a rejection, rare, looks its rows up
// by primary key one outcome at a time.)
//
// These statements are deliberately not kept prepared. PostgreSQL 15 hashes
// an `= ANY` array only when the array is a constant, as it is in the plan
// of an unnamed statement; in a cached generic plan the array is a
// parameter and the fence becomes a linear search per row (measured: the
// scan of 1,000 outcomes went from 1.0 to 2.5 ms, about 1.5 µs per job,
// more than the 0.5 ms of planning it would save).

/// Every column of a job row, in table order: what a statement that
/// finishes jobs copies from the active partition into the finished one.
macro_rules! job_columns {
    () => {
        "id, task, queue, payload, state, priority, attempt, max_attempts, run_at, \
         created_at, started_at, finished_at, worker_id, cancel_requested, dedupe_key, \
         errors, handbacks, key, headers, limited, output, unique_key, unique_gen, \
         unique_until, follow_up, completed_segment"
    };
}

/// The columns the finishing statements copy (see `job_columns!`). A test
/// compares them with the table, so that a column added later cannot be
/// dropped on the way.
#[doc(hidden)]
pub const JOB_COLUMNS: &str = job_columns!();

/// The state a successful attempt leaves the job of row `$r` in: completed,
/// or cancelled when that was requested. Shared by the completer's
/// statements and [`COMPLETE_IN_SQL`], so that a job completed in its
/// handler's transaction is the same row as one the worker completed.
macro_rules! succeeded_state {
    ($r:literal) => {
        concat!(
            "(CASE WHEN ",
            $r,
            ".cancel_requested THEN 'cancelled' ELSE 'completed' END)::jobq.job_state"
        )
    };
}

/// The rows `ended`, deleted from the active partition (RETURNING every
/// column), inserted into the finished partition with the state `$state`,
/// the errors `$errors` and the output `$output` (SQL over the alias `e`),
/// finished now and by no worker. A completed job that holds no unique key
/// goes to the open segment of completed jobs (see
/// `crate::completed_segments`), any other to the partition pruned row by
/// row. Jobs finish this way rather than by an
/// UPDATE that moves them between partitions: a claim that read a job as
/// pending and reaches it after another worker claimed and finished it
/// skips a deleted row, while a moved one fails the whole claim with a
/// serialization error (see `crate::moved_row`).
macro_rules! insert_finished {
    (state: $state:expr, errors: $errors:expr, output: $output:expr) => {
        concat!(
            "INSERT INTO jobq.jobs_finished (",
            job_columns!(),
            ") SELECT e.id, e.task, e.queue, e.payload, ",
            $state,
            ", e.priority, e.attempt, e.max_attempts, e.run_at, e.created_at, e.started_at, \
             now(), NULL, e.cancel_requested, e.dedupe_key, ",
            $errors,
            ", e.handbacks, e.key, e.headers, e.limited, ",
            $output,
            ", e.unique_key, e.unique_gen, e.unique_until, e.follow_up, CASE WHEN (",
            $state,
            ") = 'completed' AND e.unique_until IS NULL THEN ",
            crate::completed_segments::open_segment!(),
            " END FROM ended e"
        )
    };
}

/// Marks successful attempts done, `$1` their ids, behind the attempt
/// fence `$fence` (on the keys in `$2`), and removes the settled claims
/// `$3`. No RETURNING: the insert's row count tells whether every outcome
/// was written, where returning or counting rows in the statement would
/// cost the server more per job.
macro_rules! complete_sql {
    ($fence:literal) => {
        concat!(
            "WITH settled AS (DELETE FROM jobq.claims WHERE id = ANY($3)), \
             ended AS (DELETE FROM jobq.jobs_active j \
                WHERE j.id = ANY($1) AND j.state = 'running' AND ",
            $fence,
            " RETURNING j.*) ",
            insert_finished!(state: succeeded_state!("e"), errors: "e.errors", output: "e.output")
        )
    };
}

/// Of the attempts `$1`/`$2` (ids, attempts) whose outcomes did not all
/// change their rows, the ones whose job does not show that attempt ended
/// as completed or cancelled: the outcomes the fence turned away. (An
/// attempt that ended its job itself, in its handler's transaction, left
/// its outcome nothing to write.)
const NOT_ENDED_SQL: &str = "\
    SELECT o.id, o.attempt FROM unnest($1::bigint[], $2::int[]) AS o(id, attempt) \
    WHERE NOT EXISTS ( \
        SELECT 1 FROM jobq.jobs j \
        WHERE j.id = o.id AND j.attempt = o.attempt AND j.state IN ('completed', 'cancelled'))";

/// Successful attempts, fenced on "id:attempt" keys.
const COMPLETE_SQL: &str =
    complete_sql!("(j.id::text || ':' || j.attempt::text) = ANY($2::text[])");

/// Successful attempts, fenced on packed keys (see [`packed_keys`]). The
/// CASE keeps rows outside the packable range, which no packed key can
/// match, from overflowing the arithmetic.
const COMPLETE_PACKED_SQL: &str = complete_sql!(
    "(CASE WHEN j.id >= 0 AND j.id < 8796093022208 AND j.attempt >= 0 AND j.attempt < 1048576 \
          THEN j.id * 1048576 + j.attempt END) = ANY($2::bigint[])"
);

/// One successful attempt, `$1`/`$2` (id, attempt), in the caller's
/// transaction, with its output `$3` (JSON text or NULL): the completer's
/// fence and resulting row, one job. Returns whether the job ended
/// completed (or cancelled, when that was requested); no row when the
/// attempt is no longer the live one. An UPDATE that moves the row, unlike
/// the worker's statements: it runs with the application's rights, which
/// the documented grant keeps to updating a few columns of `jobq.jobs`,
/// and one job per handler makes a claim's rerun on the moved row rare.
const COMPLETE_IN_SQL: &str = concat!(
    "UPDATE jobq.jobs j SET state = ",
    succeeded_state!("j"),
    ", finished_at = now(), worker_id = NULL, \
     output = CASE WHEN j.cancel_requested THEN j.output ELSE $3::jsonb END \
     WHERE j.id = $1 AND j.attempt = $2 AND j.state = 'running' \
     RETURNING j.state = 'completed' AS completed"
);

/// The outcome sent for the attempt of row `$r`: its object in
/// [`OUTCOME_SQL`]'s `$3`.
macro_rules! sent {
    ($r:literal) => {
        concat!(
            "($3::jsonb -> (",
            $r,
            ".id::text || ':' || ",
            $r,
            ".attempt::text))"
        )
    };
}

/// The state the outcome sent for row `$r` leaves its job in. A job goes
/// back to pending when it is released, or when it failed with attempts
/// left; a snoozed or rate-limited job, or a retry with a backoff, waits
/// as `scheduled` (outside the claim's index) until promotion makes it
/// pending when due. Attempts left count without hand-backs
/// (`attempt - handbacks`). A job whose cancellation was requested ends
/// cancelled whatever its handler returned.
macro_rules! next_state {
    ($r:literal) => {
        concat!(
            "(CASE WHEN ",
            $r,
            ".cancel_requested THEN 'cancelled' \
                WHEN ",
            sent!($r),
            " ->> 'k' = 'released' THEN 'pending' \
                WHEN ",
            sent!($r),
            " ->> 'k' IN ('snoozed', 'rate_limited') \
                    THEN CASE WHEN (",
            sent!($r),
            " ->> 'd')::bigint > 0 THEN 'scheduled' ELSE 'pending' END \
                WHEN ",
            sent!($r),
            " ->> 'k' = 'completed' THEN 'completed' \
                WHEN ",
            sent!($r),
            " ->> 'k' = 'retry' AND ",
            $r,
            ".attempt - ",
            $r,
            ".handbacks < ",
            $r,
            ".max_attempts \
                    THEN CASE WHEN (",
            sent!($r),
            " ->> 'd')::bigint > 0 THEN 'scheduled' ELSE 'pending' END \
                WHEN ",
            sent!($r),
            " ->> 'k' = 'cancelled' THEN 'cancelled' \
                ELSE 'failed' END)::jobq.job_state"
        )
    };
}

/// The errors of row `$r` with the message sent for its attempt, if any,
/// appended (numbered by the attempts used, `attempt - handbacks`).
macro_rules! errors_with_message {
    ($r:literal) => {
        concat!(
            "CASE WHEN ",
            sent!($r),
            " ->> 'm' IS NULL THEN ",
            $r,
            ".errors \
                ELSE ",
            $r,
            ".errors || jsonb_build_array(jsonb_build_object( \
                    'attempt', ",
            $r,
            ".attempt - ",
            $r,
            ".handbacks, 'at', now(), \
                    'message', ",
            sent!($r),
            " ->> 'm')) END"
        )
    };
}

/// Any outcomes: `$1` ids, `$2` "id:attempt" keys, `$3` a JSON object of
/// `{"<id>:<attempt>": {"k": kind, "m": message or null, "d": retry delay
/// in ms, "o": the output, if any}}` (the output is stored only when the
/// job ends completed), `$4` the settled claims to remove.
///
/// `live` locks the rows still running in the attempt of their outcome
/// and decides each one's next state (see [`next_state!`]) on the row as
/// locked, so that a cancellation committed meanwhile is seen. The jobs
/// that end are deleted from the active partition and inserted into the
/// finished one (`ended`, `finished`; see [`insert_finished!`]); the others
/// are updated where they are (`requeued`). Both recompute the next state
/// on their row, the version `live` locked, so they agree with it.
///
/// A snoozed or rate-limited job waits `d` without using an attempt: it
/// counts a hand-back, so `attempt` keeps growing (every claim is fenced by
/// its own number) while `attempt - handbacks`, the attempts used, does
/// not; a release counts a hand-back too. A rate-limited outcome also
/// writes the block of its task (or its key) in `jobq.blocks`, never
/// shortening one already there, and moves the pending jobs of that task
/// (or key) out of the claim path until the block ends (`parked`:
/// `scheduled`, with `run_at` raised to the block's end, so promotion
/// brings them back then; see [`crate::PROMOTE_SQL`] for their order).
/// Without that every claim of the task walked past them (invariant 8).
/// Rows another statement holds locked are skipped, never waited for: a
/// claim holding one takes it anyway (as before parking existed), and any
/// other stays pending behind the claims' block filter. At most the first
/// 100,000 pending jobs of each blocked task or key (in the order claims
/// would take them) are moved, so that one rate-limited outcome holds its
/// batch for a bounded time (moving costs some 26 µs a job); a longer
/// backlog's rest stays pending and is passed over by claims, as before.
///
/// Returns the outcomes written (this path is the uncommon one); joining
/// `woken` makes its notifications happen, and only when something was
/// written: one per queue and state, so that a batch with jobs due now and
/// retries due later wakes workers for both.
const OUTCOME_SQL: &str = concat!(
    "WITH settled AS (DELETE FROM jobq.claims WHERE id = ANY($4)), \
     live AS ( \
        SELECT j.id, ",
    next_state!("j"),
    " AS next FROM jobq.jobs_active j \
        WHERE j.id = ANY($1) AND j.state = 'running' \
          AND (j.id::text || ':' || j.attempt::text) = ANY($2::text[]) \
        FOR UPDATE OF j \
    ), ended AS ( \
        DELETE FROM jobq.jobs_active j \
        WHERE j.id = ANY(ARRAY(SELECT id FROM live WHERE next IN ('completed', 'failed', 'cancelled'))) \
        RETURNING j.* \
    ), finished AS (",
    insert_finished!(
        state: next_state!("e"),
        errors: errors_with_message!("e"),
        output: concat!(
            "CASE WHEN NOT e.cancel_requested AND ",
            sent!("e"),
            " ->> 'k' = 'completed' THEN ",
            sent!("e"),
            " -> 'o' ELSE e.output END"
        )
    ),
    " RETURNING id, attempt, state, queue, run_at, task, key \
    ), requeued AS ( \
        UPDATE jobq.jobs_active j SET \
            state = ",
    next_state!("j"),
    ", run_at = CASE \
                WHEN ",
    sent!("j"),
    " ->> 'k' = 'released' THEN now() \
                WHEN ",
    sent!("j"),
    " ->> 'k' IN ('snoozed', 'rate_limited') \
                    THEN now() + greatest(0, (",
    sent!("j"),
    " ->> 'd')::bigint) * interval '1 millisecond' \
                ELSE now() + (",
    sent!("j"),
    " ->> 'd')::bigint * interval '1 millisecond' END, \
            finished_at = NULL, \
            worker_id = NULL, \
            handbacks = j.handbacks + CASE WHEN ",
    sent!("j"),
    " ->> 'k' IN ('released', 'snoozed', 'rate_limited') THEN 1 ELSE 0 END, \
            errors = ",
    errors_with_message!("j"),
    " WHERE j.id = ANY(ARRAY(SELECT id FROM live WHERE next IN ('pending', 'scheduled'))) \
        RETURNING j.id, j.attempt, j.state, j.queue, j.run_at, j.task, j.key \
    ), done AS ( \
        SELECT * FROM finished UNION ALL SELECT * FROM requeued \
    ), blocked AS ( \
        INSERT INTO jobq.blocks (task, key, until) \
        SELECT d.task, coalesce(d.key, ''), max(now() + greatest(0, \
            (",
    sent!("d"),
    " ->> 'd')::bigint) * interval '1 millisecond') \
        FROM done d \
        WHERE ",
    sent!("d"),
    " ->> 'k' = 'rate_limited' \
        GROUP BY 1, 2 \
        ON CONFLICT (task, key) DO UPDATE SET until = greatest(jobq.blocks.until, excluded.until) \
        RETURNING task, key, until \
    ), parked AS ( \
        UPDATE jobq.jobs_active j SET state = 'scheduled', \
            run_at = greatest(j.run_at, (SELECT max(b.until) FROM blocked b \
                WHERE b.task = j.task AND b.key IN ('', coalesce(j.key, '')))) \
        WHERE j.id = ANY(ARRAY( \
                SELECT p.id FROM blocked b CROSS JOIN LATERAL ( \
                    SELECT k.id FROM jobq.jobs_active k \
                    WHERE b.key <> '' AND k.task = b.task AND k.key = b.key AND k.state = 'pending' \
                    ORDER BY k.priority DESC, k.id LIMIT 100000 \
                    FOR UPDATE SKIP LOCKED) p \
                UNION ALL \
                SELECT p.id FROM blocked b CROSS JOIN LATERAL ( \
                    SELECT t.id FROM jobq.jobs_active t \
                    WHERE b.key = '' AND t.task = b.task AND t.state = 'pending' \
                    ORDER BY t.priority DESC, t.run_at, t.id LIMIT 100000 \
                    FOR UPDATE SKIP LOCKED) p)) \
          AND j.state = 'pending' \
        RETURNING j.queue, j.run_at \
    ), woken AS ( \
        SELECT count(pg_notify('jobq_jobs', \
            CASE WHEN q.due > now() \
                THEN ceil(extract(epoch FROM q.due) * 1000)::bigint ELSE 0 END \
            || ' ' || q.queue)) AS n \
        FROM (SELECT queue, min(run_at) AS due FROM done \
              WHERE state IN ('pending', 'scheduled') GROUP BY queue, state \
              UNION ALL \
              SELECT queue, min(run_at) FROM parked GROUP BY queue) q \
    ) \
    SELECT d.id, d.attempt FROM done d CROSS JOIN woken"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_outcome_statement_has_the_row_lock_the_lock_skipping_variant_replaces() {
        assert_eq!(OUTCOME_SQL.matches(ROW_LOCK).count(), 1);
        let variant = OUTCOME_SQL.replace(ROW_LOCK, ROW_LOCK_SKIPPING_LOCKED);
        assert_eq!(
            variant.matches("SKIP LOCKED").count(),
            OUTCOME_SQL.matches("SKIP LOCKED").count() + 1
        );
    }

    fn done(id: i64, attempt: i32) -> Outcome {
        Outcome {
            id,
            attempt,
            kind: OutcomeKind::Completed,
            message: None,
            output: None,
        }
    }

    #[test]
    fn packed_keys_match_the_sql_arithmetic_and_refuse_what_does_not_fit() {
        // The SQL packs with the literals 8796093022208 (2^43) and 1048576
        // (2^20); the Rust side must agree.
        assert_eq!(1i64 << (63 - ATTEMPT_BITS), 8_796_093_022_208);
        assert_eq!(1i64 << ATTEMPT_BITS, 1_048_576);
        assert_eq!(
            packed_keys(&[done(1, 1), done(7, 3)]),
            Some(vec![1_048_577, 7 * 1_048_576 + 3])
        );
        assert_eq!(packed_keys(&[done(1, 1), done(1 << 43, 1)]), None);
        assert_eq!(packed_keys(&[done(1, 1 << 20)]), None);
        assert_eq!(packed_keys(&[done(-1, 1)]), None);
    }
}
