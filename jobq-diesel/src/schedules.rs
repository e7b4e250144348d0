//! Periodic tasks' schedules (`jobq.schedules`) and the statement that
//! enqueues their ticks.
//!
//! A schedule row holds the expression, whether it is paused and the
//! latest tick enqueued. Ticks are enqueued by a compare-and-set on the
//! row's `revision`: the statement that inserts a schedule's due jobs also
//! moves its `last_tick` forward, and does both only when the row is still
//! at the revision the worker read. However many workers race for a tick,
//! one statement wins and the others insert nothing; they read the row
//! again and find the tick taken.

use chrono::{DateTime, Utc};
use diesel::sql_types::{Array, BigInt, Bool, Integer, Nullable, SmallInt, Text, Timestamptz};
use diesel::QueryableByName;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::prepared::prepared;

/// A schedule as a worker declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleDef {
    /// Unique name of the schedule (by default the task's name).
    pub name: String,
    /// The task whose jobs it enqueues.
    pub task: String,
    /// The cron expression.
    pub expression: String,
    /// IANA time zone the expression is read in.
    pub timezone: String,
}

/// A schedule as stored.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct ScheduleRow {
    /// Unique name of the schedule.
    #[diesel(sql_type = Text)]
    pub name: String,
    /// The task whose jobs it enqueues.
    #[diesel(sql_type = Text)]
    pub task: String,
    /// The cron expression.
    #[diesel(sql_type = Text)]
    pub expression: String,
    /// IANA time zone the expression is read in.
    #[diesel(sql_type = Text)]
    pub timezone: String,
    /// Whether the schedule is paused fleet-wide.
    #[diesel(sql_type = Bool)]
    pub paused: bool,
    /// The latest tick enqueued.
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub last_tick: Option<DateTime<Utc>>,
    /// Ticks at or before this instant are never enqueued (creation,
    /// resumption).
    #[diesel(sql_type = Timestamptz)]
    pub since: DateTime<Utc>,
    /// Bumped by every change of the row.
    #[diesel(sql_type = BigInt)]
    pub revision: i64,
}

const COLUMNS: &str = "name, task, expression, timezone, paused, last_tick, since, revision";

/// Inserts the schedules that do not exist yet and updates the definition
/// of those that changed (keeping their last tick and pause state), then
/// returns their rows. Names must be unique within `defs`.
pub async fn declare_schedules(
    conn: &mut AsyncPgConnection,
    defs: &[ScheduleDef],
) -> diesel::QueryResult<Vec<ScheduleRow>> {
    let names: Vec<&str> = defs.iter().map(|d| d.name.as_str()).collect();
    let tasks: Vec<&str> = defs.iter().map(|d| d.task.as_str()).collect();
    let expressions: Vec<&str> = defs.iter().map(|d| d.expression.as_str()).collect();
    let zones: Vec<&str> = defs.iter().map(|d| d.timezone.as_str()).collect();
    diesel::sql_query(
        "INSERT INTO jobq.schedules AS s (name, task, expression, timezone) \
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) \
         ON CONFLICT (name) DO UPDATE SET \
             task = EXCLUDED.task, expression = EXCLUDED.expression, \
             timezone = EXCLUDED.timezone, revision = s.revision + 1, updated_at = now() \
         WHERE (s.task, s.expression, s.timezone) \
             IS DISTINCT FROM (EXCLUDED.task, EXCLUDED.expression, EXCLUDED.timezone)",
    )
    .bind::<Array<Text>, _>(&names)
    .bind::<Array<Text>, _>(&tasks)
    .bind::<Array<Text>, _>(&expressions)
    .bind::<Array<Text>, _>(&zones)
    .execute(conn)
    .await?;
    diesel::sql_query(format!(
        "SELECT {COLUMNS} FROM jobq.schedules WHERE name = ANY($1::text[]) ORDER BY name"
    ))
    .bind::<Array<Text>, _>(&names)
    .load(conn)
    .await
}

/// One schedule's row, if it exists.
pub async fn find_schedule(
    conn: &mut AsyncPgConnection,
    name: &str,
) -> diesel::QueryResult<Option<ScheduleRow>> {
    use diesel::OptionalExtension;
    prepared(
        diesel::sql_query(
            "SELECT name, task, expression, timezone, paused, last_tick, since, revision \
             FROM jobq.schedules WHERE name = $1",
        )
        .bind::<Text, _>(name),
    )
    .get_result(conn)
    .await
    .optional()
}

/// Every schedule, by name.
pub async fn list_schedules(conn: &mut AsyncPgConnection) -> diesel::QueryResult<Vec<ScheduleRow>> {
    diesel::sql_query(format!(
        "SELECT {COLUMNS} FROM jobq.schedules ORDER BY name"
    ))
    .load(conn)
    .await
}

/// Pauses a schedule fleet-wide; `false` when there is no such schedule.
pub async fn pause_schedule(conn: &mut AsyncPgConnection, name: &str) -> diesel::QueryResult<bool> {
    let changed = diesel::sql_query(
        "UPDATE jobq.schedules SET paused = true, revision = revision + 1, updated_at = now() \
         WHERE name = $1",
    )
    .bind::<Text, _>(name)
    .execute(conn)
    .await?;
    Ok(changed > 0)
}

/// Resumes a schedule; the ticks that passed while it was paused are
/// skipped. `false` when there is no such schedule.
pub async fn resume_schedule(
    conn: &mut AsyncPgConnection,
    name: &str,
) -> diesel::QueryResult<bool> {
    let changed = diesel::sql_query(
        "UPDATE jobq.schedules SET paused = false, \
             since = CASE WHEN paused THEN greatest(since, now()) ELSE since END, \
             revision = revision + 1, updated_at = now() \
         WHERE name = $1",
    )
    .bind::<Text, _>(name)
    .execute(conn)
    .await?;
    Ok(changed > 0)
}

/// Ticks of one schedule to enqueue, read at `revision`.
#[derive(Debug, Clone)]
pub struct TickBatch<'a> {
    /// The schedule.
    pub schedule: &'a str,
    /// The revision the ticks were computed from.
    pub revision: i64,
    /// The task, queue, priority and attempts of the jobs.
    pub task: &'a str,
    /// Queue of the jobs.
    pub queue: &'a str,
    /// Priority of the jobs.
    pub priority: i16,
    /// Attempts of each job.
    pub max_attempts: i32,
    /// The ticks, in order; the last one becomes the schedule's last tick.
    pub ticks: &'a [DateTime<Utc>],
    /// Each tick's payload (JSON text), in the same order.
    pub payloads: &'a [String],
    /// The task's follow-up (see [`crate::NewJob::follow_up`]).
    pub follow_up: Option<&'a str>,
}

/// What [`enqueue_ticks`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, QueryableByName)]
pub struct TickResult {
    /// Whether the row was still at the batch's revision (and not paused),
    /// so the ticks were enqueued.
    #[diesel(sql_type = Bool)]
    pub advanced: bool,
    /// Jobs inserted.
    #[diesel(sql_type = BigInt)]
    pub inserted: i64,
}

/// The compare-and-set that enqueues a schedule's ticks. Public so that
/// tests can read it.
#[doc(hidden)]
pub const ENQUEUE_TICKS_SQL: &str = "WITH advanced AS ( \
         UPDATE jobq.schedules \
         SET last_tick = $3, revision = revision + 1, updated_at = now() \
         WHERE name = $1 AND revision = $2 AND NOT paused \
         RETURNING name \
     ), inserted AS ( \
         INSERT INTO jobq.jobs (task, queue, payload, priority, max_attempts, follow_up, \
             run_at, state) \
         SELECT $4, $5, t.payload::jsonb, $6, $7, $10::jsonb, t.at, \
             CASE WHEN t.at > now() THEN 'scheduled'::jobq.job_state \
                  ELSE 'pending'::jobq.job_state END \
         FROM unnest($8::timestamptz[], $9::text[]) AS t(at, payload) \
         WHERE EXISTS (SELECT 1 FROM advanced) \
         RETURNING 1 \
     ) \
     SELECT EXISTS (SELECT 1 FROM advanced) AS advanced, \
         (SELECT count(*) FROM inserted) AS inserted";

/// Enqueues `batch`'s ticks and moves the schedule's last tick to the last
/// of them, in one statement, if the row is still at `batch.revision` and
/// not paused. Jobs whose tick lies ahead of the database's clock are
/// inserted as scheduled, so a worker whose clock runs fast never runs a
/// tick early.
pub async fn enqueue_ticks(
    conn: &mut AsyncPgConnection,
    batch: &TickBatch<'_>,
) -> diesel::QueryResult<TickResult> {
    let Some(last) = batch.ticks.last() else {
        return Ok(TickResult {
            advanced: false,
            inserted: 0,
        });
    };
    let query = diesel::sql_query(ENQUEUE_TICKS_SQL)
        .bind::<Text, _>(batch.schedule)
        .bind::<BigInt, _>(batch.revision)
        .bind::<Timestamptz, _>(last)
        .bind::<Text, _>(batch.task)
        .bind::<Text, _>(batch.queue)
        .bind::<SmallInt, _>(batch.priority)
        .bind::<Integer, _>(batch.max_attempts)
        .bind::<Array<Timestamptz>, _>(batch.ticks)
        .bind::<Array<Text>, _>(batch.payloads)
        .bind::<Nullable<Text>, _>(batch.follow_up);
    prepared(query).get_result(conn).await
}
