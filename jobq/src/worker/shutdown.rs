//! Stopping a worker: the signals `run` waits for, and the handle of a
//! spawned worker.

use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::running::SHUTDOWN_BOUND;
use crate::Error;

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
#[must_use = "the worker runs until .shutdown().await is called on this handle"]
pub struct ShutdownHandle {
    stop: CancellationToken,
    join: JoinHandle<Result<(), Error>>,
}

impl ShutdownHandle {
    /// The most [`shutdown`](Self::shutdown) takes beyond the worker's
    /// shutdown timeout, even when the database stops answering: writing
    /// the last outcomes and removing the worker row are each given up
    /// after a few seconds (the jobs then go back to the queue with the
    /// worker's lease).
    pub const MAX_OVERRUN: Duration = SHUTDOWN_BOUND;

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
