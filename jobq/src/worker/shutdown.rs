//! Starting the worker's loops and stopping them gracefully.

use std::sync::Arc;
use std::time::Duration;

use jobq_diesel::{Outcome, OutcomeKind, WorkerInfo};
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::state::{lock, Finished, Shared};
use super::{completer, fetcher, heartbeat, listen, maintenance};
use crate::Error;

/// How long the final outcome writes may keep retrying after the shutdown
/// timeout before the worker exits anyway (its jobs are then rescued).
const FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

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
    pub(crate) fn start(shared: Arc<Shared>, info: WorkerInfo) -> Self {
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
        ];
        if shared.config.listen {
            background.push(tokio::spawn(listen::run(Arc::clone(&shared))));
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
        // Ask the running attempts to stop; any that starts from now on
        // sees `stopping` (see `executor::spawn`).
        for job in lock(&shared.in_flight).values() {
            job.cancel.cancel();
        }
        if let Err(e) = self.fetcher.await {
            tracing::error!(error = %e, "the fetcher ended abnormally");
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Register interest before checking, so a job finishing in
            // between still wakes us.
            let idle = shared.idle.notified();
            if lock(&shared.in_flight).is_empty() {
                break;
            }
            tokio::select! {
                _ = idle => {}
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        let left: Vec<(i64, i32, i64, Option<tokio::task::AbortHandle>)> = lock(&shared.in_flight)
            .drain()
            .map(|(id, job)| (id, job.attempt, job.claim, job.abort))
            .collect();
        for (id, attempt, claim, abort) in left {
            if let Some(abort) = abort {
                abort.abort();
            }
            tracing::warn!(
                job.id = id,
                job.attempt = attempt,
                "handing back a job unfinished at the shutdown timeout"
            );
            let released = Outcome {
                id,
                attempt,
                kind: OutcomeKind::Released,
                message: Some(format!(
                    "worker shutting down: the attempt did not finish within the shutdown timeout of {timeout:?}"
                )),
            };
            // The completer is still receiving, so this cannot fail.
            shared
                .unwritten
                .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
            let _ = self.outcomes.send(Finished {
                outcome: released,
                claim: Some(claim),
            });
        }
        drop(self.outcomes);
        // Nothing runs any more: the heartbeat (which may also hand jobs
        // to the completer) stops before the completer's last round.
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
        match shared.pool.get().await {
            Ok(mut conn) => {
                if let Err(e) = jobq_diesel::deregister_worker(&mut conn, shared.worker_id).await {
                    tracing::warn!(error = %e, "could not remove the worker row; it expires with the lease");
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not remove the worker row; it expires with the lease")
            }
        }
        tracing::info!(worker.id = shared.worker_id, "worker stopped");
    }
}

/// Resolves on SIGINT or SIGTERM.
pub(crate) async fn signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
}

/// Stops a worker started with [`crate::Worker::spawn`].
#[derive(Debug)]
pub struct ShutdownHandle {
    stop: CancellationToken,
    join: JoinHandle<Result<(), Error>>,
}

impl ShutdownHandle {
    pub(crate) fn new(stop: CancellationToken, join: JoinHandle<Result<(), Error>>) -> Self {
        Self { stop, join }
    }

    /// Shuts the worker down gracefully and waits until it has stopped.
    pub async fn shutdown(self) -> Result<(), Error> {
        self.stop.cancel();
        self.wait().await
    }

    /// Waits for the worker to stop by itself (it only does on errors).
    pub async fn wait(self) -> Result<(), Error> {
        match self.join.await {
            Ok(result) => result,
            Err(e) => Err(Error::WorkerPanicked(e.to_string())),
        }
    }

    /// Whether the worker has stopped.
    pub fn is_finished(&self) -> bool {
        self.join.is_finished()
    }
}
