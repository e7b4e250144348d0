//! The "jobq SQL loop": jobq's own claim and outcome statements
//! (`jobq_diesel::claim`, `jobq_diesel::write_outcomes`) in a loop, without
//! the runtime around them. Next to the minimal loop ([`crate::limit`]) it
//! splits jobq's distance from the limit in two: what jobq's statements
//! cost beyond the minimal ones (the worker id that makes rescue possible,
//! the attempt fence, the payload and task returned to the handler), and
//! what the runtime costs beyond its statements.

use diesel_async::AsyncPgConnection;
use jobq_diesel::{ClaimRequest, Outcome, OutcomeKind, WorkerInfo};

use crate::db;
use crate::limit;

/// Claim batch, like the minimal loop's.
const BATCH: i32 = 1000;

/// Claims and completes jobs of `task` on `conn`, 1,000 per claim, until
/// `until` jobs are done or none is left; returns how many were done.
pub async fn drain_on(
    conn: &mut AsyncPgConnection,
    task: &str,
    until: Option<usize>,
) -> anyhow::Result<usize> {
    let worker_id = jobq_diesel::register_worker(
        conn,
        &WorkerInfo {
            hostname: "bench".into(),
            pid: 0,
            queues: vec!["default".into()],
            // This loop never heartbeats, and claims need a heartbeat
            // within the lease: one longer than any run.
            lease: std::time::Duration::from_secs(7 * 24 * 3600),
        },
    )
    .await?;
    let queues = vec!["default".to_owned()];
    let tasks = vec![task.to_owned()];
    let slots = vec![BATCH];
    let mut done = 0usize;
    let mut claim_key = 0;
    // As the worker does: each claim starts at the last job this loop
    // took (no job is enqueued meanwhile, so nothing lands before it).
    let mut floors = vec![None];
    while until.is_none_or(|n| done < n) {
        claim_key += 1;
        let request = ClaimRequest {
            worker_id,
            queues: &queues,
            tasks: &tasks,
            slots: &slots,
            claim_key,
            due: false,
            floors: &floors,
            // One loop: a lane would only add its transaction.
            lanes: None,
        };
        let claimed = jobq_diesel::claim(conn, &request).await?;
        if claimed.is_empty() {
            break;
        }
        floors[0] = claimed.iter().map(|j| j.position).max();
        let outcomes: Vec<Outcome> = claimed
            .iter()
            .map(|j| Outcome {
                id: j.id,
                attempt: j.attempt,
                kind: OutcomeKind::Completed,
                message: None,
                output: None,
            })
            .collect();
        // Every job of the claim is settled here: its row goes too.
        let mut claims: Vec<i64> = claimed.iter().map(|j| j.claim).collect();
        claims.dedup();
        jobq_diesel::write_outcomes(conn, &outcomes, &claims).await?;
        done += claimed.len();
    }
    Ok(done)
}

/// Like [`limit::measure`], with jobq's statements: `jobs` fresh jobs
/// drained by `loops` parallel loops, on a settled table (see
/// [`db::settle`]).
pub async fn measure(url: &str, jobs: u64, loops: usize) -> anyhow::Result<limit::Rate> {
    let mut conn = db::connect(url).await?;
    limit::insert_jobs(&mut conn, limit::LIMIT_TASK, jobs).await?;
    db::settle(&mut conn).await?;
    limit::in_parallel(url, loops, |mut conn| async move {
        drain_on(&mut conn, limit::LIMIT_TASK, None).await
    })
    .await
}
