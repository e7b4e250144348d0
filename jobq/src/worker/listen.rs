//! The listener loop: turns notifications into wake-ups and cancellations,
//! and reconnects by itself when the connection drops.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jobq_diesel::{Listener, Notification};

use super::backoff::Backoff;
use super::error_text::error_chain;
use super::state::Shared;

const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(5);

/// How long a probe notification may take to come back before the worker
/// concludes that notifications do not reach its listener.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) async fn run(shared: Arc<Shared>) {
    let mut backoff = Backoff::new(Duration::from_millis(100), MAX_RECONNECT_DELAY);
    let mut connected_before = false;
    // Whether a probe has shown that notifications reach the listener;
    // checked once per worker (the route to the database does not change).
    let mut verified = false;
    loop {
        let connected = match &shared.config.listen_url {
            Some(url) => Listener::connect_with(&url.0).await,
            None => Listener::connect(&shared.pool).await,
        };
        let mut listener = match connected {
            Ok(listener) => listener,
            Err(e) => {
                let retry_in = backoff.next_delay();
                tracing::warn!(error = %error_chain(&e), ?retry_in, "LISTEN connection failed; polling meanwhile");
                tokio::time::sleep(retry_in).await;
                continue;
            }
        };
        if !verified {
            match probe(&shared, &mut listener).await {
                Probe::Delivered => verified = true,
                Probe::Silent => {
                    tracing::warn!(
                        poll_interval = ?shared.config.poll_interval,
                        "LISTEN does not work on this connection: a notification sent by this \
                         worker never came back (a PgBouncer in transaction-pooling mode?); \
                         running on polling alone. Give the listener a direct connection with \
                         WorkerBuilder::listen_url / JOBQ_LISTEN_URL, or set .listen(false)"
                    );
                    shared.floors.turn_off();
                    if let Err(e) = listener.unlisten().await {
                        tracing::debug!(error = %error_chain(&e), "UNLISTEN failed");
                    }
                    return;
                }
                Probe::Failed(e) => {
                    let retry_in = backoff.next_delay();
                    tracing::warn!(error = %e, ?retry_in, "checking the LISTEN connection failed; reconnecting");
                    tokio::time::sleep(retry_in).await;
                    continue;
                }
            }
        }
        if connected_before {
            tracing::info!("LISTEN connection re-established");
        }
        connected_before = true;
        backoff.reset();
        // Anything committed while we were not listening sent its
        // notification to nobody: look once now, from the head.
        shared.floors.reset();
        shared.wake.now();
        loop {
            match listener.next().await {
                Some(Ok(notification)) => handle(&shared, notification),
                Some(Err(e)) => {
                    tracing::warn!(error = %error_chain(&e), "LISTEN connection lost; reconnecting");
                    break;
                }
                None => {
                    tracing::warn!("LISTEN connection closed; reconnecting");
                    break;
                }
            }
        }
    }
}

enum Probe {
    Delivered,
    /// Sent, but it never arrived.
    Silent,
    /// The connection failed; try again.
    Failed(String),
}

/// Sends a notification from a pooled connection and waits for it on the
/// listener, handling whatever else arrives meanwhile.
async fn probe(shared: &Shared, listener: &mut Listener) -> Probe {
    let token = format!("{}-{:016x}", shared.worker_id, fastrand::u64(..));
    let sent = match shared.pool.get().await {
        Ok(mut conn) => jobq_diesel::send_probe(&mut conn, &token)
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(error_chain(&e)),
    };
    if let Err(e) = sent {
        return Probe::Failed(e);
    }
    let deadline = tokio::time::Instant::now() + PROBE_TIMEOUT;
    loop {
        let next = tokio::time::timeout_at(deadline, listener.next()).await;
        match next {
            Err(_) => return Probe::Silent,
            Ok(Some(Ok(Notification::Probe { token: got }))) if got == token => {
                return Probe::Delivered
            }
            Ok(Some(Ok(other))) => handle(shared, other),
            Ok(Some(Err(e))) => return Probe::Failed(error_chain(&e)),
            Ok(None) => return Probe::Failed("the LISTEN connection closed".into()),
        }
    }
}

fn handle(shared: &Shared, notification: Notification) {
    match notification {
        Notification::Jobs { queue, due_at_ms } => {
            if !shared.serves_queue(&queue) {
                return;
            }
            match due_at_ms {
                // Scheduled jobs: wake to promote them when due, or at
                // once when that time has already passed (it has when
                // their delay was shorter than the notification's trip).
                Some(ms) => shared
                    .wake
                    .at(instant_of_epoch_ms(ms).unwrap_or_else(Instant::now)),
                None => {
                    // Anywhere in the order of its tasks.
                    shared.floors.reset();
                    shared.wake.now();
                }
            }
        }
        Notification::Pending { queue, task, first } => {
            if !shared.serves_queue(&queue) {
                return;
            }
            shared.floors.lower(&task, first);
            shared.wake.now();
        }
        Notification::Cancel { job_id } => {
            if shared.attempts.cancel(job_id) {
                tracing::info!(job.id = job_id, "cancellation requested");
            }
        }
        // Another worker's probe.
        Notification::Probe { .. } => {}
    }
}

/// The local instant of a database timestamp; `None` when it is already
/// past (then the job is due now).
fn instant_of_epoch_ms(ms: i64) -> Option<Instant> {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .ok()?
        .as_millis();
    let ahead = u64::try_from(i128::from(ms) - i128::try_from(now_ms).ok()?).ok()?;
    Some(Instant::now() + Duration::from_millis(ahead))
}
