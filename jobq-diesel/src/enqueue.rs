//! Inserting jobs. Each insert is a plain statement on the caller's
//! connection, so it commits or rolls back with the caller's transaction;
//! the insert trigger sends the wake-up, which PostgreSQL delivers at commit.
//!
//! A job due later is inserted `scheduled`, one due now `pending`: only
//! pending rows are in the claim's index, so waiting jobs never slow a
//! claim. (The insert trigger files rows inserted by raw SQL the same way.)

use chrono::{DateTime, Utc};
use diesel::sql_types::{Array, BigInt, Integer, Nullable, SmallInt, Text, Timestamptz};
use diesel::{OptionalExtension, QueryableByName};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::prepared::prepared;

/// One job to insert. `payload` is JSON text; `delay_ms` is added to the
/// database's `now()`, so clocks of app servers never matter, unless
/// `run_at` names the time itself.
#[derive(Debug, Clone, Copy)]
pub struct NewJob<'a> {
    /// Task name.
    pub task: &'a str,
    /// Queue name.
    pub queue: &'a str,
    /// The payload, as JSON text.
    pub payload: &'a str,
    /// Higher runs first.
    pub priority: i16,
    /// Attempts in all, the first one included.
    pub max_attempts: i32,
    /// Milliseconds from now before the job may run.
    pub delay_ms: i64,
    /// When the job may run, instead of `delay_ms`; a time already past
    /// means now.
    pub run_at: Option<DateTime<Utc>>,
    /// While a job of the same task with this key is scheduled, pending or
    /// running, inserting returns that job's id instead of a new job.
    pub dedupe_key: Option<&'a str>,
    /// The partition key (1 to 200 characters), which `key_concurrency`
    /// limits.
    pub key: Option<&'a str>,
    /// Headers as the JSON text of an object of strings; `None` for none.
    pub headers: Option<&'a str>,
    /// The follow-up enqueued when the job reaches a terminal state, as
    /// the JSON text the `follow_up` column holds (see the migration
    /// `follow_ups`); `None` for none.
    pub follow_up: Option<&'a str>,
}

/// Many jobs of one task sharing the same options, inserted in one statement.
#[derive(Debug, Clone, Copy)]
pub struct NewJobs<'a> {
    /// Task name.
    pub task: &'a str,
    /// Queue name.
    pub queue: &'a str,
    /// The payloads, as JSON text, one job each.
    pub payloads: &'a [String],
    /// Higher runs first.
    pub priority: i16,
    /// Attempts in all, the first one included.
    pub max_attempts: i32,
    /// Milliseconds from now before the jobs may run.
    pub delay_ms: i64,
    /// When the jobs may run, instead of `delay_ms`.
    pub run_at: Option<DateTime<Utc>>,
    /// The partition key of every job, which `key_concurrency` limits.
    pub key: Option<&'a str>,
    /// Headers of every job, as the JSON text of an object of strings.
    pub headers: Option<&'a str>,
    /// The follow-up of every job, as for [`NewJob::follow_up`].
    pub follow_up: Option<&'a str>,
}

/// The `run_at, state` columns of an `INSERT ... SELECT` and, after them,
/// its `FROM` item: the due time is `$run_at` when given, else now plus
/// `$delay_ms`, and the state follows from it. Rows jobq inserts are thus
/// filed right, and the insert trigger's filing (for raw SQL) has nothing
/// to do. The state literals are typed: an untyped CASE cast to the enum
/// would parse the enum's text for every row.
macro_rules! due {
    ($delay_ms:literal, $run_at:literal) => {
        concat!(
            "d.run_at, CASE WHEN d.run_at > now() THEN 'scheduled'::jobq.job_state \
                 ELSE 'pending'::jobq.job_state END \
             FROM (SELECT coalesce(",
            $run_at,
            "::timestamptz, now() + ",
            $delay_ms,
            " * interval '1 millisecond') AS run_at) d"
        )
    };
}

#[derive(QueryableByName)]
struct Id {
    #[diesel(sql_type = BigInt)]
    id: i64,
}

/// Inserts one job and returns its id (or, with a dedupe key, the id of the
/// live job that already holds the key).
pub async fn insert_job(
    conn: &mut AsyncPgConnection,
    job: &NewJob<'_>,
) -> diesel::QueryResult<i64> {
    let Some(key) = job.dedupe_key else {
        let query = diesel::sql_query(concat!(
            "INSERT INTO jobq.jobs \
                 (task, queue, payload, priority, max_attempts, key, headers, follow_up, \
                  run_at, state) \
             SELECT $1, $2, $3::jsonb, $4, $5, $8, $9::jsonb, $10::jsonb, ",
            due!("$6", "$7"),
            " RETURNING id"
        ))
        .bind::<Text, _>(job.task)
        .bind::<Text, _>(job.queue)
        .bind::<Text, _>(job.payload)
        .bind::<SmallInt, _>(job.priority)
        .bind::<Integer, _>(job.max_attempts)
        .bind::<BigInt, _>(job.delay_ms)
        .bind::<Nullable<Timestamptz>, _>(job.run_at)
        .bind::<Nullable<Text>, _>(job.key)
        .bind::<Nullable<Text>, _>(job.headers)
        .bind::<Nullable<Text>, _>(job.follow_up);
        let row: Id = prepared(query).get_result(conn).await?;
        return Ok(row.id);
    };
    // The insert either creates the job or, on conflict with the live job
    // holding the key, returns nothing and the second branch finds that job.
    // It names the active partition because the key's unique index lives
    // there (PostgreSQL cannot infer an arbiter index through the parent).
    // A conflicting job committed after this statement's snapshot is found
    // by the next round. Under REPEATABLE READ the snapshot never moves, so
    // the rounds are bounded and the caller gets NotFound.
    for _ in 0..DEDUPE_ROUNDS {
        let query = diesel::sql_query(concat!(
            "WITH inserted AS ( \
                 INSERT INTO jobq.jobs_active \
                     (task, queue, payload, priority, max_attempts, dedupe_key, key, headers, \
                      follow_up, run_at, state) \
                 SELECT $1, $2, $3::jsonb, $4, $5, $7, $9, $10::jsonb, $11::jsonb, ",
            due!("$6", "$8"),
            " ON CONFLICT (task, dedupe_key) \
                     WHERE dedupe_key IS NOT NULL AND state IN ('scheduled', 'pending', 'running') \
                 DO NOTHING \
                 RETURNING id) \
             SELECT id FROM inserted \
             UNION ALL \
             SELECT id FROM jobq.jobs \
             WHERE task = $1 AND dedupe_key = $7 AND state IN ('scheduled', 'pending', 'running') \
             LIMIT 1"
        ))
        .bind::<Text, _>(job.task)
        .bind::<Text, _>(job.queue)
        .bind::<Text, _>(job.payload)
        .bind::<SmallInt, _>(job.priority)
        .bind::<Integer, _>(job.max_attempts)
        .bind::<BigInt, _>(job.delay_ms)
        .bind::<Nullable<Text>, _>(Some(key))
        .bind::<Nullable<Timestamptz>, _>(job.run_at)
        .bind::<Nullable<Text>, _>(job.key)
        .bind::<Nullable<Text>, _>(job.headers)
        .bind::<Nullable<Text>, _>(job.follow_up);
        let row: Option<Id> = prepared(query).get_result(conn).await.optional()?;
        if let Some(row) = row {
            return Ok(row.id);
        }
    }
    Err(diesel::result::Error::NotFound)
}

/// How long a job holds its unique key (see [`insert_unique_job`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyHold {
    /// While the job is scheduled, pending or running.
    WhileActive,
    /// While active, and besides for this many milliseconds after the
    /// enqueue, whatever the job's state.
    ForMillis(i64),
    /// For as long as the job row exists; such rows are never pruned.
    Forever,
}

/// What [`insert_unique_job`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, QueryableByName)]
pub struct UniqueInsert {
    /// The id of the job holding the key: the new one, or the one that
    /// already held it.
    #[diesel(sql_type = BigInt)]
    pub job_id: i64,
    /// Whether this call inserted the job.
    #[diesel(sql_type = diesel::sql_types::Bool)]
    pub created: bool,
}

/// Inserts a job under a unique key of its task, or returns the job that
/// holds the key. `job.dedupe_key` is ignored.
///
/// Concurrent submissions of one key agree on one job whatever their
/// isolation level: the id of a key's job is derived from the task, the
/// key and the key's generation (`jobq.unique_job_id`), so a submission
/// that loses the race meets the winner on the primary key and returns
/// the same id, even under REPEATABLE READ, where the winner's row may be
/// invisible to it. One statement (the function `jobq.enqueue_unique`).
pub async fn insert_unique_job(
    conn: &mut AsyncPgConnection,
    job: &NewJob<'_>,
    key: &str,
    hold: KeyHold,
) -> diesel::QueryResult<UniqueInsert> {
    let (hold_ms, forever) = match hold {
        KeyHold::WhileActive => (None, false),
        KeyHold::ForMillis(ms) => (Some(ms), false),
        KeyHold::Forever => (None, true),
    };
    let query = diesel::sql_query(
        "SELECT job_id, created FROM jobq.enqueue_unique( \
             $1, $2, $3::jsonb, $4, $5, $6, $7, $8, $9, $10, $11, $12::jsonb, $13::jsonb)",
    )
    .bind::<Text, _>(job.task)
    .bind::<Text, _>(job.queue)
    .bind::<Text, _>(job.payload)
    .bind::<SmallInt, _>(job.priority)
    .bind::<Integer, _>(job.max_attempts)
    .bind::<BigInt, _>(job.delay_ms)
    .bind::<Nullable<Timestamptz>, _>(job.run_at)
    .bind::<Text, _>(key)
    .bind::<Nullable<BigInt>, _>(hold_ms)
    .bind::<diesel::sql_types::Bool, _>(forever)
    .bind::<Nullable<Text>, _>(job.key)
    .bind::<Nullable<Text>, _>(job.headers)
    .bind::<Nullable<Text>, _>(job.follow_up);
    prepared(query).get_result(conn).await
}

/// Rounds of insert-or-find before giving up on a key whose holder this
/// transaction cannot see.
const DEDUPE_ROUNDS: usize = 5;

/// Inserts one job per payload in a single statement; returns the ids in
/// the order of `payloads`.
pub async fn insert_jobs(
    conn: &mut AsyncPgConnection,
    jobs: &NewJobs<'_>,
) -> diesel::QueryResult<Vec<i64>> {
    if jobs.payloads.is_empty() {
        return Ok(Vec::new());
    }
    let query = diesel::sql_query(concat!(
        "INSERT INTO jobq.jobs \
             (task, queue, payload, priority, max_attempts, key, headers, follow_up, \
              run_at, state) \
         SELECT $1, $2, p.payload::jsonb, $4, $5, $8, $9::jsonb, $10::jsonb, ",
        due!("$6", "$7"),
        ", unnest($3::text[]) WITH ORDINALITY AS p(payload, n) \
         ORDER BY p.n \
         RETURNING id"
    ))
    .bind::<Text, _>(jobs.task)
    .bind::<Text, _>(jobs.queue)
    .bind::<Array<Text>, _>(jobs.payloads)
    .bind::<SmallInt, _>(jobs.priority)
    .bind::<Integer, _>(jobs.max_attempts)
    .bind::<BigInt, _>(jobs.delay_ms)
    .bind::<Nullable<Timestamptz>, _>(jobs.run_at)
    .bind::<Nullable<Text>, _>(jobs.key)
    .bind::<Nullable<Text>, _>(jobs.headers)
    .bind::<Nullable<Text>, _>(jobs.follow_up);
    let rows: Vec<Id> = prepared(query).load(conn).await?;
    // Identity values are drawn in insertion order, which follows `n`, so
    // sorting restores the order of `payloads` whatever order RETURNING uses.
    let mut ids: Vec<i64> = rows.into_iter().map(|r| r.id).collect();
    ids.sort_unstable();
    Ok(ids)
}
