//! Looking up and cancelling single jobs, and start-up diagnostics.

use chrono::{DateTime, Utc};
use diesel::sql_types::{Array, BigInt, Integer, Nullable, SmallInt, Text, Timestamptz};
use diesel::{OptionalExtension, QueryableByName};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

/// A job row as stored, with the error history as JSON text.
#[derive(Debug, Clone, QueryableByName)]
pub struct JobRow {
    /// Row id.
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    /// Task name.
    #[diesel(sql_type = Text)]
    pub task: String,
    /// Queue name.
    #[diesel(sql_type = Text)]
    pub queue: String,
    /// scheduled, pending, running, completed, failed or cancelled.
    #[diesel(sql_type = Text)]
    pub state: String,
    /// Higher runs first.
    #[diesel(sql_type = SmallInt)]
    pub priority: i16,
    /// Attempts used so far, the running one included; claims handed back
    /// untried (at shutdown, or after a lost claim reply) do not count.
    #[diesel(sql_type = Integer)]
    pub attempt: i32,
    /// Attempts allowed in all.
    #[diesel(sql_type = Integer)]
    pub max_attempts: i32,
    /// When the job is (or was) due.
    #[diesel(sql_type = Timestamptz)]
    pub run_at: DateTime<Utc>,
    /// When it was enqueued.
    #[diesel(sql_type = Timestamptz)]
    pub created_at: DateTime<Utc>,
    /// When the latest attempt started.
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub started_at: Option<DateTime<Utc>>,
    /// When it reached a terminal state.
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub finished_at: Option<DateTime<Utc>>,
    /// The dedupe key it was enqueued with.
    #[diesel(sql_type = Nullable<Text>)]
    pub dedupe_key: Option<String>,
    /// The payload as JSON text.
    #[diesel(sql_type = Text)]
    pub payload: String,
    /// `[{"attempt": n, "at": "...", "message": "..."}, ...]`
    #[diesel(sql_type = Text)]
    pub errors: String,
    /// What the task fn returned, as JSON text, once completed.
    #[diesel(sql_type = Nullable<Text>)]
    pub output: Option<String>,
    /// The unique key it was enqueued with.
    #[diesel(sql_type = Nullable<Text>)]
    pub unique_key: Option<String>,
    /// The partition key it was enqueued with.
    #[diesel(sql_type = Nullable<Text>)]
    pub key: Option<String>,
    /// Its headers, as the JSON text of an object; `None` for none.
    #[diesel(sql_type = Nullable<Text>)]
    pub headers: Option<String>,
}

/// The columns of a [`JobRow`].
macro_rules! job_row_columns {
    () => {
        "SELECT id, task, queue, state::text AS state, priority, \
             attempt - handbacks AS attempt, max_attempts, run_at, \
             created_at, started_at, finished_at, dedupe_key, payload::text AS payload, \
             errors::text AS errors, output::text AS output, unique_key, key, \
             headers::text AS headers \
         FROM jobq.jobs "
    };
}

/// The job with this id, if it exists (pruned jobs don't).
pub async fn find_job(
    conn: &mut AsyncPgConnection,
    id: i64,
) -> diesel::QueryResult<Option<JobRow>> {
    diesel::sql_query(concat!(job_row_columns!(), "WHERE id = $1"))
        .bind::<BigInt, _>(id)
        .get_result(conn)
        .await
        .optional()
}

/// The job of `task` that holds, or last held, the unique key `key` (its
/// latest generation), if any.
pub async fn find_job_by_key(
    conn: &mut AsyncPgConnection,
    task: &str,
    key: &str,
) -> diesel::QueryResult<Option<JobRow>> {
    diesel::sql_query(concat!(
        job_row_columns!(),
        "WHERE task = $1 AND unique_key = $2 ORDER BY unique_gen DESC LIMIT 1"
    ))
    .bind::<Text, _>(task)
    .bind::<Text, _>(key)
    .get_result(conn)
    .await
    .optional()
}

/// A job's task and output, as read by [`find_output`].
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct OutputRow {
    /// Task name.
    #[diesel(sql_type = Text)]
    pub task: String,
    /// The output as JSON text; `None` until the job completed, and for
    /// tasks that return `()`.
    #[diesel(sql_type = Nullable<Text>)]
    pub output: Option<String>,
}

/// The task and output of the job with this id, if it exists.
pub async fn find_output(
    conn: &mut AsyncPgConnection,
    id: i64,
) -> diesel::QueryResult<Option<OutputRow>> {
    diesel::sql_query("SELECT task, output::text AS output FROM jobq.jobs WHERE id = $1")
        .bind::<BigInt, _>(id)
        .get_result(conn)
        .await
        .optional()
}

/// What [`cancel`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelResult {
    /// The job was scheduled or pending and is now cancelled.
    Cancelled,
    /// The job is running; its worker was asked to stop it and will record
    /// it as cancelled.
    Requested,
    /// The job had already finished (or never existed): nothing changed.
    NotCancellable,
}

#[derive(QueryableByName)]
struct StateRow {
    #[diesel(sql_type = Text)]
    state: String,
    #[diesel(sql_type = Text)]
    task: String,
    #[diesel(sql_type = Text)]
    queue: String,
}

/// What [`cancel`] did, with the job's task and queue when it found the
/// job (for the caller's metrics).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cancel {
    /// What happened.
    pub result: CancelResult,
    /// The job's task and queue; `None` when nothing changed.
    pub job: Option<(String, String)>,
}

/// Cancels a scheduled or pending job at once, or flags a running one and
/// notifies its worker. Runs on the caller's connection, so it is transactional too.
///
/// A job that finishes while the cancel waits for its row moves to the
/// finished partition; outside a transaction the cancel then runs again
/// and reports it not cancellable, inside one it returns PostgreSQL's
/// serialization failure (retry the transaction).
pub async fn cancel(conn: &mut AsyncPgConnection, id: i64) -> diesel::QueryResult<Cancel> {
    crate::moved_row::rerun_if_moved!(conn, cancel_once(conn, id).await)
}

async fn cancel_once(conn: &mut AsyncPgConnection, id: i64) -> diesel::QueryResult<Cancel> {
    let row: Option<StateRow> = diesel::sql_query(
        "WITH changed AS ( \
             UPDATE jobq.jobs SET \
                 state = CASE WHEN state IN ('scheduled', 'pending') \
                     THEN 'cancelled'::jobq.job_state ELSE state END, \
                 finished_at = CASE WHEN state IN ('scheduled', 'pending') \
                     THEN now() ELSE finished_at END, \
                 cancel_requested = true \
             WHERE id = $1 AND state IN ('scheduled', 'pending', 'running') \
             RETURNING id, state::text AS state, task, queue \
         ) \
         SELECT state, task, queue, (SELECT count(pg_notify('jobq_cancel', id::text)) \
                        FROM changed WHERE state = 'running') AS notified \
         FROM changed",
    )
    .bind::<BigInt, _>(id)
    .get_result(conn)
    .await
    .optional()?;
    Ok(match row {
        Some(r) => Cancel {
            result: if r.state == "cancelled" {
                CancelResult::Cancelled
            } else {
                CancelResult::Requested
            },
            job: Some((r.task, r.queue)),
        },
        None => Cancel {
            result: CancelResult::NotCancellable,
            job: None,
        },
    })
}

/// Pending jobs of tasks absent from `known`, counted per task.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct UnknownTask {
    /// The task name no registered task has.
    #[diesel(sql_type = Text)]
    pub task: String,
    /// Pending jobs of it.
    #[diesel(sql_type = BigInt)]
    pub pending: i64,
}

/// Pending jobs in `queues` whose task is not in `known`: a start-up
/// diagnostic for typos and for jobs of tasks removed from the code.
///
/// Scheduled jobs are left out on purpose: a table may hold millions of
/// them, and no index finds them by task, so counting them would scan the
/// table at every worker start. Such a job is reported once it is due
/// (promotion makes it pending, and the next start-up counts it).
pub async fn pending_unknown_tasks(
    conn: &mut AsyncPgConnection,
    queues: &[String],
    known: &[String],
) -> diesel::QueryResult<Vec<UnknownTask>> {
    diesel::sql_query(
        "SELECT task, count(*) AS pending FROM jobq.jobs \
         WHERE state = 'pending' AND queue = ANY($1) AND NOT (task = ANY($2)) \
         GROUP BY task ORDER BY task",
    )
    .bind::<Array<Text>, _>(queues)
    .bind::<Array<Text>, _>(known)
    .load(conn)
    .await
}
