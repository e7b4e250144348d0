//! The maintenance loop: rescue jobs of dead workers, prune finished jobs
//! (turning the ring of completed jobs' segments, deleting the others) and
//! forget the registrations of waiters that are gone. Every worker runs
//! it; advisory locks let one at a time do the work. (Vacuuming has a loop
//! of its own, `super::vacuum`.)

use std::sync::Arc;

use jobq_diesel::{PooledConnection, TruncationWait};

use super::error_text::error_chain;
use super::repeated_warning::RepeatedWarning;
use super::state::Shared;

/// Rows deleted per prune statement, to keep each transaction short.
const PRUNE_BATCH: i64 = 5_000;

pub(crate) async fn run(shared: Arc<Shared>) {
    let mut ticker = tokio::time::interval(shared.config.maintenance_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ring = Ring {
        wait: TruncationWait::new(),
        failing: RepeatedWarning::default(),
    };
    loop {
        ticker.tick().await;
        if let Err(e) = tick(&shared, &mut ring).await {
            tracing::warn!(error = %e, "maintenance failed; trying again next interval");
        }
    }
}

/// What the maintenance loop keeps between passes about the ring of
/// completed segments.
struct Ring {
    wait: TruncationWait,
    /// A role that may not truncate the segments (see docs/roles.md) fails
    /// every pass: one warning, not one every few seconds.
    failing: RepeatedWarning,
}

async fn tick(shared: &Shared, ring: &mut Ring) -> Result<(), String> {
    let mut conn = shared.pool.get().await.map_err(|e| error_chain(&e))?;
    rescue(shared, &mut conn).await?;
    prune(shared, &mut conn).await?;
    // Its failure does not hold up the rest of the pass.
    match turn_segments(shared, &mut conn, &mut ring.wait).await {
        Ok(()) => ring.failing.cleared(),
        Err(e) if ring.failing.is_new(&e) => tracing::warn!(
            error = %e,
            "completed jobs are not pruned a segment at a time (the role needs TRUNCATE on \
             jobq.jobs_completed_0..7, see docs/roles.md); trying again every pass, \
             warning again only if the error changes"
        ),
        Err(e) => tracing::debug!(error = %e, "turning the completed segments failed again"),
    }
    let forgotten = jobq_diesel::clean_awaited(&mut conn)
        .await
        .map_err(|e| format!("cleaning up the registrations of gone waiters: {e}"))?;
    if forgotten > 0 {
        tracing::debug!(
            forgotten,
            "removed the waited-job registrations of gone waiters"
        );
    }
    Ok(())
}

async fn rescue(shared: &Shared, conn: &mut PooledConnection<'_>) -> Result<(), String> {
    // Back from an outage (or just started), the others may not have
    // heartbeated again yet: see `standing`.
    let seen_for = shared.standing.unbroken_for(std::time::Instant::now());
    let rescued = jobq_diesel::rescue(conn, shared.worker_id, shared.config.lease, seen_for)
        .await
        .map_err(|e| format!("rescue: {e}"))?;
    for job in &rescued {
        tracing::warn!(
            job.id = job.id,
            job.task = %job.task,
            job.attempt = job.attempt,
            state = %job.state,
            "rescued a job whose worker stopped heartbeating"
        );
        crate::metrics::rescued(&job.task, &job.queue, &job.state);
    }
    Ok(())
}

async fn prune(shared: &Shared, conn: &mut PooledConnection<'_>) -> Result<(), String> {
    loop {
        let pruned = jobq_diesel::prune(conn, shared.config.retention, PRUNE_BATCH)
            .await
            .map_err(|e| format!("prune: {e}"))?;
        if pruned > 0 {
            tracing::debug!(pruned, "pruned finished jobs");
        }
        if pruned < PRUNE_BATCH {
            return Ok(());
        }
    }
}

async fn turn_segments(
    shared: &Shared,
    conn: &mut PooledConnection<'_>,
    wait: &mut TruncationWait,
) -> Result<(), String> {
    let turned =
        jobq_diesel::turn_completed_segments(conn, shared.config.retention.completed, wait.next())
            .await
            .map_err(|e| format!("turning the segments of completed jobs: {e}"))?;
    wait.after(&turned);
    if !turned.truncated.is_empty() || turned.opened.is_some() {
        tracing::debug!(
            truncated = ?turned.truncated,
            opened = ?turned.opened,
            "turned the segments of completed jobs"
        );
    }
    if !turned.busy.is_empty() {
        // Readers of jobq.jobs held the segment past the truncation's
        // wait; its jobs stay a pass longer, and the next wait is longer.
        tracing::debug!(
            busy = ?turned.busy,
            next_wait = ?wait.next(),
            "segments of completed jobs due for truncation were in use; trying again next pass"
        );
    }
    Ok(())
}
