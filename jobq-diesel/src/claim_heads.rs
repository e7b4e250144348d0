//! Where each task's claimable jobs begin: what a worker's claim floors
//! are checked against, off the claim path.

use chrono::{DateTime, Utc};
use diesel::sql_types::{Array, BigInt, SmallInt, Text, Timestamptz};
use diesel::QueryableByName;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::claim::claimable;
use crate::claim_position::ClaimPosition;
use crate::prepared::prepared;

/// The first claimable job of each task `$2` in the queues `$1`, by the
/// same conditions and in the same order as a claim takes them, without
/// locking anything: a job another claim holds right now counts too.
/// Tasks without one have no row. Public so that tests can `EXPLAIN` it.
#[doc(hidden)]
pub const CLAIM_HEADS_SQL: &str = concat!(
    "SELECT w.task, h.priority, h.run_at, h.id \
     FROM unnest($2::text[]) AS w(task) \
     CROSS JOIN LATERAL ( \
         SELECT priority, run_at, id FROM jobq.jobs \
         WHERE ",
    claimable!(),
    " \
         ORDER BY priority DESC, run_at, id \
         LIMIT 1 \
     ) h"
);

#[derive(QueryableByName)]
struct Head {
    #[diesel(sql_type = Text)]
    task: String,
    #[diesel(sql_type = SmallInt)]
    priority: i16,
    #[diesel(sql_type = Timestamptz)]
    run_at: DateTime<Utc>,
    #[diesel(sql_type = BigInt)]
    id: i64,
}

/// The position of the first claimable job of each of `tasks` in
/// `queues` (paused queues, blocked tasks and keys left out, as a claim
/// leaves them out), for the tasks that have one.
///
/// A worker whose claims start at a floor (see
/// [`crate::ClaimRequest::floors`]) lowers it to what this finds: jobs
/// nothing announced (a concurrent claim that locked a job and rolled
/// back, a key whose block ran out) are found this way, and the walk over
/// the dead entries below the floor that finding them takes happens here
/// instead of in a claim a handler waits for.
pub async fn claim_heads(
    conn: &mut AsyncPgConnection,
    queues: &[String],
    tasks: &[String],
) -> diesel::QueryResult<Vec<(String, ClaimPosition)>> {
    if tasks.is_empty() {
        return Ok(Vec::new());
    }
    let query = diesel::sql_query(CLAIM_HEADS_SQL)
        .bind::<Array<Text>, _>(queues)
        .bind::<Array<Text>, _>(tasks);
    let heads: Vec<Head> = prepared(query).load(conn).await?;
    Ok(heads
        .into_iter()
        .map(|h| {
            (
                h.task,
                ClaimPosition {
                    priority: h.priority,
                    run_at: h.run_at,
                    id: h.id,
                },
            )
        })
        .collect())
}
