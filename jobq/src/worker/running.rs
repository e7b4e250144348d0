//! Starting the worker's loops, and stopping them gracefully: the one
//! place that knows which loops a worker runs and in which order they
//! stop.

use std::sync::Arc;
use std::time::Duration;

use jobq_diesel::{OutcomeKind, WorkerInfo};
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::error_text::error_chain;
use super::state::{Finished, Shared};
use super::{
    completer, executor, fetcher, head_probe, heartbeat, listen, maintenance, scheduler, vacuum,
};

/// How long the final outcome writes may keep trying after the shutdown
/// timeout before the worker exits anyway (its jobs are then rescued).
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// How long removing the worker's row may take at the very end.
const DEREGISTER_TIMEOUT: Duration = Duration::from_secs(2);

/// The most a shutdown takes beyond the shutdown timeout, even when the
/// database stops answering: the final flush and the removal of the
/// worker row, each bounded.
pub(crate) const SHUTDOWN_BOUND: Duration = FLUSH_TIMEOUT.saturating_add(DEREGISTER_TIMEOUT);

/// The loops of a running worker.
pub(crate) struct Running {
    shared: Arc<Shared>,
    outcomes: UnboundedSender<Finished>,
    fetcher: JoinHandle<()>,
    completer: JoinHandle<()>,
    completer_stop: CancellationToken,
    completer_give_up: CancellationToken,
    background: Vec<JoinHandle<()>>,
}

impl Running {
    pub(crate) fn start(
        shared: Arc<Shared>,
        info: WorkerInfo,
        schedules: Arc<[scheduler::ScheduleSpec]>,
    ) -> Self {
        let (tx, rx) = unbounded_channel();
        let completer_stop = CancellationToken::new();
        let completer_give_up = CancellationToken::new();
        let completer = tokio::spawn(completer::run(
            Arc::clone(&shared),
            rx,
            completer_stop.clone(),
            completer_give_up.clone(),
        ));
        let mut background = vec![
            tokio::spawn(heartbeat::run(Arc::clone(&shared), info)),
            tokio::spawn(maintenance::run(Arc::clone(&shared))),
            tokio::spawn(vacuum::run(Arc::clone(&shared))),
            tokio::spawn(scheduler::run(Arc::clone(&shared), schedules)),
        ];
        #[cfg(feature = "metrics")]
        background.push(tokio::spawn(super::gauges::run(Arc::clone(&shared))));
        if shared.config.listen {
            background.push(tokio::spawn(listen::run(Arc::clone(&shared))));
            background.push(tokio::spawn(head_probe::run(Arc::clone(&shared))));
        } else {
            // Claim floors move back only on notifications.
            shared.floors.turn_off();
        }
        let fetcher = tokio::spawn(fetcher::run(Arc::clone(&shared), tx.clone()));
        Self {
            shared,
            outcomes: tx,
            fetcher,
            completer,
            completer_stop,
            completer_give_up,
            background,
        }
    }

    /// Graceful shutdown: stop claiming, ask running attempts to stop, wait
    /// for them up to the shutdown timeout, hand the rest back, write every
    /// outcome, and leave the worker row only if jobs could not be settled.
    pub(crate) async fn stop(self) {
        let shared = self.shared;
        let timeout = shared.config.shutdown_timeout;
        shared.stopping.cancel();
        // Ask the running attempts to stop; any that starts from now on is
        // stopped at once.
        shared.attempts.close();
        let deadline = tokio::time::Instant::now() + timeout;
        // The fetcher stops at once unless a claim is on its way; a claim
        // the database does not answer is given up at the deadline (its
        // jobs, if it committed, are rescued with this worker's lease).
        let mut fetcher = self.fetcher;
        match tokio::time::timeout_at(deadline, &mut fetcher).await {
            Ok(Err(e)) => tracing::error!(error = %e, "the fetcher ended abnormally"),
            Ok(Ok(())) => {}
            Err(_) => {
                fetcher.abort();
                tracing::warn!(
                    "a claim got no answer from the database by the shutdown timeout; gave it up"
                );
            }
        }
        shared.attempts.wait_idle(deadline).await;
        for owned in shared.attempts.take_all() {
            tracing::warn!(
                job.id = owned.0.id,
                job.attempt = owned.0.attempt,
                "handing back a job unfinished at the shutdown timeout"
            );
            let message = format!(
                "worker shutting down: the attempt did not finish within the shutdown timeout of {timeout:?}"
            );
            executor::send(
                &shared,
                &self.outcomes,
                owned,
                OutcomeKind::Released,
                Some(message),
                None,
            );
        }
        drop(self.outcomes);
        // Nothing runs any more: the background loops stop before the
        // completer's last round.
        for task in &self.background {
            task.abort();
        }
        self.completer_stop.cancel();
        let give_up = self.completer_give_up.clone();
        let flush_timer = tokio::spawn(async move {
            tokio::time::sleep(FLUSH_TIMEOUT).await;
            give_up.cancel();
        });
        if let Err(e) = self.completer.await {
            tracing::error!(error = %e, "the completer ended abnormally");
        }
        flush_timer.abort();
        // Without its row, any job still marked running under this worker
        // (outcomes that could not be written) is rescued at the next
        // maintenance pass instead of after the lease.
        let deregistered = tokio::time::timeout(DEREGISTER_TIMEOUT, async {
            let mut conn = shared.pool.get().await.map_err(|e| error_chain(&e))?;
            jobq_diesel::deregister_worker(&mut conn, shared.worker_id)
                .await
                .map_err(|e| error_chain(&e))
        })
        .await
        .unwrap_or_else(|_| Err("the database did not answer".into()));
        if let Err(e) = deregistered {
            tracing::warn!(error = %e, "could not remove the worker row; it expires with the lease");
        }
        tracing::info!(worker.id = shared.worker_id, "worker stopped");
    }
}
