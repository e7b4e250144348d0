//! Statements of jobq's test kit (`jobq::testing`): running due jobs
//! in-process without a worker, and listing what was enqueued.

use diesel::sql_types::{Array, BigInt, Bool, Integer, Text};
use diesel::{OptionalExtension, QueryableByName};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

/// A job [`start_next_due`] set running.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct StartedJob {
    /// Row id.
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    /// Task name.
    #[diesel(sql_type = Text)]
    pub task: String,
    /// Queue name.
    #[diesel(sql_type = Text)]
    pub queue: String,
    /// Payload as JSON text.
    #[diesel(sql_type = Text)]
    pub payload: String,
    /// The attempt's fencing number, for [`crate::write_outcomes`].
    #[diesel(sql_type = Integer)]
    pub attempt: i32,
    /// The attempt's number as users see it (hand-backs not counted).
    #[diesel(sql_type = Integer)]
    pub number: i32,
    /// Whether a cancel was requested before it started.
    #[diesel(sql_type = Bool)]
    pub cancel_requested: bool,
    /// Its partition key.
    #[diesel(sql_type = diesel::sql_types::Nullable<Text>)]
    pub key: Option<String>,
    /// Its headers, as the JSON text of an object.
    #[diesel(sql_type = diesel::sql_types::Nullable<Text>)]
    pub headers: Option<String>,
}

/// Sets the next due job of one of `tasks` running (a scheduled job whose
/// time has come counts as due), in claim order, and returns it; `None`
/// when no job of those tasks is due. No worker row or claim row is
/// written: the caller writes the outcome itself, on the same database,
/// before anything else could rescue the job.
pub async fn start_next_due(
    conn: &mut AsyncPgConnection,
    tasks: &[String],
) -> diesel::QueryResult<Option<StartedJob>> {
    diesel::sql_query(
        "UPDATE jobq.jobs j SET state = 'running', attempt = j.attempt + 1, \
             started_at = now() \
         WHERE j.id = ( \
             SELECT id FROM jobq.jobs \
             WHERE state IN ('pending', 'scheduled') AND run_at <= now() AND task = ANY($1) \
             ORDER BY priority DESC, run_at, id \
             LIMIT 1 FOR UPDATE SKIP LOCKED) \
         RETURNING j.id, j.task, j.queue, j.payload::text AS payload, j.attempt, \
             j.attempt - j.handbacks AS number, j.cancel_requested, j.key, \
             j.headers::text AS headers",
    )
    .bind::<Array<Text>, _>(tasks)
    .get_result(conn)
    .await
    .optional()
}

#[derive(QueryableByName)]
struct Payload {
    #[diesel(sql_type = Text)]
    payload: String,
}

/// The payloads (JSON text) of every job of `task` in the table, oldest
/// first, whatever their state.
pub async fn payloads_of(
    conn: &mut AsyncPgConnection,
    task: &str,
) -> diesel::QueryResult<Vec<String>> {
    let rows: Vec<Payload> = diesel::sql_query(
        "SELECT payload::text AS payload FROM jobq.jobs WHERE task = $1 ORDER BY created_at, id",
    )
    .bind::<Text, _>(task)
    .load(conn)
    .await?;
    Ok(rows.into_iter().map(|r| r.payload).collect())
}
