//! Operators' statements: retrying failed jobs, purging finished ones,
//! listing jobs with filters, and removing jobq's schema.

use chrono::{DateTime, Utc};
use diesel::pg::Pg;
use diesel::sql_types::{Array, BigInt, Integer, Nullable, SmallInt, Text, Timestamptz};
use diesel::{OptionalExtension, QueryableByName};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};

use crate::no_jit::NO_JIT;

/// What [`retry`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryResult {
    /// The job is pending again.
    Retried,
    /// The job is not failed or cancelled (or does not exist).
    NotRetryable,
    /// Another job of the same task holds its dedupe key and is still
    /// scheduled, pending or running; this one stays as it was.
    KeyTaken(i64),
}

/// The columns a retried job gets: due now, with its used attempts reset
/// (`attempt` itself is the fencing counter and never goes back, so the
/// attempts used, `attempt - handbacks`, go to zero through `handbacks`),
/// its error history kept.
const RETRIED: &str = "state = 'pending', run_at = now(), handbacks = attempt, \
     finished_at = NULL, started_at = NULL, worker_id = NULL, cancel_requested = false";

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[derive(QueryableByName)]
struct Id {
    #[diesel(sql_type = BigInt)]
    id: i64,
}

/// Makes a failed or cancelled job pending again, due now, and wakes the
/// workers of its queue (at commit). One statement (run again, outside a
/// transaction, when a concurrent retry moved the row first: see
/// [`crate::cancel`]).
pub async fn retry(conn: &mut AsyncPgConnection, id: i64) -> diesel::QueryResult<RetryResult> {
    crate::moved_row::rerun_if_moved!(conn, retry_once(conn, id).await)
}

async fn retry_once(conn: &mut AsyncPgConnection, id: i64) -> diesel::QueryResult<RetryResult> {
    let holder: Option<Id> = diesel::sql_query(
        "SELECT o.id FROM jobq.jobs j JOIN jobq.jobs o \
             ON o.task = j.task AND o.dedupe_key = j.dedupe_key \
            AND o.state IN ('scheduled', 'pending', 'running') \
         WHERE j.id = $1 AND j.state IN ('failed', 'cancelled') AND o.id <> j.id \
         LIMIT 1",
    )
    .bind::<BigInt, _>(id)
    .get_result(conn)
    .await
    .optional()?;
    if let Some(holder) = holder {
        return Ok(RetryResult::KeyTaken(holder.id));
    }
    let row: Count = diesel::sql_query(format!(
        "WITH retried AS ( \
             UPDATE jobq.jobs SET {RETRIED} \
             WHERE id = $1 AND state IN ('failed', 'cancelled') \
             RETURNING queue) \
         SELECT count(pg_notify('jobq_jobs', '0 ' || queue)) AS n FROM retried"
    ))
    .bind::<BigInt, _>(id)
    .get_result(conn)
    .await?;
    Ok(if row.n > 0 {
        RetryResult::Retried
    } else {
        RetryResult::NotRetryable
    })
}

/// The statement of [`retry_failed`]: `$1` the task.
pub fn retry_failed_sql() -> String {
    format!(
        "WITH retried AS ( \
             UPDATE jobq.jobs SET {RETRIED} \
             WHERE id = ANY(ARRAY( \
                 SELECT f.id FROM ( \
                     SELECT id, task, dedupe_key, row_number() OVER ( \
                         PARTITION BY dedupe_key ORDER BY id DESC) AS newest \
                     FROM jobq.jobs WHERE task = $1 AND state = 'failed') f \
                 WHERE f.dedupe_key IS NULL OR (f.newest = 1 AND NOT EXISTS ( \
                     SELECT 1 FROM jobq.jobs o \
                     WHERE o.task = f.task AND o.dedupe_key = f.dedupe_key \
                       AND o.state IN ('scheduled', 'pending', 'running'))))) \
               AND state = 'failed' \
             RETURNING queue) \
         SELECT (SELECT count(*) FROM retried) AS n, \
                (SELECT count(pg_notify('jobq_jobs', '0 ' || queue)) \
                 FROM (SELECT DISTINCT queue FROM retried) q) AS woken"
    )
}

/// Makes every failed job of `task` pending again, as [`retry`] does, in
/// one statement; returns how many. A job whose dedupe key another live
/// job holds stays failed, and of several failed jobs sharing a key only
/// the newest is retried (the key admits one live job).
pub async fn retry_failed(conn: &mut AsyncPgConnection, task: &str) -> diesel::QueryResult<i64> {
    let row: Count = diesel::sql_query(retry_failed_sql())
        .bind::<Text, _>(task)
        .get_result(conn)
        .await?;
    Ok(row.n)
}

/// The statement of [`purge`]: `$1` the states (text[]), `$2` the age in
/// milliseconds, `$3` the batch size.
pub const PURGE_SQL: &str = "\
    WITH gone AS ( \
        DELETE FROM jobq.jobs WHERE id = ANY(ARRAY( \
            SELECT id FROM jobq.jobs \
            WHERE state IN ('completed', 'failed', 'cancelled') \
              AND unique_until IS NULL \
              AND state::text = ANY($1) \
              AND finished_at < now() - $2 * interval '1 millisecond' \
            LIMIT $3)) \
          AND state IN ('completed', 'failed', 'cancelled') \
        RETURNING 1) \
    SELECT count(*) AS n FROM gone";

/// Deletes up to `limit` jobs in `states` (each one of completed, failed,
/// cancelled) that finished more than `older_than_ms` ago, through
/// `jobs_finished_idx` (jobs whose unique key is still held are kept);
/// returns how many went. Call again while it returns `limit`.
pub async fn purge(
    conn: &mut AsyncPgConnection,
    states: &[String],
    older_than_ms: i64,
    limit: i64,
) -> diesel::QueryResult<i64> {
    let row: Count = diesel::sql_query(PURGE_SQL)
        .bind::<Array<Text>, _>(states)
        .bind::<BigInt, _>(older_than_ms)
        .bind::<BigInt, _>(limit)
        .get_result(conn)
        .await?;
    Ok(row.n)
}

/// Which jobs [`list_jobs`] returns. Every field left `None` matches all.
#[derive(Debug, Clone, Default)]
pub struct JobQuery<'a> {
    /// Only jobs in this state.
    pub state: Option<&'a str>,
    /// Only jobs of this task.
    pub task: Option<&'a str>,
    /// Only jobs on this queue.
    pub queue: Option<&'a str>,
    /// Only jobs with this dedupe key.
    pub dedupe_key: Option<&'a str>,
    /// Only jobs created at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only jobs with a smaller id (keyset paging: the last id of the
    /// previous page).
    pub before_id: Option<i64>,
    /// At most this many.
    pub limit: i64,
}

/// One line of a job listing: a job without its payload and errors.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct JobSummaryRow {
    /// Row id.
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    /// Task name.
    #[diesel(sql_type = Text)]
    pub task: String,
    /// Queue name.
    #[diesel(sql_type = Text)]
    pub queue: String,
    /// Its state.
    #[diesel(sql_type = Text)]
    pub state: String,
    /// Higher runs first.
    #[diesel(sql_type = SmallInt)]
    pub priority: i16,
    /// Attempts used.
    #[diesel(sql_type = Integer)]
    pub attempt: i32,
    /// Attempts allowed.
    #[diesel(sql_type = Integer)]
    pub max_attempts: i32,
    /// When it is (or was) due.
    #[diesel(sql_type = Timestamptz)]
    pub run_at: DateTime<Utc>,
    /// When it was enqueued.
    #[diesel(sql_type = Timestamptz)]
    pub created_at: DateTime<Utc>,
    /// When it finished.
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub finished_at: Option<DateTime<Utc>>,
    /// Its dedupe key.
    #[diesel(sql_type = Nullable<Text>)]
    pub dedupe_key: Option<String>,
}

/// Jobs matching `query`, newest (highest id) first. Only the filters
/// given are in the statement, each a bound parameter but the state (see
/// [`list_jobs_sql`] for the indexes each reads). A state that is not a
/// job state is an error.
pub async fn list_jobs(
    conn: &mut AsyncPgConnection,
    query: &JobQuery<'_>,
) -> diesel::QueryResult<Vec<JobSummaryRow>> {
    if let Some(state) = query.state.filter(|s| known_state(s).is_none()) {
        return Err(diesel::result::Error::QueryBuilderError(
            format!(
                "{:?} is not a job state",
                state.chars().take(100).collect::<String>()
            )
            .into(),
        ));
    }
    let mut q = diesel::sql_query(list_jobs_sql(query)).into_boxed::<Pg>();
    if let Some(task) = query.task {
        q = q.bind::<Text, _>(task.to_owned());
    }
    if let Some(queue) = query.queue {
        q = q.bind::<Text, _>(queue.to_owned());
    }
    if let Some(key) = query.dedupe_key {
        q = q.bind::<Text, _>(key.to_owned());
    }
    if let Some(since) = query.since {
        q = q.bind::<Timestamptz, _>(since);
    }
    if let Some(before) = query.before_id {
        q = q.bind::<BigInt, _>(before);
    }
    q = q.bind::<BigInt, _>(query.limit);
    // The claims' ranges expanded for running jobs make estimates far
    // above jit_above_cost: compiling would cost more than the listing.
    conn.transaction::<_, diesel::result::Error, _>(async |conn| {
        conn.batch_execute(NO_JIT).await?;
        q.load(conn).await
    })
    .await
}

/// The statement [`list_jobs`] runs for `query`, with a parameter for each
/// filter given except the state, in the order of [`JobQuery`]'s fields,
/// the limit last (for `EXPLAIN` in tests).
///
/// The state is written into the statement (one of the six names, never
/// the caller's text; [`list_jobs`] refuses any other): compared with a
/// parameter cast to the enum, which PostgreSQL does not fold while
/// planning, it could not be matched with the partial indexes' predicates,
/// and every listing by state walked the primary key.
///
/// Every filter is a plain equality or range the planner can match with
/// an index; which index serves a page depends on the state:
///
/// | filter | read through |
/// | --- | --- |
/// | a finished state and a task | `jobs_finished_task_idx`, in id order |
/// | scheduled and a task | `jobs_scheduled_idx` (that task's scheduled ids) |
/// | failed or cancelled and a queue | `jobs_failed_idx` (that queue's ids) |
/// | running | `jobq.claims`, then the primary key |
/// | a dedupe key | `jobs_dedupe_key_idx`, in id order |
/// | a task without a state | one branch per state (as above), merged |
/// | anything else | the primary key newest first, or the state's partial index |
pub fn list_jobs_sql(query: &JobQuery<'_>) -> String {
    let params = ListParams::of(query);
    match (query.state, query.task) {
        // A task alone: finished jobs of a rare task (or of one whose jobs
        // are all old) are far apart in the primary key, so each state is
        // read through its own index, newest first, and the branches are
        // merged.
        (None, Some(_)) => {
            let branches: Vec<String> = JOB_STATES
                .iter()
                .map(|state| format!("({})", select_jobs(query, &params, StateIs::Known(state))))
                .collect();
            format!(
                "SELECT * FROM ({}) AS j ORDER BY id DESC LIMIT ${}",
                branches.join(" UNION ALL "),
                params.limit
            )
        }
        (Some(state), _) => select_jobs(query, &params, StateIs::Known(state)),
        (None, None) => select_jobs(query, &params, StateIs::Any),
    }
}

/// Every state a job can be in.
const JOB_STATES: [&str; 6] = [
    "scheduled",
    "pending",
    "running",
    "completed",
    "failed",
    "cancelled",
];

/// `state` as one of [`JOB_STATES`], if it is one.
fn known_state(state: &str) -> Option<&'static str> {
    JOB_STATES.iter().copied().find(|s| *s == state)
}

/// The parameter number of each filter [`list_jobs`] binds (`0`: not
/// given), in the order it binds them.
struct ListParams {
    task: usize,
    queue: usize,
    dedupe_key: usize,
    since: usize,
    before_id: usize,
    limit: usize,
}

impl ListParams {
    fn of(query: &JobQuery<'_>) -> Self {
        let mut n = 0;
        let mut next = |given: bool| {
            if given {
                n += 1;
                n
            } else {
                0
            }
        };
        Self {
            task: next(query.task.is_some()),
            queue: next(query.queue.is_some()),
            dedupe_key: next(query.dedupe_key.is_some()),
            since: next(query.since.is_some()),
            before_id: next(query.before_id.is_some()),
            limit: next(true),
        }
    }
}

/// A condition on the ids of the jobs in `state` whose `column` equals
/// parameter `n`, read as a whole from that state's partial index.
fn ids_in_state(state: &str, column: &str, n: usize) -> String {
    format!(
        " AND id = ANY(ARRAY(SELECT id FROM jobq.jobs \
         WHERE state = '{state}' AND {column} = ${n}))"
    )
}

/// Which jobs one `SELECT` of a listing takes by state.
enum StateIs<'a> {
    /// Jobs in any state.
    Any,
    /// Jobs in this state, if it is one of [`JOB_STATES`] (else none:
    /// [`list_jobs`] refuses such a query before it gets here).
    Known(&'a str),
}

/// One `SELECT` of a listing: the jobs in `state` matching the query's
/// other filters, newest first, at most the limit.
fn select_jobs(query: &JobQuery<'_>, p: &ListParams, state: StateIs<'_>) -> String {
    let mut sql = String::from(
        "SELECT id, task, queue, state::text AS state, priority, \
             attempt - handbacks AS attempt, max_attempts, run_at, created_at, finished_at, \
             dedupe_key \
         FROM jobq.jobs WHERE true",
    );
    let state = match state {
        StateIs::Any => None,
        StateIs::Known(name) => {
            let known = known_state(name);
            match known {
                Some(known) => sql.push_str(&format!(" AND state = '{known}'")),
                None => sql.push_str(" AND false"),
            }
            known
        }
    };
    match state {
        // Running jobs have no index of their own (it would cost every
        // claim an entry), and statistics nearly always see none, which
        // makes a scan of the table look cheap: find them through the
        // claims that hold them and the primary key, as heartbeats do.
        Some("running") => sql.push_str(
            " AND id = ANY(ARRAY(SELECT generate_series(lower(r), upper(r) - 1) \
             FROM jobq.claims c, unnest(c.jobs) AS r))",
        ),
        // No index holds scheduled jobs by task, nor failed or cancelled
        // ones by queue in id order; walking the primary key for a task or
        // queue with few such jobs would read every finished one. Their ids
        // come from the state's own index instead (jobs_scheduled_idx,
        // jobs_failed_idx): the cost follows the jobs in that state, not
        // the table.
        Some("scheduled") if query.task.is_some() => {
            sql.push_str(&ids_in_state("scheduled", "task", p.task));
        }
        Some(name @ ("failed" | "cancelled")) if query.task.is_none() && query.queue.is_some() => {
            sql.push_str(&ids_in_state(name, "queue", p.queue));
        }
        _ => {}
    }
    for (given, column, n) in [
        (query.task.is_some(), "task =", p.task),
        (query.queue.is_some(), "queue =", p.queue),
        (query.dedupe_key.is_some(), "dedupe_key =", p.dedupe_key),
        (query.since.is_some(), "created_at >=", p.since),
        (query.before_id.is_some(), "id <", p.before_id),
    ] {
        if given {
            sql.push_str(&format!(" AND {column} ${n}"));
        }
    }
    sql.push_str(&format!(" ORDER BY id DESC LIMIT ${}", p.limit));
    sql
}

#[derive(QueryableByName)]
struct Known {
    #[diesel(sql_type = diesel::sql_types::Bool)]
    known: bool,
}

/// The statement of [`task_has_jobs`]: `$1` the task.
pub const TASK_HAS_JOBS_SQL: &str = "\
    SELECT EXISTS (SELECT 1 FROM jobq.jobs WHERE task = $1 AND state = 'pending') \
        OR EXISTS (SELECT 1 FROM jobq.jobs WHERE task = $1 \
                   AND state IN ('failed', 'cancelled')) AS known";

/// Whether jobq.jobs holds a pending, failed or cancelled job of `task`
/// (the states whose indexes find a task cheaply). Used by tools that have no task registry
/// to warn about a mistyped task name.
pub async fn task_has_jobs(conn: &mut AsyncPgConnection, task: &str) -> diesel::QueryResult<bool> {
    let row: Known = diesel::sql_query(TASK_HAS_JOBS_SQL)
        .bind::<Text, _>(task)
        .get_result(conn)
        .await?;
    Ok(row.known)
}

/// Drops the `jobq` schema with every job, worker row and the migration
/// history in it. Not reversible.
pub async fn uninstall(conn: &mut AsyncPgConnection) -> diesel::QueryResult<()> {
    conn.batch_execute("DROP SCHEMA IF EXISTS jobq CASCADE")
        .await
}
