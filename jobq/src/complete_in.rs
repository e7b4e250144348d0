//! Completing a job inside the handler's own transaction
//! ([`Context::complete_in`](crate::Context::complete_in)): the attempt's
//! fence, and what the worker learns from it.
//!
//! The completion is the completer's own statement for one row (same fence,
//! same SET list, see `jobq_diesel::complete_in_transaction`), run on the
//! handler's connection, so it commits or rolls back with the handler's
//! writes. The worker still sends the attempt's outcome when the handler
//! returns, as for any attempt: it settles the claim, and it completes the
//! job when the handler's transaction rolled back after all. When the
//! completion committed, the fence leaves that outcome nothing to write,
//! and the outcome writer says nothing about it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use diesel_async::AsyncPgConnection;
use jobq_diesel::CompletedIn;

use crate::{Error, JobId};

/// The live attempt as the job row counts it, and whether its handler
/// completed the job in a transaction of its own.
#[derive(Debug, Clone)]
pub(crate) struct Fence {
    /// The row's `attempt` (hand-backs included), not the number handlers
    /// see.
    attempt: i32,
    /// Set when the completion changed the row; whether the handler's
    /// transaction committed it is for the database to say.
    used: Arc<AtomicBool>,
}

impl Fence {
    pub(crate) fn new(attempt: i32) -> Self {
        Self {
            attempt,
            used: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Whether the handler completed its job in its own transaction (which
    /// may have rolled back since).
    pub(crate) fn used(&self) -> bool {
        self.used.load(Ordering::Relaxed)
    }
}

/// What is known of the attempt that completes its job.
pub(crate) struct Completing<'a> {
    pub(crate) job: JobId,
    /// The attempt's number, for the error.
    pub(crate) number: u32,
    pub(crate) task: &'static str,
    /// `None` outside a worker ([`crate::testing::run_inline`]): there is
    /// no job row to complete.
    pub(crate) fence: Option<&'a Fence>,
}

/// Marks the job completed on `conn`, with `output` (checked JSON text).
pub(crate) async fn complete(
    conn: &mut AsyncPgConnection,
    attempt: Completing<'_>,
    output: Option<String>,
) -> Result<(), Error> {
    let Some(fence) = attempt.fence else {
        return Ok(());
    };
    let done = jobq_diesel::complete_in_transaction(
        conn,
        attempt.job.get(),
        fence.attempt,
        output.as_deref(),
    )
    .await
    .map_err(Error::db(format!(
        "task {}: completing job {} in the handler's transaction",
        attempt.task, attempt.job
    )))?;
    match done {
        CompletedIn::Completed => {
            fence.used.store(true, Ordering::Relaxed);
            Ok(())
        }
        CompletedIn::Cancelled => Err(Error::CancelRequested { job: attempt.job }),
        CompletedIn::NotLive => Err(Error::Superseded {
            job: attempt.job,
            attempt: attempt.number,
        }),
    }
}
