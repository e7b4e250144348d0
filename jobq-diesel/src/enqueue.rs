//! Inserting jobs. Each insert is a plain statement on the caller's
//! connection, so it commits or rolls back with the caller's transaction;
//! the insert trigger sends the wake-up, which PostgreSQL delivers at commit.

use diesel::sql_types::{Array, BigInt, Integer, Nullable, SmallInt, Text};
use diesel::{OptionalExtension, QueryableByName};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::prepared::prepared;

/// One job to insert. `payload` is JSON text; `delay_ms` is added to the
/// database's `now()`, so clocks of app servers never matter.
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
    /// While a job of the same task with this key is pending or running,
    /// inserting returns that job's id instead of a new job.
    pub dedupe_key: Option<&'a str>,
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
        let query = diesel::sql_query(
            "INSERT INTO jobq.jobs (task, queue, payload, priority, max_attempts, run_at) \
             VALUES ($1, $2, $3::jsonb, $4, $5, now() + $6 * interval '1 millisecond') \
             RETURNING id",
        )
        .bind::<Text, _>(job.task)
        .bind::<Text, _>(job.queue)
        .bind::<Text, _>(job.payload)
        .bind::<SmallInt, _>(job.priority)
        .bind::<Integer, _>(job.max_attempts)
        .bind::<BigInt, _>(job.delay_ms);
        let row: Id = prepared(query).get_result(conn).await?;
        return Ok(row.id);
    };
    // The insert either creates the job or, on conflict with the live job
    // holding the key, returns nothing and the second branch finds that job.
    // A conflicting job committed after this statement's snapshot is found
    // by the next round. Under REPEATABLE READ the snapshot never moves, so
    // the rounds are bounded and the caller gets NotFound.
    for _ in 0..DEDUPE_ROUNDS {
        let query = diesel::sql_query(
            "WITH inserted AS ( \
                 INSERT INTO jobq.jobs (task, queue, payload, priority, max_attempts, run_at, dedupe_key) \
                 VALUES ($1, $2, $3::jsonb, $4, $5, now() + $6 * interval '1 millisecond', $7) \
                 ON CONFLICT (task, dedupe_key) \
                     WHERE dedupe_key IS NOT NULL AND state IN ('pending', 'running') \
                 DO NOTHING \
                 RETURNING id) \
             SELECT id FROM inserted \
             UNION ALL \
             SELECT id FROM jobq.jobs \
             WHERE task = $1 AND dedupe_key = $7 AND state IN ('pending', 'running') \
             LIMIT 1",
        )
        .bind::<Text, _>(job.task)
        .bind::<Text, _>(job.queue)
        .bind::<Text, _>(job.payload)
        .bind::<SmallInt, _>(job.priority)
        .bind::<Integer, _>(job.max_attempts)
        .bind::<BigInt, _>(job.delay_ms)
        .bind::<Nullable<Text>, _>(Some(key));
        let row: Option<Id> = prepared(query).get_result(conn).await.optional()?;
        if let Some(row) = row {
            return Ok(row.id);
        }
    }
    Err(diesel::result::Error::NotFound)
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
    let query = diesel::sql_query(
        "INSERT INTO jobq.jobs (task, queue, payload, priority, max_attempts, run_at) \
         SELECT $1, $2, p.payload::jsonb, $4, $5, now() + $6 * interval '1 millisecond' \
         FROM unnest($3::text[]) WITH ORDINALITY AS p(payload, n) \
         ORDER BY p.n \
         RETURNING id",
    )
    .bind::<Text, _>(jobs.task)
    .bind::<Text, _>(jobs.queue)
    .bind::<Array<Text>, _>(jobs.payloads)
    .bind::<SmallInt, _>(jobs.priority)
    .bind::<Integer, _>(jobs.max_attempts)
    .bind::<BigInt, _>(jobs.delay_ms);
    let rows: Vec<Id> = prepared(query).load(conn).await?;
    // Identity values are drawn in insertion order, which follows `n`, so
    // sorting restores the order of `payloads` whatever order RETURNING uses.
    let mut ids: Vec<i64> = rows.into_iter().map(|r| r.id).collect();
    ids.sort_unstable();
    Ok(ids)
}
