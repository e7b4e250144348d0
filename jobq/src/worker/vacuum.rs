//! The vacuum loop: vacuums jobq's tables where autovacuum does not, or
//! where it fell far behind (see [`jobq_diesel::vacuum`]). A task of its
//! own, so that a long vacuum of the finished history never holds up the
//! maintenance pass (rescues), and checked every second: a busy active
//! partition gathers dead rows by the hundred thousand a second, and the
//! check is one read of the statistics. `SKIP_LOCKED` lets one worker at a
//! time vacuum a partition.

use std::sync::Arc;
use std::time::Duration;

use jobq_diesel::{StatementTimeout, Vacuum, VacuumPace};

use super::error_text::error_chain;
use super::repeated_warning::RepeatedWarning;
use super::state::Shared;

/// How often the statistics are read, at most (the maintenance interval
/// when it is shorter).
const CHECK_EVERY: Duration = Duration::from_secs(1);

pub(crate) async fn run(shared: Arc<Shared>) {
    if !shared.config.vacuum {
        return;
    }
    let mut ticker = tokio::time::interval(CHECK_EVERY.min(shared.config.maintenance_interval));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pace = VacuumPace::new();
    // A standing condition (a role that may not vacuum, a role-level
    // timeout behind PgBouncer) is one line in the log, not one a second.
    let mut warning = RepeatedWarning::default();
    loop {
        ticker.tick().await;
        match pass(&shared, &mut pace).await {
            Ok(Vacuum::NotAllowed { dead_rows }) => {
                if warning.is_new("not allowed") {
                    tracing::warn!(
                        dead_rows,
                        "autovacuum is off for jobq.jobs and this role may not vacuum it \
                         (it needs to own the table or the database): dead rows will pile up; \
                         turn autovacuum on, or vacuum jobq.jobs from a job of your own"
                    );
                }
            }
            Ok(outcome) => {
                warning.cleared();
                if let Vacuum::Vacuumed { dead_rows } = outcome {
                    tracing::debug!(dead_rows, "vacuumed jobq.jobs");
                }
            }
            Err(e) if warning.is_new(&e) => {
                tracing::warn!(
                    error = %e,
                    "vacuum failed; trying again each check, warning again only if the error changes"
                );
            }
            Err(e) => tracing::debug!(error = %e, "vacuum failed again"),
        }
    }
}

async fn pass(shared: &Shared, pace: &mut VacuumPace) -> Result<Vacuum, String> {
    let mut conn = shared.pool.get().await.map_err(|e| error_chain(&e))?;
    let due = match jobq_diesel::check_vacuum(&mut conn, pace).await {
        Ok(Ok(due)) => due,
        Ok(Err(nothing_to_do)) => return Ok(nothing_to_do),
        Err(e) => return Err(format!("reading the statistics: {e}")),
    };
    let vacuumed = match &shared.vacuum_pool {
        Some(pool) => {
            drop(conn);
            let mut own = pool.get().await.map_err(|e| error_chain(&e))?;
            due.run(&mut own, pace, StatementTimeout::NotSet).await
        }
        None => {
            due.run(&mut conn, pace, StatementTimeout::LiftForThePass)
                .await
        }
    };
    vacuumed.map_err(|e| format!("vacuum: {e}"))
}
