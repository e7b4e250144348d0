//! Making a worker take claim lanes in a test: a fleet that outnumbers the
//! lanes, and the wait until the worker has counted it.

use std::time::{Duration, Instant};

use diesel::sql_types::BigInt;
use diesel_async::{AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};

/// The host name of the worker row [`another_worker`] adds.
const ELSEWHERE: &str = "elsewhere";

/// Registers a worker that runs nowhere, alive for an hour: with it the
/// fleet outnumbers one lane.
pub async fn another_worker(conn: &mut AsyncPgConnection) {
    conn.batch_execute(&format!(
        "INSERT INTO jobq.workers (hostname, pid, queues, lease_ms) \
         VALUES ('{ELSEWHERE}', 1, '{{default}}', 3600000)"
    ))
    .await
    .expect("another worker's row");
}

#[derive(diesel::QueryableByName)]
struct Beat {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// Waits until the real worker (one, besides [`another_worker`]) has
/// beaten twice: it learns the fleet's size from a heartbeat's reply (the
/// first comes at start-up), and the second one's commit means it has
/// read the first one's.
pub async fn until_the_fleet_is_counted(conn: &mut AsyncPgConnection) {
    let sql = format!(
        "SELECT coalesce(max(floor(extract(epoch FROM heartbeat_at - started_at) * 1e6)), 0)::bigint AS n \
         FROM jobq.workers WHERE hostname <> '{ELSEWHERE}'"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut first = None;
    loop {
        let beat = diesel::sql_query(&sql)
            .get_result::<Beat>(conn)
            .await
            .expect("the worker's heartbeat")
            .n;
        match first {
            _ if beat == 0 => {}
            None => first = Some(beat),
            Some(first) if beat > first => return,
            Some(_) => {}
        }
        assert!(Instant::now() < deadline, "the worker never beat twice");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Counts the claim lanes' advisory locks of the current database (other
/// tests may share the server) that meet `condition` (as `n`).
pub fn lane_locks(condition: &str) -> String {
    format!(
        "SELECT count(*) AS n FROM pg_locks WHERE locktype = 'advisory' \
         AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
         AND classid = {}::oid AND {condition}",
        jobq_diesel::LANE_LOCK_CLASS
    )
}
