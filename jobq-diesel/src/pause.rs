//! Pausing and resuming queues fleet-wide. The paused queues are rows of
//! `jobq.paused_queues`, which every claim reads (see [`crate::CLAIM_SQL`]),
//! so a pause holds for every worker from the moment it commits, and
//! across restarts.

use diesel::sql_types::Text;
use diesel::QueryableByName;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

/// Pauses `queue`; returns whether it was running until now (false when
/// it was already paused). Takes effect at commit of the caller's
/// transaction.
pub async fn pause_queue(conn: &mut AsyncPgConnection, queue: &str) -> diesel::QueryResult<bool> {
    let n = diesel::sql_query(
        "INSERT INTO jobq.paused_queues (queue) VALUES ($1) ON CONFLICT (queue) DO NOTHING",
    )
    .bind::<Text, _>(queue)
    .execute(conn)
    .await?;
    Ok(n > 0)
}

/// Resumes `queue`; returns whether it was paused. Wakes the queue's
/// workers through the `jobq_jobs` channel (delivered at commit), as an
/// insert of a due job would, so they claim at once instead of at their
/// next poll.
pub async fn resume_queue(conn: &mut AsyncPgConnection, queue: &str) -> diesel::QueryResult<bool> {
    let n = diesel::sql_query(
        "WITH resumed AS (DELETE FROM jobq.paused_queues WHERE queue = $1 RETURNING queue) \
         SELECT pg_notify('jobq_jobs', '0 ' || queue) FROM resumed",
    )
    .bind::<Text, _>(queue)
    .execute(conn)
    .await?;
    Ok(n > 0)
}

#[derive(QueryableByName)]
struct Queue {
    #[diesel(sql_type = Text)]
    queue: String,
}

/// The paused queues, by name.
pub async fn paused_queues(conn: &mut AsyncPgConnection) -> diesel::QueryResult<Vec<String>> {
    let rows: Vec<Queue> = diesel::sql_query("SELECT queue FROM jobq.paused_queues ORDER BY queue")
        .load(conn)
        .await?;
    Ok(rows.into_iter().map(|r| r.queue).collect())
}
